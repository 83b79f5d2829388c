"""Training stability, as the Deep Learning Tuning Playbook advises: watch the gradient norm,
suggest a clipping threshold from its history, flag loss spikes, stop on NaN/inf."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

SPIKE_WINDOW = 50  # steps of recent losses whose median a spike is compared with
MIN_SPIKE_HISTORY = 10  # no spike verdicts before this many steps


@dataclass
class StabilityMonitor:
    """Grad-norm history, clip counts and loss-spike detection; its state goes into checkpoints."""

    spike_factor: float = 2.0
    grad_norms: list[float] = field(default_factory=list)
    """Pre-clipping global gradient L2 norm of every step so far."""
    recent_losses: list[float] = field(default_factory=list)
    """The last SPIKE_WINDOW losses."""
    spikes: list[int] = field(default_factory=list)
    """Steps whose loss exceeded spike_factor x the recent median."""

    def record(self, step: int, loss: float, grad_norm: float) -> bool:
        """Record one step; True if its loss is a spike."""
        self.grad_norms.append(grad_norm)
        spike = len(self.recent_losses) >= MIN_SPIKE_HISTORY and loss > self.spike_factor * statistics.median(
            self.recent_losses
        )
        if spike:
            self.spikes.append(step)
        self.recent_losses = (self.recent_losses + [loss])[-SPIKE_WINDOW:]
        return spike

    def suggested_clip(self) -> float | None:
        """90th percentile of the gradient norms seen: the playbook's starting clip threshold."""
        if not self.grad_norms:
            return None
        ordered = sorted(self.grad_norms)
        return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]

    def state_dict(self) -> dict:
        return {
            "grad_norms": list(self.grad_norms),
            "recent_losses": list(self.recent_losses),
            "spikes": list(self.spikes),
        }

    def load_state_dict(self, state: dict) -> None:
        self.grad_norms = list(state["grad_norms"])
        self.recent_losses = list(state["recent_losses"])
        self.spikes = list(state["spikes"])


def is_finite(*values: float) -> bool:
    return all(math.isfinite(value) for value in values)
