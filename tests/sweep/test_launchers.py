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
        capsys, "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=720",
        f"ladder.sweep_root={tmp_path}",
    )
    launcher = hydra["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 720
    assert launcher["gpus_per_node"] == 8 and launcher["tasks_per_node"] == 8  # one process per GPU
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] > 0  # requeue after the signal
    assert launcher["setup"] == ["export OMP_NUM_THREADS=1"]
    assert hydra["sweep"]["dir"] == str(tmp_path)  # absolute: jobs on other nodes agree on it
    assert hydra["sweep"]["subdir"] == "${rung}"
    assert not list(tmp_path.iterdir())  # showing the config launches nothing


def test_plugin_and_local_launchers_compose(capsys):
    assert hydra_config(capsys, "hydra/launcher=submitit_slurm")["launcher"]["_target_"].endswith("SlurmLauncher")
    local = hydra_config(capsys, "hydra/launcher=local")["launcher"]
    assert local["_target_"].endswith("LocalLauncher") and local["tasks_per_node"] == 1
    assert hydra_config(capsys)["launcher"]["_target_"].endswith("BasicLauncher")


def test_slurm_launcher_config_renders_an_sbatch_script(tmp_path, monkeypatch):
    """submitit accepts every key of conf/hydra/launcher/slurm.yaml and renders the job script.

    SLURM is not installed here: a stand-in `srun` on PATH lets submitit build its executor; no
    job is submitted.
    """
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    from hydra import compose, initialize_config_dir

    from ladder.config import register_configs
    from ladder.hydra_app import CONF_DIR, HYDRA_VERSION

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
        overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}", "hydra.job.name=sweep"]
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    # The same split as hydra_submitit_launcher's SlurmLauncher.launch.
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = _make_sbatch_string(command="python -m submitit.core._submit x", folder=str(tmp_path), **executor._executor.parameters)
    for line in ("--partition=gpu", "--gpus-per-node=8", "--ntasks-per-node=8", "--time=1440", "--signal=USR2@300", "--job-name=ladder"):
        assert f"#SBATCH {line}" in script
    assert "export OMP_NUM_THREADS=1" in script


def test_slurm_launcher_without_slurm_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    root = tmp_path / "runs"
    assert main(["sweep", "ladder=cpu", f"ladder.sweep_root={root}", "hydra/launcher=slurm"]) == 2
    assert "needs SLURM (no srun on PATH)" in capsys.readouterr().err
    assert not root.exists()
