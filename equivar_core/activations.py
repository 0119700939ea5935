"""Natural-image activations, original and transformed, at corresponding positions.

The sweep is split into groups that are computed independently: the
original images (group ``identity``) and one group per transform family
(``rotate``, ``hflip``, ``hue``, ``scale``), each holding that family's
amounts. Every forward pass belongs to exactly one group, so the groups can
run in parallel, on different workers, and one group can be recomputed
alone when its amounts change, without any pass being run twice.

For each batch of natural images x, the model sees every version g.x of the
group; each forward pass captures all requested layers at once and stops
after the deepest. For each layer we keep, per image, the activations at a
fixed set of points p inside the central disc of radius ``disc_radius``
(normalized coordinates) for x, and at the corresponding points ``A_g p``
for g.x (bilinear), so that row p of every version, in every group, refers
to the same image content. From these, batch by batch, the moments behind
every transform score are summed over all images (:mod:`equivar_core.moments`;
each group's passes also run the original images, so x and g.x meet in
memory); the samples themselves are kept only for the first ``keep`` images
(``--keep-samples``), in one ``float16`` array per layer and group of shape
V x K x P x C (version, kept image, point, unit), written to a temporary file
and renamed when complete.

Alongside: per-unit mean and standard deviation over all positions of the
original images (the unit of tuning responses), the units' covariance (for
the basis control, :mod:`equivar_core.basis`), and each unit's ``TOP_IMAGES``
strongest images with the position of its maximum there (:class:`TopImages`,
for the rotation test's and the report's examples), merged batch by batch, so
that nothing kept grows with the number of images but the first ``keep``
images' samples.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from .capture import Network, capture
from .images import ImageView, iter_batches
from .limits import setting
from .layout import folds_file, moments_file, points_file, samples_file
from .moments import GroupMoments, SumOptions
from .storage import atomic_path, save_npy, save_npz
from .scores import ScoreSettings
from .transforms import IDENTITY, TRANSFORMS, Transform, disc_points, sample_at

log = logging.getLogger(__name__)

#: the transform families of the sweep, one group of forward passes each (the registry's, in its order)
TRANSFORM_GROUPS = tuple(TRANSFORMS)


@dataclass(frozen=True)
class SweepSettings:
    """The transformed versions of every natural image."""

    rotate: tuple[float, ...] = setting(tuple(float(a) for a in range(30, 360, 30)),   # degrees
                                        low=0, high=360, low_open=True, high_open=True, nonempty=True)
    hflip: bool = setting(True)
    hue: tuple[float, ...] = setting(tuple(float(a) for a in range(30, 360, 30)),      # degrees of hue
                                     low=0, high=360, low_open=True, high_open=True, nonempty=True)
    scale: tuple[float, ...] = setting((1.5, 2.0), low=0, high=8, low_open=True, nonempty=True)
    disc_radius: float = setting(0.6, low=0, high=1, low_open=True)   # of the half-width of the image
    #: sample points: centres of a grid x grid partition of the image inside the disc
    grid: int = setting(20, low=1, high=128)

    def group(self, name: str) -> list[Transform]:
        """The versions of one group: ``identity`` or a transform family."""
        if name == IDENTITY:
            return [Transform(0.0)]
        if name not in TRANSFORM_GROUPS:
            raise ValueError(f"unknown sweep group {name!r}; known: {IDENTITY}, {', '.join(TRANSFORM_GROUPS)}")
        amounts = getattr(self, name)                  # a field per transform: its amounts (or on/off)
        if isinstance(amounts, bool):
            amounts = (1.0,) if amounts else ()
        return [TRANSFORMS[name](float(a)) for a in amounts]

    def group_settings(self, name: str) -> dict:
        """What one group's samples depend on (its amounts and the sample points)."""
        return {"versions": [g.label for g in self.group(name)], "grid": self.grid, "disc_radius": self.disc_radius}

    def versions(self) -> list[Transform]:
        """Identity first, then every group of the sweep."""
        return [v for name in (IDENTITY, *TRANSFORM_GROUPS) for v in self.group(name)]


#: how many strongest images are kept per unit (the rotation test uses its ``top_k``, the report 3)
TOP_IMAGES = 16


@dataclass(frozen=True)
class TopImages:
    """Each unit's strongest images, best first: C x K arrays of the unit's maximum over the map on the image
    (``value``), the image's index in the run (``image``, -1 in slots left empty when fewer than K images were
    read) and the flat map index of that maximum (``position``). Equal values go to the lower image index,
    so the result does not depend on how the images were batched or sharded."""

    value: np.ndarray
    image: np.ndarray
    position: np.ndarray

    @classmethod
    def empty(cls, n_units: int, k: int = TOP_IMAGES) -> "TopImages":
        return cls(np.full((n_units, k), -np.inf, np.float32), np.full((n_units, k), -1, np.int64),
                   np.zeros((n_units, k), np.int64))

    def merge(self, other: "TopImages") -> "TopImages":
        """The best K of both (``other`` may hold any number of candidates per unit, e.g. a batch's images)."""
        value = np.concatenate([self.value, other.value], 1)
        image = np.concatenate([self.image, other.image], 1)
        position = np.concatenate([self.position, other.position], 1)
        empty = image < 0                      # after every image, whatever its value
        order = np.lexsort((np.where(empty, np.iinfo(np.int64).max, image), -value, empty), axis=1)
        order = order[:, :self.value.shape[1]]
        return TopImages(*(np.take_along_axis(a, order, 1) for a in (value, image, position)))

    def best(self, unit: int, k: int) -> list[tuple[int, int]]:
        """The unit's ``k`` strongest images as (image index, flat map position), best first."""
        return [(int(n), int(p)) for n, p in zip(self.image[unit, :k], self.position[unit, :k]) if n >= 0]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"value": self.value, "image": self.image, "position": self.position}

    @classmethod
    def load(cls, path: str) -> "TopImages":
        with np.load(path) as z:
            return cls(z["value"], z["image"], z["position"])


@dataclass
class LayerSamples:
    """Paths and shapes of one layer's samples (see module docstring)."""

    layer: str
    path: str            # .npy, V x K x P x C float16: the first K = min(N, keep) images
    points_path: str     # .npy, P x 2
    moments_path: str    # .npz, the sums over all images (:class:`equivar_core.moments.LayerMoments`)
    n_versions: int
    n_images: int
    n_kept: int
    n_points: int
    n_units: int


@dataclass(frozen=True)
class GroupPasses:
    """What one sweep group's forward passes do: the versions of ``group`` (``identity`` or a transform family)
    of ``sweep``, in batches of ``batch_size`` images; samples are stored for the first ``keep`` images only
    (all when None), the moments cover all; ``seed`` draws the basis control's random bases whose mixed
    squares the moments include (None: none); ``folds`` K > 0 also keeps the moments of K disjoint folds of
    the images (image i in fold i mod K)."""

    sweep: SweepSettings
    group: str = IDENTITY
    batch_size: int = 8
    keep: int | None = None
    seed: int | None = 0
    folds: int = 0

    @property
    def versions(self) -> list[Transform]:
        return self.sweep.group(self.group)

    def points(self) -> torch.Tensor:
        """The sample points (P x 2, normalized) inside the central disc."""
        return disc_points(self.sweep.grid, self.sweep.grid, self.sweep.disc_radius, self.sweep.grid**2)


@torch.inference_mode()
def sample_activations(net: Network, layers: list[str], views: list[ImageView], out_dir: str, passes: GroupPasses,
                       run_shards=None) -> tuple[list[LayerSamples], dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Stream natural images, or one group of their transformed versions (``passes``), through the model.

    ``run_shards(group, paths, views)``, when given, runs :func:`sample_rows` over shards of ``views``
    (cut with :func:`shard_views`) wherever it likes, e.g. as Ray tasks (``pipelines.shards``), and
    returns their results in shard order: each shard writes its own rows of the sample files ``paths``
    (which it must be able to reach) and returns its partial sums, which are added here in that order.
    With ``passes.folds`` K > 0 the scores of each fold are saved too
    (:meth:`equivar_core.moments.LayerMoments.fold_scores`, ``<layer>.<group>.folds.npz``).

    Returns
    -------
    samples : one :class:`LayerSamples` per layer (``<layer>.<group>.samples.npy`` and
        ``<layer>.<group>.moments.npz`` under ``out_dir``)
    stats : for the ``identity`` group, layer -> {"mean", "std": (C,), "cov": (C, C) covariance of the
        units over all positions, "top": :class:`TopImages`}; empty for the other groups
    loaded : (N,) bool, False for images that could not be read
    """
    group, versions = passes.group, passes.versions
    n_views, n_versions = len(views), len(versions)
    n_kept = n_views if passes.keep is None else min(n_views, max(0, passes.keep))
    if not versions:                                   # a group the sweep leaves out (e.g. hflip=False)
        return [], {}, np.zeros(n_views, dtype=bool)
    os.makedirs(out_dir, exist_ok=True)
    points = passes.points()
    widths = _layer_widths(net, layers)
    tmp = _reserved_sample_files(out_dir, group, {name: (n_versions, n_kept, len(points), c)
                                                  for name, c in widths.items()})
    try:
        parts = [sample_rows(net, layers, views, tmp, passes)] if run_shards is None else run_shards(group, tmp, views)
        loaded = np.zeros(n_views, dtype=bool)
        for part in parts:
            loaded[part["rows"]] = True
        if not loaded.any():
            raise ValueError("no readable image among the inputs")
        _save_moments(out_dir, passes, list(widths), parts)
    except BaseException:
        _remove(tmp)
        raise
    samples, stats = [], {}
    for name, c in widths.items():
        final = os.path.join(out_dir, samples_file(name, group))
        os.replace(tmp[name], final)
        pts_path = os.path.join(out_dir, points_file(name))
        if group == IDENTITY:                       # the points are the same for every group: this pass owns them
            save_npy(pts_path, points.numpy())
            stats[name] = _combined_stats([part["acc"][name] for part in parts], c)
        samples.append(LayerSamples(name, final, pts_path, os.path.join(out_dir, moments_file(name, group)),
                                    n_versions, n_views, n_kept, len(points), c))
    return samples, stats, loaded


def _layer_widths(net: Network, layers: list[str]) -> dict[str, int]:
    """The layers' widths (units), from one blank input."""
    with capture(net.module, layers, pre_activation=True) as cap:
        zeros = torch.zeros(1, 3, net.input_size, net.input_size, device=net.device)
        return {name: a.shape[1] for name, a in cap.run(zeros).items()}


def _reserved_sample_files(out_dir: str, group: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """layer -> the temporary path of its group's sample file, allocated at its shape (V x K x P x C) and
    closed (:func:`_allocated_memmap`)."""
    tmp: dict[str, str] = {}
    for name, shape in shapes.items():
        tmp[name] = atomic_path(os.path.join(out_dir, samples_file(name, group)))
        _allocated_memmap(tmp, name, shape)
    return tmp


def _save_moments(out_dir: str, passes: GroupPasses, layers: list[str], parts: list[dict]) -> None:
    """The shards' moments, added in shard order, saved per layer (and each fold's scores with folds)."""
    moments = GroupMoments.total([part["moments"] for part in parts])
    for name in layers:
        save_npz(os.path.join(out_dir, moments_file(name, passes.group)), moments.layers[name].arrays())
        if passes.folds:
            save_npz(os.path.join(out_dir, folds_file(name, passes.group)), moments.layers[name].fold_scores())


def _remove(tmp: dict[str, str]) -> None:
    for path in tmp.values():
        if os.path.exists(path):
            os.remove(path)


def shard_views(views: list[ImageView], batch_size: int, n_shards: int) -> list[list[ImageView]]:
    """At most ``n_shards`` consecutive shards of whole batches (so every image meets the same batch as in
    one process)."""
    per = -(-len(views) // max(1, n_shards))
    size = max(batch_size, -(-per // batch_size) * batch_size)
    return [views[i:i + size] for i in range(0, len(views), size)]


@torch.inference_mode()
def sample_rows(net: Network, layers: list[str], views: list[ImageView], paths: dict[str, str],
                passes: GroupPasses) -> dict:
    """Write the samples of the kept ones of ``views`` (rows ``view.index`` below the files' length) into the
    sample files ``paths`` (layer -> an allocated V x K x P x C ``.npy``); return the rows read, the group's
    moments over all of ``views`` (``moments``: :class:`equivar_core.moments.GroupMoments`) and, for the
    identity group, partial sums (``acc``: layer -> sums, squares, cross-products, count, and the units'
    strongest images so far); ``passes`` as in :func:`sample_activations`."""
    group, versions, device = passes.group, passes.versions, net.device
    with_stats = group == IDENTITY
    arrays = {name: np.load(path, mmap_mode="r+") for name, path in paths.items()}
    n_kept = next(iter(arrays.values())).shape[1] if arrays else 0
    points = passes.points()
    moments = GroupMoments(group, versions, points.to(device), passes.sweep.disc_radius,
                           SumOptions(passes.seed, ScoreSettings(device=device).use_bf16(), passes.folds))
    acc: dict[str, dict] = {}
    rows: list[int] = []
    with capture(net.module, layers, pre_activation=True) as cap:
        for batch in iter_batches(views, net.input_size, passes.batch_size):
            x = batch.images
            x = x.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else x.to(device)
            idx = np.asarray(batch.indices)
            kept = idx < n_kept
            rows += batch.indices
            originals = None
            if group != IDENTITY:                      # x itself, to meet g.x in the moments
                originals = {name: a.transpose(1, 2) for name, a in
                             cap.run(x.contiguous(memory_format=torch.channels_last), _sampler(points)).items()}
            sampled: dict[str, list[torch.Tensor]] = {}
            for v, g in enumerate(versions):
                gx = (x if g.name == IDENTITY else g.images(x)).contiguous(memory_format=torch.channels_last)
                # the statistics need whole maps; otherwise only the sample points are kept from the pass
                for name, a in cap.run(gx, None if with_stats else _sampler(g.points(points))).items():
                    if with_stats:
                        a = a.float()
                        if name not in acc:
                            acc[name] = _empty_stats(a.shape[1])
                    vals = (sample_at(a, g.points(points)) if with_stats else a).transpose(1, 2)   # B x P x C
                    sampled.setdefault(name, []).append(vals)
                    if kept.any():
                        arrays[name][v, idx[kept]] = vals[torch.from_numpy(kept).to(vals.device)].cpu().numpy(
                            ).astype(np.float16)
                    if with_stats:
                        _accumulate(acc[name], a, idx)
            moments.update(originals or {name: s[0] for name, s in sampled.items()}, sampled, idx)
            log.info("natural activations (%s): %d/%d images x %d versions", group, len(rows), len(views),
                     len(versions))
    for arr in arrays.values():
        arr.flush()
    return {"rows": np.asarray(rows, dtype=np.int64), "acc": acc, "moments": moments.cpu()}


def _empty_stats(c: int) -> dict:
    """Partial sums of ``c`` units before any image (see :func:`_accumulate`)."""
    return {"sum": torch.zeros(c, dtype=torch.float64), "sq": torch.zeros(c, dtype=torch.float64), "n": 0,
            "cross": torch.zeros(c, c, dtype=torch.float64), "top": TopImages.empty(c)}


def _sampler(points: torch.Tensor):
    """A :meth:`capture.run` reduction: a layer's values at ``points`` (N x C x P, :func:`sample_at`)."""
    def at(layer: str, maps: torch.Tensor) -> torch.Tensor:
        return sample_at(maps.float(), points)
    return at


def _combined_stats(accs: list[dict], c: int) -> dict:
    """Mean, std and covariance over all positions from partial sums (added in shard order), and the units'
    strongest images over all shards."""
    total = {k: sum(a[k] for a in accs) for k in ("sum", "sq", "cross", "n")}
    mean = (total["sum"] / total["n"]).numpy()
    std = np.sqrt(np.maximum((total["sq"] / total["n"]).numpy() - mean**2, 0.0))
    cov = (total["cross"] / total["n"]).numpy() - np.outer(mean, mean)
    top = TopImages.empty(c)
    for a in accs:
        top = top.merge(a["top"])
    return {"mean": mean, "std": std, "cov": cov, "top": top}


def _accumulate(st: dict, a: torch.Tensor, idx: np.ndarray) -> None:
    """Running per-unit sums over all positions, and the units' strongest images so far."""
    flat = a.flatten(2)
    st["sum"] += flat.sum((0, 2)).double().cpu()
    st["sq"] += flat.pow(2).sum((0, 2)).double().cpu()
    rows = flat.transpose(1, 2).reshape(-1, flat.shape[1])
    st["cross"] += (rows.T @ rows).double().cpu()
    st["n"] += flat.shape[0] * flat.shape[2]
    mx, arg = flat.max(2)                                                     # B x C
    images = np.broadcast_to(idx.astype(np.int64)[None, :], (mx.shape[1], len(idx)))
    st["top"] = st["top"].merge(TopImages(mx.T.cpu().numpy(), images, arg.T.cpu().numpy().astype(np.int64)))


def _allocated_memmap(tmp: dict[str, str], name: str, shape: tuple[int, ...]) -> np.memmap:
    """A float16 ``.npy`` memmap at ``tmp[name]`` whose blocks are reserved on disk first: a full disk is
    then an error here, not a SIGBUS when a page is written later. On failure every temporary sample
    file of ``tmp`` is removed."""
    try:
        arr = np.lib.format.open_memmap(tmp[name], mode="w+", dtype=np.float16, shape=shape)
        with open(tmp[name], "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp[name]))
        return arr
    except OSError as exc:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)
        need = 2 * int(np.prod(shape)) / 1e9
        raise OSError(exc.errno, f"cannot store the activation samples ({need:.2f} GB for {name}) in "
                                 f"{os.path.dirname(tmp[name])}: {exc.strerror}") from None
