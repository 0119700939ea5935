"""Where everything lives in a results folder: the one module that builds paths under ``<out>``.

::

    <out>/equivar.duckdb                                         the catalog (one view per table)
    <out>/<table>/model=<m>[/transform=<t>][/layer=<l>]/data.parquet            the tables
    <out>/_artifacts/model=<m>/fingerprints.json                 what each asset was computed from
    <out>/_artifacts/model=<m>/activations/<l>.<group>.samples.npy   sampled responses (float16), kept images
                                          <l>.<group>.moments.npz   score moments over all images
                                          <l>.<group>.folds.npz     scores of each fold of the images
                                          <l>.points.npy         the sampled map positions
                                          <l>.top_images.npz, <l>.cov.npy, loaded.npy
    <out>/_artifacts/model=<m>/scores/<l>.<group>.scores.npz      unit-by-unit transform scores
    <out>/_artifacts/model=<m>/circuits/<src>/<dst>.npz          expanded weights of a layer pair
    <out>/_artifacts/model=<m>/featurevis/<l>__<unit>__<sha>__s<steps>.png   cached feature visualizations
    <out>/report/<m>/index.html                                  the static report, and its pictures:
                     first_layer.png, family_<l>_<family>.png, circuit_<rank>.png
    <out>/_locks/<m>.lock                                        held by the run of <m> in progress (its pid)

Every model, layer, transform and table name enters a path through :func:`safe_value`
(one reversible escaping rule), so two different names never share a file, and no name can leave the folder.
Paths stored in tables and in the catalog are relative to ``<out>`` (:meth:`Layout.relative`), so a moved
or copied results folder reads its own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote

#: the catalog's file name in a results folder
CATALOG = "equivar.duckdb"
#: the folder of run locks, one per model (:mod:`equivar_core.runlock`)
LOCKS_DIR = "_locks"
#: the longest escaped name stored as a folder or file name component (file systems allow 255 bytes)
MAX_NAME_BYTES = 200


def safe_value(value: str) -> str:
    """The folder-name form of a model, layer or transform name: one reversible rule (:func:`unescape`).

    Letters, digits, ``_``, ``+``, ``-`` and ``.`` (not leading) stay; every other byte of the UTF-8
    name becomes ``%XX``, so two different names never share a folder (``a/b`` -> ``a%2Fb``, ``a_b``
    stays) and no name becomes ``.``, ``..``, a hidden folder or a path. Raises ``ValueError`` for
    an empty name or one whose folder name would exceed ``MAX_NAME_BYTES``.
    """
    text = str(value)
    if not text:
        raise ValueError("an empty name cannot be stored")
    out = []
    for i, byte in enumerate(text.encode("utf-8")):
        ch = chr(byte)
        keep = ch.isascii() and (ch.isalnum() or ch in "_+-" or (ch == "." and i > 0))
        out.append(ch if keep else f"%{byte:02X}")
    name = "".join(out)
    if len(name) > MAX_NAME_BYTES:
        raise ValueError(f"the name {text[:40]!r}... is too long to store ({len(name)} bytes as a folder name, "
                         f"at most {MAX_NAME_BYTES})")
    return name


def unescape(name: str) -> str:
    """The name a folder name of :func:`safe_value` stands for."""
    return unquote(name, errors="strict")


def partition_dir(root: str, table: str, model: str, layer: str | None = None, key: str = "layer") -> str:
    """``<root>/<table>/model=<model>[/<key>=<layer>]``."""
    parts = [root, safe_value(table), f"model={safe_value(model)}"]
    if layer is not None:
        parts.append(f"{key}={safe_value(layer)}")
    return os.path.join(*parts)


def table_dir(root: str, table: str, model: str, part: tuple[str, str] | None = None) -> str:
    """``<root>/<table>/model=<model>[/<key>=<value>]`` (``part``: a finer slice of the model's table)."""
    base = partition_dir(root, table, model)
    return os.path.join(base, f"{part[0]}={safe_value(part[1])}") if part else base


def samples_file(layer: str, group: str) -> str:
    """File name of one layer's samples of one sweep group, in the activations folder."""
    return f"{safe_value(layer)}.{safe_value(group)}.samples.npy"


def moments_file(layer: str, group: str) -> str:
    """File name of one layer's score moments of one sweep group, in the activations folder."""
    return f"{safe_value(layer)}.{safe_value(group)}.moments.npz"


def folds_file(layer: str, group: str) -> str:
    """File name of one layer's scores in each fold of the images, of one sweep group, in the activations
    folder (:meth:`equivar_core.moments.LayerMoments.fold_scores`)."""
    return f"{safe_value(layer)}.{safe_value(group)}.folds.npz"


def points_file(layer: str) -> str:
    """File name of one layer's sampled map positions, in the activations folder."""
    return f"{safe_value(layer)}.points.npy"


def artifacts_dir(root: str, model: str) -> str:
    """``<root>/_artifacts/model=<model>``: a model's arrays, scores, previews and fingerprints."""
    return os.path.join(root, "_artifacts", f"model={safe_value(model)}")


@dataclass(frozen=True)
class Layout:
    """The paths of one model's results under ``out``."""

    out: str
    model: str

    # -- the folder as a whole -------------------------------------------------------------------------------
    @property
    def catalog(self) -> str:
        return os.path.join(self.out, CATALOG)

    def table_dir(self, table: str, part: tuple[str, str] | None = None) -> str:
        """``<out>/<table>/model=<m>[/<key>=<value>]``: one model's (or one part's) files of a table."""
        return table_dir(self.out, table, self.model, part)

    def relative(self, path: str) -> str:
        """``path`` relative to ``out``, as tables store it."""
        return os.path.relpath(path, start=self.out)

    def resolve(self, stored: str) -> str:
        """A path as a table stores it, resolved in this folder."""
        return os.path.join(self.out, stored)

    @property
    def run_lock(self) -> str:
        """The lock a run of this model holds (:func:`equivar_core.runlock.run_lock`)."""
        return os.path.join(self.out, LOCKS_DIR, f"{safe_value(self.model)}.lock")

    def own_dirs(self) -> list[str]:
        """Every folder that holds only this model's files and exists: its part of each table
        (``<out>/<table>/model=<m>``), its artifacts and its report."""
        mine = f"model={safe_value(self.model)}"
        found = []
        if os.path.isdir(self.out):
            for name in sorted(os.listdir(self.out)):
                d = os.path.join(self.out, name, mine)
                if not name.startswith(".") and os.path.isdir(d):
                    found.append(d)
        return found + ([self.report] if os.path.isdir(self.report) else [])

    # -- one model's artifacts -------------------------------------------------------------------------------
    @property
    def artifacts(self) -> str:
        return artifacts_dir(self.out, self.model)

    @property
    def fingerprints(self) -> str:
        return os.path.join(self.artifacts, "fingerprints.json")

    @property
    def fingerprints_lock(self) -> str:
        return os.path.join(self.artifacts, ".fingerprints.lock")

    @property
    def activations(self) -> str:
        return os.path.join(self.artifacts, "activations")

    def samples(self, layer: str, group: str) -> str:
        """One layer's sampled responses to one sweep group's versions of the kept images (see
        :func:`samples_file`)."""
        return os.path.join(self.activations, samples_file(layer, group))

    def moments(self, layer: str, group: str) -> str:
        """One layer's score moments of one sweep group over all images (see :func:`moments_file`)."""
        return os.path.join(self.activations, moments_file(layer, group))

    def points(self, layer: str) -> str:
        """One layer's sampled map positions (P x 2, see :func:`points_file`)."""
        return os.path.join(self.activations, points_file(layer))

    def top_images(self, layer: str) -> str:
        """Each unit's strongest images, their maxima and the maxima's map positions
        (:class:`equivar_core.activations.TopImages`, C x K each)."""
        return os.path.join(self.activations, f"{safe_value(layer)}.top_images.npz")

    def fold_scores(self, layer: str, group: str) -> str:
        """Each fold's scores of one layer and sweep group (key -> K x C x C, see :func:`folds_file`)."""
        return os.path.join(self.activations, folds_file(layer, group))

    def cov(self, layer: str) -> str:
        """C x C covariance of a layer's units over all positions of the natural images."""
        return os.path.join(self.activations, f"{safe_value(layer)}.cov.npy")

    @property
    def loaded(self) -> str:
        """Which planned images could be read (bool, N)."""
        return os.path.join(self.activations, "loaded.npy")

    def scores(self, layer: str, group: str) -> str:
        """The C x C score matrices of one layer and sweep group (``identity`` or a transform family)."""
        return os.path.join(self.artifacts, "scores", f"{safe_value(layer)}.{safe_value(group)}.scores.npz")

    def circuit_weights(self, src: str, dst: str) -> str:
        """Expanded weights of one layer pair: ``weights`` (rows x C_src x k x k) and the rows' ``dst_units``."""
        return os.path.join(self.artifacts, "circuits", safe_value(src), f"{safe_value(dst)}.npz")

    @property
    def featurevis(self) -> str:
        return os.path.join(self.artifacts, "featurevis")

    def featurevis_image(self, layer: str, unit: int, weights: str, steps: int) -> str:
        """A cached feature visualization of one unit, for weights whose checksum starts with ``weights``."""
        return os.path.join(self.featurevis, f"{safe_value(layer)}__{unit}__{safe_value(weights)}__s{steps}.png")

    # -- the report ------------------------------------------------------------------------------------------
    @property
    def report(self) -> str:
        return os.path.join(self.out, "report", safe_value(self.model))

    @property
    def report_index(self) -> str:
        return os.path.join(self.report, "index.html")

    @property
    def first_layer_picture(self) -> str:
        return os.path.join(self.report, "first_layer.png")

    def family_picture(self, layer: str, family: int) -> str:
        return os.path.join(self.report, f"family_{safe_value(layer)}_{int(family)}.png")

    def mirror_picture(self, layer: str) -> str:
        """The layer's best mirror pairs, side by side."""
        return os.path.join(self.report, f"mirror_{safe_value(layer)}.png")

    def match_picture(self, other: str, rank: int) -> str:
        """The ``rank``-th best family match of this model in model ``other`` (0 first)."""
        return os.path.join(self.report, f"match_{safe_value(other)}_{int(rank)}.png")

    def circuit_picture(self, rank: int) -> str:
        """The diagram of the ``rank``-th most equivariant circuit (0 first)."""
        return os.path.join(self.report, f"circuit_{int(rank)}.png")
