"""Checkpoints: sharded (torch.distributed.checkpoint), atomic, resumable at another world size,
and exportable to one file that `ladder eval` loads.

    checkpoint/
      step-00000500/        one checkpoint: DCP shards (__<rank>_0.distcp) and .metadata, written by
                            every rank at once, plus trainer.json (step, schedule, data position,
                            stability monitor, config, model shape; rank 0)
      step-00001000/        the newest `train.keep_checkpoints` are kept
      diagnostic-step<k>/   the state that produced a NaN (never pruned)
      model.pt              `ladder export`: the model alone, one plain file
      latest.pt             a run started before sharded checkpoints (`legacy_checkpoint`)

Atomic: a checkpoint is written into `.tmp-step-<k>/` and renamed when every rank has written its
part (DCP's coordinator writes .metadata last), so a checkpoint directory is whole or absent; a
crash leaves a .tmp- directory that the next save removes. `async_checkpoint` writes in a
background thread (on a process group of its own) while training goes on; the rename happens
when it is done, at the next checkpoint or at the end of the run.

Model and optimizer state come from `get_state_dict`, keyed by parameter name whatever the
wrapping (DDP, FSDP2, compiled or checkpointed blocks), so a checkpoint written by 8 ranks loads
on 4, or 2 on 1: DCP reshards on load, and each rank reads only the pieces its shards cover
(never a whole copy per rank in host memory). Each rank's RNG state is saved under its rank; a
rank that has none in the checkpoint (more ranks than at save time) keeps rank 0's CPU state, and
a GPU state is restored only for the rank's own device, so fewer visible GPUs never fail.

Runs started before sharded checkpoints have one file, `checkpoint/latest.pt`, written by rank 0
with torch.save: {"model": the unwrapped model's state_dict, "optimizer": the optimizer's
state_dict (parameters numbered in `param_groups` order), "schedule", "step", "tokens", "data":
{"seed", "next_step"}, "rng": {"python": random.getstate(), "torch": the CPU generator,
"cuda": every visible GPU's generator, when there were GPUs}, "stability", "elapsed",
"last_loss", "config", "shape"}. Such a run resumes once through `legacy_checkpoint`, which
turns the file into a sharded checkpoint's state (the file itself is kept).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import warnings
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from omegaconf import DictConfig, OmegaConf

from ladder.atomic import atomic_path, write_text_atomic
from ladder.errors import LadderError
from ladder.model import Decoder, decoder_from_config
from ladder.runs.directory import (
    CHECKPOINT_MARKERS,
    EXPORT,
    TEMPORARY_PREFIX,
    checkpoints,
    find_checkpoint,
    is_checkpoint,
)
from ladder.sizes import ModelShape
from ladder.train.optim import build_optimizer

DCP_METADATA, TRAINER_STATE = CHECKPOINT_MARKERS  # the file names ladder.runs.directory checks for
LEGACY_KEYS = ("model", "optimizer", "schedule", "step", "tokens", "data", "rng", "stability", "elapsed", "last_loss")
SINGLE_PROCESS_WARNING = (
    r"torch\.distributed is disabled, unavailable or uninitialized, "
    r"assuming the intent is to (save|load) in a single process"
)


def _single_process(no_dist: bool) -> bool:
    """`no_dist`, after silencing DCP's warning that it "assumes" one process: DCP gives it on every
    call without a process group, even one told so (no_dist=True), and here that is the intent
    (one training process, `ladder eval`, `ladder export`). Only this message is ignored; the filter
    is set at the call, not at import, so that it holds whatever reset the filters since (pytest
    does, per test), and before an asynchronous save, whose background thread warns later."""
    if no_dist:
        warnings.filterwarnings("ignore", message=SINGLE_PROCESS_WARNING, category=UserWarning)
    return no_dist


# -- writing ------------------------------------------------------------------------------------


class CheckpointWriter:
    """Writes the checkpoints of one training session (every rank calls `save` together)."""

    def __init__(self, checkpoint_dir: Path, *, rank: int, distributed: bool, keep: int, asynchronous: bool):
        self.dir, self.rank, self.distributed, self.keep = checkpoint_dir, rank, distributed, keep
        self.asynchronous = asynchronous
        self._pending: tuple[Future, Path, Path] | None = None
        self._group = None  # async saves talk on their own group, apart from training's collectives

    def save(self, final: Path, trainer_state: dict[str, Any], tensors: dict[str, Any], *, prune: bool = True) -> Path:
        """Write `tensors` (DCP) and `trainer_state` (JSON) as checkpoint directory `final` (in this
        writer's folder); returns it (whole on return unless asynchronous)."""
        self.wait()
        if is_checkpoint(final):  # this step is already saved (a stop right after a resume)
            return final
        temporary = self.dir / f"{TEMPORARY_PREFIX}{final.name}"
        if self.rank == 0:
            for stale in self.dir.glob(f"{TEMPORARY_PREFIX}*") if self.dir.is_dir() else ():
                shutil.rmtree(stale, ignore_errors=True)
            temporary.mkdir(parents=True)
            write_text_atomic(temporary / TRAINER_STATE, json.dumps(trainer_state) + "\n")
        self._barrier()
        if self.asynchronous:
            if self.distributed and self._group is None:
                self._group = dist.new_group(backend="gloo")
            future = dcp.async_save(
                tensors,
                checkpoint_id=temporary,
                process_group=self._group,
                no_dist=_single_process(not self.distributed),
            )
            self._pending = (future, temporary, final)
            self._prune_after = prune
            return final
        dcp.save(tensors, checkpoint_id=temporary, no_dist=_single_process(not self.distributed))
        self._commit(temporary, final, prune)
        return final

    def wait(self) -> None:
        """Finish a background save (rename and prune); a no-op when none is under way."""
        if self._pending is None:
            return
        future, temporary, final = self._pending
        self._pending = None
        future.result()
        self._commit(temporary, final, self._prune_after)

    def _commit(self, temporary: Path, final: Path, prune: bool) -> None:
        # DCP's save returns on every rank after the coordinator wrote .metadata: every shard is on disk.
        if self.rank == 0:
            os.replace(temporary, final)
            if prune:
                for old in checkpoints(self.dir)[: -self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        self._barrier()

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()


# -- the trainer's state ------------------------------------------------------------------------


def model_and_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"model": ..., "optimizer": ...} keyed by parameter name, sharded as the model is."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def rng_tensors(rank: int, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's torch generator states: CPU, and its own GPU's (not every visible GPU's)."""
    state = {f"rng.rank{rank}.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state[f"rng.rank{rank}.cuda"] = torch.cuda.get_rng_state(device)
    return state


def python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def load_into(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    rank: int,
    device: torch.device,
    distributed: bool,
) -> dict[str, Any]:
    """Restore model, optimizer and RNG from checkpoint `path` (every rank calls it); returns the trainer state."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    trainer_state = read_trainer_state(path)
    state = model_and_optimizer_state(model, optimizer)
    saved = set(_metadata(path).state_dict_metadata)
    own = rng_tensors(rank, device)
    fallback = rng_tensors(0, torch.device("cpu"))
    rng = {key: value for key, value in own.items() if key in saved} or {
        k: v for k, v in fallback.items() if k in saved
    }
    dcp.load({**state, **rng}, checkpoint_id=path, no_dist=_single_process(not distributed))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    for key, value in rng.items():
        if key.endswith(".cpu"):
            torch.set_rng_state(value)
        elif device.type == "cuda":
            torch.cuda.set_rng_state(value, device)
    version, internal, gauss = trainer_state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return trainer_state


def read_trainer_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LadderError(f"{path}: not a readable ladder checkpoint ({type(error).__name__})") from None


def _metadata(path: Path):
    try:
        return dcp.FileSystemReader(str(path)).read_metadata()
    except (OSError, EOFError, pickle.UnpicklingError, RuntimeError) as error:
        raise LadderError(f"{path}: not a readable ladder checkpoint ({type(error).__name__})") from None


# -- checkpoints of runs started before sharded checkpoints ------------------------------------


def legacy_checkpoint(
    path: Path, cfg: DictConfig, shape: ModelShape, schedule: dict[str, Any], peak_lr: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state, tensors) of a one-file `latest.pt` (module docstring), laid out as a sharded
    checkpoint's, for the run of `cfg` (its model `shape`, its learning-rate `schedule`).

    The optimizer state is loaded as the old trainer loaded it, into an optimizer built over the
    plain model (numbered in the same `param_groups` order), then keyed by parameter name like
    any other. The CPU generator was every rank's after a resume, each GPU's generator its own
    device's; the checkpoint says nothing of the world size, so it is recorded as the one process
    that wrote it. Whatever would not continue the run exactly (another model shape, schedule or
    data position) is refused in one line."""
    legacy = read_checkpoint(path)
    missing = [key for key in LEGACY_KEYS if key not in legacy]
    if missing:
        raise LadderError(f"{path}: not a ladder checkpoint (no {', '.join(missing)})")
    step = int(legacy["step"])
    restart = f"resume it with the ladder version that started it, or delete {path} to train it afresh"
    saved_shape = ModelShape(**legacy["shape"])
    if saved_shape != shape:
        hint = " (runs started before model.vocab_multiple need model.vocab_multiple=1)"
        hint = hint if saved_shape.vocab_size != shape.vocab_size else ""
        raise LadderError(f"{path} holds a model of shape {saved_shape}, this config makes {shape}{hint}; {restart}")
    if {key: legacy["schedule"].get(key) for key in schedule} != schedule:
        raise LadderError(f"{path}: its schedule {legacy['schedule']} is not this config's {schedule}; {restart}")
    if legacy["data"] != {"seed": cfg.seed, "next_step": step}:
        raise LadderError(f"{path}: data position {legacy['data']} is not step {step} of seed {cfg.seed}; {restart}")
    with torch.device("meta"):
        model = decoder_from_config(shape, cfg.model)
    model.to_empty(device="cpu")
    optimizer = build_optimizer(cfg.optim, model, peak_lr, torch.device("cpu"))
    try:
        model.load_state_dict(legacy["model"])
        optimizer.load_state_dict(legacy["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LadderError(f"{path}: its model or optimizer state does not fit this run ({reason}); {restart}") from None
    for param, state in optimizer.state.items():  # load_state_dict checks counts, not shapes
        if any(torch.is_tensor(v) and v.dim() and v.shape != param.shape for v in state.values()):
            raise LadderError(f"{path}: its optimizer state does not fit this run's parameters; {restart}")
    rng = legacy["rng"]
    tensors = model_and_optimizer_state(model, optimizer) | {"rng.rank0.cpu": rng["torch"]}
    for rank, gpu_state in enumerate(rng.get("cuda", ())):
        tensors |= {f"rng.rank{rank}.cpu": rng["torch"], f"rng.rank{rank}.cuda": gpu_state}
    version, internal, gauss = rng["python"]
    trainer_state = {
        "schedule": schedule,
        "step": step,
        "tokens": int(legacy["tokens"]),
        "data": legacy["data"],
        "python_rng": [version, list(internal), gauss],
        "stability": legacy["stability"],
        "elapsed": float(legacy["elapsed"]),
        "last_loss": legacy["last_loss"],
        "pending_record": None,
        "world_size": 1,
        "parallel": "ddp",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "shape": shape_to_dict(shape),
    }
    return trainer_state, tensors


def shape_to_dict(shape: ModelShape) -> dict[str, Any]:
    return asdict(shape)


# -- one-file export and loading for evaluation -------------------------------------------------


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """A one-file checkpoint (model, config, shape), written atomically."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise LadderError(f"{path}: not a readable ladder checkpoint ({_reason(error)})") from None


def _reason(error: BaseException) -> str:
    """Why torch could not load a file, without torch's advice to unpickle it unsafely."""
    text = str(error)
    if isinstance(error, EOFError) or "central directory" in text or "Unsupported operand" in text:
        return "truncated or not a torch file"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        return "holds objects other than tensors and plain containers"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def load_model(path: str | os.PathLike) -> tuple[Decoder, DictConfig]:
    """(model on CPU in eval mode, the run's resolved config) from a checkpoint or run directory,
    sharded or one file; in this process alone (no process group needed)."""
    found = find_checkpoint(path)
    if found.is_file():
        state = read_checkpoint(found)
        if "model" not in state or "shape" not in state:
            raise LadderError(f"{path}: not a ladder checkpoint (no model or shape)")
        cfg = OmegaConf.create(state["config"])
        model = decoder_from_config(ModelShape(**state["shape"]), cfg.model)
        model.load_state_dict(state["model"])
        return model.eval(), cfg
    trainer_state = read_trainer_state(found)
    cfg = OmegaConf.create(trainer_state["config"])
    model = decoder_from_config(ModelShape(**trainer_state["shape"]), cfg.model)
    weights = {"model": model.state_dict()}
    dcp.load(weights, checkpoint_id=found, no_dist=_single_process(True))
    model.load_state_dict(weights["model"])
    return model.eval(), cfg


def checkpoint_position(path: Path) -> tuple[int, int]:
    """(step, tokens) of a checkpoint, without loading its weights (a one-file one is memory-mapped)."""
    if path.is_dir():
        state = read_trainer_state(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state.get("step", 0)), int(state.get("tokens", 0))


def export_checkpoint(path: str | os.PathLike, out: Path | None = None) -> Path:
    """Write the model of a checkpoint (sharded or not) as one file, `<checkpoint dir>/model.pt` by default."""
    found = find_checkpoint(path)
    model, cfg = load_model(found)
    step, tokens = checkpoint_position(found)
    target = out or (found.parent / EXPORT if found.is_dir() else found.with_name(EXPORT))
    save_checkpoint(
        target,
        {
            "model": model.state_dict(),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "shape": shape_to_dict(model.shape),
            "step": step,
            "tokens": tokens,
        },
    )
    return target
