"""Hand-written autograd functions for the Decoder on CPU (eager, fp32/fp64).

On CPU, autograd differentiates each of the small ops a layer is composed of, and every one is a
pass over memory. These functions compute the same values and gradients in fewer passes:

- `RMSNormFunction`: RMSNorm and its backward from the normalised input and one scale per row,
  adding post-norm's residual in the same pass.
- `StackedLinearFunction`: x W^T for a weight that stacks several projections (q, k, v; gate,
  up), with the products returned stacked [pieces, ..., n] rather than side by side [..., pieces n],
  so that each piece is contiguous (CPU's elementwise kernels are slower on strided slices) and
  its gradient is written without concatenating pieces.
- `QKNormRoPEFunction`: QK-norm and RoPE for q and k together, straight from the stacked
  projection; the norm's per-row scale rides on the rotation.
- `SwiGLUFunction`: silu(gate) * up from the stacked projection, its backward writing each
  half of the gradient in place.

Each function's docstring gives its equations. `use_cpu_kernels` decides where they run: on
CUDA and under torch.compile the composed torch ops (`F.rms_norm`, complex RoPE, `F.silu`)
are fused by the kernels or by inductor instead, and the Decoder takes those.
tests/model/test_model_decoder.py checks the functions against autograd, values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


def use_cpu_kernels(x: torch.Tensor, *projections: nn.Linear) -> bool:
    """True where the functions of this module run instead of the composed torch ops: on CPU in
    eager mode for fp32/fp64. Not under CPU autocast (`train.precision=bf16`): their out= products
    would stay fp32; nor for a model cast to bf16/fp16. Not when one of the `projections` the
    functions bypass has hooks or parametrizations (LoRA, quantisation wrappers): those run only
    through the module's own forward."""
    if x.device.type != "cpu" or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    if x.dtype not in (torch.float32, torch.float64):
        return False
    return not any(p._forward_hooks or p._forward_pre_hooks or parametrize.is_parametrized(p) for p in projections)


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward.

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


class StackedLinearFunction(torch.autograd.Function):
    """x W^T for a weight that stacks `pieces` matrices W = [W_1; ...; W_k] (each [n, d]):
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


class QKNormRoPEFunction(torch.autograd.Function):
    """From the stacked projection qkv [3, B, T, d]: q and k normalised (QK-norm) and rotated (RoPE), and v.

    Autograd would run two norms and two rotations as separate pieces. Here q and k go together
    as the contiguous [2, B, T, d] front of qkv, and the backward writes straight into qkv's
    gradient. RoPE is linear and the norm's scale r = 1 / rms(x) is one number per row, so
    rope(x r * w) = rope(x * w) * r: r rides on the rotation tensor (1/heads the size of q)
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


class SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * up from the stacked projection gate_up [2, ..., hidden].

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
