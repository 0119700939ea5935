"""What several commands share: the results folder check and the Dagster instance."""

from __future__ import annotations

import os
import tempfile

from dagster import DagsterInstance

from equivar_core.errors import EquivarError


def _instance():
    """The Dagster instance of $DAGSTER_HOME (runs and partitions then show in the UI), else a throwaway one."""
    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def _check_writable(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise EquivarError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
