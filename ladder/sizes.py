"""Model size presets, parameter counts and FLOPs per token.

Counts are closed-form from the shape, so planning needs no torch; `tests/test_sizes.py` checks
them against the paper and against the parameters of the built torch model.

The architecture (see `ladder/model/decoder.py`): untied input embedding and output layer, per layer
attention q/k/v/o (4 d^2), SwiGLU MLP (gate, up, down: 3 x d x hidden; hidden = 4d below 7B), two
sublayer RMSNorms and the QK-norms (4 d weights), one final RMSNorm (d); no biases.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ladder.errors import LadderError

PAPER_VOCAB = 100_352  # OLMo 2 tokenizer, padded
BYTE_VOCAB = 256


@dataclass(frozen=True)
class ModelShape:
    """The shape of one decoder."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    vocab_size: int
    seq_len: int
    mlp_hidden: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def with_vocab(self, vocab_size: int) -> ModelShape:
        return replace(self, vocab_size=vocab_size)

    def with_seq_len(self, seq_len: int) -> ModelShape:
        return replace(self, seq_len=seq_len)


def _paper(name: str, d: int, layers: int, heads: int, mlp_hidden: int | None = None) -> ModelShape:
    # The ladder sizes use a SwiGLU hidden of 4d; OLMo 2's 7B and 13B use 11008 and 13824.
    hidden = 4 * d if mlp_hidden is None else mlp_hidden
    return ModelShape(name, d, layers, heads, vocab_size=PAPER_VOCAB, seq_len=4096, mlp_hidden=hidden)


def _cpu(name: str, d: int, layers: int, heads: int) -> ModelShape:
    # CPU presets: byte vocabulary and a short context, so that a ladder trains in minutes.
    return ModelShape(name, d, layers, heads, vocab_size=BYTE_VOCAB, seq_len=256, mlp_hidden=4 * d)


PRESETS: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        # The paper's ladder and targets (OLMo 2 shapes).
        _paper("190M", 768, 12, 12),
        _paper("370M", 1024, 16, 16),
        _paper("760M", 1536, 16, 16),
        _paper("1B", 2048, 16, 16),
        _paper("3B", 3328, 16, 16),
        _paper("7B", 4096, 32, 32, mlp_hidden=11008),
        _paper("13B", 5120, 40, 40, mlp_hidden=13824),
        # CPU presets (N with the byte vocabulary): about 4k, 12k, 25k, 41k, 58k, 86k, 148k, 280k,
        # 616k, 1.08M. atto, femto, nano3 and mini (the demo's ladder and target) double the width
        # and grow the depth (2, 2, 3, 4 layers) at each step, as the paper's presets do.
        _cpu("atto", 8, 2, 1),
        _cpu("femto", 16, 2, 2),
        _cpu("pico", 24, 2, 2),
        _cpu("nano", 32, 2, 2),
        _cpu("nano3", 32, 3, 2),
        _cpu("micro", 48, 2, 3),
        _cpu("tiny", 64, 2, 4),
        _cpu("mini", 64, 4, 4),
        _cpu("small", 96, 4, 6),
        _cpu("base", 128, 4, 8),
    )
}

CPU_PRESETS = ("atto", "femto", "pico", "nano", "nano3", "micro", "tiny", "mini", "small", "base")


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """The vocabulary rounded up to a multiple of `multiple` (unused rows are never a target)."""
    return -(-vocab_size // multiple) * multiple


def get_shape(name: str, vocab_size: int | None = None, seq_len: int | None = None) -> ModelShape:
    """The preset called `name`, optionally with another vocabulary or sequence length."""
    if name not in PRESETS:
        raise LadderError(f"unknown model size {name!r}; presets: {', '.join(PRESETS)}")
    shape = PRESETS[name]
    if vocab_size is not None:
        if vocab_size <= 0:
            raise LadderError(f"vocab_size must be positive, got {vocab_size}")
        shape = shape.with_vocab(vocab_size)
    if seq_len is not None:
        if seq_len <= 0:
            raise LadderError(f"seq_len must be positive, got {seq_len}")
        shape = shape.with_seq_len(seq_len)
    return shape


def layer_params(shape: ModelShape) -> int:
    """Parameters of one transformer block."""
    d = shape.d_model
    attention = 4 * d * d  # q, k, v, o projections
    mlp = 3 * d * shape.mlp_hidden  # SwiGLU: gate, up, down
    norms = 4 * d  # attention and MLP output norms, q-norm and k-norm
    return attention + mlp + norms


def embedding_params(shape: ModelShape) -> int:
    """The input embedding (one of the two vocab x d matrices; untied)."""
    return shape.vocab_size * shape.d_model


def total_params(shape: ModelShape) -> int:
    """Every parameter: input embedding, blocks, final norm, output layer."""
    return 2 * embedding_params(shape) + shape.n_layers * layer_params(shape) + shape.d_model


def paper_params(shape: ModelShape) -> int:
    """N as the paper counts it: every parameter but the input embedding (the output layer counts)."""
    return total_params(shape) - embedding_params(shape)


def non_embedding_params(shape: ModelShape) -> int:
    """Kaplan et al.'s N: neither the input embedding nor the output layer."""
    return total_params(shape) - 2 * embedding_params(shape)


def flops_per_token(shape: ModelShape, seq_len: int | None = None) -> tuple[float, float]:
    """Training FLOPs per token: (6N, 6N + attention).

    6N: forward (2N) plus backward (4N) matrix multiplies per token, with the paper's N.
    Attention (PaLM, appendix B): QK^T and AV cost 2 x 2 x layers x d x seq per token forward,
    times 3 for forward and backward = 12 x layers x d x seq.
    """
    seq = shape.seq_len if seq_len is None else seq_len
    dense = 6.0 * paper_params(shape)
    attention = 12.0 * shape.n_layers * shape.d_model * seq
    return dense, dense + attention
