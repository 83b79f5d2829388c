"""The wandb mirror of the run directory's metrics records (which stay the source of truth).

Offline by default (no account or network needed; `wandb sync <run_dir>/wandb/offline-run-*`
uploads later); `disabled` skips wandb entirely. `wandb.mode` wins over $WANDB_MODE, which applies
when the config leaves it unset. The run id is derived from the run directory's absolute path, so
a resumed run continues the same wandb run. The runs of one sweep share a group (the sweep root's
name) and are tagged with their size, role and multiplier.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ladder.config import WANDB_MODES
from ladder.errors import LadderError

log = logging.getLogger("ladder.train")


def wandb_run_id(run_dir: Path, name: str) -> str:
    """Stable across sessions of one run directory; distinct for different directories."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return f"{safe}-{digest}"


class Tracker:
    """Logs metric records to wandb, or does nothing when wandb is disabled."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        name: str,
        config: dict[str, Any],
        group: str | None = None,
        tags: tuple[str, ...] = (),
    ):
        # The config wins; an unset wandb.mode takes $WANDB_MODE (checked here), else offline.
        mode = cfg.wandb.mode or os.environ.get("WANDB_MODE") or "offline"
        if mode not in WANDB_MODES:
            raise LadderError(f"WANDB_MODE must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        self.run = None
        if mode == "disabled":
            return
        import wandb

        try:
            self.run = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=name,
                id=wandb_run_id(run_dir, name),
                resume="allow",
                mode=mode,
                dir=str(run_dir),
                config=config,
                reinit="create_new",
                group=group,
                tags=list(tags) or None,
            )
        except Exception as error:  # wandb's own types: no login, no network, a bad entity or project
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise LadderError(f"wandb.mode={mode}: {reason} (or use wandb.mode=offline)") from None

    def log(self, record: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({key: value for key, value in record.items() if value is not None}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
