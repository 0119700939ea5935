"""Planted ground truth is recovered; structure is not invented in noise or in random weights.

The planted model (equivar_core.planted) hides, in shuffled channel order, a
rotation family of edges (8 angles), a 180-periodic line family (6 angles),
a hue family of colour centre-surround units (6 hues), two left/right flip
pairs and 8 smooth random filters. Seeds 0-2 each build a different
shuffle, different flip templates and different noise.
"""

import numpy as np
import pytest

from equivar_core.families import (AngularFamilies, Assignment, Evidence, PairFamilies, circular_distance,
                                   relate_families, shifted_similarity, split_bands)

LAYER = {"conv1": "relu1", "conv2": "relu2"}


def _best_match(found, units, transform):
    """The found family of that transform with the highest Jaccard index to ``units``."""
    best, best_group = 0.0, None
    for _, g in found[found["transform"] == transform].groupby("family"):
        j = len(set(units) & set(g["unit"])) / len(set(units) | set(g["unit"]))
        if j > best:
            best, best_group = j, g
    return best, best_group


def _param_error(group, units, params):
    """Median circular error of the recovered params after the best global offset (1 degree grid)."""
    found = dict(zip(group["unit"], group["param"]))
    period = float(group["period"].iloc[0])
    pairs = np.array([(found[u], p) for u, p in zip(units, params) if u in found])
    return min(np.median(circular_distance(pairs[:, 0], np.mod(pairs[:, 1] + off, period), period))
               for off in np.arange(0, 360, 1.0))


@pytest.mark.parametrize("family", ["edges", "lines", "hues"])
def test_planted_angular_families_are_recovered(planted_runs, family):
    """Jaccard >= 0.9 in at least 5 of the 6 seeds and >= 0.85 in all; param error <= 10 degrees; periods."""
    jaccards = []
    for seed, (run, truth) in planted_runs.items():
        units, params, transform = truth.families["conv1"][family]
        found = run.families[run.families["layer"] == "relu1"]
        jaccard, group = _best_match(found, units, transform)
        jaccards.append(jaccard)
        assert jaccard >= 0.85, (seed, jaccard)
        assert _param_error(group, units, params) <= 10.0
        expected_period = {"edges": 360.0, "lines": 180.0, "hues": 360.0}[family]
        assert float(group["period"].iloc[0]) == expected_period
    assert sum(j >= 0.9 for j in jaccards) >= len(jaccards) - 1, jaccards


def noise_in_families(runs) -> tuple[int, int]:
    """Noise filters of conv1 that joined a rotation or hue family, and all noise filters, over ``runs``."""
    n_noise = n_in = 0
    for run, truth in runs:
        noise = set(truth.noise_units["conv1"])
        f = run.families[(run.families["layer"] == "relu1") & run.families["transform"].isin(["rotate", "hue"])]
        n_in += len(noise & set(f["unit"]))
        n_noise += len(noise)
    return n_in, n_noise


def test_noise_units_stay_out_of_rotation_and_hue_families(planted_runs):
    n_in, n_noise = noise_in_families(planted_runs.values())
    assert n_in <= 0.05 * n_noise


def test_planted_flip_pairs_are_found(planted_runs):
    found_pairs = total = 0
    for seed, (run, truth) in planted_runs.items():
        f = run.families[(run.families["layer"] == "relu1") & (run.families["transform"] == "hflip")]
        pairs = [set(g["unit"]) for _, g in f.groupby("family")]
        for name, (units, _, transform) in truth.families["conv1"].items():
            if transform == "hflip":
                total += 1
                found_pairs += set(units) in pairs
    assert found_pairs >= total - 1


def test_random_weights_give_nearly_no_families(random_runs):
    """Random (seeded Kaiming-uniform) weights: no rotation family; at most one chance hue pair and two flip
    pairs per model (seeds 0-7 gave hue pairs in 2 and flip pairs in 3 of 8 models, never more)."""
    for run in random_runs.values():
        f = run.families
        assert f[f["transform"] == "rotate"].empty
        hue = f[f["transform"] == "hue"]
        assert hue["family"].nunique() <= 1 and len(hue) <= 2
        assert f[f["transform"] == "hflip"]["family"].nunique() <= 2


def test_group_convolution_layer_forms_one_rotation_family(planted_runs):
    for seed, (run, truth) in planted_runs.items():
        units, params, _ = truth.families["conv2"]["edges2"]
        found = run.families[run.families["layer"] == "relu2"]
        jaccard, group = _best_match(found, units, "rotate")
        assert jaccard >= 0.9, seed
        assert _param_error(group, units, params) <= 10.0


# -- the estimators on their own --------------------------------------------------------------

def test_shifted_similarity_recovers_shifts():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 72))
    curves = np.stack([np.roll(base, k, axis=-1) for k in (0, 9, 30)])
    sim, shift = shifted_similarity(curves)
    assert np.allclose(sim, 1.0)
    assert shift[1, 0] == 9 and shift[0, 2] == (72 - 30)


def test_angular_families_with_a_hole_and_shuffled_channels():
    rng = np.random.default_rng(5)
    theta = np.arange(72) * 5.0
    template = np.stack([np.exp(np.cos(np.deg2rad(theta)) * 3), np.cos(np.deg2rad(2 * theta))])
    angles = [0, 45, 90, 180, 225, 270, 315]          # 135 is missing
    curves = [np.roll(template, int(a / 5), -1) + rng.normal(0, 0.05, template.shape) for a in angles]
    curves += [rng.normal(size=template.shape) for _ in range(5)]
    order = rng.permutation(len(curves))
    stacked = np.stack([curves[i] for i in order])
    est = AngularFamilies().fit(stacked, np.ones(len(curves), bool))
    members = [int(np.flatnonzero(order == i)[0]) for i in range(len(angles))]
    noise = [int(np.flatnonzero(order == i)[0]) for i in range(len(angles), len(curves))]
    assert len(set(est.labels_[members])) == 1 and est.labels_[members[0]] >= 0
    assert (est.labels_[noise] == -1).all()
    rel = np.mod(est.params_[members] - est.params_[members[0]], 360)
    assert np.allclose(rel, angles, atol=5)


def test_pair_families_mutual_best_partners():
    m = np.full((4, 4), 0.1)
    np.fill_diagonal(m, 0.2)
    m[0, 2] = m[2, 0] = 0.9
    est = PairFamilies().fit({1.0: m})
    assert est.labels_[0] == est.labels_[2] >= 0
    assert est.params_[0] == 0.0 and est.params_[2] == 1.0
    assert (est.labels_[[1, 3]] == -1).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rotating_best_images_makes_siblings_fire_at_their_angle(planted_runs, seed):
    """The paper's test, on the planted edge family (period 360) and line family (period 180, whose images
    are turned through half a circle only): siblings peak at their planted angle offsets (median within 10
    degrees), and so near the recovered params (each of which is itself an estimate, on a 5 degree grid:
    median within 15; in seed 2 a tie between equal line and grating curves 180 degrees apart moves the
    recovered params and this median from 10 to 12.5 while the peaks stay where they were)."""
    run, truth = planted_runs[seed]
    for kind, period in (("edges", 360.0), ("lines", 180.0)):
        units, angles = truth.families["conv1"][kind][:2]
        planted_angle = dict(zip(units, angles))
        sw = run.sweeps[(run.sweeps["layer"] == "relu1") & (run.sweeps["transform"] == "rotate")]
        sw = sw[sw["driver"].isin(units) & sw["member"].isin(units)]
        assert sw["angle"].max() < period, kind
        sw = sw.drop_duplicates(["driver", "member"])
        assert len(sw) >= len(units) * (len(units) - 1), kind
        offset = np.array([planted_angle[v] - planted_angle[u] for u, v in zip(sw["driver"], sw["member"])])
        assert np.median(circular_distance(sw["peak_angle"].to_numpy(), offset, period)) <= 10.0, kind
        assert sw["error"].median() <= 15.0, kind


def test_transform_maps_see_a_permutation_in_the_group_convolution_layer(planted_runs):
    run, _ = planted_runs[0]
    m = run.maps[(run.maps["layer"] == "relu2") & (run.maps["transform"] == "rotate")]
    half_turn = m[m["amount"] == 180.0].iloc[0]      # a symmetry of the planted family whatever its size
    assert half_turn["r2"] > 0.8 and half_turn["permutation"] > half_turn["identity"] + 0.3


def test_transform_evidence_reads_the_reverse_direction_at_minus_a():
    """For "v is u moved by a", the reverse evidence is score_{-a}(v, u), not score_a(v, u)."""
    from equivar_core.families import transform_evidence

    c = 2
    scores = {90.0: np.zeros((c, c)), 270.0: np.zeros((c, c))}
    scores[90.0][1, 0] = 0.9          # the wrong direction: v on the 90-degree images looks like u
    scores[270.0][1, 0] = 0.3         # the right one
    shift = np.array([[0.0, -90.0], [90.0, 0.0]])          # r_u(theta - 90) = r_v(theta): v is u moved by 90
    evidence, _ = transform_evidence(shift, np.arange(c), scores, 20.0)
    assert evidence[0, 1] == pytest.approx(0.3)


def _agreement_by_loops(labels, params, periods, pair_scores, tolerance, identity, max_plain_correlation,
                        score_tie):
    """partner_agreement written as its docstring reads, one member, sweep amount and place at a time."""
    c = len(labels)
    amounts = sorted(pair_scores)
    hits, counts = np.zeros(c), np.zeros(c)
    for f, period in periods.items():
        members = np.flatnonzero(labels == f)
        for u in members:
            for a in amounts:
                places = []                    # (member, signed offset of its place from param(u) + a, place)
                for v in members:
                    for k in range(int(round(360.0 / period))):
                        d = (params[v] - params[u] + k * period) % 360.0
                        places.append((v, (d - a + 180.0) % 360.0 - 180.0, d))
                v1, s1, d1 = min(places, key=lambda x: abs(x[1]))          # the first of equally near ones
                if abs(s1) > tolerance:
                    continue
                counts[u] += 1
                candidates = [v1]
                opposite = [x for x in places if s1 != 0 and np.sign(x[1]) == -np.sign(s1)]
                if opposite and abs(s1) > min(circular_distance(d1, b, 360.0) for b in amounts) + 1e-9:
                    candidates.append(min(opposite, key=lambda x: abs(x[1]))[0])
                best = int(np.argmax(pair_scores[a][u]))
                hits[u] += any(pair_scores[a][u, v] >= pair_scores[a][u, best] - score_tie or (
                    identity is not None and identity[best, v] >= max_plain_correlation) for v in candidates)
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


@pytest.mark.parametrize("seed", range(6))
def test_partner_agreement_equals_the_loops(seed):
    """The vectorized partner_agreement equals the loops on random scores, families of periods 360, 180 and
    90 with uneven params (on a 15-degree grid in odd seeds) and units in no family; ``best`` given or not."""
    from equivar_core.families import partner_agreement

    rng = np.random.default_rng(seed)
    c = 40
    labels = rng.integers(-1, 3, c)
    periods = {0: 360.0, 1: 180.0, 2: 90.0}
    params = np.where(labels >= 0, rng.uniform(0, 1, c) * np.array([periods.get(f, 1.0) for f in labels]), np.nan)
    if seed % 2:                                    # places on a 15-degree grid: some lie halfway between amounts
        params = np.round(params / 15.0) * 15.0
    amounts = [float(a) for a in range(30, 360, 30)]
    # scores that favour each unit's own family often, so that hits and misses both occur
    same = (labels[:, None] == labels[None]) & (labels[:, None] >= 0)
    pair_scores = {a: rng.uniform(-1, 1, (c, c)) + 0.6 * same * rng.uniform(0, 1, (c, c)) for a in amounts}
    identity = rng.uniform(-1, 1, (c, c))
    identity = (identity + identity.T) / 2
    for ident, max_corr, tie in ((None, 1.0, 0.02), (identity, 0.7, 0.02), (identity, 0.5, 0.1)):
        expected = _agreement_by_loops(labels, params, periods, pair_scores, 20.0, ident, max_corr, tie)
        assert np.isnan(expected[labels < 0]).all() and 0 < np.nanmean(expected) < 1
        families, evidence = Assignment(labels, params, periods), Evidence(pair_scores, ident)
        got = partner_agreement(families, evidence, 20.0, max_corr, tie)
        np.testing.assert_allclose(got, expected, equal_nan=True)
        best = {a: np.argmax(m, axis=1) for a, m in pair_scores.items()}
        got = partner_agreement(families, evidence, 20.0, max_corr, tie, best=best)
        np.testing.assert_allclose(got, expected, equal_nan=True)
    assert np.isnan(partner_agreement(Assignment(labels, params, periods), Evidence({}), 20.0)).all()


def test_standardized_curves_keep_noise_out_where_amplitude_weighting_lets_it_in(planted_runs):
    """Why tuning curves are standardized before the shifted similarity (issue 10 asked to weigh them by
    tuning strength instead): weighing each stimulus by its amplitude lets smooth noise filters that share
    one strong curve into families; standardized curves keep them out."""
    from equivar_core import stages
    from equivar_core.settings import FamilySettings

    counts = {}
    for weighting in ("standardized", "amplitude"):
        n_in = 0
        for run, truth in planted_runs.values():
            s = run.settings
            s = type(s)(**{**s.__dict__, "families": FamilySettings(curve_weighting=weighting)})
            f = stages.family_table(s, run.tuning, run.profiles, run.layers)
            f = f[(f["layer"] == "relu1") & f["transform"].isin(["rotate", "hue"])]
            n_in += len(set(truth.noise_units["conv1"]) & set(f["unit"]))
        counts[weighting] = n_in
    assert counts["standardized"] == 0 and counts["amplitude"] > counts["standardized"], counts


def test_place_variants_keep_one_copy_per_place_and_the_best_matching_one():
    """Members at one place (chained within min_gap, across the wrap of the circle too): the one whose
    invariant curves agree best with the rest is the copy (variant 0), the others variants 1, 2."""
    from equivar_core.families import place_variants

    params = np.array([0.0, 90.0, 180.0, 270.0, 355.0, 92.0])
    invariant = np.full((6, 6), 0.9)
    invariant[4, :] = invariant[:, 4] = 0.95        # unit 4 agrees better than unit 0 at the place 355..0
    invariant[5, :] = invariant[:, 5] = 0.6         # unit 5 worse than unit 1 at the place 90..92
    np.fill_diagonal(invariant, 1.0)
    assert place_variants(params, 360.0, invariant, 10.0).tolist() == [1, 0, 0, 0, 0, 1]
    assert place_variants(params[:4], 360.0, invariant[:4, :4], 10.0).tolist() == [0, 0, 0, 0]


def test_one_feature_at_two_spatial_frequencies_is_two_sibling_families(two_band_runs):
    """Lines planted at two scales, at interleaved angles (15 degrees apart), are two families, each whole,
    named each other's ``frequency`` sibling, the finer one with the higher frequency index; without
    the band split they are one 12-member family. The edges, one band, stay one family with no sibling."""
    for seed, (run, truth) in two_band_runs.items():
        found = run.families[run.families["layer"] == "relu1"]
        ids = {}
        for name in ("lines", "fine_lines", "edges"):
            units, params, _ = truth.families["conv1"][name]
            jaccard, group = _best_match(found, units, "rotate")
            assert jaccard >= 0.9, (seed, name, jaccard)
            assert _param_error(group, units, params) <= 10.0, (seed, name)
            ids[name] = group
        coarse, fine = ids["lines"], ids["fine_lines"]
        assert (coarse["relation"] == "frequency").all() and (fine["relation"] == "frequency").all(), seed
        assert set(coarse["sibling"]) == {int(fine["family"].iloc[0])}, seed
        assert set(fine["sibling"]) == {int(coarse["family"].iloc[0])}, seed
        assert fine["frequency_index"].min() > coarse["frequency_index"].max(), seed
        assert ids["edges"]["relation"].isna().all() and (ids["edges"]["sibling"] == -1).all(), seed


def test_split_bands_cuts_only_a_clear_gap():
    """Two clusters of frequency index split; an even spread of the same range, a gap inside noisy sides, or a
    side without angular spread does not."""
    params = np.arange(8) * 22.5
    labels, periods = np.zeros(8, int), {0: 180.0}
    two = np.array([-0.3, 0.3] * 4) + np.linspace(0, 0.02, 8)
    split, new = split_bands(labels, params, periods, two, 0.3, 20.0)
    assert len(new) == 2 and set(split[::2]) != set(split[1::2])
    for bands in (np.linspace(-0.3, 0.3, 8),                                  # a continuum
                  np.array([-0.6, -0.2, 0.25, 0.6] * 2),                        # gap 0.45 < twice a side's range
                  np.array([-0.3] * 7 + [0.3])):                               # one member on a side
        split, new = split_bands(labels, params, periods, bands, 0.3, 20.0)
        assert len(new) == 1 and (split == 0).all(), bands
    near = np.array([-0.3, -0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])               # the -0.3 side spans 22.5 deg
    assert len(split_bands(labels, params, periods, near, 0.3, 30.0)[1]) == 1


def test_relate_families_names_siblings_by_what_differs():
    """Two families with the same curves are siblings: ``frequency`` when their bands differ, ``fragment``
    otherwise; a family with other curves, or another period, has no sibling."""
    rng = np.random.default_rng(0)
    theta = np.deg2rad(np.arange(72) * 5.0)
    line = np.cos(2 * theta) ** 8
    blob = np.exp(np.cos(theta))
    shifted = [np.roll(line, k) for k in range(0, 72, 6)] + [np.roll(blob, k) for k in range(0, 72, 18)]
    curves = np.stack([np.stack([c, c ** 2]) for c in shifted]) + rng.normal(0, 0.01, (16, 2, 72))
    labels = np.repeat([0, 1, 2], [6, 6, 4])
    periods = {0: 180.0, 1: 180.0, 2: 360.0}
    apart = np.repeat([-0.4, 0.4, 0.0], [6, 6, 4])
    families = Assignment(labels, np.zeros(len(labels)), periods)
    rel = relate_families(curves, families, apart)
    assert rel.sibling == {0: 1, 1: 0} and rel.relation == {0: "frequency", 1: "frequency"}
    assert min(rel.similarity.values()) >= 0.9
    rel = relate_families(curves, families, np.zeros(16))
    assert rel.relation == {0: "fragment", 1: "fragment"}
    periods[2] = 180.0                                      # same period, other curves: still no sibling
    assert 2 not in relate_families(curves, families, apart).sibling
