"""The decoder of the OLMo 2 ladder, in one file.

    tokens -> Embedding -> n_layers x Block -> RMSNorm -> Linear (untied) -> logits

    Block, post-norm (OLMo 2, the default)      Block, pre-norm (GPT-2/Llama, for comparison)
      h = x + RMSNorm(Attention(x))               h = x + Attention(RMSNorm(x))
      y = h + RMSNorm(SwiGLU(h))                  y = h + SwiGLU(RMSNorm(h))

No biases anywhere. Attention uses QK-norm (RMSNorm of the full query and key projections, as
OLMo 2), rotary position embeddings (RoPE, theta 500,000) and
`F.scaled_dot_product_attention(is_causal=True)`. Every weight matrix is initialised from
N(0, init_std^2) truncated at 3 std; norm weights start at 1.

Speed (see scripts/bench_train.py): q, k and v come from one fused Linear, the SwiGLU gate and
up projections from another; RoPE is one complex multiplication by rotations precomputed once as a
buffer; on CPU RMSNorm has a hand-written backward and adds the residual in the same pass (on CUDA
and under torch.compile, `F.rms_norm`, which they fuse); no tensor is copied or transposed except
the views SDPA needs with the heads in front.

The parameter count matches `ladder.sizes` exactly (tests/test_sizes.py checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ladder.errors import LadderError
from ladder.sizes import ModelShape

NORM_EPS = 1e-6
NORM_PLACEMENTS = ("post", "pre")


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward, for CPU.

    torch's CPU `F.rms_norm` is composed of pow/mean/add/rsqrt/mul, and autograd differentiates
    each piece: about twice the memory passes of this function (measured: 4.5 ms vs 1.9 ms for
    [16, 256, 128] forward + backward on one core). With xhat = x * r, r = 1 / sqrt(mean(x^2) + eps),
    y = xhat * w and upstream gradient g:
        dL/dw = sum over rows of g * xhat
        dL/dx = r * (g w - xhat * mean(g w xhat))     (the projection removes the radial part)
    and mean(g w xhat) = (g * xhat) @ w / d reuses the product of the weight gradient.
    Given `residual`, it returns residual + y in the same pass (post-norm's x + Norm(f(x))); the
    residual's gradient is g itself.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None) -> torch.Tensor:
        d = x.shape[-1]
        # ||x|| in one fused reduction; mean(x^2) = ||x||^2 / d. fp32 even for bf16 inputs.
        dtype = torch.promote_types(x.dtype, torch.float32)
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=dtype).square_().div_(d).add_(eps).rsqrt_()
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.has_residual = residual is not None
        return xhat * weight if residual is None else torch.addcmul(residual, xhat, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xhat, rstd, weight = ctx.saved_tensors
        d = xhat.shape[-1]
        grad_xhat = grad * xhat
        grad_weight = grad_xhat.reshape(-1, d).sum(0)
        mean_dot = (grad_xhat @ weight).unsqueeze_(-1).div_(d)  # mean(g w xhat) per row
        grad_x = (grad * weight).addcmul_(xhat, mean_dot, value=-1).mul_(rstd)
        return grad_x, grad_weight, None, grad if ctx.has_residual else None


class RMSNorm(nn.Module):
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019), no bias."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Norm(x), or residual + Norm(x) when a residual is given."""
        if x.is_cuda or torch.compiler.is_compiling():  # fused CUDA kernel; inductor fuses it (and the add)
            # The weight in x's dtype (bf16 under autocast): mixed dtypes miss the fused kernel.
            y = F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)
            return y if residual is None else residual + y
        return _RMSNormFunction.apply(x, self.weight, self.eps, residual)


def rope_frequencies(seq_len: int, head_dim: int, theta: float) -> torch.Tensor:
    """Complex rotations e^{i t w_j} for positions t < seq_len, w_j = theta^(-2j/head_dim).

    Shape [seq_len, 1, head_dim/2]: broadcast over heads. RoPE (Su et al. 2021) rotates each pair
    (x_2j, x_2j+1) of a query or key by the angle t * w_j, so that q_t . k_s depends on t - s only.
    """
    if head_dim % 2:
        raise LadderError(f"RoPE needs an even head dimension, got {head_dim}")
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64).unsqueeze(1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, head_dim] pairwise: (a, b) -> (a cos - b sin, a sin + b cos).

    `freqs` is either complex [T, 1, head_dim/2] or its real view [T, 1, head_dim/2, 2] (cos, sin).
    Complex (eager): viewing the pairs as a + ib, the rotation is one multiply by e^{i angle}; the
    views are free, so it is a single pass over x. Real (under torch.compile, whose code
    generator has no complex numbers): the same formula written out, which it fuses into one kernel.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    freqs = freqs[: x.shape[1]]
    if freqs.is_complex():
        return torch.view_as_real(torch.view_as_complex(pairs) * freqs).flatten(-2).type_as(x)
    a, b, cos, sin = pairs[..., 0], pairs[..., 1], freqs[..., 0], freqs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).type_as(x)


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

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        batch, seq, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # views into one [B, T, 3d] product
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        heads = (batch, seq, self.n_heads, self.head_dim)
        q = apply_rope(q.reshape(heads), rope)
        k = apply_rope(k.reshape(heads), rope)
        v = v.view(heads)
        # softmax(q k^T / sqrt(head_dim) + causal mask) v; SDPA wants [B, H, T, head_dim] (views).
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.out(y.transpose(1, 2).reshape(batch, seq, d))


class SwiGLU(nn.Module):
    """SwiGLU(x) = W_down (silu(W_gate x) * (W_up x))  (Shazeer 2020); hidden size from the shape."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.hidden = shape.mlp_hidden
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.mlp_hidden, bias=False)  # W_gate, W_up stacked
        self.down = nn.Linear(shape.mlp_hidden, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """One transformer layer: attention then MLP, each with a residual connection and an RMSNorm."""

    def __init__(self, shape: ModelShape, norm_placement: str, qk_norm: bool):
        super().__init__()
        self.post_norm = norm_placement == "post"
        self.attention = Attention(shape, qk_norm)
        self.attention_norm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape)
        self.mlp_norm = RMSNorm(shape.d_model)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            # OLMo 2: x + Norm(f(x)); the residual stream itself is never normalised.
            x = self.attention_norm(self.attention(x, rope), residual=x)
            return self.mlp_norm(self.mlp(x), residual=x)
        x = x + self.attention(self.attention_norm(x), rope)
        return x + self.mlp(self.mlp_norm(x))


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
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)  # input embedding: V x d
        self.blocks = nn.ModuleList(Block(shape, norm_placement, qk_norm) for _ in range(shape.n_layers))
        self.final_norm = RMSNorm(shape.d_model)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)  # untied output layer: V x d
        # Not parameters and not saved: recomputed from the shape, so checkpoints stay portable.
        rope = rope_frequencies(shape.seq_len, shape.head_dim, rope_theta)
        self.register_buffer("rope", rope, persistent=False)
        self.register_buffer("rope_real", torch.view_as_real(rope).clone(), persistent=False)
        self.init_weights(init_std)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """Weights ~ N(0, std^2) truncated to [-3 std, 3 std]; norm weights = 1."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.seq_len:
            raise LadderError(f"input of {idx.shape[1]} tokens is longer than the model's {self.seq_len}")
        x = self.embed(idx)
        rope = self.rope_real if torch.compiler.is_compiling() else self.rope
        for block in self.blocks:
            x = block(x, rope)
        return self.lm_head(self.final_norm(x))

    def num_params(self) -> int:
        """Every parameter (the RoPE buffer is not one)."""
        return sum(p.numel() for p in self.parameters())


def decoder_from_config(shape: ModelShape, model_cfg) -> Decoder:
    """The Decoder for `shape` with the architecture options of a `model` config node."""
    return Decoder(
        shape,
        norm_placement=model_cfg.norm_placement,
        qk_norm=model_cfg.qk_norm,
        rope_theta=model_cfg.rope_theta,
        init_std=model_cfg.init_std,
    )
