"""``weight_tying``: what tying each layer's rotation families and flip pairs to their group would cost and save
(:mod:`equivar_core.tying`)."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd
import torch

from ..images import ImageView, iter_batches, plan_views
from ..labels import class_of
from ..settings import RunSettings
from ..tables import WEIGHT_TYING
from ..transforms import TRANSFORMS, Transform
from ..tying import Effect, Prepared, Producer, Tie, measure_tying, producer, sham_units
from .common import _views, _with_model, load

log = logging.getLogger(__name__)

#: the transforms whose families are tied, in the table's order: those that move a kernel's cells (rotate,
#: hflip); hue moves colours, which a kernel over the previous layer's units does not hold
TIED = tuple(name for name, t in TRANSFORMS.items()
             if t.act_on_kernels.__func__ is not Transform.act_on_kernels.__func__)


def weight_tying_table(settings: RunSettings, families_df: pd.DataFrame, images_df: pd.DataFrame,
                       layers_df: pd.DataFrame) -> pd.DataFrame:
    """``weight_tying``: per layer and transform, every family tied at once (``scope = layer``) and each of the
    ``tying.max_families`` largest alone (``scope = family``), each beside ``tying.controls`` sham families,
    measured through the whole network on the photos in one read of them."""
    model, _ = load(settings)
    t = settings.tying
    views = plan_views(t.images, t.n_images, settings.seed) if t.images else _views(images_df)[:t.n_images]
    plans = []                     # (row without measures, the tie configuration, its controls)
    for layer, n_units in zip(layers_df["layer"], layers_df["n_units"]):
        made_by = producer(model.module, layer, model.input_size)
        if made_by is None:
            continue
        for transform in TIED:
            lf = families_df[(families_df["layer"] == layer) & (families_df["transform"] == transform)]
            if not lf.empty:
                plans += layer_plans(settings, layer, int(n_units), transform, lf, made_by)
    configurations = [p for _, tie, shams in plans for p in (tie, *shams)]
    base, effects = measure_tying(model.module, _labelled_batches(views, model.input_size, settings.batch_size),
                                  configurations)
    log.info("weight_tying: %d configurations over %d photos (%d labelled)", len(configurations), base.seen,
             base.labelled)
    rows, k = [], 0
    for row, tie, shams in plans:
        own, controls = effects[k], effects[k + 1:k + 1 + len(shams)]
        rows.append({**row, **_measures(base, own, tie, controls, shams)})
        k += 1 + len(shams)
    df = pd.DataFrame(rows, columns=WEIGHT_TYING.built).astype({"family": "Int64"})
    return _with_model(df, settings, WEIGHT_TYING)


def layer_plans(settings: RunSettings, layer: str, n_units: int, transform: str, lf: pd.DataFrame,
                made_by: Producer) -> list[tuple[dict, Prepared, list[Prepared]]]:
    """The configurations of one layer and transform: all families together, then the largest one by one;
    each with its sham families (seeded by the run's seed, the layer and the transform)."""
    t = settings.tying
    groups = [(int(f), g["unit"].to_numpy(int), g["param"].to_numpy(float), float(g["fit"].mean()))
              for f, g in lf.groupby("family")]
    groups.sort(key=lambda x: (-len(x[1]), -x[3], x[0]))
    outside = np.setdiff1d(np.arange(n_units), lf["unit"].to_numpy(int))
    rng = np.random.default_rng([settings.seed, zlib.crc32(f"{layer}/{transform}".encode())])

    def ties(chosen) -> list[Tie]:
        return [Tie(made_by, units, params, transform) for _, units, params, _ in chosen]

    def shams(chosen) -> list[Prepared]:
        out = []
        for _ in range(t.controls):
            used: set[int] = set()
            drawn = []
            for _, units, params, _ in chosen:
                fake = sham_units(rng, len(units), outside, n_units, used)
                used.update(int(u) for u in fake)
                drawn.append(Tie(made_by, fake, params[:len(fake)], transform))
            out.append(Prepared.of(drawn, t.rounds))
        return out

    head = {"layer": layer, "transform": transform, "tied": made_by.kind, "weights": made_by.n_weights}
    plans = [({**head, "scope": "layer", "family": None}, Prepared.of(ties(groups), t.rounds), shams(groups))]
    for one in groups[:t.max_families]:
        plans.append(({**head, "scope": "family", "family": one[0]}, Prepared.of(ties([one]), t.rounds),
                      shams([one])))
    return plans


def _labelled_batches(views: list[ImageView], size: int, batch_size: int):
    """(images, labels) a batch at a time; label -1 for a photo without an ImageNet class."""
    label = {v.index: (c.index if (c := class_of(v.path)) is not None else -1) for v in views}
    for batch in iter_batches(views, size, batch_size):
        yield batch.images, torch.tensor([label[i] for i in batch.indices])


def _measures(base: Effect, own: Effect, tie: Prepared, controls: list[Effect], shams: list[Prepared]) -> dict:
    saved = sum(x.saved for x in tie.ties)
    weights = tie.ties[0].producer.n_weights

    def mean(values) -> float:
        values = [v for v in values if v == v]
        return float(np.mean(values)) if values else float("nan")

    return {
        "size": sum(len(x.units) for x in tie.ties), "saved": saved, "saved_share": saved / weights,
        "weight_change": tie.weight_change, "unit_change": own.unit_change, "images": own.seen,
        "labelled": own.labelled,
        "top1_untied": base.top1, "top1_tied": own.top1, "top1_change": 100 * (own.top1 - base.top1),
        "agreement": own.agreement, "output_change": own.output_change,
        "control_weight_change": mean(s.weight_change for s in shams),
        "control_unit_change": mean(c.unit_change for c in controls),
        "control_top1_change": mean(100 * (c.top1 - base.top1) for c in controls),
        "control_agreement": mean(c.agreement for c in controls),
        "control_output_change": mean(c.output_change for c in controls),
    }
