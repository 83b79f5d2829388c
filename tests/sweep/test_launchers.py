"""Launcher configs compose: `ladder sweep ... --cfg hydra` shows the SLURM and local settings."""

from __future__ import annotations

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
