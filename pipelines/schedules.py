"""Scheduled recomputation: a cron schedule that re-materializes only what is stale, model by model.

The cron string is ``$EQUIVAR_SCHEDULE_CRON`` (default nightly at 03:00).
An asset partition is stale when its fingerprint (code version, settings,
weights and image files, upstream fingerprints; see
:mod:`pipelines.fingerprints`) differs from the one of its last
materialization, or its files are gone. Each model partition with stale
assets gets one run of just those assets.
"""

import os

from dagster import RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from equivar_core.errors import EquivarError

from .definitions_common import equivar_job, models_partitions
from .assets import DECLARED, SIBLINGS
from .fingerprints import changed_assets, run_selection
from .resources import EquivarConfig

DEFAULT_CRON = "0 3 * * *"


def stale_requests(config: EquivarConfig, partitions: list[str]) -> list[RunRequest]:
    """One request per model partition with stale assets (partitions that no longer load are left alone)."""
    requests = []
    for key in partitions:
        try:
            changed, _ = changed_assets(config.settings(key), DECLARED)
        except EquivarError:
            continue
        if changed:
            requests.append(RunRequest(partition_key=key, asset_selection=run_selection(changed, SIBLINGS),
                                       tags={"equivar/stale": ",".join(sorted(changed))}))
    return requests


@schedule(job=equivar_job, cron_schedule=os.environ.get("EQUIVAR_SCHEDULE_CRON", DEFAULT_CRON),
          description="Re-materialize the stale assets of every model partition.")
def nightly_recompute(context: ScheduleEvaluationContext, equivar: EquivarConfig):
    partitions = context.instance.get_dynamic_partitions(models_partitions.name)
    return stale_requests(equivar, partitions) or SkipReason(f"nothing is stale in {len(partitions)} model(s)")
