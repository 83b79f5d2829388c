"""Training corpora: sources -> tokenizer -> memory-mapped token files -> deterministic batches.

- `prepare_corpus(cfg.data)` builds (or reuses) `<prepared_root>/<name>/`: train.bin, val.bin,
  manifest.json (see `ladder.data.prepare`); `ladder data prepare data=<name>` runs it.
  `training_corpus` (rank 0 of a run: a cheap check, no hashing) and `open_prepared` (the other
  ranks) open it at train time.
- `load_tokenizer(spec, corpus_dir)`: 'byte', 'bpe:<vocab>' or a tokenizer.json.
- `TokenLoader(path, seq_len, batch_size, seed, rank, world_size).batch(step)`.
"""

from ladder.data.loader import TokenLoader
from ladder.data.prepare import PreparedCorpus, open_corpus, open_prepared, prepare_corpus, training_corpus
from ladder.data.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "PreparedCorpus",
    "TokenLoader",
    "Tokenizer",
    "load_tokenizer",
    "open_corpus",
    "open_prepared",
    "prepare_corpus",
    "training_corpus",
]
