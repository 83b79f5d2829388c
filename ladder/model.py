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
up projections from another. On CPU (eager) hand-written autograd functions do what autograd
would do in more passes: RMSNorm (adding the residual in the same pass), QK-norm with RoPE for q
and k together, and SwiGLU; the fused projections return their pieces stacked ([pieces, ..., n],
each piece contiguous, not side by side in [..., pieces * n]), so that those functions run on
contiguous memory and write their gradients without concatenating pieces. On CUDA and under
torch.compile the plain composition runs (`F.rms_norm`, complex RoPE), which the kernels or
inductor fuse; so it does under CPU autocast and when a projection carries hooks (`_fused_path`).

The parameter count matches `ladder.sizes` exactly (tests/test_sizes.py checks it).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.utils import parametrize

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
        # ||x|| in one fused reduction; mean(x^2) = ||x||^2 / d.
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d).add_(eps).rsqrt_()
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
        # dL/dx in grad_xhat's buffer, no longer needed.
        grad_x = torch.mul(grad, weight, out=grad_xhat).addcmul_(xhat, mean_dot, value=-1).mul_(rstd)
        return grad_x, grad_weight, None, grad if ctx.has_residual else None


class RMSNorm(nn.Module):
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019), no bias."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Norm(x), or residual + Norm(x) when a residual is given."""
        if not _fused_path(x):  # fused CUDA kernel; inductor fuses it (and the add)
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


class _StackedLinearFunction(torch.autograd.Function):
    """x W^T for a weight that stacks `pieces` matrices W = [W_1; ...; W_k] (each [n, d]), for CPU:
    the products come back stacked, Y [k, ..., n] with Y_i = x W_i^T, instead of side by side.

    On the side-by-side layout [..., k n] each piece (q, k, v; gate, up) is a strided slice, and
    CPU's elementwise kernels run slower on slices than on contiguous tensors (measured for the
    `base` preset's [16, 256, 512] gate, 2 threads: silu 1.45 vs 1.01 ms, its backward 2.3 vs
    1.2 ms). The cost is k matrix multiplies instead of one, each as efficient here:
        forward:   Y_i = x W_i^T
        backward:  dL/dx = sum_i dY_i W_i,   dL/dW_i = dY_i^T x   (written into its rows of dL/dW)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, pieces: int) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        width = weight.shape[0] // pieces
        stacked = rows.new_empty(pieces, rows.shape[0], width)
        for piece, matrix in enumerate(weight.chunk(pieces)):
            torch.mm(rows, matrix.t(), out=stacked[piece])
        ctx.save_for_backward(rows, weight)
        ctx.pieces, ctx.input_shape = pieces, x.shape
        return stacked.view(pieces, *x.shape[:-1], width)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(ctx.pieces, rows.shape[0], -1)
        matrices = weight.chunk(ctx.pieces)
        grad_rows = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_rows = torch.mm(grad[0], matrices[0])
            for piece in range(1, ctx.pieces):
                grad_rows.addmm_(grad[piece], matrices[piece])
            grad_rows = grad_rows.view(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            for piece, grad_matrix in enumerate(grad_weight.chunk(ctx.pieces)):
                torch.mm(grad[piece].t(), rows, out=grad_matrix)
        return grad_rows, grad_weight, None


class _QKNormRoPEFunction(torch.autograd.Function):
    """From the stacked projection qkv [3, B, T, d]: q and k normalised (QK-norm) and rotated (RoPE), and v.

    For CPU, where autograd would run two norms and two rotations as separate pieces. Here q and
    k go together as the contiguous [2, B, T, d] front of qkv, and the backward writes straight
    into qkv's gradient. RoPE is linear and the norm's scale r = 1 / rms(x) is one number per
    row, so rope(x r * w) = rope(x * w) * r: r rides on the rotation tensor (1/heads the size of q)
    instead of costing a pass. With x the raw q or k, xhat = x r, g_n the gradient of the normed
    (unrotated) vector = rope^-1(g), and gr = r g_n (the back-rotation times r, again one multiply):
        dL/dw = sum over rows of g_n * xhat = sum over rows of gr * x
        dL/dx = r (g_n w - xhat mean(g_n w xhat)) = gr w - x * r^2 mean(gr w x)
    Saved are qkv (alive anyway: v is a view of it), r and the small weights and rotations, not a
    normalised copy.
    Returns q, k, v as [B, T, heads, head_dim]; v is a view of qkv.
    """

    @staticmethod
    def forward(ctx, qkv, q_weight, k_weight, eps: float, freqs: torch.Tensor, n_heads: int):
        d = qkv.shape[-1]
        qk = qkv[:2]  # [2, B, T, d]
        weight = torch.stack((q_weight, k_weight)).view(2, *[1] * (qkv.dim() - 2), d)  # [2, 1, 1, d]
        rstd = torch.linalg.vector_norm(qk, dim=-1, keepdim=True).square_().div_(d).add_(eps).rsqrt_()
        scaled_freqs = freqs * rstd.unsqueeze(-1)  # [2, B, T, 1, hd/2], complex
        weighted = qk * weight
        # Rotate in place, as complex pairs [2, B, T, H, hd/2].
        torch.view_as_complex(weighted.unflatten(-1, (n_heads, -1, 2))).mul_(scaled_freqs)
        rotated = weighted.unflatten(-1, (n_heads, -1))
        ctx.save_for_backward(qkv, rstd, weight, freqs)
        ctx.n_heads = n_heads
        q, k = rotated.unbind(0)
        return q, k, qkv[2].unflatten(-1, (n_heads, -1))

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        qkv, rstd, weight, freqs = ctx.saved_tensors
        d = qkv.shape[-1]
        qk = qkv[:2]
        grad_qkv = torch.empty_like(qkv)
        # gr = r * rope^-1(g): the rotation by the opposite angle (conj) and the scale, one multiply.
        scaled_conj = freqs.conj() * rstd.unsqueeze(-1)  # [2, B, T, 1, hd/2]
        grad_rotated = grad_qkv[:2]  # gr, computed where dL/dx goes: the in-place steps below turn it into dL/dx
        for slot, grad in enumerate((grad_q, grad_k)):
            grad = grad if grad.stride(-1) == 1 else grad.contiguous()
            into = torch.view_as_complex(grad_rotated[slot].unflatten(-1, (ctx.n_heads, -1, 2)))
            torch.mul(torch.view_as_complex(grad.unflatten(-1, (-1, 2))), scaled_conj[slot], out=into)
        grad_times_x = grad_rotated * qk
        grad_weight = grad_times_x.flatten(1, -2).sum(1)  # [2, d]
        dot = torch.empty_like(rstd)  # sum(gr w x) per row, [2, B, T, 1]: a matrix-vector product per slot
        for slot in range(2):
            torch.mv(grad_times_x[slot].reshape(-1, d), weight[slot].reshape(d), out=dot[slot].view(-1))
        coefficient = dot.mul_(rstd.square()).div_(d)
        grad_rotated.mul_(weight).addcmul_(qk, coefficient, value=-1)  # dL/dx of q and k
        grad_qkv[2].unflatten(-1, (ctx.n_heads, -1)).copy_(grad_v)
        return grad_qkv, grad_weight[0], grad_weight[1], None, None, None


class _SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * up from the stacked projection gate_up [2, ..., hidden], for CPU.

    Autograd would compute the gradients of gate and up separately and then stack them into the
    gradient of gate_up; here the backward writes each into its half directly (one pass over
    the largest activation fewer). With s = silu(gate) and upstream gradient g:
        dL/dup = g * s,    dL/dgate = silu'(gate) * g * up   (aten's fused silu_backward)
    """

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.unbind(0)
        activated = F.silu(gate)
        ctx.save_for_backward(gate_up, activated)
        return activated * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate_up, activated = ctx.saved_tensors
        gate, up = gate_up.unbind(0)
        grad_gate_up = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_gate_up.unbind(0)
        torch.mul(grad, activated, out=grad_up)
        torch.mul(grad, up, out=grad_gate)
        torch.ops.aten.silu_backward(grad_gate, gate, grad_input=grad_gate)
        return grad_gate_up


def _fused_path(x: torch.Tensor, *projections: nn.Linear) -> bool:
    """True on CPU in eager mode for fp32/fp64, where ladder's hand-written autograd functions are
    faster; on CUDA and under torch.compile the composed ops are fused by the kernels or by
    inductor. Not under CPU autocast (`train.precision=bf16`): the functions' out= products would
    stay fp32; nor for a model cast to bf16/fp16, which the composed ops handle. Not when one of
    the `projections` the functions bypass has hooks or parametrizations (LoRA, quantisation
    wrappers): those run only through the module's own forward."""
    if x.device.type != "cpu" or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    if x.dtype not in (torch.float32, torch.float64):
        return False
    return not any(p._forward_hooks or p._forward_pre_hooks or parametrize.is_parametrized(p) for p in projections)


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

    def heads(self, x: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of x [B, T, d] as [B, heads, T, head_dim] (SDPA's layout; views), q and k normed
        and rotated by `freqs` (complex [T, 1, head_dim/2] or [B, T, 1, head_dim/2]; or the real
        form under torch.compile)."""
        batch, seq, d = x.shape
        if self.q_norm is not None and freqs.is_complex() and _fused_path(x, self.qkv):
            qkv = _StackedLinearFunction.apply(x, self.qkv.weight, 3)  # [3, B, T, d]
            norms = (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps)
            q, k, v = _QKNormRoPEFunction.apply(qkv, *norms, freqs, self.n_heads)
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

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        # softmax(q k^T / sqrt(head_dim) + causal mask) v
        return self.merge(F.scaled_dot_product_attention(*self.heads(x, rope), is_causal=True))


class SwiGLU(nn.Module):
    """SwiGLU(x) = W_down (silu(W_gate x) * (W_up x))  (Shazeer 2020); hidden size from the shape."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.hidden = shape.mlp_hidden
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.mlp_hidden, bias=False)  # W_gate, W_up stacked
        self.down = nn.Linear(shape.mlp_hidden, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fused_path(x, self.gate_up):
            return self.down(_SwiGLUFunction.apply(_StackedLinearFunction.apply(x, self.gate_up.weight, 2)))
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

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, attend: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The layer on x [B, T, d]. `attend` stands in for the causal self-attention (the
        shared-context scorer of ladder.tasks.prefix passes one that attends to cached keys)."""
        attend = attend or (lambda h: self.attention(h, rope))
        if self.post_norm:
            # OLMo 2: x + Norm(f(x)); the residual stream itself is never normalised.
            x = self.attention_norm(attend(x), residual=x)
            return self.mlp_norm(self.mlp(x), residual=x)
        x = x + attend(self.attention_norm(x))
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
        # The weights are drawn from the generator state at construction (not after the layers'
        # own default initialisations): the same as meta-device construction, then init_weights().
        generator_state = torch.get_rng_state()
        self.shape = shape
        self.seq_len = shape.seq_len
        self.rope_theta, self.init_std = rope_theta, init_std
        self.compiled_blocks = False
        """Set by ladder.train.compile when the blocks are compiled one by one: they then take the
        real form of the RoPE table (inductor has no complex numbers)."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)  # input embedding: V x d
        self.blocks = nn.ModuleList(Block(shape, norm_placement, qk_norm) for _ in range(shape.n_layers))
        self.final_norm = RMSNorm(shape.d_model)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)  # untied output layer: V x d
        # Not parameters and not saved: recomputed from the shape, so checkpoints stay portable.
        self._set_rope_tables(self.embed.weight.device)
        if not self.embed.weight.is_meta:
            torch.set_rng_state(generator_state)
            self.init_weights()

    def _set_rope_tables(self, device: torch.device) -> None:
        rope = rope_frequencies(self.shape.seq_len, self.shape.head_dim, self.rope_theta).to(device)
        self.register_buffer("rope", rope, persistent=False)
        self.register_buffer("rope_real", torch.view_as_real(rope).clone(), persistent=False)

    def _apply(self, fn, recurse=True):
        """`.to()`, `.cuda()`, `.double()`, `.to_empty()` and the like, except that the RoPE tables
        keep their precision (complex64 / float32): a cast to a real dtype would drop their
        imaginary part, one to bf16 would round the angles. Only their device follows the model's;
        tables on the meta device (a model built there, then `to_empty`) are computed afresh."""
        tables = {name: self._buffers.pop(name) for name in ("rope", "rope_real")}
        super()._apply(fn, recurse)
        device = self.embed.weight.device
        if any(table.is_meta for table in tables.values()) and not self.embed.weight.is_meta:
            self._set_rope_tables(device)
        else:
            for name, table in tables.items():
                self.register_buffer(name, table.to(device), persistent=False)
        return self

    @torch.no_grad()
    def init_weights(self, std: float | None = None) -> None:
        """Weights ~ N(0, std^2) truncated to [-3 std, 3 std] (std: the model's init_std); norm
        weights = 1. Also after meta-device construction and `to_empty()`, on sharded parameters:
        the same seed gives the same weights as one process (`_fill`)."""
        std = self.init_std if std is None else std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                _fill(module.weight, lambda t: nn.init.trunc_normal_(t, mean=0.0, std=std, a=-3 * std, b=3 * std))
            elif isinstance(module, RMSNorm):
                _fill(module.weight, nn.init.ones_)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.seq_len:
            raise LadderError(f"input of {idx.shape[1]} tokens is longer than the model's {self.seq_len}")
        x = self.embed(idx)
        real = self.compiled_blocks or torch.compiler.is_compiling()
        rope = (self.rope_real if real else self.rope)[: idx.shape[1]]
        for block in self.blocks:
            x = block(x, rope)
        return self.lm_head(self.final_norm(x))

    def num_params(self) -> int:
        """Every parameter (the RoPE buffer is not one)."""
        return sum(p.numel() for p in self.parameters())


def _fill(param: torch.Tensor, fill: Callable[[torch.Tensor], object]) -> None:
    """fill(param) in place. A sharded parameter (a DTensor of FSDP2) is filled whole on the CPU, one
    parameter at a time, and keeps its own shard: every rank draws the same numbers in the same
    order, so the weights do not depend on how the model is sharded."""
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
