"""Throughput, FLOPs, model FLOPs utilisation (MFU) and memory."""

from __future__ import annotations

import resource
import sys
import time

import torch

from ladder.errors import LadderError
from ladder.hardware import PEAK_BF16_FLOPS, peak_flops


def device_peak_flops(device: torch.device, gpu_override: str | None) -> float | None:
    """Peak FLOP/s of the training device; None on CPU (MFU is then not reported)."""
    if gpu_override:
        flops = peak_flops(gpu_override)
        if flops is None:
            raise LadderError(f"train.gpu={gpu_override!r} is not a known GPU; known: {', '.join(PEAK_BF16_FLOPS)}")
        return flops
    if device.type == "cuda":
        return peak_flops(torch.cuda.get_device_name(device))
    return None


def memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA allocator peak on GPU, process peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class Throughput:
    """Tokens/s and MFU over the steps since the last `report()`."""

    def __init__(self, flops_per_token: float, peak: float | None, world_size: int):
        self.flops_per_token = flops_per_token
        self.peak = peak
        self.world_size = world_size
        self.tokens = 0
        self.seconds = 0.0
        self._started: float | None = None

    def start_step(self) -> None:
        self._started = time.perf_counter()

    def end_step(self, tokens: int) -> None:
        self.seconds += time.perf_counter() - self._started
        self.tokens += tokens

    def report(self) -> dict[str, float | None]:
        """tokens_per_s (all devices), flops_per_s (achieved), mfu (per device vs peak) since last report."""
        tokens_per_s = self.tokens / self.seconds if self.seconds > 0 else 0.0
        flops_per_s = tokens_per_s * self.flops_per_token
        mfu = flops_per_s / (self.peak * self.world_size) if self.peak else None
        self.tokens, self.seconds = 0, 0.0
        return {"tokens_per_s": tokens_per_s, "flops_per_s": flops_per_s, "mfu": mfu}
