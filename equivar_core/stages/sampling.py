"""Forward passes over the natural images and their transformed versions, streamed to sample arrays
(see :mod:`equivar_core.activations`); the tables are manifests of those arrays."""

from __future__ import annotations


import numpy as np
import pandas as pd

from ..activations import sample_activations, sample_rows
from ..archive_keys import identity_arrays
from ..images import ImageView
from ..labels import top_class_names, unit_top_classes
from ..moments import StoredMoments
from ..settings import RunSettings
from ..storage import save_npy, save_npz
from ..transforms import IDENTITY, IDENTITY_LABEL, versions_text
from ..tables import SAMPLES, UNIT_STATS
from .class_tables import run_photo_classes
from .common import _views, _with_model, load, network


def sample_shard(settings: RunSettings, layers: list[str], views: list[ImageView], paths: dict[str, str],
                 group: str) -> dict:
    """One shard of a sweep group's forward passes (a worker's task): load the model, write the shard's
    rows of the sample files ``paths``, return its partial sums (see :func:`activations.sample_rows`)."""
    model, _ = load(settings)
    return sample_rows(network(model, settings), layers, views, paths, settings.group_passes(group))


def _manifest(settings: RunSettings, samples, loaded: np.ndarray, group: str) -> pd.DataFrame:
    labels = versions_text([g.label for g in settings.sweep.group(group)])
    rel = settings.layout.relative         # a moved or copied folder reads its own files
    df = pd.DataFrame([{"layer": s.layer, "depth": depth, "group": group, "path": rel(s.path),
                        "points_path": rel(s.points_path), "moments_path": rel(s.moments_path),
                        "n_versions": s.n_versions, "n_images": s.n_images, "n_kept": s.n_kept, "n_loaded": int(loaded.sum()),
                        "n_skipped": int((~loaded).sum()), "n_points": s.n_points, "n_units": s.n_units,
                        "versions": labels} for depth, s in enumerate(samples)], columns=SAMPLES.built)
    return _with_model(df, settings, SAMPLES)


def located(settings: RunSettings, manifest: pd.DataFrame) -> pd.DataFrame:
    """A samples manifest with its paths (stored relative to the results folder) made absolute."""
    layout = settings.layout
    return manifest.assign(path=[layout.resolve(p) for p in manifest["path"]],
                           points_path=[layout.resolve(p) for p in manifest["points_path"]],
                           moments_path=[layout.resolve(p) for p in manifest["moments_path"]])


def natural_activations(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame, run_shards=None
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream the original images; returns (``unit_stats``, ``activation_samples`` manifest).

    The samples are kept for the first ``settings.keep_samples`` images; the score moments cover all.
    Also saves each layer's plain unit-unit correlations on these images
    (the baseline that transform evidence must beat; see :func:`load_identity`).
    """
    model, _ = load(settings)
    layout = settings.layout
    samples, stats, loaded = sample_activations(network(model, settings), list(layers_df["layer"]), _views(images_df),
                                                layout.activations, settings.group_passes(IDENTITY), run_shards)
    save_npy(layout.loaded, loaded)
    rows, classes = [], run_photo_classes(images_df)
    for name, st in stats.items():
        c = len(st["mean"])
        rows.append(pd.DataFrame({"layer": name, "unit": np.arange(c), "mean": st["mean"], "std": st["std"],
                                  "best_image": st["top"].image[:, 0], "best_value": st["top"].value[:, 0],
                                  "top_classes": top_class_names(unit_top_classes(st["top"].image, classes), c)}))
        save_npz(layout.top_images(name), st["top"].arrays())
        save_npy(layout.cov(name), st["cov"])
    stats_df = _with_model(pd.concat(rows, ignore_index=True), settings, UNIT_STATS)
    for smp in samples:
        identity, _ = StoredMoments(smp.moments_path).scores(IDENTITY_LABEL)
        save_npz(layout.scores(smp.layer, IDENTITY), identity_arrays(identity))
    return stats_df, _manifest(settings, samples, loaded, IDENTITY)


def transformed_activations(settings: RunSettings, images_df: pd.DataFrame, layers_df: pd.DataFrame,
                            transform: str, run_shards=None) -> pd.DataFrame:
    """Stream one transform family's versions of the images; returns its samples manifest.

    The forward passes of each family are their own: families can run on
    different workers at once, and a family is recomputed alone when only
    its amounts change.
    """
    model, _ = load(settings)
    samples, _, loaded = sample_activations(network(model, settings), list(layers_df["layer"]), _views(images_df),
                                            settings.layout.activations, settings.group_passes(transform), run_shards)
    return _manifest(settings, samples, loaded, transform)
