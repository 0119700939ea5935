"""A sensor that turns new or changed checkpoint files into model partitions and runs.

The folder is ``EQUIVAR_CHECKPOINTS``; ``EQUIVAR_CHECKPOINT_MODEL`` is the
model spec the checkpoints fit (default the resource's model) and
``EQUIVAR_CHECKPOINT_NAME`` the name prefix (default the spec's name). Each
file ``*.pt``, ``*.pth`` or ``*.safetensors`` is identified by its content
hash: a new file, or a file whose bytes changed, is indexed as the model
``<prefix>@<file stem>`` (weights = the file, step = the last number in its
name, e.g. ``step_1200.pt`` -> 1200), becomes a partition and gets one run of
that partition. The run key holds the content hash, so the same bytes are
never analysed twice; a file that does not load is reported and skipped
until its bytes change.
"""

import json
import os
import re

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from equivar_core.errors import EquivarError
from equivar_core.model_index import ModelEntry
from equivar_core.models.registry import default_name, file_sha256

from .definitions_common import equivar_job, models_partitions
from .partitions import add_model
from .resources import EquivarConfig

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


def checkpoint_step(filename: str) -> int | None:
    """The training step in a checkpoint's file name: its last run of digits."""
    numbers = re.findall(r"\d+", os.path.splitext(os.path.basename(filename))[0])
    return int(numbers[-1]) if numbers else None


def new_checkpoints(folder: str, spec: str, prefix: str, known: dict[str, str]
                    ) -> tuple[list[ModelEntry], dict[str, str]]:
    """Entries for new or changed checkpoints in ``folder``; ``known`` maps path -> "size:mtime:sha"."""
    entries, state = [], dict(known)
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(CHECKPOINT_SUFFIXES) or not os.path.isfile(path):
            continue
        st = os.stat(path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        if known.get(path, "").startswith(stamp + ":"):
            continue                                   # unchanged since last look: no need to hash again
        digest = file_sha256(path)
        state[path] = f"{stamp}:{digest}"
        if known.get(path, "").endswith(":" + digest):
            continue                                   # touched but same bytes
        stem = os.path.splitext(name)[0]
        entries.append(ModelEntry(name=f"{prefix}@{stem}", model=spec, weights=os.path.abspath(path),
                                  step=checkpoint_step(name), sha256=digest))
    return entries, state


@sensor(job=equivar_job, minimum_interval_seconds=60,
        description="Index every new or changed checkpoint in $EQUIVAR_CHECKPOINTS as a model partition and run it.")
def checkpoint_sensor(context: SensorEvaluationContext, equivar: EquivarConfig):
    folder = os.environ.get("EQUIVAR_CHECKPOINTS")
    if not folder or not os.path.isdir(folder):
        return SkipReason("set EQUIVAR_CHECKPOINTS to a folder of checkpoints to watch")
    spec = os.environ.get("EQUIVAR_CHECKPOINT_MODEL") or equivar.model
    prefix = os.environ.get("EQUIVAR_CHECKPOINT_NAME") or default_name(spec)
    known = json.loads(context.cursor) if context.cursor else {}
    entries, state = new_checkpoints(folder, spec, prefix, known)
    context.update_cursor(json.dumps(state))
    requests = []
    for entry in entries:
        try:
            add_model(equivar, entry)                  # checked and indexed; the partition comes with the result
        except EquivarError as exc:
            context.log.warning(f"skipping {entry.weights}: {exc}")
            continue
        requests.append(RunRequest(run_key=f"{entry.name}:{entry.sha256[:16]}", partition_key=entry.name,
                                   tags={"equivar/checkpoint_sha256": entry.sha256}))
    if not requests:
        return SkipReason(f"no new or changed checkpoint that loads in {folder}")
    return SensorResult(run_requests=requests, dynamic_partitions_requests=[
        models_partitions.build_add_request(sorted({r.partition_key for r in requests}))])
