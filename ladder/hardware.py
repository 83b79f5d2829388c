"""Machine facts: accelerators' peak bf16 FLOP/s (the plan, without torch, and the trainer's MFU),
and how many CPU threads a run can use without fighting other work for the cores."""

from __future__ import annotations

import os

# Dense bf16 peak FLOP/s of one device (vendor data sheets, without sparsity). Order matters:
# the first key found in the device name wins, so "H200" is matched before "H20" and the PCIe
# and NVL variants before plain "H100" (the SXM part).
PEAK_BF16_FLOPS: dict[str, float] = {
    "GH200": 989e12,
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H800": 989e12,
    "H20": 148e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "V100": 125e12,  # fp16 tensor cores (no bf16)
}


def peak_flops(device_name: str) -> float | None:
    """Peak bf16 FLOP/s for a device name such as 'NVIDIA H100 80GB HBM3'; None if unknown."""
    upper = device_name.upper()
    for key, flops in PEAK_BF16_FLOPS.items():
        if key.upper() in upper:
            return flops
    return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def safe_threads(wanted: int, load: float | None = None, cores: int | None = None) -> tuple[int, str | None]:
    """(threads, why fewer): `wanted` threads, or as many cores as other work leaves free (at least 1).

    Busy cores are the 1-minute load average (runnable processes; `load` and `cores` default to
    this machine's). Intra-op threads that outnumber
    the free cores wait for each other at every operation: on a busy 2-core machine two threads
    trained a small model many times slower than one (docs/train.md, "Threads").
    """
    cores = usable_cores() if cores is None else cores
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = max(1, int(cores - load + 0.5))
    if free >= wanted:
        return wanted, None
    return free, f"load {load:.1f} on {cores} cores"
