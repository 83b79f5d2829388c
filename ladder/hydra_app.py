"""Running ladder's Hydra apps (train, plan, sweep, data, eval) from the `ladder` command.

Configs live in `conf/` beside the package, validated against the schemas of `ladder.config`.
User mistakes in overrides are turned into a LadderError (one line) by composing the config once
before Hydra runs the app; the app itself is a real `hydra.main`, so `--multirun`, `--cfg job`,
`hydra/launcher=...` and every other Hydra flag work as documented by Hydra.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ladder.config import register_configs
from ladder.errors import LadderError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HYDRA_VERSION = "1.3"  # also: no chdir into the output directory


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; a bad override is a LadderError."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
            cfg = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise LadderError(f"bad config: {_first_line(error)}") from None


def run_app(
    name: str, task: Callable[[DictConfig], Any], argv: list[str], validate: Callable[[DictConfig], Any] | None = None
) -> Any:
    """Run `task(cfg)` as the Hydra app `ladder <name>` with command-line `argv`.

    `validate(cfg)` runs on the composed config before Hydra starts (and creates its output
    directory), so that a config the task would refuse leaves nothing behind.
    Returns what the (last) task returned. A LadderError raised by the task propagates.
    """
    overrides = [arg for arg in argv if not arg.startswith("-") and "=" in arg]
    # A multirun's overrides hold sweeps (a=1,2) that only Hydra's sweeper expands: Hydra checks them.
    skip_check = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--multirun", "-m")
    if not any(arg in skip_check for arg in argv):
        cfg = compose_config([o for o in overrides if not o.lstrip("+~").startswith("hydra")])
        if validate is not None:
            validate(cfg)
    register_configs()
    outcome: dict[str, Any] = {}

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=HYDRA_VERSION)
    def app(cfg: DictConfig) -> Any:
        try:
            outcome["result"] = task(cfg)
        except LadderError as error:
            outcome["error"] = error
        return outcome.get("result")

    saved_argv = sys.argv
    sys.argv = [f"ladder {name}", *argv]
    try:
        app()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise LadderError(f"ladder {name} failed (Hydra exit code {exit_.code})") from None
    finally:
        sys.argv = saved_argv
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
