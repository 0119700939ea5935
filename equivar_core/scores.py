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
(image n with image n + N/2), ``null_score``; ``z`` is the score's distance
from the mean of all C x C null scores of that layer and version, in their
standard deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .transforms import Transform


@dataclass(frozen=True)
class ScoreSettings:
    top_k: int = 3
    chunk_images: int = 16


def pearson_cross(a_chunks, b_chunks) -> np.ndarray:
    """corr(A[:, u], B[:, v]) for streams of row chunks (each m x C); returns C x C."""
    n = 0
    sa = sb = saa = sbb = sab = None
    for a, b in zip(a_chunks, b_chunks):
        a = torch.as_tensor(a, dtype=torch.float32)
        b = torch.as_tensor(b, dtype=torch.float32)
        if sa is None:
            sa, sb = torch.zeros(a.shape[1], dtype=torch.float64), torch.zeros(b.shape[1], dtype=torch.float64)
            saa, sbb = torch.zeros_like(sa), torch.zeros_like(sb)
            sab = torch.zeros(a.shape[1], b.shape[1], dtype=torch.float64)
        n += a.shape[0]
        sa += a.sum(0).double()
        sb += b.sum(0).double()
        saa += a.pow(2).sum(0).double()
        sbb += b.pow(2).sum(0).double()
        sab += (a.T @ b).double()
    ma, mb = sa / n, sb / n
    cov = sab / n - torch.outer(ma, mb)
    sd_a = (saa / n - ma**2).clamp_min(0).sqrt()
    sd_b = (sbb / n - mb**2).clamp_min(0).sqrt()
    denom = torch.outer(sd_a, sd_b)
    r = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
    return r.clamp(-1, 1).numpy()


def version_scores(samples: np.ndarray, version: int, transform: Transform, points: np.ndarray, disc_radius: float,
                   images: np.ndarray, settings: ScoreSettings = ScoreSettings(),
                   other: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Score and null-score matrices (C x C') of one version.

    Parameters
    ----------
    samples : V x N x P x C array (may be a memmap); its identity version is the "x" side
    points : P x 2 normalized sample points
    images : indices of the images to use (the readable ones)
    other : V x N x P x C' samples of another layer at the same points, for the "g.x" side
        (cross-layer scores); by default ``samples`` itself
    """
    valid = transform.valid(torch.as_tensor(points), disc_radius).numpy()
    other = samples if other is None else other
    n = len(images)
    shift = np.roll(images, n // 2) if n > 1 else images
    chunks = [images[i:i + settings.chunk_images] for i in range(0, n, settings.chunk_images)]
    null_chunks = [shift[i:i + settings.chunk_images] for i in range(0, n, settings.chunk_images)]

    def rows(arr, v, idx):
        block = np.asarray(arr[v, np.sort(idx)][:, valid], dtype=np.float32)
        order = np.argsort(np.argsort(idx))  # restore idx order after the sorted read
        return block[order].reshape(-1, block.shape[-1])

    score = pearson_cross((rows(samples, 0, c) for c in chunks), (rows(other, version, c) for c in chunks))
    null = pearson_cross((rows(samples, 0, c) for c in chunks), (rows(other, version, c) for c in null_chunks))
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
    m = np.linalg.solve(identity + lam * np.eye(c), score)                 # C x C, column v = map onto v
    r2 = np.einsum("uv,uv->v", score, m)                                    # s_v^T R^-1 s_v
    sq = m**2
    col = np.maximum(sq.sum(0), 1e-12)
    return {"r2": float(np.clip(r2, 0, 1).mean()), "permutation": float((sq.max(0) / col).mean()),
            "identity": float((np.diag(sq) / col).mean())}
