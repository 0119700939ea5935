"""The vectorized transform scores against a slow, obviously correct reference."""

import numpy as np
import pytest
import torch

from equivar_core.scores import (DEAD_UNIT_SHARE, SampleGrid, TransformedVersion, pearson_cross, top_pairs,
                                 version_scores)
from equivar_core.transforms import Rotate, disc_points


def test_streamed_gemm_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5))
    b = a[:, [2, 0, 1, 4, 3]] * 2 + rng.normal(size=(300, 5)) * 0.3
    fast = pearson_cross((a[i:i + 70] for i in range(0, 300, 70)), (b[i:i + 70] for i in range(0, 300, 70)))
    slow = np.array([[np.corrcoef(a[:, u], b[:, v])[0, 1] for v in range(5)] for u in range(5)])
    assert np.allclose(fast, slow, atol=1e-5)


def test_dead_units_score_nothing_even_as_an_exact_mirror_pair():
    """Units that barely vary (EfficientNet-Lite's late layers have a few, constant but for a faint pattern they
    share) are paired with nothing: a faint exact mirror pair among live units scores 0, the live pair 1."""
    rng = np.random.default_rng(2)
    n, side = 40, 9
    live = rng.normal(size=(n, side, side, 4)) * rng.uniform(0.5, 2.0, 4)       # unequal scales
    faint = rng.normal(size=(n, side, side))
    units = np.concatenate([live, 3.0 + 3e-4 * faint[..., None], -1.0 + 5e-4 * faint[..., None]], -1)
    # each unit's partner on the mirrored images, read at the mirrored points: 0 <-> 1 live, 4 <-> 5 faint
    a, b = units.reshape(-1, 6), units[..., [1, 0, 2, 3, 5, 4]].reshape(-1, 6)
    score = pearson_cross([a], [b])
    assert score[0, 1] == pytest.approx(1.0) and score[1, 0] == pytest.approx(1.0)
    assert score[4, 5] == 0 and score[5, 4] == 0 and not score[4:].any() and not score[:, 4:].any()
    # just above the line, a faint unit is still scored
    scale = DEAD_UNIT_SHARE * np.median(a[:, :4].std(0)) * 1.5
    a[:, 4] = 3.0 + scale * faint.reshape(-1)
    assert pearson_cross([a], [a])[4, 4] == pytest.approx(1.0)


def test_version_scores_find_a_planted_permutation_and_the_null_does_not():
    rng = np.random.default_rng(1)
    n, c = 20, 6
    pts = disc_points(8, 8, 0.6, 100).numpy()
    base = rng.normal(size=(n, len(pts), c)).astype(np.float32)
    perm = np.array([3, 5, 0, 1, 2, 4])
    samples = np.stack([base, base[:, :, np.argsort(perm)]])   # version 1: unit u shows up as unit perm[u]
    score, null = version_scores(samples, TransformedVersion(1, Rotate(90)), SampleGrid(pts, 0.6, np.arange(n)))
    assert (score.argmax(1) == perm).all()
    assert np.allclose(score[np.arange(c), perm], 1.0, atol=1e-3)
    assert np.abs(null).max() < 0.3
    rows = top_pairs(score, null, 3)
    firsts = rows["partner"][rows["rank"] == 1]
    assert (firsts == perm).all()
    assert (rows["partner"][rows["rank"] == 0] == np.arange(c)).all()


def test_scores_only_count_points_inside_the_disc():
    pts = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.9, 0.0]]).numpy()
    samples = np.zeros((2, 4, 3, 1), np.float32)
    samples[0, :, :2, 0] = np.arange(8).reshape(4, 2)
    samples[1, :, :2, 0] = np.arange(8).reshape(4, 2)
    samples[1, :, 2, 0] = 1000.0                               # garbage outside the disc
    score, _ = version_scores(samples, TransformedVersion(1, Rotate(30)), SampleGrid(pts, 0.6, np.arange(4)))
    assert np.isclose(score[0, 0], 1.0)


def test_cross_layer_scale_pairs_find_the_same_edge_twice_as_large(tmp_path):
    from equivar_core import stages
    from equivar_core.settings import RunSettings

    s = RunSettings(model="tests.models_for_tests:two_scales", layers=("small", "large"), n_images=16,
                    out=str(tmp_path))
    layers = stages.layer_table(s)
    images = stages.image_table(s)
    _, manifest = stages.natural_activations(s, images, layers)
    pairs = stages.scale_pair_table(s, manifest, stages.transformed_activations(s, images, layers, "scale"))
    best = pairs[(pairs["scale"] == 2.0) & (pairs["rank"] == 1)].sort_values("small_unit")
    assert list(best["large_unit"]) == [0, 1, 2, 3]
    assert best["mutual"].all() and (best["score"] > 0.8).all()
    at15 = pairs[(pairs["scale"] == 1.5) & (pairs["rank"] == 1)]
    assert (at15["score"].to_numpy() < best["score"].to_numpy()).all()


def test_bf16_products_stay_within_0_01_of_float32():
    """The accuracy check behind bf16 scores on CUDA (here on the CPU, which also has bf16 GEMMs)."""
    from equivar_core.scores import ScoreSettings

    rng = np.random.default_rng(3)
    n, p, c = 64, 50, 32
    base = rng.normal(size=(n, p, c))
    mix = rng.normal(size=(c, c)) * 0.3 + np.eye(c)
    samples = np.stack([base, base @ mix + rng.normal(size=(n, p, c)) * 0.5]).astype(np.float16)
    pts = np.zeros((p, 2))
    gx, grid = TransformedVersion(1, Rotate(90)), SampleGrid(pts, 0.6, np.arange(n))
    exact, _ = version_scores(samples, gx, grid, ScoreSettings(bf16="off"))
    fast, _ = version_scores(samples, gx, grid, ScoreSettings(bf16="on"))
    assert np.abs(exact).max() > 0.5                      # real correlations, not just noise
    assert np.abs(fast - exact).max() < 0.01
