"""The memory plan: peak bytes per GPU of one training step, before anything is launched.

No torch: `ladder plan` sizes a paper grid on a laptop. The trainer (ladder.train.parallel) asks
the same plan which parallelism to use (`train.parallel=auto`), and `ladder train` / `ladder plan`
refuse a rung that cannot fit `train.gpu_memory_gb`, in one line that says what would fit.

Per GPU, with P parameters, W ranks that shard them (FSDP; 1 for DDP), s optimizer bytes per
parameter (AdamW: two fp32 moments, 8), a block's parameters P_b and the root's (embeddings,
final norm) P_r:

    state        weights 4P/W + gradients 4P/W + optimizer s P/W          (fp32 master copies)
    DDP          + 4P gradient buckets (W > 1) + 2P bf16 weight copies that autocast keeps for backward
    FSDP2        + 2 P_r unsharded bf16 root (kept from forward to backward) + 2 P_r its bf16 gradients
                 + 2 x 2 P_b two blocks unsharded (the current and the prefetched one)
                 + (2 + 4) P_b one block's bf16 gradients and their fp32 copy for the reduce-scatter
                 (fp32 without mixed precision: 4 bytes where bf16 takes 2)
    activations  saved for backward per token, summed over layers (below), x micro-batch x seq_len
    transient    the logits' fp32 gradient at the start of backward, 4 V bytes per token

Saved activations of one block per token, counted tensor by tensor from ladder.model (a = bytes of
an activation element: 2 in bf16, 4 in fp32; d = d_model, h = the MLP hidden size):

    composed path (CUDA, torch.compile): block input a d (the q/k/v projection's input), the q/k/v
    product 3 a d (QK-norm's input and v), rotated q and k 2 a d and the attention output a d
    (SDPA), the attention norm's input a d, the MLP input a d, the gate/up product 2 a h, silu(gate)
    a h, the product a h (the down projection's input), the MLP norm's input a d:
        a (10 d + 4 h)        = 26 a d for h = 4d  (52 bytes x d in bf16)
    CPU kernels (fp32 eager; ladder.model's autograd functions save the same tensors, the norms their
    normalised output) plus the attention output's copy into the output projection's input:
        4 (11 d + 4 h)
    full checkpointing keeps a block's input (a d) and recomputes one block at a time in backward;
    selective checkpoints every other block.

    head: token ids 8, the final norm's and the output layer's inputs 2 a d, the log-probabilities
    4 V (fp32; a compiled loss keeps bf16 logits, 2 V, and their log-sum-exp instead), targets 8.

Attention is flash/memory-efficient SDPA: nothing of size T^2 is kept. The estimate is checked
against a real step (tests/test_memory.py): parameter, gradient and optimizer bytes exactly,
saved activations within 20% with autograd's saved-tensor hooks; on a GPU scripts/gpu_check.py
compares the total with torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from ladder.errors import LadderError
from ladder.sizes import ModelShape, layer_params, paper_params, total_params

GB = 1e9
PARALLELISMS = ("ddp", "fsdp")
CHECKPOINTING = ("none", "selective", "full")
# Optimizer state in bytes per parameter (fp32 moments).
OPTIMIZER_BYTES = {"adamw": 8, "adam": 8, "nadam": 8, "sgd": 0, "momentum": 4, "nesterov": 4, "rmsprop": 8}
# OLMo-core's ladder: 8 x 4096 tokens per micro-batch up to 1B, 4 x 4096 up to 3B, then 2 x 4096.
MICRO_BATCH_TOKENS_BY_SIZE = ((1.5e9, 8 * 4096), (3.5e9, 4 * 4096), (float("inf"), 2 * 4096))
# Reserve for the CUDA context, NCCL buffers and the allocator's fragmentation.
RESERVED_BYTES = 3 * GB


def default_micro_batch(shape: ModelShape, per_rank: int) -> int:
    """Sequences per forward pass by model size (paper N): the largest divisor of the per-rank batch
    within the size's token budget (MICRO_BATCH_TOKENS_BY_SIZE)."""
    params = paper_params(shape)
    tokens = next(limit for bound, limit in MICRO_BATCH_TOKENS_BY_SIZE if params <= bound)
    limit = max(1, tokens // shape.seq_len)
    return max(d for d in range(1, per_rank + 1) if per_rank % d == 0 and d <= limit)


@dataclass(frozen=True)
class MemoryPlan:
    """Peak bytes per GPU of one training step, by what holds them."""

    parallel: str
    """'ddp' (also one process) or 'fsdp'."""
    world_size: int
    """Ranks training the rung."""
    shard_size: int
    """Ranks one parameter is sharded over (FSDP: world size, or the node's GPUs when hybrid)."""
    micro_batch: int
    """Sequences per forward pass per rank."""
    seq_len: int
    checkpointing: str
    """'none', 'selective' or 'full'."""
    precision: str
    """'bf16' or 'fp32'."""
    weights: int
    gradients: int
    optimizer: int
    buffers: int
    """DDP buckets and autocast copies, or FSDP's unsharded blocks and root."""
    activations: int
    """Saved for backward at the micro-batch."""
    transient: int
    """The logits' gradient at the start of backward."""

    @property
    def state(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.state + self.buffers + self.activations + self.transient + RESERVED_BYTES

    def describe(self) -> str:
        return (
            f"{self.total / GB:.1f} GB with train.parallel={self.parallel} "
            f"train.activation_checkpointing={self.checkpointing} micro-batch {self.micro_batch}x{self.seq_len}"
        )

    def breakdown(self) -> str:
        parts = (
            ("weights", self.weights),
            ("grads", self.gradients),
            ("optimizer", self.optimizer),
            ("buffers", self.buffers),
            ("activations", self.activations),
            ("transient", self.transient),
            ("reserve", RESERVED_BYTES),
        )
        return ", ".join(f"{name} {format_bytes(value)}" for name, value in parts) + f" = {format_bytes(self.total)}"


def format_bytes(value: float) -> str:
    return f"{value / GB:.1f} GB" if value >= 0.1 * GB else f"{value / 1e6:.1f} MB"


def block_activation_bytes(shape: ModelShape, kernels: str, element: int) -> int:
    """Bytes one block saves for backward per token (module docstring)."""
    d, h = shape.d_model, shape.mlp_hidden
    if kernels == "cpu":
        return 4 * (11 * d + 4 * h)
    return element * (10 * d + 4 * h)


def head_activation_bytes(shape: ModelShape, element: int, compiled_loss: bool) -> int:
    logits = 2 * shape.vocab_size + 4 if compiled_loss else 4 * shape.vocab_size
    return 8 + 2 * element * shape.d_model + logits + 8


def activation_bytes(
    shape: ModelShape,
    micro_batch: int,
    checkpointing: str,
    *,
    precision: str = "bf16",
    kernels: str = "composed",
    compiled_loss: bool = False,
) -> int:
    """Bytes saved for backward by one micro-batch (plus one block recomputed under checkpointing)."""
    element = 2 if precision == "bf16" else 4
    block = block_activation_bytes(shape, kernels, element)
    boundary = element * shape.d_model  # a checkpointed block keeps its input only
    layers = shape.n_layers
    if checkpointing == "none":
        blocks = layers * block
    elif checkpointing == "full":
        blocks = layers * boundary + block
    elif checkpointing == "selective":  # every other block checkpointed
        checkpointed = layers // 2
        blocks = (layers - checkpointed) * block + checkpointed * boundary + (block if checkpointed else 0)
    else:
        raise LadderError(
            f"train.activation_checkpointing must be one of {', '.join(CHECKPOINTING)}, got {checkpointing!r}"
        )
    tokens = micro_batch * shape.seq_len
    return tokens * (blocks + head_activation_bytes(shape, element, compiled_loss))


def memory_plan(
    shape: ModelShape,
    *,
    parallel: str,
    world_size: int,
    micro_batch: int,
    checkpointing: str = "none",
    precision: str = "bf16",
    optimizer: str = "adamw",
    shard_size: int | None = None,
    kernels: str = "composed",
    compiled_loss: bool = False,
) -> MemoryPlan:
    """The plan of one rank (module docstring)."""
    if parallel not in PARALLELISMS:
        raise LadderError(f"train.parallel must be auto, {' or '.join(PARALLELISMS)}, got {parallel!r}")
    if optimizer not in OPTIMIZER_BYTES:
        raise LadderError(f"no optimizer-state size known for optim.name={optimizer!r}")
    params = total_params(shape)
    block = layer_params(shape)
    root = params - shape.n_layers * block
    low = 2 if precision == "bf16" else 4  # bytes of a compute-precision copy
    if parallel == "fsdp":
        shards = world_size if shard_size is None else shard_size
        weights, gradients = -(-4 * params // shards), -(-4 * params // shards)
        state = -(-OPTIMIZER_BYTES[optimizer] * params // shards)
        buffers = 2 * low * root + 2 * low * block + (low + 4) * block
    else:
        shards = 1
        weights = gradients = 4 * params
        state = OPTIMIZER_BYTES[optimizer] * params
        buffers = (4 * params if world_size > 1 else 0) + (2 * params if precision == "bf16" else 0)
    return MemoryPlan(
        parallel=parallel,
        world_size=world_size,
        shard_size=shards,
        micro_batch=micro_batch,
        seq_len=shape.seq_len,
        checkpointing=checkpointing,
        precision=precision,
        weights=weights,
        gradients=gradients,
        optimizer=state,
        buffers=buffers,
        activations=activation_bytes(
            shape, micro_batch, checkpointing, precision=precision, kernels=kernels, compiled_loss=compiled_loss
        ),
        transient=4 * shape.vocab_size * micro_batch * shape.seq_len,
    )


def choose_plan(
    shape: ModelShape,
    *,
    parallel: str,
    world_size: int,
    per_rank: int,
    micro_batch: int | None,
    checkpointing: str,
    precision: str,
    optimizer: str,
    gpu_memory_gb: float,
    shard_size: int | None = None,
    what: str = "the rung",
    compiled_loss: bool = True,
) -> MemoryPlan:
    """The plan of a GPU run (its loss compiled unless `compiled_loss=False`): `parallel='auto'`
    takes DDP when it fits and FSDP otherwise (on one rank, with nothing to shard, DDP's plan: one
    process). Raises LadderError in one line when the declared GPU memory cannot hold it, naming
    the settings that would fit."""
    micro = micro_batch or default_micro_batch(shape, per_rank)
    budget = gpu_memory_gb * GB

    def plan(kind: str, ac: str, mb: int) -> MemoryPlan:
        return memory_plan(
            shape,
            parallel=kind,
            world_size=world_size,
            micro_batch=mb,
            checkpointing=ac,
            precision=precision,
            optimizer=optimizer,
            shard_size=shard_size,
            compiled_loss=compiled_loss,
        )

    if parallel == "auto":
        kinds = ["ddp"] if world_size == 1 else ["ddp", "fsdp"]
        candidates = [plan(kind, checkpointing, micro) for kind in kinds]
        chosen = next((c for c in candidates if c.total <= budget), candidates[-1])
    else:
        chosen = plan(parallel, checkpointing, micro)
    if chosen.total <= budget:
        return chosen
    return _refuse(chosen, shape, gpu_memory_gb, what, per_rank, world_size, optimizer, shard_size, compiled_loss)


def first_fit(
    shape: ModelShape,
    *,
    world_size: int,
    per_rank: int,
    largest_micro_batch: int,
    gpu_memory_gb: float,
    precision: str = "bf16",
    optimizer: str = "adamw",
    shard_size: int | None = None,
    compiled_loss: bool = True,
) -> MemoryPlan | None:
    """The plan that fits with the largest micro-batch and the least recomputation (FSDP when
    there are ranks to shard over), or None when nothing fits."""
    kinds = ["fsdp"] if world_size > 1 else ["ddp"]
    for micro in (m for m in range(largest_micro_batch, 0, -1) if per_rank % m == 0):
        for checkpointing in CHECKPOINTING:
            for kind in kinds:
                option = memory_plan(
                    shape,
                    parallel=kind,
                    world_size=world_size,
                    micro_batch=micro,
                    checkpointing=checkpointing,
                    precision=precision,
                    optimizer=optimizer,
                    shard_size=shard_size,
                    compiled_loss=compiled_loss,
                )
                if option.total <= gpu_memory_gb * GB:
                    return option
    return None


def _refuse(
    chosen: MemoryPlan,
    shape: ModelShape,
    gpu_memory_gb: float,
    what: str,
    per_rank: int,
    world_size: int,
    optimizer: str,
    shard_size: int | None,
    compiled_loss: bool,
) -> MemoryPlan:
    needs = f"{what} needs {chosen.describe()} per GPU, more than train.gpu_memory_gb={gpu_memory_gb:g}"
    option = first_fit(
        shape,
        world_size=world_size,
        per_rank=per_rank,
        largest_micro_batch=chosen.micro_batch,
        gpu_memory_gb=gpu_memory_gb,
        precision=chosen.precision,
        optimizer=optimizer,
        shard_size=shard_size,
        compiled_loss=compiled_loss,
    )
    if option is not None:
        micro = f" (train.micro_batch_size={option.micro_batch})" if option.micro_batch != chosen.micro_batch else ""
        raise LadderError(f"{needs}; it fits in {option.describe()}{micro}")
    smallest = memory_plan(
        shape,
        parallel="fsdp" if world_size > 1 else "ddp",
        world_size=world_size,
        micro_batch=1,
        checkpointing="full",
        precision=chosen.precision,
        optimizer=optimizer,
        shard_size=shard_size,
        compiled_loss=compiled_loss,
    )
    raise LadderError(
        f"{needs}; even the least, {smallest.describe()}, does not fit: use more GPUs (FSDP shards the state over them)"
    )
