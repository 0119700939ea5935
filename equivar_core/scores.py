"""Transform scores: does unit v on g.x do what unit u does on x?

For a layer with samples ``S[v, n, p, c]`` (see :mod:`equivar_core.activations`),
the score of the pair (u, v) under version g is the Pearson correlation

    score_g(u, v) = corr_{n, p}( S[identity, n, p, u], S[g, n, p, v] )

over images n and the points p whose transformed position stays inside the
central disc (so rotated-in corners never count). All C x C pairs come from
one matrix product of the standardized samples, accumulated over chunks of
images (float32 GEMM, float64 running sums). ``score_g(u, u)`` is u's
invariance to g.

Null: the same statistic with the images of g.x paired with *other* images
(within each chunk of images, image n with image n + m/2), ``null_score``; ``z`` is the score's distance
from the mean of all C x C null scores of that layer and version, in their
standard deviations.

A run computes these from moments summed during its forward passes
(:mod:`equivar_core.moments`, chunks = forward batches); the functions here
compute them from stored samples, and define them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .archive_keys import field_key
from .transforms import Transform


@dataclass(frozen=True)
class ScoreSettings:
    top_k: int = 3
    chunk_images: int = 256
    device: str = "cpu"
    #: products in bfloat16 (sums stay float32/float64): "auto" = on CUDA only. Checked in
    #: tests/test_scores.py: scores within 0.01 of float32 on correlated data.
    bf16: str = "auto"
    #: the most floats :func:`orbit_centred_scores` reads at once (every version of a chunk of images)
    max_block_floats: int = 1 << 26

    def use_bf16(self) -> bool:
        return self.bf16 == "on" or (self.bf16 == "auto" and self.device.startswith("cuda"))


@dataclass(frozen=True)
class SampleGrid:
    """Where and on which images a layer's samples count: P x 2 normalized sample ``points`` inside the central
    disc of ``disc_radius`` (normalized), and ``images``, the indices of the images to use (the readable ones)."""

    points: np.ndarray
    disc_radius: float
    images: np.ndarray


@dataclass(frozen=True)
class TransformedVersion:
    """The "g.x" side of a score: version ``index`` of ``samples`` (V x N x P x C' at the same points as the "x"
    side; None: the "x" side's own array), made by ``transform``."""

    index: int
    transform: Transform
    samples: np.ndarray | None = None


#: a unit whose standard deviation over the sample points is below this share of its layer's median (over the
#: units that vary at all) is dead: constant but for round-off and the padding's border pattern, which dead
#: units share (two of them score 1 under any transform, a flip pair out of nothing); its correlations are 0
DEAD_UNIT_SHARE = 1e-2


def live_units(sd: torch.Tensor) -> torch.Tensor:
    """Which units of a layer vary (standard deviations ``sd``): above :data:`DEAD_UNIT_SHARE` of the median
    standard deviation of the units that vary at all."""
    moving = sd[sd > 0]
    return sd > (DEAD_UNIT_SHARE * moving.median() if len(moving) else 0)


class CrossMoments:
    """Running sums for Pearson correlations between the columns of two row streams.

    ``update(a, b, *others)`` adds rows of ``a`` paired with rows of ``b`` and,
    optionally, with rows of further matrices that are row permutations of ``b``
    (a null pairing): those share b's marginal sums and cost one more GEMM each.

    With ``mix`` (a C x C orthogonal matrix Q, as in :mod:`equivar_core.basis`) the
    squares of the mixed units ``Q a`` and ``Q b`` are summed too, so that
    ``correlations(mixed=True)`` gives the correlations of the layer in that basis
    without another pass: the mixed cross-products are ``Q S Q^T`` of the plain ones.
    Sums add: :meth:`merge` combines the moments of disjoint row sets (image shards).
    With ``folds`` (K), the sums of ``a`` with ``b`` are kept for each of K disjoint row sets too (folds of
    the images, for the stability of families over photos): ``folds[k].correlations()`` are fold k's scores.
    """

    def __init__(self, bf16: bool = False, mix: torch.Tensor | None = None, folds: int = 0):
        self.n = 0
        self.sums = None
        self.mixed_squares = None
        self.bf16 = bf16
        self.mix = mix
        #: the same sums over each fold's rows alone (no null pairing, no mixing), see :meth:`update`
        self.folds = [CrossMoments(bf16) for _ in range(folds)]

    def _products(self, a: torch.Tensor, others: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """``a^T x`` for each x of ``others`` (in bfloat16 with ``bf16``)."""
        if self.bf16:
            a16 = a.to(torch.bfloat16)
            return [torch.mm(a16.T, x.to(torch.bfloat16)).float() for x in others]
        return [torch.mm(a.T, x) for x in others]

    def _sums(self, a: torch.Tensor, b: torch.Tensor, others: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """The float64 sums of one block of rows (see :meth:`update`), in the order stored."""
        sums = [a.sum(0), b.sum(0), a.pow(2).sum(0), b.pow(2).sum(0), *self._products(a, (b, *others))]
        return [x.double().cpu() for x in sums]

    def _add(self, sums: list[torch.Tensor], n: int) -> None:
        """Add a block's sums in place (the first block's tensors are kept: the caller hands over fresh ones)."""
        if self.sums is None:
            self.sums = sums
        else:
            for total, x in zip(self.sums, sums):
                total.add_(x)
        self.n += n

    def update(self, a: torch.Tensor, b: torch.Tensor, *others: torch.Tensor,
               a_mixed_squares: torch.Tensor | None = None, fold_rows: list[tuple[int, int]] | None = None
               ) -> None:
        """Add rows; ``a_mixed_squares``: the column sums of ``(a Q^T)^2`` when the caller has them (the same
        ``a`` paired with several ``b``).

        With folds, ``fold_rows`` gives each fold's rows as a range ``(start, end)`` (the rows sorted by
        fold): each fold adds its own sums of ``a`` and ``b``, and this object's are the folds' added up,
        so the folds cost no product that the whole set would not compute anyway (``others`` are paired
        over all rows).
        """
        if self.folds:
            whole = None
            for fold, (start, end) in zip(self.folds, fold_rows):
                if end > start:
                    part = fold._sums(a[start:end], b[start:end], ())
                    whole = [x.clone() for x in part] if whole is None else [t.add_(x) for t, x in zip(whole, part)]
                    fold._add(part, end - start)
            self._add(whole + [x.double().cpu() for x in self._products(a, others)], a.shape[0])
        else:
            self._add(self._sums(a, b, others), a.shape[0])
        if self.mix is not None:
            mixed = [torch.mm(a, self.mix.T).pow(2).sum(0) if a_mixed_squares is None else a_mixed_squares,
                     torch.mm(b, self.mix.T).pow(2).sum(0)]
            mixed = [x.double().cpu() for x in mixed]
            self.mixed_squares = mixed if self.mixed_squares is None else [
                s + x for s, x in zip(self.mixed_squares, mixed)]

    def merge(self, other: "CrossMoments") -> "CrossMoments":
        """These sums plus ``other``'s (the same pairing over other rows), in place."""
        for fold, theirs in zip(self.folds, other.folds):
            fold.merge(theirs)
        if other.sums is None:
            return self
        if self.sums is None:
            self.sums, self.mixed_squares, self.n = other.sums, other.mixed_squares, other.n
            return self
        self.sums = [s + x for s, x in zip(self.sums, other.sums)]
        if self.mixed_squares is not None:
            self.mixed_squares = [s + x for s, x in zip(self.mixed_squares, other.mixed_squares)]
        self.n += other.n
        return self

    def correlations(self, mixed: bool = False) -> list[np.ndarray]:
        """One C x C' correlation matrix per paired matrix (b first); ``mixed``: of the units ``Q u``."""
        n = self.n
        sa, sb, saa, sbb, *cross = self.sums
        ma, mb = sa / n, sb / n
        va, vb = saa / n - ma**2, sbb / n - mb**2
        q = None
        if mixed:
            if self.mixed_squares is None:
                raise ValueError("these moments were summed without a mixing matrix")
            q = self.mix.double().cpu()
            va, vb = self.mixed_squares[0] / n - (q @ ma)**2, self.mixed_squares[1] / n - (q @ mb)**2
        sd_a, sd_b = va.clamp_min(0).sqrt(), vb.clamp_min(0).sqrt()
        denom = torch.outer(sd_a, sd_b)
        scored = torch.outer(live_units(sd_a), live_units(sd_b)) & (denom > 1e-12)
        out = []
        for sab in cross:
            cov = sab / n - torch.outer(ma, mb)
            cov = cov if q is None else q @ cov @ q.T
            r = torch.where(scored, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
            out.append(r.clamp(-1, 1).numpy())
        return out

    # -- storage ------------------------------------------------------------------------------------------------
    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The sums as named arrays (``np.savez``), each named by ``prefix`` and the sum
        (:func:`equivar_core.archive_keys.field_key`)."""
        out = {field_key(prefix, "n"): np.asarray(self.n)}
        out |= {field_key(prefix, f"sum{i}"): s.numpy() for i, s in enumerate(self.sums or [])}
        if self.mixed_squares is not None:
            out |= {field_key(prefix, "mix"): self.mix.double().cpu().numpy(),
                    field_key(prefix, "mixsq0"): self.mixed_squares[0].numpy(),
                    field_key(prefix, "mixsq1"): self.mixed_squares[1].numpy()}
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "CrossMoments":
        """The moments that :meth:`arrays` stored under ``prefix``."""
        mix = field_key(prefix, "mix")
        out = cls(mix=torch.from_numpy(arrays[mix]) if mix in arrays else None)
        out.n = int(arrays[field_key(prefix, "n")])
        k = sum(1 for name in arrays if name.startswith(field_key(prefix, "sum")))
        out.sums = [torch.from_numpy(np.asarray(arrays[field_key(prefix, f"sum{i}")])) for i in range(k)] or None
        if out.mix is not None:
            out.mixed_squares = [torch.from_numpy(np.asarray(arrays[field_key(prefix, f"mixsq{i}")])) for i in (0, 1)]
        return out


def pearson_cross(a_chunks, b_chunks) -> np.ndarray:
    """corr(A[:, u], B[:, v]) for streams of row chunks (each m x C); returns C x C."""
    acc = CrossMoments()
    for a, b in zip(a_chunks, b_chunks):
        acc.update(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32))
    return acc.correlations()[0]


def version_scores(samples: np.ndarray, gx: TransformedVersion, grid: SampleGrid,
                   settings: ScoreSettings = ScoreSettings(), mix: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Score and null-score matrices (C x C') of one version.

    Parameters
    ----------
    samples : V x N x P x C array (may be a memmap); its identity version is the "x" side
    gx : the "g.x" side: a version of ``samples`` itself, of another sweep group of the same layer, or of
        another layer (cross-layer scores)
    grid : the sample points and the images to use
    mix : C x C matrix applied to the units of both sides first (unit i becomes ``sum_j mix[i, j] u_j``):
        the scores of the layer in another basis (see :mod:`equivar_core.basis`)

    The null pairs, inside each chunk of images, image i of x with image
    i + m/2 of g.x (m the chunk's size), so it costs no extra read.
    """
    version = gx.index
    valid = gx.transform.valid(torch.as_tensor(grid.points), grid.disc_radius).numpy()
    other = samples if gx.samples is None else gx.samples
    images = np.sort(np.asarray(grid.images))
    chunks = [images[i:i + settings.chunk_images] for i in range(0, len(images), settings.chunk_images)]

    keep = np.flatnonzero(valid)
    all_points = len(keep) == len(valid)

    cuda = settings.device.startswith("cuda")

    def block(arr, v, idx):
        """m x P' x C float32 samples of images ``idx`` at the valid points (slices when possible)."""
        rows = arr[v, idx[0]:idx[-1] + 1] if idx[-1] - idx[0] + 1 == len(idx) else arr[v, idx]
        x = torch.from_numpy(np.require(rows, requirements=["C", "W"]))
        x = x if all_points else x[:, torch.from_numpy(keep)]
        if cuda:                                       # pinned host memory: an asynchronous copy
            x = x.pin_memory().to(settings.device, non_blocking=True)
        x = x.float()
        return x if mixing is None else x @ mixing.T

    mixing = None if mix is None else torch.as_tensor(mix, dtype=torch.float32, device=settings.device)

    acc = CrossMoments(bf16=settings.use_bf16())
    for idx in chunks:
        a, b = block(samples, 0, idx), block(other, version, idx)
        null_b = torch.roll(b, len(idx) // 2, 0)
        acc.update(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), null_b.reshape(-1, b.shape[-1]))
    score, null = acc.correlations()
    return score, null


def top_pairs(score: np.ndarray, null: np.ndarray, top_k: int, with_self: bool = True) -> dict[str, np.ndarray]:
    """Rows for the self pair (rank 0) and the ``top_k`` best other partners of every unit (rows of score)."""
    c = score.shape[0]
    mu, sd = float(null.mean()), float(null.std()) or 1.0
    others = score.copy()
    if not with_self:
        k = min(top_k, score.shape[1])
        part = np.argsort(-others, axis=1)[:, :k]
        units, partners = np.repeat(np.arange(c), k), part.ravel()
        s = score[units, partners]
        return {"unit": units, "partner": partners, "rank": np.tile(np.arange(1, k + 1), c), "score": s,
                "null_score": null[units, partners], "z": (s - mu) / sd}
    np.fill_diagonal(others, -np.inf)
    k = min(top_k, c - 1)
    part = np.argsort(-others, axis=1)[:, :k] if k > 0 else np.zeros((c, 0), dtype=int)
    units = np.concatenate([np.arange(c), np.repeat(np.arange(c), k)])
    partners = np.concatenate([np.arange(c), part.ravel()])
    ranks = np.concatenate([np.zeros(c, dtype=int), np.tile(np.arange(1, k + 1), c)])
    s = score[units, partners]
    return {"unit": units, "partner": partners, "rank": ranks, "score": s,
            "null_score": null[units, partners], "z": (s - mu) / sd}


def linear_map_summary(identity: np.ndarray, score: np.ndarray, ridge: float = 1e-3) -> dict[str, float]:
    """How well a linear map of the layer explains it on transformed images (Lenc & Vedaldi 2015).

    With standardized activations, the least-squares map M_g with
    ``phi(g.x) ~ M_g^T phi(x)`` is ``M_g = (R + lambda I)^-1 S``, where R is the
    units' correlation matrix on x (``identity``) and S the transform score
    matrix (``score``); both come from the same samples, so no further pass
    over the data is needed.

    Returns
    -------
    r2 : mean over output units of the variance explained by the map
    permutation : mean over output units of the largest squared weight's share of the column
        (1 when each unit on g.x is one unit of x: transformed-neuron equivariance)
    identity : mean share of the diagonal weight (1 when every unit is invariant)
    """
    c = len(identity)
    lam = ridge * float(np.trace(identity)) / max(c, 1)
    try:
        m = np.linalg.solve(identity + lam * np.eye(c), score)             # C x C, column v = map onto v
    except np.linalg.LinAlgError:         # no unit varies (a uniform image): the least-squares map is zero
        m = np.linalg.lstsq(identity + lam * np.eye(c), score, rcond=None)[0]
    r2 = np.einsum("uv,uv->v", score, m)                                    # s_v^T R^-1 s_v
    sq = m**2
    col = np.maximum(sq.sum(0), 1e-12)
    return {"r2": float(np.clip(r2, 0, 1).mean()), "permutation": float((sq.max(0) / col).mean()),
            "identity": float((np.diag(sq) / col).mean())}


def full_orbit(amounts) -> bool:
    """Whether 0 and ``amounts`` (degrees) sample the circle at even steps, so that their mean is the
    average over the transform's whole orbit."""
    a = np.unique(np.round(np.mod(np.r_[0.0, np.asarray(amounts, float)], 360.0), 6))
    return len(a) >= 3 and bool(np.allclose(np.diff(np.r_[a, a[0] + 360.0]), 360.0 / len(a), atol=1e-4))


def orbit_centred_scores(samples: np.ndarray, versions: np.ndarray, amounts, images: np.ndarray,
                         settings: ScoreSettings = ScoreSettings(), mix: np.ndarray | None = None
                         ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Scores of the parts of the responses that the transform moves (colour transforms over a full orbit).

    A unit's response to ``g_a.x`` splits into its average over the orbit, ``mean_b u(g_b.x)`` (the
    part no amount of g changes: for a hue rotation, the response to luminance), and the rest,
    ``u~(g_a.x)``. Two units that are hue-rotated copies of one another in some opponent plane
    share the rest but need not share the average: a colour's luminance weight differs from
    hue to hue in any plane other than the one the transform rotates in (YIQ's I-Q plane, CIELAB's
    a*b*), and natural images vary far more in luminance than in chroma, so plain scores can even
    be negative for exact copies. Here

        score~_a(u, v) = corr_{n, p}( u~(x), v~(g_a.x) ),   identity~ = corr( u~(x), v~(x) ),

    with the orbit average taken over the identity and every version (``full_orbit(amounts)`` must
    hold). One read of every version per chunk of images; ``mix`` as in :func:`version_scores`
    (the average is linear, so mixing and centring commute).
    """
    if not full_orbit(amounts):
        raise ValueError(f"orbit-centred scores need amounts that sample the circle evenly, got {list(amounts)}")
    images = np.sort(np.asarray(images))
    n_versions = len(amounts) + 1
    per_image = n_versions * int(np.prod(samples.shape[2:]))
    step = max(1, min(settings.chunk_images, settings.max_block_floats // max(per_image, 1)))
    mixing = None if mix is None else torch.as_tensor(mix, dtype=torch.float32, device=settings.device)
    accs = [CrossMoments(bf16=settings.use_bf16()) for _ in range(n_versions)]
    for i in range(0, len(images), step):
        idx = images[i:i + step]
        blocks = [samples[0, idx]] + [versions[v, idx] for v in range(len(amounts))]
        x = torch.from_numpy(np.stack(blocks).astype(np.float32)).to(settings.device)   # V x m x P x C
        x = x if mixing is None else x @ mixing.T
        x = (x - x.mean(0, keepdim=True)).reshape(n_versions, -1, x.shape[-1])
        for acc, b in zip(accs, x):
            acc.update(x[0], b)
    identity = accs[0].correlations()[0]
    return identity, {float(a): acc.correlations()[0] for a, acc in zip(amounts, accs[1:])}
