"""Models with known structure, to prove that the pipeline finds what is there and nothing else.

:func:`planted_model` builds a small two-layer CNN (input 64 px) whose first
convolution ``conv1`` (9 x 9 kernels) holds, in a seeded random channel
order:

* a rotation family of an oriented edge template (derivative of a Gaussian)
  at ``n_edges`` equally spaced angles over 360 degrees;
* a 180-periodic family of a line template (second derivative) at
  ``n_lines`` angles over 180 degrees;
* a hue family of colour centre-surround units (a difference of Gaussians
  whose colour axis is rotated in the chroma plane) at ``n_hues`` hues;
* ``n_flip_pairs`` left/right mirrored pairs of asymmetric colour templates;
* ``n_noise`` smooth random filters.

Its second convolution ``conv2`` (7 x 7) is a group convolution over the
edge family, ``W(a_i -> b_j) = R_{theta_j} B_{i-j}`` with analytic base
kernels B (so ``W(T a -> T b) = R W(a -> b)`` exactly), plus one invariant
unit pooling the family with rotated copies of one kernel. Every kernel is
evaluated analytically at rotated coordinates, so rotations are exact, not
interpolated. The ground truth is returned beside the model.

:func:`planted_strided` departs from what the analysis code assumes, so that
its tests can fail: both convolutions have stride 2 with TensorFlow "SAME"
padding (asymmetric, so receptive-field centres sit between the nominal
cells), the edges are colour-unbalanced (RGB weights 1 : 0.5 : 0.1, so they
respond to colour contrast at their orientation), and the hue family is
evenly spaced in the I-Q plane of YIQ, not in the chroma plane that
:class:`~equivar_core.transforms.HueRotate` turns (so its members' hues are
unevenly spaced and of unequal chroma there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .tf_layers import Conv2dSame
from .transforms import _CHROMA_0, _CHROMA_90, hue_color

#: RGB -> YIQ (NTSC); the I-Q plane is an opponent plane other than equivar's chroma plane
YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass
class GroundTruth:
    """Planted families: layer -> {name: (units, params, transform)} and the invariant unit of conv2."""

    families: dict[str, dict[str, tuple[list[int], list[float], str]]] = field(default_factory=dict)
    noise_units: dict[str, list[int]] = field(default_factory=dict)
    invariant_unit: int = -1


class PlantedNet(nn.Module):
    input_size = 64

    def __init__(self, c1: int, c2: int, stride: int = 1):
        super().__init__()
        if stride == 1:
            self.conv1 = nn.Conv2d(3, c1, 9, padding=4)
            self.conv2 = nn.Conv2d(c1, c2, 7, padding=3)
        else:        # TensorFlow "SAME": the extra padding pixel goes bottom/right
            self.conv1 = Conv2dSame(3, c1, 9, stride=stride)
            self.conv2 = Conv2dSame(c1, c2, 7, stride=stride)
            self.input_size = 96
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.conv2(self.relu1(self.conv1(x - 0.5))))


def _coords(size: int, degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel coordinates (u along the direction ``degrees``, v across), y pointing down."""
    r = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size) - r, torch.arange(size) - r, indexing="ij")
    t = math.radians(degrees)
    u = xs * math.cos(t) - ys * math.sin(t)
    v = xs * math.sin(t) + ys * math.cos(t)
    return u.float(), v.float()


def edge_kernel(size: int, degrees: float, sigma: float = 1.8, rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
                ) -> torch.Tensor:
    """Edge detector pointing to ``degrees`` (derivative of a Gaussian), 3 x k x k, with channel weights ``rgb``
    (equal weights: a pure luminance edge)."""
    u, v = _coords(size, degrees)
    g = u * torch.exp(-(u**2 + v**2) / (2 * sigma**2))
    w = (g / g.norm())[None] * torch.tensor(rgb)[:, None, None]
    return w / w.norm()


def line_kernel(size: int, degrees: float, sigma: float = 1.5) -> torch.Tensor:
    """Bright-line detector (negative second derivative across the line), 180-periodic."""
    u, v = _coords(size, degrees)
    g = (1 - u**2 / sigma**2) * torch.exp(-(u**2) / (2 * sigma**2) - v**2 / (2 * (2 * sigma) ** 2))
    g = g - g.mean()
    return (g / g.norm()).expand(3, -1, -1) / math.sqrt(3)


def yiq_axis(hue: float) -> torch.Tensor:
    """The RGB direction of hue angle ``hue`` in the I-Q plane of YIQ (zero Y), unit length."""
    t = math.radians(hue)
    rgb = torch.linalg.inv(YIQ) @ torch.tensor([0.0, math.cos(t), math.sin(t)])
    return rgb / rgb.norm()


def color_center_surround(size: int, hue: float, space: str = "chroma") -> torch.Tensor:
    """Centre of colour ``hue`` against its opposite in the surround (zero luminance weight).

    ``space`` says in which opponent plane ``hue`` is an angle: ``chroma`` (equivar's own, zero mean over
    RGB) or ``yiq`` (the I-Q plane, zero Y).
    """
    u, v = _coords(size, 0.0)
    r2 = u**2 + v**2
    dog = torch.exp(-r2 / (2 * 1.2**2)) - 0.5 * torch.exp(-r2 / (2 * 2.6**2))
    axis = hue_color(torch.tensor(hue), 1.0, 0.0) if space == "chroma" else yiq_axis(hue)
    w = axis[:, None, None] * dog[None]
    return w / w.norm()


def asymmetric_color(size: int, rng: np.random.Generator, mirror: bool) -> torch.Tensor:
    """A random colour template of a few blobs right of centre (so it is asymmetric); mirrored if asked."""
    u, v = _coords(size, 0.0)
    w = torch.zeros(3, size, size)
    for _ in range(3):
        cx, cy = rng.uniform(0.5, 3.0), rng.uniform(-3, 3)
        col = torch.tensor(rng.normal(size=3), dtype=torch.float32)
        blob = torch.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * 1.3**2))
        w += col[:, None, None] * blob[None]
    w = w.flip(-1) if mirror else w
    return w / w.norm()


def chiral_color(size: int, rng: np.random.Generator, mirror: bool) -> torch.Tensor:
    """Two blobs of opposite colours at right angles around the centre (a colour "L"): its mirror image
    puts the second colour on the other side of the first, which no rotation does (chiral)."""
    u, v = _coords(size, 0.0)
    phi = rng.uniform(0, 2 * math.pi)
    col = torch.tensor(rng.normal(size=3), dtype=torch.float32)
    w = torch.zeros(3, size, size)
    for sign, angle in ((1.0, phi), (-1.0, phi + math.pi / 2)):
        cx, cy = 2.5 * math.cos(angle), 2.5 * math.sin(angle)
        w += sign * col[:, None, None] * torch.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * 1.2**2))[None]
    w = w.flip(-1) if mirror else w
    return w / w.norm()


def smooth_noise(size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random filter smoothed by a Gaussian (no planted structure)."""
    noise = torch.tensor(rng.normal(size=(3, size + 6, size + 6)), dtype=torch.float32)
    k = torch.exp(-torch.arange(-3, 4).float() ** 2 / (2 * 1.2**2))
    k = (k[:, None] * k[None]) / (k.sum() ** 2)
    w = torch.nn.functional.conv2d(noise[:, None], k[None, None])[:, 0]
    return w / w.norm()


def _base_kernel(size: int, degrees: float, seed: int) -> torch.Tensor:
    """An analytic random kernel (a sum of signed Gaussians), evaluated rotated by ``degrees``."""
    rng = np.random.default_rng(seed)
    u, v = _coords(size, degrees)    # (u, v) = R^-1 p: the kernel rotated counter-clockwise by degrees
    w = torch.zeros(size, size)
    for _ in range(3):
        cx, cy = rng.uniform(-2, 2, 2)
        w += float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)) * torch.exp(-((u - cx) ** 2 + (v - cy) ** 2) / 2.0)
    return w


@dataclass(frozen=True)
class PlantedDesign:
    """What the planted network holds (see the module docstring): its family sizes, and the variants.

    ``stride`` of both convolutions (2: TF "SAME" padding, 96 px input), ``edge_rgb`` the edges' channel
    weights, ``hue_space`` the opponent plane in which the hue family is evenly spaced (``chroma`` or
    ``yiq``); the ground-truth params of a ``yiq`` family are its members' hue angles in equivar's chroma plane.
    ``n_fine_lines`` adds a second 180-periodic line family ``fine_lines``, the same template at a finer
    scale (sigma 0.9 against 1.5 px: its best grating period is about 4 px, the lines' about 6.7 px),
    at angles offset by half a step from the lines: one feature at two spatial frequencies.
    ``chiral_flips`` makes the flip pairs colour "L"s (:func:`chiral_color`), whose mirror images no
    rotation gives (the default blobs right of centre can be near a rotation of their mirror image).
    ``hue_gains`` scales hue member i's kernel by ``hue_gains[i % len(hue_gains)]`` (default: all 1), so the
    members' response magnitudes can differ in an order that is not the hue order.
    """

    n_edges: int = 8
    n_lines: int = 6
    n_hues: int = 6
    n_flip_pairs: int = 2
    n_noise: int = 8
    stride: int = 1
    edge_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hue_space: str = "chroma"
    n_fine_lines: int = 0
    chiral_flips: bool = False
    hue_gains: tuple[float, ...] | None = None


#: kernel sizes of the two convolutions
_K1, _K2 = 9, 7


def planted_model(seed: int = 0, design: PlantedDesign = PlantedDesign(), random: bool = False
                  ) -> tuple[PlantedNet, GroundTruth]:
    """The planted network of ``design`` and its ground truth (see module docstring); ``random=True`` gives
    random weights (the same architecture)."""
    rng = np.random.default_rng(seed)
    filters, kinds = _first_layer_filters(design, rng)
    c1 = len(filters)
    order = rng.permutation(c1)                 # channel of filter i is order[i]
    w1 = torch.zeros(c1, 3, _K1, _K1)
    for i, f in enumerate(filters):
        w1[order[i]] = f
    w2 = _second_layer_weights(design.n_edges, order, rng)
    net = PlantedNet(c1, w2.shape[0], design.stride)
    _set_weights(net, w1, w2, None if not random else torch.Generator().manual_seed(seed))
    return net.eval(), _ground_truth(kinds, order, design.n_edges)


def _first_layer_filters(design: PlantedDesign, rng: np.random.Generator
                         ) -> tuple[list[torch.Tensor], list[tuple[str, float, str]]]:
    """conv1's filters in family order, and each one's (family, param, transform): edges, lines, fine lines,
    hues, flip pairs (drawn from ``rng``) and noise (likewise)."""
    filters, kinds = [], []
    d = design
    for i in range(d.n_edges):
        filters.append(edge_kernel(_K1, i * 360.0 / d.n_edges, rgb=d.edge_rgb))
        kinds.append(("edges", i * 360.0 / d.n_edges, "rotate"))
    for i in range(d.n_lines):
        filters.append(line_kernel(_K1, i * 180.0 / d.n_lines))
        kinds.append(("lines", i * 180.0 / d.n_lines, "rotate"))
    for i in range(d.n_fine_lines):
        filters.append(line_kernel(_K1, (i + 0.5) * 180.0 / d.n_fine_lines, sigma=0.9))
        kinds.append(("fine_lines", (i + 0.5) * 180.0 / d.n_fine_lines, "rotate"))
    for i in range(d.n_hues):
        gain = d.hue_gains[i % len(d.hue_gains)] if d.hue_gains else 1.0
        filters.append(color_center_surround(_K1, i * 360.0 / d.n_hues, d.hue_space) * gain)
        kinds.append(("hues", chroma_hue(filters[-1]) if d.hue_space != "chroma" else i * 360.0 / d.n_hues, "hue"))
    for p in range(d.n_flip_pairs):
        state = rng.bit_generator.state
        template = chiral_color if d.chiral_flips else asymmetric_color
        filters.append(template(_K1, rng, False))
        rng.bit_generator.state = state
        filters.append(template(_K1, rng, True))
        kinds += [(f"flip{p}", 0.0, "hflip"), (f"flip{p}", 1.0, "hflip")]
    for _ in range(d.n_noise):
        filters.append(smooth_noise(_K1, rng))
        kinds.append(("noise", float("nan"), ""))
    return filters, kinds


def _second_layer_weights(n_edges: int, order: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """conv2's weights: a group convolution over the edge family (unit j the edges rotated by j steps), the
    invariant unit pooling the edges with rotated kernels, and three random units (drawn from ``rng``)."""
    c1 = len(order)
    w2 = torch.zeros(n_edges + 1 + 3, c1, _K2, _K2)
    edge_channels = [int(order[i]) for i in range(n_edges)]
    base_seed = int(rng.integers(1 << 30))
    for j in range(n_edges):
        for i in range(n_edges):
            d = (i - j) % n_edges
            w2[j, edge_channels[i]] = _base_kernel(_K2, j * 360.0 / n_edges, base_seed + d)
    inv = n_edges
    for i in range(n_edges):
        w2[inv, edge_channels[i]] = _base_kernel(_K2, i * 360.0 / n_edges, base_seed + 999)
    w2[inv + 1:] = torch.tensor(rng.normal(size=(3, c1, _K2, _K2)), dtype=torch.float32) * 0.1
    return w2


def _set_weights(net: PlantedNet, w1: torch.Tensor, w2: torch.Tensor, random: torch.Generator | None) -> None:
    """The planted weights (scaled) and zero biases; with a ``random`` generator PyTorch's default
    (Kaiming-uniform) init drawn from it instead."""
    with torch.no_grad():
        if random is not None:
            for conv in (net.conv1, net.conv2):
                bound = 1.0 / math.sqrt(conv.weight[0].numel())
                conv.weight.uniform_(-bound, bound, generator=random)
                conv.bias.uniform_(-bound, bound, generator=random)
        else:
            net.conv1.weight.copy_(w1 * 3.0)
            net.conv1.bias.zero_()
            net.conv2.weight.copy_(w2 * 0.3)
            net.conv2.bias.zero_()


def _ground_truth(kinds: list[tuple[str, float, str]], order: np.ndarray, n_edges: int) -> GroundTruth:
    """The planted families of conv1 (units, params, transform), the noise units, conv2's edge family and its
    invariant unit."""
    truth = GroundTruth()
    fams: dict[str, tuple[list[int], list[float], str]] = {}
    for i, (name, param, transform) in enumerate(kinds):
        if name == "noise":
            truth.noise_units.setdefault("conv1", []).append(int(order[i]))
            continue
        units, params, _ = fams.setdefault(name, ([], [], transform))
        units.append(int(order[i]))
        params.append(param)
    truth.families["conv1"] = fams
    truth.families["conv2"] = {"edges2": (list(range(n_edges)), [j * 360.0 / n_edges for j in range(n_edges)],
                                          "rotate")}
    truth.invariant_unit = n_edges
    return truth


def chroma_hue(w: torch.Tensor) -> float:
    """The hue angle (degrees) in equivar's chroma plane of a colour centre-surround filter's centre colour."""
    axis = w[:, w.shape[1] // 2, w.shape[2] // 2]
    return float(np.mod(math.degrees(math.atan2(float(axis @ _CHROMA_90), float(axis @ _CHROMA_0))), 360.0))


#: the strided variant: stride 2 with TF padding, colour-unbalanced edges, hues spaced in YIQ
STRIDED = PlantedDesign(stride=2, edge_rgb=(1.0, 0.5, 0.1), hue_space="yiq")


def planted_strided(seed: int = 0) -> PlantedNet:
    """``equivar run --model equivar_core.planted:planted_strided``: see the module docstring."""
    return planted_model(seed, STRIDED)[0]


#: the two-band variant: the line family also at a finer scale (``fine_lines``)
TWO_BANDS = PlantedDesign(n_fine_lines=6)


def planted_two_bands(seed: int = 0) -> PlantedNet:
    """``equivar run --model equivar_core.planted:planted_two_bands``: lines at two spatial frequencies."""
    return planted_model(seed, TWO_BANDS)[0]


#: the chiral variant: flip pairs that no rotation explains
CHIRAL = PlantedDesign(chiral_flips=True)


def planted_chiral(seed: int = 0) -> PlantedNet:
    """``equivar run --model equivar_core.planted:planted_chiral``: flip pairs of chiral colour templates."""
    return planted_model(seed, CHIRAL)[0]


#: the uneven-hue variant: eight hues evenly spaced in YIQ (unevenly in equivar's chroma plane) whose
#: response magnitudes span six-fold, in an order unrelated to the hue order
UNEVEN_HUES = PlantedDesign(n_hues=8, hue_space="yiq", hue_gains=(1.0, 0.25, 1.5, 0.5, 0.35, 1.2, 0.7, 0.3))


def planted_uneven_hues(seed: int = 0) -> PlantedNet:
    """``equivar run --model equivar_core.planted:planted_uneven_hues``: an unevenly spaced, unequal hue family."""
    return planted_model(seed, UNEVEN_HUES)[0]


def family_sizes(seed: int) -> PlantedDesign:
    """The family sizes of the seed's planted network: the edge family has 6, 8, 10 or 12 members."""
    return PlantedDesign(n_edges=6 + 2 * (seed % 4), n_lines=6, n_hues=6 + 2 * (seed % 2))


def planted(seed: int = 0) -> PlantedNet:
    """``equivar run --model equivar_core.planted:planted``: the default planted network."""
    return planted_model(seed, family_sizes(seed))[0]


def random_planted(seed: int = 0) -> PlantedNet:
    """The same architecture with random (untrained) weights."""
    return planted_model(seed, family_sizes(seed), random=True)[0]


# -- a planted late layer: object-like detectors, their mirror images and a pose-invariant unit ---------------------

class PlantedLateNet(nn.Module):
    """The planted network's first convolution, then two "late" layers (declared as the model's ``late``
    preset, so they are analysed without synthetic tuning, as a built-in network's object detectors are):
    ``conv2`` (7 x 7) holds detectors composed of the first layer's features, their exact mirror images, an
    unmirrored decoy and noise; ``conv3`` (5 x 5) a unit that pools one detector and its mirror image with
    mirrored kernels (pose-invariant), a decoy that pools them with one kernel, and noise."""

    input_size = 64
    late_layers = ("relu2", "relu3")

    def __init__(self, c1: int, c2: int, c3: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, _K1, padding=_K1 // 2)
        self.conv2 = nn.Conv2d(c1, c2, _K2, padding=_K2 // 2)
        self.conv3 = nn.Conv2d(c2, c3, 5, padding=2)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.relu3(self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x - 0.5))))))


@dataclass
class LateTruth:
    """What :func:`planted_late_model` planted: conv2's mirror pairs (unit, its mirror image), its decoy (the
    first detector's kernels mirrored without swapping the input features: no mirror image of anything), its
    noise units, and conv3's pose-invariant unit and its decoy."""

    pairs: list[tuple[int, int]]
    decoy: int
    noise: list[int]
    pooling: int
    pooling_decoy: int


def mirror_channels(kinds: list[tuple[str, float, str]], order: np.ndarray) -> dict[int, int]:
    """conv1 channel -> the channel whose filter is its left-right mirror image (edges at theta and 180 - theta,
    lines likewise modulo 180, a hue centre-surround itself, a flip pair's members each other); noise channels
    have none."""
    place = {(name, round(float(param) % 360, 6)): int(order[i]) for i, (name, param, _) in enumerate(kinds)}
    out = {}
    for i, (name, param, _) in enumerate(kinds):
        if name == "noise":
            continue
        if name in ("edges", "lines", "fine_lines"):
            period = 360.0 if name == "edges" else 180.0
            mirrored = (name, round((180.0 - param) % period, 6))
        elif name.startswith("flip"):
            mirrored = (name, 1.0 - param)
        else:
            mirrored = (name, round(float(param) % 360, 6))
        if mirrored in place:
            out[int(order[i])] = place[mirrored]
    return out


def planted_late_model(seed: int = 0, n_pairs: int = 2, n_noise: int = 6) -> tuple[PlantedLateNet, LateTruth]:
    """A planted network with late layers of known mirror structure (see :class:`PlantedLateNet`).

    Each conv2 detector reads four random mirrorable features of conv1 with asymmetric kernels (sums of
    off-centre Gaussians); its mirror image reads each feature's mirror with the kernel flipped left-right
    (every second pair at a gain of 0.6: mirror pairs need not be equally strong), so it answers a mirrored
    image exactly as the detector answers the image (times the gain). conv3's pooling unit reads the first
    pair (equal gains: circuit equivariance compares raw weights) with a kernel and its mirror image. The decoy reads the first detector's features with flipped kernels but
    without swapping them (a spatial flip that is no mirror image). conv2's channels are shuffled."""
    rng = np.random.default_rng(seed)
    design = family_sizes(seed)
    filters, kinds = _first_layer_filters(design, rng)
    c1 = len(filters)
    order = rng.permutation(c1)
    mirror = mirror_channels(kinds, order)
    usable = np.array(sorted(c for c, m in mirror.items() if m != c))      # features that change under a mirror
    detectors = []
    for _ in range(n_pairs):
        w = torch.zeros(c1, _K2, _K2)
        for c in rng.choice(usable, 4, replace=False):
            w[c] += _offset_kernel(_K2, rng) * float(rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0))
        detectors.append(w)
    kernels = []                                            # conv2 in planted order: pairs, decoy, noise
    for p, w in enumerate(detectors):
        m = torch.zeros_like(w)
        for c in range(c1):
            if w[c].abs().sum() > 0:
                m[mirror[c]] += w[c].flip(-1)
        kernels += [w, (0.6 if p % 2 else 1.0) * m]
    kernels.append(detectors[0].flip(-1))
    for _ in range(n_noise):
        kernels.append(torch.tensor(rng.normal(size=(c1, _K2, _K2)), dtype=torch.float32) * 0.05)
    c2 = len(kernels)
    order2 = rng.permutation(c2)
    w2 = torch.zeros(c2, c1, _K2, _K2)
    for i, k in enumerate(kernels):
        w2[order2[i]] = k
    pair = [(int(order2[2 * p]), int(order2[2 * p + 1])) for p in range(n_pairs)]
    a, b = pair[0]
    pool = _offset_kernel(5, rng)
    w3 = torch.zeros(4, c2, 5, 5)
    w3[0, a], w3[0, b] = pool, pool.flip(-1)
    w3[1, a], w3[1, b] = pool, pool
    w3[2:] = torch.tensor(rng.normal(size=(2, c2, 5, 5)), dtype=torch.float32) * 0.05
    net = PlantedLateNet(c1, c2, 4)
    w1 = torch.zeros(c1, 3, _K1, _K1)
    for i, f in enumerate(filters):
        w1[order[i]] = f
    with torch.no_grad():
        net.conv1.weight.copy_(w1 * 3.0)
        net.conv2.weight.copy_(w2)
        net.conv3.weight.copy_(w3)
        for conv in (net.conv1, net.conv2, net.conv3):
            conv.bias.zero_()
    truth = LateTruth(pair, int(order2[2 * n_pairs]), [int(u) for u in order2[2 * n_pairs + 1:]], 0, 1)
    return net.eval(), truth


def _offset_kernel(size: int, rng: np.random.Generator) -> torch.Tensor:
    """An asymmetric kernel: two Gaussians of opposite sign off the centre (no mirror symmetry)."""
    u, v = _coords(size, 0.0)
    r = (size - 1) / 2
    w = torch.zeros(size, size)
    for sign in (1.0, -0.7):
        cx, cy = rng.uniform(0.3 * r, r), rng.uniform(-r, r)
        cx = cx if sign > 0 else -cx / 2
        w += sign * torch.exp(-((u - cx) ** 2 + (v - cy) ** 2) / 2.0)
    return w / w.norm()


def planted_late(seed: int = 0) -> PlantedLateNet:
    """``equivar run --model equivar_core.planted:planted_late --layers late``: mirror pairs in late layers."""
    return planted_late_model(seed)[0]
