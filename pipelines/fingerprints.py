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

from equivar_core.activations import TRANSFORM_GROUPS
from equivar_core.images import list_image_files, source_file
from equivar_core.layout import CATALOG
from equivar_core.models.registry import BUILTINS, file_sha256
from equivar_core.models.untrained import is_untrained_spec
from equivar_core.scores import ScoreSettings
from equivar_core.settings import RunSettings
from equivar_core.storage import atomic_file
from equivar_core.transforms import IDENTITY

#: the settings each asset reads (beyond its upstream assets)
OWN_INPUTS = {
    "models": lambda s: {"model": s.model, "weights": _weights_hash(s), "name": s.model_name, "step": s.step,
                         **_calibration(s)},
    "layers": lambda s: {"layers": list(s.layers), "seed": s.seed},
    "images": lambda s: {"images": _image_source_hash(s), "n_images": s.n_images, "seed": s.seed},
    "unit_stats": lambda s: {"sweep": s.sweep.group_settings(IDENTITY)},
    "activation_samples": lambda s: _sampling(s, IDENTITY),
    **{f"transformed_samples/{t}": (lambda s, t=t: _sampling(s, t)) for t in TRANSFORM_GROUPS},
    **{f"transform_pairs/{t}": (lambda s: {}) for t in TRANSFORM_GROUPS},
    "tuning": lambda s: {"tuning": dataclasses.asdict(s.tuning)},
    "tuning_random_basis": lambda s: {"tuning": dataclasses.asdict(s.tuning), "seed": s.seed},
    "unit_profiles": lambda s: {"tuning": dataclasses.asdict(s.tuning)},
    "transform_maps": lambda s: {},
    "scale_pairs": lambda s: {},
    "families": lambda s: {"families": dataclasses.asdict(s.families)},
    "reference_families": lambda s: {"model": s.model},
    "basis_control": lambda s: {"families": dataclasses.asdict(s.families), "seed": s.seed},
    "layer_summary": lambda s: {},
    "family_stability": lambda s: {"families": dataclasses.asdict(s.families), "folds": s.stability.folds,
                                   "min_jaccard": s.stability.min_jaccard},
    "sensitivity": lambda s: {"families": dataclasses.asdict(s.families),
                              "thresholds": list(s.stability.thresholds), "changes": list(s.stability.changes)},
    "curve_detectors": lambda s: {},
    "family_sweeps": lambda s: {"rotation_test": dataclasses.asdict(s.rotation_test), "seed": s.seed},
    "circuit_weights": lambda s: {"circuits": dataclasses.asdict(s.circuits)},
    "circuit_families": lambda s: {"circuits": dataclasses.asdict(s.circuits),
                                   "families": dataclasses.asdict(s.families), "seed": s.seed},
}

def _calibration(s: RunSettings) -> dict:
    """An ``untrained:`` model's weights depend on the run's photos too (its batch-norm statistics): the image
    source, how many and the seed that picks them. Nothing for other specs."""
    if not is_untrained_spec(s.model):
        return {}
    return {"calibration": {"images": _image_source_hash(s), "n_images": s.n_images, "seed": s.seed}}


def _sampling(s: RunSettings, group: str) -> dict:
    """What a group's samples and moments read: its sweep, the kept images, the forward batch (the null pairs
    images within it), the seed (the basis control's random bases, whose squares the moments sum) and the
    folds of the images (whose scores the passes keep apart)."""
    return {"sweep": s.sweep.group_settings(group), "keep_samples": s.keep_samples, "batch_size": s.batch_size,
            "seed": s.seed, "folds": s.stability.folds}


def upstream_of(asset_defs) -> dict[str, list[str]]:
    """asset -> the assets it reads, read off the asset definitions (their inputs and ``deps``): the graph is
    declared once, by the assets themselves (``pipelines.assets.GRAPH``)."""
    return {key.to_user_string(): sorted(k.to_user_string() for k in deps)
            for a in asset_defs for key, deps in a.asset_deps.items()}


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


def asset_fingerprints(settings: RunSettings, code_version: str, upstream: dict[str, list[str]]
                       ) -> dict[str, str]:
    """Fingerprint of every table asset (``upstream``: asset -> the assets it reads)."""
    out: dict[str, str] = {}
    compute = _compute(settings)

    def visit(name: str) -> str:
        if name not in out:
            parents = sorted(upstream.get(name, []))
            payload = {"code": code_version, "own": OWN_INPUTS[name](settings), "compute": compute,
                       "up": [visit(p) for p in parents]}
            out[name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return out[name]

    for name in OWN_INPUTS:
        visit(name)
    return out


def changed_assets(settings: RunSettings, code_version: str, upstream: dict[str, list[str]]
                   ) -> tuple[list[str], dict[str, str]]:
    """Assets whose fingerprint differs from the recorded one, or whose files are gone or damaged."""
    new = asset_fingerprints(settings, code_version, upstream)
    old = load_fingerprints(settings)
    changed = [k for k, v in new.items() if old.get(k) != v or not _exists(settings, k)]
    return changed, new


def table_of(key: AssetKey) -> tuple[str, tuple[str, str] | None]:
    """The table an asset writes, and the slice of it (``("transform", t)`` for a key ``[table, t]``)."""
    return key.path[0], (("transform", key.path[1]) if len(key.path) > 1 else None)


def _exists(settings: RunSettings, asset: str) -> bool:
    """Whether the asset's table is on disk and intact: every Parquet file's footer reads, and so does every
    array the asset wrote beside it (:func:`_arrays_of`)."""
    table, part = table_of(AssetKey.from_user_string(asset))
    folder = settings.layout.table_dir(table, part)
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f == "data.parquet"]
    if not files:
        return False
    try:
        for path in files:
            pq.read_metadata(path)
        if table in ("activation_samples", "transformed_samples", "transform_pairs", "circuit_weights"):
            _arrays_intact(settings, table, part, files)
    except Exception:                          # truncated, overwritten or unreadable: recompute the asset
        return False
    return True


def _arrays_intact(settings: RunSettings, table: str, part, files: list[str]) -> None:
    """Raise unless the arrays an asset wrote beside its table open: ``.npy`` files (header and length) and
    ``.npz`` archives (their zip directory)."""
    for path in _arrays_of(settings, table, part, files):
        if path.endswith(".npz"):
            with zipfile.ZipFile(path) as z:
                z.namelist()
        else:
            np.load(path, mmap_mode="r")


def _arrays_of(settings: RunSettings, table: str, part, files: list[str]) -> list[str]:
    """The arrays behind an asset's table: sample arrays and their points (the manifests name them) and each
    layer's fold scores; for the identity samples also each layer's units' strongest images, the covariance,
    the loaded-image mask and the identity scores; the score archives of transform pairs; the expanded
    weights of circuits."""
    layout = settings.layout

    def column(name: str) -> list[str]:
        return [x for f in files for x in pq.read_table(f, columns=[name]).column(name).to_pylist()]

    if table == "transform_pairs":
        return [layout.scores(layer, part[1]) for layer in set(column("layer"))]
    if table == "circuit_weights":
        pairs = set()
        for f in files:
            unique = pq.read_table(f, columns=["src_layer", "dst_layer"]).group_by(["src_layer", "dst_layer"])
            pairs |= {(r["src_layer"], r["dst_layer"]) for r in unique.aggregate([]).to_pylist()}
        return [layout.circuit_weights(s, d) for s, d in pairs]
    paths = [layout.resolve(p) for p in column("path") + column("points_path") + column("moments_path")]
    group = part[1] if part else IDENTITY
    paths += [layout.fold_scores(layer, group) for layer in set(column("layer"))]
    if table == "activation_samples":
        paths.append(layout.loaded)
        for layer in set(column("layer")):
            paths += [layout.top_images(layer), layout.cov(layer),
                      layout.scores(layer, IDENTITY)]
    return paths


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


def run_selection(changed: list[str], siblings: dict[str, list[str]] | None = None) -> list[AssetKey]:
    """The assets a run materializes for these changed table assets: them, the assets computed with them
    (``siblings``: asset -> every output of its multi-asset, which runs whole), the report and the catalog."""
    keys = dict.fromkeys(k for c in changed for k in (siblings or {}).get(c, [c]))
    return [AssetKey.from_user_string(k) for k in keys] + [AssetKey("report"), AssetKey("duckdb_catalog")]


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
