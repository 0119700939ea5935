"""One run per model and results folder at a time.

A run of model ``m`` holds an exclusive ``flock`` on ``<out>/_locks/<m>.lock`` (:attr:`Layout.run_lock`) for
as long as it writes, and keeps its pid, host and start time in the file. A second run of the same model
in the same folder is refused at once with one line naming the first (:class:`RunLocked`). The kernel
releases the lock when its holder exits, however it exits (``kill -9`` included), so a lock is never stale:
a lock file whose holder died is simply taken by the next run. While a run holds its lock no other run
writes that model's files, so it may remove the temporary files killed runs left
(:func:`equivar_core.storage.remove_temporaries`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import EquivarError

log = logging.getLogger(__name__)


class RunLocked(EquivarError):
    """Another run of the same model is writing to the same results folder."""

    exit_code = 75                     # EX_TEMPFAIL: try again later


def holder(path: str) -> str:
    """What the lock file says about the run that holds it (``pid N on HOST since TIME``), or ``""``."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@contextmanager
def run_lock(path: str, what: str) -> Iterator[bool]:
    """Hold the run lock ``path`` for the block; raise :class:`RunLocked` (naming the holder) when another
    process holds it. Yields True, or False on a file system without ``flock`` (then runs are not
    serialized, and nothing that relies on the lock, such as removing temporary files, should be done)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            first = holder(path) or "a process that has not yet written its pid"
            raise RunLocked(f"another run of {what} is in progress ({first}); wait for it to finish, or "
                            f"use another --out (lock: {path})") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("cannot lock %s (%s): concurrent runs of %s are not detected", path, exc.strerror, what)
            locked = False
        if locked:
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        try:
            yield locked
        finally:
            if locked:
                os.ftruncate(fd, 0)    # the pid of a finished run would mislead a reader
    finally:
        os.close(fd)                   # releases the flock
