"""Tuning to synthetic stimuli, and transform scores of units on natural images (the evidence families
are built from), with the loaders of the stored score matrices."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from .. import archive_keys as keys
from ..activations import TRANSFORM_GROUPS
from ..basis import mixed_stats, random_orthogonal
from ..errors import EquivarError
from ..moments import StoredMoments
from ..scores import ScoreSettings, linear_map_summary, top_pairs
from ..settings import RunSettings
from ..storage import save_npz
from ..transforms import IDENTITY, IDENTITY_LABEL, label_amount, parse_label, version_labels
from ..tuning import measure_tuning, unit_profiles
from ..tables import SCALE_PAIRS, TRANSFORM_MAPS, TRANSFORM_PAIRS, TUNING, TUNING_RANDOM_BASIS, UNIT_PROFILES
from .common import _columns, _geometries, _with_model, load, network, tuned
from .sampling import located, transformed_activations

log = logging.getLogger(__name__)


def tuning_table(settings: RunSettings, layers_df: pd.DataFrame, stats_df: pd.DataFrame
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``tuning`` and ``tuning_random_basis``: responses (natural-image standard deviations) to every swept
    stimulus, of the layer's units and of the same layer in a random orthogonal basis (same passes); none in
    layers whose tuning is skipped (``layers.tuned``)."""
    model, _ = load(settings)
    layers_df = tuned(layers_df)
    stats, mixes = {}, {}
    for layer, g in stats_df[stats_df["layer"].isin(layers_df["layer"])].groupby("layer"):
        g = g.sort_values("unit")
        stats[layer] = (g["mean"].to_numpy(), g["std"].to_numpy())
        q = random_orthogonal(len(g), settings.seed, layer)
        mixes[layer] = (q, *mixed_stats(stats[layer][0], np.load(settings.layout.cov(layer)), q))
    cols, mixed = measure_tuning(network(model, settings), _geometries(layers_df), stats, settings.tuning, mixes)
    return (_with_model(pd.DataFrame(cols), settings, TUNING),
            _with_model(pd.DataFrame(mixed), settings, TUNING_RANDOM_BASIS))


def profile_table(settings: RunSettings, tuning_df: pd.DataFrame, layers_df: pd.DataFrame) -> pd.DataFrame:
    """``unit_profiles``: preferred parameter, selectivity and period per unit and stimulus."""
    cols = unit_profiles(_columns(tuning_df), dict(zip(layers_df["layer"], layers_df["n_units"])), settings.tuning)
    return _with_model(pd.DataFrame(cols), settings, UNIT_PROFILES)


def transform_pair_table(settings: RunSettings, transformed_df: pd.DataFrame) -> pd.DataFrame:
    """``transform_pairs`` of one transform family: self score and top partners per unit and amount.

    ``transformed_df`` is the sample manifest of the family's versions; the scores come from its
    moments, summed over all images during the passes, which also ran the original images
    (:mod:`equivar_core.moments`): nothing of the identity group is read. The full C x C
    score matrices are saved beside, one ``.npz`` per layer and family (with the orbit-centred ones of
    a colour transform swept over a full orbit; keys of :mod:`equivar_core.archive_keys`).
    """
    top_k = ScoreSettings().top_k
    rows = []
    for r in located(settings, transformed_df).itertuples():
        moments = StoredMoments(r.moments_path)
        matrices = {}
        for label in version_labels(r.versions):
            name, amount = parse_label(label)
            score, null = moments.scores(label)
            matrices |= keys.score_arrays(label, score, null)
            t = top_pairs(score, null, top_k)
            rows.append(pd.DataFrame({"layer": r.layer, "transform": name, "amount": amount, **t}))
        centred = moments.centred()
        if centred is not None:
            matrices |= keys.centred_arrays(r.group, centred[0], centred[1])
        save_npz(settings.layout.scores(r.layer, r.group), matrices)
        log.info("transform scores: %s %s done", r.layer, r.group)
    df = pd.concat(rows, ignore_index=True) if rows else TRANSFORM_PAIRS.empty()
    return _with_model(df, settings, TRANSFORM_PAIRS)


def load_evidence(settings: RunSettings, layer: str, transform: str
                  ) -> tuple[dict[float, np.ndarray], np.ndarray | None]:
    """What families test pairs against: amount -> C x C scores and the plain correlations they must beat.

    The orbit-centred scores where the transform has them (colour transforms over a full orbit),
    else the plain scores and the units' correlations on the same images.
    """
    path = settings.layout.scores(layer, transform)
    if transform in TRANSFORM_GROUPS and settings.sweep.group(transform) and os.path.exists(path):
        with np.load(path) as z:
            centred = keys.centred_scores(z, transform)
        if centred is not None:
            return centred
    return load_scores(settings, layer, transform), load_identity(settings, layer)


def load_fold_evidence(settings: RunSettings, layer: str, transform: str
                       ) -> list[tuple[dict[float, np.ndarray], np.ndarray | None] | None]:
    """:func:`load_evidence` in each fold of the images (``stability.folds``): one entry per fold, from the
    fold scores the passes saved (:meth:`equivar_core.moments.LayerMoments.fold_scores`); None for a fold
    without images."""
    layout = settings.layout

    def arrays(group: str) -> dict[str, np.ndarray]:
        path = layout.fold_scores(layer, group)
        if not os.path.exists(path):
            return {}
        with np.load(path) as z:
            return {k: z[k].astype(np.float32) for k in z.files}

    found = arrays(transform) if transform in TRANSFORM_GROUPS and settings.sweep.group(transform) else {}
    kind = keys.CENTRED if keys.moments_key(keys.CENTRED, IDENTITY_LABEL) in found else keys.PLAIN
    identity = (found if kind == keys.CENTRED else arrays(IDENTITY)).get(keys.moments_key(kind, IDENTITY_LABEL))
    if identity is None:
        raise EquivarError(f"no fold scores of layer {layer!r}: the passes ran without folds; run them again")
    scores = keys.versions_of(found, kind, transform)
    return [None if np.isnan(identity[f]).all() else ({a: m[f] for a, m in scores.items()}, identity[f])
            for f in range(len(identity))]


def load_identity(settings: RunSettings, layer: str) -> np.ndarray | None:
    """C x C correlations of a layer's units on the same images."""
    path = settings.layout.scores(layer, IDENTITY)
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return keys.identity_scores(z)


def load_scores(settings: RunSettings, layer: str, transform: str) -> dict[float, np.ndarray]:
    """amount -> C x C score matrix of one layer and transform (empty when the sweep has none)."""
    path = settings.layout.scores(layer, transform)
    if transform not in TRANSFORM_GROUPS or not settings.sweep.group(transform) or not os.path.exists(path):
        return {}
    with np.load(path) as z:
        return keys.plain_scores(z, transform)


def scale_pair_table(settings: RunSettings, identity_df: pd.DataFrame, scale_df: pd.DataFrame) -> pd.DataFrame:
    """``scale_pairs``: the same feature at another size in a deeper layer.

    For analysed layers A (earlier) and B (later) and each zoom s of the sweep,
    ``score(u, v) = corr(u_A(x), v_B(zoom_s x))`` at the same image points: v
    on the enlarged image does what u does on the original, i.e. v is u at s
    times the size. Rows: each unit of A with its three best partners in B.
    The scores come from the scale family's cross-layer moments
    (:mod:`equivar_core.moments`), summed in its passes; ``identity_df`` names the analysed layers in order.
    """
    top_k = ScoreSettings().top_k
    rows = []
    order = list(identity_df.sort_values("depth")["layer"])
    zoomed = {r.layer: r for r in located(settings, scale_df).itertuples()}
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b not in zoomed:
                continue
            moments = StoredMoments(zoomed[b].moments_path)
            for label in version_labels(zoomed[b].versions):
                found = moments.cross(a, label)
                if found is None:
                    continue
                score, null = found
                t = top_pairs(score, null, top_k, with_self=False)
                best_for_b = score.argmax(0)
                mutual = best_for_b[t["partner"]] == t["unit"]
                rows.append(pd.DataFrame({"small_layer": a, "small_unit": t["unit"], "large_layer": b,
                                          "large_unit": t["partner"], "scale": label_amount(label),
                                          "rank": t["rank"], "score": t["score"], "null_score": t["null_score"],
                                          "z": t["z"], "mutual": mutual}))
    df = pd.concat(rows, ignore_index=True) if rows else SCALE_PAIRS.empty()
    return _with_model(df, settings, SCALE_PAIRS)


def transform_map_table(settings: RunSettings, layers_df: pd.DataFrame) -> pd.DataFrame:
    """``transform_maps``: per layer and transform, how linear, permutation-like or invariant the layer is."""
    rows = []
    for layer in layers_df["layer"]:
        identity = load_identity(settings, layer)
        for transform in TRANSFORM_GROUPS:
            for amount, score in load_scores(settings, layer, transform).items():
                rows.append({"layer": layer, "transform": transform, "amount": amount,
                             **linear_map_summary(identity, score), "n_units": len(identity)})
    return _with_model(pd.DataFrame(rows, columns=TRANSFORM_MAPS.built), settings, TRANSFORM_MAPS)


def all_transform_pairs(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame
                        ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Every transform family's samples and ``transform_pairs``, one after the other (the pipeline runs the
    families as separate assets); returns the concatenated pairs and each family's samples manifest."""
    manifests, pairs = {}, []
    for transform in TRANSFORM_GROUPS:
        manifests[transform] = transformed_activations(settings, images_df, layers_df, transform)
        pairs.append(transform_pair_table(settings, manifests[transform]))
    return pd.concat(pairs, ignore_index=True), manifests
