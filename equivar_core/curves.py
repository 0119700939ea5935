"""Curve detectors, measured the way "Curve Detectors" (Cammarata et al., Distill 2020) measures them.

A unit is a curve detector when its strongest response to any synthetic
stimulus (:mod:`equivar_core.stimuli`) is to a curve, and its best curve beats
its best straight edge and line: it prefers curvature, not just an orientation.
For each such unit, from the ``curve_grid`` tuning (orientation at 5 degree
steps x curve radius):

* the radial tuning curve over orientation (max over radius), its preferred
  orientation and its full width at half maximum (degrees, above the curve's
  minimum);
* the radius tuning at the preferred orientation, its preferred radius and
  curvature (1 / radius, per pixel), and how selective it is for curvature:
  the range of the responses over radii divided by the range of the radial
  orientation curve, clipped to [0, 1] (0: any radius will do, 1: radius
  matters as much as orientation).

Curve families are rotation families whose members are mostly curve
detectors; the rotated dataset-example test runs on them at the tuning's
5 degree steps (:mod:`equivar_core.sweeps`).
"""

from __future__ import annotations

import numpy as np

#: stimuli a curve detector must beat: straight luminance features
STRAIGHT = ("edge", "line")
#: the single-parameter tuning curves (marginals) compared to find a unit's best stimulus
MARGINALS = ("edge", "line", "grating", "curve", "high_low", "color_contrast", "center_surround", "circle")


def _grid(tuning: dict[str, np.ndarray], stimulus: str, n_units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params (T,), params2 (R,), responses (C, T, R)) of a two-parameter tuning table."""
    sel = tuning["stimulus"] == stimulus
    p, p2 = np.unique(tuning["param"][sel]), np.unique(tuning["param2"][sel])
    resp = np.full((n_units, len(p), len(p2)), np.nan)
    resp[tuning["unit"][sel].astype(int), np.searchsorted(p, tuning["param"][sel]),
         np.searchsorted(p2, tuning["param2"][sel])] = tuning["response"][sel]
    return p, p2, resp


def _best_by_stimulus(tuning: dict[str, np.ndarray], n_units: int) -> dict[str, np.ndarray]:
    out = {}
    for stim in MARGINALS:
        sel = tuning["stimulus"] == stim
        if sel.any():
            best = np.full(n_units, -np.inf)
            np.maximum.at(best, tuning["unit"][sel].astype(int), tuning["response"][sel])
            out[stim] = best
    return out


def half_max_width(curve: np.ndarray, step: float) -> float:
    """Full width (degrees) of the circular curve's peak above half its height over its minimum."""
    c = curve - curve.min()
    if c.max() <= 0:
        return float("nan")
    above = np.roll(c >= c.max() / 2, -int(np.argmax(c)))          # the peak at index 0
    if above.all():
        return 360.0
    right = int(np.argmin(above))                                   # samples from the peak on, above half
    left = int(np.argmin(above[1:][::-1]))                          # samples before the peak, above half
    return float((right + left) * step)


def curve_detectors(tuning: dict[str, np.ndarray], n_units: int) -> dict[str, np.ndarray]:
    """Columns unit, orientation, radius, curvature, width, radius_selectivity, curve_response,
    straight_response for the curve detectors of one layer (``tuning``: that layer's tuning columns)."""
    best = _best_by_stimulus(tuning, n_units)
    keys = ("unit", "orientation", "radius", "curvature", "width", "radius_selectivity", "curve_response",
            "straight_response")
    if "curve" not in best or not (tuning["stimulus"] == "curve_grid").any():
        return {k: np.zeros(0) for k in keys}
    top = np.stack([best[s] for s in best]).argmax(0)
    straight = np.max([best[s] for s in STRAIGHT if s in best], axis=0)
    names = list(best)
    units = np.flatnonzero((top == names.index("curve")) & (best["curve"] > straight))
    thetas, radii, resp = _grid(tuning, "curve_grid", n_units)
    step = float(np.median(np.diff(thetas))) if len(thetas) > 1 else 360.0
    out: dict[str, list] = {k: [] for k in keys}
    for u in units:
        grid = np.nan_to_num(resp[u], nan=-np.inf)         # T x R
        t, r = np.unravel_index(np.argmax(grid), grid.shape)
        radial = grid.max(1)
        by_radius = grid[t]
        out["unit"].append(int(u))
        out["orientation"].append(float(thetas[t]))
        out["radius"].append(float(radii[r]))
        out["curvature"].append(1.0 / float(radii[r]))
        out["width"].append(half_max_width(radial, step))
        spread = radial.max() - radial.min()
        out["radius_selectivity"].append(float(np.clip((by_radius.max() - by_radius.min()) / spread, 0, 1))
                                         if spread > 0 else 0.0)
        out["curve_response"].append(float(best["curve"][u]))
        out["straight_response"].append(float(straight[u]))
    return {k: np.asarray(v) for k, v in out.items()}
