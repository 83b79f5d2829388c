"""The run directory: the only thing a rung leaves behind, and the one module that names its files.

    config.yaml    resolved config          rung.json     the rung's record (`ladder.rungs.Rung.to_record`)
    metrics.jsonl  one record per logged step                eval.jsonl    results-table rows
    checkpoint/    step-<k>/ sharded checkpoints (format: ladder.train.checkpoint), the newest
                   train.keep_checkpoints; diagnostic-step<k>/ after a NaN; model.pt (`ladder export`);
                   latest.pt in runs started before sharded checkpoints (resumed from once, then kept)
    DONE           written last: final step, tokens, loss, wall seconds
    FAILED         the error of a run that died (removed when it is resumed)
    RUNNING        host and process id while a session trains (removed when it ends)
    .lock          held by the training session (train.lock; .lock.held with train.lock=file): one trainer
                   per run directory

The trainer writes it; the sweep, `ladder status`, `ladder collect` and `ladder eval` read it,
all through `RunDir`. Evaluation rows go in with `append_eval_rows` and come out with
`read_eval_rows` (the row type is `ladder.results.EvalRow`). This module never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ladder.atomic import read_json, write_text_atomic
from ladder.errors import LadderError
from ladder.locks import LockHeld, exclusive_lock
from ladder.results import EvalRow
from ladder.rungs import Rung

CONFIG, RUNG, METRICS, DONE, FAILED, RUNNING = "config.yaml", "rung.json", "metrics.jsonl", "DONE", "FAILED", "RUNNING"
EVAL_ROWS = "eval.jsonl"
LOCK = ".lock"
CHECKPOINT_DIR = "checkpoint"
LATEST = "latest.pt"  # the one-file checkpoint of runs started before sharded checkpoints
log = logging.getLogger("ladder.runs")
STEP_PREFIX = "step-"
TEMPORARY_PREFIX = ".tmp-"  # a checkpoint being written; renamed when whole
CHECKPOINT_MARKERS = (".metadata", "trainer.json")  # written last (DCP's metadata) and first: a whole checkpoint
EXPORT = "model.pt"
TORN_TAIL_BYTES = 1 << 20  # an evaluation row is far shorter: a torn one ends within this of the end

# Keys that may change between sessions of one run without changing what it computes.
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.log_interval",
    "train.eval_interval",
    "train.evals",
    "train.checkpoint_interval",
    "train.compile",
    "train.micro_batch_size",
    "train.threads",
    "train.val_tokens",
    "train.spike_factor",
    "train.gpu",
    "train.checkpoint_minutes",
    "train.timeout_min",
    "train.startup_timeout_min",
    "train.lock",
    "train.parallel",
    "train.fsdp_shard_size",
    "train.activation_checkpointing",
    "train.compile_backend",
    "train.gpu_memory_gb",
    "train.keep_checkpoints",
    "train.async_checkpoint",
    "tasks.",
    "wandb.",
    "device",
    "run_dir",
    "run_name",
    "extra.",
    "ladder.",
    "rung",
    "data.prepared_root",
)

# Keys added since runs were first made, each with the value that computes what a run made before
# it did: a config.yaml without the key counts as holding that value (so an older run resumes
# with it, and with another value is refused like any other change).
ADDED_KEYS = {"model.vocab_multiple": 1, "train.z_loss": 0.0}


class RunBusy(LadderError):
    """Another process trains this run directory: it is theirs to finish or to mark failed."""


class RunDir:
    """Reads and writes the files of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- what is there ------------------------------------------------------------------------

    def has_results(self) -> bool:
        """Evaluation rows or a rung record: what `ladder collect` takes for a run directory."""
        return (self.path / EVAL_ROWS).is_file() or (self.path / RUNG).is_file()

    def was_started(self) -> bool:
        """Any file a trainer or the sweep leaves: what `ladder status` takes for a run directory."""
        return any((self.path / name).exists() for name in (RUNG, METRICS, DONE, FAILED))

    def is_done(self) -> bool:
        return (self.path / DONE).exists()

    def is_failed(self) -> bool:
        return (self.path / FAILED).exists()

    # -- checkpoints --------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        return latest_checkpoint(self.checkpoint_dir)

    @property
    def legacy_checkpoint(self) -> Path | None:
        """checkpoint/latest.pt of a run started before sharded checkpoints, or None."""
        path = self.checkpoint_dir / LATEST
        return path if path.is_file() else None

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoint_dir / f"{STEP_PREFIX}{step:08d}"

    def diagnostic_checkpoint(self, step: int) -> Path:
        """Where the state that produced a non-finite loss at `step` is saved."""
        return self.checkpoint_dir / f"diagnostic-step{step}"

    # -- records ------------------------------------------------------------------------------

    def read_done(self) -> dict[str, Any] | None:
        """The DONE record, None if the run is not done; a DONE that is not one is a LadderError."""
        path = self.path / DONE
        if not path.exists():
            return None
        done = read_json(path)
        if done is None or not all(isinstance(done.get(key), (int, float)) for key in ("step", "tokens", "loss")):
            raise LadderError(f"{path} is not a DONE record (empty or edited); delete it to resume the run")
        return done

    def read_done_marker(self) -> dict[str, Any] | None:
        """DONE's record, or None when absent or unreadable (for status, which must not fail on it)."""
        return read_json(self.path / DONE)

    def read_failed(self) -> dict[str, Any] | None:
        return read_json(self.path / FAILED)

    def read_running(self) -> dict[str, Any] | None:
        """The RUNNING marker: {"host", "pid", "started"} of the session training the run."""
        return read_json(self.path / RUNNING)

    def read_rung(self) -> Rung | None:
        """The rung the run trains (None before its first session), validated."""
        path = self.path / RUNG
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise LadderError(f"{path}: unreadable ({type(error).__name__}); not a rung record") from None
        return Rung.from_record(record, source=str(path))

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def has_config(self) -> bool:
        return (self.path / CONFIG).is_file()

    def read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        if not path.is_file():
            raise LadderError(f"{self.path} has a checkpoint but no {CONFIG}; not a ladder run directory")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise LadderError(f"{path}: unreadable ({type(error).__name__}); not a ladder run config") from None
        if not isinstance(config, dict):
            raise LadderError(f"{path}: not a ladder run config")
        return config

    def start(self, config: dict[str, Any], rung: Rung) -> None:
        """A fresh run: the resolved config and the rung's sizing, before the first step. Records of
        an earlier start of the same run that died before its first checkpoint are dropped: this
        session computes them again."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        write_text_atomic(self.path / RUNG, json.dumps(rung.to_record(), indent=2) + "\n")
        write_text_atomic(self.path / METRICS, "")
        (self.path / EVAL_ROWS).unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        write_text_atomic(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn line from a killed process (or an edit): skipped, not an end
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Drop records after `step` (logged after the checkpoint a resumed run starts from) and
        lines that are not records; every valid record up to `step` is kept."""
        kept = [row for row in self.read_metrics() if row["step"] <= step]
        write_text_atomic(self.path / METRICS, "".join(json.dumps(row) + "\n" for row in kept))

    def write_done(self, record: dict[str, Any]) -> None:
        write_text_atomic(self.path / DONE, json.dumps(record, indent=2) + "\n")

    def write_failed(self, record: dict[str, Any], *, keep_existing: bool = False) -> None:
        """FAILED with `record`; with `keep_existing`, a FAILED already there is left as it is."""
        self.path.mkdir(parents=True, exist_ok=True)
        if keep_existing and (self.path / FAILED).exists():
            return
        write_text_atomic(self.path / FAILED, json.dumps(record, indent=2) + "\n")

    def write_failed_unless_recorded(self, record: dict[str, Any]) -> None:
        """The sweep's FAILED marker for a rung that died, unless the trainer wrote its own (it
        knows the step)."""
        if self.is_failed():
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / FAILED, json.dumps(record, indent=1))

    def clear_failed(self) -> None:
        (self.path / FAILED).unlink(missing_ok=True)

    @contextlib.contextmanager
    def session(self, lock: str = "flock") -> Iterator[None]:
        """This process trains the run until the block ends: it holds an exclusive lock on `.lock`
        (`lock`: flock, file or none; ladder.locks), so that a second trainer of the same run
        directory is refused instead of interleaving its records with this one's, and the RUNNING
        marker names it (`ladder status` tells a live run from a stopped one by it). Both go when
        the block ends, however it ends; `.lock` stays for the next session, unless this one made
        it and refused to start (no config written): then it leaves nothing behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        made_lock = not (self.path / LOCK).exists()
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(self.path / LOCK, lock))
            except LockHeld as error:
                holder = read_json(self.path / RUNNING) or {}
                who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
                raise RunBusy(
                    f"{self.path} is being trained by {who}; wait for it or stop it first ({error})"
                ) from None
            held.callback(lambda: made_lock and not self.has_config() and (self.path / LOCK).unlink(missing_ok=True))
            record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
            write_text_atomic(self.path / RUNNING, json.dumps(record) + "\n")
            try:
                yield
            finally:
                (self.path / RUNNING).unlink(missing_ok=True)
                if made_lock and not self.has_config():
                    (self.path / LOCK).unlink(missing_ok=True)


def run_dir_of_checkpoint(checkpoint: Path) -> Path:
    """The run directory a checkpoint file belongs to (its folder, or the folder above checkpoint/)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def is_checkpoint(path: Path) -> bool:
    """A whole sharded checkpoint directory."""
    return all((path / marker).is_file() for marker in CHECKPOINT_MARKERS)


def checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The whole step checkpoints of a checkpoint/ folder, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(
        (p for p in checkpoint_dir.iterdir() if p.name.startswith(STEP_PREFIX) and is_checkpoint(p)),
        key=lambda p: p.name,
    )


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = checkpoints(checkpoint_dir)
    return found[-1] if found else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A one-file checkpoint (.pt), a sharded checkpoint directory, or a run directory's newest
    checkpoint (its exported model.pt when that is newer than its sharded checkpoints; latest.pt
    when a run started before sharded checkpoints has no other)."""
    path = Path(path)
    if path.is_file() or is_checkpoint(path):
        return path
    for folder in (path / CHECKPOINT_DIR, path):
        sharded = latest_checkpoint(folder)
        exported = folder / EXPORT
        if exported.is_file() and (
            sharded is None or exported.stat().st_mtime >= (sharded / CHECKPOINT_MARKERS[0]).stat().st_mtime
        ):
            return exported
        if sharded is not None:
            return sharded
        if (folder / LATEST).is_file():
            return folder / LATEST
    raise LadderError(
        f"{path}: no checkpoint (expected a .pt file, a checkpoint directory or a run directory with {CHECKPOINT_DIR}/)"
    )


def append_eval_rows(run_dir: str | os.PathLike, rows: Iterable[EvalRow]) -> None:
    """Append rows to the run's eval.jsonl, flushed to disk (a crash loses no earlier row).

    A torn last line (a writer killed mid-row) is cut off first, so that it stays the last line
    instead of becoming a broken one in the middle.
    """
    path = Path(run_dir) / EVAL_ROWS
    lines = "".join(json.dumps(row.to_dict(), allow_nan=True) + "\n" for row in rows)
    with open(path, "a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(max(0, size - TORN_TAIL_BYTES))
            tail = handle.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                handle.truncate(size - len(tail) + cut + 1 if cut >= 0 else max(0, size - len(tail)))
        handle.write(lines.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def read_eval_rows(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows a run has written; a torn last line (killed mid-write) is ignored."""
    path = Path(run_dir) / EVAL_ROWS
    if not path.exists():
        return []
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise LadderError(f"{path}: not UTF-8 text (byte {error.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                log.warning("%s: last line is torn (a writer killed mid-row); its row is left out", path)
                break
            raise LadderError(f"{path}:{number}: not a JSON object") from None
        if not isinstance(row, dict):
            raise LadderError(f"{path}:{number}: not a JSON object")
        rows.append(row)
    return rows


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every key that differs and would change what the run computes."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    old_flat = {key: value for key, value in ADDED_KEYS.items() if key in new_flat} | old_flat
    differences = []
    for key in sorted(set(old_flat) | set(new_flat)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_CHANGES):
            continue
        if old_flat.get(key) != new_flat.get(key):
            differences.append(f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}")
    return differences
