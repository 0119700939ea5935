"""Families (rotation and hue orbits from tuning, flip and scale pairs from scores), the random-basis control
and the per-layer summary."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from ..activations import TRANSFORM_GROUPS
from ..basis import above_chance, family_order, median_spacing, suggested_group
from ..families import (AngularFamilies, Assignment, Evidence, PairFamilies, Relations, curve_memo, flip_relations,
                        relate_families)
from ..moments import StoredMoments
from ..settings import RunSettings
from ..transforms import ANGULAR, IDENTITY_LABEL, PAIRED, TRANSFORMS, HFlip, Rotate, label_amount, version_labels
from ..tuning import frequency_index, split_by_stimulus, stacked_curves
from ..tables import BASIS_CONTROL, FAMILIES, LAYER_SUMMARY
from .common import _columns, _with_model
from .sampling import located
from .scoring import load_evidence, profile_table

log = logging.getLogger(__name__)


def family_table(settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame,
                 layers_df: pd.DataFrame, tuned: dict | None = None) -> pd.DataFrame:
    """``families``: rotation and hue families from tuning, flip and scale pairs from transform scores
    (``tuned`` as in :func:`layer_families`)."""
    return layer_families(settings, tuning_df, profiles_df, layers_df,
                          lambda layer, t: load_evidence(settings, layer, t), tuned)


@dataclasses.dataclass
class TunedLayer:
    """What one layer's families take from its tuning alone, the same in every refit (the folds of
    ``family_stability``, the moved thresholds of ``sensitivity``): the units' frequency index and, per
    angular transform, which units are tuned enough to take part (``eligible``), their stacked curves, the
    curves the transform leaves in place, the fits' memo of what they compute from the curves (``memo``: the
    eligible units' shifted similarity, most of the time a fit takes, see
    :meth:`~equivar_core.families.AngularFamilies.fit`) and that similarity as a C x C matrix (``full``, NaN
    for the other units)."""

    frequency: np.ndarray
    eligible: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]
    invariant: dict[str, np.ndarray]
    memo: dict[str, dict]
    full: dict[str, np.ndarray | None]
    #: synthetic stimuli were measured in the layer (``layers.tuned``): without them no unit has a place on a
    #: circle, so there are no rotation or hue families, and flip pairs are related by scores alone
    measured: bool = True

    @classmethod
    def of(cls, settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame, layer: str, c: int
           ) -> "TunedLayer":
        weighting = settings.families.curve_weighting
        tuning = _columns(tuning_df[tuning_df["layer"] == layer])
        prof = profiles_df[profiles_df["layer"] == layer]
        by_stimulus = split_by_stimulus(tuning, layer)
        out = cls(frequency_index(tuning, layer, c), {}, {}, {}, {}, {}, measured=bool(by_stimulus))
        for transform in ANGULAR:
            T = TRANSFORMS[transform]
            tuned = prof[prof["stimulus"].isin(T.tuning_stimuli) & prof["period"].notna()]
            eligible = np.zeros(c, bool)
            eligible[tuned["unit"].to_numpy(int)] = True
            curves = stacked_curves(tuning, layer, T.tuning_stimuli, c, by_stimulus=by_stimulus)
            out.eligible[transform], out.curves[transform] = eligible, curves
            out.invariant[transform] = stacked_curves(tuning, layer, T.invariant_stimuli, c, by_stimulus=by_stimulus)
            out.memo[transform] = curve_memo(curves, eligible, out.invariant[transform], weighting)
            out.full[transform] = None
            if out.memo[transform]:
                out.full[transform] = np.full((c, c), np.nan)
                out.full[transform][np.ix_(eligible, eligible)] = out.memo[transform]["similarity", weighting][0]
        return out


def layer_fits(settings: RunSettings, tuned: TunedLayer, evidence, relations: bool = True,
               memo: dict[str, dict] | None = None, transforms=TRANSFORM_GROUPS
               ) -> dict[str, tuple[AngularFamilies | PairFamilies, Relations | None]]:
    """One layer's family estimators, fitted, per transform (of ``transforms``, those with evidence), with
    each one's relations (siblings, rotation or mirror flips; skipped without ``relations``); see
    :func:`layer_families`. ``evidence(transform)``: the layer's scores and plain correlations, as
    ``evidence_of`` of :func:`layer_families` gives them. ``memo``: transform -> the angular fits' memo for
    this evidence (refits with other thresholds), else a copy of ``tuned.memo``'s."""
    fs = settings.families
    c = len(tuned.frequency)
    memo = {t: dict(m) for t, m in tuned.memo.items()} if memo is None else memo
    out = {}
    # the layer's rotation families and scores
    rotation, rotation_scores = Assignment(np.full(c, -1), np.full(c, np.nan), {}), {}
    for transform in (t for t in ANGULAR if t in transforms):
        T = TRANSFORMS[transform]
        scores, identity = evidence(transform)
        if transform == Rotate.name:
            rotation_scores = scores
        if not tuned.measured:
            continue
        curves = tuned.curves[transform]
        est = AngularFamilies(**fs.estimator_params(AngularFamilies, T)).fit(
            curves, tuned.eligible[transform], Evidence(scores, identity), tuned.invariant[transform],
            tuned.frequency if T.name == Rotate.name else None, memo[transform])
        out[transform] = est, relate_families(curves, est.assignment_, tuned.frequency, fs,
                                              tuned.full[transform]) if relations else None
        if transform == Rotate.name:
            rotation = est.assignment_
    for transform in (t for t in PAIRED if t in transforms):
        scores, _ = evidence(transform)
        if not scores:
            continue
        est = PairFamilies(**fs.estimator_params(PairFamilies)).fit(scores, directed=TRANSFORMS[transform].directed)
        out[transform] = est, Relations({}, {}, flip_relations(est, rotation, rotation_scores, fs,
                                                             placed=tuned.measured)) \
            if transform == HFlip.name and relations else None
    return out


def layer_families(settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame,
                   layers_df: pd.DataFrame, evidence_of, tuned: dict[str, TunedLayer] | None = None) -> pd.DataFrame:
    """Family rows of every layer from its tuning, profiles and transform scores.

    ``evidence_of(layer, transform)`` gives amount -> C x C scores and the plain correlations they must
    beat (see :func:`load_evidence`): the stored ones, or those of the layer in another basis (the basis
    control). ``tuned``: layer -> :class:`TunedLayer`, the ones the caller has; the others are built and
    added (for the caller's refits).
    """
    tuned = {} if tuned is None else tuned
    rows = []
    for layer, c in zip(layers_df["layer"], layers_df["n_units"]):
        if layer not in tuned:
            tuned[layer] = TunedLayer.of(settings, tuning_df, profiles_df, layer, c)
        next_id = 0
        fits = layer_fits(settings, tuned[layer], lambda t, layer=layer: evidence_of(layer, t))
        for transform, (est, relations) in fits.items():
            new, next_id = _family_rows(layer, transform, est, next_id, tuned[layer].frequency, relations)
            rows += new
    df = pd.DataFrame(rows, columns=FAMILIES.built) if rows else FAMILIES.empty()
    df = df.astype({"family": int, "unit": int, "size": int, "variant": int, "sibling": int,
                    "sibling_similarity": float, "frequency_index": float})
    return _with_model(df.astype({"relation": object}), settings, FAMILIES)


def _family_rows(layer: str, transform: str, est: AngularFamilies | PairFamilies, next_id: int,
                 frequency: np.ndarray | None = None, relations: Relations | None = None) -> tuple[list[dict], int]:
    """Rows of ``est``'s families, numbered from ``next_id`` in label order (a sibling's id likewise), and the
    id after the last."""
    angular = isinstance(est, AngularFamilies)
    period = dict(est.periods_) if angular else {}
    agreement = est.agreement_ if angular else None
    rows = []
    variants = getattr(est, "variants_", np.zeros(len(est.labels_), dtype=int))
    labels = np.unique(est.labels_[est.labels_ >= 0])
    table_id = {int(f): next_id + i for i, f in enumerate(labels)}
    relations = relations or Relations({}, {}, {})
    for f in labels:
        f = int(f)
        members = np.flatnonzero(est.labels_ == f)
        p = period.get(f, np.nan)
        main = members[variants[members] == 0]
        places = family_order(est.params_[main], p) if np.isfinite(p) else np.nan
        for u in members:
            rows.append({"layer": layer, "family": next_id, "transform": transform, "unit": int(u),
                         "param": float(est.params_[u]), "fit": float(est.fit_[u]), "period": p,
                         "agreement": float(agreement[u]) if agreement is not None else np.nan,
                         "size": len(members), "places": places, "holes": places - len(main),
                         "variant": int(variants[u]),
                         "frequency_index": float(frequency[u]) if frequency is not None else np.nan,
                         "sibling": table_id.get(relations.sibling.get(f, -1), -1),
                         "sibling_similarity": relations.similarity.get(f, np.nan),
                         "relation": relations.relation.get(f)})
        next_id += 1
    return rows, next_id


def basis_control_table(settings: RunSettings, layers_df: pd.DataFrame, tuning_rb_df: pd.DataFrame,
                        families_df: pd.DataFrame, identity_df: pd.DataFrame,
                        transformed: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``basis_control``: units and families per layer and transform, in the layer's basis and in a random one.

    The random basis's family assignment is the real one's, run on the mixed tuning
    (``tuning_random_basis``) and on transform scores in the random basis (from the moments, which hold
    the mixed units' squares: no pass over the data); see :mod:`equivar_core.basis`.
    ``transformed``: transform family -> its samples manifest.
    """
    profiles_rb = profile_table(settings, tuning_rb_df, layers_df)
    originals = {r.layer: r for r in located(settings, identity_df).itertuples()}
    scores: dict[tuple[str, str], dict[float, np.ndarray]] = {}
    identity: dict[tuple[str, str], np.ndarray] = {}
    for layer in layers_df["layer"]:
        plain = StoredMoments(originals[layer].moments_path).scores(IDENTITY_LABEL, mixed=True)[0]
        for transform, manifest in transformed.items():
            for r in located(settings, manifest[manifest["layer"] == layer]).itertuples():
                moments = StoredMoments(r.moments_path)
                centred = moments.centred(mixed=True)
                if centred is not None:       # what the family code reads for this transform (load_evidence)
                    identity[(layer, transform)], scores[(layer, transform)] = centred
                    continue
                identity[(layer, transform)] = plain
                for label in version_labels(r.versions):
                    scores.setdefault((layer, transform), {})[label_amount(label)] = moments.scores(
                        label, mixed=True)[0]
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
    return _with_model(df, settings, BASIS_CONTROL)


def layer_summary_table(settings: RunSettings, layers_df: pd.DataFrame, families_df: pd.DataFrame,
                        basis_df: pd.DataFrame) -> pd.DataFrame:
    """``layer_summary``: per layer and transform, how much of the layer is in families and what to build in.

    ``median_spacing`` is the median over the layer's families of each family's median gap between
    neighbouring members; ``period`` and the order of ``suggested_group`` are the largest family's (see
    :func:`equivar_core.basis.suggested_group`), ``group_step`` the degrees between its places (on the image
    for rotation, on the hue circle for hue); ``mirror_pairs`` counts the flip pairs that rotation does not
    explain (:func:`~equivar_core.families.flip_relations`); ``above_chance`` comes from the basis control.
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
            angular = TRANSFORMS[transform].angular and len(sizes) > 0
            spacing = {k: median_spacing(g["param"], float(g["period"].iloc[0])) for k, g in f.groupby("family")} \
                if angular else {}
            largest = f[f["family"] == sizes.index[-1]] if len(sizes) else f
            period = float(largest["period"].iloc[0]) if angular else float("nan")
            order = family_order(largest["param"], period) if angular else 0
            n_in = f["unit"].nunique()
            mirror_pairs = f.loc[f["relation"] == "mirror", "family"].nunique() if transform == HFlip.name else np.nan
            rows.append({"layer": layer, "transform": transform, "units": int(c), "units_in_families": n_in,
                         "fraction": n_in / int(c), "families": len(sizes),
                         "largest_family": int(sizes.max()) if len(sizes) else 0,
                         "median_spacing": float(np.median(list(spacing.values()))) if spacing else float("nan"),
                         "period": period, "mirror_pairs": mirror_pairs,
                         "above_chance": bool(real.get(transform, False)),
                         "group_step": period / order if angular and order else float("nan"),
                         "suggested_group": suggested_group(transform, real.get(transform, False), order,
                                                            real.get(HFlip.name, False), period)})
    return _with_model(pd.DataFrame(rows, columns=LAYER_SUMMARY.built), settings, LAYER_SUMMARY)
