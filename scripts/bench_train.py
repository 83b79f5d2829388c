"""Training throughput of ladder's decoder against a minimal plain-PyTorch GPT of equal shape.

    .venv/bin/python scripts/bench_train.py [--preset base] [--batch 16] [--rounds 7] [--threads N]

Both models get the same d_model, layers, heads, vocabulary, sequence length and SwiGLU hidden
size, so their matrix multiplies (and 6N) are the same; the plain GPT has what a minimal GPT has
instead of OLMo 2's extras: pre-LayerNorm instead of post-RMSNorm, learned absolute positions
instead of RoPE, no QK-norm. One training step = forward, cross-entropy, backward, AdamW step, on
random tokens. The two models alternate, `--rounds` times, each round timing `--steps` steps after
warm-up; reported are medians (and the best round, least disturbed on a shared machine) and
the ratio ours / plain (goal >= 1.0). On CUDA it also reports
MFU against the device's peak bf16 FLOP/s (bf16 autocast, optional torch.compile).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ladder.model import Decoder
from ladder.sizes import ModelShape, get_shape
from ladder.train.metrics import peak_flops


class PlainBlock(nn.Module):
    """GPT-2 block with the same matrices as ours: x + Attn(LN(x)), x + SwiGLU(LN(x))."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        d, self.n_heads, self.hidden = shape.d_model, shape.n_heads, shape.mlp_hidden
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.gate_up = nn.Linear(d, 2 * shape.mlp_hidden, bias=False)
        self.down = nn.Linear(shape.mlp_hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
        gate, up = self.gate_up(self.ln2(x)).split(self.hidden, dim=-1)
        return x + self.down(F.silu(gate) * up)


class PlainGPT(nn.Module):
    """Token + learned position embeddings, pre-LN blocks, final LayerNorm, untied output layer."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.positions = nn.Embedding(shape.seq_len, shape.d_model)
        self.blocks = nn.ModuleList(PlainBlock(shape) for _ in range(shape.n_layers))
        self.final_norm = nn.LayerNorm(shape.d_model, bias=False)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))


def flops_per_token(model: nn.Module, shape: ModelShape, seq_len: int) -> float:
    """6 x (parameters in matrix multiplies) + PaLM attention term 12 L d T, per model."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6.0 * matmul + 12.0 * shape.n_layers * shape.d_model * seq_len


def time_steps(model, optimizer, batches, steps: int, autocast) -> float:
    """Seconds per training step over `steps` steps."""
    device = batches[0][0].device
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        inputs, targets = batches[i % len(batches)]
        with autocast():
            loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", help="size preset (base: ~1.1M parameters)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=None, help="default: the preset's")
    parser.add_argument("--vocab", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--only-ours", action="store_true", help="skip the plain GPT (e.g. MFU of 190M)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = get_shape(args.preset, vocab_size=args.vocab, seq_len=args.seq_len)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else (
        lambda: torch.autocast("cpu", enabled=False))

    torch.manual_seed(0)
    models = {"ours": Decoder(shape).to(device)}
    if not args.only_ours:
        models["plain"] = PlainGPT(shape).to(device)
    runners, flops = {}, {}
    for name, model in models.items():
        fused = {"fused": True} if device.type == "cuda" else {}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), **fused)
        runners[name] = (torch.compile(model) if args.compile else model, optimizer)
        flops[name] = flops_per_token(model, shape, shape.seq_len)
    batches = []
    for _ in range(4):
        data = torch.randint(0, shape.vocab_size, (args.batch, shape.seq_len + 1), device=device)
        batches.append((data[:, :-1], data[:, 1:]))
    for name, (model, optimizer) in runners.items():  # warm-up (and compilation)
        time_steps(model, optimizer, batches, 3, autocast)

    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, (model, optimizer) in runners.items():
            seconds[name].append(time_steps(model, optimizer, batches, args.steps, autocast))

    tokens = args.batch * shape.seq_len
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"preset {shape.name}: d={shape.d_model} layers={shape.n_layers} heads={shape.n_heads} "
          f"vocab={shape.vocab_size} seq={shape.seq_len} batch={args.batch}; {where}; torch {torch.__version__}")
    results = {}
    for name, model in models.items():
        step = statistics.median(seconds[name])
        tokens_per_s = tokens / step
        results[name] = (tokens_per_s, tokens_per_s * flops[name])
        params = sum(p.numel() for p in model.parameters())
        mfu = f", MFU {tokens_per_s * flops[name] / peak:.1%}" if peak else ""
        best = tokens / min(seconds[name])
        results[name] += (best,)
        spread = f"{min(seconds[name]) * 1e3:.1f}-{max(seconds[name]) * 1e3:.1f}"
        print(f"  {name:5s} {params:>12,d} params  {step * 1e3:8.1f} ms/step (range {spread})  "
              f"{tokens_per_s:>12,.0f} tokens/s  {tokens_per_s * flops[name] / 1e9:8.2f} GFLOP/s{mfu}")
    if "plain" in results:
        print(f"  ours / plain: tokens/s {results['ours'][0] / results['plain'][0]:.3f}x, "
              f"FLOP/s {results['ours'][1] / results['plain'][1]:.3f}x (medians); "
              f"best rounds: tokens/s {results['ours'][2] / results['plain'][2]:.3f}x")


if __name__ == "__main__":
    main()
