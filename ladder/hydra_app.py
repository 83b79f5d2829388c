"""Running ladder's Hydra apps (train, plan, sweep, data, eval) from the `ladder` command.

Configs live in `conf/` beside the package, validated against the schemas of `ladder.config`.
User mistakes in overrides are turned into a LadderError (one line) by composing the config once
before Hydra runs the app; the app itself is a real `hydra.main`, so `--multirun`, `--cfg job`,
`hydra/launcher=...` and every other Hydra flag work as documented by Hydra.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ladder.config import check_values, register_configs
from ladder.errors import LadderError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HYDRA_VERSION = "1.3"  # also: no chdir into the output directory


def describe_config_error(error: Exception) -> str:
    """One line for a composition error: where (file and line, or the config key) and what.

    Hydra wraps OmegaConf's errors: the useful part (the message and its `full_key`) is either the
    cause or the lines after "... raised while composing config:", which is all the first line says.
    """
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark
        where = f"{mark.name}:{mark.line + 1}: " if mark is not None else ""
        return f"{where}YAML syntax: {error.problem or error.context}"
    inner = error
    while inner.__cause__ is not None:
        inner = inner.__cause__
    lines = [line.strip() for line in str(inner).strip().splitlines()]
    if not lines:
        return type(error).__name__
    context = ""
    if lines[0].endswith("raised while composing config:") and len(lines) > 1:
        context, lines = lines[0].split(":", 1)[0] + ": ", lines[1:]
    key = getattr(inner, "full_key", None) or next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None
    )
    return f"{context}{key}: {lines[0]}" if key else f"{context}{lines[0]}"


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides and check its values; a mistake is a LadderError."""
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
            cfg = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException, ValueError, yaml.YAMLError) as error:
        message = describe_config_error(error)
        if "Could not find 'data/" in message:  # data=mine: a config file, not a prepared corpus
            message += " (a prepared corpus is named with data.name=<name>)"
        raise LadderError(f"bad config: {message}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise LadderError(f"bad config: {missing[0]} has no value (it is required)")
    check_values(cfg)
    return cfg


def split_show_config(argv: list[str], command: str) -> tuple[list[str], bool]:
    """(argv without `--cfg job`, whether it was there) for the commands that are not Hydra apps
    (`plan`, `eval`) but print their resolved config as Hydra's apps do."""
    show = "--cfg" in argv or "-c" in argv
    if show:
        at = argv.index("--cfg") if "--cfg" in argv else argv.index("-c")
        if argv[at + 1 : at + 2] != ["job"]:
            raise LadderError(f"ladder {command} shows its config with `--cfg job` (it runs no Hydra job)")
        argv = argv[:at] + argv[at + 2 :]
    own_flags = ("-o", "--output", "--overwrite", "-h", "--help")  # `ladder eval`'s
    flag = next(
        (arg for arg in argv if arg.startswith("-") and arg not in own_flags and not arg.startswith("--output=")), None
    )
    if flag is not None:
        raise LadderError(
            f"ladder {command} takes key=value overrides and `--cfg job`, not the Hydra flag {flag} "
            "(it runs no Hydra job)"
        )
    return argv, show


def run_app(
    name: str, task: Callable[[DictConfig], Any], argv: list[str], validate: Callable[[DictConfig], Any] | None = None
) -> Any:
    """Run `task(cfg)` as the Hydra app `ladder <name>` with command-line `argv`.

    `validate(cfg)` runs on the composed config before Hydra starts (and creates its output
    directory), so that a config the task would refuse leaves nothing behind; a refusal the task
    finds later (it needs the corpus or the tasks) removes what Hydra wrote (`_OutputDir`).
    Returns what the (last) task returned. A LadderError raised by the task propagates.
    """
    if not any(arg.lstrip("+~").startswith("hydra.job.name=") for arg in argv):
        argv = [*argv, f"hydra.job.name={name}"]  # `--help`'s title and the log's name: <output dir>/<name>.log
    overrides = [arg for arg in argv if not arg.startswith("-") and "=" in arg]
    # A multirun's overrides hold sweeps (a=1,2) that only Hydra's sweeper expands: Hydra checks them.
    skip_check = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--multirun", "-m")
    output: _OutputDir | None = None
    if not any(arg in skip_check for arg in argv):
        cfg = compose_config([o for o in overrides if not o.lstrip("+~").startswith("hydra")])
        if validate is not None:
            validate(cfg)
        output = _OutputDir.before_run(overrides, name)
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
        if output is not None:
            output.remove_hydra_files_if_nothing_else()
        raise outcome["error"]
    return outcome.get("result")


class _OutputDir:
    """Hydra's output directory of a run (`hydra.run.dir`), as it was before Hydra started: an app
    that refuses its config after Hydra has written `.hydra/` and `<job>.log` there leaves neither
    (nor the folders, if this start made them), unless the app itself wrote something beside them;
    in a directory that held them already (an earlier run's), they are put back as they were."""

    def __init__(self, path: Path, existed: set[str] | None, own: set[str]):
        self.path, self.existed, self.own = path, existed, own
        self.others = self._others()  # the app's own entries as they are now: changed ones mean it ran
        # Hydra's files of an earlier start, byte for byte (a few kB): `.hydra/*.yaml` and the log.
        self.saved = {
            file: file.read_bytes()
            for name in own & (existed or set())
            for file in ([self.path / name] if (self.path / name).is_file() else sorted((self.path / name).glob("*")))
            if file.is_file()
        }
        # The outermost folder of `path` this start creates (runs/ of runs/single/x, if new).
        self.created = next((p for p in (*reversed(path.absolute().parents), path.absolute()) if not p.exists()), None)

    @classmethod
    def before_run(cls, overrides: list[str], name: str) -> _OutputDir | None:
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
                cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
            path = Path(str(cfg.hydra.run.dir))
            subdir, job = cfg.hydra.output_subdir, str(cfg.hydra.job.name)
        except Exception:  # a directory named by Hydra's runtime state (${hydra:...}): not known yet
            return None
        existed = {entry.name for entry in path.iterdir()} if path.is_dir() else None
        return cls(path, existed, {str(subdir), f"{job}.log"} if subdir is not None else {f"{job}.log"})

    def _others(self) -> dict[str, tuple[int, int]]:
        """(modification time, size) of each entry that is not Hydra's."""
        if not self.path.is_dir():
            return {}
        return {
            entry.name: (entry.stat().st_mtime_ns, entry.stat().st_size)
            for entry in self.path.iterdir()
            if entry.name not in self.own
        }

    def remove_hydra_files_if_nothing_else(self) -> None:
        if not self.path.is_dir() or self._others() != self.others:
            return  # the app wrote its own files (a run that started and failed): they stay with the log
        new = {entry.name for entry in self.path.iterdir()} - (self.existed or set())
        # Every process of a torchrun start meets the same refusal and cleans up: tolerate the others.
        for entry in new:
            target = self.path / entry
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        for file, content in self.saved.items():
            file.write_bytes(content)
        if self.created is None:
            return
        folder = self.path.absolute()
        with contextlib.suppress(OSError):
            while not any(folder.iterdir()):  # the folders this start made, up to the outermost, if empty
                folder.rmdir()
                if folder == self.created:
                    break
                folder = folder.parent
