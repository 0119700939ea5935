"""The only place where assets, resources and jobs are wired together."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from . import assets
from .io_manager import ParquetIOManager
from .resources import EquivarConfig

ALL_ASSETS = [*assets.TABLE_ASSETS, assets.duckdb_catalog]
equivar_job = define_asset_job("equivar", selection=AssetSelection.all(),
                               description="Materialize every table and the catalog for one model.")


def build_definitions(config: EquivarConfig | None = None) -> Definitions:
    config = config or EquivarConfig.from_env()
    return Definitions(
        assets=ALL_ASSETS,
        jobs=[equivar_job],
        resources={"equivar": config, "io_manager": ParquetIOManager(config=config)},
    )


defs = build_definitions()
