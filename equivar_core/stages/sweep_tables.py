"""The paper's rotation test (``family_sweeps``, beside its controls and chance level) and curve detectors
(``curve_detectors``)."""

from __future__ import annotations

import dataclasses
import logging
import zlib

import numpy as np
import pandas as pd

from ..activations import TopImages
from ..capture import LayerGeometry
from ..images import ImageView
from ..curves import curve_detectors
from ..settings import RunSettings
from ..sweeps import SweptFamily, UnitStats, chance_within, control_units, layer_sweeps, sweep_error
from ..transforms import ANGULAR, TRANSFORMS, HFlip, Rotate
from ..tables import CURVE_DETECTORS, FAMILY_SWEEPS
from .common import _columns, _geometries, _views, _with_model, load, network
from .scoring import load_scores

log = logging.getLogger(__name__)


def family_sweep_table(settings: RunSettings, families_df: pd.DataFrame, images_df: pd.DataFrame,
                       layers_df: pd.DataFrame, stats_df: pd.DataFrame, profiles_df: pd.DataFrame,
                       curves_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """``family_sweeps``: members' responses as a member's best images are rotated (or hue-shifted), for the
    ``rotation_test.max_families`` largest rotation and hue families of each layer (``step`` degrees apart),
    and for as many of its largest curve families (mostly curve detectors, ``curves_df``) at ``curve_step``
    degrees; each family beside its control (``role = control``: matched units outside the transform's
    families, see :mod:`equivar_core.sweeps`), with the ``chance`` that a random peak passes."""
    model, _ = load(settings)
    views = _views(images_df)
    geoms = {g.layer: g for g in _geometries(layers_df)}
    test = settings.rotation_test
    rows = []
    angular = families_df[families_df["transform"].isin(ANGULAR)]
    flips = families_df[families_df["transform"] == HFlip.name]
    for layer in layers_df["layer"]:
        rows += flip_sweeps(settings, layer, flips[flips["layer"] == layer], geoms[layer], views, stats_df)
        lf = angular[angular["layer"] == layer]
        if lf.empty:
            continue
        ranked = lf.groupby(["family", "transform"]).agg(size=("unit", "size"), fit=("fit", "mean"))
        largest = set(ranked.sort_values(["size", "fit"], ascending=False).head(test.max_families).index)
        curvy = curve_families(families_df, curves_df, layer) if curves_df is not None else set()
        curvy = {f for (f, t) in ranked.loc[[(f, Rotate.name) for f in curvy]].sort_values(
            ["size", "fit"], ascending=False).head(test.max_families).index} if curvy else curvy
        st = stats_df[stats_df["layer"] == layer].sort_values("unit")
        top = TopImages.load(settings.layout.top_images(layer))
        for step, chosen_keys in ((test.step, largest - {(f, Rotate.name) for f in curvy}),
                                  (test.curve_step, {(f, Rotate.name) for f in curvy})):
            chosen = [SweptFamily(int(f), t, g["unit"].to_numpy(int), g["param"].to_numpy(),
                                  float(g["period"].iloc[0]))
                      for (f, t), g in lf.groupby(["family", "transform"]) if (f, t) in chosen_keys]
            if not chosen:
                continue
            if test.controls:
                chosen += sweep_controls(settings, layer, chosen, lf, profiles_df, len(st))
            cols = layer_sweeps(network(model, settings), geoms[layer], views,
                                UnitStats(st["mean"].to_numpy(), st["std"].to_numpy(), top), chosen,
                                dataclasses.replace(test, step=step))
            df = pd.DataFrame(cols)
            periods = {f.family: f.period for f in chosen}
            df.insert(1, "transform", df["family"].map({f.family: f.transform for f in chosen}))
            df.insert(0, "layer", layer)
            df["step"] = step
            period = df["family"].map(periods).to_numpy(float)
            df["error"] = sweep_error(df["peak_angle"].to_numpy(), df["expected_angle"].to_numpy(), period)
            df["chance"] = chance_within(df["expected_angle"].to_numpy(), period, step, test.tolerance)
            df["passed"] = df["error"].to_numpy() <= test.tolerance
            rows.append(df)
        log.info("family sweeps: %s, %d largest and %d curve families of %d", layer, len(largest - {
            (f, Rotate.name) for f in curvy}), len(curvy), ranked.shape[0])
    out = pd.concat(rows, ignore_index=True) if rows else FAMILY_SWEEPS.empty()
    return _with_model(out[FAMILY_SWEEPS.built] if len(out) else out, settings, FAMILY_SWEEPS)


def flip_sweeps(settings: RunSettings, layer: str, pairs: pd.DataFrame, geom: LayerGeometry,
                views: list[ImageView], stats_df: pd.DataFrame) -> list[pd.DataFrame]:
    """The flip test of a layer's ``rotation_test.max_flip_pairs`` best flip pairs (highest flip score
    first): each member's best photos as they are (angle 0) and mirrored about its receptive-field centre
    (angle 1), both members read; beside as many control pairs of units in no flip pair, matched on flip
    invariance (:func:`flip_controls`). Chance: a peak on one of the two versions at random, 1/2."""
    test = settings.rotation_test
    if pairs.empty or not test.max_flip_pairs:
        return []
    best = pairs.groupby("family")["fit"].mean().sort_values(ascending=False, kind="stable")
    chosen = [SweptFamily(int(f), HFlip.name, g.sort_values("param")["unit"].to_numpy(int),
                          g.sort_values("param")["param"].to_numpy(float), 2.0)
              for f, g in pairs.groupby("family") if f in set(best.index[:test.max_flip_pairs])]
    if test.controls:
        chosen += flip_controls(settings, layer, chosen, pairs, int(geom.n_units))
    st = stats_df[stats_df["layer"] == layer].sort_values("unit")
    top = TopImages.load(settings.layout.top_images(layer))
    cols = layer_sweeps(network(load(settings)[0], settings), geom, views,
                        UnitStats(st["mean"].to_numpy(), st["std"].to_numpy(), top), chosen, test)
    df = pd.DataFrame(cols)
    if df.empty:
        return []
    df.insert(1, "transform", HFlip.name)
    df.insert(0, "layer", layer)
    df["step"] = 1.0
    df["error"] = sweep_error(df["peak_angle"].to_numpy(), df["expected_angle"].to_numpy(), 2.0)
    df["chance"] = chance_within(df["expected_angle"].to_numpy(), 2.0, 1.0, 0.0)
    df["passed"] = df["error"].to_numpy() == 0
    log.info("family sweeps: %s, %d best flip pairs of %d", layer, sum(f.role == "member" for f in chosen),
             len(best))
    return [df]


def flip_controls(settings: RunSettings, layer: str, tested: list[SweptFamily], pairs: pd.DataFrame,
                  n_units: int) -> list[SweptFamily]:
    """The control of each tested flip pair: two units of the layer in no flip pair, matched on flip
    invariance (a unit's natural-image score against its own mirrored photos) to the members, given the
    params 0 and 1 at random; both drive (draws seeded by the run, layer and pair)."""
    scores = load_scores(settings, layer, HFlip.name)
    if not scores:
        return []
    invariance = np.diag(next(iter(scores.values()))).astype(float)
    outside = np.setdiff1d(np.flatnonzero(np.isfinite(invariance)), pairs["unit"].to_numpy(int))
    out = []
    for fam in tested:
        rng = np.random.default_rng([settings.seed, zlib.crc32(layer.encode()), fam.family,
                                     list(TRANSFORMS).index(HFlip.name)])
        units = control_units(fam.members, outside, invariance, rng)
        if len(units) < 2:
            continue
        out.append(dataclasses.replace(fam, members=units, params=rng.permutation(fam.params)[:len(units)],
                                       role="control", drivers=None))
    return out


def sweep_controls(settings: RunSettings, layer: str, tested: list[SweptFamily], layer_families: pd.DataFrame,
                   profiles_df: pd.DataFrame, n_units: int) -> list[SweptFamily]:
    """The control of each tested family: as many units of the layer in no family of its transform, matched
    on their tuning selectivity to the members (:func:`~equivar_core.sweeps.control_units`), given the
    family's params in a random order, ``rotation_test.control_drivers`` of them (at random) driving (all
    draws seeded by the run, layer and family)."""
    prof = profiles_df[profiles_df["layer"] == layer]
    selectivity, outside = {}, {}
    for name in {fam.transform for fam in tested}:        # per transform: its stimuli and its families
        sel = prof[prof["stimulus"].isin(TRANSFORMS[name].tuning_stimuli)].groupby("unit")["selectivity"].max()
        selectivity[name] = np.full(n_units, np.nan)
        selectivity[name][sel.index.to_numpy(int)] = sel.to_numpy(float)
        in_families = layer_families.loc[layer_families["transform"] == name, "unit"].to_numpy(int)
        outside[name] = np.setdiff1d(np.flatnonzero(np.isfinite(selectivity[name])), in_families)
    out = []
    for fam in tested:
        rng = np.random.default_rng([settings.seed, zlib.crc32(layer.encode()), fam.family,
                                     list(TRANSFORMS).index(fam.transform)])
        units = control_units(fam.members, outside[fam.transform], selectivity[fam.transform], rng)
        if len(units) < 2:
            log.info("family sweeps: %s family %d has no control (%d units outside families)", layer, fam.family,
                     len(outside[fam.transform]))
            continue
        params = rng.permutation(fam.params)[:len(units)]
        drivers = np.sort(rng.permutation(len(units))[:settings.rotation_test.control_drivers])
        out.append(dataclasses.replace(fam, members=units, params=params, role="control", drivers=drivers))
    return out


def curve_detector_table(settings: RunSettings, tuning_df: pd.DataFrame, layers_df: pd.DataFrame,
                         families_df: pd.DataFrame) -> pd.DataFrame:
    """``curve_detectors``: units whose best stimulus is a curve, with their radial orientation tuning (5 degree
    steps), curvature tuning and rotation family (see :mod:`equivar_core.curves`)."""
    rows = []
    rotate = families_df[families_df["transform"] == Rotate.name]
    for layer, g in tuning_df.groupby("layer", sort=False):
        c = int(layers_df.loc[layers_df["layer"] == layer, "n_units"].iloc[0])
        df = pd.DataFrame(curve_detectors(_columns(g), c))
        fam = rotate[rotate["layer"] == layer].set_index("unit")
        df["family"] = df["unit"].map(fam["family"]).fillna(-1).astype(int)
        df["family_param"] = df["unit"].map(fam["param"])
        df.insert(0, "layer", layer)
        rows.append(df)
    out = pd.concat(rows, ignore_index=True) if rows else CURVE_DETECTORS.empty()
    return _with_model(out.astype({"unit": int, "family": int}) if len(out) else out, settings, CURVE_DETECTORS)


def curve_families(families_df: pd.DataFrame, curves_df: pd.DataFrame, layer: str) -> set[int]:
    """Rotation families of a layer at least half of whose members are curve detectors."""
    rotate = families_df[(families_df["layer"] == layer) & (families_df["transform"] == Rotate.name)]
    curvy = set(curves_df.loc[curves_df["layer"] == layer, "unit"].astype(int)) if len(curves_df) else set()
    return {int(f) for f, g in rotate.groupby("family") if g["unit"].isin(curvy).mean() >= 0.5}
