"""Helpers every stage shares: the model on its device, the ``model`` column, image views and geometries."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..capture import LayerGeometry, Network
from ..images import ImageView, plan_views
from ..models.registry import LoadedModel, load_model_once, resolve_layers
from ..models.untrained import is_untrained_spec
from ..settings import RunSettings
from ..tables import Table


def load(settings: RunSettings) -> tuple[LoadedModel, list[str]]:
    """The model on its device and the resolved layer names (raises :class:`EquivarError` on bad input). The
    model is loaded once per process (:func:`~equivar_core.models.registry.load_model_once`); an
    ``untrained:`` model's batch norms are calibrated on the run's own views (:func:`calibration_views`)."""
    model = load_model_once(settings.model, settings.weights, settings.name, calibration_views(settings))
    layers = resolve_layers(model, list(settings.layers) or None)
    model.module.to(settings.resolved_device())
    return model, layers


def network(model: LoadedModel, settings: RunSettings) -> Network:
    """The loaded model as the forward passes see it, on the run's device."""
    return Network(model.module, model.input_size, settings.resolved_device())


def calibration_views(settings: RunSettings) -> list[ImageView] | None:
    """The run's views (the ``images`` table), for an ``untrained:`` spec's batch-norm statistics; None for any
    other spec."""
    if not is_untrained_spec(settings.model):
        return None
    return plan_views(settings.images, settings.n_images, settings.seed)


def _with_model(df: pd.DataFrame, settings: RunSettings, table: Table) -> pd.DataFrame:
    """``df`` with the run's ``model`` column first, checked against the ``table``'s declaration
    (:mod:`equivar_core.tables`: ``ValueError`` where its columns differ)."""
    df.insert(0, "model", settings.model_name)
    return table.check(df)


def tuned(layers_df: pd.DataFrame) -> pd.DataFrame:
    """The layers measured with synthetic stimuli (``layers.tuned``; all of them in a table without it)."""
    return layers_df[layers_df["tuned"].astype(bool)] if "tuned" in layers_df else layers_df


def _geometries(layers_df: pd.DataFrame) -> list[LayerGeometry]:
    return [LayerGeometry.from_row(r) for r in layers_df.itertuples()]


def _views(images_df: pd.DataFrame) -> list[ImageView]:
    return [ImageView.from_row(r) for r in images_df.itertuples()]


def _columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: _text(df[c]) if isinstance(df[c].dtype, pd.StringDtype) else df[c].to_numpy() for c in df.columns}


def _text(column: pd.Series) -> np.ndarray:
    """A text column as an object array, each distinct value converted once (a table's text columns repeat a
    few values over millions of rows)."""
    codes, values = pd.factorize(column, use_na_sentinel=False)
    return np.asarray(values, dtype=object)[codes]


def _stack_rows(parts: list[dict], cols: list[str]) -> dict[str, np.ndarray]:
    """Columns from row groups given as dicts of arrays (one length per group) and scalars (repeated)."""
    lengths = [max((len(v) for v in p.values() if isinstance(v, np.ndarray)), default=1) for p in parts]
    return {c: np.concatenate([np.broadcast_to(np.asarray(p[c], dtype=object if isinstance(p[c], str) else None), (n,))
                               for p, n in zip(parts, lengths)]) if parts else np.zeros(0) for c in cols}
