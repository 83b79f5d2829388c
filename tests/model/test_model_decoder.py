"""The decoder: shapes, causality, RoPE, initialisation, norms; optimizer groups and schedule."""

import math

import pytest
import torch

from ladder.config import OptimConfig
from ladder.errors import LadderError
from ladder.model import Decoder, apply_rope, rope_frequencies
from ladder.sizes import get_shape
from ladder.train.optim import OPTIMIZERS, Schedule, build_optimizer, param_groups


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Decoder(get_shape("tiny"))


def test_forward_gives_logits_over_the_vocabulary(tiny):
    idx = torch.randint(0, 256, (2, 32))
    logits = tiny(idx)
    assert logits.shape == (2, 32, 256) and logits.dtype == torch.float32
    # At init the output is near uniform: loss ~ ln(256).
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
    assert loss.item() == pytest.approx(math.log(256), abs=0.3)


def test_attention_is_causal(tiny):
    idx = torch.randint(0, 256, (1, 40))
    changed = idx.clone()
    changed[0, 30:] = (changed[0, 30:] + 1) % 256
    with torch.no_grad():
        a, b = tiny(idx), tiny(changed)
    torch.testing.assert_close(a[:, :30], b[:, :30])
    assert not torch.allclose(a[:, 30:], b[:, 30:])


def test_rope_scores_depend_only_on_relative_position():
    freqs = rope_frequencies(64, 8, 500_000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(t, s):
        qt = apply_rope(q.expand(1, 64, 1, 8).contiguous(), freqs)[0, t, 0]
        ks = apply_rope(k.expand(1, 64, 1, 8).contiguous(), freqs)[0, s, 0]
        return (qt * ks).sum().item()

    assert score(10, 3) == pytest.approx(score(40, 33), abs=1e-5)
    assert score(10, 3) != pytest.approx(score(10, 9), abs=1e-3)
    # Position 0 is not rotated; norms are preserved; the real form (used under torch.compile) agrees.
    x = torch.randn(1, 64, 2, 8)
    rotated = apply_rope(x, freqs)
    torch.testing.assert_close(rotated[:, 0], x[:, 0])
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rope(x, torch.view_as_real(freqs)), rotated)


def test_initialisation_is_truncated_normal():
    torch.manual_seed(0)
    model = Decoder(get_shape("base"), init_std=0.02)
    weights = torch.cat([model.blocks[0].mlp.gate_up.weight.flatten(), model.lm_head.weight.flatten()])
    assert weights.abs().max().item() <= 0.06 + 1e-7  # 3 std
    assert weights.std().item() == pytest.approx(0.02 * 0.986, rel=0.03)  # std of N truncated at 3 sigma
    assert torch.all(model.blocks[0].attention.q_norm.weight == 1)


def test_rope_is_a_buffer_not_a_parameter_nor_saved(tiny):
    assert not any("rope" in key for key in tiny.state_dict())
    assert all("rope" not in name for name, _ in tiny.named_parameters())


def test_architecture_options():
    shape = get_shape("tiny")
    pre = Decoder(shape, norm_placement="pre")
    assert pre(torch.randint(0, 256, (1, 8))).shape == (1, 8, 256)
    no_qk = Decoder(shape, qk_norm=False)
    assert Decoder(shape).num_params() - no_qk.num_params() == 2 * shape.n_layers * shape.d_model
    with pytest.raises(LadderError):
        Decoder(shape, norm_placement="sandwich")
    with pytest.raises(LadderError, match="longer"):
        Decoder(shape)(torch.zeros(1, shape.seq_len + 1, dtype=torch.long))


def test_no_weight_decay_on_embeddings_and_norms(tiny):
    decay, no_decay = param_groups(tiny, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(tiny.embed.weight) in no_decay_ids
    assert id(tiny.final_norm.weight) in no_decay_ids
    assert id(tiny.blocks[0].attention.k_norm.weight) in no_decay_ids
    assert id(tiny.lm_head.weight) not in no_decay_ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(tiny.parameters()))
    # Every matrix but the embedding decays: 4 per block (qkv, out, gate_up, down) + lm_head.
    assert len(decay["params"]) == 4 * 2 + 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_takes_a_step(name):
    torch.manual_seed(0)
    model = Decoder(get_shape("femto"))
    optimizer = build_optimizer(OptimConfig(name=name), model, 1e-3, torch.device("cpu"))
    before = model.lm_head.weight.detach().clone()
    model(torch.randint(0, 256, (2, 16))).sum().backward()
    optimizer.step()
    assert not torch.equal(before, model.lm_head.weight)


def test_adamw_uses_the_fused_kernel_on_cpu(tiny):
    optimizer = build_optimizer(OptimConfig(name="adamw"), tiny, 1e-3, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True


def test_unknown_optimizer_is_refused(tiny):
    with pytest.raises(LadderError, match="unknown optimizer"):
        build_optimizer(OptimConfig(name="lion"), tiny, 1e-3, torch.device("cpu"))


def test_schedule_warmup_then_cosine_to_a_tenth():
    schedule = Schedule(peak_lr=1.0, warmup_steps=10, total_steps=110, final_ratio=0.1)
    assert schedule.lr_at(0) == pytest.approx(0.1)
    assert schedule.lr_at(9) == pytest.approx(1.0)
    assert schedule.lr_at(10) == pytest.approx(1.0)
    assert schedule.lr_at(59.5) == pytest.approx(0.55)  # half-way through the decay
    assert schedule.lr_at(109) == pytest.approx(0.1)
    lrs = [schedule.lr_at(s) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("with_residual", [False, True])
def test_rmsnorm_matches_torch_forward_and_backward(with_residual):
    from ladder.model import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 32, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(3, 5, 32, dtype=torch.float64, requires_grad=True) if with_residual else None
    norm = norm.double()
    out = norm(x, residual)
    expected = torch.nn.functional.rms_norm(x, (32,), norm.weight, 1e-6) + (residual if with_residual else 0)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    inputs = (x, norm.weight) + ((residual,) if with_residual else ())
    torch.testing.assert_close(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad))


def _rope_float64(x, freqs):
    """RoPE in float64 throughout (apply_rope computes in float32), for exact references."""
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * freqs.to(torch.complex128)).flatten(-2)


@pytest.mark.parametrize("per_row_positions", [False, True])
def test_fused_qk_norm_and_rope_match_the_composed_ops(per_row_positions):
    """CPU's QKNormRoPEFunction (Attention.heads) against RMSNorm + RoPE written out, values and
    gradients, in float64; per-row positions are what the shared-context scorer passes."""
    torch.manual_seed(0)
    model = Decoder(get_shape("tiny")).double()  # d 64, 4 heads of 16
    attention = model.blocks[0].attention
    with torch.no_grad():
        attention.q_norm.weight.uniform_(0.5, 1.5)
        attention.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 20, 64, dtype=torch.float64, requires_grad=True)
    freqs = model.rope[torch.randint(0, 200, (3, 20))] if per_row_positions else model.rope[:20]

    def composed(x):
        q, k, v = attention.qkv(x).split(64, dim=-1)
        q = torch.nn.functional.rms_norm(q, (64,), attention.q_norm.weight, 1e-6)
        k = torch.nn.functional.rms_norm(k, (64,), attention.k_norm.weight, 1e-6)
        heads = (3, 20, 4, 16)
        q, k = _rope_float64(q.reshape(heads), freqs), _rope_float64(k.reshape(heads), freqs)
        return q.transpose(1, 2), k.transpose(1, 2), v.reshape(heads).transpose(1, 2)

    fused, expected = attention.heads(x, freqs), composed(x)
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    upstream = [torch.randn_like(t) for t in expected]
    inputs = (x, attention.qkv.weight, attention.q_norm.weight, attention.k_norm.weight)
    for got, want in zip(torch.autograd.grad(fused, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_swiglu_function_matches_autograd():
    from ladder.model.cpu_kernels import SwiGLUFunction

    torch.manual_seed(0)
    gate_up = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)  # gate and up stacked
    gate, up = gate_up.unbind(0)
    torch.testing.assert_close(SwiGLUFunction.apply(gate_up), torch.nn.functional.silu(gate) * up)
    assert torch.autograd.gradcheck(SwiGLUFunction.apply, (gate_up,))


def test_stacked_linear_function_matches_linear():
    """The k products of a stacked weight, stacked: the pieces of x W^T, values and gradients."""
    from ladder.model.cpu_kernels import StackedLinearFunction

    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    stacked = StackedLinearFunction.apply(x, weight, 3)
    assert stacked.shape == (3, 2, 5, 3) and stacked[1].is_contiguous()
    torch.testing.assert_close(stacked, torch.stack(torch.nn.functional.linear(x, weight).split(3, dim=-1)))
    assert torch.autograd.gradcheck(lambda x, w: StackedLinearFunction.apply(x, w, 3), (x, weight))


def test_stacked_linear_skips_gradients_nobody_needs():
    """A frozen weight gets no gradient computed (as nn.Linear), the input's is still right."""
    from ladder.model.cpu_kernels import StackedLinearFunction

    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(10, 6, dtype=torch.float64)
    StackedLinearFunction.apply(x, weight, 2).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(4, 6))


def test_an_empty_sequence_gives_empty_heads():
    model = Decoder(get_shape("tiny"))
    q, k, v = model.blocks[0].attention.heads(torch.randn(3, 0, 64), model.rope[:0])
    assert q.shape == k.shape == v.shape == (3, 4, 0, 16)


def test_hooks_on_a_projection_are_honoured_on_cpu():
    """The CPU functions bypass the projections' forward; with a hook (LoRA, quantisation, probes)
    attached, the composed path runs so that the hook does, with the same result."""
    torch.manual_seed(0)
    model = Decoder(get_shape("tiny"))
    idx = torch.randint(0, 256, (2, 16))
    expected = model(idx)
    calls = []
    for block in model.blocks:
        block.attention.qkv.register_forward_hook(lambda module, args, out: calls.append("qkv"))
        block.mlp.gate_up.register_forward_hook(lambda module, args, out: calls.append("gate_up"))
    torch.testing.assert_close(model(idx), expected, rtol=1e-5, atol=1e-5)
    assert calls == ["qkv", "gate_up"] * 2


def test_a_bf16_model_trains_on_cpu():
    """A model cast to bf16 (no autocast) takes the composed ops on CPU."""
    torch.manual_seed(0)
    model = Decoder(get_shape("tiny")).to(torch.bfloat16)
    idx = torch.randint(0, 256, (2, 32))
    logits = model(idx)
    assert logits.dtype == torch.bfloat16
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.roll(-1, 1).flatten()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_cpu_bf16_autocast_trains():
    """`train.precision=bf16` on CPU runs the composed ops, which autocast casts (the CPU functions'
    out= products would stay fp32)."""
    torch.manual_seed(0)
    model = Decoder(get_shape("tiny"))
    idx = torch.randint(0, 256, (2, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.roll(-1, 1).flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("norm_placement", ["post", "pre"])
def test_cpu_autograd_functions_agree_with_the_composed_path_of_cuda(monkeypatch, norm_placement):
    """The whole Decoder, forward and gradients, on the CPU functions and on the composed ops that
    CUDA and torch.compile run (selected by `use_cpu_kernels`); composed RoPE computes in float32."""
    import ladder.model.decoder

    torch.manual_seed(0)
    model = Decoder(get_shape("tiny"), norm_placement=norm_placement).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ladder.model.decoder.RMSNorm):
                module.weight.uniform_(0.5, 1.5)
    idx = torch.randint(0, 256, (2, 48))

    def loss_and_grads():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, 1).flatten())
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    fused_loss, fused_grads = loss_and_grads()
    monkeypatch.setattr(ladder.model.decoder, "use_cpu_kernels", lambda x, *projections: False)
    composed_loss, composed_grads = loss_and_grads()
    torch.testing.assert_close(fused_loss, composed_loss, rtol=1e-6, atol=1e-6)
    for fused, composed in zip(fused_grads, composed_grads):
        torch.testing.assert_close(fused, composed, rtol=1e-4, atol=1e-6)
