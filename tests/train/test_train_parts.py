"""The trainer's parts on their own: MFU peak table, stability monitor, checkpoints, wandb id."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ladder.errors import LadderError
from ladder.model import Decoder
from ladder.runs.directory import config_differences, find_checkpoint
from ladder.train import checkpoint as checkpoint_module
from ladder.train.checkpoint import read_checkpoint
from ladder.train.metrics import Throughput, device_peak_flops, peak_flops
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


# "error": DCP's warning that it assumes one process (the intent here) must not reach the user,
# nor any other warning; an asynchronous save warns from its background thread.
@pytest.mark.filterwarnings("error")
def test_checkpoints_are_atomic_pruned_and_export_to_one_file_for_eval(tmp_path):
    from ladder.hydra_app import compose_config
    from ladder.runs.directory import latest_checkpoint
    from ladder.sizes import get_shape
    from ladder.train.checkpoint import CheckpointWriter, export_checkpoint, load_into, load_model
    from ladder.train.optim import build_optimizer

    cfg = compose_config(["model=femto"])
    torch.manual_seed(0)
    model = Decoder(get_shape("femto"))
    optimizer = build_optimizer(cfg.optim, model, 1e-3, torch.device("cpu"))
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    optimizer.step()
    folder = tmp_path / "checkpoint"
    writer = CheckpointWriter(folder, rank=0, distributed=False, keep=2, asynchronous=False)
    (folder / ".tmp-step-00000009").mkdir(parents=True)  # left by a crash: removed by the next save
    trainer = {
        "step": 7,
        "tokens": 7 * 2048,
        "python_rng": checkpoint_module.python_rng_state(),
        "world_size": 1,
        "parallel": "ddp",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "shape": checkpoint_module.shape_to_dict(model.shape),
    }
    for step in (5, 6, 7):
        torch.manual_seed(step)
        writer.save(
            folder / f"step-{step:08d}",
            trainer | {"step": step},
            checkpoint_module.model_and_optimizer_state(model, optimizer)
            | checkpoint_module.rng_tensors(0, torch.device("cpu")),
        )
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000006", "step-00000007"]
    assert latest_checkpoint(folder).name == "step-00000007"
    expected = torch.rand(3)  # the generator after seeding 7, as saved
    # A fresh model and optimizer get the saved weights, moments and generator state back.
    fresh = Decoder(get_shape("femto"))
    fresh_optimizer = build_optimizer(cfg.optim, fresh, 1e-3, torch.device("cpu"))
    torch.manual_seed(99)
    state = load_into(
        latest_checkpoint(folder), fresh, fresh_optimizer, rank=0, device=torch.device("cpu"), distributed=False
    )
    assert state["step"] == 7 and torch.equal(torch.rand(3), expected)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    moments = [fresh_optimizer.state[p]["exp_avg"] for p in fresh.parameters()]
    assert all(torch.equal(a, optimizer.state[p]["exp_avg"]) for a, p in zip(moments, model.parameters()))
    in_background = CheckpointWriter(tmp_path / "async", rank=0, distributed=False, keep=2, asynchronous=True)
    in_background.save(
        tmp_path / "async" / "step-00000007", trainer, checkpoint_module.model_and_optimizer_state(model, optimizer)
    )
    in_background.wait()
    assert latest_checkpoint(tmp_path / "async").name == "step-00000007"
    # `ladder eval` loads the sharded checkpoint directly, or its one-file export.
    exported = export_checkpoint(tmp_path)
    assert exported == folder / "model.pt"
    assert set(read_checkpoint(exported)) == {"model", "config", "shape", "step", "tokens"}
    assert checkpoint_module.checkpoint_position(exported)[0] == 7  # what `ladder eval` reports
    assert checkpoint_module.checkpoint_position(folder / "step-00000007")[0] == 7
    for source in (folder / "step-00000007", exported, tmp_path):
        loaded, loaded_cfg = load_model(source)
        assert loaded_cfg.model.preset == "femto" and torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    with pytest.raises(LadderError):
        find_checkpoint(tmp_path / "nowhere")


def test_config_differences_ignore_what_does_not_change_the_run():
    old = {"optim": {"lr": 0.1}, "train": {"max_steps": 5, "batch_size": None}, "wandb": {"mode": "offline"}}
    new = {"optim": {"lr": 0.2}, "train": {"max_steps": None, "batch_size": None}, "wandb": {"mode": "disabled"}}
    assert config_differences(old, new) == ["optim.lr: 0.1 -> 0.2"]
    # A key added since a run was made counts as the value that computes what that run did.
    made_before = {"model": {"preset": "femto"}, "train": {"max_steps": 5}}
    assert (
        config_differences(made_before, {"model": {"preset": "femto", "vocab_multiple": 1}, "train": {"max_steps": 5}})
        == []
    )
    assert config_differences(
        made_before, {"model": {"preset": "femto"}, "train": {"max_steps": 5, "z_loss": 1e-5}}
    ) == ["train.z_loss: 0.0 -> 1e-05"]


def test_wandb_id_is_stable_per_run_dir(tmp_path):
    assert wandb_run_id(tmp_path / "a", "tiny-1xC") == wandb_run_id(tmp_path / "a", "tiny-1xC")
    assert wandb_run_id(tmp_path / "a", "x") != wandb_run_id(tmp_path / "b", "x")
    assert wandb_run_id(Path("r"), "tiny 1/x").startswith("tiny_1_x-")


@pytest.mark.parametrize(
    ("configured", "environment", "active"),
    [
        ("disabled", "offline", False),  # the command line wins over the environment
        (None, "disabled", False),  # an unset mode takes $WANDB_MODE
    ],
)
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


def test_z_loss_adds_the_squared_log_normaliser_and_reports_plain_cross_entropy():
    import torch.nn.functional as F

    from ladder.train.compile import loss_function

    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 11) * 3, torch.randint(0, 11, (2, 5))
    plain = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert loss_function(0.0)(logits, targets) == (plain, plain)
    total, cross_entropy = loss_function(1e-2)(logits, targets)
    log_z = torch.logsumexp(logits, -1)
    assert cross_entropy == pytest.approx(plain.item(), abs=1e-6)
    assert total == pytest.approx((plain + 1e-2 * log_z.square().mean()).item(), abs=1e-6)


def test_prefetcher_keeps_the_loaders_step_order(tmp_path):
    import numpy as np

    from ladder.data.loader import TokenLoader
    from ladder.data.prefetch import Prefetcher

    np.save(tmp_path / "tokens.npy", np.arange(5000, dtype=np.uint16))
    loader = TokenLoader(tmp_path / "tokens.npy", 16, 8, seed=3, rank=1, world_size=2)
    batches = Prefetcher(loader, 2, torch.device("cpu"), start_step=7)
    try:
        for step in (7, 8, 9):
            for micro in (0, 1):
                got, expected = batches.get(step, micro), loader.batch(step, micro, 2)
                assert all(torch.equal(a, b) for a, b in zip(got, expected))
        with pytest.raises(RuntimeError, match="out of order"):
            batches.get(12, 0)
    finally:
        batches.close()
