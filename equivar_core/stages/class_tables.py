"""``unit_classes``: what each unit sees, in words: the ImageNet classes of its strongest photos
(:func:`equivar_core.labels.unit_top_classes`)."""

from __future__ import annotations

import pandas as pd

from ..activations import TopImages
from ..labels import photo_classes, unit_top_classes
from ..settings import RunSettings
from ..tables import UNIT_CLASSES
from .common import _with_model


def run_photo_classes(images_df: pd.DataFrame) -> list:
    """Each of the run's photos' class (by its index in ``images``; None where its name and folder carry
    none)."""
    by_index = images_df.set_index("image")["path"]
    return photo_classes([by_index.get(i, "") for i in range(int(by_index.index.max()) + 1 if len(by_index) else 0)])


def unit_class_table(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame) -> pd.DataFrame:
    """``unit_classes``: per layer and unit, the most frequent classes among its strongest photos (the
    ``unit_stats`` pass's top images), with the count chance would give; empty where no photo has a class."""
    classes = run_photo_classes(images_df)
    parts = []
    if any(c is not None for c in classes):
        for layer in layers_df["layer"]:
            top = TopImages.load(settings.layout.top_images(layer))
            parts.append(unit_top_classes(top.image, classes).assign(layer=layer))
    df = pd.concat(parts, ignore_index=True) if parts else UNIT_CLASSES.empty()
    return _with_model(df[UNIT_CLASSES.built].reset_index(drop=True), settings, UNIT_CLASSES)
