"""ImageNet classes of photos, and a network's top-1 accuracy on labelled photos.

A photo's class comes from its file name, as in the shared ImageNet sample (``n01440764_tench.JPEG`` ->
``n01440764``, ``tench``), or else from the folder it lies in (a folder-per-class layout:
``train/n01440764/x.JPEG``). A photo whose name and folder carry no WordNet id has no class. The class index
is the id's place among the 1,000 ILSVRC-2012 ids in sorted order, the order of every ImageNet classifier's
logits (``reference/imagenet_classes.csv``, shipped with the package).
"""

from __future__ import annotations

import csv
import functools
import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .images import ImageView, iter_batches

WNID = re.compile(r"^(n\d{8})(?:_(.+))?$")


@dataclass(frozen=True)
class ImageClass:
    """An ILSVRC-2012 class: its logit index, WordNet id and short name."""

    index: int
    wnid: str
    name: str


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> dict[str, ImageClass]:
    """The 1,000 ILSVRC-2012 classes by WordNet id."""
    path = os.path.join(os.path.dirname(__file__), "reference", "imagenet_classes.csv")
    with open(path, newline="") as fh:
        return {r["wnid"]: ImageClass(int(r["index"]), r["wnid"], r["name"]) for r in csv.DictReader(fh)}


def class_of(path: str) -> ImageClass | None:
    """The ImageNet class of the photo at ``path`` (by file name, else by folder), or None."""
    classes = imagenet_classes()
    stem = os.path.splitext(os.path.basename(path))[0]
    for name in (stem, os.path.basename(os.path.dirname(path))):
        match = WNID.match(name)
        if match and match.group(1) in classes:
            return classes[match.group(1)]
    return None


@torch.no_grad()
def top1(module: nn.Module, views: list[ImageView], input_size: int, batch_size: int = 32) -> tuple[float, int]:
    """Fraction of the labelled ``views`` whose largest logit is their class, and how many were labelled
    and readable. One pass over the photos, a batch at a time."""
    labelled = [v for v in views if class_of(v.path) is not None]
    target = {v.index: class_of(v.path).index for v in labelled}
    device = next(module.parameters()).device
    right = seen = 0
    for batch in iter_batches(labelled, input_size, batch_size):
        predicted = module(batch.images.to(device)).argmax(1).cpu()
        truth = torch.tensor([target[i] for i in batch.indices])
        right += int((predicted == truth).sum())
        seen += len(batch.indices)
    return (right / seen if seen else float("nan")), seen


def photo_classes(paths: list[str]) -> list[ImageClass | None]:
    """The class of each photo (:func:`class_of`), None where its name and folder carry none."""
    return [class_of(p) for p in paths]


def unit_top_classes(top_images: np.ndarray, classes: list[ImageClass | None], shown: int = 3) -> pd.DataFrame:
    """What each unit sees, in words: the most frequent classes among its strongest photos.

    ``top_images``: C x K, each unit's strongest photos best first (indices into ``classes``, -1 for an empty
    slot; :class:`~equivar_core.activations.TopImages`); ``classes``: each photo's class or None. Per unit, up
    to ``shown`` classes, most frequent first (ties: the one with the stronger photo first), with
    ``count`` (its photos among the unit's labelled top photos), ``labelled`` (the unit's top photos that have
    a class) and ``expected``, the count chance gives: ``labelled`` times the class's share of all labelled
    photos (a unit of a layer that does not care for classes draws its top photos as at random). A unit
    without a labelled top photo has no row.
    """
    known = sorted({c.wnid for c in classes if c is not None})
    code = {w: i for i, w in enumerate(known)}
    of_photo = np.array([code[c.wnid] if c is not None else -1 for c in classes] + [-1], np.int64)
    by_code = {code[c.wnid]: c for c in classes if c is not None}
    share = np.bincount(of_photo[of_photo >= 0], minlength=len(known)) / max(int((of_photo >= 0).sum()), 1)
    top = of_photo[np.where(top_images >= 0, top_images, -1)]          # C x K class codes, -1: none
    rows = []
    for unit, seen in enumerate(top):
        seen = seen[seen >= 0]
        if not len(seen):
            continue
        values, first, counts = np.unique(seen, return_index=True, return_counts=True)
        order = np.lexsort((first, -counts))[:shown]
        for rank, i in enumerate(order):
            c = by_code[int(values[i])]
            rows.append((unit, rank + 1, c.wnid, c.name, int(counts[i]), len(seen),
                         float(len(seen) * share[values[i]])))
    return pd.DataFrame(rows, columns=["unit", "rank", "wnid", "class_name", "count", "labelled", "expected"])


def top_class_names(table: pd.DataFrame, n_units: int) -> list[str | None]:
    """Per unit, its classes of :func:`unit_top_classes` by name, most frequent first, as ``"a, b, c"`` (None
    for a unit without one)."""
    names: list[str | None] = [None] * n_units
    for unit, g in table.groupby("unit", sort=False):
        names[int(unit)] = ", ".join(g.sort_values("rank")["class_name"])
    return names
