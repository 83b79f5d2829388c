"""`ladder data prepare [data=<name>] [data.sources=[...]] ...`: prepare (or reuse) a corpus."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from ladder.errors import LadderError

USAGE = "usage: ladder data prepare [data=<name>] [data.KEY=VALUE ...] (Hydra overrides)"
# Preparing a corpus is not a run: no run directory, no .hydra/ output, log to the terminal.
HYDRA_QUIET = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout"]


def prepare(cfg: DictConfig) -> int:
    from ladder.data.prepare import log, prepare_corpus

    previous = log.level
    log.setLevel(logging.WARNING)  # its closing line says what the summary below says
    try:
        corpus = prepare_corpus(cfg.data)
    finally:
        log.setLevel(previous)
    manifest = corpus.manifest
    train, val = manifest["train"], manifest["val"]
    what = "up to date, reused" if corpus.reused else f"built in {manifest['seconds']:.1f} s"
    print(
        f"{corpus.root}: {what}; tokenizer {manifest['tokenizer']['spec']} "
        f"(vocab {manifest['tokenizer']['vocab_size']}, {manifest['dtype']}); "
        f"train {train['tokens']:,} tokens / {train['documents']:,} documents, "
        f"val {val['tokens']:,} tokens / {val['documents']:,} documents"
    )
    return 0


def main(argv: list[str]) -> int:
    from ladder.hydra_app import run_app

    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] != "prepare":
        raise LadderError(f"unknown data command {argv[0]!r}; {USAGE}")
    return int(run_app("data", prepare, [*argv[1:], *HYDRA_QUIET]) or 0)
