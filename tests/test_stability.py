"""Stability of the families over folds of the photos (``family_stability``) and under moved thresholds
(``sensitivity``): the fold scores are those of the fold's images, planted families reappear in every fold,
an unmoved threshold refits the run's own families, and the adjusted Rand index matches its definition."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from equivar_core import stages
from equivar_core.archive_keys import PLAIN, moments_key
from equivar_core.families import PairFamilies
from equivar_core.moments import StoredMoments
from equivar_core.scores import SampleGrid, ScoreSettings, TransformedVersion, version_scores
from equivar_core.settings import MEMBERSHIP_THRESHOLDS, FamilySettings
from equivar_core.stability import adjusted_rand_index, best_jaccard, mean_pairwise_ari, singletons
from equivar_core.stages.sampling import located
from equivar_core.stages.stability_tables import moved
from equivar_core.transforms import make_transform, parse_label, version_labels
from tests.test_families import LAYER, _best_match

#: float16 samples against float32 moments (tests/test_moments.py), and the fold scores' float16 storage
ATOL = 3e-3


def test_fold_scores_are_the_scores_of_the_folds_images(planted_runs):
    """Each fold's stored rotation scores are the scores of the fold's images alone (image i in fold i mod K),
    and the folds' sums add up to the whole set's."""
    run, _ = planted_runs[0]
    s = run.settings
    k = s.stability.folds
    disc = s.sweep.disc_radius
    originals = {r.layer: r for r in located(s, run.manifest).itertuples()}
    for r in located(s, run.transformed["rotate"]).itertuples():
        base = originals[r.layer]
        samples, versions, points = np.load(base.path), np.load(r.path), np.load(base.points_path)
        with np.load(s.layout.fold_scores(r.layer, "rotate")) as z:
            folds = {key: z[key] for key in z.files}
        for v, label in enumerate(version_labels(r.versions)[:3]):
            g = make_transform(*parse_label(label))
            assert folds[moments_key(PLAIN, label)].shape == (k, r.n_units, r.n_units)
            for f in range(k):
                images = np.arange(r.n_images)[np.arange(r.n_images) % k == f]
                want = version_scores(samples, TransformedVersion(v, g, versions), SampleGrid(points, disc, images),
                                      ScoreSettings())[0]
                np.testing.assert_allclose(folds[moments_key(PLAIN, label)][f], want, atol=ATOL)
            whole = StoredMoments(r.moments_path).scores(label)[0]
            assert not np.allclose(folds[moments_key(PLAIN, label)][0], whole, atol=0.02)     # a fold is not the whole


def test_planted_families_reappear_in_every_fold(planted_runs):
    """Every planted family (its best match among the run's families) reappears in each of the four folds of
    the 24 photos, and the folds agree on the planted layers' rotation families."""
    for seed, (run, truth) in planted_runs.items():
        df = run.stability
        assert (df["folds"] == run.settings.stability.folds).all()
        assert len(df[df["family"] >= 0]) == len(run.families.groupby(["layer", "transform", "family"]))
        assert len(df[df["family"] == -1]) == len(run.layers) * 4
        for conv, planted in truth.families.items():
            for name, (units, _, transform) in planted.items():
                found = run.families[run.families["layer"] == LAYER[conv]]
                jaccard, group = _best_match(found, units, transform)
                assert jaccard >= 0.8, (seed, name, jaccard)
                row = df[(df["layer"] == LAYER[conv]) & (df["transform"] == transform) &
                         (df["family"] == group["family"].iloc[0])]
                assert row["reappear"].item() == 1.0, (seed, name, row.to_string())
                assert row["median_jaccard"].item() >= 0.8, (seed, name, row.to_string())
        rotate = df[(df["family"] == -1) & (df["transform"] == "rotate")]
        assert (rotate["ari"] > 0.5).all(), (seed, rotate.to_string())


def test_sensitivity_has_a_row_per_layer_transform_threshold_and_change(planted_runs):
    run, _ = planted_runs[0]
    st = run.settings.stability
    df = run.sensitivity
    assert len(df) == len(run.layers) * 4 * len(st.thresholds) * len(st.changes)
    assert set(df["threshold"]) == set(st.thresholds) and set(df["change"]) == set(st.changes)
    for r in df.drop_duplicates(["threshold", "change"]).itertuples():
        assert r.value == pytest.approx(getattr(run.settings.families, r.threshold) * (1 + r.change))
    for (layer, transform), g in run.families.groupby(["layer", "transform"]):
        rows = df[(df["layer"] == layer) & (df["transform"] == transform)]
        assert (rows["units_in_families_base"] == g["unit"].nunique()).all()
        assert (rows["families_base"] == g["family"].nunique()).all()


def test_unmoved_thresholds_refit_the_runs_families(planted_runs):
    """At a change of 0 every threshold gives the families table's counts (the refit is the real fit)."""
    for seed in (0, 1):
        run, _ = planted_runs[seed]
        s = dataclasses.replace(run.settings, stability=dataclasses.replace(
            run.settings.stability, thresholds=MEMBERSHIP_THRESHOLDS, changes=(0.0,)))
        _, df = stages.family_check_tables(s, run.tuning, run.profiles, run.layers, run.families)
        assert len(df) == len(run.layers) * 4 * len(MEMBERSHIP_THRESHOLDS)
        assert (df["units_in_families"] == df["units_in_families_base"]).all(), seed
        assert (df["families"] == df["families_base"]).all(), seed
        assert df["units_in_families"].sum() > 0


@pytest.mark.parametrize("threshold", ["min_similarity", "pair_min_score"])
def test_raising_the_similarity_cut_or_the_pair_score_never_adds_units(planted_runs, threshold):
    """On every planted run, units in families never grow as ``min_similarity`` or ``pair_min_score`` rise
    (for pairs this always holds: see test_pair_families_at_a_higher_score_are_a_subset)."""
    for seed, (run, _) in planted_runs.items():
        df = run.sensitivity[run.sensitivity["threshold"] == threshold]
        for (layer, transform), g in df.groupby(["layer", "transform"]):
            by_change = dict(zip(g["change"], g["units_in_families"]))
            by_change[0.0] = int(g["units_in_families_base"].iloc[0])
            counts = [by_change[c] for c in sorted(by_change)]
            assert counts == sorted(counts, reverse=True), (seed, layer, transform, by_change)


def test_pair_families_at_a_higher_score_are_a_subset():
    """Raising ``pair_min_score`` only drops pairs: the candidates it removes score lower than every kept one,
    so they never took a unit from a kept pair."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = {a: np.clip(rng.normal(0.5, 0.3, (30, 30)), -1, 1) for a in (1.0, 2.0)}
        pairs = []
        for t in (0.3, 0.5, 0.7):
            est = PairFamilies(pair_min_score=t, pair_max_error_ratio=5.0).fit(scores)
            labels = est.labels_
            pairs.append({frozenset(np.flatnonzero(labels == f)) for f in np.unique(labels[labels >= 0])})
        assert pairs[2] <= pairs[1] <= pairs[0]


def test_moved_thresholds_stay_inside_their_declared_range():
    fs = FamilySettings()
    assert moved(fs, "min_similarity", 0.2) == pytest.approx(0.84)
    assert moved(fs, "max_plain_correlation", 0.2) == 1.0        # 1.08 is no correlation
    assert moved(fs, "min_spread", -0.1) == pytest.approx(18.0)


def _slow_ari(a, b) -> float:
    """The Rand index's pair counts, pair by pair, adjusted as Hubert and Arabie do."""
    n = len(a)
    same_a = np.array([a[i] == a[j] for i, j in itertools.combinations(range(n), 2)])
    same_b = np.array([b[i] == b[j] for i, j in itertools.combinations(range(n), 2)])
    both, pa, pb, total = (same_a & same_b).sum(), same_a.sum(), same_b.sum(), len(same_a)
    expected = pa * pb / total
    top = (pa + pb) / 2
    return 1.0 if top == expected else (both - expected) / (top - expected)


def test_adjusted_rand_index_matches_its_pair_counting_definition():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        a, b = rng.integers(0, rng.integers(1, 6), n), rng.integers(0, rng.integers(1, 6), n)
        assert adjusted_rand_index(a, b) == pytest.approx(_slow_ari(a, b))
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, np.array([5, 5, 3, 3, 9, 9])) == 1.0        # labels are names only
    assert adjusted_rand_index(np.arange(6), np.arange(6)) == 1.0              # nothing together in either
    assert adjusted_rand_index(a, np.arange(6)) == 0.0


def test_units_in_no_family_are_clusters_of_their_own():
    labels = np.array([-1, 0, 0, -1, 1, 1])
    assert list(singletons(labels)) == [2, 0, 0, 3, 1, 1]
    # two fits that agree on the families agree, whatever they leave out: the left-out units are not a cluster
    assert mean_pairwise_ari([labels, np.array([-1, 0, 0, -1, 1, 1])]) == 1.0
    assert mean_pairwise_ari([np.full(6, -1), np.full(6, -1)]) == 1.0
    assert mean_pairwise_ari([labels]) != mean_pairwise_ari([labels])          # NaN: one fit has no pair


def test_best_jaccard():
    labels = np.array([0, 0, 0, 1, 1, -1, -1])
    assert best_jaccard([0, 1, 2], labels) == 1.0
    assert best_jaccard([0, 1, 5], labels) == pytest.approx(2 / 4)
    assert best_jaccard([5, 6], labels) == 0.0
    assert best_jaccard([2, 3, 4], labels) == pytest.approx(2 / 3)
