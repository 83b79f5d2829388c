"""`run_training(cfg)`: train one rung to its token budget in its run directory.

Re-entrant (the sweep calls it once per rung in one process): signal handlers and thread counts
are restored and the wandb run is closed; a DDP process group, made once, serves every rung of
the process (ladder.train.distributed). The same call on the
same run_dir resumes from its newest checkpoint (ladder.train.checkpoint), at any world size;
on a finished run it does nothing. The model's parallelism, compilation and activation
checkpointing come from ladder.train.parallel, the loss from ladder.train.compile.

The rung comes sized: the sweep hands over the grid's Rung, `ladder train` the one
`ladder.rungs.rung_from_config` makes; the trainer only sizes it for its tokenizer's vocabulary
(padded to `model.vocab_multiple`) when the config leaves `model.vocab_size` to the tokenizer
(`Rung.for_vocab`). The run directory is read and written through `ladder.runs.directory.RunDir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from ladder.config import check_values
from ladder.data.prefetch import Prefetcher
from ladder.errors import LadderError
from ladder.hardware import safe_threads
from ladder.memory import default_micro_batch
from ladder.progress import progress
from ladder.ranks import is_rank_zero
from ladder.rungs import RUNG_RECORD_KEY, Rung, rung_from_config
from ladder.runs.directory import ADDED_KEYS, RunDir, config_differences
from ladder.sizes import BYTE_VOCAB, flops_per_token, padded_vocab
from ladder.train import checkpoint as ckpt
from ladder.train import distributed, parallel
from ladder.train.compile import compiled_loss
from ladder.train.cpu_memory import keep_freed_memory
from ladder.train.evaluation import TaskEvaluator, validation_bpb
from ladder.train.metrics import Throughput, device_peak_flops, memory_mb
from ladder.train.optim import Schedule, build_optimizer
from ladder.train.stability import StabilityMonitor, is_finite
from ladder.train.tracking import Tracker

log = logging.getLogger("ladder.train")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM preemption sends SIGTERM (or SIGUSR1 if asked)
CPU_MICRO_BATCH_TOKENS = 16_384  # default tokens per forward pass on CPU (GPUs: ladder.memory)


@dataclass(frozen=True)
class RunOutcome:
    """What `run_training` did."""

    status: str
    """'done' (trained to the end), 'skipped' (was already DONE) or 'stopped' (max_steps or a signal)."""
    run_dir: Path
    step: int
    """Optimizer steps completed."""
    tokens: int
    """Tokens trained on."""
    loss: float | None
    """Training loss of the last step (None if skipped without a DONE record)."""
    signal: int | None = None
    """The signal that stopped the run (SIGTERM, SIGINT, SIGUSR1), None otherwise."""


def check_run(cfg: DictConfig, rung: Rung | None = None) -> Rung:
    """Everything that would make the run fail at once, checked before anything is written: the
    config's values, the launch (ladder.train.distributed.check_launch), the rung (preset,
    multiplier; sized from the config unless given), the device, and a run directory that is a
    file, cannot be written, or holds a run with another config (finished or not). Returns the rung."""
    check_values(cfg)
    distributed.check_launch()
    rung = rung if rung is not None else rung_from_config(cfg)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise LadderError("device=cuda but no CUDA device is available (use device=cpu)")
    if cfg.device == "cuda":
        precision = training_precision(cfg, torch.device("cuda"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if rung.batch_sequences % world_size == 0:  # else refused with its own message at set-up
            per_rank = rung.batch_sequences // world_size
            micro = cfg.train.micro_batch_size or default_micro_batch(rung.shape, per_rank)
            parallel.resolve_plan(cfg, rung.shape, "cuda", world_size, per_rank, micro, precision)
    if cfg.data.tokenizer == "byte" or cfg.model.vocab_size is not None:
        # The vocabulary, hence N and the batch, are known before the corpus: check the batch split.
        if cfg.model.vocab_size is not None and cfg.data.tokenizer == "byte" and cfg.model.vocab_size < BYTE_VOCAB:
            raise LadderError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {BYTE_VOCAB}")
        sized = (
            rung
            if cfg.model.vocab_size is not None
            else rung.for_vocab(padded_vocab(BYTE_VOCAB, cfg.model.vocab_multiple))
        )
        _batch_split(
            sized, int(os.environ.get("WORLD_SIZE", "1")), cfg.train.micro_batch_size, torch.device(cfg.device)
        )
    if cfg.tasks.names:
        from ladder.tasks import check_task_spec  # only runs that evaluate tasks need the task loaders

        for spec in cfg.tasks.names:
            check_task_spec(str(spec))
    path = Path(cfg.run_dir)
    if path.exists() and not path.is_dir():
        raise LadderError(f"run_dir {path} is a file, not a directory")
    existing = next(parent for parent in (path, *path.absolute().parents) if parent.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LadderError(f"run_dir {path}: {existing} is not writable")
    run_dir = RunDir(path)
    run_dir.read_done()  # a DONE that is not a record is refused here
    # No config beside a checkpoint (sharded, or an older run's latest.pt): refused.
    if run_dir.has_config() or run_dir.latest_checkpoint is not None or run_dir.legacy_checkpoint is not None:
        previous = run_dir.read_config()
        differences = config_differences(previous, OmegaConf.to_container(cfg, resolve=True))
        if cfg.data.tokenizer == "byte" and cfg.model.vocab_size is None:
            # Another vocab_multiple that pads the byte vocabulary to the same size changes nothing.
            old_multiple = previous.get("model", {}).get("vocab_multiple", ADDED_KEYS["model.vocab_multiple"])
            if padded_vocab(BYTE_VOCAB, old_multiple) == padded_vocab(BYTE_VOCAB, cfg.model.vocab_multiple):
                differences = [d for d in differences if not d.startswith("model.vocab_multiple:")]
        if differences:
            raise LadderError(
                f"{path} holds a run with another config ({'; '.join(differences[:3])}); "
                "set those back to resume it, or use another run_dir to train this one"
            )
    return rung


def run_training(cfg: DictConfig, stop: threading.Event | None = None, rung: Rung | None = None) -> RunOutcome:
    """Train the rung of `cfg` in `cfg.run_dir` (resuming if it has a checkpoint).

    `stop`: an event the caller may already have set (the sweep's, set by a signal that came
    before this call installed its handlers): the run then checkpoints before its first step.
    `rung`: the rung, sized by the caller (the sweep); None sizes it from `cfg` (`ladder train`).
    """
    rung = check_run(cfg, rung)  # a bad value, preset, multiplier, run dir or override fails here, before any work
    run_dir = RunDir(Path(cfg.run_dir))
    done = run_dir.read_done()
    if done is not None:
        log.info("%s is already done (step %s, loss %.4f); nothing to do", run_dir.path, done["step"], done["loss"])
        return RunOutcome("skipped", run_dir.path, done["step"], done["tokens"], done["loss"])
    # Rank 0 owns the run directory from here on (before the corpus, tasks and model are set up,
    # so that `ladder status` and a second trainer see this session at once).
    owner = run_dir.session(cfg.train.lock) if is_rank_zero() else contextlib.nullcontext()
    received: list[int] = []
    with owner, _stop_on_signals(stop or threading.Event(), received) as stop_requested:
        ctx = distributed.setup(cfg.device, cfg.train.startup_timeout_min)
        with _quiet_unless(ctx.is_main), _torch_threads(cfg.train.threads, ctx.device):
            outcome = _Trainer(cfg, rung, run_dir, ctx, stop_requested).run()
    return dataclasses.replace(outcome, signal=received[0]) if outcome.status == "stopped" and received else outcome


@contextlib.contextmanager
def _quiet_unless(is_main: bool) -> Iterator[None]:
    """Only rank 0 logs progress: the other ranks' ladder loggers keep warnings and errors."""
    logger = logging.getLogger("ladder")
    previous = logger.level
    if not is_main:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _torch_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """torch's intra-op thread count for the run, restored afterwards. Unset (and no OMP_NUM_THREADS),
    a CPU run takes torch's default (one per core) only if the cores are free, else fewer, and says so."""
    previous = torch.get_num_threads()
    if threads is None:
        if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
            yield
            return
        threads, busy = safe_threads(previous)
        if busy:
            log.warning(
                "the CPU is busy (%s): training with %d thread(s) instead of %d; set train.threads to choose",
                busy,
                threads,
                previous,
            )
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, received: list[int]) -> Iterator[threading.Event]:
    """SIGTERM/SIGUSR1 and a first Ctrl-C (SIGINT) set `stop` and are appended to `received`: the
    loop checkpoints at the end of the step and returns. A second Ctrl-C aborts at once
    (KeyboardInterrupt). Old handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled in the main thread
        return

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()
        received.append(signum)

    def interrupt(signum: int, frame: Any) -> None:
        request_stop(signum, frame)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if is_rank_zero():  # every rank gets the signal; one says so
            log.warning("interrupted: checkpointing at the end of this step (Ctrl-C again aborts without one)")

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _batch_split(rung: Rung, world_size: int, micro_batch_size: int | None, device: torch.device) -> tuple[int, int]:
    """(sequences per process, sequences per forward pass); a batch the processes or the
    micro-batch do not divide is a LadderError (checked before a run starts, and at set-up)."""
    if rung.batch_sequences % world_size:
        raise LadderError(f"global batch {rung.batch_sequences} is not divisible by {world_size} processes")
    per_rank = rung.batch_sequences // world_size
    micro = micro_batch_size or _default_micro_batch(rung, per_rank, device)
    if per_rank % micro:
        raise LadderError(f"train.micro_batch_size={micro} does not divide the {per_rank} sequences per process")
    return per_rank, micro


def _default_micro_batch(rung: Rung, per_rank: int, device: torch.device) -> int:
    """On a GPU the memory plan's choice by model size; on CPU the largest divisor of the per-rank
    batch within CPU_MICRO_BATCH_TOKENS tokens (at least 1)."""
    if device.type == "cuda":
        return default_micro_batch(rung.shape, per_rank)
    limit = max(1, CPU_MICRO_BATCH_TOKENS // rung.seq_len)
    return max(d for d in range(1, per_rank + 1) if per_rank % d == 0 and d <= limit)


def training_precision(cfg: DictConfig, device: torch.device) -> str:
    """'bf16' or 'fp32' (`auto`: bf16 on CUDA); bf16 on a GPU without it is refused in one line."""
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LadderError(
            f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 (use train.precision=fp32)"
        )
    return precision


class _Trainer:
    """One training session of one run (a fresh start or a resume)."""

    def __init__(
        self,
        cfg: DictConfig,
        rung: Rung,
        run_dir: RunDir,
        ctx: distributed.DistContext,
        stop_requested: threading.Event,
    ):
        self.cfg, self.run_dir, self.ctx, self.stop_requested = cfg, run_dir, ctx, stop_requested
        self.device = ctx.device
        self.started = time.perf_counter()

        from ladder.data import TokenLoader, open_prepared, training_corpus

        # Rank 0 checks the prepared corpus cheaply (or prepares it); the others then open it.
        if ctx.is_main:
            self.corpus = training_corpus(cfg.data)
        ctx.barrier()
        if not ctx.is_main:
            self.corpus = open_prepared(cfg.data)
        vocab = self.corpus.tokenizer.vocab_size
        if cfg.model.vocab_size is not None and cfg.model.vocab_size < vocab:
            raise LadderError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {vocab}")
        self.rung = (
            rung if cfg.model.vocab_size is not None else rung.for_vocab(padded_vocab(vocab, cfg.model.vocab_multiple))
        )
        rung = self.rung
        self.flops_per_token = flops_per_token(rung.shape)  # (6N, 6N + attention)

        per_rank, micro = _batch_split(rung, ctx.world_size, cfg.train.micro_batch_size, self.device)
        self.n_micro = per_rank // micro
        self.micro = micro
        self.loader = TokenLoader(
            self.corpus.train_path, rung.seq_len, rung.batch_sequences, cfg.seed, ctx.rank, ctx.world_size
        )
        self.batches: Prefetcher | None = None

        self.precision = training_precision(cfg, self.device)
        self.memory_plan = parallel.resolve_plan(
            cfg, rung.shape, self.device.type, ctx.world_size, per_rank, micro, self.precision
        )
        if self.device.type == "cpu":
            keep_freed_memory()  # no fresh pages for every step's activations (see cpu_memory)
        # --- hook: the model, wrapped for this run's parallelism (ladder.train.parallel) ---
        self.parallel = parallel.build_model(cfg, rung.shape, ctx, self.memory_plan, self.precision)
        self.model = self.parallel.model
        if ctx.is_main and self.device.type == "cuda":  # the plan counts GPU memory; a CPU run has none to plan
            log.info(
                "%s: %s (memory plan per GPU: %s)", rung.name, self.parallel.parallel, self.memory_plan.breakdown()
            )
        self.optimizer = build_optimizer(cfg.optim, self.model, rung.peak_lr, self.device)
        self.schedule = Schedule(rung.peak_lr, rung.warmup_steps, rung.steps, cfg.optim.final_lr_ratio)
        self.stability = StabilityMonitor(spike_factor=cfg.train.spike_factor)
        self.step = 0
        self.elapsed_before = 0.0  # wall seconds of earlier sessions of this run
        self.last_loss: float | None = None
        # --- hook: the loss (ladder.train.compile) ---
        self.loss_fn = compiled_loss(
            cfg.train.z_loss, cfg.train.compile_backend, parallel.compile_enabled(cfg, self.device)
        )
        self.pending: list[torch.Tensor] = []  # [loss, grad norm] of the steps since the last host sync
        self.clipped_since_log = 0
        self.checkpoints = ckpt.CheckpointWriter(
            run_dir.checkpoint_dir,
            rank=ctx.rank,
            distributed=ctx.distributed,
            keep=cfg.train.keep_checkpoints,
            asynchronous=cfg.train.async_checkpoint,
        )

        self.throughput = Throughput(
            self.flops_per_token[1], device_peak_flops(self.device, cfg.train.gpu), ctx.world_size
        )
        # Every rank evaluates its share; under FSDP every rank runs every forward pass instead
        # (the blocks' all-gathers must match), so nothing is shared out.
        self.shard_evaluation = self.parallel.parallel != "fsdp"
        self.tasks = (
            TaskEvaluator(cfg.tasks, self.corpus, run_dir.path, ctx, shard=self.shard_evaluation)
            if cfg.tasks.names
            else None
        )
        self.last_checkpoint = time.monotonic()
        self.pending_record: dict[str, Any] | None = None  # a step's record whose evaluation a stop interrupted
        self.tracker: Tracker | None = None

    # -- context managers -------------------------------------------------------------------

    def autocast(self):
        """bf16 autocast under DDP; FSDP2's mixed-precision policy casts the parameters instead."""
        if self.precision == "bf16" and self.parallel.parallel == "ddp":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- state ------------------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        """Everything but the tensors: plain data (the checkpoint's trainer.json)."""
        return {
            "schedule": dataclasses.asdict(self.schedule),
            "step": self.step,
            "tokens": self.step * self.rung.batch_tokens,
            "data": {"seed": self.cfg.seed, "next_step": self.step},  # the loader is a function of (seed, step)
            "python_rng": ckpt.python_rng_state(),
            "stability": self.stability.state_dict(),
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
            "last_loss": self.last_loss,
            "pending_record": self.pending_record,
            "world_size": self.ctx.world_size,
            "parallel": self.parallel.parallel,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "shape": ckpt.shape_to_dict(self.rung.shape),
        }

    # --- hook: saving and loading checkpoints (ladder.train.checkpoint) ---

    def save(self, path: Path | None = None) -> Path:
        """Checkpoint (every rank writes its shards) at this step, or to `path` (a diagnostic one);
        returns the checkpoint, whole on return unless asynchronous. The losses of the steps since
        the last host sync are read first (one sync, cheap beside a checkpoint): a non-finite one
        stops the run here, so that no checkpoint holds a state trained past it."""
        if path is None and self.pending:
            self.flush(self.step, before_update=False)
        tensors = ckpt.model_and_optimizer_state(self.model, self.optimizer) | ckpt.rng_tensors(
            self.ctx.rank, self.device
        )
        final = path or self.run_dir.step_checkpoint(self.step)
        self.last_checkpoint = time.monotonic()
        return self.checkpoints.save(final, self.trainer_state(), tensors, prune=path is None)

    def convert_legacy(self, legacy: Path) -> Path:
        """The checkpoint of a run started before sharded checkpoints (its latest.pt), written once
        as checkpoint/step-<k>/ to resume from; the file is kept. Rank 0 writes it; every rank reads
        the file (as the old trainer did), so that all of them refuse alike."""
        state, tensors = ckpt.legacy_checkpoint(
            legacy, self.cfg, self.rung.shape, dataclasses.asdict(self.schedule), self.rung.peak_lr
        )
        path = self.run_dir.step_checkpoint(state["step"])
        if self.ctx.is_main:
            writer = ckpt.CheckpointWriter(
                self.run_dir.checkpoint_dir, rank=0, distributed=False, keep=1, asynchronous=False
            )
            writer.save(path, state, tensors, prune=False)
            log.info(
                "%s (step %d) written as %s, the sharded checkpoint the run resumes from", legacy, state["step"], path
            )
        self.ctx.barrier()
        return path

    def resume(self, path: Path) -> None:
        state = ckpt.load_into(
            path, self.model, self.optimizer, rank=self.ctx.rank, device=self.device, distributed=self.ctx.distributed
        )
        self.stability.load_state_dict(state["stability"])
        self.step = int(state["step"])
        self.elapsed_before = float(state["elapsed"])
        self.last_loss = state["last_loss"]
        self.pending_record = state.get("pending_record")
        if self.ctx.is_main:
            self.run_dir.truncate_metrics(self.step)
        log.info(
            "resumed %s at step %d of %d from %s (written by %d processes, %s)",
            self.run_dir.path,
            self.step,
            self.rung.steps,
            path.name,
            state["world_size"],
            state["parallel"],
        )

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        cfg, ctx = self.cfg, self.ctx
        resolved = OmegaConf.to_container(cfg, resolve=True)  # same config as the run dir's (check_run)
        if ctx.is_main:  # before anything is written: wandb refusing (no login) leaves no run behind
            self.tracker = self.make_tracker(resolved)
        try:
            latest = self.run_dir.latest_checkpoint
            if latest is None and self.run_dir.legacy_checkpoint is not None:
                latest = self.convert_legacy(self.run_dir.legacy_checkpoint)
            if latest is not None:
                self.resume(latest)
            elif ctx.is_main:
                self.run_dir.start(resolved, self.rung)
            ctx.barrier()
            ctx.set_timeout(cfg.train.timeout_min)  # start-up is over
            if ctx.is_main:
                self.run_dir.write_config(resolved)  # this session's values of the resumable keys
                self.run_dir.clear_failed()
            ctx.barrier()  # no rank may fail (and write FAILED) before rank 0 has cleared the old one
            # NaN, a bug or a broken machine: recorded for `ladder status`, naming the rank.
            with distributed.fail_fast(ctx, self.fail, lambda: self.step):
                return self.train()
        finally:
            if self.tracker is not None:
                self.tracker.finish()

    def make_tracker(self, resolved: dict[str, Any]) -> Tracker:
        """wandb: the config with the rung's record beside it under a key of its own (the config's
        `rung` is the sweep's rung name; `ladder collect --wandb` reads the record back); a sweep's
        rungs grouped by the sweep root's name and tagged by size, role and multiplier."""
        cfg, rung = self.cfg, self.rung
        group = Path(cfg.run_dir).absolute().parent.name if cfg.rung else None
        tags = (rung.size, rung.role) + ((f"{rung.multiplier:g}xC",) if rung.multiplier is not None else ())
        return Tracker(cfg, self.run_dir.path, rung.name, resolved | {RUNG_RECORD_KEY: rung.to_record()}, group, tags)

    def fail(self, record: dict[str, Any]) -> None:
        """FAILED, by whichever rank failed; with several ranks the first failure's record is
        kept (the others only saw their peer go)."""
        self.run_dir.write_failed(record, keep_existing=self.ctx.distributed)

    def train(self) -> RunOutcome:
        cfg, rung, ctx = self.cfg, self.rung, self.ctx
        last_step = rung.steps if cfg.train.max_steps is None else min(rung.steps, cfg.train.max_steps)
        bar = progress(total=last_step, initial=self.step, unit="step", enabled=ctx.is_main, desc=f"train {rung.name}")
        steps_since_log = 0
        # `train.evals` spreads a fixed number of evaluations over the run, whatever its length.
        evals = cfg.train.evals
        eval_interval = max(1, -(-rung.steps // evals)) if evals else cfg.train.eval_interval
        self.model.train()
        checkpoint_seconds = math.inf if cfg.train.checkpoint_minutes is None else 60 * cfg.train.checkpoint_minutes
        self.batches = Prefetcher(self.loader, self.n_micro, self.device, self.step)
        try:
            if self.pending_record is not None and not self.stop_requested.is_set():
                self.log_record(self.pending_record, evaluate=True)  # the evaluation a stop interrupted
                self.save()
            first_step = self.step
            while self.step < last_step:
                # The stop flag and the checkpoint clock are agreed on by all ranks at host syncs
                # only (every step in one process), in one collective.
                stop = checkpoint_due = False
                if not ctx.distributed or self.syncs_at(self.step):
                    stop, checkpoint_due = ctx.any_of_each(
                        self.stop_requested.is_set(),
                        self.step > first_step and time.monotonic() - self.last_checkpoint >= checkpoint_seconds,
                    )
                if checkpoint_due and not stop:
                    self.save()
                if stop:
                    path = self.save()
                    self.checkpoints.wait()
                    if ctx.is_main:
                        log.warning("stop signal: checkpoint at step %d written to %s", self.step, path)
                    return self.outcome("stopped")
                final = self.step + 1 == rung.steps
                # The step a run stops at (train.max_steps) is evaluated too: a smoke run has eval rows.
                evaluate = final or self.step + 1 == last_step or (self.step + 1) % eval_interval == 0
                log_now = (
                    final or evaluate or (self.step + 1) % cfg.train.log_interval == 0 or self.step + 1 == last_step
                )
                checkpoint = final or self.step + 1 == last_step or (self.step + 1) % cfg.train.checkpoint_interval == 0
                lr = self.train_step(sync=log_now or checkpoint or self.syncs_at(self.step + 1))
                self.step += 1
                steps_since_log += 1
                if self.last_loss is not None:
                    bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
                bar.update(1)
                if log_now:
                    grad_norm = self.stability.grad_norms[-1]
                    record = self.metrics_record(
                        self.last_loss, grad_norm, lr, self.clipped_since_log / steps_since_log
                    )
                    self.log_record(record, evaluate)
                    self.clipped_since_log, steps_since_log = 0, 0
                if checkpoint:
                    self.save()
            self.checkpoints.wait()
        finally:
            self.batches.close()
            bar.close()
        if self.pending_record is not None:  # a stop interrupted the last evaluation: not done yet
            return self.outcome("stopped")
        if self.step < rung.steps:
            log.info(
                "stopped at train.max_steps=%d (step %d of %d): rerun with a larger train.max_steps, "
                "or without it, to train on from the checkpoint",
                cfg.train.max_steps,
                self.step,
                rung.steps,
            )
            return self.outcome("stopped")
        return self.finish()

    def syncs_at(self, step: int) -> bool:
        """Steps at which the host waits for the device: every log interval (and more often never)."""
        return step % self.cfg.train.log_interval == 0

    def train_step(self, sync: bool) -> float:
        """One optimizer step over the global batch; returns its lr. Loss and gradient norm stay on
        the device until a `sync` step, which reads every pending step's at once (`flush`)."""
        cfg = self.cfg
        lr = self.schedule.apply(self.optimizer, self.step)
        self.throughput.start_step()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.n_micro):
            inputs, targets = self.batches.get(self.step, micro)
            with self.parallel.no_sync(last_micro_batch=micro == self.n_micro - 1):
                # --- hook: the loss ---
                with self.autocast():
                    logits = self.parallel.module(inputs)
                loss, cross_entropy = self.loss_fn(logits, targets)
                (loss / self.n_micro).backward()
            loss_sum += cross_entropy.detach()
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor, the norm over every shard
            grad_norm = grad_norm.full_tensor()
        self.pending.append(torch.stack((loss_sum / self.n_micro, grad_norm.to(loss_sum.dtype))))
        if sync:
            self.flush(self.step + 1, before_update=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.throughput.end_step(self.rung.batch_tokens)
        return lr

    def flush(self, newest: int, before_update: bool) -> None:
        """Read the pending steps' losses (averaged over ranks) and gradient norms, up to step
        `newest` (1-based; `before_update`: its optimizer step is still to come): one host sync and
        one all-reduce for all of them; stop on the first non-finite one."""
        values = torch.stack(self.pending).double()
        if self.ctx.distributed:
            losses = values[:, 0].contiguous()
            dist.all_reduce(losses)
            values[:, 0] = losses / self.ctx.world_size
        first = newest + 1 - len(self.pending)  # 1-based number of the oldest pending step
        self.pending = []
        for offset, (loss, grad_norm) in enumerate(values.tolist()):
            step = first + offset
            if not is_finite(loss, grad_norm):
                self.nonfinite(step, loss, grad_norm, seen=newest, diagnosable=step == newest and before_update)
            self.last_loss = loss
            self.clipped_since_log += int(0 < self.cfg.optim.grad_clip < grad_norm)
            if self.stability.record(step, loss, grad_norm) and self.ctx.is_main:
                log.warning(
                    "loss spike at step %d: %.4f > %.1f x recent median", step, loss, self.cfg.train.spike_factor
                )

    def nonfinite(self, step: int, loss: float, grad_norm: float, seen: int, diagnosable: bool) -> None:
        """Stop with a clear error naming the first non-finite step (read at step `seen`). When that
        step's update is still to come (`diagnosable`), the state that produced it is saved as a
        diagnostic checkpoint; once updates past it are applied (losses are read every
        train.log_interval steps, or at a checkpoint), no checkpoint is written from it."""
        self.checkpoints.wait()  # a background save of an earlier, finite step
        if diagnosable:
            diagnostic = f"diagnostic checkpoint {self.save(self.run_dir.diagnostic_checkpoint(step))}"
            self.checkpoints.wait()
        else:
            diagnostic = (
                f"read at step {seen}, past updates made with it, so no diagnostic checkpoint "
                "(train.log_interval=1 keeps one)"
            )
        latest = self.run_dir.latest_checkpoint
        good = f"the last good checkpoint is {latest}" if latest is not None else "no earlier checkpoint"
        raise LadderError(
            f"step {step}: loss {loss} / gradient norm {grad_norm} is not finite "
            f"(learning rate {self.schedule.lr_at(step - 1):.3g}); {diagnostic}; "
            f"{good} (try a lower optim.lr or optim.grad_clip)"
        )

    def metrics_record(self, loss: float, grad_norm: float, lr: float, clip_fraction: float) -> dict[str, Any]:
        speed = self.throughput.report()
        tokens = self.step * self.rung.batch_tokens
        return {
            "step": self.step,
            "tokens": tokens,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "clip": clip_fraction,
            "tokens_per_s": speed["tokens_per_s"],
            "flops_per_s": speed["flops_per_s"],
            "mfu": speed["mfu"],
            "mem": memory_mb(self.device),
            "flops": self.flops_per_token[0] * tokens,
        }

    def log_record(self, record: dict[str, Any], evaluate: bool) -> None:
        """Append the step's record (rank 0), with the evaluation's when asked. A stop during the
        evaluation keeps the record back (`pending_record`, saved in the checkpoint): the resumed
        run evaluates this step first, so no evaluation is lost and no step is logged twice."""
        if evaluate:
            scores = self.evaluate()
            if scores is None:
                self.pending_record = record
                return
            record = record | scores
        self.pending_record = None
        if self.ctx.is_main:
            self.run_dir.append_metrics(record)
            self.tracker.log(record, self.step)

    def evaluate(self) -> dict[str, Any] | None:
        """Validation bpb and task scores, shared by every rank (ladder.train.evaluation; under FSDP
        every rank runs every forward pass), and the seconds they took (eval_s; not counted in
        tokens/s); None when a stop interrupted them."""
        started = time.perf_counter()
        # Compiled blocks run eagerly here (other shapes, no gradients: no recompilation).
        with torch.compiler.set_stance("force_eager"), self.whole_root():
            record: dict[str, Any] = {
                "val_bpb": validation_bpb(
                    self.model,
                    self.corpus.val_path,
                    seq_len=self.rung.seq_len,
                    batch_size=self.micro,
                    max_tokens=self.cfg.train.val_tokens,
                    bytes_per_token=self.corpus.val_bytes_per_token,
                    device=self.device,
                    autocast=self.autocast,
                    ctx=self.ctx,
                    shard=self.shard_evaluation,
                )
            }
            if self.tasks is not None:
                tokens = self.step * self.rung.batch_tokens
                scores = self.tasks(
                    self.model,
                    step=self.step,
                    tokens=tokens,
                    final=self.step == self.rung.steps,
                    autocast=self.autocast,
                    stop=self.stop_requested.is_set,
                    row_fields={
                        "run": self.rung.name,
                        "role": self.rung.role,
                        "N": self.rung.n_params,
                        "size": self.rung.size,
                        "multiplier": self.rung.multiplier,
                        "flops": self.flops_per_token[0] * tokens,
                    },
                )
                if scores is None:
                    return None
                record |= scores
        record["eval_s"] = time.perf_counter() - started
        return record if self.ctx.is_main else {}

    @contextlib.contextmanager
    def whole_root(self) -> Iterator[None]:
        """Under FSDP the root's parameters (embeddings, output layer) gathered, for scorers that
        call them directly; the blocks gather their own."""
        if self.parallel.parallel != "fsdp":
            yield
            return
        self.model.unshard()
        try:
            yield
        finally:
            self.model.reshard()

    def outcome(self, status: str) -> RunOutcome:
        return RunOutcome(status, self.run_dir.path, self.step, self.step * self.rung.batch_tokens, self.last_loss)

    def finish(self) -> RunOutcome:
        suggested = self.stability.suggested_clip()
        done = {
            "step": self.step,
            "tokens": self.step * self.rung.batch_tokens,
            "loss": self.last_loss,
            "wall_seconds": self.elapsed_before + time.perf_counter() - self.started,
            "suggested_clip": suggested,
            "loss_spikes": self.stability.spikes,
        }
        if self.ctx.is_main:
            self.run_dir.write_done(done)
            log.info(
                "done: %d steps, %d tokens, loss %.4f; grad-norm p90 (suggested clip) %s",
                self.step,
                done["tokens"],
                self.last_loss,
                f"{suggested:.3g}" if suggested else "n/a",
            )
        self.ctx.barrier()
        return self.outcome("done")
