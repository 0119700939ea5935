"""Scores from moments summed during the passes equal the scores of the stored samples (their definition in
:mod:`equivar_core.scores`), in the layer's basis and in the random one, for plain, orbit-centred and
cross-layer scores; and keeping fewer samples changes no moment."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from equivar_core import stages
from equivar_core.activations import TOP_IMAGES, TopImages
from equivar_core.basis import random_orthogonal
from equivar_core.moments import StoredMoments
from equivar_core.scores import (ScoreSettings, SampleGrid, TransformedVersion, orbit_centred_scores,
                                 version_scores)
from equivar_core.stages.sampling import located
from equivar_core.transforms import (IDENTITY_LABEL, Transform, label, label_amount, make_transform, parse_label,
                                     version_labels)

#: the stored samples are float16, the moments sum float32 activations: scores agree to about 1e-4
ATOL = 2e-3
#: orbit-centred responses are differences of similar float16 values: about 3e-3
ATOL_CENTRED = 6e-3


def _run(planted_runs):
    run, _ = planted_runs[0]
    # the null pairs images within a forward batch; version_scores pairs them within a chunk of images:
    # with chunks the size of the batches (all images read) the pairings are the same
    assert run.settings.batch_size < run.settings.n_images
    return run, ScoreSettings(chunk_images=run.settings.batch_size)


def test_plain_and_null_scores_from_moments_equal_those_of_the_stored_samples(planted_runs):
    run, score_settings = _run(planted_runs)
    disc = run.settings.sweep.disc_radius
    originals = {r.layer: r for r in located(run.settings, run.manifest).itertuples()}
    checked = 0
    for transform, manifest in run.transformed.items():
        for r in located(run.settings, manifest).itertuples():
            base = originals[r.layer]
            samples, versions = np.load(base.path), np.load(r.path)
            points, images = np.load(base.points_path), np.arange(base.n_images)
            assert r.n_kept == r.n_images == samples.shape[1]
            q = random_orthogonal(r.n_units, run.settings.seed, r.layer)
            moments = StoredMoments(r.moments_path)
            for v, version in enumerate(version_labels(r.versions)):
                g = make_transform(*parse_label(version))
                grid, gx = SampleGrid(points, disc, images), TransformedVersion(v, g, versions)
                want = version_scores(samples, gx, grid, score_settings)
                got = moments.scores(version)
                for w, m in zip(want, got):
                    np.testing.assert_allclose(m, w, atol=ATOL)
                mixed = version_scores(samples, gx, grid, score_settings, mix=q)
                np.testing.assert_allclose(moments.scores(version, mixed=True)[0], mixed[0], atol=ATOL)
                assert not np.allclose(mixed[0], want[0], atol=0.05)         # the random basis is another one
                checked += 1
        identity = StoredMoments(originals[r.layer].moments_path).scores(IDENTITY_LABEL)[0]
        np.testing.assert_allclose(identity, version_scores(np.load(originals[r.layer].path), TransformedVersion(
            0, Transform(0.0)), SampleGrid(points, disc, images), score_settings)[0], atol=ATOL)
    assert checked >= 2 * (11 + 1 + 11 + 2)


def test_orbit_centred_scores_from_moments_equal_those_of_the_stored_samples(planted_runs):
    run, score_settings = _run(planted_runs)
    originals = {r.layer: r for r in located(run.settings, run.manifest).itertuples()}
    for r in located(run.settings, run.transformed["hue"]).itertuples():
        samples, versions = np.load(originals[r.layer].path), np.load(r.path)
        amounts = [label_amount(v) for v in version_labels(r.versions)]
        images = np.arange(r.n_images)
        q = random_orthogonal(r.n_units, run.settings.seed, r.layer)
        for mixed, mix in ((False, None), (True, q)):
            moments = StoredMoments(r.moments_path)
            identity, centred = moments.centred(mixed)
            want_identity, want = orbit_centred_scores(samples, versions, amounts, images, score_settings, mix=mix)
            np.testing.assert_allclose(identity, want_identity, atol=ATOL_CENTRED)
            assert sorted(centred) == sorted(want)
            for a in want:
                np.testing.assert_allclose(centred[a], want[a], atol=ATOL_CENTRED)
                # the tolerance tells centred scores from plain ones
                assert np.abs(moments.scores(label("hue", a), mixed)[0] - want[a]).max() > 0.05
    for r in located(run.settings, run.transformed["rotate"]).itertuples():
        assert StoredMoments(r.moments_path).centred() is None          # spatial: no orbit centring


def test_scale_pair_scores_from_moments_equal_cross_layer_scores_of_the_stored_samples(planted_runs):
    run, score_settings = _run(planted_runs)
    disc = run.settings.sweep.disc_radius
    small, large = located(run.settings, run.manifest).sort_values("depth").itertuples()
    zoomed = {r.layer: r for r in located(run.settings, run.transformed["scale"]).itertuples()}
    moments = StoredMoments(zoomed[large.layer].moments_path)
    assert moments.cross(large.layer, "scale:2") is None            # only earlier layers
    sa, sb = np.load(small.path), np.load(zoomed[large.layer].path)
    for v, version in enumerate(version_labels(zoomed[large.layer].versions)):
        want = version_scores(sa, TransformedVersion(v, make_transform(*parse_label(version)), sb),
                              SampleGrid(np.load(small.points_path), disc, np.arange(small.n_images)), score_settings)
        for w, m in zip(want, moments.cross(small.layer, version)):
            np.testing.assert_allclose(m, w, atol=ATOL)


@pytest.mark.parametrize("keep", [0, 5])
def test_keeping_fewer_samples_changes_no_moment(planted_runs, tmp_path, keep):
    run, _ = planted_runs[0]
    settings = dataclasses.replace(run.settings, out=str(tmp_path), keep_samples=keep)
    manifest = stages.transformed_activations(settings, run.images, run.layers, "hue")
    full = {r.layer: r for r in located(run.settings, run.transformed["hue"]).itertuples()}
    for r in located(settings, manifest).itertuples():
        assert r.n_kept == keep and r.n_images == full[r.layer].n_images
        kept, everything = np.load(r.path), np.load(full[r.layer].path)
        assert kept.shape == (everything.shape[0], keep, *everything.shape[2:])
        np.testing.assert_array_equal(kept, everything[:, :keep])
        with np.load(r.moments_path) as a, np.load(full[r.layer].moments_path) as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_top_images_merged_in_any_batches_equal_the_full_ranking():
    """Each unit's K strongest images, merged batch by batch or shard by shard in any split, equal the ranking
    of the full N x C matrix of maxima (ties to the lower image index; empty slots when N < K)."""
    rng = np.random.default_rng(0)
    n, c = 50, 7
    value = rng.integers(0, 6, (n, c)).astype(np.float32)      # many ties
    position = rng.integers(0, 100, (n, c))
    order = np.lexsort((np.broadcast_to(np.arange(n)[:, None], (n, c)), -value), axis=0)  # N x C, best first
    for k, splits in ((TOP_IMAGES, (0, 3, 4, 20, 21, 50)), (5, (0, 1, 2, 50)), (TOP_IMAGES, (0, 50))):
        top = TopImages.empty(c, k)
        for a, b in zip(splits[:-1], splits[1:]):
            rows = np.arange(a, b)
            top = top.merge(TopImages(value[rows].T, np.broadcast_to(rows[None], (c, len(rows))), position[rows].T))
        np.testing.assert_array_equal(top.image, order[:k].T)
        np.testing.assert_array_equal(top.value, np.take_along_axis(value, order[:k], 0).T)
        np.testing.assert_array_equal(top.position, np.take_along_axis(position, order[:k], 0).T)
        assert top.best(3, 2) == [(int(order[0, 3]), int(position[order[0, 3], 3])),
                                  (int(order[1, 3]), int(position[order[1, 3], 3]))]
    few = TopImages.empty(c).merge(TopImages(value[:3].T, np.broadcast_to(np.arange(3)[None], (c, 3)),
                                             position[:3].T))
    assert (few.image[:, 3:] == -1).all() and len(few.best(0, TOP_IMAGES)) == 3


def test_stored_top_images_are_each_units_strongest_maxima_over_the_whole_map(planted_runs, monkeypatch):
    """The run's ``top_images`` against a direct pass: every image's maximum over the map, ranked."""
    import torch

    from equivar_core import planted
    from equivar_core.capture import capture
    from equivar_core.images import iter_batches
    from equivar_core.stages.common import _views, load

    run, _ = planted_runs[0]
    monkeypatch.setattr(planted, "planted", lambda: planted.planted_model(0, planted.family_sizes(0))[0])
    model, _ = load(run.settings)
    layers = list(run.layers["layer"])
    maxima = {name: [] for name in layers}
    with torch.inference_mode(), capture(model.module, layers, pre_activation=True) as cap:
        for batch in iter_batches(_views(run.images), model.input_size, 5):
            for name, a in cap.run(batch.images).items():
                maxima[name].append(a.float().flatten(2).amax(2))
    for name in layers:
        mx = torch.cat(maxima[name]).numpy()                       # N x C
        top = TopImages.load(run.settings.layout.top_images(name))
        want = np.argsort(-mx, axis=0, kind="stable")[:TOP_IMAGES].T
        np.testing.assert_allclose(top.value, np.take_along_axis(mx, want.T, 0).T, rtol=1e-5, atol=1e-5)
        # each stored image has the stored maximum (where images differ from the ranking, maxima are tied)
        np.testing.assert_allclose(np.take_along_axis(mx, top.image.T, 0).T, top.value, rtol=1e-5, atol=1e-5)
        assert len({tuple(r) for r in np.sort(top.image, 1)}) > 1 and (top.image >= 0).all()
        assert (top.image[:, 0] == run.stats[run.stats["layer"] == name].sort_values("unit")["best_image"].to_numpy()).all()


def test_archive_keys_read_back_what_they_write():
    """Every key of the moment, fold-score and score archives is spelled by equivar_core.archive_keys; its readers
    find what its writers wrote, and nothing else (a null or centred matrix is not a transform score)."""
    from equivar_core import archive_keys as keys

    m = {a: np.full((2, 2), a) for a in (30.0, 60.0)}
    archive = {**keys.identity_arrays(np.eye(2)), **keys.score_arrays("hue:30", m[30.0], -m[30.0]),
               **keys.score_arrays("hue:60", m[60.0], -m[60.0]), **keys.centred_arrays("hue", 2 * np.eye(2), m)}
    assert sorted(archive) == sorted(["identity:0", "hue:30", "hue:30:null", "hue:60", "hue:60:null",
                                      "centred-identity:hue", "hue:30:centred", "hue:60:centred"])
    assert list(keys.plain_scores(archive, "hue")) == [30.0, 60.0] and keys.plain_scores(archive, "rotate") == {}
    by_amount, identity = keys.centred_scores(archive, "hue")
    assert by_amount.keys() == m.keys() and (identity == 2 * np.eye(2)).all()
    assert keys.centred_scores(archive, "rotate") is None and (keys.identity_scores(archive) == np.eye(2)).all()
    pairing = keys.moments_key(keys.CROSS, "scale:2", "relu1")
    assert pairing == "cross|relu1|scale:2" and keys.parse_moments_key(pairing) == (keys.CROSS, "scale:2")
    assert keys.pairing_of(keys.field_key(pairing, "sum0")) == pairing
    folds = {keys.moments_key(keys.CENTRED, g): i for i, g in enumerate([IDENTITY_LABEL, "hue:30", "hue:60"])}
    assert keys.versions_of(folds, keys.CENTRED, "hue") == {30.0: 1, 60.0: 2}
    assert keys.versions_of(folds, keys.PLAIN, "hue") == {}
    with pytest.raises(ValueError):
        keys.moments_key(keys.PLAIN, "hue:30", "relu1")
