"""Checkpoints: atomic, complete enough to resume bit for bit, loadable without the trainer.

A checkpoint holds the model (unwrapped: no DDP or torch.compile prefixes), optimizer, schedule,
RNG states, data position, step and the stability monitor, plus the resolved config and model
shape so that `load_model` rebuilds the model from the file alone. Everything is a tensor or a
plain container, so it loads with `torch.load(weights_only=True)` (no arbitrary pickles).
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ladder.atomic import atomic_path
from ladder.errors import LadderError
from ladder.model import Decoder, decoder_from_config
from ladder.runs.directory import find_checkpoint
from ladder.sizes import ModelShape


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Written atomically: a crash never leaves half a checkpoint."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LadderError(f"{path}: not a readable ladder checkpoint ({reason})") from None


def capture_rng() -> dict[str, Any]:
    """Python and torch (CPU and CUDA) generator states. numpy's generator is not used in training."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def shape_to_dict(shape: ModelShape) -> dict[str, Any]:
    return asdict(shape)


def load_model(path: str | os.PathLike) -> tuple[Decoder, DictConfig]:
    """(model on CPU in eval mode, the run's resolved config) from a checkpoint or run directory."""
    state = read_checkpoint(find_checkpoint(path))
    if "model" not in state or "shape" not in state:
        raise LadderError(f"{path}: not a ladder checkpoint (no model or shape)")
    cfg = OmegaConf.create(state["config"])
    model = decoder_from_config(ModelShape(**state["shape"]), cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg
