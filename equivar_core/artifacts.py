"""Which asset owns each array file a run writes beside its tables: the one declaration that the no-op check
(:mod:`pipelines.fingerprints`), the graph test, the fault tests and ``docs/graph.md`` read.

A file belongs to the asset whose stage writes it and whose fingerprint covers what is in it; an asset that
reads the file declares its owner upstream (an input or a dependency), so the graph shows every way a result
travels. Owners are asset names: a table (``unit_stats``) or one sweep group's slice of a table
(``transformed_samples/rotate``).

Where the natural images' pass writes what (:func:`equivar_core.stages.natural_activations`): the unit
statistics of the ``unit_stats`` table are summed beside their covariance and strongest images, so those two
files are ``unit_stats``'s (``tuning`` and ``family_sweeps`` read them and declare ``unit_stats``); the samples,
moments, fold scores, sampled positions, loaded-image mask and the plain correlations (the ``identity`` score
archive) are ``activation_samples``'s, the manifest of that pass's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .layout import Layout
from .transforms import IDENTITY


@dataclass(frozen=True)
class Artifact:
    """One kind of array file: what one file is of, where it lives and which asset owns it.

    ``per``: ``run`` (one file per model), ``layer``, ``group`` (a layer and a sweep group) or ``pair`` (a
    layer pair); ``path(layout, *what)`` is the file of one of them. ``owner`` owns every file of the kind;
    for a ``group`` kind, the identity group's only, and ``transformed`` names the table whose slice
    ``<transformed>/<group>`` owns a transform family's file.
    """

    kind: str
    owner: str
    per: str
    path: Callable[..., str]
    transformed: str | None = None

    def owner_of(self, group: str = IDENTITY) -> str:
        """The asset that owns this kind's file of sweep group ``group``."""
        return self.owner if self.per != "group" or group == IDENTITY else f"{self.transformed}/{group}"


#: every kind of array file of a run, with its owner
ARTIFACTS = (
    Artifact("loaded_mask", "activation_samples", "run", lambda layout: layout.loaded),
    # the positions are the same for every group (the sweep's grid and disc): each pass writes them when missing
    # or different, the natural images' pass owns them
    Artifact("points", "activation_samples", "layer", Layout.points),
    Artifact("top_images", "unit_stats", "layer", Layout.top_images),
    Artifact("covariance", "unit_stats", "layer", Layout.cov),
    Artifact("samples", "activation_samples", "group", Layout.samples, "transformed_samples"),
    Artifact("moments", "activation_samples", "group", Layout.moments, "transformed_samples"),
    Artifact("fold_scores", "activation_samples", "group", Layout.fold_scores, "transformed_samples"),
    Artifact("scores", "activation_samples", "group", Layout.scores, "transform_pairs"),
    Artifact("circuit_weights", "circuit_weights", "pair", Layout.circuit_weights),
)


def _group_of(asset: str) -> str:
    """The sweep group of an asset: its slice (``transformed_samples/rotate`` -> ``rotate``), else identity."""
    return asset.partition("/")[2] or IDENTITY


def owns_files(asset: str) -> bool:
    """Whether ``asset`` owns any kind of array file."""
    return any(a.owner_of(_group_of(asset)) == asset for a in ARTIFACTS)


def files_of(layout: Layout, asset: str, layers=(), pairs=()) -> dict[str, str]:
    """The array files ``asset`` owns (path -> kind), for the layers its table holds (``layers``) and, for
    layer-pair files, the layer pairs it holds (``pairs``: (source, destination))."""
    group = _group_of(asset)
    out: dict[str, str] = {}
    for a in ARTIFACTS:
        if a.owner_of(group) != asset:
            continue
        if a.per == "run":
            out[a.path(layout)] = a.kind
        elif a.per == "layer":
            out.update({a.path(layout, layer): a.kind for layer in sorted(layers)})
        elif a.per == "group":
            out.update({a.path(layout, layer, group): a.kind for layer in sorted(layers)})
        else:
            out.update({a.path(layout, src, dst): a.kind for src, dst in sorted(pairs)})
    return out


def owners(layout: Layout, layers, groups, pairs=()) -> dict[str, tuple[str, str]]:
    """Every array file of a run of ``layers`` with sweep groups ``groups`` (the identity group among them)
    and layer ``pairs``: path -> (its owner, its kind)."""
    found: dict[str, tuple[str, str]] = {}
    for a in ARTIFACTS:
        for group in (groups if a.per == "group" else [IDENTITY]):
            asset = a.owner_of(group)
            for path, kind in files_of(layout, asset, layers, pairs).items():
                if kind == a.kind:
                    found[path] = (asset, kind)
    return found
