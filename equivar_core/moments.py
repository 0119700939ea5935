"""Scores from moments: the sums behind every transform score, added up during the forward passes.

A transform score is a Pearson correlation over images n and points p
(:mod:`equivar_core.scores`), so it needs only sums over (n, p): of each unit
on x, of each unit on g.x, of their squares and of their products. Those are
added batch by batch, in float64, while a batch's versions pass through the
network, and nothing per image has to stay: a run's disk and memory grow with
the numbers of units and versions, not with the number of images. Image
shards (Ray tasks) return their sums, which add.

Every sweep group's passes also run the batch's original images, so that x
and g.x meet in memory. Per layer and group, for each version g (x and g.x at
the layer's sample points, :mod:`equivar_core.activations`, restricted to the
points that g keeps inside the disc; keys spelled by :mod:`equivar_core.archive_keys`):

* ``plain|<g>``: the sums for ``corr(x, g.x)`` and for the null ``corr(x, g.x')``,
  x' another image of the same forward batch (image i with image i + B/2: the
  batch rolled by half its size B; a batch of one image pairs it with itself);
* with each of those, the squares of the layer's units mixed by the basis
  control's random orthogonal matrix Q (:mod:`equivar_core.basis`): with them
  the scores in that basis are exact (cross-products ``Q S Q^T``), no pass and
  no stored sample needed;
* for a colour transform swept over a full orbit, ``centred|<g>`` and
  ``centred|identity:0``: the same for the orbit-centred responses
  (:func:`equivar_core.scores.orbit_centred_scores`), the orbit mean taken
  over the batch's x and all its versions;
* for the scale group, ``cross|<earlier layer>|<g>``: the sums between an
  earlier layer's units on x and this layer's units on the zoomed image (scale
  pairs); the layers share their sample points.

With K folds (``stability.folds``), the sums that families read (``centred|*``
where the group has them, else ``plain|*``) are also kept for each fold of the
images (image i in fold i mod K), without the null or the random basis: each
batch's images are sorted by fold and each fold's rows multiplied alone, and
the whole set's sums are the folds' added up, so no product is computed twice
(:class:`~equivar_core.scores.CrossMoments`). They are stored as the folds'
scores (:meth:`LayerMoments.fold_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .archive_keys import CENTRED, CROSS, PLAIN, moments_key, pairings, parse_moments_key
from .basis import random_orthogonal
from .scores import CrossMoments, full_orbit
from .transforms import IDENTITY_LABEL, Scale, Transform, label_amount


@dataclass(frozen=True)
class SumOptions:
    """What a group's moments sum besides the plain scores, and how: products in bfloat16 (``bf16``), the mixed
    squares of each layer's random basis drawn from ``seed`` as the basis control does (None: none), and the
    sums of ``folds`` disjoint folds of the images (image i in fold i mod K; 0: none)."""

    seed: int | None = None
    bf16: bool = False
    folds: int = 0


class LayerMoments:
    """One layer's sums for one sweep group (see the module docstring); ``mix``: its random basis."""

    def __init__(self, versions: list[Transform], points: torch.Tensor, disc_radius: float,
                 mix: torch.Tensor | None, options: SumOptions, earlier: list[str] | None = None):
        bf16, folds = options.bf16, options.folds
        self.labels = [g.label for g in versions]
        self.mix = mix
        self.valid = [g.valid(points, disc_radius) for g in versions]
        self.all_valid = [bool(v.all()) for v in self.valid]
        amounts = [g.amount for g in versions]
        self.centred = bool(versions) and not versions[0].spatial and versions[0].label != IDENTITY_LABEL \
            and full_orbit(amounts)
        self.folds = folds
        plain_folds = 0 if self.centred else folds          # families read the centred sums where the group has them
        self.moments: dict[str, CrossMoments] = {moments_key(PLAIN, g): CrossMoments(bf16, mix, plain_folds)
                                                 for g in self.labels}
        if self.centred:
            self.moments |= {moments_key(CENTRED, g): CrossMoments(bf16, mix, folds)
                             for g in [IDENTITY_LABEL, *self.labels]}
        self.moments |= {moments_key(CROSS, g, a): CrossMoments(bf16) for a in earlier or [] for g in self.labels}

    def _at(self, x: torch.Tensor, v: int) -> torch.Tensor:
        """Rows (image, point) of a B x P x C block at the points version ``v`` keeps."""
        x = x if self.all_valid[v] else x[:, self.valid[v].to(x.device)]
        return x.reshape(-1, x.shape[-1])

    def _rows(self, per_fold: list[int], v: int | None) -> list[tuple[int, int]] | None:
        """Each fold's rows of an image-major block sorted by fold (``per_fold`` images each), at the points
        version ``v`` keeps (all points for None)."""
        if not self.folds:
            return None
        points = len(self.valid[0]) if v is None else int(self.valid[v].sum())
        ends = np.cumsum(per_fold) * points
        return [(int(e - n * points), int(e)) for n, e in zip(per_fold, ends)]

    def update(self, x: torch.Tensor, gx: list[torch.Tensor], earlier: dict[str, torch.Tensor] | None = None,
               images: np.ndarray | None = None) -> None:
        """Add one batch: ``x`` (B x P x C) the layer on the original images, ``gx`` the layer on each version,
        ``earlier``: earlier layers on the original images (for ``cross``), ``images``: the batch's image
        indices (B, for the folds)."""
        half = x.shape[0] // 2
        order, per_fold = slice(None), []
        if self.folds:
            fold = np.asarray(images) % self.folds
            order = torch.as_tensor(np.argsort(fold, kind="stable"), device=x.device)
            per_fold = np.bincount(fold, minlength=self.folds).tolist()
        xs = x[order]                                   # the batch's images sorted by fold
        xq = None if self.mix is None else (x @ self.mix.T).pow(2)       # x's mixed squares, once per batch
        for v, (label, y) in enumerate(zip(self.labels, gx)):
            b = self._at(y[order], v)
            null = self._at(torch.roll(y, half, 0)[order], v)       # image i with i + B/2 of the batch
            self.moments[moments_key(PLAIN, label)].update(self._at(xs, v), b, null,
                                                  a_mixed_squares=None if xq is None else self._at(xq, v).sum(0),
                                                  fold_rows=self._rows(per_fold, v))
            for name, e in (earlier or {}).items():
                self.moments[moments_key(CROSS, label, name)].update(self._at(e[order], v), b, null)
        if self.centred:
            stack = torch.stack([x, *gx])[:, order]
            stack = stack - stack.mean(0, keepdim=True)
            a = stack[0].reshape(-1, stack.shape[-1])
            aq = None if self.mix is None else (a @ self.mix.T).pow(2).sum(0)
            for label, y in zip([IDENTITY_LABEL, *self.labels], stack):
                self.moments[moments_key(CENTRED, label)].update(a, y.reshape(-1, y.shape[-1]), a_mixed_squares=aq,
                                                        fold_rows=self._rows(per_fold, None))

    def merge(self, other: "LayerMoments") -> "LayerMoments":
        for key, m in other.moments.items():
            self.moments[key].merge(m)
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key, m in self.moments.items():
            out |= m.arrays(key)
        return out

    def fold_scores(self) -> dict[str, np.ndarray]:
        """key -> K x C x C float16: each fold's scores of the sums kept per fold (NaN for a fold without
        images), e.g. ``plain|rotate:30`` or ``centred|identity:0``. Half precision (scores within 5e-4, far
        below what a fold's fewer images change) keeps them at a quarter of the whole set's moments."""
        out = {}
        for key, m in self.moments.items():
            if m.folds:
                out[key] = np.stack([f.correlations()[0] if f.n else np.full(m.sums[4].shape, np.nan)
                                     for f in m.folds]).astype(np.float16)
        return out


class GroupMoments:
    """The sums of every requested layer for one sweep group, created on the first batch (when the layers'
    widths are known), with ``options`` (:class:`SumOptions`)."""

    def __init__(self, group: str, versions: list[Transform], points: torch.Tensor, disc_radius: float,
                 options: SumOptions = SumOptions()):
        self.group, self.versions, self.points, self.disc_radius = group, versions, points, disc_radius
        self.options = options
        self.seed, self.bf16, self.folds = options.seed, options.bf16, options.folds
        self.cross_layer = group == Scale.name
        self.layers: dict[str, LayerMoments] = {}

    def update(self, x: dict[str, torch.Tensor], gx: dict[str, list[torch.Tensor]],
               images: np.ndarray | None = None) -> None:
        """One batch: layer -> B x P x C on the original images, and layer -> the same for each version;
        ``images``: the batch's image indices (which fold each image is in)."""
        names = list(gx)
        for i, name in enumerate(names):
            if name not in self.layers:
                c = gx[name][0].shape[-1]
                mix = None if self.seed is None else torch.as_tensor(
                    random_orthogonal(c, self.seed, name), dtype=torch.float32, device=gx[name][0].device)
                self.layers[name] = LayerMoments(self.versions, self.points, self.disc_radius, mix, self.options,
                                                 names[:i] if self.cross_layer else [])
            self.layers[name].update(x[name], gx[name], {e: x[e] for e in names[:i]} if self.cross_layer else {},
                                     images)

    def cpu(self) -> "GroupMoments":
        """The same sums with every tensor in host memory (to return them from a GPU worker), in place."""
        self.points = self.points.cpu()
        for layer in self.layers.values():
            for m in layer.moments.values():
                m.mix = None if m.mix is None else m.mix.cpu()
            layer.valid = [v.cpu() for v in layer.valid]
        return self

    @classmethod
    def total(cls, parts: list["GroupMoments"]) -> "GroupMoments":
        """The sums of several shards' moments, added in the order given."""
        out = parts[0]
        for part in parts[1:]:
            for name, layer in part.layers.items():
                if name in out.layers:
                    out.layers[name].merge(layer)
                else:
                    out.layers[name] = layer
        return out


class StoredMoments:
    """One layer's saved sums for one group (``np.load`` of :meth:`LayerMoments.arrays`), read as scores."""

    def __init__(self, path: str):
        with np.load(path) as z:
            self._arrays = {k: z[k] for k in z.files}
        self.keys = pairings(self._arrays)

    def _m(self, key: str) -> CrossMoments:
        if key not in self.keys:
            raise KeyError(f"no moments {key!r} stored (have: {', '.join(self.keys)})")
        return CrossMoments.from_arrays(self._arrays, key)

    def scores(self, label: str, mixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(score, null) of version ``label`` (in the random basis with ``mixed``)."""
        score, null = self._m(moments_key(PLAIN, label)).correlations(mixed)
        return score, null

    def centred(self, mixed: bool = False) -> tuple[np.ndarray, dict[float, np.ndarray]] | None:
        """Orbit-centred (identity, amount -> score) where the group has them, else None."""
        labels = [g for kind, g in map(parse_moments_key, self.keys) if kind == CENTRED]
        if not labels:
            return None
        identity = self._m(moments_key(CENTRED, IDENTITY_LABEL)).correlations(mixed)[0]
        return identity, {label_amount(g): self._m(moments_key(CENTRED, g)).correlations(mixed)[0]
                          for g in labels if g != IDENTITY_LABEL}

    def cross(self, earlier: str, label: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(score, null) of an earlier layer's units on x against this layer's on version ``label``."""
        key = moments_key(CROSS, label, earlier)
        if key not in self.keys:
            return None
        score, null = self._m(key).correlations()
        return score, null
