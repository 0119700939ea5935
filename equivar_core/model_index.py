"""The models a results folder knows: name -> spec, weights file and training step.

Every analysed model has a name, the value of the ``model`` column of every
table (a checkpoint of a training run is a model of its own, e.g.
``smallcnn@step_200``). The name alone must say what to load, so that a
name typed into the Dagster UI, a checkpoint found by the sensor and a name
given on the command line all lead to the same network. The index holds one
small JSON file per name under ``<out>/_models/``, written atomically.

A name that is not in the index still resolves when it is a built-in model
(``efficientnet_lite0``) or a ``package.module:callable`` spec.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from .errors import EquivarError
from .layout import safe_value
from .models.registry import BUILTINS
from .storage import atomic_file

INDEX_DIR = "_models"


@dataclass(frozen=True)
class ModelEntry:
    """What the name ``name`` stands for."""

    name: str
    model: str                       # built-in name or package.module:callable
    weights: str | None = None       # a state-dict file; None: the built-in or callable's own weights
    step: int | None = None          # training step of the checkpoint, when known
    sha256: str | None = None        # content hash of ``weights`` when it was registered
    layers: tuple[str, ...] = ()     # layers to analyse; empty: the run's layers, else the model's preset

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers or ()))


def _path(out: str, name: str) -> str:
    return os.path.join(out, INDEX_DIR, safe_value(name) + ".json")


def register(out: str, entry: ModelEntry) -> str:
    """Write (or replace) ``entry`` in the index of ``out``; returns the file."""
    path = _path(out, entry.name)
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(dataclasses.asdict(entry), f, indent=1, sort_keys=True)
    return path


def lookup(out: str, name: str) -> ModelEntry | None:
    """The registered entry for ``name``, or None."""
    try:
        with open(_path(out, name)) as f:
            entry = ModelEntry(**json.load(f))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise EquivarError(f"model index entry for {name!r} in {out} is unreadable: {exc}") from None
    return entry if entry.name == name else None      # two names that share a file name: not this one


def registered(out: str) -> list[ModelEntry]:
    """Every entry in the index of ``out``, by name."""
    folder = os.path.join(out, INDEX_DIR)
    if not os.path.isdir(folder):
        return []
    entries = []
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".json") and not fname.startswith("."):
            try:
                with open(os.path.join(folder, fname)) as f:
                    entries.append(ModelEntry(**json.load(f)))
            except (OSError, ValueError, TypeError):
                continue
    return sorted(entries, key=lambda e: e.name)


def resolve(out: str, name: str) -> ModelEntry:
    """What to load for the model called ``name``: the index first, then built-ins and callable specs."""
    entry = lookup(out, name)
    if entry is not None:
        return entry
    if name in BUILTINS or ":" in name:
        return ModelEntry(name=name, model=name)
    known = ", ".join(e.name for e in registered(out)) or "none"
    raise EquivarError(
        f"unknown model {name!r}: not a built-in ({', '.join(BUILTINS)}), not a package.module:callable spec and "
        f"not registered in {out} (registered: {known}); add it with `equivar models add {name} --model SPEC "
        f"[--weights PATH]`")
