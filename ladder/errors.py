"""The one error type for user mistakes (bad configs, tables, task files, corpora).

`ladder.cli` prints a LadderError as a single line and exits with code 2; anything else is a bug
and keeps its traceback. `ArgumentParser` turns a sub-command's argument mistakes into one.
"""

import argparse


class LadderError(Exception):
    """A problem with what the user gave us, explained in one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwound like Ctrl-C (temporary files removed), but the command exits 128 + 15."""

    signum = 15


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports mistakes as a LadderError (one line, exit 2 through ladder.cli)."""

    def error(self, message: str):
        raise LadderError(f"{message} (see `{self.prog} --help`)")
