"""A sensor that turns new or changed checkpoint files into runs.

Settings come from the environment of the code location:
``EQUIVAR_CHECKPOINTS`` (the folder to watch), ``EQUIVAR_CHECKPOINT_MODEL``
(the model spec the checkpoints fit; default the resource's model) and
``EQUIVAR_CHECKPOINT_NAME`` (the name prefix; default the spec's name). Each
file ``*.pt``, ``*.pth`` or ``*.safetensors`` is identified by its content
hash: a new file, or a file whose bytes changed, gives one run whose tags
point the ``equivar`` resource at it (``equivar/weights``, ``equivar/name`` =
``<prefix>@<file stem>``, ``equivar/step`` = the last number in the file
name, e.g. ``step_1200.pt`` -> 1200). The run key is the content hash, so a
file is never analysed twice.
"""

import json
import os
import re

from dagster import RunRequest, SensorEvaluationContext, SkipReason, sensor

from equivar_core.models.registry import default_name, file_sha256

from .definitions_common import equivar_job

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


def checkpoint_step(filename: str) -> int | None:
    """The training step in a checkpoint's file name: its last run of digits."""
    numbers = re.findall(r"\d+", os.path.splitext(os.path.basename(filename))[0])
    return int(numbers[-1]) if numbers else None


def checkpoint_requests(folder: str, spec: str, prefix: str, known: dict[str, str]) -> tuple[list[RunRequest],
                                                                                                dict[str, str]]:
    """Run requests for new or changed checkpoints in ``folder``; ``known`` maps path -> "size:mtime:sha"."""
    requests, state = [], dict(known)
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
        step = checkpoint_step(name)
        tags = {"equivar/model": spec, "equivar/weights": path, "equivar/name": f"{prefix}@{stem}",
                "equivar/checkpoint_sha256": digest}
        if step is not None:
            tags["equivar/step"] = str(step)
        requests.append(RunRequest(run_key=f"{prefix}@{stem}:{digest[:16]}", tags=tags))
    return requests, state


@sensor(job=equivar_job, minimum_interval_seconds=60,
        description="Analyse every new or changed checkpoint in $EQUIVAR_CHECKPOINTS.")
def checkpoint_sensor(context: SensorEvaluationContext):
    folder = os.environ.get("EQUIVAR_CHECKPOINTS")
    if not folder or not os.path.isdir(folder):
        return SkipReason("set EQUIVAR_CHECKPOINTS to a folder of checkpoints to watch")
    spec = os.environ.get("EQUIVAR_CHECKPOINT_MODEL") or os.environ.get("EQUIVAR_MODEL", "efficientnet_lite0")
    prefix = os.environ.get("EQUIVAR_CHECKPOINT_NAME") or default_name(spec)
    known = json.loads(context.cursor) if context.cursor else {}
    requests, state = checkpoint_requests(folder, spec, prefix, known)
    context.update_cursor(json.dumps(state))
    return requests or SkipReason(f"no new or changed checkpoint in {folder}")
