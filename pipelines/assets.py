"""Assets: model -> activations -> scores -> families -> circuits -> catalog.

Each asset unpacks its settings and calls one function of
:mod:`equivar_core.stages`; tables go through :class:`ParquetIOManager`.
Every asset is partitioned by model (a dynamic partition per model or
checkpoint). Assets that run the model declare the ``gpu`` pool (limit it in the
instance's concurrency settings) and, for Kubernetes, a GPU request.
"""

import functools
import inspect
import logging
import os

import pandas as pd
from dagster import (AssetExecutionContext, AssetIn, AssetKey, AssetOut, Backoff, Config, DataVersion, Failure,
                     MaterializeResult, MetadataValue, Output, RetryPolicy, asset, multi_asset)

from equivar_core import stages, storage
from equivar_core.activations import TRANSFORM_GROUPS
from equivar_core.errors import EquivarError
from equivar_core.report import build_report
from equivar_core.settings import RunSettings
from equivar_core.transforms import HFlip, Scale

from .definitions_common import models_partitions as MODELS
from .fingerprints import FINGERPRINT_KEY, asset_fingerprints, declarations, inputs
from .resources import EquivarConfig
from .shards import shard_runner

log = logging.getLogger("equivar.pipelines")

#: transient failures (a busy file system, a preempted worker) are retried twice
RETRY = RetryPolicy(max_retries=2, delay=2, backoff=Backoff.EXPONENTIAL)

#: every asset: retries, one partition per model. Each asset declares its own code version and the settings
#: it reads (``inputs(code_version, *settings)``, see :func:`pipelines.fingerprints.inputs`): bump an asset's
#: code version when a change of its code changes its result, and it and what is downstream of it recompute
TABLE = {"retry_policy": RETRY, "partitions_def": MODELS}
#: what every pass over the images reads beside its group's amounts: the sample points, the kept images, the
#: forward batch (the null pairs images within it), the seed (the basis control's random bases, whose squares
#: the moments sum) and the folds of the images (whose scores the passes keep apart)
SAMPLING = ("sweep.grid", "sweep.disc_radius", "keep_samples", "batch_size", "seed", "stability.folds")
#: which transform families the sweep has: readers of the score archives ignore those of a family it leaves out
SWEPT = tuple(f"sweep.{t}" for t in TRANSFORM_GROUPS)

#: for assets that run the network: the ``gpu`` pool and a Kubernetes GPU request (dagster-k8s)
GPU = {"pool": "gpu", "op_tags": {"dagster-k8s/config": {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}}


def _fails_once_on_bad_input(fn):
    """Bad input (an :class:`EquivarError`: a missing file, an unknown layer or partition) fails the step at
    once, since retrying cannot fix it; other errors (transient I/O) keep the retry policy."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except EquivarError as exc:
                raise Failure(description=str(exc), allow_retries=False) from exc
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EquivarError as exc:
            raise Failure(description=str(exc), allow_retries=False) from exc
    return wrapper


def fingerprint(equivar: EquivarConfig, asset: str, partition_key: str | None) -> str:
    """An asset's fingerprint (its Dagster data version); see :mod:`pipelines.fingerprints`."""
    return asset_fingerprints(equivar.settings(partition_key), DECLARED, only=asset)[asset]


def _key(context: AssetExecutionContext) -> str | None:
    """The model partition being materialized (None outside a partitioned run: the configured model)."""
    return context.partition_key if context.has_partition_key else None


def _settings(context: AssetExecutionContext, equivar: EquivarConfig, name: str) -> RunSettings:
    log.info("materializing %s", name)
    return equivar.settings(_key(context))


def _out(context: AssetExecutionContext, equivar: EquivarConfig, name: str, df: pd.DataFrame,
         output_name: str = "result", **metadata) -> Output:
    """The table, with its fingerprint as data version (computed once: the IO manager records the one in the
    metadata)."""
    version = fingerprint(equivar, name, _key(context))
    return Output(df, output_name=output_name, data_version=DataVersion(version),
                  metadata={FINGERPRINT_KEY: version, **metadata})


@asset(group_name="model", **TABLE, **inputs("4", "model", "weights", "name", "step", "seed", "calibration"))
@_fails_once_on_bad_input
def models(context: AssetExecutionContext, equivar: EquivarConfig) -> Output:
    """One row per model: spec, SHA-256 of its weights, parameter count and checkpoint step."""
    return _out(context, equivar, "models", stages.model_table(_settings(context, equivar, "models")))


@asset(group_name="model", **TABLE, deps=[models], **GPU, **inputs("5", "layers", "seed", "tuning.late"))
@_fails_once_on_bad_input
def layers(context: AssetExecutionContext, equivar: EquivarConfig) -> Output:
    """Analysed layers with their shape, stride and effective receptive field."""
    return _out(context, equivar, "layers", stages.layer_table(_settings(context, equivar, "layers")))


@asset(group_name="activations", **TABLE, **inputs("4", "images", "n_images", "seed"))
@_fails_once_on_bad_input
def images(context: AssetExecutionContext, equivar: EquivarConfig) -> Output:
    """The natural-image views of the run (file and crop), in order."""
    return _out(context, equivar, "images", stages.image_table(_settings(context, equivar, "images")))


@multi_asset(
    group_name="activations",
    outs={
        "unit_stats": AssetOut(**inputs("5", "sweep.grid", "sweep.disc_radius"),
                               description="Per-unit mean and std over natural images, its best image and the "
                                           "classes of its strongest images "
                                           "(beside them on disk: each unit's strongest images and the units' "
                                           "covariance)."),
        "activation_samples": AssetOut(**inputs("5", *SAMPLING),
                                       description="Manifest of the activation samples of the natural images "
                                                   "(float16 arrays of the kept images) and of their score "
                                                   "moments over all images, on disk."),
    },
    retry_policy=RETRY,
    partitions_def=MODELS,
    **GPU,
)
@_fails_once_on_bad_input
def natural_activations(context: AssetExecutionContext, equivar: EquivarConfig, images: pd.DataFrame,
                        layers: pd.DataFrame):
    """One streamed pass over the natural images (their transformed versions: ``transformed_samples/*``)."""
    s = _settings(context, equivar, "natural_activations")
    stats, manifest = stages.natural_activations(s, images, layers, shard_runner(s, list(layers["layer"])))
    skipped = int(manifest["n_skipped"].iloc[0]) if len(manifest) else 0
    if skipped:
        log.warning("%d unreadable image(s) skipped", skipped)
    yield _out(context, equivar, "unit_stats", stats, "unit_stats")
    yield _out(context, equivar, "activation_samples", manifest, "activation_samples",
               skipped_images=MetadataValue.int(skipped))


@asset(group_name="activations", **TABLE, **inputs("1"), deps=[AssetKey("unit_stats")])
@_fails_once_on_bad_input
def unit_classes(context: AssetExecutionContext, equivar: EquivarConfig, images: pd.DataFrame,
                 layers: pd.DataFrame) -> Output:
    """What each unit sees, in words: the ImageNet classes of its strongest photos (from file or folder names;
    the strongest photos of the ``unit_stats`` pass), beside the count chance gives."""
    s = _settings(context, equivar, "unit_classes")
    return _out(context, equivar, "unit_classes", stages.unit_class_table(s, images, layers))


@multi_asset(
    group_name="activations",
    outs={
        "tuning": AssetOut(**inputs("4", "tuning"), description="Every unit's response to swept synthetic "
                                                                  "stimuli, in natural-image standard deviations."),
        "tuning_random_basis": AssetOut(**inputs("4", "tuning", "seed"),
                                        description="The same responses of each layer mixed by a seeded random "
                                                    "orthogonal matrix (the basis control), from the same passes."),
    },
    retry_policy=RETRY,
    partitions_def=MODELS,
    **GPU,
)
@_fails_once_on_bad_input
def tuning_tables(context: AssetExecutionContext, equivar: EquivarConfig, layers: pd.DataFrame,
                  unit_stats: pd.DataFrame):
    """Stimulus sweeps through every analysed layer, in the layer's basis and in a random one."""
    s = _settings(context, equivar, "tuning")
    tuning, random_basis = stages.tuning_table(s, layers, unit_stats)
    yield _out(context, equivar, "tuning", tuning, "tuning")
    yield _out(context, equivar, "tuning_random_basis", random_basis, "tuning_random_basis")


@asset(group_name="scores", **TABLE, **inputs("4", "tuning"))
@_fails_once_on_bad_input
def unit_profiles(context: AssetExecutionContext, equivar: EquivarConfig, tuning: pd.DataFrame,
                  layers: pd.DataFrame) -> Output:
    """Preferred parameter, selectivity and period of each unit's tuning curves."""
    s = _settings(context, equivar, "unit_profiles")
    return _out(context, equivar, "unit_profiles", stages.profile_table(s, tuning, layers))


def _transform_family(transform: str):
    """The two assets of one transform family: its forward passes and its scores.

    Each family's passes are their own, so the four families run as parallel
    steps (on separate GPU workers under the Ray or Kubernetes executors)
    and a family is recomputed alone when only its amounts change.
    """

    @asset(key=["transformed_samples", transform], group_name="activations", **TABLE, **GPU,
           **inputs("5", f"sweep.{transform}", *SAMPLING),
           ins={"images": AssetIn("images"), "layers": AssetIn("layers")},
           description=f"Manifest of the activation samples of the natural images' {transform} versions "
                       "(float16 arrays of the kept images) and of their score moments over all images.")
    @_fails_once_on_bad_input
    def transformed_samples(context: AssetExecutionContext, equivar: EquivarConfig, images: pd.DataFrame,
                            layers: pd.DataFrame) -> Output:
        s = _settings(context, equivar, f"transformed_samples/{transform}")
        manifest = stages.transformed_activations(s, images, layers, transform,
                                                  shard_runner(s, list(layers["layer"])))
        return _out(context, equivar, f"transformed_samples/{transform}", manifest)

    @asset(key=["transform_pairs", transform], group_name="scores", **TABLE, **inputs("5"),
           ins={"versions": AssetIn(["transformed_samples", transform])},
           description=f"Self (invariance) score and best partners of every unit under {transform}.")
    @_fails_once_on_bad_input
    def transform_pairs(context: AssetExecutionContext, equivar: EquivarConfig, versions: pd.DataFrame) -> Output:
        s = _settings(context, equivar, f"transform_pairs/{transform}")
        return _out(context, equivar, f"transform_pairs/{transform}",
                    stages.transform_pair_table(s, versions))

    return transformed_samples, transform_pairs


TRANSFORM_FAMILIES = {t: _transform_family(t) for t in TRANSFORM_GROUPS}
TRANSFORMED_SAMPLES = [a for a, _ in TRANSFORM_FAMILIES.values()]
TRANSFORM_PAIRS = [p for _, p in TRANSFORM_FAMILIES.values()]
#: the score archives of rotation, hue and flips: circuits read them to find units invariant to each
POOLED_PAIRS = [TRANSFORM_FAMILIES[t][1] for t in stages.POOLED]
#: what the score archives of the transforms are weighed against: the units' plain correlations on the same
#: images, saved beside the identity samples (``stages.load_identity``)
SCORE_ARCHIVES = [*TRANSFORM_PAIRS, "activation_samples"]


@asset(group_name="scores", **TABLE, deps=SCORE_ARCHIVES, **inputs("4", *SWEPT))
@_fails_once_on_bad_input
def transform_maps(context: AssetExecutionContext, equivar: EquivarConfig, layers: pd.DataFrame) -> Output:
    """Per layer and transform: how well a linear map, a permutation or the identity explains the layer."""
    s = _settings(context, equivar, "transform_maps")
    return _out(context, equivar, "transform_maps", stages.transform_map_table(s, layers))


@asset(group_name="scores", **TABLE, **inputs("4"), ins={"activation_samples": AssetIn("activation_samples"),
                                         "scaled": AssetIn(["transformed_samples", Scale.name])})
@_fails_once_on_bad_input
def scale_pairs(context: AssetExecutionContext, equivar: EquivarConfig, activation_samples: pd.DataFrame,
                scaled: pd.DataFrame) -> Output:
    """Units of a deeper layer that respond to a zoomed image as an earlier unit does to the original."""
    s = _settings(context, equivar, "scale_pairs")
    return _out(context, equivar, "scale_pairs", stages.scale_pair_table(s, activation_samples, scaled))


#: what the refits on folds of the photos read beside the tuning: the fold scores the passes saved
FOLD_SCORES = [*TRANSFORMED_SAMPLES, "activation_samples"]


@multi_asset(
    group_name="families",
    outs={
        "families": AssetOut(**inputs("4", "families", *SWEPT),
                             description="Units that are rotated, hue-shifted, flipped or rescaled copies of one "
                                         "another."),
        "family_stability": AssetOut(**inputs("4", "families", *SWEPT, "stability.folds", "stability.min_jaccard"),
                                     description="Whether each family reappears when fitted on one fold of the "
                                                 "photos alone, and how alike the folds' families are."),
        "sensitivity": AssetOut(**inputs("4", "families", *SWEPT, "stability.thresholds", "stability.changes"),
                                description="Units in families and families per layer and transform with each "
                                            "membership threshold moved up or down."),
    },
    deps=[*SCORE_ARCHIVES, *FOLD_SCORES],
    retry_policy=RETRY,
    partitions_def=MODELS,
)
@_fails_once_on_bad_input
def families(context: AssetExecutionContext, equivar: EquivarConfig, tuning: pd.DataFrame,
             unit_profiles: pd.DataFrame, layers: pd.DataFrame):
    """The families, refitted on folds of the photos and with moved thresholds in the same step: the refits
    share what each layer's families take from its tuning, most of a fit's time."""
    s = _settings(context, equivar, "families")
    found, stability, sensitivity = stages.checked_family_tables(s, tuning, unit_profiles, layers)
    yield _out(context, equivar, "families", found, "families")
    yield _out(context, equivar, "family_stability", stability, "family_stability")
    yield _out(context, equivar, "sensitivity", sensitivity, "sensitivity")


@asset(group_name="families", **TABLE, **inputs("4", "model"))
@_fails_once_on_bad_input
def reference_families(context: AssetExecutionContext, equivar: EquivarConfig) -> Output:
    """Published family unit lists for the model's architecture, to score the automatic families against."""
    s = _settings(context, equivar, "reference_families")
    return _out(context, equivar, "reference_families", stages.reference_family_table(s))


@asset(group_name="families", **TABLE, **inputs("4", "families", "tuning", "seed"),
       ins={"layers": AssetIn("layers"), "tuning_random_basis": AssetIn("tuning_random_basis"),
            "families": AssetIn("families"), "activation_samples": AssetIn("activation_samples"),
            **{f"samples_{t}": AssetIn(["transformed_samples", t]) for t in TRANSFORM_GROUPS}})
@_fails_once_on_bad_input
def basis_control(context: AssetExecutionContext, equivar: EquivarConfig, layers: pd.DataFrame,
                  tuning_random_basis: pd.DataFrame, families: pd.DataFrame, activation_samples: pd.DataFrame,
                  **transformed: pd.DataFrame) -> Output:
    """Units in families in each layer's own basis and in a seeded random orthogonal basis of it."""
    s = _settings(context, equivar, "basis_control")
    manifests = {k.removeprefix("samples_"): v for k, v in transformed.items()}
    return _out(context, equivar, "basis_control",
                stages.basis_control_table(s, layers, tuning_random_basis, families, activation_samples, manifests))


@asset(group_name="families", **TABLE, **inputs("4"))
@_fails_once_on_bad_input
def layer_summary(context: AssetExecutionContext, equivar: EquivarConfig, layers: pd.DataFrame,
                  families: pd.DataFrame, basis_control: pd.DataFrame) -> Output:
    """Per layer and transform: the share of units in families, family sizes and spacing, and the group to
    build in."""
    s = _settings(context, equivar, "layer_summary")
    return _out(context, equivar, "layer_summary", stages.layer_summary_table(s, layers, families, basis_control))


@asset(group_name="families", **TABLE, **inputs("4"))
@_fails_once_on_bad_input
def curve_detectors(context: AssetExecutionContext, equivar: EquivarConfig, tuning: pd.DataFrame,
                    layers: pd.DataFrame, families: pd.DataFrame) -> Output:
    """Units whose best stimulus is a curve: radial orientation tuning at 5 degree steps, curvature, family."""
    s = _settings(context, equivar, "curve_detectors")
    return _out(context, equivar, "curve_detectors", stages.curve_detector_table(s, tuning, layers, families))


@asset(group_name="families", **TABLE, **GPU, **inputs("5", "rotation_test", "seed", f"sweep.{HFlip.name}"),
       deps=[TRANSFORM_FAMILIES[HFlip.name][1]])
@_fails_once_on_bad_input
def family_sweeps(context: AssetExecutionContext, equivar: EquivarConfig, families: pd.DataFrame,
                  images: pd.DataFrame, layers: pd.DataFrame, unit_stats: pd.DataFrame, unit_profiles: pd.DataFrame,
                  curve_detectors: pd.DataFrame) -> Output:
    """Family members' responses while a member's best natural images are rotated, hue-shifted or mirrored,
    beside matched control units and the chance level."""
    s = _settings(context, equivar, "family_sweeps")
    return _out(context, equivar, "family_sweeps",
                stages.family_sweep_table(s, families, images, layers, unit_stats, unit_profiles, curve_detectors))


@asset(group_name="families", **TABLE, **GPU, **inputs("1", "tying", "seed", "batch_size"))
@_fails_once_on_bad_input
def weight_tying(context: AssetExecutionContext, equivar: EquivarConfig, families: pd.DataFrame,
                 images: pd.DataFrame, layers: pd.DataFrame) -> Output:
    """What tying each layer's rotation families and flip pairs to one template would cost (the network's
    output and top-1 on photos) and save (weights), beside sham families of unrelated units."""
    s = _settings(context, equivar, "weight_tying")
    return _out(context, equivar, "weight_tying", stages.weight_tying_table(s, families, images, layers))


@asset(group_name="circuits", **TABLE, **GPU, deps=POOLED_PAIRS,
       **inputs("5", "circuits", "families.min_invariance", *(f"sweep.{t}" for t in stages.POOLED)))
@_fails_once_on_bad_input
def circuit_weights(context: AssetExecutionContext, equivar: EquivarConfig, layers: pd.DataFrame,
                    families: pd.DataFrame) -> Output:
    """Expanded weights between consecutive analysed layers."""
    s = _settings(context, equivar, "circuit_weights")
    return _out(context, equivar, "circuit_weights", stages.circuit_weight_table(s, layers, families))


@asset(group_name="circuits", **TABLE, deps=[circuit_weights, *POOLED_PAIRS],
       **inputs("6", "circuits", "families", "seed", *(f"sweep.{t}" for t in stages.POOLED)))
@_fails_once_on_bad_input
def circuit_families(context: AssetExecutionContext, equivar: EquivarConfig, families: pd.DataFrame) -> Output:
    """Weight versus relative place and circuit equivariance for each pair of families."""
    s = _settings(context, equivar, "circuit_families")
    weights = storage.read_table(s.out, "circuit_weights", s.model_name)
    pairs = weights.select(["src_layer", "dst_layer"]).to_pandas().drop_duplicates() if weights is not None \
        else pd.DataFrame({"src_layer": [], "dst_layer": []})
    return _out(context, equivar, "circuit_families", stages.circuit_family_table(s, pairs, families))


TABLE_ASSETS = [models, layers, images, natural_activations, unit_classes, *TRANSFORMED_SAMPLES, tuning_tables,
                unit_profiles,
                *TRANSFORM_PAIRS, transform_maps, scale_pairs, families, reference_families, basis_control,
                layer_summary, curve_detectors, family_sweeps, weight_tying, circuit_weights, circuit_families]


@asset(group_name="report", **TABLE, deps=TABLE_ASSETS, code_version="4")
@_fails_once_on_bad_input
def report(context: AssetExecutionContext, equivar: EquivarConfig) -> MaterializeResult:
    """The static HTML report ``<out>/report/<model>/index.html``: family galleries and circuit diagrams."""
    s = _settings(context, equivar, "report")
    index = build_report(s.out, s.model_name)
    folder = os.path.dirname(index)
    pictures = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    preview = [next((p for p in pictures if p.startswith(kind)), None) for kind in ("family_", "circuit_")]
    preview = [p for p in preview if p is not None]
    return MaterializeResult(metadata={"index": MetadataValue.path(index), "pictures": MetadataValue.int(len(pictures)),
                                       "preview": _pictures([os.path.join(folder, p) for p in preview])})


def _pictures(paths: list[str]) -> MetadataValue:
    """PNG files as one Markdown metadata entry with the images embedded (shown in the Dagster UI)."""
    import base64

    def b64(path: str) -> str:
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()

    md = "\n\n".join(f"![{os.path.basename(p)}](data:image/png;base64,{b64(p)})" for p in paths)
    return MetadataValue.md(md or "(none)")


@asset(group_name="catalog", **TABLE, deps=TABLE_ASSETS, code_version="4")
@_fails_once_on_bad_input
def duckdb_catalog(context: AssetExecutionContext, equivar: EquivarConfig) -> MaterializeResult:
    """The DuckDB file ``<out>/equivar.duckdb`` with one view per table."""
    path, views = storage.build_catalog(_settings(context, equivar, "duckdb_catalog").out)
    return MaterializeResult(metadata={"path": MetadataValue.path(path), "views": MetadataValue.json(views)})


#: the assets that span model partitions: not partitioned, they read these tables of every model they use
ACROSS_MODELS = {"group_name": "universality", "code_version": "1",
                 "deps": [AssetKey("families"), AssetKey("tuning"), AssetKey("unit_profiles"), AssetKey("layers"),
                          AssetKey("images"), AssetKey("activation_samples")]}


class NullConfig(Config):
    """The null of the matches across models: how many random rebuilds of each family, and their seed (as
    ``equivar compare`` and ``equivar emergence`` take them)."""

    draws: int = 50
    seed: int = 0


class CompareConfig(NullConfig):
    """Which models ``family_matches`` compares: ``pairs`` as ``"A,B"`` (model names of the results folder);
    empty: every pair of the folder's models that have families."""

    pairs: list[str] = []


@asset(**ACROSS_MODELS)
@_fails_once_on_bad_input
def family_matches(context: AssetExecutionContext, equivar: EquivarConfig, config: CompareConfig
                   ) -> MaterializeResult:
    """Families matched across models (``equivar compare``): not partitioned, it reads the tables of every
    model partition it compares (``families``, ``tuning``, ``unit_profiles``, ``layers``; ``images`` and the
    kept ``activation_samples``, for the photo correlation) and writes
    ``family_matches`` of each model in each other, both ways."""
    out = os.path.abspath(equivar.out)
    pairs = [tuple(p.split(",")) for p in config.pairs] or stages.analysed_pairs(out)
    matched = {}
    for a, b in pairs:
        for model, df in stages.compare_models(out, a, b, config.draws, config.seed).items():
            other = b if model == a else a
            matched[f"{model} in {other}"] = int((df["mutual"] & df["above_null"]).sum())
    storage.build_catalog(out)
    context.log.info("family matches: %s", matched)
    return MaterializeResult(metadata={"pairs": MetadataValue.json([list(p) for p in pairs]),
                                       "mutual_above_null": MetadataValue.json(matched)})


@asset(**ACROSS_MODELS)
@_fails_once_on_bad_input
def family_emergence(context: AssetExecutionContext, equivar: EquivarConfig, config: NullConfig
                     ) -> MaterializeResult:
    """Families over training (``equivar emergence``): not partitioned, it reads every checkpoint partition of
    each training run of the results folder (the models with a ``step``) and writes ``family_emergence`` under
    each run's last checkpoint; nothing where the folder holds no training run."""
    out = os.path.abspath(equivar.out)
    tables = stages.write_emergence(out, config.draws, config.seed)
    storage.build_catalog(out)
    appeared = {spec: df.drop_duplicates(["layer", "transform", "family"]).groupby("appeared").size().to_dict()
                for spec, df in tables.items()}
    context.log.info("family emergence: %s", appeared or "no training run")
    return MaterializeResult(metadata={"training_runs": MetadataValue.json(sorted(tables)),
                                       "appeared": MetadataValue.json(appeared)})


#: asset -> its code version, own inputs and upstream assets, from the definitions above: what its fingerprint
#: hashes
DECLARED = declarations(TABLE_ASSETS)
#: asset -> the table assets it reads (its declared upstream assets): what the CLI, the schedule and the docs follow
GRAPH = {name: list(d.upstream) for name, d in DECLARED.items()}
#: asset -> every output of the (multi-)asset that computes it: a run selects them together
SIBLINGS = {key.to_user_string(): [k.to_user_string() for k in a.keys] for a in TABLE_ASSETS for key in a.keys}
