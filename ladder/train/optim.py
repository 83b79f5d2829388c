"""Optimizer with parameter groups, and the learning-rate schedule (linear warmup + cosine).

Weight decay applies to the weight matrices of the blocks and the output layer, never to the input
embedding or the norm weights (OLMo 2; decaying a norm's gain only fights the normalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ladder.config import OPTIMIZERS
from ladder.errors import LadderError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed (Linear weights) and not decayed (embeddings, norms)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(optim_cfg, model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `optim_cfg.name` over `param_groups(model)`.

    weight_decay goes to torch as is: decoupled in AdamW (and NAdam, set decoupled here), an L2
    penalty in Adam, SGD and RMSprop. Adam(W) use torch's fused kernel, on CUDA and on CPU (one
    kernel per parameter instead of a dozen elementwise ops: 0.55 ms vs 1.9 ms a step for the
    1.1M-parameter `base` preset on 2 CPU threads).
    """
    name = optim_cfg.name
    groups = param_groups(model, optim_cfg.weight_decay)
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    betas = tuple(optim_cfg.betas)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=optim_cfg.eps, **fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=optim_cfg.eps, **fused)
    if name == "nadam":
        return torch.optim.NAdam(groups, lr=lr, betas=betas, eps=optim_cfg.eps, decoupled_weight_decay=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=optim_cfg.momentum)
    if name == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=optim_cfg.momentum, nesterov=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, eps=optim_cfg.eps, momentum=optim_cfg.momentum)
    raise LadderError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class Schedule:
    """Learning rate per optimizer step: linear warmup, then cosine decay to final_ratio x peak.

    Step s (0-based) uses
      s < warmup:  peak * (s + 1) / warmup
      otherwise:   final + (peak - final) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (steps - 1 - warmup)
    so the first step after warmup trains at the peak and the last step at final_ratio x peak.
    Stateless: resuming needs only the step.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int
    final_ratio: float = 0.1

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        final = self.final_ratio * self.peak_lr
        decay_steps = self.total_steps - 1 - self.warmup_steps
        progress = 1.0 if decay_steps <= 0 else min(1.0, (step - self.warmup_steps) / decay_steps)
        return final + (self.peak_lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
