"""The models a results folder knows: name -> spec, weights file and training step.

Every analysed model has a name, the value of the ``model`` column of every
table (a checkpoint of a training run is a model of its own, e.g.
``smallcnn@step_200``). The name alone must say what to load, so that a
name typed into the Dagster UI, a checkpoint found by the sensor and a name
given on the command line all lead to the same network. The index holds one
small JSON file per name under ``<out>/_models/``, written atomically.

A name that is not in the index still resolves when it is a built-in model
(``efficientnet_lite0``), the default name of an untrained control
(``untrained_efficientnet_lite0``, ``untrained_efficientnet_lite0_seed2``) or a
``package.module:callable`` spec.

Entries are data, and anyone who can write the folder can write one, so an entry
is signed by whoever registers it (:mod:`equivar_core.signing`: an HMAC with a
per-user key kept outside the folder) and an entry whose spec is
``package.module:callable`` (code that loading imports and calls) is only
returned when its signature matches this user's key; built-in and ``timm:``
entries name no code and are returned either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from . import signing
from .errors import EquivarError
from .layout import safe_value
from .models.registry import BUILTINS, is_callable_spec, untrained_spec_of_name
from .storage import atomic_file

INDEX_DIR = "_models"


@dataclass(frozen=True)
class ModelEntry:
    """What the name ``name`` stands for."""

    name: str
    model: str                       # the spec: built-in name, untrained:NAME, timm:NAME or module:callable
    weights: str | None = None       # a state-dict file; None: the built-in or callable's own weights
    step: int | None = None          # training step of the checkpoint, when known
    sha256: str | None = None        # content hash of ``weights`` when it was registered
    layers: tuple[str, ...] = ()     # layers to analyse; empty: the run's layers, else the model's preset

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers or ()))


def _path(out: str, name: str) -> str:
    try:
        return os.path.join(out, INDEX_DIR, safe_value(name) + ".json")
    except ValueError as exc:                         # empty, or too long to be a file name
        raise EquivarError(f"bad model name: {exc}") from None


#: the key of an entry file that holds its signature (not a field of :class:`ModelEntry`)
SIGNATURE = "signature"


def _payload(entry: ModelEntry) -> bytes:
    """What a signature covers: every field of the entry, as canonical JSON."""
    return json.dumps(dataclasses.asdict(entry), sort_keys=True, separators=(",", ":")).encode()


def register(out: str, entry: ModelEntry) -> str:
    """Write (or replace) ``entry`` in the index of ``out``, signed with this user's key; returns the file."""
    path = _path(out, entry.name)
    record = dataclasses.asdict(entry)
    record[SIGNATURE] = signing.sign(_payload(entry), signing.signing_key())
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return path


def _read(path: str) -> tuple[ModelEntry, str | None]:
    with open(path) as f:
        record = json.load(f)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    signature = record.pop(SIGNATURE, None)
    return ModelEntry(**record), signature


def trusted(entry: ModelEntry, signature: str | None) -> bool:
    """Whether an entry may be loaded: it names no code, or this user's key signed it."""
    if not is_callable_spec(entry.model):
        return True
    return signing.verify(_payload(entry), signature, signing.signing_key(create=False))


def lookup(out: str, name: str) -> ModelEntry | None:
    """The registered entry for ``name``, or None. An entry naming code (``module:callable``) that this
    user's key did not sign is refused with one line (:class:`EquivarError`), never imported."""
    path = _path(out, name)
    try:
        entry, signature = _read(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise EquivarError(f"model index entry for {name!r} in {out} is unreadable: {exc}") from None
    if entry.name != name:
        return None                                   # two names that share a file name: not this one
    try:
        ok = trusted(entry, signature)
        how = "has no signature" if signature is None else "has a signature this user's key did not make"
    except EquivarError as exc:                       # no key here, or a key others can read
        ok, how = False, f"its signature cannot be checked ({exc})"
    if not ok:
        raise EquivarError(
            f"refusing model {name!r}: its index entry {path} names code ({entry.model}) and {how}; if you trust "
            f"it, register it again with `equivar models add {name} --model {entry.model}"
            f"{' --weights ' + entry.weights if entry.weights else ''}` (key: {signing.key_path()})")
    return entry


def registered(out: str) -> list[ModelEntry]:
    """Every entry in the index of ``out``, by name (signed or not: see :func:`registered_trust`)."""
    return [entry for entry, _ in _entries(out)]


def registered_trust(out: str) -> list[tuple[ModelEntry, bool]]:
    """Every entry in the index of ``out`` and whether it may be loaded (:func:`trusted`), by name."""
    found = []
    for entry, signature in _entries(out):
        try:
            ok = trusted(entry, signature)
        except EquivarError:                          # no key, or a key others can read: no code entry is trusted
            ok = False
        found.append((entry, ok))
    return found


def _entries(out: str) -> list[tuple[ModelEntry, str | None]]:
    folder = os.path.join(out, INDEX_DIR)
    if not os.path.isdir(folder):
        return []
    entries = []
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".json") and not fname.startswith("."):
            try:
                entries.append(_read(os.path.join(folder, fname)))
            except (OSError, ValueError, TypeError):
                continue
    return sorted(entries, key=lambda e: e[0].name)


def resolve(out: str, name: str) -> ModelEntry:
    """What to load for the model called ``name``: the index first, then built-ins and callable specs."""
    entry = lookup(out, name)
    if entry is not None:
        return entry
    if name in BUILTINS or ":" in name:
        return ModelEntry(name=name, model=name)
    spec = untrained_spec_of_name(name)
    if spec is not None:
        return ModelEntry(name=name, model=spec)
    known = ", ".join(e.name for e in registered(out)) or "none"
    raise EquivarError(
        f"unknown model {name!r}: not a built-in ({', '.join(BUILTINS)}) or its untrained_ control, not a "
        f"package.module:callable spec and "
        f"not registered in {out} (registered: {known}); add it with `equivar models add {name} --model SPEC "
        f"[--weights PATH]`")
