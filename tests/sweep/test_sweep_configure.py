"""A sweep job's config describes exactly the rung the plan shows and the sweep hands the trainer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ladder.hydra_app import compose_config
from ladder.rungs import grid_rungs, rung_from_config
from ladder.sweep.launch import configure_rung


@pytest.mark.parametrize("grid", ["paper", "demo", "cpu"])
def test_the_config_sizes_the_same_rung_as_the_plan(grid, tmp_path):
    base = compose_config([f"ladder={grid}"])
    for rung in grid_rungs(base):
        cfg = copy.deepcopy(base)
        configure_rung(cfg, rung, tmp_path / rung.name)
        assert rung_from_config(cfg) == rung, rung.name
        assert Path(cfg.run_dir).name == cfg.run_name == rung.name
        assert cfg.role == rung.role


def test_target_given_in_tokens_trains_on_tokens(tmp_path):
    cfg = compose_config(["ladder=paper"])
    target = next(rung for rung in grid_rungs(cfg) if rung.name == "7B-4T")
    configure_rung(cfg, target, tmp_path / target.name)
    assert cfg.train.tokens == target.tokens and cfg.model.preset == "7B" and cfg.role == "target"
