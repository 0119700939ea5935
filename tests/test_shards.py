"""Image shards as Ray tasks (`equivar run --workers N`): results must not depend on the sharding."""

import os

import numpy as np
import pandas as pd
import pytest

from equivar_core.activations import shard_views
from equivar_core.images import ImageView
from tests.conftest import catalog
from tests.cli_runs import equivar, in_process

RUN = ["--model", "equivar_core.planted:planted", "--layers", "relu1,relu2", "--n-images", "12", "--batch-size", "4",
       "--no-report"]


def test_shards_are_whole_batches_in_image_order():
    views = [ImageView(i, f"{i}.png") for i in range(50)]
    shards = shard_views(views, 8, n_shards=3)
    assert [len(s) for s in shards] == [24, 24, 2]
    assert [v.index for s in shards for v in s] == list(range(50))
    assert all(len(s) % 8 == 0 for s in shards[:-1])


def _tables(out: str) -> dict[str, pd.DataFrame]:
    con = catalog(os.path.join(out, "equivar.duckdb"))
    views = [v for (v,) in con.execute("select view_name from duckdb_views() where not internal").fetchall()]
    tables = {v: con.execute(f'select * from "{v}" order by all').df() for v in views}
    con.close()
    return tables


def test_three_ray_workers_give_the_tables_of_one_process(tmp_path, capsys):
    """The planted model on 12 images in 4-image batches: 1 process (this one) vs 3 Ray tasks of 4 images each (every
    sweep group: identity, rotate, hflip, hue, scale). Scores within 1e-5 (the folds' within float16 rounding),
    every table equal (floats to 1e-6: the statistics' float64 sums are added in another order)."""
    pytest.importorskip("ray")
    outs = {}
    for workers in (1, 3):
        outs[workers] = str(tmp_path / f"w{workers}")
        command = ["run", "--out", outs[workers], *RUN, "--workers", str(workers)]
        # its own HOME: the local Ray cluster keeps its session token under ~/.ray, which must not leak into
        # other tests' clusters
        r = equivar(*command, HOME=str(tmp_path)) if workers > 1 else in_process(capsys, *command)
        assert r.returncode == 0, r.stderr[-3000:]
        assert ("identity passes: 3 shards (4 + 4 + 4 images) as Ray tasks" in r.stderr) == (workers == 3)
    scores = os.path.join("_artifacts", "model=planted", "scores")
    for name in sorted(os.listdir(os.path.join(outs[1], scores))):
        with np.load(os.path.join(outs[1], scores, name)) as a, np.load(os.path.join(outs[3], scores, name)) as b:
            assert set(a.files) == set(b.files)
            for k in a.files:
                assert np.allclose(a[k], b[k], atol=1e-5), (name, k)
    activations = os.path.join("_artifacts", "model=planted", "activations")
    folds = sorted(f for f in os.listdir(os.path.join(outs[1], activations)) if f.endswith(".folds.npz"))
    assert len(folds) == 2 * 5                     # each layer's fold scores of every sweep group
    for name in folds:                             # the folds' sums add across shards too (stored in float16)
        with np.load(os.path.join(outs[1], activations, name)) as a, \
                np.load(os.path.join(outs[3], activations, name)) as b:
            assert set(a.files) == set(b.files)
            for k in a.files:
                assert np.allclose(a[k], b[k], atol=2e-3), (name, k)
    one, three = _tables(outs[1]), _tables(outs[3])
    assert set(one) == set(three)
    for table in one:
        a, b = one[table], three[table]
        assert list(a.columns) == list(b.columns) and len(a) == len(b), table
        for col in a.columns:
            if pd.api.types.is_float_dtype(a[col]):
                # activations are float32 and a shard's batches hold other images, so convolutions may round
                # differently: derived statistics agree to about 3e-5 (transform_maps), not to 1e-6
                assert np.allclose(a[col], b[col], atol=1e-4, equal_nan=True), (table, col)
            else:
                text_a, text_b = (t[col].astype(object).fillna("<null>").astype(str).tolist() for t in (a, b))
                assert text_a == text_b, (table, col)
