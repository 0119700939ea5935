"""Curve detectors measured as in the Curve Detectors article: exact answers on hand-made tuning tables,
and the real measurement on a planted arc detector."""

import numpy as np
import torch
from torch import nn

from equivar_core.capture import Network, layer_geometry
from equivar_core.curves import curve_detectors, half_max_width
from equivar_core.stimuli import StimulusSettings, curve_radii
from equivar_core.tuning import measure_tuning

THETAS = np.arange(0.0, 360.0, 5.0)
RADII = np.array([4.0, 6.0, 9.0, 16.0])


def _tuning(curve_grid: np.ndarray, straight: np.ndarray) -> dict[str, np.ndarray]:
    """Tuning columns of C units: curve_grid (C x T x R) and its marginal, edge and line maxima ``straight``."""
    c = len(curve_grid)
    cols = {k: [] for k in ("layer", "unit", "stimulus", "param", "param2", "response")}

    def add(stim, unit, param, param2, resp):
        cols["layer"].append("l")
        cols["unit"].append(unit)
        cols["stimulus"].append(stim)
        cols["param"].append(param)
        cols["param2"].append(param2)
        cols["response"].append(resp)

    for u in range(c):
        for i, t in enumerate(THETAS):
            add("curve", u, t, np.nan, curve_grid[u, i].max())
            add("edge", u, t, np.nan, straight[u] * (i == 0))
            add("line", u, t, np.nan, straight[u] * (i == 0))
            for j, r in enumerate(RADII):
                add("curve_grid", u, t, r, curve_grid[u, i, j])
    return {k: np.asarray(v) for k, v in cols.items()}


def test_curve_detectors_are_units_that_prefer_a_curve_to_any_straight_feature():
    bump = np.exp(3 * np.cos(np.deg2rad(THETAS - 90)))                  # peaks at 90 degrees, FWHM ~ 80
    grid = np.zeros((3, len(THETAS), len(RADII)))
    grid[0] = bump[:, None] * np.array([0.2, 1.0, 0.5, 0.1])          # a curve detector for radius 6
    grid[1] = bump[:, None] * 1.0                                      # curves, but straight lines win
    grid[2] = np.roll(bump, 18)[:, None] * np.array([1.0, 1.0, 1.0, 1.0])   # at 180 degrees, any radius
    out = curve_detectors(_tuning(grid, np.array([1.0, 50.0, 1.0])), 3)
    assert out["unit"].tolist() == [0, 2]
    assert out["orientation"].tolist() == [90.0, 180.0]
    assert out["radius"][0] == 6.0 and out["curvature"][0] == 1 / 6.0
    assert out["radius_selectivity"][0] > 0.5 and out["radius_selectivity"][1] == 0.0
    assert 70 <= out["width"][0] <= 85


def test_half_max_width_of_a_box():
    curve = np.zeros(72)
    curve[10:16] = 1.0                                                 # 6 samples of 5 degrees
    assert half_max_width(curve, 5.0) == 30.0


class ArcNet(nn.Module):
    """Unit 0: an arc detector (a bright-line profile across an arc of radius 12 px, convex towards 90
    degrees, up on screen, fading over +-60 degrees of arc); unit 1: a straight edge detector."""

    input_size = 64

    def __init__(self, radius: float = 12.0, span: float = 60.0, sigma: float = 1.5):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 21, padding=10, bias=False)
        self.relu = nn.ReLU()
        yy, xx = torch.meshgrid(torch.arange(21) - 10.0, torch.arange(21) - 10.0, indexing="ij")
        d = ((yy - radius) ** 2 + xx**2).sqrt() - radius                 # circle centred below (y down)
        angle = torch.rad2deg(torch.atan2(xx, radius - yy)).abs()
        arc = (1 - d**2 / sigma**2) * torch.exp(-d**2 / (2 * sigma**2)) * torch.exp(-(angle / span) ** 2)
        edge = torch.tanh(-yy / 2) * torch.exp(-(xx**2 + yy**2) / 50)
        with torch.no_grad():
            self.conv.weight[0] = arc.expand(3, -1, -1) / 3
            self.conv.weight[1] = edge.expand(3, -1, -1) / 3

    def forward(self, x):
        return self.relu(self.conv(x - 0.5))


def test_a_planted_arc_detector_is_found_with_its_orientation():
    """Measured through the real stimuli and tuning: the arc unit is a curve detector whose preferred
    orientation points where the arc is convex (90 degrees, up on screen); the straight unit is not."""
    net = ArcNet().eval()
    geom = layer_geometry(net, ["relu"], 64)
    stats = {"relu": (np.zeros(2), np.ones(2))}
    settings = StimulusSettings(kinds=("edge", "line", "curve"))
    from equivar_core.tuning import TuningSettings

    tuning = measure_tuning(Network(net, 64), geom, stats, TuningSettings(stimuli=settings))
    out = curve_detectors(tuning, 2)
    assert out["unit"].tolist() == [0], out
    d = abs((out["orientation"][0] - 90.0 + 180) % 360 - 180)
    assert d <= 20, out["orientation"]
    assert np.isclose(curve_radii(geom[0].rf_radius), out["radius"][0], rtol=1e-5).any()
    assert np.isclose(out["radius"][0], 12.0, rtol=0.25)                  # the planted arc's radius
