"""Exclusive locks on a file, in one of three modes (`train.lock`).

- flock: `flock(2)` on the file. The kernel releases it when the process dies, however it dies.
  Some network filesystems do not support it (NFS mounted with `nolock`, Lustre without
  `-o flock`): the call fails with ENOLCK, EOPNOTSUPP or ENOSYS, which is reported as such (not
  as a lock held by someone else).
- file: a lock file `<path>.held` created with O_EXCL (atomic on every POSIX filesystem, NFS v3+
  included) holding the owner's host and process id, removed when the block ends. A process that dies
  without removing it (SIGKILL) leaves it behind: on the same host a dead owner's file is taken
  over; from another host it must be removed by hand (the message names it).
- none: no lock (a second trainer of the same run directory is not refused).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ladder.errors import LadderError

HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class LockHeld(LadderError):
    """Another process holds the lock."""


def flock_unsupported(path: Path, error: OSError) -> LadderError:
    return LadderError(
        f"file locks (flock) are not supported on the filesystem of {path} ({os.strerror(error.errno or 0)}): "
        "set train.lock=file (a lock file; see docs/sweep.md) or train.lock=none (no protection against two trainers)"
    )


@contextlib.contextmanager
def exclusive_lock(path: Path, mode: str = "flock") -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block, without waiting: LockHeld if another
    process holds it, a LadderError if `mode` cannot work here."""
    if mode == "none":
        yield
    elif mode == "flock":
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in HELD:
                    raise LockHeld(f"{path} is locked by another process") from None
                raise flock_unsupported(path, error) from None
            yield
    elif mode == "file":
        held = path.with_name(path.name + ".held")
        _create_lock_file(held)
        try:
            yield
        finally:
            held.unlink(missing_ok=True)
    else:
        raise LadderError(f"unknown lock mode {mode!r} (flock, file or none)")


def _create_lock_file(path: Path) -> None:
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner.get("host") == socket.gethostname() and not _alive(owner.get("pid")):
                path.unlink(missing_ok=True)  # its process died without removing it: take it over
                continue
            who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
            raise LockHeld(f"{path} is held by {who} (if that process is gone, remove {path})") from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(record)
        return
    raise LockHeld(f"{path} is being taken by another process")


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
