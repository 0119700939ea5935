"""Universality: the same families in two networks.

The paper finds its families in "every natural-image model we studied". To ask it of two analysed networks
A and B, each rotation or hue family is summarized by its **frame curves**: every member's tuning curves over
the transform's stimuli (:attr:`~equivar_core.transforms.Transform.tuning_stimuli`, resampled onto one
circular grid), turned back by the member's place in the family (its ``param``) and averaged; beside them the
mean of the members' curves over the stimuli that the transform leaves in place
(:attr:`~equivar_core.transforms.Transform.invariant_stimuli`: a rotation family's hue curves, a hue family's
orientation curves), which tell apart features that turn alike (a grey line from a coloured bar). A family of
A and a family of B of the same transform are compared by the **best circular shift correlation** of their
frame curves, the turned curves shifted together and the invariant ones not (a family's reference unit may
sit at any angle). The
synthetic stimuli are the same for every network (scaled to each layer's receptive field), so tuning curves
are comparable across networks where activations are not.

Families are compared at a comparable depth: the layers of B with the same nominal stride (the power of two
nearest ``layers.stride``), the one nearest in relative depth where there are several, and the layer nearest
in relative depth where no layer has that stride. Each family of A is matched to its most similar family of B
in that layer; the match is **mutual** when that family's own best match among the A families of the layer
pair is it.

**Null.** How similar would the best family of B be by chance? Each family of B is rebuilt from random units
of its layer: every member is replaced by a unit drawn from the units of similar selectivity (the same
quintile of the layer's selectivity for the transform's stimuli) that are not members of that family, at the
member's place. The best similarity over B's rebuilt families, over ``draws`` draws: its mean
(``null_similarity``) and 95th percentile (``null_p95``). A match is above the null when its similarity
exceeds that percentile.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


#: the transforms whose families have tuning curves to compare
COMPARED = ("rotate", "hue")


@dataclass(frozen=True)
class Families:
    """One layer's families of one transform: member units and places, and the layer's curves.

    ``curves``: C x S x T tuning curves of every unit over the transform's stimuli, ``invariant``: C x S' x T
    over the stimuli it leaves in place (:func:`~equivar_core.tuning.stacked_curves`); ``members``: per family,
    its units and params (degrees); ``selectivity``: per unit, its largest selectivity over the transform's
    stimuli (``unit_profiles``); ``periods``: per family, the angle after which it repeats (``families.period``:
    360, or 180 or 90 for a family that wraps sooner; 360 for all when not given)."""

    ids: list[int]
    members: list[tuple[np.ndarray, np.ndarray]]
    curves: np.ndarray
    selectivity: np.ndarray
    invariant: np.ndarray | None = None
    periods: list[float] | None = None

    def period(self, family: int) -> float:
        """The period of family ``family`` (its index in ``members``)."""
        return 360.0 if self.periods is None else float(self.periods[family])

    def frames(self, members: list[tuple[np.ndarray, np.ndarray]] | None = None) -> "Frames":
        """The frame curves of the families (or of ``members`` given in their stead)."""
        members = self.members if members is None else members
        inv = self.invariant if self.invariant is not None else np.zeros((len(self.curves), 0, self.curves.shape[-1]))
        return Frames(frame_curves(self.curves, members),
                      np.stack([inv[u].mean(0) for u, _ in members]) if members else np.zeros((0, *inv.shape[1:])))


@dataclass(frozen=True)
class Frames:
    """F families' frame curves: ``turned`` (F x S x T, shifted when compared) and ``invariant`` (F x S' x T)."""

    turned: np.ndarray
    invariant: np.ndarray

    def __len__(self) -> int:
        return len(self.turned)


def turn_back(curves: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """``curves`` (K x S x T over 360 degrees) of K units, each read ``degrees[k]`` further round: the curve
    of unit k as its family's reference unit would give it (a member at place p responds to angle a as the
    reference to a - p). Circular linear interpolation between grid points."""
    t = curves.shape[-1]
    at = (np.arange(t)[None, :] + np.asarray(degrees, float)[:, None] * t / 360.0) % t     # K x T
    lo = np.floor(at).astype(int)
    frac = (at - lo)[:, None, :]
    k = np.arange(len(curves))[:, None]
    below, above = curves[k, :, lo % t], curves[k, :, (lo + 1) % t]       # K x T x S
    turned = below.transpose(0, 2, 1) * (1 - frac) + above.transpose(0, 2, 1) * frac
    return turned


def frame_curves(curves: np.ndarray, members: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """F x S x T: each family's members' curves turned back by their places and averaged."""
    if not members:
        return np.zeros((0, *curves.shape[1:]))
    return np.stack([turn_back(curves[units], params).mean(0) for units, params in members])


def _standardized(f: Frames) -> Frames:
    """Each family's curves, turned and invariant together, less their mean and over their norm."""
    both = np.concatenate([f.turned, f.invariant], 1)
    both = both - both.mean(axis=(1, 2), keepdims=True)
    norm = np.sqrt((both ** 2).sum(axis=(1, 2), keepdims=True))
    both = np.divide(both, norm, out=np.zeros_like(both), where=norm > 0)
    s = f.turned.shape[1]
    return Frames(both[:, :s], both[:, s:])


def shift_similarity(a: Frames | np.ndarray, b: Frames | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best circular-shift correlation of every family's frame curves in ``a`` (N families) with every one's
    in ``b`` (M), the turned curves shifted together (arrays: turned curves alone, N x S x T): N x M
    similarities and the shifts (degrees) at which B's curves best match A's (B's frame is A's turned by the
    shift). One FFT per curve."""
    a, b = (x if isinstance(x, Frames) else Frames(x, np.zeros((len(x), 0, x.shape[-1]))) for x in (a, b))
    a, b = _standardized(a), _standardized(b)
    t = a.turned.shape[-1]
    fa, fb = np.fft.rfft(a.turned, axis=-1), np.fft.rfft(b.turned, axis=-1)
    cross = np.fft.irfft(np.einsum("nsk,msk->nmk", fa, np.conj(fb)), n=t, axis=-1)   # [n, m, d]: sum a(x) b(x-d)
    cross += np.einsum("nst,mst->nm", a.invariant, b.invariant)[..., None]           # the same at every shift
    best = cross.argmax(-1)
    return np.take_along_axis(cross, best[..., None], -1)[..., 0], (-best % t) * 360.0 / t


Members = list[tuple[np.ndarray, np.ndarray]]


def rebuilt_families(b: Families, rng: np.random.Generator, draws: int) -> list[Members]:
    """``draws`` rebuilds of B's families from random units: each member replaced by a unit of the same
    selectivity quintile of the layer that is not in that family, at the member's place (the null's units)."""
    n_units = len(b.selectivity)
    edges = np.quantile(b.selectivity, [0.2, 0.4, 0.6, 0.8])
    quintile = np.searchsorted(edges, b.selectivity, side="right")
    out = []
    for _ in range(draws):
        rebuilt = []
        for units, params in b.members:
            others = np.ones(n_units, bool)
            others[units] = False
            picks = []
            for u in units:
                pool = np.flatnonzero(others & (quintile == quintile[u]))
                pool = pool if len(pool) else np.flatnonzero(others)
                picks.append(rng.choice(pool))
            rebuilt.append((np.array(picks), params))
        out.append(rebuilt)
    return out


def null_similarities(a: Frames, b: Families, rebuilds: list[Members]) -> np.ndarray:
    """draws x N: per draw, each frame curve of ``a`` against the best of B's families as ``rebuilds`` rebuilt
    them from random units of similar selectivity (see the module docstring)."""
    out = np.full((len(rebuilds), len(a)), -np.inf)
    for draw, rebuilt in enumerate(rebuilds):
        if rebuilt:
            sim, _ = shift_similarity(a, b.frames(rebuilt))
            out[draw] = sim.max(1)
    return out


# --- the same photos ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SharedPhotos:
    """Two layers' responses to the same ``photos`` photos at the same points: ``a`` N x C_a and ``b`` N x C_b,
    one row per photo and point, in one order."""

    a: np.ndarray
    b: np.ndarray
    photos: int

    @functools.cached_property
    def standardized(self) -> tuple[np.ndarray, np.ndarray]:
        """Both sides' :func:`standardized_responses`, computed once for all the families of a layer pair."""
        return standardized_responses(self.a), standardized_responses(self.b)


def member_pairs(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], shift: float,
                 period: float = 360.0) -> tuple[np.ndarray, np.ndarray]:
    """Each member of family ``a`` (units, places in degrees) beside the member of ``b`` at the same place
    once B's frame is turned back by ``shift`` (:func:`shift_similarity`: a member of B at place q plays the
    part of A's member at q + shift): A's units and their B counterparts, the nearest place on the circle of
    ``period`` degrees (a line turned by 180 degrees is the same line: the shift of two such families is
    known up to 180)."""
    (units_a, places_a), (units_b, places_b) = a, b
    gap = (np.asarray(places_b, float)[None, :] + shift - np.asarray(places_a, float)[:, None]) % period
    gap = np.minimum(gap, period - gap)
    return np.asarray(units_a), np.asarray(units_b)[gap.argmin(1)]


def standardized_responses(x: np.ndarray) -> np.ndarray:
    """N x C responses less each unit's mean, over its standard deviation (0 for a unit that never varies)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    sd = x.std(0)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)


def photo_correlation(za: np.ndarray, zb: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> float:
    """The mean over member pairs of the correlation of their responses to the same photos at the same
    points (``za``, ``zb``: :func:`standardized_responses` of A's and B's units, rows in the same order)."""
    ua, ub = pairs
    return float((za[:, ua] * zb[:, ub]).mean(0).mean()) if len(ua) else float("nan")


Pairs = tuple[np.ndarray, np.ndarray]


def turned_away(period: float) -> float:
    """How far to turn a family's pairing to pair each member with its most different sibling in orientation:
    90 degrees on a 360 or 180 degree circle (the orthogonal edge or line), half the period on a finer one."""
    return 90.0 if period >= 180 else period / 2


@dataclass(frozen=True)
class Paired:
    """One family of A beside its best match in B: the member pairs at the match's shift (``aligned``), the
    same members paired turned away (:func:`turned_away`), and the pairs with the null's rebuilds of B's
    family from random units."""

    aligned: Pairs
    turned: Pairs
    null: list[Pairs]


def paired_members(a: Families, b: Families, matched: np.ndarray, shifts: np.ndarray, rebuilds: list[Members]
                   ) -> list[Paired]:
    """Per family of A, its members beside those of its best match ``matched[i]`` at ``shifts[i]``
    (:func:`member_pairs`, on the circle of the finer of the two families' periods), beside the same members
    turned away, and beside the null's rebuilds of that family from random units, at the same places."""
    out = []
    for i, j in enumerate(matched):
        period = min(a.period(i), b.period(j))
        out.append(Paired(member_pairs(a.members[i], b.members[j], shifts[i], period),
                          member_pairs(a.members[i], b.members[j], shifts[i] + turned_away(period), period),
                          [member_pairs(a.members[i], r[j], shifts[i], period) for r in rebuilds]))
    return out


def _photo_columns(rows: pd.DataFrame, paired: list[Paired], photos: SharedPhotos | None) -> pd.DataFrame:
    """``photo_correlation`` of each family with its best match (``paired``: :func:`paired_members`), its two
    controls: the same members turned away, and the null's random units (mean and 95th percentile over the
    rebuilds)."""
    if photos is None or not photos.photos:
        return rows.assign(photos=0, photo_correlation=np.nan, turned_photo_correlation=np.nan,
                           null_photo_correlation=np.nan, null_photo_p95=np.nan)
    za, zb = photos.standardized
    null = np.asarray([[photo_correlation(za, zb, p) for p in m.null] for m in paired]).reshape(len(paired), -1)
    return rows.assign(photos=photos.photos, photo_correlation=[photo_correlation(za, zb, m.aligned) for m in paired],
                       turned_photo_correlation=[photo_correlation(za, zb, m.turned) for m in paired],
                       null_photo_correlation=null.mean(1), null_photo_p95=np.quantile(null, 0.95, axis=1))


def match_families(a: Families, b: Families, rng: np.random.Generator, draws: int,
                   photos: SharedPhotos | None = None) -> pd.DataFrame:
    """Each family of A against the families of B (one layer pair, one transform): its best match, the
    similarity and shift, whether the match is mutual, and the null. ``photos``: A's and B's responses to the
    same photos, where both runs kept samples of them: then also the correlation of the matched members'
    responses, against the null's random units."""
    fa, fb = a.frames(), b.frames()
    rows = pd.DataFrame({"family_a": a.ids, "size_a": [len(u) for u, _ in a.members]})
    if not len(fb) or not len(fa):
        return rows.assign(family_b=pd.array([None] * len(rows), "Int64"), size_b=pd.array([None] * len(rows),
                           "Int64"), similarity=np.nan, shift=np.nan, mutual=False, null_similarity=np.nan,
                           null_p95=np.nan, above_null=False, photos=0, photo_correlation=np.nan,
                           turned_photo_correlation=np.nan, null_photo_correlation=np.nan, null_photo_p95=np.nan)
    sim, shift = shift_similarity(fa, fb)
    best_b, best_a = sim.argmax(1), sim.argmax(0)
    rebuilds = rebuilt_families(b, rng, draws)
    null = null_similarities(fa, b, rebuilds)
    idx = np.arange(len(fa))
    rows["family_b"] = np.asarray(b.ids)[best_b]
    rows["size_b"] = [len(b.members[j][0]) for j in best_b]
    rows["similarity"] = sim[idx, best_b]
    rows["shift"] = shift[idx, best_b]
    rows["mutual"] = best_a[best_b] == idx
    rows["null_similarity"] = null.mean(0)
    rows["null_p95"] = np.quantile(null, 0.95, axis=0)
    rows["above_null"] = rows["similarity"] > rows["null_p95"]
    return _photo_columns(rows, paired_members(a, b, best_b, shift[idx, best_b], rebuilds), photos)


def nominal_stride(stride: float) -> int:
    """The power of two nearest a measured stride (240 px over an 8-cell map: 30 -> 32)."""
    return 2 ** round(math.log2(max(stride, 1.0)))


def comparable_layers(layers_a: pd.DataFrame, layers_b: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(layer of A, layer of B, how) for each analysed layer of A: the layer of B with the same nominal stride
    (``how = 'stride'``; the nearest in relative depth among several), else the layer of B nearest in
    relative depth (``'depth'``). ``layers_*``: the ``layers`` tables (layer, depth, stride)."""
    def placed(df):
        df = df.sort_values("depth").reset_index(drop=True)
        rel = np.arange(len(df)) / max(len(df) - 1, 1)
        return df.assign(rel=rel, nominal=[nominal_stride(s) for s in df["stride"]])

    a, b = placed(layers_a), placed(layers_b)
    out = []
    for row in a.itertuples():
        same = b[b["nominal"] == row.nominal]
        pool, how = (same, "stride") if len(same) else (b, "depth")
        if len(pool):
            nearest = pool.iloc[int(np.argmin(np.abs(pool["rel"].to_numpy() - row.rel)))]
            out.append((row.layer, str(nearest["layer"]), how))
    return out
