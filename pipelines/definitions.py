"""The only place where assets, resources and jobs are wired together."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

from . import assets
from .checks import ALL_CHECKS
from .definitions_common import equivar_job
from .schedules import nightly_recompute
from .sensors import checkpoint_sensor
from .io_manager import ParquetIOManager
from .resources import EquivarConfig

# data versions on Output are "beta" in Dagster 1.13; they are the documented way to report them
warnings.filterwarnings("ignore", category=BetaWarning)

ALL_ASSETS = [*assets.TABLE_ASSETS, assets.report, assets.duckdb_catalog]


def build_definitions(config: EquivarConfig | None = None) -> Definitions:
    config = config or EquivarConfig.from_env()
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[equivar_job],
        sensors=[checkpoint_sensor],
        schedules=[nightly_recompute],
        resources={"equivar": config, "io_manager": ParquetIOManager(config=config)},
    )


defs = build_definitions()
