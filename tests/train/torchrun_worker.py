"""`ladder <command>` for tests run under torchrun, with two probes set by the environment:

- LADDER_TEST_HASH_LOG=<file>: every hash of a corpus source appends this process's rank to <file>
  (the real hash still runs);
- LADDER_TEST_FAIL_RANK=<r>: rank r raises RuntimeError in its training step 3.
- LADDER_TEST_EVAL=<file>: instead of a command, score a femto model on corpus tasks with the
  distributed evaluator (every rank) and write rank 0's metrics and val bpb to <file>.
"""

import json
import os
import sys

from ladder.data.sources import Source
from ladder.ranks import launch_rank


def count_hashes(path: str) -> None:
    original = Source.content_hash

    def counted(self):
        with open(path, "a") as log:
            log.write(f"{launch_rank()}\n")
        return original(self)

    Source.content_hash = counted


def fail_on(rank: int) -> None:
    from ladder.train import loop

    original = loop._Trainer.train_step

    def failing(self, *args, **kwargs):
        if self.ctx.rank == rank and self.step == 2:
            raise RuntimeError("injected failure")
        return original(self, *args, **kwargs)

    loop._Trainer.train_step = failing


def femto_for_eval(prepared_root):
    """(config, corpus, model): the femto model (seed 0) that the distributed evaluation scores on
    37 questions of each CPU task, and its corpus; what one process compares it with."""
    import torch

    from ladder.data import open_prepared
    from ladder.hydra_app import compose_config
    from ladder.model import decoder_from_config
    from ladder.sizes import get_shape

    cfg = compose_config([f"data.prepared_root={prepared_root}", "model=femto", "tasks=cpu", "tasks.max_questions=37"])
    corpus = open_prepared(cfg.data)
    torch.manual_seed(0)
    return cfg, corpus, decoder_from_config(get_shape("femto", vocab_size=256), cfg.model)


def val_bpb(model, corpus, ctx) -> float:
    """Validation bits per byte over 7 windows of 256 tokens, in batches of 3 (a shard is unequal)."""
    import contextlib

    from ladder.train.evaluation import validation_bpb

    return validation_bpb(
        model,
        corpus.val_path,
        seq_len=256,
        batch_size=3,
        max_tokens=256 * 7,
        bytes_per_token=corpus.val_bytes_per_token,
        device=ctx.device,
        autocast=contextlib.nullcontext,
        ctx=ctx,
    )


def distributed_eval(out: str, prepared_root: str) -> None:
    import contextlib

    from ladder.train import distributed
    from ladder.train.evaluation import TaskEvaluator

    ctx = distributed.setup("cpu")
    cfg, corpus, model = femto_for_eval(prepared_root)
    run_dir = os.path.dirname(out)
    evaluator = TaskEvaluator(cfg.tasks, corpus, __import__("pathlib").Path(run_dir), ctx)
    scores = evaluator(
        model,
        step=1,
        tokens=1,
        final=True,
        autocast=contextlib.nullcontext,
        stop=lambda: False,
        row_fields={"run": "x", "role": "ladder", "N": 1, "size": "femto", "multiplier": 1.0, "flops": 1.0},
    )
    bpb = val_bpb(model, corpus, ctx)
    if ctx.is_main:
        with open(out, "w") as handle:
            json.dump({"scores": scores, "val_bpb": bpb}, handle)


if __name__ == "__main__":
    if os.environ.get("LADDER_TEST_HASH_LOG"):
        count_hashes(os.environ["LADDER_TEST_HASH_LOG"])
    if os.environ.get("LADDER_TEST_FAIL_RANK"):
        fail_on(int(os.environ["LADDER_TEST_FAIL_RANK"]))
    if os.environ.get("LADDER_TEST_EVAL"):
        distributed_eval(os.environ["LADDER_TEST_EVAL"], sys.argv[1])
        sys.exit(0)
    from ladder.cli import main

    sys.exit(main(sys.argv[1:]))
