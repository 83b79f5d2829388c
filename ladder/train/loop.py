"""`run_training(cfg)`: train one rung to its token budget in its run directory.

Re-entrant (the sweep calls it once per rung in one process): signal handlers and thread counts
are restored and the wandb run is closed; a DDP process group, made once, serves every rung of
the process (ladder.train.distributed). The same call on the
same run_dir resumes from its latest checkpoint; on a finished run it does nothing.

The rung comes sized: the sweep hands over the grid's Rung, `ladder train` the one
`ladder.rungs.rung_from_config` makes; the trainer only sizes it for its tokenizer's vocabulary
when the config leaves `model.vocab_size` to the tokenizer (`Rung.for_vocab`). The run directory
is read and written through `ladder.runs.directory.RunDir`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ladder.config import check_values
from ladder.errors import LadderError
from ladder.model import decoder_from_config
from ladder.ranks import is_rank_zero
from ladder.rungs import RUNG_RECORD_KEY, Rung, rung_from_config
from ladder.runs.directory import RunDir, config_differences
from ladder.sizes import flops_per_token
from ladder.train import checkpoint as ckpt
from ladder.train import distributed
from ladder.train.cpu_memory import keep_freed_memory
from ladder.train.evaluation import TaskEvaluator, validation_bpb
from ladder.train.metrics import Throughput, device_peak_flops, memory_mb
from ladder.train.optim import Schedule, build_optimizer
from ladder.train.stability import StabilityMonitor, is_finite
from ladder.train.tracking import Tracker

log = logging.getLogger("ladder.train")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM preemption sends SIGTERM (or SIGUSR1 if asked)
MICRO_BATCH_TOKENS = {"cpu": 16_384, "cuda": 32_768}  # default tokens per forward pass


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


def check_run(cfg: DictConfig, rung: Rung | None = None) -> Rung:
    """Everything that would make the run fail at once, checked before anything is written: the
    config's values, the rung (preset, multiplier; sized from the config unless given), the
    device, and a run directory that is a file, cannot be written, or holds a run with another
    config (finished or not). Returns the rung."""
    check_values(cfg)
    rung = rung if rung is not None else rung_from_config(cfg)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise LadderError("device=cuda but no CUDA device is available (use device=cpu)")
    path = Path(cfg.run_dir)
    if path.exists() and not path.is_dir():
        raise LadderError(f"run_dir {path} is a file, not a directory")
    existing = next(parent for parent in (path, *path.absolute().parents) if parent.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LadderError(f"run_dir {path}: {existing} is not writable")
    run_dir = RunDir(path)
    if run_dir.has_config() or run_dir.latest_checkpoint.is_file():  # no config beside a checkpoint: refused
        differences = config_differences(run_dir.read_config(), OmegaConf.to_container(cfg, resolve=True))
        if differences:
            raise LadderError(
                f"{path} holds a run with another config ({'; '.join(differences[:3])}); "
                "use another run_dir to train this one"
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
    owner = run_dir.session() if is_rank_zero() else contextlib.nullcontext()
    with owner, _stop_on_signals(stop or threading.Event()) as stop_requested:
        ctx = distributed.setup(cfg.device)
        with _torch_threads(cfg.train.threads), _quiet_unless(ctx.is_main):
            return _Trainer(cfg, rung, run_dir, ctx, stop_requested).run()


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
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the run, restored afterwards."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM/SIGUSR1 and a first Ctrl-C (SIGINT) set `stop`: the loop checkpoints at the end of
    the step and returns. A second Ctrl-C aborts at once (KeyboardInterrupt). Old handlers are
    restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled in the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if is_rank_zero():  # every rank gets the signal; one says so
            log.warning("interrupted: checkpointing at the end of this step (Ctrl-C again aborts without one)")

    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in STOP_SIGNALS}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _default_micro_batch(per_rank: int, seq_len: int, device: torch.device) -> int:
    """The largest divisor of the per-rank batch within MICRO_BATCH_TOKENS tokens (at least 1)."""
    limit = max(1, MICRO_BATCH_TOKENS[device.type] // seq_len)
    return max(d for d in range(1, per_rank + 1) if per_rank % d == 0 and d <= limit)


class _Trainer:
    """One training session of one run (a fresh start or a resume)."""

    def __init__(self, cfg: DictConfig, rung: Rung, run_dir: RunDir, ctx: distributed.DistContext,
                 stop_requested: threading.Event):
        self.cfg, self.run_dir, self.ctx, self.stop_requested = cfg, run_dir, ctx, stop_requested
        self.device = ctx.device
        self.started = time.perf_counter()

        from ladder.data import TokenLoader, prepare_corpus

        # Rank 0 prepares the corpus (idempotent); the others then find it ready.
        if ctx.is_main:
            self.corpus = prepare_corpus(cfg.data)
        ctx.barrier()
        if not ctx.is_main:
            self.corpus = prepare_corpus(cfg.data)
        vocab = self.corpus.tokenizer.vocab_size
        if cfg.model.vocab_size is not None and cfg.model.vocab_size < vocab:
            raise LadderError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {vocab}")
        self.rung = rung if cfg.model.vocab_size is not None else rung.for_vocab(vocab)
        rung = self.rung
        self.flops_per_token = flops_per_token(rung.shape)  # (6N, 6N + attention)

        if rung.batch_sequences % ctx.world_size:
            raise LadderError(f"global batch {rung.batch_sequences} is not divisible by {ctx.world_size} processes")
        per_rank = rung.batch_sequences // ctx.world_size
        micro = cfg.train.micro_batch_size or _default_micro_batch(per_rank, rung.seq_len, self.device)
        if per_rank % micro:
            raise LadderError(f"train.micro_batch_size={micro} does not divide the {per_rank} sequences per process")
        self.n_micro = per_rank // micro
        self.micro = micro
        self.loader = TokenLoader(self.corpus.train_path, rung.seq_len, rung.batch_sequences, cfg.seed, ctx.rank, ctx.world_size)

        precision = cfg.train.precision  # auto, bf16 or fp32 (ladder.config.check_values)
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if precision == "auto" else precision

        if self.device.type == "cpu":
            keep_freed_memory()  # no fresh pages for every step's activations (see cpu_memory)
        torch.manual_seed(cfg.seed)
        self.model = decoder_from_config(rung.shape, cfg.model).to(self.device)
        self.optimizer = build_optimizer(cfg.optim, self.model, rung.peak_lr, self.device)
        self.schedule = Schedule(rung.peak_lr, rung.warmup_steps, rung.steps, cfg.optim.final_lr_ratio)
        self.stability = StabilityMonitor(spike_factor=cfg.train.spike_factor)
        self.step = 0
        self.elapsed_before = 0.0  # wall seconds of earlier sessions of this run
        self.last_loss: float | None = None

        module: torch.nn.Module = self.model
        if ctx.distributed:
            # No per-step buffer broadcast: the only buffers (RoPE) are constants. torch 2.13 renamed
            # the option (broadcast_buffers is deprecated there and warns); older torch has the old name.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            options = inspect.signature(DistributedDataParallel).parameters
            no_sync = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
            module = DistributedDataParallel(module, device_ids=device_ids, **{no_sync: False})
        self.ddp = module if ctx.distributed else None
        compile_ = cfg.train.compile if cfg.train.compile is not None else self.device.type == "cuda"

        def loss_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            """Mean next-token cross-entropy (nats). Compiled with the model, so that the logits'
            upcast and log-softmax fuse instead of materialising [B, T, vocab] fp32 copies."""
            return F.cross_entropy(module(inputs).flatten(0, 1), targets.flatten())

        self.loss_of = torch.compile(loss_of) if compile_ else loss_of

        self.throughput = Throughput(self.flops_per_token[1], device_peak_flops(self.device, cfg.train.gpu), ctx.world_size)
        self.tasks = (
            TaskEvaluator(cfg.tasks, self.corpus, run_dir.path, self.device) if ctx.is_main and cfg.tasks.names else None
        )
        self.tracker: Tracker | None = None

    # -- context managers -------------------------------------------------------------------

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"peak_lr": self.schedule.peak_lr, "warmup_steps": self.schedule.warmup_steps,
                         "total_steps": self.schedule.total_steps, "final_ratio": self.schedule.final_ratio},
            "step": self.step,
            "tokens": self.step * self.rung.batch_tokens,
            "data": {"seed": self.cfg.seed, "next_step": self.step},  # the loader is a function of (seed, step)
            "rng": ckpt.capture_rng(),
            "stability": self.stability.state_dict(),
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
            "last_loss": self.last_loss,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "shape": ckpt.shape_to_dict(self.rung.shape),
        }

    def save(self, path: Path | None = None) -> Path:
        """Checkpoint (rank 0 writes; every rank waits so none runs ahead of a checkpoint)."""
        path = path or self.run_dir.latest_checkpoint
        if self.ctx.is_main:
            ckpt.save_checkpoint(path, self.state_dict())
        self.ctx.barrier()
        return path

    def resume(self) -> None:
        state = ckpt.read_checkpoint(self.run_dir.latest_checkpoint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stability.load_state_dict(state["stability"])
        ckpt.restore_rng(state["rng"])
        self.step = int(state["step"])
        self.elapsed_before = float(state["elapsed"])
        self.last_loss = state["last_loss"]
        if self.ctx.is_main:
            self.run_dir.truncate_metrics(self.step)
        log.info("resumed %s at step %d of %d", self.run_dir.path, self.step, self.rung.steps)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        cfg, ctx = self.cfg, self.ctx
        resolved = OmegaConf.to_container(cfg, resolve=True)  # same config as the run dir's (check_run)
        if self.run_dir.latest_checkpoint.is_file():
            self.resume()
        elif ctx.is_main:
            self.run_dir.start(resolved, self.rung)
        ctx.barrier()
        if ctx.is_main:
            self.run_dir.write_config(resolved)  # this session's values of the resumable keys
            self.run_dir.clear_failed()
        try:
            if ctx.is_main:
                # The rung's record beside the config, under a key of its own (the config's `rung`
                # is the sweep's rung name): `ladder collect --wandb` reads it back.
                self.tracker = Tracker(cfg, self.run_dir.path, self.rung.name,
                                       resolved | {RUNG_RECORD_KEY: self.rung.to_record()})
            return self.train()
        except Exception as error:  # NaN, a bug or a broken machine: recorded for `ladder status`
            self.fail(error)
            raise
        finally:
            if self.tracker is not None:
                self.tracker.finish()

    def fail(self, error: BaseException) -> None:
        if self.ctx.is_main:
            self.run_dir.write_failed({"step": self.step, "error": f"{type(error).__name__}: {error}"})

    def train(self) -> RunOutcome:
        cfg, rung, ctx = self.cfg, self.rung, self.ctx
        last_step = rung.steps if cfg.train.max_steps is None else min(rung.steps, cfg.train.max_steps)
        bar = tqdm(total=last_step, initial=self.step, unit="step", disable=None if ctx.is_main else True,
                   desc=self.rung.name, dynamic_ncols=True)
        clipped_since_log, steps_since_log = 0, 0
        # `train.evals` spreads a fixed number of evaluations over the run, whatever its length.
        evals = cfg.train.evals
        eval_interval = max(1, -(-rung.steps // evals)) if evals else cfg.train.eval_interval
        self.model.train()
        try:
            while self.step < last_step:
                if ctx.any(self.stop_requested.is_set()):
                    path = self.save()
                    if ctx.is_main:
                        log.warning("stop signal: checkpoint at step %d written to %s", self.step, path)
                    return self.outcome("stopped")
                loss, grad_norm, lr = self.train_step()
                self.step += 1
                self.last_loss = loss
                steps_since_log += 1
                clipped_since_log += int(0 < cfg.optim.grad_clip < grad_norm)
                if self.stability.record(self.step, loss, grad_norm) and ctx.is_main:
                    log.warning("loss spike at step %d: %.4f > %.1f x recent median", self.step, loss, cfg.train.spike_factor)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                final = self.step == rung.steps
                evaluate = final or self.step % eval_interval == 0
                if final or evaluate or self.step % cfg.train.log_interval == 0 or self.step == last_step:
                    record = self.metrics_record(loss, grad_norm, lr, clipped_since_log / steps_since_log)
                    if evaluate:
                        record |= self.evaluate()
                    if ctx.is_main:
                        self.run_dir.append_metrics(record)
                        self.tracker.log(record, self.step)
                    clipped_since_log, steps_since_log = 0, 0
                if final or self.step == last_step or self.step % cfg.train.checkpoint_interval == 0:
                    self.save()
        finally:
            bar.close()
        if self.step < rung.steps:
            log.info("stopped at step %d (train.max_steps=%d, of %d); the same command resumes",
                     self.step, cfg.train.max_steps, rung.steps)
            return self.outcome("stopped")
        return self.finish()

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over the global batch: (loss, pre-clip grad norm, lr)."""
        cfg = self.cfg
        lr = self.schedule.apply(self.optimizer, self.step)
        self.throughput.start_step()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.n_micro):
            inputs, targets = self.loader.batch(self.step, micro, self.n_micro)
            inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            # DDP all-reduces gradients on the last micro-batch only.
            sync = self.ddp is None or micro == self.n_micro - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self.autocast():
                    loss = self.loss_of(inputs, targets)
                (loss / self.n_micro).backward()
            loss_sum += loss.detach()
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
        loss = self.ctx.mean(loss_sum.item() / self.n_micro)
        if not is_finite(loss, grad_norm):
            self.nonfinite(loss, grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.throughput.end_step(self.rung.batch_tokens)
        return loss, grad_norm, lr

    def nonfinite(self, loss: float, grad_norm: float) -> None:
        """Save the state that produced the NaN/inf (before the update) and stop with a clear error."""
        path = self.save(self.run_dir.diagnostic_checkpoint(self.step + 1))
        latest = self.run_dir.latest_checkpoint
        good = f"the last good checkpoint is {latest}" if latest.is_file() else "no earlier checkpoint"
        raise LadderError(
            f"step {self.step + 1}: loss {loss} / gradient norm {grad_norm} is not finite "
            f"(learning rate {self.schedule.lr_at(self.step):.3g}); diagnostic checkpoint {path}; "
            f"{good} (try a lower optim.lr or optim.grad_clip)"
        )

    def metrics_record(self, loss: float, grad_norm: float, lr: float, clip_fraction: float) -> dict[str, Any]:
        speed = self.throughput.report()
        tokens = self.step * self.rung.batch_tokens
        return {
            "step": self.step, "tokens": tokens, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "clip": clip_fraction, "tokens_per_s": speed["tokens_per_s"], "flops_per_s": speed["flops_per_s"],
            "mfu": speed["mfu"], "mem": memory_mb(self.device), "flops": self.flops_per_token[0] * tokens,
        }

    def evaluate(self) -> dict[str, Any]:
        """Validation bpb and task scores on rank 0 (the others wait); time excluded from tokens/s."""
        record: dict[str, Any] = {}
        if self.ctx.is_main:
            record["val_bpb"] = validation_bpb(
                self.model, self.corpus.val_path, seq_len=self.rung.seq_len, batch_size=self.micro,
                max_tokens=self.cfg.train.val_tokens, bytes_per_token=self.corpus.val_bytes_per_token,
                device=self.device, autocast=self.autocast,
            )
            if self.tasks is not None:
                tokens = self.step * self.rung.batch_tokens
                record |= self.tasks(self.model, step=self.step, tokens=tokens, row_fields={
                    "run": self.rung.name, "role": self.rung.role, "N": self.rung.n_params,
                    "size": self.rung.size, "multiplier": self.rung.multiplier,
                    "flops": self.flops_per_token[0] * tokens,
                })
        self.ctx.barrier()
        return record

    def outcome(self, status: str) -> RunOutcome:
        return RunOutcome(status, self.run_dir.path, self.step, self.step * self.rung.batch_tokens, self.last_loss)

    def finish(self) -> RunOutcome:
        suggested = self.stability.suggested_clip()
        done = {
            "step": self.step, "tokens": self.step * self.rung.batch_tokens, "loss": self.last_loss,
            "wall_seconds": self.elapsed_before + time.perf_counter() - self.started,
            "suggested_clip": suggested, "loss_spikes": self.stability.spikes,
        }
        if self.ctx.is_main:
            self.run_dir.write_done(done)
            log.info("done: %d steps, %d tokens, loss %.4f; grad-norm p90 (suggested clip) %s",
                     self.step, done["tokens"], self.last_loss, f"{suggested:.3g}" if suggested else "n/a")
        self.ctx.barrier()
        return self.outcome("done")
