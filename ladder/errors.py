"""The one error type for user mistakes (bad configs, tables, task files, corpora).

`ladder.cli` prints a LadderError as a single line and exits with code 2; anything else is a bug
and keeps its traceback.
"""


class LadderError(Exception):
    """A problem with what the user gave us, explained in one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwound like Ctrl-C (temporary files removed), but the command exits 128 + 15."""

    signum = 15
