"""``family_matches``: the families of two models of one results folder matched to each other
(:mod:`equivar_core.universality`)."""

from __future__ import annotations

import functools
import logging
import os
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import EquivarError, damaged_table
from ..layout import Layout
from ..model_index import registered
from ..storage import read_table, write_table
from ..tables import FAMILY_EMERGENCE, FAMILY_MATCHES
from ..transforms import IDENTITY, TRANSFORMS
from ..tuning import stacked_curves
from ..universality import COMPARED, Families, SharedPhotos, comparable_layers, match_families
from .common import _columns

log = logging.getLogger(__name__)

#: the tables of a model that matching reads
NEEDED = ("layers", "families", "tuning", "unit_profiles")
#: and where the model's run kept them, its samples of the photos' responses (``activation_samples``)
PHOTO_TABLES = ("images", "activation_samples")


@dataclass(frozen=True)
class Analysed:
    """What one model's run left that matching reads."""

    name: str
    layers: pd.DataFrame
    families: pd.DataFrame
    tuning: dict[str, np.ndarray]
    profiles: pd.DataFrame
    root: str = ""
    images: pd.DataFrame | None = None
    samples: pd.DataFrame | None = None

    @classmethod
    def read(cls, root: str, name: str) -> "Analysed":
        tables = {t: read_table(root, t, name) for t in NEEDED}
        missing = [t for t, table in tables.items() if table is None]
        if missing:
            raise EquivarError(f"model {name} has no {', '.join(missing)} table in {root}: run it there first "
                               f"(`equivar run --name {name} --out {root}`, or --model SPEC for a new model)")
        df = {t: table.to_pandas() for t, table in tables.items()}
        photos = {t: read_table(root, t, name) for t in PHOTO_TABLES}
        photos = {t: None if table is None else table.to_pandas() for t, table in photos.items()}
        return cls(name, df["layers"], df["families"], _columns(df["tuning"]), df["unit_profiles"], root,
                   photos["images"], photos["activation_samples"])

    def stimuli(self, layer: str) -> set[str]:
        return set(np.unique(self.tuning["stimulus"][self.tuning["layer"] == layer]))

    def n_units(self, layer: str) -> int:
        return int(self.layers.loc[self.layers["layer"] == layer, "n_units"].iloc[0])

    def layer_families(self, transform: str, layer: str, stimuli: list[str], invariant: list[str]) -> Families:
        """The :class:`~equivar_core.universality.Families` of one layer and transform, over the tuning
        ``stimuli`` and ``invariant`` stimuli (the transform's that both compared models measured)."""
        rows = self.families[(self.families["layer"] == layer) & (self.families["transform"] == transform)]
        groups = [g for _, g in rows.groupby("family", sort=True)]
        members = [(g["unit"].to_numpy(int), g["param"].to_numpy(float)) for g in groups]
        ids = sorted(int(f) for f in rows["family"].unique())
        n = self.n_units(layer)
        prof = self.profiles[(self.profiles["layer"] == layer) & self.profiles["stimulus"].isin(stimuli)]
        best = prof.groupby("unit")["selectivity"].max()
        selectivity = np.zeros(n)
        selectivity[best.index.to_numpy(int)] = np.nan_to_num(best.to_numpy(float))
        return Families(ids, members, stacked_curves(self.tuning, layer, stimuli, n), selectivity,
                        stacked_curves(self.tuning, layer, invariant, n),
                        [float(g["period"].iloc[0]) for g in groups])

    def kept(self, layer: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame] | None:
        """The layer's samples of the original photos (K x P x C, memory-mapped), their points (P x 2) and the
        K kept photos' rows of ``images`` (those that could be read); None where the run kept none."""
        if self.samples is None or self.images is None:
            return None
        row = self.samples[(self.samples["layer"] == layer) & (self.samples["group"] == IDENTITY)]
        if not len(row) or int(row["n_kept"].iloc[0]) == 0:
            return None
        layout = Layout(self.root, self.name)
        path = layout.resolve(row["path"].iloc[0])
        try:
            values = np.load(path, mmap_mode="r")[0]
            points = np.load(layout.resolve(row["points_path"].iloc[0]))
            loaded = np.load(layout.loaded) if os.path.exists(layout.loaded) else None
        except (OSError, ValueError, IndexError) as exc:
            raise EquivarError(f"cannot read the kept samples of model {self.name}, layer {layer} ({path}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): run `equivar run "
                               f"--name {self.name} --out {self.root}` to recompute them") from None
        images = self.images[self.images["image"] < len(values)]          # sample row k is image k
        if loaded is not None:
            images = images[loaded[images["image"].to_numpy(int)]]
        return values, points, images


#: what makes two runs' image rows the same photo
PHOTO_KEY = ["path", "crop_top", "crop_left", "crop_size"]


def shared_photos(a: Analysed, b: Analysed, layer_a: str, layer_b: str) -> SharedPhotos | None:
    """A's responses in ``layer_a`` and B's in ``layer_b`` to the photos both runs kept samples of, at the
    same points; None where the runs kept no common photo or sampled other points."""
    ka, kb = a.kept(layer_a), b.kept(layer_b)
    if ka is None or kb is None or ka[1].shape != kb[1].shape or not np.allclose(ka[1], kb[1]):
        return None
    both = ka[2].reset_index(drop=True).merge(kb[2].reset_index(drop=True), on=PHOTO_KEY, suffixes=("_a", "_b"))
    if not len(both):
        return None
    rows_a, rows_b = both["image_a"].to_numpy(int), both["image_b"].to_numpy(int)
    flat = lambda v, rows: np.asarray(v[rows], np.float32).reshape(-1, v.shape[-1])     # noqa: E731
    return SharedPhotos(flat(ka[0], rows_a), flat(kb[0], rows_b), len(both))


def family_match_table(a: Analysed, b: Analysed, draws: int = 50, seed: int = 0) -> pd.DataFrame:
    """Every rotation and hue family of ``a`` matched in ``b`` (rows of ``family_matches``, ``model`` first)."""
    parts = []
    for layer_a, layer_b, how in comparable_layers(a.layers, b.layers):
        # read once per layer pair, and only where a family of A is matched
        photos = functools.cache(lambda la=layer_a, lb=layer_b: shared_photos(a, b, la, lb))
        for transform in COMPARED:
            T, both = TRANSFORMS[transform], a.stimuli(layer_a) & b.stimuli(layer_b)
            stimuli = ([s for s in T.tuning_stimuli if s in both], [s for s in T.invariant_stimuli if s in both])
            fa = a.layer_families(transform, layer_a, *stimuli)
            if not fa.ids:
                continue
            fb = b.layer_families(transform, layer_b, *stimuli)
            rng = np.random.default_rng([seed, zlib.crc32(f"{layer_a}|{layer_b}|{transform}".encode())])
            rows = match_families(fa, fb, rng, draws, photos())
            parts.append(rows.assign(model_a=a.name, model_b=b.name, layer_a=layer_a, layer_b=layer_b,
                                     paired_by=how, transform=transform))
            log.info("family matches: %s %s %s -> %s %s: %d of %d mutual above the null", a.name, layer_a,
                     transform, b.name, layer_b, int((rows["mutual"] & rows["above_null"]).sum()), len(rows))
    df = pd.concat(parts, ignore_index=True)[FAMILY_MATCHES.built] if parts else FAMILY_MATCHES.empty()
    for col in ("family_a", "size_a", "family_b", "size_b"):
        df[col] = df[col].astype("Int64")
    for col in ("mutual", "above_null"):
        df[col] = df[col].astype(bool)
    df.insert(0, "model", a.name)
    return FAMILY_MATCHES.check(df)


def family_emergence_table(root: str, names: list[str], steps: list[int], draws: int = 50, seed: int = 0
                           ) -> pd.DataFrame:
    """``family_emergence``: every rotation and hue family of the last checkpoint of one training run
    (``names`` in the order of their ``steps``) matched in each earlier checkpoint; per family, the first step
    with a mutual match above the null (of an unbroken run of such matches up to the last checkpoint), and
    whether it appeared ``whole`` (the matched family there has at least as many members) or ``piecewise``
    (fewer: it gathered members over training); ``last`` where no earlier checkpoint has it."""
    last = Analysed.read(root, names[-1])
    parts = []
    for name, step in zip(names[:-1], steps[:-1]):
        m = family_match_table(last, Analysed.read(root, name), draws, seed)
        parts.append(m.assign(step=step, present=m["mutual"] & m["above_null"]))
    if not parts:
        return FAMILY_EMERGENCE.empty()
    per = pd.concat(parts, ignore_index=True).rename(columns={"layer_a": "layer", "family_a": "family",
                                                                "size_a": "size", "model_b": "checkpoint"})
    key = ["layer", "transform", "family"]
    per = per.sort_values([*key, "step"]).reset_index(drop=True)
    first, appeared = {}, {}
    for k, g in per.groupby(key, sort=False):
        present = g["present"].to_numpy()
        run = len(present) - np.argmin(present[::-1]) if not present.all() else 0   # the unbroken run up to the end
        if run >= len(present):                        # absent at the last earlier checkpoint
            first[k], appeared[k] = steps[-1], "last"
        else:
            row = g.iloc[run]
            first[k] = int(row["step"])
            appeared[k] = "whole" if row["size_b"] >= row["size"] else "piecewise"
    keys = list(zip(*(per[c] for c in key)))
    per["first_step"] = [first[k] for k in keys]
    per["appeared"] = [appeared[k] for k in keys]
    per["model"] = last.name
    per["first_step"] = per["first_step"].astype("Int64")
    per["step"] = per["step"].astype("Int64")
    return FAMILY_EMERGENCE.check(per[FAMILY_EMERGENCE.column_names])


def write_emergence(root: str, draws: int = 50, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``family_emergence`` of every training run of ``root`` (:func:`training_runs`), each written under its
    last checkpoint; returns them by spec (empty where ``root`` has no training run)."""
    out = {}
    for spec, checkpoints in training_runs(root).items():
        steps, names = [s for s, _ in checkpoints], [n for _, n in checkpoints]
        try:
            df = family_emergence_table(root, names, steps, draws, seed)
        except pa.ArrowException as exc:
            raise damaged_table(exc, root) from None
        write_table(root, "family_emergence", pa.Table.from_pandas(df, preserve_index=False), names[-1], None)
        out[spec] = df
    return out


def training_runs(root: str) -> dict[str, list[tuple[int, str]]]:
    """The training runs of ``root``: per spec with at least two checkpoints of known step, its (step, name)
    in step order (only names whose runs have families)."""
    runs: dict[str, list[tuple[int, str]]] = {}
    for e in registered(root):
        if e.step is not None and read_table(root, "families", e.name) is not None:
            runs.setdefault(e.model, []).append((int(e.step), e.name))
    return {spec: sorted(v) for spec, v in runs.items() if len(v) >= 2}


def analysed_pairs(root: str) -> list[tuple[str, str]]:
    """Every pair of models registered in ``root`` whose runs have families, in name order."""
    names = sorted(e.name for e in registered(root) if read_table(root, "families", e.name) is not None)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def compare_models(root: str, name_a: str, name_b: str, draws: int = 50, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``family_matches`` of A in B and of B in A, written under ``<root>/family_matches``; returns both."""
    if name_a == name_b:
        raise EquivarError(f"compare needs two different models, got {name_a} twice")
    a, b = Analysed.read(root, name_a), Analysed.read(root, name_b)
    tables = {name_a: family_match_table(a, b, draws, seed), name_b: family_match_table(b, a, draws, seed)}
    for (model, df), other in zip(tables.items(), (name_b, name_a)):
        write_table(root, "family_matches", pa.Table.from_pandas(df, preserve_index=False), model, None,
                    ("model_b", other))
    return tables
