"""Accelerator facts shared by the plan (no torch) and the trainer's MFU: peak bf16 FLOP/s."""

from __future__ import annotations

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
