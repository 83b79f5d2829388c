"""Corpus preparation and TokenLoader throughput on the embedded default corpus.

    .venv/bin/python scripts/bench_data.py [--repeats 5]

Prints medians over repeats, measured in one run: a fresh build, a reuse (hash check only), and
batches per second of TokenLoader at the tiny rung's shape and at a paper-like shape.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

from ladder.config import DataConfig
from ladder.data import TokenLoader, prepare_corpus


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        cfg = DataConfig(prepared_root=root)
        seeds = iter(range(10**6))
        # A new seed changes the fingerprint, so each repeat is a full build.
        build = median_seconds(lambda: prepare_corpus(replace(cfg, seed=next(seeds))), args.repeats)
        corpus = prepare_corpus(cfg)
        reuse = median_seconds(lambda: prepare_corpus(cfg), args.repeats)
        tokens = corpus.manifest["train"]["tokens"] + corpus.manifest["val"]["tokens"]
        print(f"default corpus: {tokens:,} tokens; build {build:.3f} s, reuse {reuse:.3f} s (median of {args.repeats})")
        for seq_len, batch in ((256, 64), (4096, 64)):
            loader = TokenLoader(corpus.train_path, seq_len, batch, seed=0)
            steps = iter(range(10**6))
            per_batch = median_seconds(lambda: loader.batch(next(steps)), 50)
            print(
                f"TokenLoader seq_len {seq_len} batch {batch}: {per_batch * 1e3:.2f} ms/batch, "
                f"{seq_len * batch / per_batch / 1e6:.0f} M tokens/s"
            )


if __name__ == "__main__":
    main()
