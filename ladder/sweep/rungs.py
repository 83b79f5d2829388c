"""A composed config's grid -> its rungs (ladder rungs and targets), validated as a whole.

Every rung is sized here before any job starts, so a typo in a grid file (an unknown size, a
multiplier <= 0, two rungs with one name) stops `ladder plan` and `ladder sweep` at once instead
of failing one job hours into a sweep.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from ladder.errors import LadderError
from ladder.grid import Rung, make_rung
from ladder.sizes import PRESETS


def _sizing(cfg: DictConfig) -> dict:
    """The config's overrides of the grid rules, shared by every rung of the grid."""
    return dict(
        vocab_size=cfg.model.vocab_size,
        seq_len=cfg.model.seq_len,
        batch=cfg.train.batch_size,
        lr=cfg.optim.lr,
        lr_rule=cfg.optim.lr_rule,
        warmup_tokens=cfg.optim.warmup_tokens,
    )


def _check_size(size: str, where: str) -> None:
    if size not in PRESETS:
        raise LadderError(f"grid {where}: unknown model size {size!r}; presets: {', '.join(PRESETS)}")


def grid_rungs(cfg: DictConfig) -> list[Rung]:
    """Every rung of `cfg.ladder`: sizes x multipliers (role ladder), then the targets (role target)."""
    grid = cfg.ladder
    sizing = _sizing(cfg)
    if not grid.sizes or not grid.multipliers:
        raise LadderError(f"grid {grid.name!r}: needs at least one size and one multiplier")
    rungs: list[Rung] = []
    for size in grid.sizes:
        _check_size(size, f"{grid.name!r}")
        for multiplier in grid.multipliers:
            if not 0 < float(multiplier) < math.inf:
                raise LadderError(f"grid {grid.name!r}: token multiplier must be > 0 and finite, got {multiplier}")
            rungs.append(make_rung(size, float(multiplier), role="ladder", **sizing))
    for target in grid.targets:
        where = f"{grid.name!r} target {target.name!r}"
        _check_size(target.size, where)
        if (target.tokens is None) == (target.multiplier is None):
            raise LadderError(f"grid {where}: give exactly one of tokens or multiplier")
        if target.multiplier is not None and not 0 < float(target.multiplier) < math.inf:
            raise LadderError(f"grid {where}: token multiplier must be > 0 and finite, got {target.multiplier}")
        if target.tokens is not None and not int(target.tokens) > 0:
            raise LadderError(f"grid {where}: tokens must be > 0, got {target.tokens}")
        multiplier = None if target.multiplier is None else float(target.multiplier)
        tokens = None if target.tokens is None else int(target.tokens)
        rungs.append(make_rung(target.size, multiplier, tokens=tokens, name=target.name, role="target", **sizing))
    seen: set[str] = set()
    for rung in rungs:
        if rung.name in seen:
            raise LadderError(f"grid {grid.name!r}: two rungs are named {rung.name!r}")
        if "/" in rung.name or rung.name.startswith("."):
            raise LadderError(f"grid {grid.name!r}: rung name {rung.name!r} cannot name a run directory")
        seen.add(rung.name)
    return rungs


def rungs_to_train(cfg: DictConfig) -> list[Rung]:
    """The rungs `ladder sweep` launches: the grid's, less targets unless `train_targets`, or `only`."""
    rungs = grid_rungs(cfg)
    by_name = {rung.name: rung for rung in rungs}
    if cfg.ladder.only:
        unknown = [name for name in cfg.ladder.only if name not in by_name]
        if unknown:
            raise LadderError(
                f"ladder.only names rungs not in grid {cfg.ladder.name!r}: {', '.join(unknown)} "
                f"(rungs: {', '.join(by_name)})"
            )
        return [by_name[name] for name in cfg.ladder.only]
    return [rung for rung in rungs if rung.role == "ladder" or cfg.ladder.train_targets]


def find_rung(cfg: DictConfig, name: str) -> Rung:
    """The grid's rung called `name` (a sweep job's `rung=` value)."""
    for rung in grid_rungs(cfg):
        if rung.name == name:
            return rung
    raise LadderError(f"rung {name!r} is not in grid {cfg.ladder.name!r}")

