"""Run the CLI with a full disk at one kind of write: ``python -m tests.enospc PATTERN ARGS...``.

The first write under ``--out`` whose file name contains ``PATTERN`` fails with ENOSPC, as a full disk fails
it: a samples array when its blocks are reserved (``posix_fallocate``), any other file when its complete
temporary copy is committed (the rename of :func:`equivar_core.storage.atomic_file` and of the catalog).
Every later write succeeds, so the run is left to fail or recover the way it would on a real disk.
"""

from __future__ import annotations

import errno
import os
import sys

from pipelines import cli


def main(pattern: str, argv: list[str]) -> int:
    out = os.path.abspath(argv[argv.index("--out") + 1])
    state = {"failed": False}
    replace, fallocate = os.replace, os.posix_fallocate

    def full(name: str) -> bool:
        hit = not state["failed"] and os.path.abspath(name).startswith(out) and pattern in os.path.basename(name)
        state["failed"] |= hit
        return hit

    def failing_replace(src, dst, **kw):
        if full(str(dst)):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, **kw)

    def failing_fallocate(fd, offset, length):
        if full(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fallocate(fd, offset, length)

    os.replace, os.posix_fallocate = failing_replace, failing_fallocate
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
