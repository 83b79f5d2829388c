"""Training corpora: sources -> tokenizer -> memory-mapped token files -> deterministic batches.

- `prepare_corpus(cfg.data)` builds (or reuses) `<prepared_root>/<name>/`: train.bin, val.bin,
  manifest.json (see `ladder.data.prepare`); `ladder data prepare data=<name>` runs it.
- `load_tokenizer(spec, corpus_dir)`: 'byte', 'bpe:<vocab>' or a tokenizer.json.
- `TokenLoader(path, seq_len, batch_size, seed, rank, world_size).batch(step)`.
"""

from ladder.data.loader import TokenLoader
from ladder.data.prepare import PreparedCorpus, open_corpus, prepare_corpus
from ladder.data.tokenizer import Tokenizer, load_tokenizer

__all__ = ["PreparedCorpus", "TokenLoader", "Tokenizer", "load_tokenizer", "open_corpus", "prepare_corpus"]
