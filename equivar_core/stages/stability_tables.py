"""How families hold up: refitted in each fold of the photos (``family_stability``) and with each membership
threshold moved (``sensitivity``), one layer at a time, every refit of a layer sharing what its families took
from tuning (:class:`~.family_tables.TunedLayer`); see :mod:`equivar_core.stability`."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from ..activations import TRANSFORM_GROUPS
from ..families import AngularFamilies, PairFamilies
from ..limits import limits_of
from ..settings import FamilySettings, RunSettings
from ..stability import adjusted_rand_index, mean_pairwise_ari, reappearance, singletons
from ..transforms import TRANSFORMS
from ..tables import FAMILY_STABILITY, SENSITIVITY
from .common import _with_model
from .family_tables import TunedLayer, family_table, layer_fits
from .scoring import load_evidence, load_fold_evidence

log = logging.getLogger(__name__)


def _labels(families_df: pd.DataFrame, transform: str, n_units: int) -> np.ndarray:
    """Each unit's family for ``transform`` in a families table of one layer (-1: in none)."""
    out = np.full(n_units, -1)
    f = families_df[families_df["transform"] == transform]
    out[f["unit"].to_numpy(int)] = f["family"].to_numpy(int)
    return out


def _refit(settings: RunSettings, tuned: TunedLayer, layer: str, evidence_of, memo: dict | None = None,
           transforms=TRANSFORM_GROUPS) -> dict[str, np.ndarray]:
    """transform -> each unit's family (-1: in none) in a refit of one layer (each of ``transforms``);
    ``memo`` as in :func:`~.family_tables.layer_fits`."""
    fits = layer_fits(settings, tuned, lambda t: evidence_of(layer, t), relations=False, memo=memo,
                      transforms=transforms)
    none = np.full(len(tuned.frequency), -1)
    return {t: fits[t][0].labels_ if t in fits else none for t in transforms}


def _reading(before: FamilySettings, after: FamilySettings) -> tuple[str, ...]:
    """The transforms whose family estimator has other parameters in ``after`` than in ``before``."""
    def params(fs: FamilySettings, t: str) -> dict:
        T = TRANSFORMS[t]
        return fs.estimator_params(AngularFamilies if T.angular else PairFamilies, T)

    return tuple(t for t in TRANSFORM_GROUPS if params(before, t) != params(after, t))


def checked_family_tables(settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame,
                          layers_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``families``, ``family_stability`` and ``sensitivity``: the refits of the checks share what the
    families took from tuning (:class:`~.family_tables.TunedLayer`, most of a fit's time)."""
    tuned: dict = {}
    families_df = family_table(settings, tuning_df, profiles_df, layers_df, tuned)
    return (families_df, *family_check_tables(settings, tuning_df, profiles_df, layers_df, families_df, tuned))


def family_check_tables(settings: RunSettings, tuning_df: pd.DataFrame, profiles_df: pd.DataFrame,
                        layers_df: pd.DataFrame, families_df: pd.DataFrame, tuned: dict | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``family_stability`` and ``sensitivity`` of the ``families`` table, layer by layer; ``tuned``: layer ->
    :class:`~.family_tables.TunedLayer` where the caller has them."""
    stability, sensitivity = [], []
    for layer, c in zip(layers_df["layer"], layers_df["n_units"]):
        tl = (tuned or {}).get(layer) or TunedLayer.of(settings, tuning_df, profiles_df, layer, c)
        whole = families_df[families_df["layer"] == layer]
        stability += _layer_stability(settings, tl, layer, whole)
        sensitivity += _layer_sensitivity(settings, tl, layer, whole)
    stability_df = pd.DataFrame(stability, columns=FAMILY_STABILITY.built)
    sensitivity_df = pd.DataFrame(sensitivity, columns=SENSITIVITY.built)
    return (_with_model(stability_df.astype({"family": int, "size": int, "folds": int}), settings, FAMILY_STABILITY),
            _with_model(sensitivity_df.astype({"units_in_families": int, "families": int,
                                               "units_in_families_base": int, "families_base": int}), settings,
                        SENSITIVITY))


def _layer_stability(settings: RunSettings, tuned: TunedLayer, layer: str, whole: pd.DataFrame) -> list[dict]:
    """``family_stability`` rows of one layer: whether each family reappears when fitted on a fold of the
    photos alone.

    Families are fitted in each of the ``stability.folds`` folds with the fold's transform scores (the
    passes keep them apart, no pass of its own) and the run's tuning. Per family (``family`` >= 0): the share
    of folds where it reappears (best Jaccard at least ``stability.min_jaccard``) and its median best
    Jaccard. Per layer and transform (``family = -1``): the mean of those shares, the median of the medians,
    ``ari``: the mean adjusted Rand index between the folds' families, ``ari_whole``: between each fold's
    and the whole data's (units in no family count as clusters of their own, see
    :mod:`equivar_core.stability`). ``folds``: the folds that had images.
    """
    st = settings.stability
    c = len(tuned.frequency)
    evidence = {t: load_fold_evidence(settings, layer, t) for t in TRANSFORM_GROUPS}
    folds = [f for f in range(st.folds) if all(evidence[t][f] is not None for t in TRANSFORM_GROUPS)]
    fits = [_refit(settings, tuned, layer, lambda layer, t, f=f: evidence[t][f]) for f in folds]
    rows = []
    for transform in TRANSFORM_GROUPS:
        fold_labels = [fit[transform] for fit in fits]
        real = whole[whole["transform"] == transform]
        shares, medians = [], []
        for family, g in real.groupby("family"):
            share, median = reappearance(g["unit"].to_numpy(int), fold_labels, st.min_jaccard)
            shares.append(share)
            medians.append(median)
            rows.append({"layer": layer, "transform": transform, "family": int(family), "size": len(g),
                         "folds": len(folds), "reappear": share, "median_jaccard": median,
                         "ari": np.nan, "ari_whole": np.nan})
        labels = singletons(_labels(whole, transform, c))
        rows.append({"layer": layer, "transform": transform, "family": -1, "size": real["unit"].nunique(),
                     "folds": len(folds), "reappear": np.mean(shares) if shares else np.nan,
                     "median_jaccard": np.median(medians) if medians else np.nan,
                     "ari": mean_pairwise_ari(fold_labels),
                     "ari_whole": np.mean([adjusted_rand_index(labels, singletons(x)) for x in fold_labels])
                     if fold_labels else np.nan})
    log.info("family stability: %s refitted in %d folds", layer, len(folds))
    return rows


def moved(families: FamilySettings, name: str, change: float) -> float:
    """The family setting ``name`` moved by the share ``change`` of its value, kept inside its declared
    range."""
    field = next(f for f in dataclasses.fields(FamilySettings) if f.name == name)
    limits = limits_of(field)
    value = getattr(families, name) * (1 + change)
    return float(np.clip(value, -np.inf if limits.low is None else limits.low,
                         np.inf if limits.high is None else limits.high))


def _layer_sensitivity(settings: RunSettings, tuned: TunedLayer, layer: str, whole: pd.DataFrame) -> list[dict]:
    """``sensitivity`` rows of one layer: units in families and families per transform when one membership
    threshold (each of ``stability.thresholds``) is moved by each share of ``stability.changes``, the others
    as run.

    Refitted from the stored transform scores and tuning (no pass); ``units_in_families_base`` and
    ``families_base`` are the run's own (the ``families`` table), which a transform whose estimator does
    not read the moved threshold keeps.
    """
    st = settings.stability
    evidence = {t: load_evidence(settings, layer, t) for t in TRANSFORM_GROUPS}
    base = {t: (whole.loc[whole["transform"] == t, "unit"].nunique(),
                whole.loc[whole["transform"] == t, "family"].nunique()) for t in TRANSFORM_GROUPS}
    memo = {t: dict(m) for t, m in tuned.memo.items()}        # one evidence: the refits share it all
    rows = []
    for name in st.thresholds:
        for change in st.changes:
            value = moved(settings.families, name, change)
            s = dataclasses.replace(settings, families=dataclasses.replace(settings.families, **{name: value}))
            refit = _refit(s, tuned, layer, lambda layer, t: evidence[t], memo, _reading(settings.families, s.families))
            for transform in TRANSFORM_GROUPS:
                labels = refit.get(transform)
                counts = base[transform] if labels is None else (int((labels >= 0).sum()),
                                                                 len(np.unique(labels[labels >= 0])))
                rows.append({"layer": layer, "transform": transform, "threshold": name, "change": change,
                             "value": value, "units_in_families": counts[0], "families": counts[1],
                             "units_in_families_base": base[transform][0], "families_base": base[transform][1]})
    log.info("sensitivity: %s refitted %d times", layer, len(st.thresholds) * len(st.changes))
    return rows
