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

from .limits import setting
from .transforms import hue_color

#: every stimulus kind the renderer draws (:func:`_sweep`)
KINDS = ("edge", "line", "grating", "curve", "high_low", "color_contrast", "center_surround", "circle")


@dataclass(frozen=True)
class StimulusSettings:
    """What to draw: sweep steps (degrees) and contrasts."""

    #: sweep steps divide the full turn: tuning curves are read as evenly spaced around it
    orientation_step: float = setting(5.0, low=1, high=90, divides=360)
    hue_step: float = setting(5.0, low=1, high=90, divides=360)
    color_contrast_step: float = setting(15.0, low=1, high=90, divides=360)
    contrast: float = setting(0.5, low=0, high=1, low_open=True)   # Michelson contrast of luminance stimuli
    chroma: float = setting(0.2, low=0, high=0.5, low_open=True)   # distance from grey of coloured stimuli (RGB)
    n_phases: int = setting(4, low=1, high=64)
    n_circle_sizes: int = setting(8, low=1, high=64)
    kinds: tuple[str, ...] = setting(KINDS, choices=KINDS, nonempty=True)


@dataclass
class StimulusBatch:
    """A sweep of N stimuli: per stimulus its kind, swept parameters, nuisance index and picture.

    ``images`` holds the distinct pictures (P x 3 x S x S, P <= N); stimulus i shows ``images[picture[i]]``
    (``picture`` is 0..N-1 unless the sweep was drawn ``distinct``).
    """

    images: torch.Tensor
    stimulus: list[str] = field(default_factory=list)
    param: np.ndarray = field(default_factory=lambda: np.zeros(0))
    param2: np.ndarray = field(default_factory=lambda: np.zeros(0))   # NaN where unused
    nuisance: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # phase / polarity / radius index
    picture: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def image(self, i: int) -> torch.Tensor:
        """The picture of stimulus ``i`` (3 x S x S)."""
        return self.images[int(self.picture[i])]


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
    """``0.5 + (img - 0.5) * a`` with a the soft disc of ``radius``, clipped to [0, 1] (one new tensor)."""
    a = box(radius - canvas.r)[None, None]
    return (img - 0.5).mul_(a).add_(0.5).clamp_(0.0, 1.0)


def _angles(step: float, period: float = 360.0) -> torch.Tensor:
    return torch.arange(0.0, period, step)


def render(kind: str, size: int, centre: tuple[float, float], rf: float,
           settings: StimulusSettings = StimulusSettings(), distinct: bool = False) -> StimulusBatch:
    """Draw one stimulus kind's whole sweep for a layer with RF radius ``rf`` pixels.

    With ``distinct``, a picture that the sweep shows twice is drawn once (see :func:`half_turn_twins`);
    ``batch.picture`` then maps every swept stimulus to its picture.
    """
    cv = Canvas(size, centre)
    param, param2, nuisance, draw = _sweep(kind, cv, rf, settings)
    n = len(param)
    if distinct:
        first, picture = np.unique(half_turn_twins(kind, param, param2, nuisance, settings), axis=0,
                                   return_index=True, return_inverse=True)[1:]
    else:
        first, picture = np.arange(n), np.arange(n)
    img = _drawn(draw, first, cv, rf)
    p2 = np.full(n, np.nan) if param2 is None else np.asarray(param2, dtype=float)
    nuis = np.broadcast_to(np.asarray(nuisance), (n,)).astype(int)
    return StimulusBatch(img.contiguous(), [kind] * n, np.asarray(param, dtype=float), p2, nuis,
                         np.asarray(picture).ravel())


def render_stimulus(kind: str, size: int, centre: tuple[float, float], rf: float, at: tuple[float, float | None],
                    settings: StimulusSettings = StimulusSettings()) -> torch.Tensor:
    """The picture (3 x S x S) of the first stimulus of ``kind``'s sweep with the parameters ``at`` (param and
    param2, None for a kind with one parameter; nuisance 0), drawn alone."""
    param, param2 = at
    cv = Canvas(size, centre)
    params, params2, _, draw = _sweep(kind, cv, rf, settings)
    match = np.isclose(np.asarray(params, dtype=float), param)
    if param2 is not None and params2 is not None:
        match &= np.isclose(np.asarray(params2, dtype=float), param2)
    if not match.any():
        raise ValueError(f"{kind!r} sweeps no stimulus at {param:g}" + ("" if param2 is None else f"/{param2:g}"))
    return _drawn(draw, np.flatnonzero(match)[:1], cv, rf)[0]


def _drawn(draw, rows, cv: Canvas, rf: float) -> torch.Tensor:
    """The pictures of ``rows`` of a sweep inside the soft aperture of radius 2 rf, in [0, 1]."""
    return _aperture(draw(torch.as_tensor(rows)), cv, 2.0 * rf + 1.0)


def half_turn_twins(kind: str, param: np.ndarray, param2, nuisance, settings: StimulusSettings) -> np.ndarray:
    """Keys (N x 3) equal for stimuli of one sweep that draw the same picture.

    A half turn about the centre negates the signed distance along theta, so a line (whose picture
    depends on ``|along(theta)|``) at theta + 180 is the line at theta; a grating at theta + 180 with
    phase phi is the grating at theta with phase -phi (the phases are evenly spaced, so -phi is one of
    them); and ``color_contrast(theta + 180, hue)`` is ``color_contrast(theta, hue + 180)`` (the two colours
    swap sides). Other kinds have no twins: an edge turned by 180 degrees has the opposite polarity.
    """
    param = np.asarray(param, dtype=float)
    n = len(param)
    turned = param >= 180.0
    nuisance = np.broadcast_to(np.asarray(nuisance), (n,)).astype(int)
    if kind == "line":
        return np.stack([np.mod(param, 180.0), nuisance, np.zeros(n)], 1).round(6)
    if kind == "grating":
        k = settings.n_phases
        phase = np.where(turned, np.mod(-(nuisance % k), k), nuisance % k)
        return np.stack([np.mod(param, 180.0), nuisance // k, phase], 1).round(6)
    if kind == "color_contrast":
        hue = np.mod(np.where(turned, np.asarray(param2) + 180.0, param2), 360.0)
        return np.stack([np.mod(param, 180.0), hue, np.zeros(n)], 1).round(6)
    return np.stack([np.arange(n), np.zeros(n), np.zeros(n)], 1)


def _sweep(kind: str, cv: Canvas, rf: float, settings: StimulusSettings):
    """A kind's swept parameters (param, param2 or None, nuisance) and ``draw(rows)``: the pictures of those
    rows of the sweep, before the aperture."""
    if kind not in _SWEEPS:
        raise ValueError(f"unknown stimulus kind {kind!r}")
    return _SWEEPS[kind](cv, rf, settings)


def _edge_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    c, thetas = settings.contrast, _angles(settings.orientation_step)
    return thetas, None, 0, lambda r: _grey(0.5 + c * (box(cv.along(thetas[r])) - 0.5))


def _line_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    c, thetas = settings.contrast, _angles(settings.orientation_step)
    width = max(1.0, rf / 4)
    th, sign = thetas.repeat(2), torch.repeat_interleave(torch.tensor([1.0, -1.0]), len(thetas))

    def line(r):
        bar = box(width / 2 - cv.along(th[r]).abs())
        return _grey(0.5 + c / 2 * sign[r][:, None, None] * bar)
    return th, None, np.repeat([0, 1], len(thetas)), line


def _grating_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    c, thetas = settings.contrast, _angles(settings.orientation_step)
    periods = [max(4.0, 0.8 * rf), max(6.0, 1.6 * rf)]   # >= 4 px: no aliasing at diagonals
    th, per, ph = (a.flatten() for a in torch.meshgrid(
        thetas, torch.tensor(periods), torch.arange(settings.n_phases) * (2 * math.pi / settings.n_phases),
        indexing="ij"))
    nuis = np.arange(len(th)) % (len(periods) * settings.n_phases)
    return th, per.numpy(), nuis, lambda r: _grey(
        0.5 + c / 2 * torch.cos(2 * math.pi * cv.along(th[r]) / per[r][:, None, None] + ph[r][:, None, None]))


def _curve_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    c, thetas = settings.contrast, _angles(settings.orientation_step)
    width = max(1.0, rf / 4)
    th, rad = (a.flatten() for a in torch.meshgrid(thetas, torch.tensor(curve_radii(rf)), indexing="ij"))

    def curve(r):
        t, radius = torch.deg2rad(th[r])[:, None, None], rad[r][:, None, None]
        # an arc of +-60 degrees of the circle of radius rad centred at -rad * n(theta):
        # it passes through the centre, convex towards theta
        dx, dy = cv.x + radius * torch.cos(t), cv.y - radius * torch.sin(t)
        norm = (dx**2 + dy**2).sqrt()
        on_arc = box(dx * torch.cos(t) - dy * torch.sin(t) - 0.5 * norm)
        return _grey(0.5 + c / 2 * box(width / 2 - (norm - radius).abs()) * on_arc)
    return th, rad.numpy(), 0, curve


def _high_low_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    c, thetas = settings.contrast, _angles(settings.orientation_step)
    period = max(4.0, rf / 3)

    def high_low(r):
        u, v = cv.along(thetas[r]), cv.across(thetas[r])
        texture = torch.cos(2 * math.pi * u / period) * torch.cos(2 * math.pi * v / period)
        return _grey(0.5 + c / 2 * texture * box(u))
    return thetas, None, 0, high_low


def _color_contrast_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    k = settings.chroma
    steps = _angles(settings.color_contrast_step)
    th, hue = (a.flatten() for a in torch.meshgrid(steps, steps, indexing="ij"))

    def contrast(r):
        side = box(cv.along(th[r]))[:, None]
        col_a, col_b = hue_color(hue[r], k), hue_color(hue[r] + 180.0, k)
        return side * col_a[:, :, None, None] + (1 - side) * col_b[:, :, None, None]
    return th, hue.numpy(), 0, contrast


def _center_surround_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    k = settings.chroma
    hues = _angles(settings.hue_step)
    inner = box(max(1.0, 0.45 * rf) - cv.r)[None, None]

    def centre_surround(r):
        col_a, col_b = hue_color(hues[r], k), hue_color(hues[r] + 180.0, k)
        return inner * col_a[:, :, None, None] + (1 - inner) * col_b[:, :, None, None]
    return hues, None, 0, centre_surround


def _circle_sweep(cv: Canvas, rf: float, settings: StimulusSettings):
    c = settings.contrast
    radii = torch.tensor(np.geomspace(max(1.5, 0.2 * rf), max(3.0, 1.5 * rf), settings.n_circle_sizes),
                         dtype=torch.float32)
    width = max(1.0, rf / 5)
    return radii, None, 0, lambda r: _grey(
        0.5 + c / 2 * box(width / 2 - (cv.r[None] - radii[r][:, None, None]).abs()))


#: each stimulus kind's sweep: ``(canvas, rf, settings) -> (param, param2 or None, nuisance, draw)``
_SWEEPS = {"edge": _edge_sweep, "line": _line_sweep, "grating": _grating_sweep, "curve": _curve_sweep,
           "high_low": _high_low_sweep, "color_contrast": _color_contrast_sweep,
           "center_surround": _center_surround_sweep, "circle": _circle_sweep}


def curve_radii(rf: float) -> list[float]:
    """Radii (pixels) of the curve stimuli: from tight (0.75 receptive-field radius) to nearly straight (4)."""
    return [max(4.0, 0.75 * rf), max(5.0, 1.25 * rf), max(6.0, 2.0 * rf), max(8.0, 4.0 * rf)]


def render_all(size: int, centre: tuple[float, float], rf: float,
               settings: StimulusSettings = StimulusSettings(), distinct: bool = False) -> list[StimulusBatch]:
    """Every kind in ``settings.kinds`` for one layer."""
    return [render(kind, size, centre, rf, settings, distinct) for kind in settings.kinds]
