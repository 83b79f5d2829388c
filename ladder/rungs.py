"""Config -> Rung: the paper's batch, LR, warmup and budget rules, and the rung's record.

A Rung is plain data: everything `ladder plan` prints and `ladder train` needs to size a run.
Rungs are made here and nowhere else: from a grid (`grid_rungs`, what the sweep launches) or
from a single run's config (`rung_from_config`, `ladder train`). The sweep hands the trainer the
Rung itself; the trainer never sizes one from config keys.

`Rung.to_record()` / `Rung.from_record()` are the one codec of the rung's record, which the
trainer keeps in its run directory (`ladder.runs.directory`) and logs to wandb under `rung_record`:

| key                             | type  | meaning                                          |
|---------------------------------|-------|--------------------------------------------------|
| name, size, role                | str   | rung name, size preset, `ladder` or `target`     |
| multiplier                      | float | Chinchilla multiple (null for a token budget)    |
| N, D                            | int   | paper N; tokens trained (steps x batch tokens)   |
| steps, batch_sequences, seq_len | int   | optimizer steps, global batch, context length    |
| peak_lr                         | float | peak learning rate                               |
| warmup_steps                    | int   | linear warm-up steps                             |
| flops, flops_with_attention     | float | training FLOPs: 6ND, and with the attention term |
| flops_per_token[_with_attention]| float | the same per token                               |
| vocab_size, d_model, n_layers, n_heads | int | the shape                                   |
| total_params                    | int   | every parameter, input embedding included        |
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ladder.errors import LadderError
from ladder.sizes import PRESETS, ModelShape, flops_per_token, get_shape, paper_params, total_params

CHINCHILLA_TOKENS_PER_PARAM = 20  # D = multiplier x 20 x N
REFERENCE_N = 108e6  # the N at which OLMo's batch and LR rules were tuned
PAPER_SEQ_LEN = 4096
RUNG_RECORD_KEY = "rung_record"  # the record's key in a run's wandb config (the config's `rung` is a name)


def format_multiplier(multiplier: float) -> str:
    """2.0 -> '2', 0.5 -> '0.5'."""
    return f"{multiplier:g}"


def rung_name(size: str, multiplier: float | None, tokens: int | None = None) -> str:
    """<size>-<x>xC for a Chinchilla multiple, <size>-<tokens>tok for a token count."""
    if tokens is not None:
        return f"{size}-{int(tokens)}tok"
    return f"{size}-{format_multiplier(multiplier)}xC"


def chinchilla_tokens(n_params: int, multiplier: float) -> int:
    """D = multiplier x 20 x N."""
    if not 0 < multiplier < math.inf:
        raise LadderError(f"token multiplier must be > 0 and finite, got {multiplier}")
    return int(round(multiplier * CHINCHILLA_TOKENS_PER_PARAM * n_params))


def batch_sequences(n_params: int, seq_len: int) -> int:
    """Global batch in sequences.

    Paper (OLMo ladder): 160 x (N / 108e6)^(2/3) / 2 sequences of 4096 tokens, rounded to a
    multiple of 64. Shorter-context (CPU) presets keep the same batch in *tokens*, expressed at
    their sequence length and rounded to a multiple of 8 sequences (at least 8): at N ~ 1e5 the
    paper's rounding to 64 would give zero.
    """
    paper_sequences = 160 * (n_params / REFERENCE_N) ** (2 / 3) / 2
    if seq_len >= PAPER_SEQ_LEN:
        return max(64, 64 * round(paper_sequences / 64))
    sequences = paper_sequences * PAPER_SEQ_LEN / seq_len
    return max(8, 8 * round(sequences / 8))


def peak_lr(n_params: int, rule: str = "olmo") -> float:
    """Peak learning rate.

    olmo:   0.0047 x (N / 108e6)^(-1/3) / 4   (the paper's ladder)
    kaplan: 0.003239 - 0.0001395 ln N          (Kaplan et al. 2020, eq. D.1)
    """
    if rule == "olmo":
        return 0.0047 * (n_params / REFERENCE_N) ** (-1 / 3) / 4
    if rule == "kaplan":
        lr = 0.003239 - 0.0001395 * math.log(n_params)
        if lr <= 0:  # the fit's line crosses zero near N = 1.2e10
            raise LadderError(
                f"lr_rule=kaplan gives a peak LR of {lr:.3g} <= 0 at N={n_params:.3g} (the rule holds below ~1.2e10 "
                "parameters); use optim.lr_rule=olmo or set optim.lr"
            )
        return lr
    raise LadderError(f"unknown LR rule {rule!r}; choose 'olmo' or 'kaplan'")


@dataclass(frozen=True)
class Sizing:
    """What a rung was sized from besides its size and multiplier: a token budget (targets given
    in tokens) and the config's overrides of the rules (None: the rule applies)."""

    tokens: int | None = None
    vocab_size: int | None = None
    seq_len: int | None = None
    batch: int | None = None
    lr: float | None = None
    lr_rule: str = "olmo"
    warmup_tokens: int | None = None


@dataclass(frozen=True)
class Rung:
    """One run of the ladder (or a target), fully sized."""

    name: str
    size: str
    multiplier: float | None  # None for targets given by tokens
    role: str  # "ladder" or "target"
    shape: ModelShape
    n_params: int  # paper N: all but the input embedding
    tokens: int  # D actually trained: steps x batch_tokens
    batch_sequences: int
    seq_len: int
    steps: int
    peak_lr: float
    warmup_steps: int
    sizing: Sizing = field(default_factory=Sizing, compare=False, repr=False)
    """What it was sized from (`for_vocab` sizes it again for another vocabulary)."""

    @property
    def batch_tokens(self) -> int:
        return self.batch_sequences * self.seq_len

    @property
    def flops(self) -> float:
        """Training compute, 6 N D (the attention term is in `flops_per_token`)."""
        return flops_per_token(self.shape)[0] * self.tokens

    def for_vocab(self, vocab_size: int) -> Rung:
        """The same rung for a tokenizer's vocabulary: N, and all the rules derive from N, again."""
        if vocab_size == self.shape.vocab_size:
            return self
        return make_rung(
            self.size,
            self.multiplier,
            name=self.name,
            role=self.role,
            **asdict(replace(self.sizing, vocab_size=vocab_size)),
        )

    def to_record(self) -> dict[str, Any]:
        """The rung's record (schema in the module docstring)."""
        dense, with_attention = flops_per_token(self.shape)
        return {
            "name": self.name,
            "size": self.size,
            "multiplier": self.multiplier,
            "role": self.role,
            "N": self.n_params,
            "D": self.tokens,
            "steps": self.steps,
            "batch_sequences": self.batch_sequences,
            "seq_len": self.seq_len,
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "flops": self.flops,
            "flops_with_attention": with_attention * self.tokens,
            "flops_per_token": dense,
            "flops_per_token_with_attention": with_attention,
            "vocab_size": self.shape.vocab_size,
            "d_model": self.shape.d_model,
            "n_layers": self.shape.n_layers,
            "n_heads": self.shape.n_heads,
            "total_params": total_params(self.shape),
        }

    @classmethod
    def from_record(cls, record: Any, source: str = "rung record") -> Rung:
        """A record written by `to_record`, checked: a missing or mistyped key, an unknown size or
        a shape that is not the size's is a LadderError naming `source`."""
        if not isinstance(record, dict):
            raise LadderError(f"{source}: not a rung record (expected a JSON object)")
        for key, types in RECORD_TYPES.items():
            value = record.get(key)
            if key == "multiplier" and value is None and key in record:
                continue  # a target sized by tokens
            if not isinstance(value, types) or isinstance(value, bool):
                raise LadderError(f"{source}: not a rung record ({key!r} missing or not {types[-1].__name__})")
        if record["size"] not in PRESETS:
            raise LadderError(f"{source}: unknown model size {record['size']!r}")
        shape = get_shape(record["size"], vocab_size=record["vocab_size"], seq_len=record["seq_len"])
        recorded = (record["d_model"], record["n_layers"], record["n_heads"], record["N"])
        if recorded != (shape.d_model, shape.n_layers, shape.n_heads, paper_params(shape)):
            raise LadderError(f"{source}: d_model, n_layers, n_heads and N {recorded} are not size {record['size']}'s")
        if record["role"] not in ("ladder", "target"):
            raise LadderError(f"{source}: role must be 'ladder' or 'target', got {record['role']!r}")
        batch_tokens = record["batch_sequences"] * record["seq_len"]
        multiplier = None if record["multiplier"] is None else float(record["multiplier"])
        return cls(
            name=record["name"],
            size=record["size"],
            multiplier=multiplier,
            role=record["role"],
            shape=shape,
            n_params=record["N"],
            tokens=record["D"],
            batch_sequences=record["batch_sequences"],
            seq_len=record["seq_len"],
            steps=record["steps"],
            peak_lr=float(record["peak_lr"]),
            warmup_steps=record["warmup_steps"],
            # As trained: every value pinned.
            sizing=Sizing(
                tokens=None if multiplier is not None else record["D"],
                vocab_size=record["vocab_size"],
                seq_len=record["seq_len"],
                batch=record["batch_sequences"],
                lr=float(record["peak_lr"]),
                warmup_tokens=record["warmup_steps"] * batch_tokens,
            ),
        )


RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "size": (str,),
    "multiplier": (int, float),
    "role": (str,),
    "N": (int,),
    "D": (int,),
    "steps": (int,),
    "batch_sequences": (int,),
    "seq_len": (int,),
    "peak_lr": (int, float),
    "warmup_steps": (int,),
    "vocab_size": (int,),
    "d_model": (int,),
    "n_layers": (int,),
    "n_heads": (int,),
}


def make_rung(
    size: str,
    multiplier: float | None = None,
    *,
    tokens: int | None = None,
    name: str | None = None,
    role: str = "ladder",
    vocab_size: int | None = None,
    seq_len: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    lr_rule: str = "olmo",
    warmup_tokens: int | None = None,
) -> Rung:
    """Size one rung. Give `multiplier` (D = x 20 N) or `tokens`; overrides win over the rules."""
    shape = get_shape(size, vocab_size=vocab_size, seq_len=seq_len)
    n_params = paper_params(shape)
    if (multiplier is None) == (tokens is None):
        raise LadderError(f"rung {name or size}: give exactly one of a token multiplier or a token count")
    budget = chinchilla_tokens(n_params, multiplier) if multiplier is not None else int(tokens)
    if budget <= 0:
        raise LadderError(f"rung {name or size}: token budget must be > 0, got {budget}")
    sequences = batch_sequences(n_params, shape.seq_len) if batch is None else int(batch)
    if sequences <= 0:
        raise LadderError(f"rung {name or size}: batch must be > 0 sequences, got {sequences}")
    batch_tokens = sequences * shape.seq_len
    steps = max(1, math.ceil(budget / batch_tokens))
    warmup = n_params if warmup_tokens is None else warmup_tokens  # paper: warm up over N tokens
    return Rung(
        name=name or rung_name(size, multiplier, None if multiplier is not None else budget),
        size=size,
        multiplier=multiplier,
        role=role,
        shape=shape,
        n_params=n_params,
        tokens=steps * batch_tokens,
        batch_sequences=sequences,
        seq_len=shape.seq_len,
        steps=steps,
        peak_lr=peak_lr(n_params, lr_rule) if lr is None else float(lr),
        warmup_steps=min(steps, max(1, round(warmup / batch_tokens))),
        sizing=Sizing(
            tokens=tokens,
            vocab_size=vocab_size,
            seq_len=seq_len,
            batch=batch,
            lr=lr,
            lr_rule=lr_rule,
            warmup_tokens=warmup_tokens,
        ),
    )


def run_name(cfg: DictConfig) -> str:
    """A single run's name: `run_name`, else its run directory's name."""
    return cfg.run_name or Path(cfg.run_dir).name


def rung_from_config(cfg: DictConfig) -> Rung:
    """The rung a single run's config trains (`ladder train`): paper rules for batch, LR, warmup
    and steps, config overrides win; sized with `model.vocab_size` (None: the preset's; the
    trainer takes `for_vocab` of its tokenizer's)."""
    tokens = cfg.train.tokens
    return make_rung(
        cfg.model.preset,
        None if tokens is not None else cfg.multiplier,
        tokens=tokens,
        name=run_name(cfg),
        role=cfg.role,
        **_sizing(cfg),
    )


def _sizing(cfg: DictConfig) -> dict:
    """The config's overrides of the grid rules, shared by every rung of the grid."""
    return dict(
        vocab_size=cfg.model.vocab_size,
        seq_len=cfg.model.seq_len,
        batch=cfg.train.batch_size,
        lr=cfg.optim.lr,
        lr_rule=cfg.optim.lr_rule,
        warmup_tokens=cfg.optim.warmup_tokens,
    )


def _check_size(size: str, where: str) -> None:
    if size not in PRESETS:
        raise LadderError(f"grid {where}: unknown model size {size!r}; presets: {', '.join(PRESETS)}")


def grid_rungs(cfg: DictConfig) -> list[Rung]:
    """Every rung of `cfg.ladder`: sizes x multipliers (role ladder), then the targets (role target)."""
    grid = cfg.ladder
    sizing = _sizing(cfg)
    if not grid.sizes or not grid.multipliers:
        raise LadderError(f"grid {grid.name!r}: needs at least one size and one multiplier")
    rungs: list[Rung] = []
    for size in grid.sizes:
        _check_size(size, f"{grid.name!r}")
        for multiplier in grid.multipliers:
            if not 0 < float(multiplier) < math.inf:
                raise LadderError(f"grid {grid.name!r}: token multiplier must be > 0 and finite, got {multiplier}")
            rungs.append(make_rung(size, float(multiplier), role="ladder", **sizing))
    for target in grid.targets:
        where = f"{grid.name!r} target {target.name!r}"
        _check_size(target.size, where)
        if (target.tokens is None) == (target.multiplier is None):
            raise LadderError(f"grid {where}: give exactly one of tokens or multiplier")
        if target.multiplier is not None and not 0 < float(target.multiplier) < math.inf:
            raise LadderError(f"grid {where}: token multiplier must be > 0 and finite, got {target.multiplier}")
        if target.tokens is not None and not int(target.tokens) > 0:
            raise LadderError(f"grid {where}: tokens must be > 0, got {target.tokens}")
        multiplier = None if target.multiplier is None else float(target.multiplier)
        tokens = None if target.tokens is None else int(target.tokens)
        rungs.append(make_rung(target.size, multiplier, tokens=tokens, name=target.name, role="target", **sizing))
    seen: set[str] = set()
    for rung in rungs:
        if rung.name in seen:
            raise LadderError(f"grid {grid.name!r}: two rungs are named {rung.name!r}")
        if "/" in rung.name or rung.name.startswith("."):
            raise LadderError(f"grid {grid.name!r}: rung name {rung.name!r} cannot name a run directory")
        seen.add(rung.name)
    return rungs


def rungs_to_train(cfg: DictConfig) -> list[Rung]:
    """The rungs `ladder sweep` launches: the grid's, less targets unless `train_targets`, or `only`."""
    rungs = grid_rungs(cfg)
    by_name = {rung.name: rung for rung in rungs}
    if cfg.ladder.only:
        unknown = [name for name in cfg.ladder.only if name not in by_name]
        if unknown:
            raise LadderError(
                f"ladder.only names rungs not in grid {cfg.ladder.name!r}: {', '.join(unknown)} "
                f"(rungs: {', '.join(by_name)})"
            )
        return [by_name[name] for name in cfg.ladder.only]
    return [rung for rung in rungs if rung.role == "ladder" or cfg.ladder.train_targets]


def find_rung(cfg: DictConfig, name: str) -> Rung:
    """The grid's rung called `name` (a sweep job's `rung=` value)."""
    for rung in grid_rungs(cfg):
        if rung.name == name:
            return rung
    raise LadderError(f"rung {name!r} is not in grid {cfg.ladder.name!r}")
