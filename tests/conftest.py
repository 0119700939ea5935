"""Shared fixtures: planted-model runs are computed once per session and reused."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "imagenet-sample")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


PLANTED_SEEDS = (0, 1, 2, 3, 4, 5)


def catalog(path):
    """The catalog ``path`` (``<out>/equivar.duckdb``), opened as `equivar sql` opens it: its views' paths
    are relative to the results folder."""
    from equivar_core.storage import open_catalog

    return open_catalog(os.path.dirname(str(path)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlantedRun:
    """All stage tables of one run of the planted model (see equivar_core.planted)."""

    def __init__(self, out: str, seed: int, random: bool = False, spec: str | None = None):
        from equivar_core import stages
        from equivar_core.settings import RunSettings

        spec = spec or ("equivar_core.planted:random_planted" if random else "equivar_core.planted:planted")
        from equivar_core.sweeps import RotationTestSettings

        # the rotation test on every planted family (the default tests each layer's two largest)
        self.settings = s = RunSettings(model=spec, out=out, n_images=24, layers=("relu1", "relu2"), seed=seed,
                                        rotation_test=RotationTestSettings(max_families=4))
        self.layers = stages.layer_table(s)
        self.images = stages.image_table(s)
        self.stats, self.manifest = stages.natural_activations(s, self.images, self.layers)
        self.tuning, self.tuning_random_basis = stages.tuning_table(s, self.layers, self.stats)
        self.profiles = stages.profile_table(s, self.tuning, self.layers)
        self.pairs, self.transformed = stages.all_transform_pairs(s, self.images, self.layers, self.manifest)
        self.families = stages.family_table(s, self.tuning, self.profiles, self.layers)
        self.basis_control = stages.basis_control_table(s, self.layers, self.tuning_random_basis, self.families,
                                                        self.manifest, self.transformed)
        self.layer_summary = stages.layer_summary_table(s, self.layers, self.families, self.basis_control)
        self.maps = stages.transform_map_table(s, self.layers)
        self.curves = stages.curve_detector_table(s, self.tuning, self.layers, self.families)
        self.sweeps = stages.family_sweep_table(s, self.families, self.images, self.layers, self.stats, self.curves)
        self.weights = stages.circuit_weight_table(s, self.layers, self.families)
        self.circuits = stages.circuit_family_table(s, self.weights, self.families)


@pytest.fixture(scope="session")
def planted_runs(tmp_path_factory):
    """Runs of the planted model for seeds 0-5 (edge families of 6, 8, 10, 12, 6, 8 members)."""
    from equivar_core import planted

    runs = {}
    for seed in PLANTED_SEEDS:
        sizes = planted.family_sizes(seed)
        with pytest.MonkeyPatch.context() as mp:      # `planted` builds this seed's network during the run only
            mp.setattr(planted, "planted", lambda seed=seed: planted.planted_model(seed, **sizes)[0])
            runs[seed] = (PlantedRun(str(tmp_path_factory.mktemp(f"planted{seed}")), seed),
                          planted.planted_model(seed, **sizes)[1])
    return runs


@pytest.fixture(scope="session")
def random_runs(tmp_path_factory):
    from equivar_core import planted

    runs = {}
    for seed in (0, 1, 2):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(planted, "random_planted",
                       lambda seed=seed: planted.planted_model(seed, random=True, **planted.family_sizes(seed))[0])
            runs[seed] = PlantedRun(str(tmp_path_factory.mktemp(f"random{seed}")), seed, random=True)
    return runs


STRIDED_SEEDS = (0, 1, 2)


@pytest.fixture(scope="session")
def strided_runs(tmp_path_factory):
    """Runs of the strided planted model (stride 2 + TF padding, colour-unbalanced edges, hues spaced in YIQ)."""
    from equivar_core import planted

    runs = {}
    for seed in STRIDED_SEEDS:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(planted, "planted_strided", lambda seed=seed: planted.planted_model(seed, **planted.STRIDED)[0])
            runs[seed] = (PlantedRun(str(tmp_path_factory.mktemp(f"strided{seed}")), seed,
                                     spec="equivar_core.planted:planted_strided"),
                          planted.planted_model(seed, **planted.STRIDED)[1])
    return runs
