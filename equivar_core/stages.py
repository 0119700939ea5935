"""The pipeline's stages as plain functions: settings and upstream tables in, a table out.

Each function is what one Dagster asset calls; the CLI and the tests run the
same code through those assets. Tables are pandas DataFrames with the
columns of ``CONTRACT.md`` (plus documented extras); every table has a
``model`` column. Large intermediate arrays (activation samples, full score
matrices, expanded weights) live under ``settings.artifacts``.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pandas as pd

from .activations import TRANSFORM_GROUPS, sample_activations, sample_rows
from .capture import layer_geometry
from .curves import curve_detectors
from .circuits import cancellation, expanded_weights, family_equivariance, invariant_equivariance, probe_size
from .basis import above_chance, family_order, median_spacing, mixed_stats, random_orthogonal, suggested_group
from .families import AngularFamilies, PairFamilies
from .images import ImageView, plan_views
from .layer_info import inspect_layers
from .models.registry import LoadedModel, load_model, resolve_layers
from .scores import (ScoreSettings, full_orbit, linear_map_summary, orbit_centred_scores, top_pairs,
                     version_scores)
from .settings import RunSettings
from .storage import save_npy, save_npz
from .sweeps import SweptFamily, layer_sweeps, sweep_error
from .transforms import make_transform
from .tuning import (HUE_INVARIANT_STIMULI, HUE_STIMULI, ORIENTATION_STIMULI, ROTATION_INVARIANT_STIMULI, curves,
                     measure_tuning, unit_profiles)

log = logging.getLogger(__name__)


def load(settings: RunSettings) -> tuple[LoadedModel, list[str]]:
    """The model on its device and the resolved layer names (raises :class:`EquivarError` on bad input)."""
    model = load_model(settings.model, settings.weights, settings.name)
    layers = resolve_layers(model, list(settings.layers) or None)
    model.module.to(settings.resolved_device())
    return model, layers


def sample_shard(settings: RunSettings, layers: list[str], views: list[ImageView], paths: dict[str, str],
                 group: str) -> dict:
    """One shard of a sweep group's forward passes (a worker's task): load the model, write the shard's
    rows of the sample files ``paths``, return its partial sums (see :func:`activations.sample_rows`)."""
    model, _ = load(settings)
    return sample_rows(model.module, layers, views, model.input_size, settings.sweep, paths, settings.batch_size,
                       settings.resolved_device(), group)


def _with_model(df: pd.DataFrame, settings: RunSettings) -> pd.DataFrame:
    df.insert(0, "model", settings.model_name)
    return df


# -- model and layers -------------------------------------------------------------------------

def model_table(settings: RunSettings) -> pd.DataFrame:
    """``models``: one row for the model."""
    model, _ = load(settings)
    return pd.DataFrame({"model": [model.name], "spec": [settings.model], "weights_sha256": [model.weights_sha256],
                         "n_params": [model.n_params], "input_size": [model.input_size],
                         "weights": [settings.weights or "built-in"], "seed": [settings.seed],
                         "step": pd.array([settings.step], dtype="Int64")})


def layer_table(settings: RunSettings) -> pd.DataFrame:
    """``layers``: shape at the input size, privileged basis, stride and effective receptive field of each
    analysed layer (see :mod:`equivar_core.layer_info` for ``privileged``)."""
    model, layers = load(settings)
    geoms = layer_geometry(model.module, layers, model.input_size, settings.resolved_device(), settings.seed)
    every = inspect_layers(model.module, model.input_size, device=settings.resolved_device())   # forward order
    depth = {i.layer: k for k, i in enumerate(every)}
    infos = {i.layer: i for i in every}
    df = pd.DataFrame({"layer": [g.layer for g in geoms], "depth": [depth[g.layer] for g in geoms],
                       "n_units": [g.n_units for g in geoms],
                       "privileged": [infos[g.layer].privileged for g in geoms],
                       "basis": [infos[g.layer].reason for g in geoms],
                       "height": [g.height for g in geoms], "width": [g.width for g in geoms],
                       "stride": [g.stride for g in geoms], "rf_radius": [g.rf_radius for g in geoms],
                       "rf_offset_y": [g.rf_offset[0] for g in geoms], "rf_offset_x": [g.rf_offset[1] for g in geoms]})
    return _with_model(df.sort_values("depth", kind="stable").reset_index(drop=True), settings)


def _geometries(layers_df: pd.DataFrame):
    from .capture import LayerGeometry

    return [LayerGeometry(r.layer, int(r.n_units), int(r.height), int(r.width), float(r.stride), float(r.rf_radius),
                          (float(r.rf_offset_y), float(r.rf_offset_x))) for r in layers_df.itertuples()]


# -- natural images ---------------------------------------------------------------------------

def image_table(settings: RunSettings) -> pd.DataFrame:
    """``images``: the natural-image views of the run, in order."""
    views = plan_views(settings.images, settings.n_images, settings.seed)
    df = pd.DataFrame({"image": [v.index for v in views], "path": [v.path for v in views],
                       "crop_top": [v.top for v in views], "crop_left": [v.left for v in views],
                       "crop_size": [v.size for v in views]})
    return _with_model(df, settings)


def _views(images_df: pd.DataFrame) -> list[ImageView]:
    return [ImageView(int(r.image), r.path, float(r.crop_top), float(r.crop_left), float(r.crop_size))
            for r in images_df.itertuples()]


def _manifest(settings: RunSettings, samples, loaded: np.ndarray, group: str) -> pd.DataFrame:
    labels = ";".join(g.label for g in settings.sweep.group(group))
    cols = ["layer", "depth", "group", "path", "points_path", "n_versions", "n_images", "n_loaded", "n_skipped",
            "n_points", "n_units", "versions"]
    rel = settings.layout.relative         # a moved or copied folder reads its own files
    df = pd.DataFrame([{"layer": s.layer, "depth": depth, "group": group, "path": rel(s.path),
                        "points_path": rel(s.points_path),
                        "n_versions": s.n_versions, "n_images": s.n_images, "n_loaded": int(loaded.sum()),
                        "n_skipped": int((~loaded).sum()), "n_points": s.n_points, "n_units": s.n_units,
                        "versions": labels} for depth, s in enumerate(samples)], columns=cols)
    return _with_model(df, settings)


def located(settings: RunSettings, manifest: pd.DataFrame) -> pd.DataFrame:
    """A samples manifest with its paths (stored relative to the results folder) made absolute."""
    layout = settings.layout
    return manifest.assign(path=[layout.resolve(p) for p in manifest["path"]],
                           points_path=[layout.resolve(p) for p in manifest["points_path"]])


def natural_activations(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame, run_shards=None
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream the original images; returns (``unit_stats``, ``activation_samples`` manifest).

    Also saves each layer's plain unit-unit correlations on these images
    (the baseline that transform evidence must beat; see :func:`load_identity`).
    """
    model, _ = load(settings)
    layout = settings.layout
    samples, stats, loaded = sample_activations(
        model.module, list(layers_df["layer"]), _views(images_df), model.input_size, settings.sweep, layout.activations,
        settings.batch_size, settings.resolved_device(), group="identity", run_shards=run_shards)
    save_npy(layout.loaded, loaded)
    rows = []
    for name, st in stats.items():
        c = len(st["mean"])
        rows.append(pd.DataFrame({"layer": name, "unit": np.arange(c), "mean": st["mean"], "std": st["std"],
                                  "best_image": st["image_max"][loaded].argmax(0) if loaded.any() else -1,
                                  "best_value": st["image_max"][loaded].max(0)}))
        save_npy(layout.image_max(name), st["image_max"])
        save_npy(layout.image_argmax(name), st["image_argmax"])
        save_npy(layout.cov(name), st["cov"])
    stats_df = _with_model(pd.concat(rows, ignore_index=True), settings)
    score_settings = ScoreSettings(device=settings.resolved_device())
    for smp in samples:
        identity, _ = version_scores(np.load(smp.path, mmap_mode="r"), 0, make_transform("rotate", 0.0),
                                     np.load(smp.points_path), settings.sweep.disc_radius, np.flatnonzero(loaded),
                                     score_settings)
        save_npz(layout.scores(smp.layer, "identity"), {"identity:0": identity})
    return stats_df, _manifest(settings, samples, loaded, "identity")


def transformed_activations(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame,
                            transform: str, run_shards=None) -> pd.DataFrame:
    """Stream one transform family's versions of the images; returns its samples manifest.

    The forward passes of each family are their own: families can run on
    different workers at once, and a family is recomputed alone when only
    its amounts change.
    """
    model, _ = load(settings)
    samples, _, loaded = sample_activations(
        model.module, list(layers_df["layer"]), _views(images_df), model.input_size, settings.sweep,
        settings.layout.activations, settings.batch_size, settings.resolved_device(), group=transform,
        run_shards=run_shards)
    return _manifest(settings, samples, loaded, transform)


def all_transform_pairs(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame,
                        identity_df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Every transform family's samples and ``transform_pairs``, one after the other (the pipeline runs the
    families as separate assets); returns the concatenated pairs and each family's samples manifest."""
    manifests, pairs = {}, []
    for transform in TRANSFORM_GROUPS:
        manifests[transform] = transformed_activations(settings, images_df, layers_df, transform)
        pairs.append(transform_pair_table(settings, identity_df, manifests[transform]))
    return pd.concat(pairs, ignore_index=True), manifests


# -- tuning -----------------------------------------------------------------------------------

def tuning_table(settings: RunSettings, layers_df: pd.DataFrame, stats_df: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``tuning`` and ``tuning_random_basis``: responses (natural-image standard deviations) to every swept
    stimulus, of the layer's units and of the same layer in a random orthogonal basis (same passes)."""
    model, _ = load(settings)
    stats, mixes = {}, {}
    for layer, g in stats_df.groupby("layer"):
        g = g.sort_values("unit")
        stats[layer] = (g["mean"].to_numpy(), g["std"].to_numpy())
        q = random_orthogonal(len(g), settings.seed, layer)
        mixes[layer] = (q, *mixed_stats(stats[layer][0], np.load(settings.layout.cov(layer)), q))
    cols, mixed = measure_tuning(model.module, _geometries(layers_df), model.input_size, stats, settings.tuning,
                                 settings.resolved_device(), mixes)
    return _with_model(pd.DataFrame(cols), settings), _with_model(pd.DataFrame(mixed), settings)


def profile_table(settings: RunSettings, tuning_df: pd.DataFrame, layers_df: pd.DataFrame) -> pd.DataFrame:
    """``unit_profiles``: preferred parameter, selectivity and period per unit and stimulus."""
    cols = unit_profiles(_columns(tuning_df), dict(zip(layers_df["layer"], layers_df["n_units"])), settings.tuning)
    return _with_model(pd.DataFrame(cols), settings)


def _columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: df[c].to_numpy() for c in df.columns}


# -- transform scores -------------------------------------------------------------------------

def _loaded_images(manifest_row) -> np.ndarray:
    return np.flatnonzero(np.load(os.path.join(os.path.dirname(manifest_row.path), "loaded.npy")))


def transform_pair_table(settings: RunSettings, identity_df: pd.DataFrame, transformed_df: pd.DataFrame
                         ) -> pd.DataFrame:
    """``transform_pairs`` of one transform family: self score and top partners per unit and amount.

    ``identity_df`` and ``transformed_df`` are the sample manifests of the
    original images and of the family's versions. The full C x C score
    matrices are saved beside, one ``.npz`` per layer and family.
    """
    score_settings = ScoreSettings(device=settings.resolved_device())
    cols = ["layer", "transform", "amount", "unit", "partner", "rank", "score", "null_score", "z"]
    rows = []
    originals = {r.layer: r for r in located(settings, identity_df).itertuples()}
    for r in located(settings, transformed_df).itertuples():
        base = originals[r.layer]
        samples = np.load(base.path, mmap_mode="r")
        versions = np.load(r.path, mmap_mode="r")
        points = np.load(base.points_path)
        images = _loaded_images(base)
        matrices = {}
        for v, label in enumerate(r.versions.split(";")):
            name, amount = label.split(":")
            g = make_transform(name, float(amount))
            score, null = version_scores(samples, v, g, points, settings.sweep.disc_radius, images, score_settings,
                                         other=versions)
            matrices[label] = score
            matrices[label + ":null"] = null
            t = top_pairs(score, null, score_settings.top_k)
            rows.append(pd.DataFrame({"layer": r.layer, "transform": name, "amount": float(amount), **t}))
        matrices.update(_centred_matrices(r, samples, versions, images, score_settings))
        save_npz(settings.layout.scores(r.layer, r.group), matrices)
        log.info("transform scores: %s %s done", r.layer, r.group)
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({c: [] for c in cols})
    return _with_model(df, settings)


def _centred_matrices(manifest_row, samples, versions, images, score_settings, mix=None) -> dict[str, np.ndarray]:
    """Orbit-centred scores of a colour transform swept over a full orbit (see
    :func:`equivar_core.scores.orbit_centred_scores`), keyed ``NAME:AMOUNT:centred`` and
    ``centred-identity:NAME``; nothing for other transforms."""
    labels = [label.split(":") for label in manifest_row.versions.split(";")]
    name, amounts = labels[0][0], [float(a) for _, a in labels]
    if make_transform(name, 0.0).spatial or not full_orbit(amounts):
        return {}
    identity, centred = orbit_centred_scores(samples, versions, amounts, images, score_settings, mix=mix)
    return {f"centred-identity:{name}": identity} | {f"{name}:{a:g}:centred": m for a, m in centred.items()}


def load_evidence(settings: RunSettings, layer: str, transform: str
                  ) -> tuple[dict[float, np.ndarray], np.ndarray | None]:
    """What families test pairs against: amount -> C x C scores and the plain correlations they must beat.

    The orbit-centred scores where the transform has them (colour transforms over a full orbit),
    else the plain scores and the units' correlations on the same images.
    """
    path = settings.layout.scores(layer, transform)
    if transform in TRANSFORM_GROUPS and settings.sweep.group(transform) and os.path.exists(path):
        with np.load(path) as z:
            if f"centred-identity:{transform}" in z.files:
                return ({float(k.split(":")[1]): z[k] for k in z.files if k.endswith(":centred")},
                        z[f"centred-identity:{transform}"])
    return load_scores(settings, layer, transform), load_identity(settings, layer)


def load_identity(settings: RunSettings, layer: str) -> np.ndarray | None:
    """C x C correlations of a layer's units on the same images."""
    path = settings.layout.scores(layer, "identity")
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return z["identity:0"]


def load_scores(settings: RunSettings, layer: str, transform: str) -> dict[float, np.ndarray]:
    """amount -> C x C score matrix of one layer and transform (empty when the sweep has none)."""
    path = settings.layout.scores(layer, transform)
    if transform not in TRANSFORM_GROUPS or not settings.sweep.group(transform) or not os.path.exists(path):
        return {}
    with np.load(path) as z:
        return {float(k.split(":")[1]): z[k] for k in z.files
                if k.startswith(transform + ":") and len(k.split(":")) == 2}


def scale_pair_table(settings: RunSettings, identity_df: pd.DataFrame, scale_df: pd.DataFrame) -> pd.DataFrame:
    """``scale_pairs``: the same feature at another size in a deeper layer.

    For analysed layers A (earlier) and B (later) and each zoom s of the sweep,
    ``score(u, v) = corr(u_A(x), v_B(zoom_s x))`` at the same image points: v
    on the enlarged image does what u does on the original, i.e. v is u at s
    times the size. Rows: each unit of A with its three best partners in B.
    ``identity_df`` and ``scale_df`` are the sample manifests of the original
    images and of the scale family.
    """
    score_settings = ScoreSettings(device=settings.resolved_device())
    rows = []
    layers = list(located(settings, identity_df).itertuples())
    zoomed = {r.layer: r for r in located(settings, scale_df).itertuples()}
    scales = [(v, float(label.split(":")[1])) for v, label in enumerate(next(iter(zoomed.values())).versions.split(";"))
              ] if zoomed else []
    for i, a in enumerate(layers):
        sa = np.load(a.path, mmap_mode="r")
        points = np.load(a.points_path)
        images = _loaded_images(a)
        for b in layers[i + 1:]:
            if b.layer not in zoomed:
                continue
            sb = np.load(zoomed[b.layer].path, mmap_mode="r")
            if not np.allclose(np.load(b.points_path), points):
                continue
            for v, s in scales:
                score, null = version_scores(sa, v, make_transform("scale", s), points,
                                             settings.sweep.disc_radius, images, score_settings, other=sb)
                t = top_pairs(score, null, score_settings.top_k, with_self=False)
                best_for_b = score.argmax(0)
                mutual = best_for_b[t["partner"]] == t["unit"]
                rows.append(pd.DataFrame({"small_layer": a.layer, "small_unit": t["unit"], "large_layer": b.layer,
                                          "large_unit": t["partner"], "scale": s, "rank": t["rank"],
                                          "score": t["score"], "null_score": t["null_score"], "z": t["z"],
                                          "mutual": mutual}))
    cols = ["small_layer", "small_unit", "large_layer", "large_unit", "scale", "rank", "score", "null_score", "z",
            "mutual"]
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({c: [] for c in cols})
    return _with_model(df, settings)


def transform_map_table(settings: RunSettings, layers_df: pd.DataFrame) -> pd.DataFrame:
    """``transform_maps``: per layer and transform, how linear, permutation-like or invariant the layer is."""
    rows = []
    for layer in layers_df["layer"]:
        identity = load_identity(settings, layer)
        for transform in TRANSFORM_GROUPS:
            for amount, score in load_scores(settings, layer, transform).items():
                rows.append({"layer": layer, "transform": transform, "amount": amount,
                             **linear_map_summary(identity, score), "n_units": len(identity)})
    return _with_model(pd.DataFrame(rows), settings)


# -- families ---------------------------------------------------------------------------------

def _stacked_curves(tuning: dict, layer: str, stimuli, n_units: int, steps: int = 72) -> np.ndarray:
    """C x S x steps curves, each stimulus resampled circularly onto a common grid.

    ``color_contrast_grid`` contributes one hue curve per orientation of the grid.
    """
    out = []
    for stim in stimuli:
        if stim == "color_contrast_grid":
            sel = (tuning["layer"] == layer) & (tuning["stimulus"] == stim)
            thetas = np.unique(tuning["param"][sel])
            for theta in thetas:
                rows = sel & (tuning["param"] == theta)
                params, resp = curves({k: v[rows] for k, v in tuning.items()} | {"param": tuning["param2"][rows]},
                                      layer, stim, n_units)
                out.append(_resample(params, resp, steps))
            continue
        params, resp = curves(tuning, layer, stim, n_units)
        if len(params):
            out.append(_resample(params, resp, steps))
    return np.stack(out, 1) if out else np.zeros((n_units, 0, steps))


def _resample(params: np.ndarray, resp: np.ndarray, steps: int) -> np.ndarray:
    """Circular linear interpolation of curves (C x T over ``params`` degrees) onto ``steps`` samples."""
    grid = np.arange(steps) * 360.0 / steps
    ext_p = np.concatenate([params - 360, params, params + 360])
    ext_r = np.nan_to_num(np.concatenate([resp, resp, resp], 1))
    return np.stack([np.interp(grid, ext_p, row) for row in ext_r])


def family_table(settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame,
                 layers_df: pd.DataFrame) -> pd.DataFrame:
    """``families``: rotation and hue families from tuning, flip and scale pairs from transform scores."""
    return layer_families(settings, tuning_df, profiles_df, layers_df,
                          lambda layer, t: load_evidence(settings, layer, t))


def layer_families(settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame,
                   layers_df: pd.DataFrame, evidence_of) -> pd.DataFrame:
    """Family rows of every layer from its tuning, profiles and transform scores.

    ``evidence_of(layer, transform)`` gives amount -> C x C scores and the plain correlations they must
    beat (see :func:`load_evidence`): the stored ones, or those of the layer in another basis (the basis
    control).
    """
    fs = settings.families
    by_layer = {layer: _columns(g) for layer, g in tuning_df.groupby("layer", sort=False)}
    rows = []
    for layer, c in zip(layers_df["layer"], layers_df["n_units"]):
        tuning = by_layer.get(layer, _columns(tuning_df.iloc[:0]))
        prof = profiles_df[profiles_df["layer"] == layer]
        next_id = 0
        for transform, stimuli, fixed, min_invariant in (
                ("rotate", ORIENTATION_STIMULI, ROTATION_INVARIANT_STIMULI, fs.min_invariant_similarity),
                ("hue", HUE_STIMULI, HUE_INVARIANT_STIMULI, fs.min_hue_invariant_similarity)):
            tuned = prof[prof["stimulus"].isin(stimuli) & prof["period"].notna()]
            eligible = np.zeros(c, bool)
            eligible[tuned["unit"].to_numpy(int)] = True
            scores, identity = evidence_of(layer, transform)
            est = AngularFamilies(fs.min_similarity, fs.min_tuning_similarity, fs.min_spread, fs.tolerance,
                                  fs.min_partner_score, fs.min_gain, fs.max_plain_correlation,
                                  min_invariant, fs.min_agreement, fs.curve_weighting).fit(
                _stacked_curves(tuning, layer, stimuli, c), eligible, scores, identity,
                _stacked_curves(tuning, layer, fixed, c))
            next_id = _append_families(rows, layer, transform, est, next_id,
                                       period={k: v for k, v in est.periods_.items()}, agreement=est.agreement_)
        for transform in ("hflip", "scale"):
            scores, _ = evidence_of(layer, transform)
            if not scores:
                continue
            est = PairFamilies(fs.pair_min_score, fs.pair_max_error_ratio).fit(scores, directed=transform == "scale")
            next_id = _append_families(rows, layer, transform, est, next_id, period={}, agreement=None)
    cols = ["layer", "family", "transform", "unit", "param", "fit", "period", "agreement", "size", "places", "holes",
            "variant"]
    df = pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame({k: [] for k in cols})
    return _with_model(df.astype({"family": int, "unit": int, "size": int, "variant": int}), settings)


def _append_families(rows, layer, transform, est, next_id, period, agreement) -> int:
    variants = getattr(est, "variants_", np.zeros(len(est.labels_), dtype=int))
    for f in np.unique(est.labels_[est.labels_ >= 0]):
        members = np.flatnonzero(est.labels_ == f)
        p = period.get(int(f), np.nan)
        main = members[variants[members] == 0]
        places = family_order(est.params_[main], p) if np.isfinite(p) else np.nan
        for u in members:
            rows.append({"layer": layer, "family": next_id, "transform": transform, "unit": int(u),
                         "param": float(est.params_[u]), "fit": float(est.fit_[u]), "period": p,
                         "agreement": float(agreement[u]) if agreement is not None else np.nan,
                         "size": len(members), "places": places, "holes": places - len(main),
                         "variant": int(variants[u])})
        next_id += 1
    return next_id


def family_sweep_table(settings: RunSettings, families_df: pd.DataFrame, images_df: pd.DataFrame,
                       layers_df: pd.DataFrame, stats_df: pd.DataFrame,
                       curves_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """``family_sweeps``: members' responses as a member's best images are rotated (or hue-shifted), for the
    ``rotation_test.max_families`` largest rotation and hue families of each layer (``step`` degrees apart),
    and for as many of its largest curve families (mostly curve detectors, ``curves_df``) at ``curve_step``
    degrees."""
    model, _ = load(settings)
    views = _views(images_df)
    geoms = {g.layer: g for g in _geometries(layers_df)}
    test = settings.rotation_test
    rows = []
    angular = families_df[families_df["transform"].isin(["rotate", "hue"])]
    for layer in layers_df["layer"]:
        lf = angular[angular["layer"] == layer]
        if lf.empty:
            continue
        ranked = lf.groupby(["family", "transform"]).agg(size=("unit", "size"), fit=("fit", "mean"))
        largest = set(ranked.sort_values(["size", "fit"], ascending=False).head(test.max_families).index)
        curvy = curve_families(families_df, curves_df, layer) if curves_df is not None else set()
        curvy = {f for (f, t) in ranked.loc[[(f, "rotate") for f in curvy]].sort_values(
            ["size", "fit"], ascending=False).head(test.max_families).index} if curvy else curvy
        st = stats_df[stats_df["layer"] == layer].sort_values("unit")
        image_max = np.load(settings.layout.image_max(layer))
        image_argmax = np.load(settings.layout.image_argmax(layer))
        for step, chosen_keys in ((test.step, largest - {(f, "rotate") for f in curvy}),
                                  (test.curve_step, {(f, "rotate") for f in curvy})):
            chosen = [SweptFamily(int(f), t, g["unit"].to_numpy(int), g["param"].to_numpy(),
                                  float(g["period"].iloc[0]))
                      for (f, t), g in lf.groupby(["family", "transform"]) if (f, t) in chosen_keys]
            if not chosen:
                continue
            cols = layer_sweeps(model.module, geoms[layer], model.input_size, views, image_max, image_argmax,
                                st["mean"].to_numpy(), st["std"].to_numpy(), chosen,
                                dataclasses.replace(test, step=step), settings.resolved_device())
            df = pd.DataFrame(cols)
            periods = {f.family: f.period for f in chosen}
            df.insert(1, "transform", df["family"].map({f.family: f.transform for f in chosen}))
            df.insert(0, "layer", layer)
            df["step"] = step
            df["error"] = sweep_error(df["peak_angle"].to_numpy(), df["expected_angle"].to_numpy(),
                                      df["family"].map(periods).to_numpy(float))
            rows.append(df)
        log.info("family sweeps: %s, %d largest and %d curve families of %d", layer, len(largest - {
            (f, "rotate") for f in curvy}), len(curvy), ranked.shape[0])
    cols = ["layer", "family", "transform", "driver", "member", "angle", "response", "peak_angle",
            "expected_angle", "error", "step"]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({c: [] for c in cols})
    return _with_model(out[cols] if len(out) else out, settings)


# -- curve detectors --------------------------------------------------------------------------

def curve_detector_table(settings: RunSettings, tuning_df: pd.DataFrame, layers_df: pd.DataFrame,
                         families_df: pd.DataFrame) -> pd.DataFrame:
    """``curve_detectors``: units whose best stimulus is a curve, with their radial orientation tuning (5 degree
    steps), curvature tuning and rotation family (see :mod:`equivar_core.curves`)."""
    rows = []
    rotate = families_df[families_df["transform"] == "rotate"]
    for layer, g in tuning_df.groupby("layer", sort=False):
        c = int(layers_df.loc[layers_df["layer"] == layer, "n_units"].iloc[0])
        df = pd.DataFrame(curve_detectors(_columns(g), c))
        fam = rotate[rotate["layer"] == layer].set_index("unit")
        df["family"] = df["unit"].map(fam["family"]).fillna(-1).astype(int)
        df["family_param"] = df["unit"].map(fam["param"])
        df.insert(0, "layer", layer)
        rows.append(df)
    cols = ["layer", "unit", "orientation", "radius", "curvature", "width", "radius_selectivity", "curve_response",
            "straight_response", "family", "family_param"]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({k: [] for k in cols})
    return _with_model(out.astype({"unit": int, "family": int}) if len(out) else out, settings)


def curve_families(families_df: pd.DataFrame, curves_df: pd.DataFrame, layer: str) -> set[int]:
    """Rotation families of a layer at least half of whose members are curve detectors."""
    rotate = families_df[(families_df["layer"] == layer) & (families_df["transform"] == "rotate")]
    curvy = set(curves_df.loc[curves_df["layer"] == layer, "unit"].astype(int)) if len(curves_df) else set()
    return {int(f) for f, g in rotate.groupby("family") if g["unit"].isin(curvy).mean() >= 0.5}


# -- basis control and summary ---------------------------------------------------------------

def basis_control_table(settings: RunSettings, layers_df: pd.DataFrame, tuning_rb_df: pd.DataFrame,
                        families_df: pd.DataFrame, identity_df: pd.DataFrame,
                        transformed: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``basis_control``: units and families per layer and transform, in the layer's basis and in a random one.

    The random basis's family assignment is the real one's, run on the mixed tuning
    (``tuning_random_basis``) and on transform scores of the mixed samples (recomputed here from the
    stored samples: one GEMM pass, no forward pass); see :mod:`equivar_core.basis`.
    ``transformed``: transform family -> its samples manifest.
    """
    score_settings = ScoreSettings(device=settings.resolved_device())
    profiles_rb = profile_table(settings, tuning_rb_df, layers_df)
    originals = {r.layer: r for r in located(settings, identity_df).itertuples()}
    scores: dict[tuple[str, str], dict[float, np.ndarray]] = {}
    identity: dict[tuple[str, str], np.ndarray] = {}
    for layer, c in zip(layers_df["layer"], layers_df["n_units"]):
        base = originals[layer]
        samples, points = np.load(base.path, mmap_mode="r"), np.load(base.points_path)
        images, q = _loaded_images(base), random_orthogonal(int(c), settings.seed, layer)
        plain = version_scores(samples, 0, make_transform("rotate", 0.0), points, settings.sweep.disc_radius,
                               images, score_settings, mix=q)[0]
        for transform, manifest in transformed.items():
            for r in located(settings, manifest[manifest["layer"] == layer]).itertuples():
                versions = np.load(r.path, mmap_mode="r")
                centred = _centred_matrices(r, samples, versions, images, score_settings, mix=q)
                if centred:                   # what the family code reads for this transform (load_evidence)
                    identity[(layer, transform)] = centred.pop(f"centred-identity:{transform}")
                    scores[(layer, transform)] = {float(k.split(":")[1]): m for k, m in centred.items()}
                    continue
                identity[(layer, transform)] = plain
                for v, label in enumerate(r.versions.split(";")):
                    name, amount = label.split(":")
                    scores.setdefault((layer, transform), {})[float(amount)] = version_scores(
                        samples, v, make_transform(name, float(amount)), points, settings.sweep.disc_radius, images,
                        score_settings, other=versions, mix=q)[0]
        log.info("basis control: %s scored in a random basis", layer)
    random_df = layer_families(settings, tuning_rb_df, profiles_rb, layers_df,
                               lambda layer, t: (scores.get((layer, t), {}), identity.get((layer, t))))
    rows = []
    for layer, c in zip(layers_df["layer"], layers_df["n_units"]):
        for transform in TRANSFORM_GROUPS:
            real = families_df[(families_df["layer"] == layer) & (families_df["transform"] == transform)]
            rand = random_df[(random_df["layer"] == layer) & (random_df["transform"] == transform)]
            rows.append({"layer": layer, "transform": transform, "units": int(c),
                         "units_in_families": real["unit"].nunique(),
                         "units_in_families_random_basis": rand["unit"].nunique(),
                         "families": real["family"].nunique(), "families_random_basis": rand["family"].nunique()})
    df = pd.DataFrame(rows)
    df["ratio"] = df["units_in_families_random_basis"] / df["units_in_families"].where(df["units_in_families"] > 0)
    return _with_model(df, settings)


def layer_summary_table(settings: RunSettings, layers_df: pd.DataFrame, families_df: pd.DataFrame,
                        basis_df: pd.DataFrame) -> pd.DataFrame:
    """``layer_summary``: per layer and transform, how much of the layer is in families and what to build in.

    ``median_spacing`` is the median over the layer's families of each family's median gap between
    neighbouring members; ``period`` and the order of ``suggested_group`` are the largest family's (see
    :func:`equivar_core.basis.suggested_group`); ``above_chance`` comes from the basis control.
    """
    rows = []
    control = basis_df.set_index(["layer", "transform"])
    for layer, c in zip(layers_df["layer"], layers_df["n_units"]):
        fam = families_df[families_df["layer"] == layer]
        real = {t: above_chance(int(control.loc[(layer, t), "units_in_families"]),
                                int(control.loc[(layer, t), "units_in_families_random_basis"]))
                for t in TRANSFORM_GROUPS if (layer, t) in control.index}
        for transform in TRANSFORM_GROUPS:
            f = fam[fam["transform"] == transform]
            sizes = f.groupby("family").size().sort_values(kind="stable")
            angular = transform in ("rotate", "hue") and len(sizes) > 0
            spacing = {k: median_spacing(g["param"], float(g["period"].iloc[0])) for k, g in f.groupby("family")} \
                if angular else {}
            largest = f[f["family"] == sizes.index[-1]] if len(sizes) else f
            period = float(largest["period"].iloc[0]) if angular else float("nan")
            order = family_order(largest["param"], period) if angular else 0
            n_in = f["unit"].nunique()
            rows.append({"layer": layer, "transform": transform, "units": int(c), "units_in_families": n_in,
                         "fraction": n_in / int(c), "families": len(sizes),
                         "largest_family": int(sizes.max()) if len(sizes) else 0,
                         "median_spacing": float(np.median(list(spacing.values()))) if spacing else float("nan"),
                         "period": period, "above_chance": bool(real.get(transform, False)),
                         "suggested_group": suggested_group(transform, real.get(transform, False), order,
                                                            real.get("hflip", False))})
    return _with_model(pd.DataFrame(rows), settings)


REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "reference")


def reference_family_table(settings: RunSettings) -> pd.DataFrame:
    """``reference_families``: published unit lists for the run's architecture (empty if none is shipped).

    Files ``equivar_core/reference/<spec>_families.csv`` (columns layer, family_name,
    transform, unit, source) hold the lists; users add their own the same way.
    """
    path = os.path.join(REFERENCE_DIR, f"{settings.model}_families.csv")
    cols = ["layer", "family_name", "transform", "unit", "source"]
    df = pd.read_csv(path) if os.path.isfile(path) else pd.DataFrame({c: [] for c in cols})
    return _with_model(df.astype({"unit": int, "layer": str}), settings)


# -- circuits ---------------------------------------------------------------------------------

def layer_pairs(layers: list[str]) -> list[tuple[str, str]]:
    """Consecutive analysed layers (in the order given)."""
    return list(zip(layers[:-1], layers[1:]))


def load_weights(settings: RunSettings, src: str, dst: str) -> tuple[np.ndarray, np.ndarray] | None:
    path = settings.layout.circuit_weights(src, dst)
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return z["weights"], z["dst_units"]


def circuit_weight_table(settings: RunSettings, layers_df: pd.DataFrame, families_df: pd.DataFrame
                         ) -> pd.DataFrame:
    """``circuit_weights``: expanded weights between consecutive analysed layers.

    Every unit pair is kept for small layer pairs; otherwise only family members, and only the
    destination units that the circuit tables use are computed (family members and units invariant to
    rotation or hue, the targets of equivariant -> invariant circuits).
    """
    model, _ = load(settings)
    strides = dict(zip(layers_df["layer"], layers_df["stride"]))
    n_units = dict(zip(layers_df["layer"], layers_df["n_units"]))
    rows = []
    for src, dst in layer_pairs(list(layers_df["layer"])):
        c_src, c_dst = int(n_units[src]), int(n_units[dst])
        if c_dst * c_src <= settings.circuits.all_units_max_pairs:
            dst_units, src_units = np.arange(c_dst), np.arange(c_src)
            computed = dst_units
        else:
            src_units = np.unique(families_df.loc[families_df["layer"] == src, "unit"].to_numpy(int))
            dst_units = np.unique(families_df.loc[families_df["layer"] == dst, "unit"].to_numpy(int))
            targets = [invariant_units(settings, dst, t, dst_units) for t in ("rotate", "hue")]
            computed = np.unique(np.concatenate([dst_units, *targets])).astype(int)
        size = probe_size(model.input_size, strides[src], strides[dst], settings.circuits.max_radius)
        w = expanded_weights(model.module, src, dst, size, settings.resolved_device(), settings.circuits.max_radius,
                             dst_units=computed)
        save_npz(settings.layout.circuit_weights(src, dst), {"weights": w, "dst_units": computed})
        k = w.shape[-1]
        row_of = {int(u): i for i, u in enumerate(computed)}
        sub = w[np.ix_([row_of[int(u)] for u in dst_units], src_units)]
        canc = cancellation(sub)
        r = k // 2
        b, a, dy, dx = np.meshgrid(dst_units, src_units, np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
        bi, ai = np.meshgrid(np.arange(len(dst_units)), np.arange(len(src_units)), indexing="ij")
        rows.append(pd.DataFrame({"src_layer": src, "src_unit": a.ravel(), "dst_layer": dst, "dst_unit": b.ravel(),
                                  "dy": dy.ravel(), "dx": dx.ravel(), "weight": sub.ravel(),
                                  "cancellation": np.repeat(canc[bi, ai].ravel(), k * k)}))
        log.info("circuits: %s -> %s (%d x %d of %d units, %d x %d kernels, %d px probe)", src, dst, c_src,
                 len(computed), c_dst, k, k, size)
    cols = ["src_layer", "src_unit", "dst_layer", "dst_unit", "dy", "dx", "weight", "cancellation"]
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame({c: [] for c in cols})
    return _with_model(df, settings)


def circuit_family_table(settings: RunSettings, weights_df: pd.DataFrame, families_df: pd.DataFrame
                         ) -> pd.DataFrame:
    """``circuit_families``: weight versus relative place, and circuit equivariance, per family pair."""
    rows = []
    bin_ = settings.circuits.delta_bin
    pairs = weights_df[["src_layer", "dst_layer"]].drop_duplicates().itertuples(index=False)
    for src, dst in pairs:
        loaded = load_weights(settings, src, dst)
        if loaded is None:
            continue
        w, computed = loaded
        row_of = np.full(int(computed.max()) + 1 if len(computed) else 0, -1)
        row_of[computed] = np.arange(len(computed))
        total = w.sum((2, 3))
        fsrc = families_df[families_df["layer"] == src]
        fdst = families_df[families_df["layer"] == dst].assign(row=lambda d: row_of[d["unit"].to_numpy(int)])
        for (sf, transform), gs in fsrc.groupby(["family", "transform"]):
            for df_id, gd in fdst[fdst["transform"] == transform].groupby("family"):
                p_src = _family_period(gs, transform)
                p_dst = _family_period(gd, transform)
                eq, n = family_equivariance(w, gs["unit"], gs["param"], gd["row"], gd["param"], transform,
                                            p_src, p_dst, settings.families.tolerance)
                a, b = np.meshgrid(gs["unit"].to_numpy(int), gd["row"].to_numpy(int), indexing="ij")
                pa, pb = np.meshgrid(gs["param"].to_numpy(), gd["param"].to_numpy(), indexing="ij")
                period = max(p_src, p_dst)
                delta = np.mod(pb - pa, period)
                if transform in ("rotate", "hue"):
                    delta = np.mod(np.round(delta / bin_) * bin_, period)
                bins, inverse = np.unique(delta.ravel(), return_inverse=True)
                counts = np.bincount(inverse, minlength=len(bins))
                means = np.bincount(inverse, weights=total[b.ravel(), a.ravel()], minlength=len(bins)) / counts
                rows.append({"src_layer": src, "src_family": int(sf), "dst_layer": dst, "dst_family": int(df_id),
                             "transform": transform, "delta": bins, "mean_weight": means, "n_pairs": counts,
                             "equivariance": eq, "n_matched": n, "dst_unit": -1})
        rows += _invariant_targets(settings, w, total, fsrc, fdst, src, dst, row_of)
    cols = ["src_layer", "src_family", "dst_layer", "dst_family", "transform", "delta", "mean_weight", "n_pairs",
            "equivariance", "n_matched", "dst_unit"]
    df = pd.DataFrame(_stack_rows(rows, cols))
    df["dst_unit"] = df["dst_unit"].astype("Int64").where(df["dst_unit"] >= 0)
    return _with_model(df, settings)


def _stack_rows(parts: list[dict], cols: list[str]) -> dict[str, np.ndarray]:
    """Columns from row groups given as dicts of arrays (one length per group) and scalars (repeated)."""
    lengths = [max((len(v) for v in p.values() if isinstance(v, np.ndarray)), default=1) for p in parts]
    return {c: np.concatenate([np.broadcast_to(np.asarray(p[c], dtype=object if isinstance(p[c], str) else None), (n,))
                               for p, n in zip(parts, lengths)]) if parts else np.zeros(0) for c in cols}


def invariant_units(settings: RunSettings, layer: str, transform: str, exclude) -> np.ndarray:
    """Units whose mean self score over the transform's sweep is at least ``min_invariance`` (not in
    ``exclude``): the ``circuits.max_invariant_targets`` most invariant ones, in unit order."""
    scores = load_scores(settings, layer, transform)
    if not scores:
        return np.zeros(0, dtype=int)
    self_score = np.mean([np.diag(m) for m in scores.values()], axis=0)
    self_score[np.asarray(list(exclude), dtype=int)] = -np.inf
    keep = np.flatnonzero(self_score >= settings.families.min_invariance)
    keep = keep[np.argsort(-self_score[keep], kind="stable")][:settings.circuits.max_invariant_targets]
    return np.sort(keep)


def _invariant_targets(settings, w, total, fsrc, fdst, src, dst, row_of) -> list[pd.DataFrame]:
    """Rows for equivariant -> invariant circuits: a source family into each invariant destination unit."""
    rows = []
    computed = {}                               # transform -> its invariant targets with computed weights
    for transform in ("rotate", "hue"):
        targets = invariant_units(settings, dst, transform, fdst.loc[fdst["transform"] == transform, "unit"])
        targets = targets[(targets < len(row_of))]
        computed[transform] = targets[row_of[targets] >= 0]
    for (sf, transform), gs in fsrc[fsrc["transform"].isin(["rotate", "hue"])].groupby(["family", "transform"]):
        targets = computed[transform]
        if not len(targets):
            continue
        period = _family_period(gs, transform)
        units, params = gs["unit"].to_numpy(int), gs["param"].to_numpy()
        eq = invariant_equivariance(w, units, params, row_of[targets], transform, period)
        n = len(units) * (len(units) - 1)
        delta = np.mod(-params, period)
        rows += [{"src_layer": src, "src_family": int(sf), "dst_layer": dst, "dst_family": -1,
                  "transform": transform, "delta": delta, "mean_weight": total[row_of[c], units],
                  "n_pairs": 1, "equivariance": e, "n_matched": n, "dst_unit": int(c)}
                 for c, e in zip(targets, eq)]
    return rows


def _family_period(group: pd.DataFrame, transform: str) -> float:
    if transform == "hflip":
        return 2.0
    if transform == "scale":
        return float("inf")
    p = group["period"].dropna()
    return float(p.iloc[0]) if len(p) else 360.0
