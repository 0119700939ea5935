"""Image shards as Ray tasks: the forward passes of one sweep group split over workers.

With ``workers`` > 1 each group's images are cut into consecutive shards of whole batches, one Ray task per
shard (one GPU each where the cluster has them). A task loads the model, writes its own rows of the group's
sample files and returns its partial sums; the driver adds them in shard order. Every image meets the same
batch as in one process, so the samples are identical and the statistics equal up to the order of float64
additions. Tasks must reach the results folder: a local cluster, or a filesystem the workers share.

The cluster is the one at ``RAY_ADDRESS`` (a GCS address or ``auto``) when set, else a local one started
with ``workers`` CPUs.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from equivar_core.activations import shard_views
from equivar_core.errors import EquivarError
from equivar_core.settings import RunSettings
from equivar_core.stages import sample_shard

log = logging.getLogger("equivar_core.shards")


def require_ray(workers: int) -> None:
    """Raise :class:`EquivarError` naming the extra to install when ``workers`` > 1 needs Ray and it is
    missing (found without importing it)."""
    if workers > 1 and importlib.util.find_spec("ray") is None:
        raise EquivarError(f"--workers {workers} runs image shards as Ray tasks, and Ray is not installed: "
                           "pip install -e '.[ray]' (or run with --workers 1)")


def _ray(workers: int):
    require_ray(workers)
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address and not address.startswith("http"):
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return ray


def shard_runner(settings: RunSettings, layers: list[str]):
    """``run_shards`` for :func:`equivar_core.activations.sample_activations`, or None for one process."""
    if settings.workers <= 1:
        return None

    def run(group: str, paths: dict[str, str], views):
        ray = _ray(settings.workers)
        shards = shard_views(views, settings.batch_size, settings.workers)
        task = ray.remote(num_cpus=1, num_gpus=1 if settings.resolved_device().startswith("cuda") else 0)(
            sample_shard)
        log.info("%s passes: %d shards (%s images) as Ray tasks", group, len(shards),
                 " + ".join(str(len(v)) for v in shards))
        return ray.get([task.remote(settings, layers, views, paths, group) for views in shards])

    return run
