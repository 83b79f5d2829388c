"""torch.compile, one block at a time, and the loss on the logits.

Compiling each block (torchtitan's way) instead of the whole model keeps FSDP2's per-block
all-gathers and reduce-scatters outside the graphs, composes with activation checkpointing (the
checkpoint wrapper is compiled with its block), and compiles one graph that every block reuses:
the blocks have one code path and same-shaped inputs, so compile time does not grow with depth.
`Module.compile` compiles in place: parameter names, and so checkpoints, are unchanged.

The loss is compiled apart, on the logits: the upcast to fp32, log-sum-exp and (optional) z-loss
fuse into one pass instead of materialising [tokens, vocab] fp32 copies. A step of fixed shapes
compiles once: no graph break inside a block, no recompilation per micro-batch
(tests/train/test_train_parallel.py counts both).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ladder.model import Decoder


def compile_blocks(model: Decoder, backend: str) -> None:
    """Compile every block in place; the model then hands them the real form of the RoPE table."""
    for block in model.blocks:
        block.compile(backend=backend, fullgraph=True)
    model.compiled_blocks = True


def loss_function(z_loss: float) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(training loss, cross-entropy) of logits [B, T, V] and targets [B, T], in fp32.

    With z_loss > 0 the training loss adds z_loss x mean(log Z)^2, Z = sum exp(logits) (PaLM; OLMo 2
    trains with 1e-5): it keeps the softmax normaliser near 1 and the logits from drifting. The
    cross-entropy (what metrics report) is log Z - logit of the target either way.
    """

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.flatten(0, 1).float()
        targets = targets.flatten()
        if not z_loss:
            cross_entropy = F.cross_entropy(logits, targets)
            return cross_entropy, cross_entropy
        log_z = torch.logsumexp(logits, dim=-1)
        cross_entropy = (log_z - logits.gather(1, targets.unsqueeze(1)).squeeze(1)).mean()
        return cross_entropy + z_loss * log_z.square().mean(), cross_entropy

    return loss


def compiled_loss(z_loss: float, backend: str, enabled: bool):
    function = loss_function(z_loss)
    return torch.compile(function, backend=backend, fullgraph=True) if enabled else function
