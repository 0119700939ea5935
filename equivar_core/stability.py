"""Whether families hold up: over folds of the photos, and when their thresholds move.

Folds. The natural images are split into K disjoint folds (image i in fold i mod K) and the passes keep
each fold's transform scores apart (:mod:`equivar_core.moments`); families are fitted again in each fold
with the same tuning (synthetic stimuli, which do not depend on the photos). For a family F of the whole
data and the families G of its layer and transform in fold k, F's Jaccard in fold k is

    J_k(F) = max_G |F & G| / |F | G|          (0 when the fold has no family there),

F reappears in fold k when ``J_k(F) >= min_jaccard``; :func:`reappearance` gives both per family.

Agreement between two fits of one layer and transform: every unit gets a label, its family or, when it is
in none, a cluster of its own (:func:`singletons`: two units that are both left out are no evidence that
they belong together, while one shared "unassigned" cluster would make any two sparse fits agree), and
:func:`adjusted_rand_index` compares the two labelings: 1 for the same partition, about 0 for partitions no
more alike than chance.
"""

from __future__ import annotations

import numpy as np


def singletons(labels: np.ndarray) -> np.ndarray:
    """``labels`` (C ints, -1 for a unit in no family) with every -1 replaced by a label of its own."""
    labels = np.asarray(labels)
    out = labels.copy()
    left = np.flatnonzero(labels < 0)
    out[left] = labels.max(initial=-1) + 1 + np.arange(len(left))
    return out


def _pairs(counts: np.ndarray) -> float:
    """Number of unordered pairs within groups of these sizes."""
    counts = np.asarray(counts, dtype=float)
    return float((counts * (counts - 1) / 2).sum())


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings of the same items (Hubert and Arabie, 1985).

    With n_ij the items labelled i in ``a`` and j in ``b`` and a_i, b_j the label counts,
    ``(sum C(n_ij, 2) - E) / ((sum C(a_i, 2) + sum C(b_j, 2)) / 2 - E)`` where
    ``E = sum C(a_i, 2) sum C(b_j, 2) / C(n, 2)``. Two labelings that put no two items together, or every
    item together, have nothing to adjust: 1.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"labelings of {len(a)} and {len(b)} items")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = _pairs(np.unique(ia * (ib.max(initial=0) + 1) + ib, return_counts=True)[1])
    pa, pb = _pairs(np.bincount(ia)), _pairs(np.bincount(ib))
    expected = pa * pb / _pairs([len(a)]) if len(a) > 1 else 0.0
    top = (pa + pb) / 2
    if top == expected:
        return 1.0
    return (joint - expected) / (top - expected)


def mean_pairwise_ari(labelings: list[np.ndarray]) -> float:
    """Mean :func:`adjusted_rand_index` over every pair of labelings (NaN for fewer than two); ``-1`` labels
    are :func:`singletons`."""
    labelings = [singletons(x) for x in labelings]
    values = [adjusted_rand_index(labelings[i], labelings[j])
              for i in range(len(labelings)) for j in range(i + 1, len(labelings))]
    return float(np.mean(values)) if values else float("nan")


def best_jaccard(members: np.ndarray, labels: np.ndarray) -> float:
    """``max_G |F & G| / |F | G|`` over the families G of ``labels`` (C ints, -1: in none) for the members F."""
    members = np.asarray(members, dtype=int)
    labels = np.asarray(labels)
    found = labels[members]
    found = found[found >= 0]
    if not len(found):
        return 0.0
    fams, shared = np.unique(found, return_counts=True)
    sizes = np.array([(labels == f).sum() for f in fams])
    return float((shared / (len(members) + sizes - shared)).max())


def reappearance(members: np.ndarray, fold_labels: list[np.ndarray], min_jaccard: float) -> tuple[float, float]:
    """(share of folds where the family reappears, median Jaccard over the folds); NaN for no fold."""
    if not fold_labels:
        return float("nan"), float("nan")
    jaccard = np.array([best_jaccard(members, labels) for labels in fold_labels])
    return float((jaccard >= min_jaccard).mean()), float(np.median(jaccard))
