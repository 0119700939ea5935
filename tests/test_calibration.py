"""Every headline number beside its chance level: the rotation test's self rows, controls and chance, circuit
scores against their null, and flip pairs that rotation explains versus true mirror images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from equivar_core import planted
from equivar_core.circuits import CircuitNull, Family, SourceKernels, family_equivariance
from equivar_core.families import Assignment, PairFamilies, flip_relations
from equivar_core.stages.circuit_tables import load_weights
from equivar_core.sweeps import RotationTestSettings, chance_within, control_units

from .conftest import variant_runs


@pytest.fixture(scope="session")
def chiral_runs(tmp_path_factory):
    """Runs of the planted model whose flip pairs are chiral colour "L"s (no rotation maps one onto the other):
    their families and layer summaries."""
    return variant_runs(tmp_path_factory, "planted_chiral", planted.CHIRAL, (0, 1), needs=("families", "layer_summary"))


def test_chance_is_the_share_of_sweep_angles_within_the_tolerance():
    # 10 degree steps over 180 degrees: 0, 10, 170 lie within 15 of 0; 0, 10, 20, 170 within 15 of 5
    assert chance_within(0.0, 180.0, 10.0, 15.0) == pytest.approx(3 / 18)
    assert chance_within(5.0, 180.0, 10.0, 15.0) == pytest.approx(4 / 18)
    assert chance_within(350.0, 360.0, 10.0, 15.0) == pytest.approx(3 / 36)     # wraps at 360
    got = chance_within(np.array([0.0, 5.0]), np.array([180.0, 180.0]), 10.0, 15.0)
    assert got == pytest.approx([3 / 18, 4 / 18])


def test_control_units_are_outside_the_family_and_matched_on_selectivity():
    selectivity = np.array([0.9, 0.5, 0.1, 0.88, 0.52, 0.12, 0.3, 0.95])
    members, candidates = np.array([0, 1, 2]), np.array([3, 4, 5, 6, 7])
    chosen = control_units(members, candidates, selectivity, np.random.default_rng(0))
    assert len(set(chosen)) == 3 and set(chosen) <= set(candidates)
    assert sorted(chosen) == [3, 4, 5]          # the nearest in selectivity, not the most selective (7)
    assert len(control_units(members, candidates[:2], selectivity, np.random.default_rng(0))) == 2


def test_self_rows_are_the_drivers_own_and_summaries_can_leave_them_out(planted_runs, strided_runs):
    """(planted_runs sweep relu1 only; strided_runs add relu2's rows)"""
    for run, _ in [*planted_runs.values(), *strided_runs.values()]:
        sw = run.sweeps
        assert set(sw["role"]) == {"self", "member", "control"}
        assert ((sw["role"] == "self") == (sw["driver"] == sw["member"])).all()
        assert sw["chance"].between(0, 1).all()
        flips = sw["transform"] == "hflip"     # two versions: the peak must be on the expected one
        tolerance = RotationTestSettings().tolerance
        assert (sw["passed"] == np.where(flips, sw["error"] == 0, sw["error"] <= tolerance)).all()
        assert np.allclose(sw.loc[flips, "chance"], 0.5)
        controls = sw[sw["role"] == "control"]      # a few drivers each, every control unit read
        drivers = controls.groupby(["layer", "family", "transform"])["driver"].nunique()
        assert drivers.max() == RotationTestSettings().control_drivers, drivers
        assert (controls.groupby(["layer", "family", "transform"])["member"].nunique() > drivers).any()


def _pass_rates(sweeps: pd.DataFrame, layer: str, transform: str) -> pd.Series:
    s = sweeps[(sweeps["layer"] == layer) & (sweeps["transform"] == transform) & (sweeps["angle"] == 0)]
    return s.assign(ok=s["passed"]).groupby("role").agg(ok=("ok", "mean"), chance=("chance", "mean"),
                                                         n=("ok", "size"))


def test_planted_members_pass_the_rotation_test_far_above_chance_and_controls_near_it(planted_runs):
    """relu1's edge and line families against units outside any rotation family (the hue, flip and noise
    filters), matched on selectivity. Measured over seeds 0-5: members 0.57-0.84, controls 0.05-0.15,
    chance 0.11-0.15."""
    member, control, chance = [], [], []
    for run, _ in planted_runs.values():
        rates = _pass_rates(run.sweeps, "relu1", "rotate")
        member.append(rates.loc["member", "ok"])
        control.append(rates.loc["control", "ok"])
        chance.append(rates.loc["control", "chance"])
        assert rates.loc["member", "ok"] > rates.loc["control", "ok"] + 0.3, rates
    assert np.mean(member) >= 0.6 and np.mean(control) <= np.mean(chance) + 0.1, (member, control, chance)


def test_the_planted_group_convolution_is_far_above_its_null_and_shuffled_weights_are_not(planted_runs):
    """conv2 is an exact group convolution over the edge family: in the circuit table z >= 5 (measured 28-130).

    conv2 has only 10 units, too few stand-ins for a null to spread as it should (on random weights its z
    has a standard deviation of 1.4 with 10 destination units, 0.9-1.0 with 30 or 100), so the calibration
    check gives the layer 40 more units whose kernels are drawn from conv2's own: the group convolution
    keeps z >= 5, and the same layer with its kernels shuffled over (destination, source) pairs scores at
    its null, |z| < 2."""
    shuffled_z = []
    for seed, (run, truth) in planted_runs.items():
        c = run.circuits
        edges = set(truth.families["conv1"]["edges"][0])
        fam = run.families[(run.families["layer"] == "relu1") & (run.families["transform"] == "rotate")]
        edge_family = fam.groupby("family")["unit"].apply(lambda u: len(set(u) & edges) / len(u)).idxmax()
        row = c[(c["src_family"] == edge_family) & (c["dst_layer"] == "relu2") & (c["dst_family"] >= 0)
                & (c["transform"] == "rotate")].iloc[0]
        assert row["z"] >= 5 and row["equivariance"] > row["null_mean"] + 5 * row["null_sd"], row

        w, computed = load_weights(run.settings, "relu1", "relu2")
        k = w.shape[-1]
        rng = np.random.default_rng(seed)
        flat = w.reshape(-1, k, k)
        extra = flat[rng.integers(0, len(flat), size=40 * w.shape[1])].reshape(40, *w.shape[1:])
        w = np.concatenate([w, extra])
        src = fam[fam["family"] == edge_family]
        dst = run.families[(run.families["layer"] == "relu2") & (run.families["family"] == row["dst_family"])
                           & (run.families["transform"] == "rotate")]
        row_of = {int(u): i for i, u in enumerate(computed)}
        members = Family(src["unit"].to_numpy(int), src["param"].to_numpy(), 360.0)
        targets = Family([row_of[u] for u in dst["unit"]], dst["param"].to_numpy(), 360.0)
        eq, n, null_mean, null_sd = family_equivariance(SourceKernels.of(w, members, "rotate"), targets, 20.0,
                                                        null=CircuitNull(32, 0.1, rng))
        assert (eq - null_mean) / null_sd >= 5, (seed, eq, null_mean, null_sd)
        flat = w.reshape(-1, k, k)
        shuffled = SourceKernels.of(flat[rng.permutation(len(flat))].reshape(w.shape), members, "rotate")
        eq, n, null_mean, null_sd = family_equivariance(shuffled, targets, 20.0, null=CircuitNull(32, 0.1, rng))
        shuffled_z.append((eq - null_mean) / null_sd)
    shuffled_z = np.abs(shuffled_z)
    assert (shuffled_z < 2).all(), shuffled_z


def test_a_null_is_undefined_where_no_other_unit_is_connected():
    """Into planted conv2's pooling unit only the edge family sends weights: no stand-in exists, so NaN."""
    w = np.zeros((3, 4, 3, 3))
    w[0, :2] = np.random.default_rng(0).normal(size=(2, 3, 3))
    w[1:, :2] = np.random.default_rng(1).normal(size=(2, 2, 3, 3))
    source = SourceKernels.of(w, Family([0, 1], [0.0, 90.0], 360.0), "rotate")
    eq, n, null_mean, null_sd = family_equivariance(source, Family([0, 1, 2], [0.0, 90.0, 180.0], 360.0), 20.0,
                                                    null=CircuitNull(8, 0.1, np.random.default_rng(0)))
    assert n > 0 and np.isnan(null_mean) and np.isnan(null_sd)


def _truth_kind(truth) -> dict[int, str]:
    return {u: name for name, (units, _, _) in truth.families["conv1"].items() for u in units}


def _flip_pairs(run) -> list[tuple[list[int], str]]:
    f = run.families[(run.families["layer"] == "relu1") & (run.families["transform"] == "hflip")]
    return [(sorted(g["unit"]), g["relation"].iloc[0]) for _, g in f.groupby("family")]


def test_chiral_mirror_pairs_are_mirror_and_mirrored_edges_and_lines_are_rotation(chiral_runs, planted_runs):
    """A chiral colour "L" and its mirror image are a flip pair that no rotation explains: `mirror`. A line at
    30 degrees and its partner at 150 (and edges likewise) are a flip pair and rotated copies: `rotation`."""
    for seed, (run, truth) in chiral_runs.items():
        kind = _truth_kind(truth)
        pairs = {tuple(p): rel for p, rel in _flip_pairs(run)}
        for name in ("flip0", "flip1"):
            units = tuple(sorted(truth.families["conv1"][name][0]))
            assert pairs.get(units) == "mirror", (seed, name, pairs)
        summary = run.layer_summary.set_index(["layer", "transform"]).loc[("relu1", "hflip")]
        assert summary["mirror_pairs"] == sum(rel == "mirror" for rel in pairs.values())
        assert np.isnan(run.layer_summary.set_index(["layer", "transform"]).loc[("relu1", "rotate"), "mirror_pairs"])
    rotation_explained = 0
    for seed, (run, truth) in list(planted_runs.items()) + list(chiral_runs.items()):
        kind = _truth_kind(truth)
        for units, rel in _flip_pairs(run):
            if {kind.get(u) for u in units} in ({"edges"}, {"lines"}):
                assert rel == "rotation", (seed, units, rel)
                rotation_explained += 1
    assert rotation_explained >= 20


def test_flip_relations_needs_the_rotation_to_score_like_the_flip():
    """Two units in one rotation family 90 degrees apart: `rotation` only where the natural-image rotation
    score at 90 (either direction) reaches the flip score less the margin."""
    pairs = PairFamilies().fit({1.0: np.array([[0.5, 0.95, 0.0], [0.95, 0.5, 0.0], [0.0, 0.0, 0.5]])})
    assert list(pairs.labels_) == [0, 0, -1] and pairs.fit_[0] == pytest.approx(0.95)
    labels, params, periods = np.array([0, 0, -1]), np.array([10.0, 100.0, np.nan]), {0: 360.0}
    scores = {90.0: np.eye(3), 270.0: np.eye(3)}
    assert flip_relations(pairs, Assignment(labels, params, periods), scores) == {0: "mirror"}
    scores[270.0] = np.array([[1.0, 0.0, 0.0], [0.92, 1.0, 0.0], [0.0, 0.0, 1.0]])    # score_{-90}(v, u)
    assert flip_relations(pairs, Assignment(labels, params, periods), scores) == {0: "rotation"}
    assert flip_relations(pairs, Assignment(np.array([0, 1, -1]), params, {0: 360.0, 1: 360.0}), scores) == {
        0: "mirror"}
