"""Late layers (issue 31): a planted network whose late layers hold detectors, their exact mirror images, an
unmirrored decoy and a unit pooling one detector and its mirror image, analysed as the ``late`` preset
(no synthetic tuning): the pairs are found from natural-image scores alone and the decoy is not, the paper's
flip test on photos passes for them and not for their controls, and the pooling unit is found as a flip ->
invariant circuit above its null."""

from __future__ import annotations

import numpy as np
import pytest

from equivar_core.errors import EquivarError
from equivar_core.models.registry import load_model, resolve_layers
from tests.conftest import PlantedRun

SEEDS = (0, 1)


@pytest.fixture(scope="session")
def late_runs(tmp_path_factory):
    from equivar_core import planted

    runs = {}
    for seed in SEEDS:
        with pytest.MonkeyPatch.context() as mp:      # the factory builds this seed's network during the run only
            mp.setattr(planted, "planted_late", lambda seed=seed: planted.planted_late_model(seed)[0])
            runs[seed] = (PlantedRun(str(tmp_path_factory.mktemp(f"late{seed}")), seed,
                                     spec="equivar_core.planted:planted_late", layers=("late",),
                                     needs=("families", "sweeps", "circuits", "layer_summary")),
                          planted.planted_late_model(seed)[1])
    return runs


def test_late_preset_of_a_user_model_and_its_absence():
    model = load_model("equivar_core.planted:planted_late")
    assert resolve_layers(model, ["late"]) == ["relu2", "relu3"]
    with pytest.raises(EquivarError, match="no 'late' preset"):
        resolve_layers(load_model("equivar_core.planted:planted"), ["late"])


@pytest.mark.parametrize("seed", SEEDS)
def test_late_layers_are_not_tuned(late_runs, seed):
    run, _ = late_runs[seed]
    assert list(run.layers["layer"]) == ["relu2", "relu3"]
    assert not run.layers["tuned"].any()
    assert run.tuning.empty and run.profiles.empty
    fam = run.families
    assert set(fam["transform"]) <= {"hflip", "scale"}      # no rotation or hue family without tuning curves


@pytest.mark.parametrize("seed", SEEDS)
def test_mirror_pairs_are_found_and_the_decoy_is_not(late_runs, seed):
    run, truth = late_runs[seed]
    flips = run.families[(run.families["transform"] == "hflip") & (run.families["layer"] == "relu2")]
    found = {frozenset(g["unit"]) for _, g in flips.groupby("family")}
    planted = {frozenset(p) for p in truth.pairs}
    assert planted <= found, (found, planted)
    assert truth.decoy not in set(flips["unit"])
    assert not set(flips["unit"]) & set(truth.noise)
    # the pairs are mirror images that no rotation gives (scores alone: no rotation family to place them on)
    mirror = flips[flips["unit"].isin([u for p in truth.pairs for u in p])]
    assert set(mirror["relation"]) == {"mirror"}
    summary = run.layer_summary.set_index(["layer", "transform"])
    assert summary.loc[("relu2", "hflip"), "mirror_pairs"] >= len(truth.pairs)


@pytest.mark.parametrize("seed", SEEDS)
def test_flip_test_on_photos_passes_for_pairs_not_controls(late_runs, seed):
    run, truth = late_runs[seed]
    sw = run.sweeps[(run.sweeps["transform"] == "hflip") & (run.sweeps["layer"] == "relu2")]
    assert set(sw["angle"]) == {0.0, 1.0}
    assert np.allclose(sw["chance"], 0.5)
    pairs = {frozenset(p) for p in truth.pairs}
    members = sw[(sw["role"] == "member") & sw.apply(lambda r: frozenset((r.driver, r.member)) in pairs, axis=1)]
    assert len(members) == 4 * len(truth.pairs)          # each member drives, its partner read at both versions
    # the partner answers the driver's mirrored photos about as strongly as the driver answers the originals
    assert np.all(np.abs(members["drive"] - 1) < 0.2), members["drive"]
    # ... and answers them better than the originals wherever the driver itself tells the two versions apart
    own = sw[sw["role"] == "self"].pivot_table(index="driver", columns="angle", values="response")
    telling = own.index[own[0.0] - own[1.0] > 1.0]
    assert len(telling) and members[members["driver"].isin(telling)]["passed"].all()
    # controls (units in no flip pair, matched on flip invariance) do neither
    controls = sw[sw["role"] == "control"]
    assert len(controls)
    assert np.median(np.abs(controls["drive"] - 1)) > 0.25
    assert (np.abs(controls["drive"] - 1) < 0.2).mean() < 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_pose_invariant_unit_pools_the_pair(late_runs, seed):
    run, truth = late_runs[seed]
    c = run.circuits
    flip_ids = run.families[(run.families["transform"] == "hflip") & (run.families["layer"] == "relu2")]
    pair_family = {int(f) for f, g in flip_ids.groupby("family") if set(g["unit"]) == set(truth.pairs[0])}
    rows = c[(c["transform"] == "hflip") & (c["dst_family"] == -1) & c["src_family"].isin(pair_family)]
    pooled = rows[rows["dst_unit"] == truth.pooling]
    assert len(pooled) and (pooled["equivariance"] > 0.99).all() and (pooled["z"] > 3).all()
    decoy = rows[rows["dst_unit"] == truth.pooling_decoy]
    assert decoy.empty or (decoy["equivariance"] < 0.5).all()     # one kernel for both: not mirrored


def test_report_labels_mirror_pairs_with_their_flip_test(late_runs):
    from equivar_core.report import RunTables, _flip_drive

    run, truth = late_runs[0]
    tables = RunTables.__new__(RunTables)          # the run's tables in memory, as the report reads them
    tables._cache = {"family_sweeps": run.sweeps}
    sw = run.sweeps[(run.sweeps["transform"] == "hflip") & (run.sweeps["role"] == "member")]
    for a, b in truth.pairs:
        for u in (a, b):
            assert _flip_drive(tables, "relu2", u) == pytest.approx(sw[sw["driver"] == u]["drive"].iloc[0])
            assert abs(_flip_drive(tables, "relu2", u) - 1) < 0.2
    assert _flip_drive(tables, "relu2", truth.decoy) is None           # in no pair: not tested as a member
    tables._cache = {"family_sweeps": run.sweeps.iloc[:0]}
    assert _flip_drive(tables, "relu2", truth.pairs[0][0]) is None


def test_channel_level_flip_statistics_find_mirrored_wiring_and_not_random_weights():
    """examples/late_channels.py on summed weights made to order: the invariant units weigh both members of each
    source pair alike and the destination pairs receive mirrored weights (W(a -> b) = W(a' -> b')); random
    weights of the same shape do neither."""
    import pandas as pd

    from examples.late_channels import layer_pair_summary

    rng = np.random.default_rng(3)
    n_pairs, invariant, dst_pairs = 12, list(range(100, 116)), [(200 + 2 * i, 201 + 2 * i) for i in range(6)]
    cols = invariant + [u for p in dst_pairs for u in p] + list(range(300, 340))
    pairs = [(2 * i, 2 * i + 1) for i in range(n_pairs)]
    total = pd.DataFrame(rng.normal(size=(2 * n_pairs, len(cols))), columns=cols)
    for a, a2 in pairs:
        total.loc[a2, invariant] = total.loc[a, invariant].to_numpy() * rng.uniform(0.5, 2.0)   # unequal gains
        for b, b2 in dst_pairs:
            total.loc[a2, [b, b2]] = total.loc[a, [b2, b]].to_numpy()
    s = layer_pair_summary(total, pairs, invariant, dst_pairs)
    assert s["into_invariant"] > 0.99 and s["into_invariant_above_control_p95"] == 1.0
    assert abs(s["into_others"]) < 0.5 and s["into_others_above_control_p95"] < 0.5       # others left random
    assert s["swapped"] > 0.99 and s["swapped_beats_unswapped"] == 1.0
    random = pd.DataFrame(rng.normal(size=total.shape), columns=cols)
    r = layer_pair_summary(random, pairs, invariant, dst_pairs)
    assert r["into_invariant_above_control_p95"] <= 0.25 and abs(r["into_invariant"]) < 0.4
    assert 0.2 < r["swapped_beats_unswapped"] < 0.8
