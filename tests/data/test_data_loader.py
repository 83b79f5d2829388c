"""TokenLoader: deterministic from (seed, step), resumable, disjoint across ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ladder.data import TokenLoader
from ladder.errors import LadderError


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens.npy"
    # distinct ids so that every window is identified by its first token
    np.save(path, np.arange(10_001, dtype=np.int64))
    return path


def test_targets_are_inputs_shifted(token_file):
    x, y = TokenLoader(token_file, seq_len=16, batch_size=4, seed=0).batch(3)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))


def test_same_seed_and_step_same_batch_resume_exact(token_file):
    a = TokenLoader(token_file, 16, 8, seed=7)
    b = TokenLoader(token_file, 16, 8, seed=7)  # a "resumed" process starting at step 40
    assert all(torch.equal(a.batch(s)[0], b.batch(s)[0]) for s in (40, 41, 500))
    assert not torch.equal(a.batch(0)[0], TokenLoader(token_file, 16, 8, seed=8).batch(0)[0])
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])


def test_epoch_visits_every_window_once(token_file):
    loader = TokenLoader(token_file, seq_len=100, batch_size=4, seed=0)
    assert loader.windows_per_epoch == 100
    starts = torch.cat([loader.batch(s)[0][:, 0] for s in range(25)])
    assert len(set(starts.tolist())) == 100
    assert len({int(s) % 100 for s in starts}) == 1  # one offset per epoch


def test_ranks_and_micro_batches_split_the_global_batch(token_file):
    whole = TokenLoader(token_file, 16, 8, seed=3).batch(5)[0]
    parts = [
        TokenLoader(token_file, 16, 8, seed=3, rank=r, world_size=2).batch(5, micro=m, n_micro=2)[0]
        for r in range(2)
        for m in range(2)
    ]
    assert all(p.shape == (2, 16) for p in parts)
    assert torch.equal(torch.cat(parts), whole)
    firsts = [set(p[:, 0].tolist()) for p in parts]
    assert all(firsts[i].isdisjoint(firsts[j]) for i in range(4) for j in range(i + 1, 4))


def test_sequential_batches_cover_the_file_in_order(token_file):
    loader = TokenLoader(token_file, seq_len=1000, batch_size=4, seed=0)
    batches = list(loader.sequential_batches(batch_size=3))
    assert [len(x) for x, _ in batches] == [3, 3, 3, 1]
    assert torch.cat([x for x, _ in batches])[:, 0].tolist() == list(range(0, 10_000, 1000))


def test_bad_arguments(token_file, tmp_path):
    with pytest.raises(LadderError, match="fewer than seq_len"):
        TokenLoader(token_file, seq_len=20_000, batch_size=1, seed=0)
    with pytest.raises(LadderError, match="not divisible by world_size"):
        TokenLoader(token_file, 16, 3, seed=0, world_size=2)
    with pytest.raises(LadderError, match="does not exist"):
        TokenLoader(tmp_path / "none.bin", 16, 2, seed=0)
    with pytest.raises(LadderError, match="no manifest.json"):
        (tmp_path / "raw.bin").write_bytes(b"\0" * 100)
        TokenLoader(tmp_path / "raw.bin", 16, 2, seed=0)
    loader = TokenLoader(tmp_path / "raw.bin", 16, 2, seed=0, dtype="uint16")
    assert loader.windows_per_epoch == 3
