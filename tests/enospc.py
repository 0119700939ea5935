"""Run the CLI with a full disk at one kind of write: ``python -m tests.enospc PATTERN ARGS...``.

From the first write under ``--out`` whose file name contains ``PATTERN`` on, the disk is full: that write
and every later one under ``--out`` fail with ENOSPC, as a full disk fails them: a samples array when its
blocks are reserved (``posix_fallocate``), any other file when its complete temporary copy is committed (the
rename of :func:`equivar_core.storage.atomic_file` and of the catalog). Retries meet the same full disk.

:func:`full_disk` does the same inside the calling process (the tests fail each kind of write in-process and
keep one run of this module as the end-to-end case).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

from pipelines import cli


@contextlib.contextmanager
def full_disk(out: str, pattern: str):
    """While inside: the disk under ``out`` is full from the first write whose file name contains ``pattern``
    on. Yields a dict whose ``"failed"`` says whether that write came."""
    out = os.path.abspath(out)
    state = {"failed": False}
    replace, fallocate = os.replace, os.posix_fallocate

    def full(name: str) -> bool:
        inside = os.path.abspath(name).startswith(out)
        state["failed"] |= inside and pattern in os.path.basename(name)
        return inside and state["failed"]

    def failing_replace(src, dst, **kw):
        if full(str(dst)):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, **kw)

    def failing_fallocate(fd, offset, length):
        if full(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fallocate(fd, offset, length)

    os.replace, os.posix_fallocate = failing_replace, failing_fallocate
    try:
        yield state
    finally:
        os.replace, os.posix_fallocate = replace, fallocate


def main(pattern: str, argv: list[str]) -> int:
    with full_disk(argv[argv.index("--out") + 1], pattern):
        return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
