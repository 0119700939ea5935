"""What each asset's result depends on, as a hash: skip what has not changed.

An asset's fingerprint hashes its code version, the settings it reads and
the fingerprints of the assets upstream of it; the weights (SHA-256) and the
image source (paths, sizes, modification times) enter at the roots. Every
result is a deterministic function of these, so equal fingerprints mean an
equal result: ``equivar run`` materializes only assets whose fingerprint
changed (and the catalog), and each asset reports its fingerprint as its
Dagster data version, so the UI's staleness follows the same rule.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import zipfile

import numpy as np
import pyarrow.parquet as pq
from dagster import AssetKey

from equivar_core.artifacts import files_of, owns_files
from equivar_core.images import list_image_files, source_file
from equivar_core.layout import CATALOG
from equivar_core.models.registry import BUILTINS, file_sha256
from equivar_core.models.untrained import is_untrained_spec
from equivar_core.scores import ScoreSettings
from equivar_core.settings import RunSettings
from equivar_core.storage import atomic_file

#: the asset metadata entry that lists an asset's fingerprint inputs (see :func:`inputs`)
INPUTS_KEY = "equivar/fingerprint_inputs"
#: the output metadata entry that hands the fingerprint an asset computed to the IO manager, which records it
FINGERPRINT_KEY = "equivar/fingerprint"


def inputs(code_version: str, *fields: str) -> dict:
    """Keyword arguments of ``@asset`` (or ``AssetOut``) that declare the asset's fingerprint inputs, once, at
    the asset: its code version and every setting its stage reads (but :data:`UNDECLARED` and, below
    ``models``, :data:`MODEL`; a test traces the reads of a whole run and fails on any other undeclared one).

    ``fields`` are paths of :class:`~equivar_core.settings.RunSettings` fields (``"seed"``, ``"families"`` for
    a whole section, ``"sweep.rotate"`` for one field of it) or a :data:`DERIVED` input. The asset shows them
    in the UI (metadata ``equivar/fingerprint_inputs``); the fingerprints, the no-op check of ``equivar run``,
    docs/graph.md and the test that every field a stage reads is declared all read them off the definitions
    (:func:`declarations`).
    """
    unknown = [f for f in fields if f not in DERIVED and not _is_field(f)]
    if unknown:
        raise ValueError(f"unknown fingerprint inputs {unknown}: expected RunSettings fields or {sorted(DERIVED)}")
    return {"code_version": code_version, "metadata": {INPUTS_KEY: list(fields)}}


@dataclasses.dataclass(frozen=True)
class Declared:
    """What an asset's fingerprint hashes, as its definition declares it: its code version, its own inputs
    (:func:`inputs`) and the assets it reads (its inputs and ``deps``)."""

    code_version: str
    inputs: tuple[str, ...]
    upstream: tuple[str, ...]


def declarations(asset_defs) -> dict[str, Declared]:
    """asset -> its :class:`Declared` fingerprint inputs, read off the asset definitions."""
    out = {}
    for a in asset_defs:
        for key, deps in a.asset_deps.items():
            out[key.to_user_string()] = Declared(
                a.code_versions_by_key.get(key) or "", tuple(a.metadata_by_key.get(key, {}).get(INPUTS_KEY, ())),
                tuple(sorted(k.to_user_string() for k in deps)))
    return out


def _is_field(path: str) -> bool:
    obj = RunSettings
    for part in path.split("."):
        names = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        if part not in names:
            return False
        obj = names[part].default if names[part].default is not dataclasses.MISSING else None
    return True


def own_values(settings: RunSettings, declared: Declared) -> dict:
    """The values of an asset's own inputs, as they enter its fingerprint."""
    return {f: _value(settings, f) for f in declared.inputs}


def _value(settings: RunSettings, path: str):
    """What one declared input contributes to a fingerprint."""
    if path in DERIVED:
        return DERIVED[path](settings)
    value = settings
    for part in path.split("."):
        value = getattr(value, part)
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _calibration(s: RunSettings) -> dict:
    """An ``untrained:`` model's weights depend on the run's photos too (its batch-norm statistics): the image
    source, how many and the seed that picks them. Nothing for other specs."""
    if not is_untrained_spec(s.model):
        return {}
    return {"images": _image_source_hash(s), "n_images": s.n_images, "seed": s.seed}


def _weights_hash(s: RunSettings) -> str | None:
    if s.weights:
        st = os.stat(s.weights)
        return _file_digest(s.weights, st.st_size, st.st_mtime_ns)
    if s.model in BUILTINS and BUILTINS[s.model].default_weights:
        path = BUILTINS[s.model].default_weights()
        st = os.stat(path)
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    # a callable's weights are whatever it builds, timm's come from its cache, an untrained: model's from its spec
    # and photos (_calibration): the models asset hashes them
    return None


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a weights file, hashed once per process for each (size, mtime): every asset's data version
    needs it."""
    return file_sha256(path)


def _image_source_hash(s: RunSettings) -> str:
    h = hashlib.sha256()
    for path in list_image_files(s.images):
        try:
            st = os.stat(source_file(path))            # a tar member: its shard
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}:missing\n".encode())
    return h.hexdigest()


def _compute(settings: RunSettings) -> dict[str, str]:
    """Where and in what precision the numbers are computed: on CUDA, score products run in bfloat16
    (:class:`equivar_core.scores.ScoreSettings`), so the same settings on another device are another result."""
    device = settings.resolved_device()
    return {"device": device.split(":")[0],
            "precision": "bf16-products" if ScoreSettings(device=device).use_bf16() else "fp32"}


#: settings no asset declares: where results go and under which name, how the work is spread (results do not
#: depend on it), and the device (which enters every fingerprint, see :func:`_compute`)
UNDECLARED = ("out", "name", "workers", "device")
#: what loading the network reads (``equivar_core.stages.load``): the model, its weights and analysed layers,
#: declared by the ``models`` and ``layers`` assets, which every asset that runs the network has upstream
MODEL = ("model", "weights", "step", "layers")

#: inputs that are not one setting's text: the files a setting names (the weights' checksum; the image
#: source's paths, sizes and modification times), the results' name, and what an ``untrained:`` model's
#: weights depend on besides its spec
DERIVED = {"weights": _weights_hash, "images": _image_source_hash, "name": lambda s: s.model_name,
           "calibration": _calibration}


def asset_fingerprints(settings: RunSettings, declared: dict[str, Declared], only: str | None = None
                       ) -> dict[str, str]:
    """Fingerprint of every table asset (``declared``: :func:`declarations`), or of ``only`` (and the assets
    upstream of it, whose fingerprints enter its own)."""
    out: dict[str, str] = {}
    compute = _compute(settings)

    def visit(name: str) -> str:
        if name not in out:
            d = declared[name]
            payload = {"code": d.code_version, "own": own_values(settings, d),
                       "compute": compute, "up": [visit(p) for p in sorted(d.upstream)]}
            out[name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return out[name]

    for name in ([only] if only is not None else declared):
        visit(name)
    return out


def changed_assets(settings: RunSettings, declared: dict[str, Declared]) -> tuple[list[str], dict[str, str]]:
    """Assets whose fingerprint differs from the recorded one, or whose files are gone or damaged."""
    new = asset_fingerprints(settings, declared)
    old = load_fingerprints(settings)
    changed = [k for k, v in new.items() if old.get(k) != v or not _exists(settings, k)]
    return changed, new


def table_of(key: AssetKey) -> tuple[str, tuple[str, str] | None]:
    """The table an asset writes, and the slice of it (``("transform", t)`` for a key ``[table, t]``)."""
    return key.path[0], (("transform", key.path[1]) if len(key.path) > 1 else None)


def _exists(settings: RunSettings, asset: str) -> bool:
    """Whether the asset's table is on disk and intact: every Parquet file's footer reads, and so does every
    array file the asset owns (:func:`equivar_core.artifacts.files_of`)."""
    table, part = table_of(AssetKey.from_user_string(asset))
    folder = settings.layout.table_dir(table, part)
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f == "data.parquet"]
    if not files:
        return False
    try:
        for path in files:
            pq.read_metadata(path)
        if owns_files(asset):
            for path in _arrays_of(settings, asset, files):
                _open_array(path)
    except Exception:                          # truncated, overwritten or unreadable: recompute the asset
        return False
    return True


def _open_array(path: str) -> None:
    """Raise unless an array file opens: a ``.npy`` file's header and length, an ``.npz`` archive's zip
    directory."""
    if path.endswith(".npz"):
        with zipfile.ZipFile(path) as z:
            z.namelist()
    else:
        np.load(path, mmap_mode="r")


def _arrays_of(settings: RunSettings, asset: str, files: list[str]) -> list[str]:
    """The array files an asset owns, for the layers (and layer pairs) its table ``files`` hold."""
    layers, pairs = set(), set()
    for f in files:
        names = pq.read_schema(f).names
        if "layer" in names:
            layers |= set(pq.read_table(f, columns=["layer"]).column("layer").to_pylist())
        if "src_layer" in names and "dst_layer" in names:
            unique = pq.read_table(f, columns=["src_layer", "dst_layer"]).group_by(["src_layer", "dst_layer"])
            pairs |= {(r["src_layer"], r["dst_layer"]) for r in unique.aggregate([]).to_pylist()}
    return list(files_of(settings.layout, asset, layers, pairs))


def catalog_intact(out: str) -> bool:
    """Whether ``<out>/equivar.duckdb`` opens and lists its views."""
    return catalog_problem(out) is None


def catalog_problem(out: str) -> str | None:
    """Why ``<out>/equivar.duckdb`` cannot be trusted (one line), or None when it opens and lists its views.

    A write-ahead log beside it (``equivar.duckdb.wal``) is a problem of its own: equivar writes catalogs
    under temporary names, so the log was left by another process that opened the catalog read-write and
    did not close it, and DuckDB would replay it into whatever catalog now has that name (even a rebuilt
    one)."""
    import duckdb

    path = os.path.join(out, CATALOG)
    if not os.path.isfile(path):
        return "missing"
    if os.path.exists(path + ".wal"):
        return f"a stale write-ahead log {CATALOG}.wal, left by a process that opened it read-write"
    try:
        con = duckdb.connect(path, read_only=True)
        try:
            con.execute("select count(*) from duckdb_views()").fetchone()
        finally:
            con.close()
    except Exception as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return None


def run_selection(changed: list[str], siblings: dict[str, list[str]] | None = None, report: bool = True
                  ) -> list[AssetKey]:
    """The assets a run materializes for these changed table assets: them, the assets computed with them
    (``siblings``: asset -> every output of its multi-asset, which runs whole), the report (unless not
    ``report``) and the catalog."""
    keys = dict.fromkeys(k for c in changed for k in (siblings or {}).get(c, [c]))
    return [AssetKey.from_user_string(k) for k in keys] + [AssetKey("report")] * report + [AssetKey("duckdb_catalog")]


def fingerprint_path(settings: RunSettings) -> str:
    return settings.layout.fingerprints


def load_fingerprints(settings: RunSettings) -> dict[str, str]:
    try:
        with open(fingerprint_path(settings)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def record_fingerprint(settings: RunSettings, asset: str, fingerprint: str) -> None:
    """Record one asset's fingerprint as its output is committed (read, update, write under a lock, so
    parallel steps of one run do not lose each other's records). Every run path writes outputs through
    the IO manager (CLI, UI, sensor, schedule, Ray), so each records what it completed, asset by asset."""
    import fcntl

    os.makedirs(settings.layout.artifacts, exist_ok=True)
    with open(settings.layout.fingerprints_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            stored = load_fingerprints(settings)
            stored[asset] = fingerprint
            save_fingerprints(settings, stored)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_fingerprints(settings: RunSettings, fingerprints: dict[str, str]) -> None:
    with atomic_file(fingerprint_path(settings)) as tmp, open(tmp, "w") as f:
        json.dump(fingerprints, f, indent=1, sort_keys=True)
