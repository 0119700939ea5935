"""The only place where assets, resources and jobs are wired together."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

from . import assets
from .checks import ALL_CHECKS
from .definitions_common import PER_MODEL, compare_job, equivar_job
from .io_manager import ParquetIOManager
from .partitions import add_model_job, registered_models
from .resources import EquivarConfig
from .schedules import nightly_recompute
from .sensors import checkpoint_sensor

# data versions on Output are "beta" in Dagster 1.13; they are the documented way to report them
warnings.filterwarnings("ignore", category=BetaWarning)

ALL_ASSETS = [*assets.TABLE_ASSETS, assets.report, assets.duckdb_catalog, assets.family_matches,
              assets.family_emergence]


def _ray_job():
    """The same job with each step a Ray job on the cluster at $RAY_ADDRESS (needs dagster-ray[executor])."""
    try:
        from dagster_ray import ray_executor
    except ImportError:
        return None
    from dagster import define_asset_job

    env = ["EQUIVAR_MODEL", "EQUIVAR_WEIGHTS", "EQUIVAR_LAYERS", "EQUIVAR_IMAGES", "EQUIVAR_N_IMAGES", "EQUIVAR_HOME",
           "PYTHONPATH"]
    return define_asset_job("equivar_ray", selection=PER_MODEL,
                            description=("Every asset of one model, each step placed as a Ray task on the cluster "
                                         "at $RAY_ADDRESS with its CPU/GPU request."),
                            executor_def=ray_executor.configured({"ray": {"env_vars": env}}))


def build_definitions(config: EquivarConfig | None = None) -> Definitions:
    config = config or EquivarConfig.from_env()
    ray_job = _ray_job()
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[equivar_job, compare_job, add_model_job] + ([ray_job] if ray_job is not None else []),
        sensors=[checkpoint_sensor, registered_models],
        schedules=[nightly_recompute],
        resources={"equivar": config, "io_manager": ParquetIOManager(config=config)},
    )


defs = build_definitions()
