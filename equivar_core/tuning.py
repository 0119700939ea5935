"""Tuning curves: each unit's response to swept synthetic stimuli.

For every analysed layer, each stimulus kind of :mod:`equivar_core.stimuli`
is drawn on a canvas sized to the layer's receptive field and passed through
the model (the pass stops at that layer). The response of unit u is its
pre-activation (see :mod:`equivar_core.capture`) at the central cell,
maximized over the 3 x 3 neighbouring cells (small position jitter) and over
the nuisance parameters of the stimulus (phase, polarity, curve radius), and
expressed in standard deviations of u over natural images:
``(a - mean_nat(u)) / std_nat(u)``.

A profile summarizes a tuning curve r(theta) sampled on a regular grid:

* ``period`` is 180 if ``corr(r(theta), r(theta + 180)) > 0.8``, 90 if also
  ``corr(r(theta), r(theta + 90)) > 0.8``, else 360; null when the unit is
  untuned (max - min below ``min_modulation`` standard deviations) and for
  size sweeps;
* ``selectivity = |sum r'(theta) exp(i k theta)| / sum r'(theta)`` with
  ``r' = r - min r`` and ``k = 360 / period`` (1 - circular variance), in [0, 1];
* ``preferred`` is the argmax of the curve (modulo the period).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .capture import LayerGeometry, Network, canvas_size, capture
from .limits import setting
from .stimuli import StimulusSettings, render_all
from .tables import TUNING, UNIT_PROFILES
from .transforms import HueRotate, Rotate

log = logging.getLogger(__name__)

#: Stimuli whose ``param`` is an angle; ``circle`` sweeps a size instead.
ANGULAR = {"edge", "line", "grating", "curve", "high_low", "color_contrast", "color_contrast_hue", "center_surround"}
#: Colourless stimuli.
LUMINANCE_STIMULI = ("edge", "line", "grating", "curve", "high_low")
#: What each angular transform does to the tuning curves is the transform's own knowledge
#: (:mod:`equivar_core.transforms`); these names are kept for readers of the tuning tables.
ORIENTATION_STIMULI = Rotate.tuning_stimuli
ROTATION_INVARIANT_STIMULI = Rotate.invariant_stimuli
HUE_STIMULI = HueRotate.tuning_stimuli
HUE_INVARIANT_STIMULI = HueRotate.invariant_stimuli
#: two-parameter tables (param2 set): summarized by their marginals in ``unit_profiles``
GRIDS = ("color_contrast_grid", "curve_grid", "grating_grid")


@dataclass(frozen=True)
class TuningSettings:
    stimuli: StimulusSettings = StimulusSettings()
    batch_size: int = setting(16, low=1, high=4096)
    min_modulation: float = setting(0.3, low=0)   # std units; flatter curves are "untuned"
    symmetry: float = setting(0.8, low=-1, high=1)   # correlation that makes a curve 180- or 90-periodic
    #: pass a picture the sweep shows twice (a line or grating turned by 180 degrees, a colour-contrast
    #: edge with its colours swapped; :func:`~equivar_core.stimuli.half_turn_twins`) through the model once
    draw_twins_once: bool = setting(True)
    #: the layers of the architecture's ``late`` preset (object detectors, 7 x 7 maps): ``skip`` measures no
    #: synthetic stimuli there (their families come from natural-image transform scores alone: flip and scale
    #: pairs; rotation and hue families need tuning curves), ``tune`` measures them as everywhere else
    late: str = setting("skip", choices=("skip", "tune"))


def measure_tuning(net: Network, geometries: list[LayerGeometry], stats: dict[str, tuple[np.ndarray, np.ndarray]],
                   settings: TuningSettings = TuningSettings(),
                   mixes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
                   ) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Tuning responses of every unit of every layer of ``net``.

    Parameters
    ----------
    stats : layer -> (mean, std), each of shape (C,), over natural images.
    mixes : layer -> (Q (C x C), mean (C,), std (C,)): also measure the units of the layer mixed by Q
        (the basis control, :mod:`equivar_core.basis`), standardized by the mixed units' natural-image
        mean and std, from the same forward passes: the raw responses at the read-out cells are mixed
        before any maximum.

    Returns
    -------
    Columns ``layer, unit, stimulus, param, param2, response`` (one row per
    unit and swept stimulus after maximizing over nuisances); with ``mixes``, a second such table for
    the mixed units.
    """
    cols: dict[str, list] = {k: [] for k in TUNING.built}
    mixed: dict[str, list] = {k: [] for k in cols}
    model, device = net.module, net.device
    for geom in geometries:
        size = canvas_size(geom, net.input_size)
        centre = geom.rf_centre(size)
        mean, std = (torch.tensor(a, dtype=torch.float32) for a in stats[geom.layer])
        mix = None
        if mixes is not None and geom.layer in mixes:
            q, m_mean, m_std = (torch.tensor(a, dtype=torch.float32) for a in mixes[geom.layer])
            mix = (q, m_mean, m_std)
        with capture(model, [geom.layer], pre_activation=True) as cap:
            for batch in render_all(size, centre, geom.rf_radius, settings.stimuli, settings.draw_twins_once):
                raw = _centre_responses(cap, geom, batch.images, size, settings.batch_size, device)  # P x C x 9
                raw = raw[torch.as_tensor(batch.picture)]                                         # N x C x 9
                resp = (raw.amax(-1) - mean) / std.clamp_min(1e-6)                               # N x C
                _append_max_over_nuisance(cols, geom.layer, batch, resp.numpy())
                if mix is not None:
                    q, m_mean, m_std = mix
                    resp = (torch.einsum("ij,njk->nik", q, raw).amax(-1) - m_mean) / m_std.clamp_min(1e-6)
                    _append_max_over_nuisance(mixed, geom.layer, batch, resp.numpy())
        log.info("tuning: %s done (%d units, canvas %d px, rf %.1f px)", geom.layer, geom.n_units, size,
                 geom.rf_radius)
    out = {k: _concat(v) for k, v in cols.items()}
    return out if mixes is None else (out, {k: _concat(v) for k, v in mixed.items()})


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


@torch.inference_mode()
def _centre_responses(cap: capture, geom: LayerGeometry, images: torch.Tensor, size: int, batch: int,
                      device: str) -> torch.Tensor:
    """Responses at the central cell and its 8 neighbours, N x C x 9 (fewer cells at a map's edge);
    ``cap`` captures ``geom.layer``."""
    cy, cx = geom.centre_cell(size)

    def centre(layer: str, acts: torch.Tensor) -> torch.Tensor:
        h, w = acts.shape[-2:]
        y0, x0 = min(max(cy - 1, 0), h - 1), min(max(cx - 1, 0), w - 1)
        return acts[:, :, y0:cy + 2, x0:cx + 2]

    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device).contiguous(memory_format=torch.channels_last)
        out.append(cap.run(x, centre)[geom.layer].float().flatten(2).cpu())
    return torch.cat(out)


def _append_max_over_nuisance(cols, layer: str, batch, resp: np.ndarray) -> None:
    """Collapse rows that differ only in nuisance (and, for colour contrast, add the hue marginal)."""
    kind = batch.stimulus[0]
    p2 = np.nan_to_num(batch.param2, nan=-1.0)
    keys = np.stack([batch.param, p2], 1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    best = np.full((len(uniq), resp.shape[1]), -np.inf)
    np.maximum.at(best, inverse.ravel(), resp)
    tables = [(kind, uniq[:, 0], np.where(uniq[:, 1] < 0, np.nan, uniq[:, 1]), best)]
    if kind == "color_contrast":
        hues = np.unique(uniq[:, 1])
        marg = np.stack([best[uniq[:, 1] == h].max(0) for h in hues])
        tables = [(kind, *_marginal(uniq[:, 0], best)), ("color_contrast_hue", hues, np.full(len(hues), np.nan), marg),
                  ("color_contrast_grid", uniq[:, 0], uniq[:, 1], best)]
    elif kind in ("curve", "grating"):   # orientation (max over radius or period), and the two-parameter grid
        tables = [(kind, *_marginal(uniq[:, 0], best)), (f"{kind}_grid", uniq[:, 0], uniq[:, 1], best)]
    for name, param, param2, table in tables:
        n_rows, n_units = table.shape
        cols["layer"].append(np.full(n_rows * n_units, layer, dtype=object))
        cols["unit"].append(np.tile(np.arange(n_units), n_rows))
        cols["stimulus"].append(np.full(n_rows * n_units, name, dtype=object))
        cols["param"].append(np.repeat(np.asarray(param, float), n_units))
        cols["param2"].append(np.repeat(np.asarray(param2, float), n_units))
        cols["response"].append(table.ravel().astype(float))


def _marginal(param: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.unique(param)
    marg = np.stack([table[param == v].max(0) for v in values])
    return values, np.full(len(values), np.nan), marg


def curves(tuning: dict[str, np.ndarray], layer: str, stimulus: str, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Tuning curves of one layer and stimulus as (params (T,), responses (C, T))."""
    sel = (tuning["layer"] == layer) & (tuning["stimulus"] == stimulus)
    params = np.unique(tuning["param"][sel])
    resp = np.full((n_units, len(params)), np.nan)
    idx = np.searchsorted(params, tuning["param"][sel])
    resp[tuning["unit"][sel].astype(int), idx] = tuning["response"][sel]
    return params, resp


def _rows(table: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in table.items()}


def _split(table: dict[str, np.ndarray], key: str) -> dict:
    """The rows of ``table`` for each value of column ``key`` (in sorted order), found with one stable sort
    instead of one comparison of the whole column per value."""
    inverse, values = pd.factorize(table[key], sort=True)       # hashing: no sort of the (text) column
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(values) + 1))
    return {v: {k: col[order[a:b]] for k, col in table.items()} for v, a, b in zip(values, bounds[:-1], bounds[1:])}


def profile(params: np.ndarray, resp: np.ndarray, angular: bool, settings: TuningSettings = TuningSettings()
            ) -> dict[str, np.ndarray]:
    """Preferred parameter, selectivity and period of tuning curves ``resp`` (C x T)."""
    c, t = resp.shape
    modulation = resp.max(1) - resp.min(1)
    tuned = modulation >= settings.min_modulation
    if not angular:
        pref = params[np.argmax(resp, 1)]
        sel = (resp.max(1) - resp.mean(1)) / np.maximum(modulation, 1e-9)
        return {"preferred": pref, "selectivity": np.where(tuned, sel, 0.0), "period": np.full(c, np.nan),
                "modulation": modulation}
    step = 360.0 / t
    r180 = _roll_corr(resp, int(round(180 / step)))
    r90 = _roll_corr(resp, int(round(90 / step)))
    period = np.where(r180 > settings.symmetry, np.where(r90 > settings.symmetry, 90.0, 180.0), 360.0)
    smooth = (np.roll(resp, 1, 1) + 2 * resp + np.roll(resp, -1, 1)) / 4
    pref = np.mod(params[np.argmax(smooth, 1)], period)
    rp = resp - resp.min(1, keepdims=True)
    k = 360.0 / period
    phase = np.exp(1j * np.deg2rad(params)[None, :] * k[:, None])
    sel = np.abs((rp * phase).sum(1)) / np.maximum(rp.sum(1), 1e-9)
    return {"preferred": pref, "selectivity": np.where(tuned, sel, 0.0),
            "period": np.where(tuned, period, np.nan), "modulation": modulation}


def _roll_corr(resp: np.ndarray, shift: int) -> np.ndarray:
    a = resp - resp.mean(1, keepdims=True)
    b = np.roll(a, shift, 1)
    return (a * b).sum(1) / np.maximum(np.sqrt((a * a).sum(1) * (b * b).sum(1)), 1e-12)


def unit_profiles(tuning: dict[str, np.ndarray], n_units: dict[str, int],
                  settings: TuningSettings = TuningSettings()) -> dict[str, np.ndarray]:
    """The columns of ``unit_profiles`` but ``model`` (:data:`equivar_core.tables.UNIT_PROFILES`)."""
    keys = ("preferred", "selectivity", "period", "modulation", "preferred2")
    out: dict[str, list] = {k: [] for k in UNIT_PROFILES.built}
    for layer, c in n_units.items():
        tuning_here = _rows(tuning, tuning["layer"] == layer)
        by_stimulus = _split(tuning_here, "stimulus")
        for stim in [s for s in dict.fromkeys(tuning_here["stimulus"]) if s not in GRIDS]:
            params, resp = curves(by_stimulus[stim], layer, stim, c)
            prof = profile(params, resp, stim in ANGULAR, settings)
            prof["preferred2"] = np.full(c, np.nan)
            if stim == "color_contrast":
                prof["preferred2"] = _grid_preferred_hue(tuning_here, layer, c)
            elif stim == "grating":
                prof["preferred2"] = _grid_preferred_period(tuning_here, layer, c)
            out["layer"] += [layer] * c
            out["unit"] += list(range(c))
            out["stimulus"] += [stim] * c
            for k in keys:
                out[k] += prof[k].tolist()
    return {k: np.asarray(v) for k, v in out.items()}


def _best_cells(tuning: dict[str, np.ndarray], layer: str, grid: str) -> tuple[np.ndarray, ...] | None:
    """Each unit's best cell of a two-parameter grid: (unit, param, param2) arrays; None without that grid."""
    sel = (tuning["layer"] == layer) & (tuning["stimulus"] == grid)
    if not sel.any():
        return None
    unit, param, param2, resp = (tuning[k][sel] for k in ("unit", "param", "param2", "response"))
    order = np.lexsort((resp, unit))
    best = order[np.r_[unit[order][1:] != unit[order][:-1], True]]
    return unit[best].astype(int), param[best], param2[best]


def _grid_preferred_hue(tuning: dict[str, np.ndarray], layer: str, n_units: int) -> np.ndarray:
    """Hue at the best (orientation, hue) cell of the colour-contrast grid, folded so that orientation < 180.

    Colour contrast at (theta + 180, hue) is the stimulus at (theta, hue + 180); folding the
    orientation into [0, 180) makes (preferred, preferred2) a unique description of the unit.
    """
    out = np.full(n_units, np.nan)
    cells = _best_cells(tuning, layer, "color_contrast_grid")
    if cells is not None:
        unit, theta, hue = cells
        out[unit] = np.where(theta >= 180, np.mod(hue + 180, 360), hue)
    return out


def frequency_index(tuning: dict[str, np.ndarray], layer: str, n_units: int) -> np.ndarray:
    """Which grating period each unit prefers, in [-1, 1]; NaN without a grating grid of two periods or more.

    From ``grating_grid``: the unit's responses minus its smallest response on the grid, maximized over
    orientation at the finest period (R_fine) and at the coarsest (R_coarse);
    ``(R_fine - R_coarse) / (R_fine + R_coarse)`` is +1 for a unit that answers only the fine grating,
    -1 for one that answers only the coarse one.
    """
    out = np.full(n_units, np.nan)
    sel = (tuning["layer"] == layer) & (tuning["stimulus"] == "grating_grid")
    if not sel.any():
        return out
    unit, theta, period, resp = (tuning[k][sel] for k in ("unit", "param", "param2", "response"))
    units, periods = np.unique(unit), np.unique(period)
    if len(periods) < 2:
        return out
    order = np.lexsort((theta, period, unit))
    grid = resp[order].reshape(len(units), len(periods), -1)         # unit x period x orientation
    grid = grid - grid.min((1, 2), keepdims=True)
    best = grid.max(-1)
    fine, coarse = best[:, 0], best[:, -1]
    out[units.astype(int)] = (fine - coarse) / np.maximum(fine + coarse, 1e-9)
    return out


def _grid_preferred_period(tuning: dict[str, np.ndarray], layer: str, n_units: int) -> np.ndarray:
    """The grating period (pixels) of the best (orientation, period) cell of the grating grid."""
    out = np.full(n_units, np.nan)
    cells = _best_cells(tuning, layer, "grating_grid")
    if cells is not None:
        unit, _, period = cells
        out[unit] = period
    return out


def stacked_curves(tuning: dict, layer: str, stimuli, n_units: int, steps: int = 72,
                   by_stimulus: dict | None = None) -> np.ndarray:
    """C x S x steps curves, each stimulus resampled circularly onto a common grid.

    ``color_contrast_grid`` contributes one hue curve per orientation of the grid. ``by_stimulus``: the
    layer's rows already split by stimulus (:func:`split_by_stimulus`), for callers that stack several sets.
    """
    by_stimulus = split_by_stimulus(tuning, layer) if by_stimulus is None else by_stimulus
    out = []
    for stim in stimuli:
        rows = by_stimulus.get(stim)
        if rows is None:
            continue
        if stim == "color_contrast_grid":
            for part in _split(rows, "param").values():          # one hue curve per orientation
                params, resp = curves(part | {"param": part["param2"]}, layer, stim, n_units)
                out.append(resample_circular(params, resp, steps))
            continue
        params, resp = curves(rows, layer, stim, n_units)
        if len(params):
            out.append(resample_circular(params, resp, steps))
    return np.stack(out, 1) if out else np.zeros((n_units, 0, steps))


def split_by_stimulus(tuning: dict[str, np.ndarray], layer: str) -> dict[str, dict[str, np.ndarray]]:
    """The tuning rows of one layer, per stimulus."""
    return _split(_rows(tuning, tuning["layer"] == layer), "stimulus")


def resample_circular(params: np.ndarray, resp: np.ndarray, steps: int) -> np.ndarray:
    """Circular linear interpolation of curves (C x T over ``params`` degrees) onto ``steps`` samples."""
    grid = np.arange(steps) * 360.0 / steps
    ext_p = np.concatenate([params - 360, params, params + 360])
    ext_r = np.nan_to_num(np.concatenate([resp, resp, resp], 1))
    return np.stack([np.interp(grid, ext_p, row) for row in ext_r])
