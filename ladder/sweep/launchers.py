"""What ladder adds to hydra-submitit-launcher's executors: a GPU share per local rung, and the
submitit executor of a launcher config (for `--detach` and for rendering the sbatch script).

GPU shares: `hydra/launcher=local` runs every rung at once on this machine, and submitit gives each
job the same CUDA_VISIBLE_DEVICES (none unless gpus_per_node is set, then GPUs 0..k-1 for every
job). Instead, `ladder sweep` records the GPUs visible to it (LADDER_VISIBLE_GPUS, inherited by
the jobs) and the `i`-th rung's job sets its own CUDA_VISIBLE_DEVICES to the next
`ladder.gpus_per_rung` of them, round-robin, before anything touches CUDA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

VISIBLE_GPUS_ENV = "LADDER_VISIBLE_GPUS"


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(index) for index, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def rung_gpus(index: int, per_rung: int, visible: Sequence[str]) -> list[str]:
    """The GPUs of the `index`-th rung: the next `per_rung` of `visible`, round-robin."""
    if not visible or per_rung <= 0:
        return []
    return [visible[(index * per_rung + k) % len(visible)] for k in range(per_rung)]


def record_visible_gpus() -> list[str]:
    """In the launching process: remember its visible GPUs for the jobs it starts."""
    visible = visible_gpus()
    os.environ[VISIBLE_GPUS_ENV] = ",".join(visible)
    return visible


def take_rung_gpus(index: int, per_rung: int) -> str | None:
    """In a local job: CUDA_VISIBLE_DEVICES = this rung's share of the launcher's GPUs; returns
    it (None outside a local sweep, where the launcher or scheduler chose the GPUs)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or VISIBLE_GPUS_ENV not in os.environ:
        return None
    visible = [gpu for gpu in os.environ[VISIBLE_GPUS_ENV].split(",") if gpu]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(rung_gpus(index, per_rung, visible))
    return os.environ["CUDA_VISIBLE_DEVICES"]


def submitit_executor(launcher_cfg: Any, cluster: str):
    """A submitit executor set up as hydra-submitit-launcher sets up its own from `launcher_cfg`
    (`hydra.launcher`): cluster 'local' or 'slurm'."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = (
        OmegaConf.to_container(launcher_cfg, resolve=True) if OmegaConf.is_config(launcher_cfg) else dict(launcher_cfg)
    )
    params.pop("_target_", None)
    folder = params.pop("submitit_folder")
    max_num_timeout = params.pop("max_num_timeout", None)
    init = {f"{cluster}_max_num_timeout": max_num_timeout} if max_num_timeout is not None else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in base else f"{cluster}_{key}": value for key, value in params.items()})
    return executor
