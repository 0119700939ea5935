"""Synthetic stimuli: the one place in equivar that draws images.

Every stimulus is drawn analytically on a square canvas, all of a sweep in
one batched tensor operation, antialiased by a one-pixel box filter on the
signed distance to each boundary. Stimuli are centred on the receptive-field
centre of the layer's central unit and sized to its effective receptive
field (``rf``: radius in pixels), inside a soft aperture of radius 2 rf on a
mid-grey background.

Conventions (shared with :mod:`equivar_core.transforms`): an orientation
``theta`` is the direction (counter-clockwise on screen, 0 = pointing right)
of a boundary's normal: ``edge(theta)`` is bright on the side theta points
to; ``line(theta)`` is a bar along the boundary of ``edge(theta)``; a curve's
convex side points to theta. Rotating a stimulus by a adds a to theta. Hue is
the chroma-plane angle of :func:`equivar_core.transforms.hue_color`.
``color_contrast(theta, hue)`` is colour ``hue`` on the theta side and the
opposite colour on the other, so orientation + 180 equals hue + 180.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .transforms import hue_color


@dataclass(frozen=True)
class StimulusSettings:
    """What to draw: sweep steps (degrees) and contrasts."""

    orientation_step: float = 5.0
    hue_step: float = 5.0
    color_contrast_step: float = 15.0
    contrast: float = 0.5        # Michelson contrast of luminance stimuli
    chroma: float = 0.2          # distance from grey of coloured stimuli (RGB units)
    n_phases: int = 4
    n_circle_sizes: int = 8
    kinds: tuple[str, ...] = ("edge", "line", "grating", "curve", "high_low",
                              "color_contrast", "center_surround", "circle")


@dataclass
class StimulusBatch:
    """Images N x 3 x S x S with, per row, the stimulus kind, its swept parameters and a nuisance index."""

    images: torch.Tensor
    stimulus: list[str] = field(default_factory=list)
    param: np.ndarray = field(default_factory=lambda: np.zeros(0))
    param2: np.ndarray = field(default_factory=lambda: np.zeros(0))   # NaN where unused
    nuisance: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # phase / polarity / radius index


class Canvas:
    """Pixel-centre coordinates relative to a centre (y, x), in pixels, x right and y down."""

    def __init__(self, size: int, centre: tuple[float, float]):
        ys = torch.arange(size, dtype=torch.float32) + 0.5 - centre[0]
        xs = torch.arange(size, dtype=torch.float32) + 0.5 - centre[1]
        self.y, self.x = torch.meshgrid(ys, xs, indexing="ij")
        self.r = (self.x**2 + self.y**2).sqrt()

    def along(self, theta_deg: torch.Tensor) -> torch.Tensor:
        """Signed distance along direction theta (B x S x S)."""
        t = torch.deg2rad(theta_deg.float())[:, None, None]
        return self.x * torch.cos(t) - self.y * torch.sin(t)

    def across(self, theta_deg: torch.Tensor) -> torch.Tensor:
        """Signed distance along direction theta + 90."""
        return self.along(theta_deg + 90.0)


def box(d: torch.Tensor) -> torch.Tensor:
    """Antialiased step: fraction of a one-pixel box on the positive side of a boundary at d = 0."""
    return (d + 0.5).clamp(0.0, 1.0)


def _grey(lum: torch.Tensor) -> torch.Tensor:
    return lum[:, None].expand(-1, 3, -1, -1)


def _aperture(img: torch.Tensor, canvas: Canvas, radius: float) -> torch.Tensor:
    a = box(radius - canvas.r)[None, None]
    return 0.5 + (img - 0.5) * a


def _sweep(step: float, period: float = 360.0) -> torch.Tensor:
    return torch.arange(0.0, period, step)


def render(kind: str, size: int, centre: tuple[float, float], rf: float,
           settings: StimulusSettings = StimulusSettings()) -> StimulusBatch:
    """Draw one stimulus kind's whole sweep for a layer with RF radius ``rf`` pixels."""
    cv = Canvas(size, centre)
    c, k = settings.contrast, settings.chroma
    thetas = _sweep(settings.orientation_step)
    nan = float("nan")
    if kind == "edge":
        lum = 0.5 + c * (box(cv.along(thetas)) - 0.5)
        return _pack(kind, _grey(lum), thetas, nan, 0, cv, rf)
    if kind == "line":
        width = max(1.0, rf / 4)
        d = cv.along(thetas).abs()
        bar = box(width / 2 - d)
        lum = torch.cat([0.5 + c / 2 * bar, 0.5 - c / 2 * bar])
        return _pack(kind, _grey(lum), thetas.repeat(2), nan, np.repeat([0, 1], len(thetas)), cv, rf)
    if kind == "grating":
        periods = [max(4.0, 0.8 * rf), max(6.0, 1.6 * rf)]   # >= 4 px: no aliasing at diagonals
        th, per, ph = torch.meshgrid(thetas, torch.tensor(periods),
                                     torch.arange(settings.n_phases) * (2 * math.pi / settings.n_phases), indexing="ij")
        th, per, ph = th.flatten(), per.flatten(), ph.flatten()
        lum = 0.5 + c / 2 * torch.cos(2 * math.pi * cv.along(th) / per[:, None, None] + ph[:, None, None])
        nuis = np.arange(len(th)) % (len(periods) * settings.n_phases)
        return _pack(kind, _grey(lum), th, nan, nuis, cv, rf)
    if kind == "curve":
        radii = curve_radii(rf)
        width = max(1.0, rf / 4)
        th, rad = torch.meshgrid(thetas, torch.tensor(radii), indexing="ij")
        th, rad = th.flatten(), rad.flatten()
        t = torch.deg2rad(th)[:, None, None]
        # an arc of +-60 degrees of the circle of radius rad centred at -rad * n(theta):
        # it passes through the centre, convex towards theta
        cx, cy = -rad[:, None, None] * torch.cos(t), rad[:, None, None] * torch.sin(t)
        dx, dy = cv.x - cx, cv.y - cy
        norm = (dx**2 + dy**2).sqrt()
        on_arc = box(dx * torch.cos(t) - dy * torch.sin(t) - 0.5 * norm)
        lum = 0.5 + c / 2 * box(width / 2 - (norm - rad[:, None, None]).abs()) * on_arc
        return _pack(kind, _grey(lum), th, rad.numpy(), 0, cv, rf)
    if kind == "high_low":
        period = max(4.0, rf / 3)
        u, v = cv.along(thetas), cv.across(thetas)
        texture = torch.cos(2 * math.pi * u / period) * torch.cos(2 * math.pi * v / period)
        lum = 0.5 + c / 2 * texture * box(u)
        return _pack(kind, _grey(lum), thetas, nan, 0, cv, rf)
    if kind == "color_contrast":
        steps = _sweep(settings.color_contrast_step)
        th, hue = torch.meshgrid(steps, steps, indexing="ij")
        th, hue = th.flatten(), hue.flatten()
        side = box(cv.along(th))[:, None]
        col_a, col_b = hue_color(hue, k), hue_color(hue + 180.0, k)
        img = side * col_a[:, :, None, None] + (1 - side) * col_b[:, :, None, None]
        return _pack(kind, img, th, hue, 0, cv, rf)
    if kind == "center_surround":
        hues = _sweep(settings.hue_step)
        inner = box(max(1.0, 0.45 * rf) - cv.r)[None, None]
        col_a, col_b = hue_color(hues, k), hue_color(hues + 180.0, k)
        img = inner * col_a[:, :, None, None] + (1 - inner) * col_b[:, :, None, None]
        return _pack(kind, img, hues, nan, 0, cv, rf)
    if kind == "circle":
        radii = torch.tensor(np.geomspace(max(1.5, 0.2 * rf), max(3.0, 1.5 * rf), settings.n_circle_sizes),
                             dtype=torch.float32)
        width = max(1.0, rf / 5)
        ring = box(width / 2 - (cv.r[None] - radii[:, None, None]).abs())
        lum = 0.5 + c / 2 * ring
        return _pack(kind, _grey(lum), radii, nan, 0, cv, rf)
    raise ValueError(f"unknown stimulus kind {kind!r}")


def curve_radii(rf: float) -> list[float]:
    """Radii (pixels) of the curve stimuli: from tight (0.75 receptive-field radius) to nearly straight (4)."""
    return [max(4.0, 0.75 * rf), max(5.0, 1.25 * rf), max(6.0, 2.0 * rf), max(8.0, 4.0 * rf)]


def _pack(kind, img, param, param2, nuisance, cv: Canvas, rf: float) -> StimulusBatch:
    img = _aperture(img, cv, 2.0 * rf + 1.0).clamp(0.0, 1.0)
    n = img.shape[0]
    p2 = np.full(n, np.nan) if isinstance(param2, float) else np.asarray(param2, dtype=float)
    nuis = np.broadcast_to(np.asarray(nuisance), (n,)).astype(int)
    return StimulusBatch(img.contiguous(), [kind] * n, np.asarray(param, dtype=float), p2, nuis)


def render_all(size: int, centre: tuple[float, float], rf: float,
               settings: StimulusSettings = StimulusSettings()) -> list[StimulusBatch]:
    """Every kind in ``settings.kinds`` for one layer."""
    return [render(kind, size, centre, rf, settings) for kind in settings.kinds]
