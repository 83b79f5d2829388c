"""Launcher configs compose: `ladder sweep ... --cfg hydra` shows the SLURM and local settings."""

from __future__ import annotations

import os

import pytest
import yaml

from ladder.cli import main


def hydra_config(capsys, *args: str) -> dict:
    assert main(["sweep", "ladder=paper", *args, "--cfg", "hydra"]) == 0
    return yaml.safe_load(capsys.readouterr().out)["hydra"]


def test_slurm_launcher_config(tmp_path, capsys):
    hydra = hydra_config(
        capsys,
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=720",
        f"ladder.sweep_root={tmp_path}",
    )
    launcher = hydra["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 720
    assert launcher["gpus_per_node"] == 8 and launcher["tasks_per_node"] == 8  # one process per GPU
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] > 0  # requeue after the signal
    assert launcher["setup"][0] == "export OMP_NUM_THREADS=1"
    assert launcher["additional_parameters"]["requeue"] is True  # resolved values: the sbatch tests below
    assert hydra["sweep"]["dir"] == str(tmp_path)  # absolute: jobs on other nodes agree on it
    assert hydra["sweep"]["subdir"] == "${rung}"
    assert not list(tmp_path.iterdir())  # showing the config launches nothing


@pytest.mark.slow
def test_plugin_and_local_launchers_compose(capsys):
    assert hydra_config(capsys, "hydra/launcher=submitit_slurm")["launcher"]["_target_"].endswith("SlurmLauncher")
    local = hydra_config(capsys, "hydra/launcher=local")["launcher"]
    assert local["_target_"].endswith("LocalLauncher") and local["tasks_per_node"] == 1
    assert hydra_config(capsys)["launcher"]["_target_"].endswith("BasicLauncher")


def render_sbatch(tmp_path, monkeypatch, *overrides: str) -> str:
    """The sbatch script submitit writes for conf/hydra/launcher/slurm.yaml (and `overrides`),
    through the executor `--detach` uses. SLURM is not installed here: a stand-in `srun` on PATH
    lets submitit build its executor; no job is submitted."""
    from hydra import compose, initialize_config_dir
    from submitit.slurm.slurm import _make_sbatch_string

    from ladder.config import register_configs
    from ladder.hydra_app import CONF_DIR, HYDRA_VERSION
    from ladder.sweep.launchers import submitit_executor

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
        overrides = [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            f"hydra.sweep.dir={tmp_path}",
            "hydra.job.name=sweep",
            *overrides,
        ]
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    executor = submitit_executor(cfg.hydra.launcher, "slurm")
    return _make_sbatch_string(
        command="python -m submitit.core._submit x", folder=str(tmp_path), **executor._executor.parameters
    )


def test_slurm_launcher_config_renders_an_sbatch_script(tmp_path, monkeypatch):
    """submitit accepts every key of conf/hydra/launcher/slurm.yaml: requeueable, all the node's
    memory, USR2 300 s before the limit (and the job's handler on the same signal)."""
    pytest.importorskip("submitit")
    script = render_sbatch(tmp_path, monkeypatch)
    for line in (
        "--partition=gpu",
        "--gpus-per-node=8",
        "--ntasks-per-node=8",
        "--time=1440",
        "--signal=USR2@300",
        "--job-name=ladder",
        "--requeue",
        "--mem=0GB",
    ):
        assert f"#SBATCH {line}\n" in script
    assert "export OMP_NUM_THREADS=1" in script and "export SUBMITIT_PREEMPT_SIGNAL=USR2" in script


def test_slurm_signal_lead_time_and_memory_are_configurable(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    script = render_sbatch(tmp_path, monkeypatch, "hydra.launcher.signal_delay_s=600", "hydra.launcher.mem_gb=480")
    assert "#SBATCH --signal=USR1@600\n" in script and "#SBATCH --mem=480GB\n" in script
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in script and "USR2" not in script


def test_slurm_launcher_without_slurm_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    root = tmp_path / "runs"
    assert main(["sweep", "ladder=cpu", f"ladder.sweep_root={root}", "hydra/launcher=slurm"]) == 2
    assert "needs SLURM (no srun on PATH)" in capsys.readouterr().err
    assert not root.exists()
