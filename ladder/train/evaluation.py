"""In-loop evaluation: validation bits per byte on held-out text, and the downstream tasks.

Validation bpb goes to the run's metrics records; task scores become results-table rows in the
run directory (`ladder.runs.directory.append_eval_rows`), one per task, with D = tokens trained so far.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ladder.data import TokenLoader
from ladder.results import EvalRow
from ladder.runs.directory import append_eval_rows, read_eval_rows

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
    autocast,
) -> float:
    """Bits per UTF-8 byte on the first `max_tokens` tokens of the validation split.

    bpb = (mean cross-entropy in nats / ln 2) / (bytes per token): the tokenizer-independent loss.
    """
    loader = TokenLoader(val_path, seq_len, batch_size, VAL_SEED)
    max_batches = max(1, math.ceil(max_tokens / (batch_size * seq_len)))
    was_training = model.training
    model.eval()
    total_nats, total_tokens = 0.0, 0
    for inputs, targets in loader.sequential_batches(batch_size, max_batches):
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast():
            logits = model(inputs)
        total_nats += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
        total_tokens += targets.numel()
    model.train(was_training)
    return total_nats / total_tokens / math.log(2) / bytes_per_token


class TaskEvaluator:
    """Loads the configured tasks once and scores the model on them at each evaluation."""

    def __init__(self, tasks_cfg, corpus, run_dir: Path, device: torch.device, write_rows: bool = True):
        """write_rows: False on the ranks that only take part in the forward passes (FSDP)."""
        from ladder.tasks import load_tasks  # only runs that evaluate tasks need the task loaders

        self.tasks = load_tasks(
            list(tasks_cfg.names), corpus=corpus, max_questions=tasks_cfg.max_questions, seed=tasks_cfg.seed
        )
        self.tokenizer = corpus.tokenizer
        self.batch_size = tasks_cfg.batch_size
        self.run_dir = run_dir
        self.device = device
        self.write_rows = write_rows

    def __call__(self, model: torch.nn.Module, *, step: int, tokens: int, row_fields: dict) -> dict[str, float]:
        """Score every task not yet scored at `step` (a resumed run does not duplicate rows)."""
        from ladder.tasks import evaluate

        done = {row["task"] for row in read_eval_rows(self.run_dir) if row.get("step") == step}
        tasks = [task for task in self.tasks if task.name not in done]
        if not tasks:
            return {}
        scores = evaluate(model, self.tokenizer, tasks, device=self.device, batch_size=self.batch_size)
        rows = [
            EvalRow(step=step, D=float(tokens), task=name, loss=score.loss, acc=score.acc, extra=score.extra(), **row_fields)
            for name, score in scores.items()
        ]
        if self.write_rows:
            append_eval_rows(self.run_dir, rows)
        # `<task>/<metric>` keys: what `ladder collect --wandb` reads back from a wandb history.
        return {
            f"{name}/{metric}": getattr(score, metric)
            for name, score in scores.items()
            for metric in WANDB_METRICS
        }
