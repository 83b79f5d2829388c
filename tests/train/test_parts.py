"""The trainer's parts on their own: MFU peak table, stability monitor, checkpoints, wandb id."""

import math
from pathlib import Path

import pytest
import torch

from ladder.errors import LadderError
from ladder.runs.directory import find_checkpoint
from ladder.train.checkpoint import capture_rng, read_checkpoint, restore_rng, save_checkpoint
from ladder.train.metrics import Throughput, device_peak_flops, peak_flops
from ladder.runs.directory import config_differences
from ladder.train.stability import StabilityMonitor
from ladder.train.tracking import Tracker, wandb_run_id


@pytest.mark.parametrize(
    ("name", "flops"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H20", 148e12),  # must not be taken for an H200
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 2080", None),
    ],
)
def test_peak_flops_table(name, flops):
    assert peak_flops(name) == flops


def test_mfu_from_throughput():
    assert device_peak_flops(torch.device("cpu"), None) is None
    assert device_peak_flops(torch.device("cpu"), "H100") == 989e12
    with pytest.raises(LadderError):
        device_peak_flops(torch.device("cpu"), "TPU v5")
    meter = Throughput(flops_per_token=1e9, peak=989e12, world_size=2)
    meter.tokens, meter.seconds = 494_500, 1.0
    report = meter.report()
    assert report["tokens_per_s"] == 494_500 and report["mfu"] == pytest.approx(0.25)


def test_stability_monitor_spikes_and_suggested_clip():
    monitor = StabilityMonitor(spike_factor=2.0)
    spikes = [monitor.record(step, 3.0, grad_norm=float(step)) for step in range(1, 21)]
    assert not any(spikes)
    assert monitor.record(21, 7.0, grad_norm=0.5)  # 7 > 2 x median 3
    assert monitor.spikes == [21]
    assert monitor.suggested_clip() == 18.0  # 90th percentile (19th of 21) of 0.5, 1..20
    restored = StabilityMonitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.suggested_clip() == 18.0 and restored.spikes == [21]


def test_checkpoint_is_atomic_and_restores_rng(tmp_path):
    path = tmp_path / "checkpoint" / "latest.pt"
    torch.manual_seed(3)
    rng = capture_rng()
    expected = torch.rand(3)
    save_checkpoint(path, {"rng": rng, "step": 7, "weights": torch.ones(2)})
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # no temporary file left
    state = read_checkpoint(find_checkpoint(tmp_path))
    restore_rng(state["rng"])
    assert torch.equal(torch.rand(3), expected) and state["step"] == 7
    with pytest.raises(LadderError):
        find_checkpoint(tmp_path / "nowhere")


def test_config_differences_ignore_what_does_not_change_the_run():
    old = {"optim": {"lr": 0.1}, "train": {"max_steps": 5, "batch_size": None}, "wandb": {"mode": "offline"}}
    new = {"optim": {"lr": 0.2}, "train": {"max_steps": None, "batch_size": None}, "wandb": {"mode": "disabled"}}
    assert config_differences(old, new) == ["optim.lr: 0.1 -> 0.2"]


def test_wandb_id_is_stable_per_run_dir(tmp_path):
    assert wandb_run_id(tmp_path / "a", "tiny-1xC") == wandb_run_id(tmp_path / "a", "tiny-1xC")
    assert wandb_run_id(tmp_path / "a", "x") != wandb_run_id(tmp_path / "b", "x")
    assert wandb_run_id(Path("r"), "tiny 1/x").startswith("tiny_1_x-")


@pytest.mark.parametrize(("configured", "environment", "active"), [
    ("disabled", "offline", False),  # the command line wins over the environment
    (None, "disabled", False),  # an unset mode takes $WANDB_MODE
])
def test_wandb_mode_from_config_then_environment(tmp_path, monkeypatch, configured, environment, active):
    from omegaconf import OmegaConf

    monkeypatch.setenv("WANDB_MODE", environment)
    cfg = OmegaConf.create({"wandb": {"mode": configured, "project": "p", "entity": None}})
    tracker = Tracker(cfg, tmp_path, "run", {})
    assert (tracker.run is not None) == active and not (tmp_path / "wandb").exists()


def test_a_bad_wandb_mode_in_the_environment_is_named(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setenv("WANDB_MODE", "sometimes")
    cfg = OmegaConf.create({"wandb": {"mode": None, "project": "p", "entity": None}})
    with pytest.raises(LadderError, match="WANDB_MODE must be one of"):
        Tracker(cfg, tmp_path, "run", {})
