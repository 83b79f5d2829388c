"""The model as the trainer runs it: built, initialised, checkpointed, compiled and wrapped for
data parallelism (DDP or FSDP2), in the order torchtitan applies them.

    plan        `train.parallel=auto|ddp|fsdp` resolved by the memory plan (ladder.memory): auto
                takes DDP where the replicated state fits `train.gpu_memory_gb`, FSDP otherwise
    build       DDP: on the CPU, initialised from the seed, moved to the device. FSDP: on the meta
                device (no memory), sharded, then `to_empty` on the device and `init_weights`,
                which fills each parameter whole on the CPU and keeps the rank's shard, so that the
                weights are those of one process with the same seed
    checkpoint  `train.activation_checkpointing`: full wraps every block, selective every other
                one (torch.utils.checkpoint, non-reentrant: composes with FSDP and compile)
    compile     each block on its own (ladder.train.compile)
    wrap        DDP over the whole model; or FSDP2 `fully_shard` on each block, then on the root,
                with MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32) under bf16: the
                sharded fp32 parameters stay the optimizer's master copy, forward and backward run
                in bf16, gradients are reduced in fp32. `train.fsdp_shard_size` below the world
                size shards within groups of that many ranks and replicates across them (hybrid
                sharding, HSDP: shard inside a node, all-reduce across nodes) on a 2-D device mesh.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
from torch.nn.parallel import DistributedDataParallel

from ladder.errors import LadderError
from ladder.memory import CHECKPOINTING, MemoryPlan, choose_plan, memory_plan
from ladder.model import Decoder, decoder_from_config
from ladder.sizes import ModelShape
from ladder.train import compile as compiling
from ladder.train.distributed import DistContext

PARALLEL_CHOICES = ("auto", "ddp", "fsdp")


def resolve_plan(
    cfg, shape: ModelShape, device_type: str, world_size: int, per_rank: int, micro_batch: int, precision: str
) -> MemoryPlan:
    """The memory plan of this run. On CUDA the declared GPU memory is enforced (one-line refusal);
    on CPU `auto` keeps DDP (host memory is not the GPU's) and the plan only describes the step."""
    train = cfg.train
    common = dict(
        world_size=world_size,
        micro_batch=micro_batch,
        checkpointing=train.activation_checkpointing,
        precision=precision,
        optimizer=cfg.optim.name,
        shard_size=train.fsdp_shard_size,
    )
    if device_type == "cuda":
        return choose_plan(
            shape,
            parallel=train.parallel,
            per_rank=per_rank,
            gpu_memory_gb=train.gpu_memory_gb,
            what=f"the {shape.name} rung on {world_size} GPU{'s' * (world_size > 1)}",
            compiled_loss=cfg.train.compile is not False,
            **common,
        )
    parallel = "ddp" if train.parallel == "auto" else train.parallel
    return memory_plan(shape, parallel=parallel, kernels="composed" if precision == "bf16" else "cpu", **common)


@dataclass
class ParallelModel:
    """The model (its parameters are the optimizer's; DTensors under FSDP) and how to run it."""

    model: Decoder
    """The model itself: state dicts, evaluation, the optimizer's parameters."""
    module: nn.Module
    """What a training step calls: DDP's wrapper, or the model (FSDP2 shards in place)."""
    parallel: str
    """'ddp' (also a single process) or 'fsdp'."""
    ddp: DistributedDataParallel | None

    def no_sync(self, last_micro_batch: bool):
        """DDP all-reduces the gradients on the last micro-batch only. FSDP reduce-scatters every
        micro-batch: the accumulated gradients stay sharded and fp32 instead of unsharded bf16."""
        if self.ddp is None or last_micro_batch:
            return contextlib.nullcontext()
        return self.ddp.no_sync()


def build_model(cfg, shape: ModelShape, ctx: DistContext, plan: MemoryPlan, precision: str) -> ParallelModel:
    """The model of `shape`, initialised from `cfg.seed`, checkpointed, compiled and wrapped per `plan`."""
    device = ctx.device
    torch.manual_seed(cfg.seed)
    if plan.parallel == "fsdp":
        with torch.device("meta"):
            model = decoder_from_config(shape, cfg.model)
    else:
        model = decoder_from_config(shape, cfg.model).to(device)
    apply_activation_checkpointing(model, cfg.train.activation_checkpointing)
    if compile_enabled(cfg, device):
        compiling.compile_blocks(model, cfg.train.compile_backend)
    if plan.parallel == "fsdp":
        shard(model, ctx, precision, cfg.train.fsdp_shard_size)
        model.to_empty(device=device)
        torch.manual_seed(cfg.seed)
        model.init_weights()
        return ParallelModel(model, model, "fsdp", None)
    if not ctx.distributed:
        return ParallelModel(model, model, "ddp", None)
    # No per-step buffer broadcast: the only buffers (RoPE) are constants. torch 2.13 renamed
    # the option (broadcast_buffers is deprecated there and warns); older torch has the old name.
    device_ids = [device.index] if device.type == "cuda" else None
    options = inspect.signature(DistributedDataParallel).parameters
    no_broadcast = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
    ddp = DistributedDataParallel(model, device_ids=device_ids, **{no_broadcast: False})
    return ParallelModel(model, ddp, "ddp", ddp)


def compile_enabled(cfg, device: torch.device) -> bool:
    return cfg.train.compile if cfg.train.compile is not None else device.type == "cuda"


def apply_activation_checkpointing(model: Decoder, mode: str) -> None:
    """Recompute blocks in backward instead of keeping their activations: 'full' every block,
    'selective' every other block (torchtitan's layer-selective checkpointing), 'none' none.
    The wrapper keeps the state-dict keys of the plain model."""
    if mode not in CHECKPOINTING:
        raise LadderError(f"train.activation_checkpointing must be one of {', '.join(CHECKPOINTING)}, got {mode!r}")
    if mode == "none":
        return
    every = 1 if mode == "full" else 2
    for index, block in enumerate(model.blocks):
        if index % every == every - 1 or mode == "full":
            model.blocks[index] = checkpoint_wrapper(
                block, checkpoint_impl=CheckpointImpl.NO_REENTRANT, preserve_rng_state=False
            )


def device_mesh(ctx: DistContext, shard_size: int | None):
    """The ranks FSDP shards over: all of them (1-D), or (replicate, shard) groups for hybrid sharding."""
    from torch.distributed.device_mesh import init_device_mesh

    world = ctx.world_size
    if shard_size is None or shard_size >= world:
        return init_device_mesh(ctx.device.type, (world,), mesh_dim_names=("shard",))
    if shard_size < 1 or world % shard_size:
        raise LadderError(f"train.fsdp_shard_size={shard_size} does not divide the {world} processes")
    return init_device_mesh(ctx.device.type, (world // shard_size, shard_size), mesh_dim_names=("replicate", "shard"))


def shard(model: Decoder, ctx: DistContext, precision: str, shard_size: int | None) -> None:
    """FSDP2 on every block, then on the root (embeddings, final norm, output layer)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not torch.distributed.is_initialized():
        raise LadderError("train.parallel=fsdp needs a process group (run under torchrun, even with one process)")
    mesh = device_mesh(ctx, shard_size)
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    last = len(model.blocks) - 1
    for index, block in enumerate(model.blocks):
        # The last block's parameters are needed at once by backward: keeping them saves an all-gather.
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=index < last)
    fully_shard(model, mesh=mesh, mp_policy=policy)
