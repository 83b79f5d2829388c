"""The decoder of the OLMo 2 ladder, top-down: Decoder -> Block -> Attention, SwiGLU -> RMSNorm, RoPE.

    tokens -> Embedding -> n_layers x Block -> RMSNorm -> Linear (untied) -> logits

    Block, post-norm (OLMo 2, the default)      Block, pre-norm (GPT-2/Llama, for comparison)
      h = x + RMSNorm(Attention(x))               h = x + Attention(RMSNorm(x))
      y = h + RMSNorm(SwiGLU(h))                  y = h + SwiGLU(RMSNorm(h))

No biases anywhere. Attention uses QK-norm (RMSNorm of the full query and key projections, as
OLMo 2), rotary position embeddings (RoPE, theta 500,000) and
`F.scaled_dot_product_attention(is_causal=True)`. Every weight matrix is initialised from
N(0, init_std^2) truncated at 3 std; norm weights start at 1.

Speed (see scripts/bench_train.py): q, k and v come from one stacked Linear, the SwiGLU gate and
up projections from another. Each layer has two paths: on CPU in eager mode (`use_cpu_kernels`)
the hand-written autograd functions of `ladder.model.cpu_kernels` run, which do in fewer memory
passes what autograd would (RMSNorm with the residual add, QK-norm with RoPE, SwiGLU, the stacked
projections); on CUDA, under torch.compile or CPU autocast, and when a projection carries hooks,
the composed torch ops run (`F.rms_norm`, complex RoPE, `F.silu`), which the kernels or inductor
fuse.

Shared contexts (multiple-choice scoring): `forward_context` runs a batch of contexts once and
keeps every layer's keys and values (`ladder.model.context_cache`), `forward_continuation` runs
continuations against them. Both go through `forward` and call each block as a module, so they
work as well when blocks or the model are wrapped (FSDP2, activation checkpointing, compile).

Meta-device construction: `with torch.device("meta"): Decoder(...)`, then `to_empty(device=...)`
and `init_weights()`. The RoPE tables are not parameters nor saved: they are recomputed from the
shape whenever the model moves.

The parameter count matches `ladder.sizes` exactly (tests/test_sizes.py checks it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from ladder.errors import LadderError
from ladder.model.context_cache import CachedLayer, ContextCache
from ladder.model.cpu_kernels import (
    QKNormRoPEFunction,
    RMSNormFunction,
    StackedLinearFunction,
    SwiGLUFunction,
    use_cpu_kernels,
)
from ladder.sizes import ModelShape

NORM_EPS = 1e-6
NORM_PLACEMENTS = ("post", "pre")


def _fill(param: torch.Tensor, fill) -> None:
    """fill(param) in place. A sharded parameter (a DTensor of FSDP2) is filled whole on the CPU, one
    parameter at a time, and keeps its own shard: every rank draws the same numbers in the same
    order as one process would."""
    if not isinstance(param, DTensor):
        fill(param)
        return
    whole = torch.empty(param.shape, dtype=param.dtype)
    fill(whole)
    shard = distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None)
    param.to_local().copy_(shard.to_local())


def decoder_from_config(shape: ModelShape, model_cfg) -> Decoder:
    """The Decoder for `shape` with the architecture options of a `model` config node."""
    return Decoder(
        shape,
        norm_placement=model_cfg.norm_placement,
        qk_norm=model_cfg.qk_norm,
        rope_theta=model_cfg.rope_theta,
        init_std=model_cfg.init_std,
    )


class Decoder(nn.Module):
    """Decoder-only LM: `forward(idx [B, T]) -> logits [B, T, vocab]`."""

    def __init__(
        self,
        shape: ModelShape,
        *,
        norm_placement: str = "post",
        qk_norm: bool = True,
        rope_theta: float = 500_000.0,
        init_std: float = 0.02,
    ):
        super().__init__()
        if norm_placement not in NORM_PLACEMENTS:
            raise LadderError(f"norm_placement must be 'post' or 'pre', got {norm_placement!r}")
        if shape.d_model % shape.n_heads:
            raise LadderError(f"d_model {shape.d_model} is not divisible by n_heads {shape.n_heads}")
        self.shape = shape
        self.seq_len = shape.seq_len
        self.rope_theta = rope_theta
        self.init_std = init_std
        self.compiled_blocks = False
        """Set by ladder.train.compile when the blocks are compiled one by one: they then take the
        real form of the RoPE table (inductor has no complex numbers)."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)  # input embedding: V x d
        self.blocks = nn.ModuleList(Block(shape, norm_placement, qk_norm) for _ in range(shape.n_layers))
        self.final_norm = RMSNorm(shape.d_model)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)  # untied output layer: V x d
        self._set_rope_tables()
        self._init_truncated_normal()

    def forward(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: ContextCache | None = None,
        logits_at: tuple | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, vocab] of the token after each position of idx [B, T].

        The keywords serve `forward_context` and `forward_continuation`: `positions` [B, T] the
        position of each token (default 0..T-1), `mask` [B, 1, T, keys] True where a query may
        attend (default causal), `cache` the context cache to fill or read, `logits_at` an index
        into [B, T] that picks the positions whose logits are computed (the output layer, the
        largest matrix at small sizes, skips the others).
        """
        if idx.shape[1] > self.seq_len:
            raise LadderError(f"input of {idx.shape[1]} tokens is longer than the model's {self.seq_len}")
        table = self.rope_real if self.compiled_blocks or torch.compiler.is_compiling() else self.rope
        rope = table[: idx.shape[1]] if positions is None else table[positions]
        x = self.embed(idx)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, mask, None if cache is None else cache.layers[layer])
        if logits_at is not None:
            x = x[logits_at]
        return self.lm_head(self.final_norm(x))

    def forward_context(self, idx: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ContextCache]:
        """Run a batch of contexts once, keeping every layer's keys and values for continuations.

        idx [Q, T]: contexts left-padded, row q's tokens in its last lengths[q] columns.
        Returns the logits of the token after each context [Q, vocab] and the filled cache.
        """
        cache = ContextCache.empty(lengths.to(idx.device), idx.shape[1], len(self.blocks))
        positions, mask = cache.context_layout()
        logits = self(idx, positions=positions, mask=mask, cache=cache, logits_at=(slice(None), -1))
        return logits, cache

    def forward_continuation(
        self,
        cache: ContextCache,
        rows: torch.Tensor,
        idx: torch.Tensor,
        lengths: torch.Tensor,
        logits_at: tuple | None = None,
    ) -> torch.Tensor:
        """Logits of continuations of cached contexts, as a forward of context + continuation gives them.

        idx [N, T]: continuations right-padded, row j of lengths[j] tokens following context
        rows[j] of `cache`. Returns the logits [N, T, vocab] at every position, or at the
        positions `logits_at` picks (an index into [N, T], e.g. (row indices, column indices)).
        The cache is left as it was.
        """
        rows, lengths = rows.to(idx.device), lengths.to(idx.device)
        positions, mask = cache.continuation_layout(rows, lengths, idx.shape[1], max_position=self.seq_len - 1)
        return self(idx, positions=positions, mask=mask, cache=cache.for_rows(rows), logits_at=logits_at)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every weight in place, on the device the parameters are on: for a model built
        on the meta device and materialised by `to_empty`.

        It draws what eager construction draws, in the same order (each Linear's and Embedding's
        own default initialisation, then the truncated normal that replaces it), so with the same
        seed and device the weights equal those of `Decoder(...)` built eagerly. Sharded
        parameters (FSDP2's DTensors) are drawn whole on the CPU and keep their shard (`_fill`):
        the weights do not depend on how the model is sharded.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):  # what Linear.reset_parameters draws (no biases here)
                _fill(module.weight, lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)))
            elif isinstance(module, nn.Embedding):  # what Embedding.reset_parameters draws
                _fill(module.weight, nn.init.normal_)
        self._init_truncated_normal()

    @torch.no_grad()
    def _init_truncated_normal(self) -> None:
        """Weights ~ N(0, init_std^2) truncated to [-3 std, 3 std]; norm weights = 1."""
        std = self.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                _fill(module.weight, lambda t: nn.init.trunc_normal_(t, mean=0.0, std=std, a=-3 * std, b=3 * std))
            elif isinstance(module, RMSNorm):
                _fill(module.weight, nn.init.ones_)

    def _set_rope_tables(self) -> None:
        """The RoPE rotations as buffers on the embedding's device: complex `rope` (eager) and its
        real view `rope_real` (torch.compile). Not parameters and not saved, so checkpoints stay
        portable; always computed on CPU in float64 and kept in complex64 / float32."""
        rope = rope_frequencies(self.seq_len, self.shape.head_dim, self.rope_theta)
        device = self.embed.weight.device
        self.register_buffer("rope", rope.to(device), persistent=False)
        self.register_buffer("rope_real", torch.view_as_real(rope).clone().to(device), persistent=False)

    def _apply(self, fn, recurse=True):
        """`.to()`, `.cuda()`, `.double()`, `to_empty()` and the like apply to the parameters; the
        RoPE tables are recomputed where the model now is, in their own precision (a cast to a
        real dtype would drop their imaginary part, one to bf16 would round the angles, and a
        table on the meta device has no values to copy)."""
        for name in ("rope", "rope_real"):
            del self._buffers[name]
        super()._apply(fn, recurse)
        self._set_rope_tables()
        return self

    def num_params(self) -> int:
        """Every parameter (the RoPE buffer is not one)."""
        return sum(p.numel() for p in self.parameters())


class Block(nn.Module):
    """One transformer layer: attention then MLP, each with a residual connection and an RMSNorm."""

    def __init__(self, shape: ModelShape, norm_placement: str, qk_norm: bool):
        super().__init__()
        self.post_norm = norm_placement == "post"
        self.attention = Attention(shape, qk_norm)
        self.attention_norm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape)
        self.mlp_norm = RMSNorm(shape.d_model)

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None = None, cache: CachedLayer | None = None
    ) -> torch.Tensor:
        """The layer on x [B, T, d]; `mask` and `cache` as in `Attention.forward`."""
        if self.post_norm:
            # OLMo 2: x + Norm(f(x)); the residual stream itself is never normalised.
            x = self.attention_norm(self.attention(x, rope, mask, cache), residual=x)
            return self.mlp_norm(self.mlp(x), residual=x)
        x = x + self.attention(self.attention_norm(x), rope, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class Attention(nn.Module):
    """Causal multi-head self-attention with QK-norm and RoPE."""

    def __init__(self, shape: ModelShape, qk_norm: bool):
        super().__init__()
        d = shape.d_model
        self.n_heads = shape.n_heads
        self.head_dim = shape.head_dim
        self.qkv = nn.Linear(d, 3 * d, bias=False)  # W_q, W_k, W_v stacked: 3 d^2
        self.out = nn.Linear(d, d, bias=False)  # W_o: d^2
        # OLMo 2 normalises the whole query and key vectors (all heads at once), before RoPE.
        self.q_norm = RMSNorm(d) if qk_norm else None
        self.k_norm = RMSNorm(d) if qk_norm else None

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None = None, cache: CachedLayer | None = None
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(head_dim) + mask) v, projected: causal, or where `mask`
        [B, 1, T, keys] is True; with a `cache`, the keys and values are the cache's
        (`CachedLayer.attend`)."""
        q, k, v = self.heads(x, rope)
        if cache is not None:
            k, v = cache.attend(k, v)
        if mask is None:
            return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def heads(self, x: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of x [B, T, d] as [B, heads, T, head_dim] (SDPA's layout; views), q and k normed
        and rotated by `freqs` (complex [T, 1, head_dim/2] or [B, T, 1, head_dim/2]; or the real
        form under torch.compile)."""
        batch, seq, d = x.shape
        if self.q_norm is not None and freqs.is_complex() and use_cpu_kernels(x, self.qkv):
            qkv = StackedLinearFunction.apply(x, self.qkv.weight, 3)  # [3, B, T, d]
            norms = (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps)
            q, k, v = QKNormRoPEFunction.apply(qkv, *norms, freqs, self.n_heads)
        else:
            q, k, v = self.qkv(x).split(d, dim=-1)  # views into one [B, T, 3d] product
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            heads = (batch, seq, self.n_heads, self.head_dim)
            q, k, v = apply_rope(q.reshape(heads), freqs), apply_rope(k.reshape(heads), freqs), v.view(heads)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """The output projection of the heads' outputs y [B, heads, T, head_dim] -> [B, T, d]."""
        batch, _, seq, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, seq, -1))


class SwiGLU(nn.Module):
    """SwiGLU(x) = W_down (silu(W_gate x) * (W_up x))  (Shazeer 2020); hidden size from the shape."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.hidden = shape.mlp_hidden
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.mlp_hidden, bias=False)  # W_gate, W_up stacked
        self.down = nn.Linear(shape.mlp_hidden, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_cpu_kernels(x, self.gate_up):
            return self.down(SwiGLUFunction.apply(StackedLinearFunction.apply(x, self.gate_up.weight, 2)))
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class RMSNorm(nn.Module):
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019), no bias."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Norm(x), or residual + Norm(x) when a residual is given."""
        if use_cpu_kernels(x):
            return RMSNormFunction.apply(x, self.weight, self.eps, residual)
        # The weight in x's dtype (bf16 under autocast): mixed dtypes miss the fused kernel.
        y = F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)
        return y if residual is None else residual + y


def rope_frequencies(seq_len: int, head_dim: int, theta: float) -> torch.Tensor:
    """Complex rotations e^{i t w_j} for positions t < seq_len, w_j = theta^(-2j/head_dim), on CPU.

    Shape [seq_len, 1, head_dim/2]: broadcast over heads. RoPE (Su et al. 2021) rotates each pair
    (x_2j, x_2j+1) of a query or key by the angle t * w_j, so that q_t . k_s depends on t - s only.
    """
    if head_dim % 2:
        raise LadderError(f"RoPE needs an even head dimension, got {head_dim}")
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64, device="cpu"), inv_freq)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64).unsqueeze(1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, head_dim] pairwise: (a, b) -> (a cos - b sin, a sin + b cos).

    `freqs` is either complex [T, 1, head_dim/2] (or [B, T, 1, head_dim/2], a position per row) or
    its real view [T, 1, head_dim/2, 2] (cos, sin).
    Complex (eager): viewing the pairs as a + ib, the rotation is one multiply by e^{i angle}; the
    views are free, so it is a single pass over x. Real (under torch.compile, whose code
    generator has no complex numbers): the same formula written out, which it fuses into one kernel.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    if freqs.is_complex():
        return torch.view_as_real(torch.view_as_complex(pairs) * freqs).flatten(-2).type_as(x)
    a, b, cos, sin = pairs[..., 0], pairs[..., 1], freqs[..., 0], freqs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)
