"""The run's inputs as tables: the model, its analysed layers, the planned images, the reference families."""

from __future__ import annotations

import os

import pandas as pd

from ..capture import layer_geometry
from ..images import plan_views
from ..layer_info import inspect_layers
from ..settings import RunSettings
from ..tables import IMAGES, LAYERS, MODELS, REFERENCE_FAMILIES
from .common import _with_model, load


def model_table(settings: RunSettings) -> pd.DataFrame:
    """``models``: one row for the model."""
    model, _ = load(settings)
    return MODELS.check(pd.DataFrame({
        "model": [model.name], "spec": [settings.model], "weights_sha256": [model.weights_sha256],
        "n_params": [model.n_params], "input_size": [model.input_size],
        "weights": [settings.weights or model.found_weights or "built-in"], "seed": [settings.seed],
        "step": pd.array([settings.step], dtype="Int64")}))


def layer_table(settings: RunSettings) -> pd.DataFrame:
    """``layers``: shape at the input size, privileged basis, stride and effective receptive field of each
    analysed layer (see :mod:`equivar_core.layer_info` for ``privileged``), and whether synthetic stimuli are
    measured there (not in the architecture's late preset unless ``tuning.late = tune``)."""
    model, layers = load(settings)
    geoms = layer_geometry(model.module, layers, model.input_size, settings.resolved_device(), settings.seed,
                           dead_ok=False)
    every = inspect_layers(model.module, model.input_size, device=settings.resolved_device())   # forward order
    depth = {i.layer: k for k, i in enumerate(every)}
    infos = {i.layer: i for i in every}
    untuned = set(model.named_presets.get("late", ())) if settings.tuning.late == "skip" else set()
    df = pd.DataFrame([g.row() | {"depth": depth[g.layer], "privileged": infos[g.layer].privileged,
                                  "basis": infos[g.layer].reason, "tuned": g.layer not in untuned}
                       for g in geoms], columns=LAYERS.built)
    return _with_model(df.sort_values("depth", kind="stable").reset_index(drop=True), settings, LAYERS)


def image_table(settings: RunSettings) -> pd.DataFrame:
    """``images``: the natural-image views of the run, in order."""
    views = plan_views(settings.images, settings.n_images, settings.seed)
    df = pd.DataFrame([v.row() for v in views], columns=IMAGES.built)
    return _with_model(df, settings, IMAGES)


REFERENCE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "reference")


def reference_family_table(settings: RunSettings) -> pd.DataFrame:
    """``reference_families``: published unit lists for the run's architecture (empty if none is shipped).

    Files ``equivar_core/reference/<spec>_families.csv`` (the table's columns but ``model``, see
    :data:`equivar_core.tables.REFERENCE_FAMILIES`) hold the lists; users add their own the same way.
    """
    path = os.path.join(REFERENCE_DIR, f"{settings.model}_families.csv")
    df = pd.read_csv(path) if os.path.isfile(path) else REFERENCE_FAMILIES.empty()
    return _with_model(df.astype({"unit": int, "layer": str}), settings, REFERENCE_FAMILIES)
