"""TokenLoader: (input, target) batches from a token file, a pure function of (seed, step).

The token file is cut into windows of seq_len + 1 tokens (input = first seq_len, target = last
seq_len). Epoch e visits every window once, in an order and from a start offset drawn from
(seed, e), so later epochs see different window boundaries. Global sequence i is window i mod W
of epoch i // W. Step s's global batch is sequences [s B, (s+1) B): the same whatever the number
of ranks and micro-batches, which are contiguous slices of it. Hence:
- resuming at step s continues exactly (nothing is stored but the step);
- DDP ranks read disjoint windows (within an epoch no window repeats);
- changing world_size or gradient accumulation does not change what a step trains on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ladder.errors import LadderError


class TokenLoader:
    """Deterministic batches of a memory-mapped token file."""

    def __init__(
        self,
        path: str | Path,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        dtype: str | np.dtype | None = None,
    ):
        """
        path: a .bin token file (dtype from the manifest.json beside it, or `dtype`) or a .npy.
        batch_size: the GLOBAL batch in sequences (all ranks and micro-batches of one step).
        seed: seed of the window order; rank / world_size: this process's share.
        """
        if seq_len < 1 or batch_size < 1:
            raise LadderError(f"seq_len and batch_size must be positive (got {seq_len}, {batch_size})")
        if not 0 <= rank < world_size:
            raise LadderError(f"rank {rank} is outside world_size {world_size}")
        if batch_size % world_size:
            raise LadderError(f"global batch {batch_size} is not divisible by world_size {world_size}")
        self.path = Path(path)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.tokens = _open_tokens(self.path, dtype)
        n = len(self.tokens)
        if n < seq_len + 1:
            raise LadderError(f"{self.path}: {n} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        self.windows_per_epoch = (n - 1) // seq_len
        """W: windows of one epoch."""
        self._slack = (n - 1) - self.windows_per_epoch * seq_len

    @property
    def tokens_per_epoch(self) -> int:
        return self.windows_per_epoch * self.seq_len

    def batch(self, step: int, micro: int = 0, n_micro: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's micro-batch `micro` of `n_micro` at `step`: (inputs, targets), LongTensor[b, T]
        with b = batch_size / (world_size x n_micro)."""
        per_rank = self.batch_size // self.world_size
        if per_rank % n_micro or not 0 <= micro < n_micro:
            raise LadderError(f"micro-batch {micro} of {n_micro} does not divide {per_rank} sequences per rank")
        size = per_rank // n_micro
        first = step * self.batch_size + self.rank * per_rank + micro * size
        windows = np.stack([self._window(i) for i in range(first, first + size)])
        data = torch.from_numpy(windows.astype(np.int64))
        return data[:, :-1], data[:, 1:]

    def _window(self, sequence: int) -> np.ndarray:
        epoch, index = divmod(sequence, self.windows_per_epoch)
        order, offset = self._epoch(epoch)
        start = offset + int(order[index]) * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1])

    def _epoch(self, epoch: int) -> tuple[np.ndarray, int]:
        return _epoch_plan(self.seed, epoch, self.windows_per_epoch, self._slack)

    def sequential_batches(
        self, batch_size: int | None = None, max_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The file's consecutive windows from its start, this rank's share (for validation loss).

        Yields batches of at most `batch_size` sequences (default: this rank's share of the global
        batch); rank r takes windows r, r + world_size, ...
        """
        size = batch_size or self.batch_size // self.world_size
        starts = np.arange(self.rank, self.windows_per_epoch, self.world_size) * self.seq_len
        for number, first in enumerate(range(0, len(starts), size)):
            if max_batches is not None and number >= max_batches:
                return
            chunk = starts[first : first + size]
            windows = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1]) for s in chunk])
            data = torch.from_numpy(windows.astype(np.int64))
            yield data[:, :-1], data[:, 1:]


@lru_cache(maxsize=4)
def _epoch_plan(seed: int, epoch: int, windows: int, slack: int) -> tuple[np.ndarray, int]:
    """Window order and start offset of one epoch, from (seed, epoch) alone."""
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(0, slack + 1))
    return rng.permutation(windows), offset


def _open_tokens(path: Path, dtype: str | np.dtype | None) -> np.ndarray:
    if not path.is_file():
        raise LadderError(f"token file {path} does not exist (run `ladder data prepare`)")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if dtype is None:
        manifest = path.parent / "manifest.json"
        if not manifest.is_file():
            raise LadderError(f"{path}: no manifest.json beside it; pass dtype= (uint16 or uint32)")
        dtype = json.loads(manifest.read_text())["dtype"]
    dtype = np.dtype(dtype)
    if path.stat().st_size % dtype.itemsize:
        raise LadderError(f"{path}: size is not a whole number of {dtype} tokens")
    return np.memmap(path, dtype=dtype, mode="r")
