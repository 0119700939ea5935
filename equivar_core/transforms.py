"""The transformations whose equivariance we measure.

Each transform is a small object with its action on images (``images``), on
points of the image plane (``points``: where a point of ``x`` lands in
``g.x``) and on spatial kernels and maps (``kernels``). Points use normalized
coordinates (x right, y down, both in [-1, 1], ``align_corners=False``), so
the same transform acts on a 224 px image and on its 7 x 7 activation map.

Angles are in degrees, counter-clockwise as seen on screen; a stimulus drawn
at orientation phi and rotated by a is the stimulus at phi + a (see
:mod:`equivar_core.stimuli`). Hue is an angle in the chroma plane of an
opponent colour space orthogonal to the grey axis, with 0 = red,
120 = green, 240 = blue, so ``HueRotate(120)`` maps pure red to pure green.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Orthonormal basis of RGB: grey axis, then the chroma plane (red, and 90 degrees on towards green).
_GREY = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3.0)
_CHROMA_0 = torch.tensor([2.0, -1.0, -1.0]) / math.sqrt(6.0)
_CHROMA_90 = torch.tensor([0.0, 1.0, -1.0]) / math.sqrt(2.0)


def rotation_matrix(degrees: float) -> torch.Tensor:
    """2 x 2 matrix rotating (x, y-down) points counter-clockwise on screen."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return torch.tensor([[c, s], [-s, c]])


def hue_matrix(degrees: float) -> torch.Tensor:
    """3 x 3 RGB matrix rotating the chroma plane by ``degrees`` about the grey axis."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    basis = torch.stack([_GREY, _CHROMA_0, _CHROMA_90])  # rows
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return basis.T @ rot @ basis


def hue_color(hue: torch.Tensor, chroma: float, lightness: float = 0.5) -> torch.Tensor:
    """RGB colours (... x 3) of given hue (degrees) and chroma around grey ``lightness``."""
    t = torch.deg2rad(torch.as_tensor(hue, dtype=torch.float32))[..., None]
    grey = torch.full((3,), lightness)
    return grey + chroma * (torch.cos(t) * _CHROMA_0 + torch.sin(t) * _CHROMA_90)


def warp(x: torch.Tensor, inverse_2x2: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Sample ``out(q) = x(A^-1 q)`` for every pixel q; ``inverse_2x2`` is A^-1 (N x C x H x W)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, :, :2] = inverse_2x2.to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


#: stimulus kinds swept over orientation: the colourless ones and colour contrast (maximized over hue). A
#: rotation shifts their curves; a hue rotation leaves them in place.
ORIENTED_STIMULI = ("edge", "line", "grating", "curve", "high_low", "color_contrast")


@dataclass(frozen=True)
class Transform:
    """Base class: a named transform with an amount (see subclasses)."""

    amount: float
    name = "identity"
    #: does the transform move points (False for hue)?
    spatial = True
    #: are amounts angles on a circle? Then families are orbits with places and a period, found from tuning
    #: curves (:class:`~equivar_core.families.AngularFamilies`); else they are pairs found from transform
    #: scores (:class:`~equivar_core.families.PairFamilies`).
    angular = False
    #: pairs only: does ``scores[a][u, v]`` (u on x, v on g.x) differ from ``scores[a][v, u]``?
    directed = False
    #: is the transform its own inverse (a member's partner is then the other member of its pair)?
    involution = False
    #: angular only: stimuli whose tuning curves shift with the transform, stimuli whose curves it leaves in
    #: place, the ``FamilySettings`` field that says how closely the latter must match, the curves plotted
    tuning_stimuli: tuple[str, ...] = ()
    invariant_stimuli: tuple[str, ...] = ()
    invariant_setting = "min_invariant_similarity"
    plotted_stimuli: tuple[str, ...] = ()

    def matrix(self) -> torch.Tensor:
        """The 2 x 2 linear map A of the image plane: a point p of x lands at A p in g.x."""
        return torch.eye(2)

    def points(self, p: torch.Tensor) -> torch.Tensor:
        """Where points ``p`` (P x 2, normalized x, y) of ``x`` land in ``g.x``."""
        return p @ self.matrix().T.to(p)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """``g.x`` for RGB images in [0, 1] (N x 3 x H x W); content outside is reflected."""
        return warp(x, torch.linalg.inv(self.matrix()))

    def images_about(self, x: torch.Tensor, source: tuple[float, float], target: tuple[float, float],
                     size: int | None = None) -> torch.Tensor:
        """``g.x`` about a point: the content at pixel ``source`` (y, x) of ``x`` is moved to ``target`` of an
        output canvas of ``size`` pixels (default: x's) and transformed about it,
        ``out(q) = x(source + A^-1 (q - target))``, in one resampling (reflecting at x's border).

        Pixel coordinates are continuous (the first pixel's centre is 0.5). Rotating about ``target``
        instead of the image centre keeps a unit's receptive field on the feature it was centred on.
        """
        return self.images_about_each(x, [self.amount], source, target, size)

    @classmethod
    def images_about_each(cls, x: torch.Tensor, amounts, source: tuple[float, float], target: tuple[float, float],
                          size: int | None = None) -> torch.Tensor:
        """:meth:`images_about` for each of ``amounts`` in one resampling: ``len(amounts) * N`` canvases, the
        N images of the first amount first (as concatenating the single calls would give)."""
        n, c, h, w = x.shape
        size = size or w
        elements = [cls(float(a)) for a in amounts]
        if cls.spatial:
            inv = torch.linalg.inv(torch.stack([g.matrix() for g in elements])).to(x)       # K x 2 x 2
        else:
            inv = torch.eye(2).to(x)[None]
        scale = torch.tensor([2.0 / w, 2.0 / h]).to(x)
        src = torch.tensor([source[1], source[0]]).to(x) * scale - 1                  # normalized in x
        offset = torch.tensor([size / 2 - target[1], size / 2 - target[0]]).to(x)    # canvas pixels
        theta = torch.zeros(len(inv), n, 2, 3, dtype=x.dtype, device=x.device)
        theta[..., :2] = (inv * (size / w))[:, None]
        theta[..., 2] = (src + (inv @ offset) * scale)[:, None]
        k = len(inv)
        grid = F.affine_grid(theta.reshape(k * n, 2, 3), [k * n, c, size, size], align_corners=False)
        source_images = x.repeat(k, 1, 1, 1) if k > 1 else x
        moved = F.grid_sample(source_images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if cls.spatial:
            return moved
        return torch.cat([g.images(moved) for g in elements])

    def kernels(self, w: torch.Tensor) -> torch.Tensor:
        """The spatial action on kernels or maps (... x H x W), zero outside."""
        if not self.spatial:
            return w
        flat = w.reshape(-1, 1, *w.shape[-2:])
        out = warp(flat, torch.linalg.inv(self.matrix()), padding_mode="zeros")
        return out.reshape(w.shape)

    def valid(self, p: torch.Tensor, radius: float) -> torch.Tensor:
        """Points p whose image ``A p`` stays inside the central disc of ``radius``."""
        return self.points(p).norm(dim=-1) <= radius + 1e-6

    @property
    def label(self) -> str:
        """This element's text label, ``NAME:AMOUNT`` (:func:`label`)."""
        return label(self.name, self.amount)

    # -- what a family of this transform is -------------------------------------------------------------------
    @classmethod
    def family_period(cls, periods) -> float:
        """The period of a family's params, from the periods of its rows (angular: theirs, else 360)."""
        known = [float(p) for p in periods if p == p]
        return known[0] if known else 360.0

    @classmethod
    def relative(cls, params_from: np.ndarray, params_to: np.ndarray, period: float) -> np.ndarray:
        """The amounts that take members with ``params_from`` to members with ``params_to``."""
        return np.mod(np.asarray(params_to, float) - np.asarray(params_from, float), period)

    @classmethod
    def act_on_kernels(cls, kernels: torch.Tensor, amounts) -> torch.Tensor:
        """Each kernel of ``kernels`` (N x H x W) transformed by its own amount, as a circuit's weights between
        two family members move: by default they stay (hue moves colours, not places)."""
        return kernels

    @classmethod
    def suggested_group(cls, order: int, flips: bool, period: float = 360.0) -> str:
        """The symmetry to build into a layer whose largest family of this transform has ``order`` places on
        a circle of ``period`` degrees (``flips``: whether flip pairs are above chance in the same layer)."""
        return "none"

    @classmethod
    def testing_elements(cls) -> list["Transform"]:
        """A few elements to test the transform's actions on (tests/test_transforms.py runs every registered
        transform through them)."""
        return [cls(0.0)]


@dataclass(frozen=True)
class Rotate(Transform):
    """Rotation about the image centre by ``amount`` degrees (counter-clockwise)."""

    name = "rotate"
    angular = True
    tuning_stimuli = ORIENTED_STIMULI
    #: centre-surround hue curves and the colour-contrast hue curve maximized over orientation (the
    #: orientation x hue grid itself shifts along orientation under a rotation)
    invariant_stimuli = ("center_surround", "color_contrast_hue")
    plotted_stimuli = tuning_stimuli

    def matrix(self) -> torch.Tensor:
        return rotation_matrix(self.amount)

    @classmethod
    def act_on_kernels(cls, kernels: torch.Tensor, amounts) -> torch.Tensor:
        """Rotated counter-clockwise by per-kernel angles (bilinear, zero outside)."""
        t = np.radians(-np.asarray(amounts, dtype=float).reshape(-1))       # rotation_matrix(-d), vectorized
        c, s = np.cos(t), np.sin(t)
        inv = torch.as_tensor(np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1), dtype=torch.float32)
        return warp(kernels[:, None].float(), inv, padding_mode="zeros")[:, 0]

    @classmethod
    def suggested_group(cls, order: int, flips: bool, period: float = 360.0) -> str:
        """The rotations of the image that the family implies: its members are ``period / order`` degrees
        apart, so the group is C_N with N = 360 / that step = ``order * 360 / period`` (a 180-periodic
        family of 7 places steps by about 26 degrees: C14, each member fixed by the half turn), or the
        dihedral D_N where flip pairs are above chance too."""
        if order < 2:
            return "none"
        n = int(round(order * 360.0 / period)) if np.isfinite(period) and period > 0 else order
        return f"D{n}" if flips else f"C{n}"

    @classmethod
    def testing_elements(cls) -> list["Transform"]:
        return [cls(a) for a in (0.0, 30.0, 90.0, 135.0, 270.0)]

    def kernels(self, w: torch.Tensor) -> torch.Tensor:
        quarter = self.amount / 90.0
        if abs(quarter - round(quarter)) < 1e-9 and w.shape[-1] == w.shape[-2]:
            return torch.rot90(w, int(round(quarter)) % 4, dims=(-2, -1))  # exact on the grid
        return super().kernels(w)


@dataclass(frozen=True)
class HFlip(Transform):
    """Mirror left-right (``amount`` is 1 by convention)."""

    amount: float = 1.0
    name = "hflip"
    involution = True

    @classmethod
    def family_period(cls, periods) -> float:
        return 2.0

    @classmethod
    def relative(cls, params_from: np.ndarray, params_to: np.ndarray, period: float) -> np.ndarray:
        return np.zeros(np.broadcast(np.asarray(params_from), np.asarray(params_to)).shape)

    @classmethod
    def act_on_kernels(cls, kernels: torch.Tensor, amounts) -> torch.Tensor:
        return kernels.flip(-1)

    @classmethod
    def suggested_group(cls, order: int, flips: bool, period: float = 360.0) -> str:
        return "D1 (flip)"

    @classmethod
    def testing_elements(cls) -> list["Transform"]:
        return [cls()]

    def matrix(self) -> torch.Tensor:
        return torch.tensor([[-1.0, 0.0], [0.0, 1.0]])

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def kernels(self, w: torch.Tensor) -> torch.Tensor:
        return w.flip(-1)


@dataclass(frozen=True)
class HueRotate(Transform):
    """Rotate every pixel's colour about the grey axis by ``amount`` degrees; no spatial change."""

    name = "hue"
    spatial = False
    angular = True
    #: a unit's spatial colour layout must match too: the grid gives one hue curve per orientation
    tuning_stimuli = ("center_surround", "color_contrast_grid")
    #: the colourless stimuli and the orientation curve of colour contrast (maximized over hue)
    invariant_stimuli = ORIENTED_STIMULI
    #: natural images confirm any colour unit's smooth colour (scores.orbit_centred_scores), so how the colour
    #: is laid out in space must match more closely
    invariant_setting = "min_hue_invariant_similarity"
    plotted_stimuli = ("center_surround", "color_contrast_hue")

    @classmethod
    def suggested_group(cls, order: int, flips: bool, period: float = 360.0) -> str:
        """C_N acting on hue (N places on the hue circle)."""
        return f"C{order} (hue)" if order >= 2 else "none"

    @classmethod
    def testing_elements(cls) -> list["Transform"]:
        return [cls(a) for a in (0.0, 60.0, 120.0, 250.0)]

    def images(self, x: torch.Tensor) -> torch.Tensor:
        m = hue_matrix(self.amount).to(x)
        return torch.einsum("ij,njhw->nihw", m, x).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Scale(Transform):
    """Zoom about the centre by the factor ``amount`` (> 1 enlarges the content)."""

    name = "scale"
    directed = True

    def matrix(self) -> torch.Tensor:
        return torch.eye(2) * self.amount

    @classmethod
    def family_period(cls, periods) -> float:
        return float("inf")

    @classmethod
    def suggested_group(cls, order: int, flips: bool, period: float = 360.0) -> str:
        return "scale"

    @classmethod
    def testing_elements(cls) -> list["Transform"]:
        return [cls(a) for a in (1.0, 1.5, 2.0)]


# -- the text label of a transform element: its one spelling -----------------------------------------------------
#: between a label's name and amount (``rotate:30``), and between the labels of a sweep group's ``versions``
_LABEL_SEPARATOR, _VERSIONS_SEPARATOR = ":", ";"


def label(name: str, amount: float) -> str:
    """The text label of the element ``amount`` of transform ``name``: ``NAME:AMOUNT`` with the amount in
    ``%g`` (``rotate:30``, ``scale:1.5``, ``identity:0``). Sample manifests (``versions``), moment and score
    archives spell the versions of a sweep group so; :func:`parse_label` reads them back."""
    return f"{name}{_LABEL_SEPARATOR}{float(amount):g}"


def parse_label(text: str) -> tuple[str, float]:
    """(name, amount) of a label written by :func:`label`; ``ValueError`` for anything else."""
    name, separator, amount = text.partition(_LABEL_SEPARATOR)
    try:
        if not separator or not name:
            raise ValueError(text)
        return name, float(amount)
    except ValueError:
        raise ValueError(f"not a transform label (NAME:AMOUNT): {text!r}") from None


def label_amount(text: str) -> float:
    """The amount of a label (:func:`parse_label`)."""
    return parse_label(text)[1]


def versions_text(labels: list[str]) -> str:
    """A sweep group's labels as one text (the ``versions`` column of the sample manifests)."""
    return _VERSIONS_SEPARATOR.join(labels)


def version_labels(text: str) -> list[str]:
    """The labels of a ``versions`` text (:func:`versions_text`), in order."""
    return text.split(_VERSIONS_SEPARATOR) if text else []


#: the one registry: every transform equivar measures, by name
TRANSFORMS = {"rotate": Rotate, "hflip": HFlip, "hue": HueRotate, "scale": Scale}
#: the name of the untransformed inputs' sweep group, and the label of the untransformed images (``identity:0``)
IDENTITY = Transform.name
IDENTITY_LABEL = label(IDENTITY, 0.0)
#: transforms whose families are orbits on a circle (rotation, hue), and those whose families are pairs
ANGULAR = tuple(name for name, t in TRANSFORMS.items() if t.angular)
PAIRED = tuple(name for name, t in TRANSFORMS.items() if not t.angular)


def make_transform(name: str, amount: float) -> Transform:
    """The element ``amount`` of the registered transform ``name``."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name](float(amount))


def disc_points(height: int, width: int, radius: float, max_points: int) -> torch.Tensor:
    """Normalized centres (P x 2) of map cells inside the central disc of ``radius``.

    The grid is thinned by an integer step so that at most about ``max_points`` remain.
    """
    ys = (torch.arange(height) + 0.5) / height * 2 - 1
    xs = (torch.arange(width) + 0.5) / width * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    inside = (xx**2 + yy**2).sqrt() <= radius
    n_inside = int(inside.sum())
    step = max(1, int(math.ceil(math.sqrt(n_inside / max_points)))) if n_inside > max_points else 1
    sub = torch.zeros_like(inside)
    sub[step // 2::step, step // 2::step] = True
    keep = inside & sub
    return torch.stack([xx[keep], yy[keep]], dim=-1)


def sample_at(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of maps (N x C x H x W) at normalized points (P x 2) -> N x C x P."""
    grid = points.to(maps)[None, None].expand(maps.shape[0], 1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
