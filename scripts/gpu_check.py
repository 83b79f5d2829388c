"""The GPU check: every paper rung trained a few steps at its planned parallelism and micro-batch,
measured against its memory plan; an in-loop OLMES evaluation timed; a two-rank smoke test.

    python scripts/gpu_check.py                                   # one GPU (and 2 ranks if >= 2 GPUs)
    torchrun --nproc_per_node=8 scripts/gpu_check.py              # one node of 8: FSDP over 8, 7B too
    python scripts/gpu_check.py --dry-run                         # on CPU: the same code, femto/pico

For each size (190M, 370M, 760M, 1B, 3B, and 7B when it fits): the memory plan of ladder.memory for
the ranks at hand (`train.parallel=auto`; where nothing fits as configured, the plan that fits with
the largest micro-batch and least recomputation), the model built as `ladder train` builds it
(ladder.train.parallel: meta-device FSDP2 or DDP, compiled blocks, bf16), `--warmup` steps (compile)
then `--steps` timed steps on random tokens. Printed per size: the planned and measured peak
memory per GPU (torch.cuda.max_memory_allocated; the plan without its fixed reserve), tokens/s
(all ranks) and MFU (6N + attention FLOPs per token against the GPU's peak bf16 FLOP/s). Then one
OLMES task (arc_easy, `--eval-questions`) scored with the 190M model as the trainer's in-loop
evaluation scores it, timed; then, on one process with two or more GPUs visible, the smoke test:
two ranks (torchrun) training 190M with FSDP for 3 steps and writing, then reading, a sharded
checkpoint. Sizes stop being started when `--budget-s` is spent (default: 7 minutes, leaving the
evaluation and smoke test inside 8). Without CUDA (and without --dry-run) it exits 2 in one line.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ladder.errors import LadderError
from ladder.hardware import peak_flops
from ladder.hydra_app import compose_config
from ladder.memory import RESERVED_BYTES, choose_plan, default_micro_batch, first_fit, format_bytes, memory_plan
from ladder.rungs import make_rung
from ladder.sizes import flops_per_token, get_shape
from ladder.train import checkpoint as ckpt
from ladder.train import distributed, parallel
from ladder.train.compile import compiled_loss
from ladder.train.optim import build_optimizer

GPU_SIZES = ("190M", "370M", "760M", "1B", "3B", "7B")
DRY_RUN_SIZES = ("femto", "pico")


def say(ctx: distributed.DistContext, text: str) -> None:
    if ctx.is_main:
        print(text, flush=True)


def plan_for(size: str, ctx: distributed.DistContext, gpu_memory_gb: float, cfg, parallel_choice: str):
    """The memory plan `ladder train` would run, or the one that fits; None when nothing does."""
    shape = get_shape(size)
    rung = make_rung(size, 1.0)
    per_rank = rung.batch_sequences // ctx.world_size
    micro = default_micro_batch(shape, per_rank)
    if ctx.device.type == "cpu":
        kind = parallel_choice if parallel_choice != "auto" else "ddp"
        return memory_plan(
            shape, parallel=kind, world_size=ctx.world_size, micro_batch=micro, precision="fp32", kernels="cpu"
        ), None
    try:
        return choose_plan(
            shape,
            parallel=parallel_choice,
            world_size=ctx.world_size,
            per_rank=per_rank,
            micro_batch=micro,
            checkpointing="none",
            precision="bf16",
            optimizer=cfg.optim.name,
            gpu_memory_gb=gpu_memory_gb,
        ), None
    except LadderError as refusal:
        return first_fit(
            shape, world_size=ctx.world_size, per_rank=per_rank, largest_micro_batch=micro, gpu_memory_gb=gpu_memory_gb
        ), str(refusal)


def check_size(size: str, ctx: distributed.DistContext, args) -> dict | None:
    device = ctx.device
    overrides = [f"model={size}", f"device={device.type}", "train.compile=" + ("false" if args.dry_run else "true")]
    cfg = compose_config(overrides)
    plan, refusal = plan_for(size, ctx, args.gpu_memory_gb, cfg, args.parallel)
    if plan is None:
        say(ctx, f"{size}: does not fit {ctx.world_size} GPU(s) of {args.gpu_memory_gb:g} GB ({refusal})")
        return None
    if refusal:
        say(ctx, f"{size}: as configured: {refusal}; checking the plan that fits")
    cfg.train.parallel, cfg.train.activation_checkpointing = plan.parallel, plan.checkpointing
    shape = get_shape(size)
    precision = "fp32" if args.dry_run else "bf16"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = parallel.build_model(cfg, shape, ctx, plan, precision)
    optimizer = build_optimizer(cfg.optim, model.model, 1e-4, device)
    loss_fn = compiled_loss(0.0, cfg.train.compile_backend, not args.dry_run)
    tokens = torch.randint(0, shape.vocab_size, (plan.micro_batch, shape.seq_len + 1), device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if precision == "bf16" and plan.parallel == "ddp"
        else torch.autocast(device.type, enabled=False)
    )

    def step() -> None:
        with autocast:
            logits = model.module(tokens[:, :-1])
        loss, _ = loss_fn(logits, tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    tokens_per_s = ctx.world_size * plan.micro_batch * shape.seq_len * args.steps / seconds
    measured = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    mfu = tokens_per_s * flops_per_token(shape)[1] / (peak * ctx.world_size) if peak else None
    planned = plan.total - RESERVED_BYTES
    say(
        ctx,
        (
            f"{size:>5}  {plan.parallel:>4}  AC {plan.checkpointing:<9}  micro {plan.micro_batch}x{shape.seq_len}  "
            f"planned {format_bytes(planned):>9}  measured "
            + (f"{format_bytes(measured):>9} ({measured / planned:4.0%})" if measured else "n/a")
            + f"  {tokens_per_s:10,.0f} tokens/s  MFU "
            + (f"{mfu:5.1%}" if mfu is not None else "n/a")
            + f"  (warm-up {compile_s:.0f} s)"
        ),
    )
    optimizer.state.clear()  # the next size needs the memory; the caller keeps only the model
    return {"model": model, "shape": shape, "cfg": cfg, "precision": precision}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_evaluation(first: dict, ctx: distributed.DistContext, args) -> None:
    """One OLMES task, scored as the trainer's in-loop evaluation scores it (compiled blocks run eagerly)."""
    from ladder.data.tokenizer import ByteTokenizer
    from ladder.tasks import evaluate, load_tasks

    try:
        tasks = load_tasks([args.eval_task], max_questions=args.eval_questions)
    except LadderError as error:
        say(ctx, f"evaluation skipped: {error}")
        return
    model = first["model"].model
    started = time.perf_counter()
    autocast = torch.autocast(
        ctx.device.type, dtype=torch.bfloat16, enabled=first["precision"] == "bf16" and first["model"].parallel == "ddp"
    )
    with torch.compiler.set_stance("force_eager"), autocast:
        scores = evaluate(model, ByteTokenizer(), tasks, device=ctx.device, batch_size=32)
    synchronize(ctx.device)
    seconds = time.perf_counter() - started
    score = scores[tasks[0].name]
    say(
        ctx,
        f"evaluation: {tasks[0].name}, {len(tasks[0].questions)} questions, {first['shape'].name} model: "
        f"{seconds:.1f} s (accuracy {score.acc:.3f} of an untrained model)",
    )


def smoke_checkpoint(first: dict, ctx: distributed.DistContext, folder: Path) -> None:
    """Write the first model's sharded checkpoint and read it back into a fresh copy of the model."""
    model = first["model"]
    optimizer = build_optimizer(first["cfg"].optim, model.model, 1e-4, ctx.device)
    writer = ckpt.CheckpointWriter(folder, rank=ctx.rank, distributed=ctx.distributed, keep=1, asynchronous=False)
    state = {
        "step": 0,
        "python_rng": ckpt.python_rng_state(),
        "world_size": ctx.world_size,
        "parallel": model.parallel,
        "config": {},
        "shape": ckpt.shape_to_dict(first["shape"]),
    }
    started = time.perf_counter()
    path = writer.save(
        folder / "step-00000000",
        state,
        ckpt.model_and_optimizer_state(model.model, optimizer) | ckpt.rng_tensors(ctx.rank, ctx.device),
    )
    saved_s = time.perf_counter() - started
    started = time.perf_counter()
    ckpt.load_into(path, model.model, optimizer, rank=ctx.rank, device=ctx.device, distributed=ctx.distributed)
    say(
        ctx,
        f"sharded checkpoint of {first['shape'].name} on {ctx.world_size} rank(s): saved in {saved_s:.1f} s, "
        f"loaded in {time.perf_counter() - started:.1f} s ({sum(1 for _ in path.glob('*.distcp'))} shard files)",
    )


def two_rank_smoke(args) -> int:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        "--sizes",
        (DRY_RUN_SIZES if args.dry_run else GPU_SIZES)[0],
        "--steps",
        "3",
        "--warmup",
        "1",
        "--no-eval",
        "--checkpoint",
        "--parallel",
        "fsdp",
        *(["--dry-run"] if args.dry_run else []),
    ]
    print(f"two-rank smoke test: {' '.join(command[2:])}", flush=True)
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", help=f"sizes to check (default: {' '.join(GPU_SIZES)})")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per size (compilation)")
    parser.add_argument("--gpu-memory-gb", type=float, default=80.0, help="declared memory of one GPU")
    parser.add_argument("--eval-task", default="arc_easy")
    parser.add_argument("--eval-questions", type=int, default=500)
    parser.add_argument("--no-eval", action="store_true", help="skip the timed evaluation")
    parser.add_argument("--checkpoint", action="store_true", help="also write and read a sharded checkpoint")
    parser.add_argument("--no-smoke", action="store_true", help="skip the two-rank smoke test")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no size after this many seconds")
    parser.add_argument("--parallel", choices=("auto", "ddp", "fsdp"), default="auto", help="train.parallel")
    parser.add_argument("--dry-run", action="store_true", help="run the same code on CPU with CPU presets")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device visible (this check needs a GPU; --dry-run runs its code on CPU)",
            file=sys.stderr,
        )
        return 2
    sizes = args.sizes or (DRY_RUN_SIZES if args.dry_run else GPU_SIZES)
    ctx = distributed.setup("cpu" if args.dry_run else "cuda")
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)
    if not ctx.distributed and not args.dry_run and not torch.distributed.is_initialized():
        # FSDP on one GPU still needs a process group (of one).
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "CPU (dry run)"
    say(ctx, f"gpu_check on {ctx.world_size} x {name}, torch {torch.__version__}")
    started = time.perf_counter()
    checked = 0
    for size in sizes:
        if time.perf_counter() - started > args.budget_s:
            say(ctx, f"{size}: not started (--budget-s {args.budget_s:g} spent)")
            continue
        result = check_size(size, ctx, args)
        if result is not None and not checked:  # the smallest model: checkpoint and evaluation
            if args.checkpoint:
                with tempfile.TemporaryDirectory() as scratch:
                    smoke_checkpoint(result, ctx, distributed_folder(ctx, scratch))
            if not args.no_eval and ctx.is_main and result["model"].parallel == "ddp":
                time_evaluation(result, ctx, args)  # DDP's forward has no collectives: rank 0 alone
            ctx.barrier()
        checked += result is not None
        del result
        release(ctx.device)
    visible = torch.cuda.device_count() if not args.dry_run else 2
    if not ctx.distributed and visible >= 2 and not args.no_smoke:
        return two_rank_smoke(args)
    return 0


def distributed_folder(ctx: distributed.DistContext, scratch: str) -> Path:
    """One checkpoint folder for every rank: rank 0's scratch directory (same machine)."""
    if not ctx.distributed:
        return Path(scratch) / "checkpoint"
    shared = [scratch]
    torch.distributed.broadcast_object_list(shared, src=0)
    return Path(shared[0]) / "checkpoint"


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except LadderError as error:
        print(f"gpu_check: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
