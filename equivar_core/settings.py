"""Run settings: typed, frozen, and the only input of the pipeline stages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .activations import SweepSettings
from .layout import Layout
from .sweeps import RotationTestSettings
from .tuning import TuningSettings

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


@dataclass(frozen=True)
class CircuitSettings:
    max_radius: int = 12             # source cells around the destination centre
    all_units_max_pairs: int = 128 * 128   # store every unit pair up to this many, else family members only
    delta_bin: float = 15.0          # degrees, for the weight-vs-relative-place profile
    max_invariant_targets: int = 16  # most invariant units of a layer that equivariant -> invariant circuits test


@dataclass(frozen=True)
class RunSettings:
    """Everything one run depends on."""

    model: str = "efficientnet_lite0"
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
    sweep: SweepSettings = SweepSettings()
    tuning: TuningSettings = TuningSettings()
    families: FamilySettings = FamilySettings()
    circuits: CircuitSettings = CircuitSettings()
    rotation_test: RotationTestSettings = RotationTestSettings()

    @property
    def model_name(self) -> str:
        from .models.registry import default_name

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

    @property
    def artifacts(self) -> str:
        return self.layout.artifacts
