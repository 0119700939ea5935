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
