"""The command line: a real run, queries, and one clear line for bad input with nothing damaged."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from equivar_core.archive_keys import PLAIN, field_key, moments_key
from equivar_core.transforms import IDENTITY_LABEL

from .conftest import ROOT, SHARED_IMAGES

from tests.conftest import catalog as _catalog
from tests.cli_runs import equivar, in_process


def _digest(out):
    h = hashlib.sha256()
    for d, _, fs in sorted(os.walk(out)):
        for f in sorted(fs):
            if f.endswith((".parquet", ".duckdb")):
                h.update(open(os.path.join(d, f), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default model end to end, kept small: two layers, four images."""
    out = str(tmp_path_factory.mktemp("cli"))
    r = equivar("run", "--out", out, "--n-images", "4", "--layers", "_act0,_blocks.0")
    assert r.returncode == 0, r.stderr
    return out, r


def test_default_model_run_fills_every_table(default_run, capsys):
    out, r = default_run
    assert "materializing duckdb_catalog" in r.stderr          # progress on the terminal
    q = equivar("sql", "select count(*) as n from transform_pairs", "--out", out, "--format", "json")
    assert q.returncode == 0 and json.loads(q.stdout)[0]["n"] > 0
    for table in ("models", "layers", "tuning", "unit_profiles", "transform_pairs", "circuit_weights"):
        q = in_process(capsys, "sql", f"select count(*) from {table}", "--out", out, "--format", "csv")
        assert int(q.stdout.splitlines()[1]) > 0, table


def test_sql_table_output_and_read_only(default_run, capsys):
    out, _ = default_run
    q = in_process(capsys, "sql", "select layer, count(*) as n from tuning group by 1 order by 1", "--out", out)
    assert q.returncode == 0 and "_act0" in q.stdout and "_blocks.0" in q.stdout
    bad = equivar("sql", "drop view tuning", "--out", out)
    assert bad.returncode == 2 and "read-only" in bad.stderr


def test_models_lists_builtins():
    r = equivar("models")
    assert r.returncode == 0 and "efficientnet_lite0" in r.stdout and "inceptionv1" in r.stdout


def _bad_weights(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"garbage" * 100)
    wrong = tmp_path / "wrong.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1)}, wrong)
    return corrupt, wrong


def test_bad_input_is_one_line_exit_2_and_damages_nothing(default_run, tmp_path, capsys):
    """Each case in this process (the first also as an `equivar` process of its own)."""
    out, _ = default_run
    before = _digest(out)
    corrupt, wrong = _bad_weights(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--model", "resnet9000"], "unknown model"),
        (["--layers", "_act0,nope"], "unknown layer"),
        (["--weights", str(tmp_path / "missing.pth")], "not found"),
        (["--weights", str(corrupt)], "cannot read weights"),
        (["--weights", str(wrong)], "does not fit"),
        (["--images", str(tmp_path / "empty")], "no images found"),
    ]
    for i, (args, message) in enumerate(cases):
        for r in ([equivar("run", "--out", out, *args)] if i == 0 else []) + [in_process(capsys, "run", "--out", out,
                                                                                          *args)]:
            assert r.returncode == 2, (args, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, (args, r.stderr)
    r = in_process(capsys, "run", "--out", str(tmp_path / "afile" / "sub"))
    assert r.returncode == 2 and "cannot write" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert _digest(out) == before


def test_sql_without_results(tmp_path):
    r = equivar("sql", "select 1", "--out", str(tmp_path))
    assert r.returncode == 2 and "equivar run" in r.stderr


@pytest.mark.skipif(not os.path.isdir(SHARED_IMAGES), reason="shared ImageNet sample not present")
def test_imagenet_sample_as_images(tmp_path, capsys):
    r = in_process(capsys, "run", "--out", str(tmp_path), "--images", SHARED_IMAGES, "--n-images", "3", "--layers", "_act0",
                "--quiet")
    assert r.returncode == 0, r.stderr
    q = in_process(capsys, "sql", "select count(*) from images", "--out", str(tmp_path), "--format", "csv")
    assert q.stdout.splitlines()[1] == "3"


def test_keep_samples_bounds_the_stored_samples_not_the_scored_images(tmp_path, capsys):
    r = in_process(capsys, "run", "--out", str(tmp_path), "--images", SHARED_IMAGES, "--n-images", "3", "--layers", "_act0",
                "--keep-samples", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    q = in_process(capsys, "sql", "select \"group\", n_images, n_kept, n_loaded, path, moments_path from transformed_samples "
                "union all select \"group\", n_images, n_kept, n_loaded, path, moments_path from activation_samples",
                "--out", str(tmp_path), "--format", "json")
    rows = json.loads(q.stdout)
    assert len(rows) == 5
    for row in rows:
        assert (row["n_images"], row["n_kept"], row["n_loaded"]) == (3, 1, 3)
        shape = np.load(os.path.join(tmp_path, row["path"]), mmap_mode="r").shape
        assert shape[1] == 1
        if row["group"] == "identity":          # the moments saw all three images at every point
            with np.load(os.path.join(tmp_path, row["moments_path"])) as z:
                assert int(z[field_key(moments_key(PLAIN, IDENTITY_LABEL), "n")]) == 3 * shape[2]
    bad = in_process(capsys, "run", "--out", str(tmp_path), "--keep-samples", "-1")
    assert bad.returncode == 2 and "--keep-samples: must be at least 0" in bad.stderr


def test_unchanged_rerun_recomputes_nothing(default_run, capsys):
    out, _ = default_run
    before = _digest(out)
    r = equivar("run", "--out", out, "--n-images", "4", "--layers", "_act0,_blocks.0")
    assert r.returncode == 0 and "nothing changed" in r.stdout
    assert _digest(out) == before
    r = in_process(capsys, "run", "--out", out, "--n-images", "4", "--layers", "_act0")   # a layer less: recompute
    assert r.returncode == 0 and "done:" in r.stdout


def test_blocking_check_stops_nan_activations(tmp_path, capsys):
    r = in_process(capsys, "run", "--model", "tests.models_for_tests:nan_net", "--out", str(tmp_path), "--n-images", "4",
                "--layers", "conv", "--quiet")
    assert r.returncode == 1
    assert "check activations_are_finite failed on unit_stats" in r.stderr
    assert not (tmp_path / "tuning").exists() and not (tmp_path / "families").exists()


def test_killed_run_then_rerun_equals_a_clean_run(tmp_path, capsys):
    """SIGKILL in the middle, then run again: the tables equal those of an uninterrupted run. (The killed run
    is an `equivar` process; the re-run and the uninterrupted run are in this process.)"""
    import signal

    args = ["run", "--model", "equivar_core.planted:planted", "--layers", "relu1,relu2", "--n-images", "24",
            "--no-report"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args, "--out", str(killed)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if "materializing unit_profiles" in line:          # tables are being written: stop it hard
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert in_process(capsys, *args, "--out", str(killed), "--quiet").returncode == 0
    clean = tmp_path / "clean"
    assert in_process(capsys, *args, "--out", str(clean), "--quiet").returncode == 0
    for table in ("tuning", "transform_pairs", "families", "circuit_weights", "circuit_families"):
        a = _catalog(str(killed / "equivar.duckdb")).execute(
            f"select * exclude (model) from {table} order by all").df()
        b = _catalog(str(clean / "equivar.duckdb")).execute(
            f"select * exclude (model) from {table} order by all").df()
        num = [c for c in a.columns if a[c].dtype.kind in "fiub" or str(a[c].dtype) in ("Int64", "boolean")]
        assert a.shape == b.shape and list(a.columns) == list(b.columns), table
        assert np.allclose(a[num].astype(float).fillna(-9), b[num].astype(float).fillna(-9), atol=1e-5), table
        text_a, text_b = (t.drop(columns=num).astype(object).fillna("<null>").astype(str) for t in (a, b))
        assert text_a.equals(text_b), table
    assert not [f for d, _, fs in os.walk(killed) for f in fs if ".tmp-" in f and not d.endswith("_artifacts")]
    # --no-report: no report; the next run without it writes the report alone (every table is current)
    index = clean / "report" / "planted" / "index.html"
    assert not index.exists()
    r = in_process(capsys, *args[:-1], "--out", str(clean))
    ran = {line.split("materializing ", 1)[1].strip() for line in r.stderr.splitlines() if "materializing " in line}
    assert r.returncode == 0 and ran == {"report", "duckdb_catalog"} and index.exists(), r.stderr
    # a run that changes tables without the report removes the report of the old tables
    r = in_process(capsys, *args, "--out", str(clean), "--set", "circuits.max_radius=11", "--quiet")
    assert r.returncode == 0 and not index.exists() and index.parent.exists()


def test_models_add_registers_a_checkpoint_and_refuses_a_broken_one(tmp_path, capsys):
    import torch

    from equivar_core.model_index import registered
    from equivar_core.planted import family_sizes, planted_model
    from pipelines.cli import main

    good, bad = tmp_path / "step_40.pt", tmp_path / "broken.pt"
    torch.save(planted_model(1, family_sizes(0))[0].state_dict(), good)
    bad.write_bytes(b"\x00 truncated")
    out = str(tmp_path / "out")
    spec = "equivar_core.planted:planted"
    assert main(["models", "add", "planted@step_40", "--model", spec, "--weights", str(good), "--step", "40",
                 "--out", out]) == 0
    assert main(["models", "add", "broken", "--model", spec, "--weights", str(bad), "--out", out]) == 2
    assert "broken.pt" in capsys.readouterr().err
    assert [(e.name, e.step, e.weights) for e in registered(out)] == [("planted@step_40", 40, str(good))]
    assert main(["models", "--out", out]) == 0
    assert "planted@step_40  model=equivar_core.planted:planted" in capsys.readouterr().out
