"""Training throughput of ladder against a minimal plain-PyTorch GPT of equal shape.

    .venv/bin/python scripts/bench_train.py [--preset base] [--batch 16] [--rounds 9] [--threads 2]

Both models get the same d_model, layers, heads, vocabulary, sequence length and SwiGLU hidden
size, so their matrix multiplies (and 6N) are the same; the plain GPT has what a minimal GPT has
instead of OLMo 2's extras: pre-LayerNorm instead of post-RMSNorm, learned absolute positions
instead of RoPE, no QK-norm. One training step = forward, cross-entropy, backward, optimizer
step, on random tokens (gradient clipping and logging left out of all). Three contenders, each in
its own process because one of the settings is process-wide:

  ours         ladder's Decoder, set up as `ladder train` sets up a run: fused AdamW over ladder's
               parameter groups and, on CPU, glibc keeping freed memory (ladder.train.cpu_memory)
  plain        the plain GPT as one would write it: torch.optim.AdamW defaults, default process
  plain+setup  the plain GPT with ladder's set-up (fused AdamW, memory setting): the model alone

The processes take turns, `--rounds` times, each round timing `--steps` steps after warm-up;
reported are medians and the ratios ours / plain (goal >= 1.0) and ours / plain+setup (what the
architecture costs), each as a ratio of the medians and as the median of the per-round ratios
(with their range): a round's contenders run back to back, so slow drifts of the machine's speed
cancel in the per-round ratios. On CUDA it reports MFU against the device's peak bf16 FLOP/s (bf16
autocast, optional torch.compile) and `--only-ours` skips the plain GPT (e.g. 190M on a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from ladder.config import OptimConfig
from ladder.model import Decoder
from ladder.sizes import ModelShape, get_shape
from ladder.train.cpu_memory import keep_freed_memory
from ladder.train.metrics import peak_flops
from ladder.train.optim import build_optimizer

CONTENDERS = ("ours", "plain", "plain+setup")


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


def flops_per_token(model: nn.Module, shape: ModelShape) -> float:
    """6 x (parameters in matrix multiplies) + PaLM attention term 12 L d T, per token."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6.0 * matmul + 12.0 * shape.n_layers * shape.d_model * shape.seq_len


def build(contender: str, shape: ModelShape, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of one contender, with its process set-up applied."""
    torch.manual_seed(0)
    if contender == "plain":
        model = PlainGPT(shape).to(device)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    if device.type == "cpu":
        keep_freed_memory()
    model = (Decoder(shape) if contender == "ours" else PlainGPT(shape)).to(device)
    return model, build_optimizer(OptimConfig(), model, 1e-4, device)


def worker(args: argparse.Namespace) -> None:
    """Build one contender, warm up, then time `n` steps for every `n` read from stdin."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = get_shape(args.preset, vocab_size=args.vocab, seq_len=args.seq_len)
    model, optimizer = build(args.worker, shape, device)
    params = sum(p.numel() for p in model.parameters())
    runner = torch.compile(model) if args.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    batches = []
    for _ in range(4):
        data = torch.randint(0, shape.vocab_size, (args.batch, shape.seq_len + 1), device=device)
        batches.append((data[:, :-1], data[:, 1:]))

    def seconds_per_step(steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            inputs, targets = batches[i % len(batches)]
            with autocast:
                loss = F.cross_entropy(runner(inputs).flatten(0, 1), targets.flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    seconds_per_step(3)  # warm-up (and compilation)
    print(f"ready {params} {flops_per_token(model, shape)} {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        print(seconds_per_step(int(line)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", help="size preset (base: ~1.1M parameters)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=None, help="default: the preset's")
    parser.add_argument("--vocab", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--only-ours", action="store_true", help="skip the plain GPT (e.g. MFU of 190M)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    shape = get_shape(args.preset, vocab_size=args.vocab, seq_len=args.seq_len)
    contenders = ("ours",) if args.only_ours else CONTENDERS
    passed = [a for a in sys.argv[1:] if a != "--only-ours"]
    workers = {
        name: subprocess.Popen(
            [sys.executable, __file__, *passed, "--worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in contenders
    }
    info = {}
    for name, process in workers.items():  # build and warm up one at a time
        ready = process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise SystemExit(f"bench_train: the {name} worker failed to start")
        info[name] = (int(ready[1]), float(ready[2]), int(ready[3]))
    seconds: dict[str, list[float]] = {name: [] for name in workers}
    for _ in range(args.rounds):
        for name, process in workers.items():
            process.stdin.write(f"{args.steps}\n")
            process.stdin.flush()
            seconds[name].append(float(process.stdout.readline()))
    for process in workers.values():
        process.stdin.close()
        process.wait()

    device = torch.device(args.device)
    tokens = args.batch * shape.seq_len
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {info['ours'][2]} threads"
    print(
        f"preset {shape.name}: d={shape.d_model} layers={shape.n_layers} heads={shape.n_heads} "
        f"vocab={shape.vocab_size} seq={shape.seq_len} batch={args.batch}; {where}; torch {torch.__version__}; "
        f"{args.rounds} rounds of {args.steps} steps"
    )
    tokens_per_s = {}
    for name in workers:
        params, flops, _ = info[name]
        step = statistics.median(seconds[name])
        tokens_per_s[name] = tokens / step
        mfu = f", MFU {tokens_per_s[name] * flops / peak:.1%}" if peak else ""
        spread = f"{min(seconds[name]) * 1e3:.1f}-{max(seconds[name]) * 1e3:.1f}"
        print(
            f"  {name:11s} {params:>12,d} params  {step * 1e3:8.1f} ms/step (range {spread})  "
            f"{tokens_per_s[name]:>12,.0f} tokens/s  {tokens_per_s[name] * flops / 1e9:8.2f} GFLOP/s{mfu}"
        )
    if not args.only_ours:
        for other, meaning in (
            ("plain", "goal >= 1.0"),
            ("plain+setup", "same set-up: the architecture's QK-norm, post-norm and RoPE"),
        ):
            per_round = [theirs / ours for ours, theirs in zip(seconds["ours"], seconds[other])]
            print(
                f"  ours / {other + ':':12s} {tokens_per_s['ours'] / tokens_per_s[other]:.3f}x tokens/s; per round "
                f"median {statistics.median(per_round):.3f}x (range {min(per_round):.3f}-{max(per_round):.3f}) "
                f"({meaning})"
            )


if __name__ == "__main__":
    main()
