"""The paper's own test: turn a unit's best natural images and watch its siblings.

For each member u of a rotation (or hue) family and each of its ``top_k``
strongest natural images, the image is resampled onto a canvas sized to the
layer's receptive field (as for the tuning stimuli) so that u's peak
position sits on the receptive-field centre of the canvas's central cell,
and rotated (or hue-rotated) about that centre through one period of the
family (the full circle, or half of it for a 180-periodic family) in
``step`` degree steps, in one resampling
(:meth:`~equivar_core.transforms.Transform.images_about`), so the feature
stays under the read-out cell at any stride. Every family member's response
is read at the central cell (pre-activation, maximum over the 3 x 3 cell
jitter) and averaged over the images, in natural-image standard deviations.
If the family is real, member v peaks at the angle ``param(v) - param(u)``:
the peak offsets are evidence independent of the tuning curves and of the
transform scores.

Two baselines come with every family (``role``). A driver's own row
(``self``: v = u, expected angle 0) peaks at 0 by construction, since its
best photos were chosen unturned; summaries leave it out. ``control`` rows
run the same test on as many units of the layer that are in no family of the
transform, each matched on tuning selectivity to a member
(:func:`control_units`), with the family's params handed out to them at
random: units with no shared feature peak where chance puts them (a control
driver's own row is left out: it peaks at 0 by construction too). ``chance``
is that probability for a peak that falls on a uniformly random sweep angle:
the share of the sweep's angles within ``tolerance`` of the expected one
(:func:`chance_within`; 3 in 18 for 10 degree steps over 180 degrees and a
15 degree tolerance).

The same test runs on flip pairs (the paper's left- and right-facing dog
heads): each member's best photos are shown as they are (``angle`` 0) and
mirrored left-right about the unit's receptive-field centre (``angle`` 1).
The driver answers the originals best; its partner, if it is the driver's
mirror image, answers the mirrored photos best (expected 1), and about as
strongly as the driver answered the originals. A peak on one of the two
versions at random passes half the time (``chance`` 1/2); the controls are
units in no flip pair, matched on their flip invariance (the score of their
own mirrored photos) instead of tuning, which late layers do not measure.

Each photo's angles go through the network in a few large batches (memory
stays at one photo's canvases). Only the ``max_families`` largest families of
each layer (and its ``max_flip_pairs`` best flip pairs) are tested (the test
costs a forward pass per driver, photo and angle).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .activations import TOP_IMAGES, TopImages
from .capture import LayerGeometry, Network, canvas_size, capture
from .families import circular_distance
from .images import ImageView, load_view
from .limits import setting
from .transforms import TRANSFORMS, HFlip, Transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotationTestSettings:
    """The rotation test's sweep: angle step, images per driver, families per layer, forward batch."""

    step: float = setting(10.0, low=1, high=90)          # degrees
    curve_step: float = setting(5.0, low=1, high=90)     # curve families: the Curve Detectors article's fine steps
    top_k: int = setting(2, low=1, high=TOP_IMAGES)      # a unit's strongest images kept (activations.TOP_IMAGES)
    max_families: int = setting(2, low=1)
    #: flip pairs tested per layer, best flip score first (two forward passes per driver and photo)
    max_flip_pairs: int = setting(8, low=0)
    batch_size: int = setting(64, low=1, high=4096)
    #: degrees: a peak this close to the expected angle passes (``chance``)
    tolerance: float = setting(15.0, low=0, high=180)
    controls: bool = setting(True)   # also test matched units outside the family (``role = control``)
    #: a control family turns the photos of this many of its units (drawn at random), each read against all
    #: of them: a chance level needs far fewer drivers than a family's own test (every member drives)
    control_drivers: int = setting(2, low=1)


@dataclass
class SweptFamily:
    """One family to test: its id, transform, members (units), their params and the period."""

    family: int
    transform: str
    members: np.ndarray
    params: np.ndarray
    period: float
    role: str = "member"             # "member": a real family; "control": matched units outside any family
    drivers: np.ndarray | None = None    # positions in ``members`` whose photos are turned (None: every member)


@dataclass(frozen=True)
class UnitStats:
    """A layer's units on the natural images: their mean and standard deviation (C,), the unit of the test's
    responses, and their strongest images (:class:`~equivar_core.activations.TopImages`)."""

    mean: np.ndarray
    std: np.ndarray
    top: TopImages


@torch.inference_mode()
def layer_sweeps(net: Network, geom: LayerGeometry, views: list[ImageView], units: UnitStats,
                 families: list[SweptFamily], settings: RotationTestSettings = RotationTestSettings()
                 ) -> dict[str, np.ndarray]:
    """Sweep responses of one layer's families; columns family, role, driver, member, angle, response,
    peak_angle, expected_angle (``role``: the family's, and ``self`` where the member is the driver)."""
    cols: dict[str, list] = {k: [] for k in ("family", "role", "driver", "member", "angle", "response",
                                             "peak_angle", "expected_angle", "drive")}
    with capture(net.module, [geom.layer], pre_activation=True) as cap:
        test = _LayerTest(cap, net, geom, views, units, settings)
        for fam in families:
            angles = sweep_angles(fam.period, 1.0 if fam.transform == HFlip.name else settings.step)
            for i in (range(len(fam.members)) if fam.drivers is None else fam.drivers):
                u = fam.members[i]
                curve = test.driver_curve(fam, u, angles)
                if curve is None:
                    continue
                peaks = angles[np.argmax(curve, 0)]
                expected = np.mod(fam.params - fam.params[i], fam.period)
                drive = relative_drive(curve, angles, expected, i, fam.period)
                for j, v in enumerate(fam.members):
                    if v == u and fam.role == "control":      # a control driver's own row peaks at 0 too: no test
                        continue
                    cols["family"] += [fam.family] * len(angles)
                    cols["role"] += ["self" if v == u else fam.role] * len(angles)
                    cols["driver"] += [int(u)] * len(angles)
                    cols["member"] += [int(v)] * len(angles)
                    cols["angle"] += angles.tolist()
                    cols["response"] += curve[:, j].tolist()
                    cols["peak_angle"] += [float(np.mod(peaks[j], fam.period))] * len(angles)
                    cols["expected_angle"] += [float(expected[j])] * len(angles)
                    cols["drive"] += [float(drive[j])] * len(angles)
    return {k: np.asarray(v) for k, v in cols.items()}


@dataclass
class _LayerTest:
    """One layer's test as it runs: the model hooked at the layer (``cap``), the layer's geometry, the photos,
    the units' statistics and the test's settings."""

    cap: capture
    net: Network
    geom: LayerGeometry
    views: list[ImageView]
    units: UnitStats
    settings: RotationTestSettings

    def driver_curve(self, fam: SweptFamily, u: int, angles: np.ndarray) -> np.ndarray | None:
        """The family members' responses (angles x members, in natural-image standard deviations) as driver
        ``u``'s best photos turn through ``angles``, averaged over the photos; None when none could be read."""
        cap, net, geom, views, units, settings = (self.cap, self.net, self.geom, self.views, self.units,
                                                  self.settings)
        size = canvas_size(geom, net.input_size)
        target = geom.rf_centre(size)
        cy, cx = geom.centre_cell(size)
        on_device = torch.tensor(np.asarray(fam.members), dtype=torch.long, device=net.device)
        centre = torch.as_tensor(np.asarray(units.mean)[fam.members], dtype=torch.float32)
        spread = torch.as_tensor(np.maximum(np.asarray(units.std)[fam.members], 1e-6), dtype=torch.float32)

        def read_out(layer: str, acts: torch.Tensor) -> torch.Tensor:
            """What the test reads of a pass (a :meth:`capture.run` reduction): the family members' cells
            around the central one."""
            return acts[:, on_device, max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2]

        curves = []                       # per driver image: angles x members
        for n, position in units.top.best(u, settings.top_k):
            img = load_view(views[n], net.input_size)
            if img is None:
                continue
            py, px = divmod(position, geom.width)
            peak = ((py + 0.5) * geom.stride + geom.rf_offset[0], (px + 0.5) * geom.stride + geom.rf_offset[1])
            canvases = versions_about(fam.transform, img[None], angles, peak, target, size)
            resp = []
            for k in range(0, len(canvases), settings.batch_size):    # a photo's angles, a few batches
                x = canvases[k:k + settings.batch_size].to(net.device).contiguous(memory_format=torch.channels_last)
                acts = cap.run(x, read_out)[geom.layer].float()
                resp.append(acts.amax((2, 3)).cpu())
            curves.append((torch.cat(resp) - centre) / spread)
        return torch.stack(curves).mean(0).numpy() if curves else None


def relative_drive(curve: np.ndarray, angles: np.ndarray, expected: np.ndarray, driver: int, period: float
                   ) -> np.ndarray:
    """Each member's response at the sweep angle nearest its expected one, over the driver's own response to
    its photos as they are (``curve``: angles x members, the driver at column ``driver``): 1 when the member
    answers the transformed photos as strongly as the driver answers the originals; NaN where the driver's
    own response is not positive."""
    nearest = np.argmin(circular_distance(angles[:, None], expected[None, :], period), 0)
    own = curve[0, driver]
    at = curve[nearest, np.arange(curve.shape[1])]
    return at / own if own > 0 else np.full(curve.shape[1], np.nan)


def versions_about(transform: str, x: torch.Tensor, angles, source: tuple[float, float],
                   target: tuple[float, float], size: int) -> torch.Tensor:
    """The test's canvases of images ``x``: each of ``angles`` of the transform about ``target`` (see
    :meth:`~equivar_core.transforms.Transform.images_about_each`); for ``hflip``, angle 0 is the image as it
    is and 1 its mirror image, both centred alike."""
    if transform != HFlip.name:
        return TRANSFORMS[transform].images_about_each(x, angles, source, target, size)
    return torch.cat([(HFlip if a else Transform).images_about_each(x, [float(a)], source, target, size)
                      for a in angles])


def sweep_angles(period: float, step: float) -> np.ndarray:
    """The angles a family's test turns its images through: one period of the family (a 180-periodic
    family's members answer a half turn of their images as they answer the images, so the second half of
    the circle would repeat the first), in ``step`` degree steps."""
    period = period if np.isfinite(period) and 0 < period <= 360 else 360.0
    return np.arange(0.0, period, step)


def chance_within(expected: np.ndarray, period: np.ndarray, step: np.ndarray, tolerance: float) -> np.ndarray:
    """The probability that a peak on a uniformly random sweep angle lands within ``tolerance`` of
    ``expected``: the share of :func:`sweep_angles` (one period in ``step`` degree steps) that do."""
    expected, period, step = np.broadcast_arrays(np.asarray(expected, float), np.asarray(period, float),
                                                 np.asarray(step, float))
    keys = np.stack([expected.ravel(), period.ravel(), step.ravel()], 1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    share = np.empty(len(uniq))
    for i, (e, p, st) in enumerate(uniq):
        angles = sweep_angles(p, st)
        circle = p if np.isfinite(p) and 0 < p <= 360 else 360.0
        share[i] = np.mean(circular_distance(angles, e, circle) <= tolerance)
    out = share[inverse.ravel()].reshape(expected.shape)
    return out


def control_units(members: np.ndarray, candidates: np.ndarray, selectivity: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Units to stand in for a family's ``members`` in the control test: for each member (most selective
    first) the not yet chosen ``candidate`` of nearest ``selectivity`` (ties broken at random); fewer when
    candidates run out."""
    candidates = rng.permutation(np.asarray(candidates, int))
    free = np.ones(len(candidates), bool)
    chosen = []
    for u in sorted(np.asarray(members, int), key=lambda m: -selectivity[m]):
        if not free.any():
            break
        gap = np.where(free, np.abs(selectivity[candidates] - selectivity[u]), np.inf)
        j = int(np.argmin(gap))
        free[j] = False
        chosen.append(int(candidates[j]))
    return np.asarray(chosen, int)


def sweep_error(peak: np.ndarray, expected: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Circular distance between observed and expected peak angles."""
    return circular_distance(peak, expected, period)
