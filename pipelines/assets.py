"""Assets: model -> activations -> scores -> families -> circuits -> catalog.

Each asset unpacks its settings and calls one function of
:mod:`equivar_core.stages`; tables go through :class:`ParquetIOManager`.
"""


import logging

import pandas as pd
from dagster import AssetOut, DataVersion, MaterializeResult, MetadataValue, Output, asset, multi_asset

from equivar_core import stages, storage

from .resources import CODE_VERSION, EquivarConfig

log = logging.getLogger("equivar.pipelines")


def _start(name: str) -> None:
    log.info("materializing %s", name)


def _out(equivar: EquivarConfig, name: str, df: pd.DataFrame, **metadata) -> Output:
    """The table with its fingerprint as data version."""
    return Output(df, output_name=name if metadata.pop("multi", False) else "result",
                  data_version=DataVersion(equivar.fingerprint(name)), metadata=metadata or None)


@asset(group_name="model", code_version=CODE_VERSION)
def models(equivar: EquivarConfig) -> Output:
    """One row per model: spec, SHA-256 of its weights and parameter count."""
    _start("models")
    return _out(equivar, "models", stages.model_table(equivar.settings()))


@asset(group_name="model", code_version=CODE_VERSION, deps=[models])
def layers(equivar: EquivarConfig) -> Output:
    """Analysed layers with their shape, stride and effective receptive field."""
    _start("layers")
    return _out(equivar, "layers", stages.layer_table(equivar.settings()))


@asset(group_name="activations", code_version=CODE_VERSION)
def images(equivar: EquivarConfig) -> Output:
    """The natural-image views of the run (file and crop), in order."""
    _start("images")
    return _out(equivar, "images", stages.image_table(equivar.settings()))


@multi_asset(
    group_name="activations",
    outs={
        "unit_stats": AssetOut(code_version=CODE_VERSION,
                               description="Per-unit mean and std over natural images, and its best image."),
        "activation_samples": AssetOut(code_version=CODE_VERSION,
                                       description="Manifest of the activation samples of natural images and "
                                                   "their transforms (float16 arrays on disk)."),
    },
)
def natural_activations(equivar: EquivarConfig, images: pd.DataFrame, layers: pd.DataFrame):
    """One streamed pass over natural images and their transformed versions."""
    _start("natural_activations")
    stats, manifest = stages.natural_activations(equivar.settings(), images, layers)
    skipped = int(manifest["n_skipped"].iloc[0]) if len(manifest) else 0
    if skipped:
        log.warning("%d unreadable image(s) skipped", skipped)
    yield _out(equivar, "unit_stats", stats, multi=True)
    yield _out(equivar, "activation_samples", manifest, multi=True, skipped_images=MetadataValue.int(skipped))


@asset(group_name="activations", code_version=CODE_VERSION)
def tuning(equivar: EquivarConfig, layers: pd.DataFrame, unit_stats: pd.DataFrame) -> Output:
    """Every unit's response to swept synthetic stimuli, in natural-image standard deviations."""
    _start("tuning")
    return _out(equivar, "tuning", stages.tuning_table(equivar.settings(), layers, unit_stats))


@asset(group_name="scores", code_version=CODE_VERSION)
def unit_profiles(equivar: EquivarConfig, tuning: pd.DataFrame, layers: pd.DataFrame) -> Output:
    """Preferred parameter, selectivity and period of each unit's tuning curves."""
    _start("unit_profiles")
    return _out(equivar, "unit_profiles", stages.profile_table(equivar.settings(), tuning, layers))


@asset(group_name="scores", code_version=CODE_VERSION)
def transform_pairs(equivar: EquivarConfig, activation_samples: pd.DataFrame) -> Output:
    """Self (invariance) score and best partners of every unit under each transform."""
    _start("transform_pairs")
    return _out(equivar, "transform_pairs", stages.transform_pair_table(equivar.settings(), activation_samples))


@asset(group_name="scores", code_version=CODE_VERSION, deps=[transform_pairs])
def transform_maps(equivar: EquivarConfig, layers: pd.DataFrame) -> Output:
    """Per layer and transform: how well a linear map, a permutation or the identity explains the layer."""
    _start("transform_maps")
    return _out(equivar, "transform_maps", stages.transform_map_table(equivar.settings(), layers))


@asset(group_name="scores", code_version=CODE_VERSION)
def scale_pairs(equivar: EquivarConfig, activation_samples: pd.DataFrame) -> Output:
    """Units of a deeper layer that respond to a zoomed image as an earlier unit does to the original."""
    _start("scale_pairs")
    return _out(equivar, "scale_pairs", stages.scale_pair_table(equivar.settings(), activation_samples))


@asset(group_name="families", code_version=CODE_VERSION, deps=[transform_pairs])
def families(equivar: EquivarConfig, tuning: pd.DataFrame, unit_profiles: pd.DataFrame,
             layers: pd.DataFrame) -> Output:
    """Units that are rotated, hue-shifted, flipped or rescaled copies of one another."""
    _start("families")
    return _out(equivar, "families", stages.family_table(equivar.settings(), tuning, unit_profiles, layers))


@asset(group_name="families", code_version=CODE_VERSION)
def reference_families(equivar: EquivarConfig) -> Output:
    """Published family unit lists for the model's architecture, to score the automatic families against."""
    _start("reference_families")
    return _out(equivar, "reference_families", stages.reference_family_table(equivar.settings()))


@asset(group_name="families", code_version=CODE_VERSION)
def family_sweeps(equivar: EquivarConfig, families: pd.DataFrame, images: pd.DataFrame, layers: pd.DataFrame,
                  unit_stats: pd.DataFrame) -> Output:
    """Family members' responses while a member's best natural images are rotated or hue-shifted."""
    _start("family_sweeps")
    return _out(equivar, "family_sweeps",
                stages.family_sweep_table(equivar.settings(), families, images, layers, unit_stats))


@asset(group_name="circuits", code_version=CODE_VERSION)
def circuit_weights(equivar: EquivarConfig, layers: pd.DataFrame, families: pd.DataFrame) -> Output:
    """Expanded weights between consecutive analysed layers."""
    _start("circuit_weights")
    return _out(equivar, "circuit_weights", stages.circuit_weight_table(equivar.settings(), layers, families))


@asset(group_name="circuits", code_version=CODE_VERSION, deps=[circuit_weights])
def circuit_families(equivar: EquivarConfig, families: pd.DataFrame) -> Output:
    """Weight versus relative place and circuit equivariance for each pair of families."""
    _start("circuit_families")
    s = equivar.settings()
    weights = storage.read_table(s.out, "circuit_weights", s.model_name)
    pairs = weights.select(["src_layer", "dst_layer"]).to_pandas().drop_duplicates() if weights is not None \
        else pd.DataFrame({"src_layer": [], "dst_layer": []})
    return _out(equivar, "circuit_families", stages.circuit_family_table(s, pairs, families))


TABLE_ASSETS = [models, layers, images, natural_activations, tuning, unit_profiles, transform_pairs, transform_maps,
                scale_pairs, families, reference_families, family_sweeps, circuit_weights, circuit_families]


@asset(group_name="catalog", code_version=CODE_VERSION, deps=TABLE_ASSETS)
def duckdb_catalog(equivar: EquivarConfig) -> MaterializeResult:
    """The DuckDB file ``<out>/equivar.duckdb`` with one view per table."""
    _start("duckdb_catalog")
    path, views = storage.build_catalog(equivar.settings().out)
    return MaterializeResult(metadata={"path": MetadataValue.path(path), "views": MetadataValue.json(views)})
