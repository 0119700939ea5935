"""Expanded weights between consecutive analysed layers and the circuit tables built on them: weight
versus relative place and circuit equivariance per family pair, and equivariant -> invariant circuits."""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..capture import Network
from ..circuits import (CircuitNull, Expansion, Family, NotConnected, SourceKernels, cancellation, expanded_weights,
                        family_equivariance, invariant_equivariance, kernel_rank_one, probe_size)
from ..settings import RunSettings
from ..storage import save_npz
from ..transforms import ANGULAR, TRANSFORMS, HFlip
from ..tables import CIRCUIT_FAMILIES, CIRCUIT_WEIGHTS
from .common import _stack_rows, _with_model, load
from .scoring import load_scores

log = logging.getLogger(__name__)

#: transforms whose families are read into invariant units (equivariant -> invariant circuits): rotation and
#: hue orbits, and flip pairs (a unit that pools a left- and a right-facing detector with mirrored kernels)
POOLED = (*ANGULAR, HFlip.name)


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
    rotation, hue or mirroring, the targets of equivariant -> invariant circuits).
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
            targets = [invariant_units(settings, dst, t, dst_units) for t in POOLED]
            computed = np.unique(np.concatenate([dst_units, *targets])).astype(int)
        size = probe_size(model.input_size, strides[src], strides[dst], settings.circuits.max_radius)
        try:
            w = expanded_weights(Network(model.module, size, settings.resolved_device()), src, dst, computed,
                                 Expansion(max_radius=settings.circuits.max_radius))
        except NotConnected as exc:
            log.warning("circuits: %s -> %s skipped: %s", src, dst, exc)
            continue
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
    df = pd.concat(rows, ignore_index=True) if rows else CIRCUIT_WEIGHTS.empty()
    return _with_model(df, settings, CIRCUIT_WEIGHTS)


def circuit_family_table(settings: RunSettings, weights_df: pd.DataFrame, families_df: pd.DataFrame
                         ) -> pd.DataFrame:
    """``circuit_families``: weight versus relative place, and circuit equivariance beside its null
    (:class:`~equivar_core.circuits.CircuitNull`, seeded by the run and the layer pair), per family pair."""
    rows = []
    pairs = weights_df[["src_layer", "dst_layer"]].drop_duplicates().itertuples(index=False)
    for src, dst in pairs:
        loaded = load_weights(settings, src, dst)
        if loaded is None:
            continue
        w, computed = loaded
        null = CircuitNull(settings.circuits.null_draws, settings.circuits.null_window, np.random.default_rng(
            [settings.seed, zlib.crc32(f"{src}->{dst}".encode())]))
        row_of = np.full(int(computed.max()) + 1 if len(computed) else 0, -1)
        row_of[computed] = np.arange(len(computed))
        pair = _PairWeights(src, dst, w, row_of, w.sum((2, 3)), null)
        fsrc = families_df[families_df["layer"] == src]
        fdst = families_df[families_df["layer"] == dst].assign(row=lambda d: row_of[d["unit"].to_numpy(int)])
        shared = {}                             # (source family, transform) -> its SourceKernels
        found = _family_targets(settings, pair, fsrc, fdst, shared) + _invariant_targets(settings, pair, fsrc, fdst,
                                                                                           shared)
        rank_one = kernel_rank_one(w)
        rows += [{**r, "kernel_rank_one": rank_one} for r in found]
    cols = [c for c in CIRCUIT_FAMILIES.built if c != "z"]            # z is computed from the others
    df = pd.DataFrame(_stack_rows(rows, cols))
    df.insert(CIRCUIT_FAMILIES.built.index("z"), "z", (df["equivariance"] - df["null_mean"]) / df["null_sd"].where(
        df["null_sd"] > 0))
    df["dst_unit"] = df["dst_unit"].astype("Int64").where(df["dst_unit"] >= 0)
    return _with_model(df, settings, CIRCUIT_FAMILIES)


@dataclass
class _PairWeights:
    """One layer pair's expanded weights as the circuit tables read them: ``w`` (rows: the computed destination
    units), ``row_of`` (destination unit -> its row of ``w``, -1 where not computed), ``total`` (``w`` summed
    over the kernel) and the pair's null."""

    src: str
    dst: str
    w: np.ndarray
    row_of: np.ndarray
    total: np.ndarray
    null: CircuitNull


#: a family pair that cannot be scored (a source family of one member, or a transform without places)
_UNSCORED = (float("nan"), 0, float("nan"), float("nan"))


def _family_targets(settings: RunSettings, pair: _PairWeights, fsrc: pd.DataFrame, fdst: pd.DataFrame,
                    shared: dict) -> list[dict]:
    """Rows for family-to-family circuits of one layer pair, source family by source family (each one's
    :class:`SourceKernels` kept in ``shared``, for the invariant targets)."""
    rows = []
    bin_ = settings.circuits.delta_bin
    targets = {}                            # transform -> the destination families' (id, rows, params, period)
    for (df_id, transform), gd in fdst.groupby(["family", "transform"]):
        targets.setdefault(transform, []).append(
            (df_id, gd["row"].to_numpy(int), gd["param"].to_numpy(), _family_period(gd, transform)))
    for (sf, transform), gs in fsrc.groupby(["family", "transform"]):
        src_units, src_params = gs["unit"].to_numpy(int), gs["param"].to_numpy()
        p_src = _family_period(gs, transform)
        T = TRANSFORMS[transform]
        kernels = SourceKernels.of(pair.w, Family(src_units, src_params, p_src), transform) \
            if len(src_units) >= 2 and (T.angular or T.involution) else None
        shared[(sf, transform)] = kernels
        for df_id, dst_rows, dst_params, p_dst in targets.get(transform, []):
            eq, n, null_mean, null_sd = _UNSCORED if kernels is None else family_equivariance(
                kernels, Family(dst_rows, dst_params, p_dst), settings.families.tolerance, null=pair.null)
            a, b = np.meshgrid(src_units, dst_rows, indexing="ij")
            pa, pb = np.meshgrid(src_params, dst_params, indexing="ij")
            period = max(p_src, p_dst)
            delta = np.mod(pb - pa, period)
            if TRANSFORMS[transform].angular:
                delta = np.mod(np.round(delta / bin_) * bin_, period)
            bins, inverse = np.unique(delta.ravel(), return_inverse=True)
            counts = np.bincount(inverse, minlength=len(bins))
            means = np.bincount(inverse, weights=pair.total[b.ravel(), a.ravel()], minlength=len(bins)) / counts
            rows.append({"src_layer": pair.src, "src_family": int(sf), "dst_layer": pair.dst,
                         "dst_family": int(df_id), "transform": transform, "delta": bins, "mean_weight": means,
                         "n_pairs": counts, "equivariance": eq, "n_matched": n, "null_mean": null_mean,
                         "null_sd": null_sd, "dst_unit": -1})
    return rows


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


def _invariant_targets(settings: RunSettings, pair: _PairWeights, fsrc: pd.DataFrame, fdst: pd.DataFrame,
                       shared: dict) -> list[dict]:
    """Rows for equivariant -> invariant circuits: a source family (a rotation or hue orbit, a flip pair) into
    each destination unit invariant to its transform (``shared``: the source families' :class:`SourceKernels`,
    made for the family-to-family rows). For a flip pair (a, a') into c, W(a' -> c) should be W(a -> c)
    mirrored: a pose-invariant unit pools a left- and a right-facing detector."""
    rows = []
    src, dst, row_of, total = pair.src, pair.dst, pair.row_of, pair.total
    computed = {}                               # transform -> its invariant targets with computed weights
    for transform in POOLED:
        targets = invariant_units(settings, dst, transform, fdst.loc[fdst["transform"] == transform, "unit"])
        targets = targets[(targets < len(row_of))]
        computed[transform] = targets[row_of[targets] >= 0]
    for (sf, transform), gs in fsrc[fsrc["transform"].isin(POOLED)].groupby(["family", "transform"]):
        targets = computed[transform]
        if not len(targets):
            continue
        period = _family_period(gs, transform)
        units, params = gs["unit"].to_numpy(int), gs["param"].to_numpy()
        kernels = shared.get((sf, transform))           # None: a family of one member
        scored = np.full((len(targets), 3), np.nan) if kernels is None else invariant_equivariance(
            kernels, row_of[targets], pair.null)
        n = len(units) * (len(units) - 1)
        delta = np.mod(-params, period)
        rows += [{"src_layer": src, "src_family": int(sf), "dst_layer": dst, "dst_family": -1,
                  "transform": transform, "delta": delta, "mean_weight": total[row_of[c], units],
                  "n_pairs": 1, "equivariance": e, "n_matched": n, "null_mean": m, "null_sd": sd, "dst_unit": int(c)}
                 for c, (e, m, sd) in zip(targets, scored)]
    return rows


def _family_period(group: pd.DataFrame, transform: str) -> float:
    return TRANSFORMS[transform].family_period(group["period"].to_numpy())
