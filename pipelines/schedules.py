"""Scheduled recomputation: a cron schedule that re-materializes only what is stale.

The cron string is ``$EQUIVAR_SCHEDULE_CRON`` (default nightly at 03:00).
An asset is stale when its fingerprint (code version, settings, weights and
image files, upstream fingerprints; see :mod:`pipelines.fingerprints`)
differs from the one of its last materialization, or its files are gone.
"""

import os

from dagster import AssetKey, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from .definitions_common import equivar_job
from .fingerprints import changed_assets
from .resources import CODE_VERSION, EquivarConfig

DEFAULT_CRON = "0 3 * * *"


def stale_request(config: EquivarConfig) -> RunRequest | SkipReason:
    changed, _ = changed_assets(config.settings(), CODE_VERSION)
    if not changed:
        return SkipReason("nothing is stale")
    return RunRequest(asset_selection=[AssetKey(k) for k in changed] + [AssetKey("report"), AssetKey("duckdb_catalog")],
                      tags={"equivar/stale": ",".join(sorted(changed))})


@schedule(job=equivar_job, cron_schedule=os.environ.get("EQUIVAR_SCHEDULE_CRON", DEFAULT_CRON),
          description="Re-materialize the stale assets of the configured model.")
def nightly_recompute(context: ScheduleEvaluationContext, equivar: EquivarConfig):
    return stale_request(equivar)
