"""The command line as the tests call it: ``equivar`` in a process of its own (an end-to-end case), or
:func:`in_process` in the test's own process (no interpreter start, no imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NamedTuple

from tests.conftest import ROOT


def equivar(*args, cwd=None, **environ: str) -> subprocess.CompletedProcess:
    """``equivar ARGS`` as a process of its own (with the variables ``environ`` set in its environment)."""
    env = dict(os.environ, PYTHONPATH=ROOT, **environ)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=900)


class Ran(NamedTuple):
    """What a command left: as :func:`subprocess.run` returns it, for a command run in this process."""
    returncode: int
    stdout: str
    stderr: str


def in_process(capsys, *args: str) -> Ran:
    """``equivar ARGS`` in this process: exit code and output as a subprocess gives them; argparse's errors
    (SystemExit) included."""
    from pipelines.cli import main

    capsys.readouterr()                         # what came before is not this command's
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)
