"""In-loop evaluation: validation bits per byte on held-out text, and the downstream tasks,
shared by every rank of a distributed run.

Validation bpb goes to the run's metrics records; task scores become results-table rows in the
run directory (`ladder.runs.directory.append_eval_rows`), one per task, with D = tokens trained so far.

Distribution: every rank scores its share (validation windows r, r + W, ...; questions r, r + W,
... of each task) under the training autocast (bf16 on CUDA) with the log-softmax in fp32; the
per-question metrics are gathered and every rank aggregates them in the questions' own order, so
the scores equal one process's. Rank 0 writes the rows.

Size: intermediate evaluations score a fixed subset of each task (`tasks.in_loop_questions`,
drawn with `tasks.seed`: the same questions at every checkpoint of every rung); the final
checkpoint scores the full set (`tasks.max_questions`, all by default), as `ladder eval` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.nn.functional as F

from ladder.data import TokenLoader
from ladder.results import EvalRow
from ladder.runs.directory import append_eval_rows, read_eval_rows
from ladder.train.distributed import DistContext

WANDB_METRICS = ("loss", "acc", "acc_raw", "soft", "soft_log")
VAL_SEED = 0  # the validation windows are the file's first ones; no randomness involved


@torch.no_grad()
def validation_bpb(
    model: torch.nn.Module,
    val_path: Path,
    *,
    seq_len: int,
    batch_size: int,
    max_tokens: int,
    bytes_per_token: float,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    ctx: DistContext,
    shard: bool = True,
) -> float:
    """Bits per UTF-8 byte on the first `max_tokens` tokens (whole windows) of the validation split.

    bpb = (mean cross-entropy in nats / ln 2) / (bytes per token): the tokenizer-independent loss.
    Rank r scores windows r, r + W, ... of them and the sums are gathered; without `shard` (FSDP)
    every rank scores every window.
    """
    ctx = ctx if shard else DistContext(0, 0, 1, ctx.device)
    loader = TokenLoader(val_path, seq_len, batch_size * ctx.world_size, VAL_SEED, ctx.rank, ctx.world_size)
    windows = min(math.ceil(max_tokens / (batch_size * seq_len)) * batch_size, loader.windows_per_epoch)
    mine = len(range(ctx.rank, windows, ctx.world_size))  # this rank's windows among the first `windows`
    was_training = model.training
    model.eval()
    total_nats, total_tokens = 0.0, 0
    for inputs, targets in loader.sequential_batches(batch_size, math.ceil(mine / batch_size)):
        take = min(len(inputs), mine)
        mine -= take
        inputs, targets = inputs[:take].to(device), targets[:take].to(device)
        with autocast():
            logits = model(inputs)
        total_nats += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
        total_tokens += targets.numel()
    model.train(was_training)
    nats, tokens = map(sum, zip(*ctx.gather((total_nats, total_tokens))))
    return nats / tokens / math.log(2) / bytes_per_token


class TaskEvaluator:
    """Loads the configured tasks once and scores the model on them at each evaluation."""

    def __init__(self, tasks_cfg, corpus, run_dir: Path, ctx: DistContext, shard: bool = True):
        """shard: share the questions out between the ranks; False (FSDP) makes every rank score
        every question (the forward passes' all-gathers must match on all ranks)."""
        from ladder.tasks import load_tasks  # only runs that evaluate tasks need the task loaders

        self.full = load_tasks(
            list(tasks_cfg.names), corpus=corpus, max_questions=tasks_cfg.max_questions, seed=tasks_cfg.seed
        )
        self.in_loop = [task.subsample(tasks_cfg.in_loop_questions, tasks_cfg.seed) for task in self.full]
        self.tokenizer = corpus.tokenizer
        self.batch_size = tasks_cfg.batch_size
        self.run_dir = run_dir
        self.ctx = ctx
        self.split = ctx if shard else DistContext(0, 0, 1, ctx.device)  # who scores which questions

    def questions(self, final: bool) -> int:
        """Questions one evaluation scores (all tasks)."""
        return sum(len(task.questions) for task in (self.full if final else self.in_loop))

    def __call__(
        self,
        model: torch.nn.Module,
        *,
        step: int,
        tokens: int,
        row_fields: dict,
        final: bool,
        autocast: Callable[[], AbstractContextManager],
        stop: Callable[[], bool],
    ) -> dict[str, float] | None:
        """Score every task not yet scored at `step` (a resumed run does not duplicate rows): the
        wandb metrics on rank 0 ({} on the others), or None when `stop()` became true on any rank
        during scoring (nothing is written then)."""
        from dataclasses import replace

        from ladder.tasks.batches import ScoringStopped, stop_when
        from ladder.tasks.scoring import model_seq_len, score_questions, summarize

        ctx = self.ctx
        done = ctx.gather(
            {row["task"] for row in read_eval_rows(self.run_dir) if row.get("step") == step} if ctx.is_main else None
        )[0]
        tasks = [task for task in (self.full if final else self.in_loop) if task.name not in done]
        if not tasks:
            return {}
        split = self.split
        shards = [replace(task, questions=task.questions[split.rank :: split.world_size]) for task in tasks]
        seq_len = model_seq_len(model, None)
        stopped, mine = False, None
        try:
            with autocast(), stop_when(stop):
                mine = score_questions(
                    model, self.tokenizer, shards, device=ctx.device, batch_size=self.batch_size, seq_len=seq_len
                )
        except ScoringStopped:
            stopped = True
        if ctx.any(stopped):
            return None
        gathered = split.gather(mine)
        # Question i of a task was scored by rank i % W, as its (i // W)-th.
        per_question = [
            [gathered[i % split.world_size][t][i // split.world_size] for i in range(len(task.questions))]
            for t, task in enumerate(tasks)
        ]
        scores = summarize(tasks, per_question, seq_len)
        if not ctx.is_main:
            return {}
        rows = [
            EvalRow(
                step=step, D=float(tokens), task=name, loss=score.loss, acc=score.acc, extra=score.extra(), **row_fields
            )
            for name, score in scores.items()
        ]
        append_eval_rows(self.run_dir, rows)
        # `<task>/<metric>` keys: what `ladder collect --wandb` reads back from a wandb history.
        return {
            f"{name}/{metric}": getattr(score, metric) for name, score in scores.items() for metric in WANDB_METRICS
        }
