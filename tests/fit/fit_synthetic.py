"""Synthetic ladder tables generated from known step-1 and step-2 parameters."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny fits: BLAS threads only contend

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
OLMO_DIR = SHARED / "data" / "olmo-ladder"

# Chinchilla-like step 1 (Hoffmann et al.'s fit) and a sigmoid shaped like the paper's fits.
STEP1 = {"A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28, "E": 1.69}
STEP2 = {"a": -0.7, "k": 5.0, "L0": 2.3, "b": 0.95}
SIZES = {"s1": 2e7, "s2": 5e7, "s3": 1.2e8, "s4": 3e8}
BIG = (2e9, 2e9 * 20 * 5)  # a target's (N, D): 2B parameters at 5x Chinchilla
FIVE_SIZES = {"s1": 2e7, "s2": 5e7, "s3": 1.2e8, "s4": 3e8, "s5": 7e8}


def loss_law(params: dict, N, D):
    return (
        params["A"] / np.asarray(N, float) ** params["alpha"]
        + params["B"] / np.asarray(D, float) ** params["beta"]
        + params["E"]
    )


def sigmoid_law(params: dict, loss):
    return params["a"] / (1 + np.exp(-params["k"] * (np.asarray(loss) - params["L0"]))) + params["b"]


def make_table(
    *,
    step1: dict = STEP1,
    step2: dict | None = STEP2,
    sizes: dict = SIZES,
    multipliers=(1, 2, 5, 10),
    checkpoints: int = 20,
    loss_noise: float = 0.0,
    acc_noise: float = 0.0,
    tasks=("synth",),
    targets: dict | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A results table: every size x multiplier, `checkpoints` evaluations per run, plus targets.

    targets: name -> (N, D); each gets one row per task at its D.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for task in tasks:
        for size, n in sizes.items():
            for multiplier in multipliers:
                final = multiplier * 20 * n
                for step, d in enumerate(np.linspace(final / checkpoints, final, checkpoints), start=1):
                    loss = float(loss_law(step1, n, d)) * (1 + loss_noise * rng.standard_normal())
                    acc = np.nan
                    if step2 is not None:
                        acc = float(np.clip(sigmoid_law(step2, loss) + acc_noise * rng.standard_normal(), 0, 1))
                    rows.append(
                        dict(
                            run=f"{size}-{multiplier}xC",
                            role="ladder",
                            N=int(n),
                            D=d,
                            step=step * 100,
                            task=task,
                            loss=loss,
                            acc=acc,
                            size=size,
                            multiplier=float(multiplier),
                        )
                    )
        for name, (n, d) in (targets or {}).items():
            loss = float(loss_law(step1, n, d))
            acc = float(sigmoid_law(step2, loss)) if step2 is not None else np.nan
            rows.append(
                dict(
                    run=name,
                    role="target",
                    N=int(n),
                    D=d,
                    step=1000,
                    task=task,
                    loss=loss,
                    acc=acc,
                    size=name,
                    multiplier=np.nan,
                )
            )
    return pd.DataFrame(rows)


def five_size_table() -> pd.DataFrame:
    """Five sizes on the law exactly (no noise), two tasks, and one target: room for backtest cuts."""
    return make_table(sizes=FIVE_SIZES, checkpoints=8, tasks=("alpha", "beta"), targets={"big": BIG})


def demo_shaped_table() -> pd.DataFrame:
    """3 tiny sizes x 3 multipliers, a target 7x bigger, non-paper task names with a chance column:
    one task whose accuracy rises, one near chance and flat (as the demo's CPU ladder has)."""
    sizes = {"femto": 1.2e4, "pico": 2.5e4, "nano": 4.1e4}
    step1 = {"A": 8.0, "alpha": 0.45, "B": 60.0, "beta": 0.3, "E": 0.9}
    common = dict(
        step1=step1,
        sizes=sizes,
        multipliers=(1, 2, 4),
        checkpoints=10,
        loss_noise=0.01,
        acc_noise=0.03,
        targets={"target": (2.9e5, 2.9e5 * 80)},
    )
    rising = make_table(step2={"a": -0.6, "k": 3.0, "L0": 2.0, "b": 0.9}, tasks=("copycolors",), **common)
    flat = make_table(step2={"a": -0.02, "k": 1.0, "L0": 1.0, "b": 0.52}, tasks=("corpus_cloze",), seed=1, **common)
    return pd.concat([rising.assign(chance=0.25), flat.assign(chance=0.5)], ignore_index=True)


@pytest.fixture
def synthetic_table() -> pd.DataFrame:
    return make_table(targets={"big": (2e9, 2e9 * 20 * 5)}, loss_noise=0.002, acc_noise=0.005)
