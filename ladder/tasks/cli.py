"""`ladder eval CHECKPOINT [tasks.names=[...]] [tasks=cpu] [device=cuda] [-o table.csv]`.

Scores a saved checkpoint (a run directory, a sharded checkpoint directory or an exported .pt file) on tasks and prints one results-table
row per task; `-o` writes them as a results table (CSV or Parquet). Overrides are the Hydra
`tasks.*` keys, `tasks=<list>` and `device`; what they leave unset is the run's own (its task
names, subsample size and seed), so a run directory scores as its in-loop evaluation did.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ladder.errors import LadderError
from ladder.results import EvalRow, check_output_table, write_table


def _paper_n(run_dir: Path, model: Any) -> int:
    from ladder.runs.directory import RunDir

    rung = RunDir(run_dir).read_rung()
    if rung is not None:
        return rung.n_params
    from ladder.sizes import paper_params

    return paper_params(model.shape)


def _needs_corpus(names: list[str]) -> bool:
    from ladder.tasks.corpus import CORPUS_TASKS

    return any(name.split("=", 1)[-1] in CORPUS_TASKS for name in names)


EVAL_KEYS = ("tasks", "device")  # what `ladder eval` overrides; the rest is the checkpoint's


def check_overrides(overrides: list[str]) -> None:
    """Refuse what is not key=value, and keys `ladder eval` does not use (the model is the checkpoint's)."""
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise LadderError(f"expected key=value overrides after the checkpoint, got {bad[0]!r}")
    unused = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split(".")[0].split("/")[0] not in EVAL_KEYS]
    if unused:
        raise LadderError(
            f"ladder eval takes tasks.*, tasks=<list> and device overrides, not {unused[0]!r} "
            "(the model, data and training are the checkpoint's)"
        )


def eval_config(run_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's run config with the evaluation's overrides: its tasks (names, subsample,
    seed, batch) unless `tasks=<list>` or `tasks.<key>=` says otherwise, so that scoring a run
    directory agrees with the rows it wrote in-loop."""
    from ladder.hydra_app import compose_config

    composed = compose_config(overrides)
    cfg = run_cfg.copy()
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    cfg.device = composed.device
    if "tasks" in given:
        cfg.tasks = composed.tasks
    else:
        for key in composed.tasks:
            if f"tasks.{key}" in given or key not in cfg.tasks:
                cfg.tasks[key] = composed.tasks[key]
    return cfg


def score_checkpoint(checkpoint: str, overrides: list[str]) -> list[EvalRow]:
    """Results-table rows (one per task) for the checkpoint under `checkpoint`."""
    from ladder.data import load_tokenizer, prepare_corpus
    from ladder.runs.directory import find_checkpoint, run_dir_of_checkpoint
    from ladder.sizes import flops_per_token
    from ladder.tasks import evaluate, load_tasks
    from ladder.train.checkpoint import checkpoint_position, load_model

    check_overrides(overrides)
    path = find_checkpoint(checkpoint)
    model, run_cfg = load_model(path)
    step, tokens = checkpoint_position(path)
    import torch

    cfg = eval_config(run_cfg, overrides)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise LadderError("device=cuda but no CUDA device is available (use device=cpu)")
    names = [str(name) for name in cfg.tasks.names]
    if not names:
        raise LadderError("no tasks to score: pass tasks.names=[...] or a task list such as tasks=cpu")
    corpus = None
    if _needs_corpus(names) or run_cfg.data.tokenizer != "byte":
        corpus = prepare_corpus(run_cfg.data)
    tokenizer = corpus.tokenizer if corpus is not None else load_tokenizer("byte")
    tasks = load_tasks(names, corpus=corpus, max_questions=cfg.tasks.max_questions, seed=cfg.tasks.seed)
    model.to(cfg.device)
    scores = evaluate(model, tokenizer, tasks, device=cfg.device, batch_size=cfg.tasks.batch_size, progress=True)
    run_dir = run_dir_of_checkpoint(path)
    fields = {
        "run": run_cfg.get("run_name") or run_dir.name,
        "role": run_cfg.get("role", "ladder"),
        "N": _paper_n(run_dir, model),
        "D": float(tokens),
        "step": step,
        "size": run_cfg.model.preset,
        "multiplier": float(run_cfg.multiplier),
        "flops": flops_per_token(model.shape)[0] * tokens,  # 6N per token, as the trainer's rows
    }
    return [EvalRow(task=name, loss=s.loss, acc=s.acc, extra=s.extra(), **fields) for name, s in scores.items()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ladder eval", description=__doc__.split("\n\n")[1])
    parser.add_argument("checkpoint", help="checkpoint .pt file or run directory")
    parser.add_argument(
        "overrides", nargs="*", help="tasks.names=[arc_easy,...], tasks=cpu, tasks.max_questions=N, device=cuda"
    )
    parser.add_argument("-o", "--output", help="write the rows as a results table (.csv or .parquet)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    from ladder.hydra_app import split_show_config

    argv, show_config = split_show_config(argv, "eval")
    args = parser.parse_args(argv)
    check_overrides(args.overrides)
    if show_config:  # the checkpoint's config as this evaluation uses it
        from ladder.runs.directory import find_checkpoint
        from ladder.train.checkpoint import load_model

        print(OmegaConf.to_yaml(eval_config(load_model(find_checkpoint(args.checkpoint))[1], args.overrides)))
        return 0
    if args.output:
        check_output_table(args.output, args.overwrite)  # before scoring, which takes a while
    rows = score_checkpoint(args.checkpoint, args.overrides)
    table = pd.DataFrame([row.to_dict() for row in rows])
    columns = ["run", "step", "D", "task", "loss", "acc", "acc_raw", "chance", "n_questions"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.output:
        write_table(table, args.output, overwrite=args.overwrite)
        print(f"wrote {len(rows)} rows to {args.output}")
    return 0
