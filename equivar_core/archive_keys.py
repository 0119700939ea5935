"""The keys inside the run's ``.npz`` archives, spelled in one place: every writer and reader goes through here.

Versions are named by their transform labels (``NAME:AMOUNT``, :func:`equivar_core.transforms.label`).

**Score moments** (``<layer>.<group>.moments.npz``, :class:`equivar_core.moments.LayerMoments`) hold the sums
of one :class:`~equivar_core.scores.CrossMoments` per pairing, each sum under ``<pairing>|<field>``
(:func:`field_key`: ``|n``, ``|sum0``, ..., ``|mix``, ``|mixsq0``), where the pairing (:func:`moments_key`) is

* ``plain|<label>``: x with g.x (and the null),
* ``centred|<label>``: the orbit-centred responses, ``centred|identity:0`` their x with x,
* ``cross|<earlier layer>|<label>``: an earlier layer's units on x with this layer's on g.x.

**Fold scores** (``<layer>.<group>.folds.npz``, :meth:`~equivar_core.moments.LayerMoments.fold_scores`) hold
K x C x C scores under the pairing's key (``plain|rotate:30``, ``centred|identity:0``).

**Score archives** (``<layer>.<group>.scores.npz``, written by the ``transform_pairs`` and ``unit_stats``
stages) hold C x C matrices: ``<label>`` the transform scores of a version and ``<label>:null`` its null
(:func:`score_arrays`); for a colour transform swept over a full orbit also ``<label>:centred`` and
``centred-identity:<name>``, the orbit-centred scores (:func:`centred_arrays`); the identity group's archive
``identity:0``, the units' plain correlations on the same images (:func:`identity_arrays`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .transforms import IDENTITY_LABEL, label, parse_label

#: the pairings of the score moments
PLAIN, CENTRED, CROSS = "plain", "centred", "cross"
#: between the parts of a moments key (and before a field)
_PART = "|"
#: after a version's label in a score archive
_NULL, _CENTRED = ":null", ":centred"
#: before a transform's name in a score archive: its orbit-centred identity scores
_CENTRED_IDENTITY = "centred-identity:"


# -- score moments and fold scores -------------------------------------------------------------------------------
def moments_key(kind: str, version: str, earlier: str | None = None) -> str:
    """The key of one pairing of the moments: ``kind|version`` (``plain|rotate:30``), or for ``cross``
    ``cross|earlier|version``."""
    if (kind == CROSS) != (earlier is not None):
        raise ValueError(f"an earlier layer goes with {CROSS!r} moments only, got {kind!r} and {earlier!r}")
    return _PART.join([kind, *([earlier] if earlier is not None else []), version])


def parse_moments_key(key: str) -> tuple[str, str]:
    """(kind, version label) of a key written by :func:`moments_key`."""
    kind, _, rest = key.partition(_PART)
    return kind, rest.rsplit(_PART, 1)[-1]


def field_key(pairing: str, field: str) -> str:
    """The name of one sum (``n``, ``sum0``, ``mix`` ...) of a pairing's moments in the archive."""
    return f"{pairing}{_PART}{field}"


def pairing_of(name: str) -> str:
    """The pairing (:func:`moments_key`) an archive name of :func:`field_key` belongs to."""
    return name.rsplit(_PART, 1)[0]


def pairings(names: Iterable[str]) -> list[str]:
    """The distinct pairings of a moments archive's names (:func:`pairing_of`), sorted."""
    return sorted({pairing_of(n) for n in names})


def versions_of(arrays: Mapping[str, np.ndarray], kind: str, name: str) -> dict[float, np.ndarray]:
    """amount -> array of the ``kind`` pairings of transform ``name``'s versions among ``arrays`` (keyed by
    :func:`moments_key`: fold scores), in their order."""
    out = {}
    for key, value in arrays.items():
        k, version = parse_moments_key(key)
        if k == kind and _is_label_of(version, name):
            out[parse_label(version)[1]] = value
    return out


# -- score archives ----------------------------------------------------------------------------------------------
def score_arrays(version: str, score: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """A version's C x C scores and null scores, keyed for a score archive."""
    return {version: score, version + _NULL: null}


def centred_arrays(name: str, identity: np.ndarray, by_amount: Mapping[float, np.ndarray]) -> dict[str, np.ndarray]:
    """Transform ``name``'s orbit-centred identity and per-amount scores, keyed for a score archive."""
    return {_CENTRED_IDENTITY + name: identity} | {label(name, a) + _CENTRED: m for a, m in by_amount.items()}


def identity_arrays(identity: np.ndarray) -> dict[str, np.ndarray]:
    """The identity group's score archive: the units' plain correlations on the same images."""
    return {IDENTITY_LABEL: identity}


def plain_scores(archive: Mapping[str, np.ndarray], name: str) -> dict[float, np.ndarray]:
    """amount -> C x C scores of transform ``name``'s versions in a score archive (``np.load``'s file or a
    dict), in the archive's order."""
    return {parse_label(k)[1]: archive[k] for k in archive if _is_label_of(k, name)}


def centred_scores(archive: Mapping[str, np.ndarray], name: str
                   ) -> tuple[dict[float, np.ndarray], np.ndarray] | None:
    """(amount -> C x C orbit-centred scores, the centred identity scores) of transform ``name`` in a score
    archive, or None where it has none."""
    if _CENTRED_IDENTITY + name not in archive:
        return None
    by_amount = {parse_label(k.removesuffix(_CENTRED))[1]: archive[k] for k in archive if k.endswith(_CENTRED)}
    return by_amount, archive[_CENTRED_IDENTITY + name]


def identity_scores(archive: Mapping[str, np.ndarray]) -> np.ndarray:
    """The units' plain correlations in the identity group's score archive."""
    return archive[IDENTITY_LABEL]


def _is_label_of(text: str, name: str) -> bool:
    """Whether ``text`` is exactly a label of transform ``name`` (not a null or centred key)."""
    try:
        return parse_label(text)[0] == name
    except ValueError:
        return False
