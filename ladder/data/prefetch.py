"""Batches read ahead on a background thread, in page-locked memory on CUDA.

The order stays TokenLoader's pure function of (seed, step): the thread produces (step, micro)
in training order from the step the session starts at, and the training loop takes them in the
same order (a mismatch is a bug and raises). Pinned (page-locked) host memory lets the copy to the
GPU run asynchronously (`non_blocking=True`), overlapping the previous micro-batch's compute;
on CPU the read-ahead alone hides the window gathering.
"""

from __future__ import annotations

import queue
import threading

import torch

from ladder.data.loader import TokenLoader

DEPTH = 4  # micro-batches read ahead


class Prefetcher:
    """Micro-batches of `loader` for steps start, start + 1, ... (each in n_micro pieces)."""

    def __init__(self, loader: TokenLoader, n_micro: int, device: torch.device, start_step: int):
        self.loader, self.n_micro, self.device = loader, n_micro, device
        self.pin = device.type == "cuda"
        self.queue: queue.Queue = queue.Queue(maxsize=DEPTH)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(start_step,), daemon=True, name="ladder-prefetch")
        self.thread.start()

    def _produce(self, step: int) -> None:
        try:
            while not self.stopped.is_set():
                for micro in range(self.n_micro):
                    inputs, targets = self.loader.batch(step, micro, self.n_micro)
                    if self.pin:
                        inputs, targets = inputs.pin_memory(), targets.pin_memory()
                    while not self.stopped.is_set():
                        try:
                            self.queue.put(((step, micro), inputs, targets), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                step += 1
        except BaseException as error:  # handed to the training thread, which raises it
            self.queue.put(((None, None), error, None))

    def get(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch `micro` of `step` on the device (the copy may still be in flight on CUDA)."""
        key, inputs, targets = self.queue.get()
        if key == (None, None):
            raise inputs
        if key != (step, micro):
            raise RuntimeError(f"prefetcher out of order: expected step {step} micro {micro}, got {key}")
        return inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
