"""Parquet layout on disk, atomic replacement and the DuckDB catalog."""

import os
import shutil

import pyarrow as pa
import pytest

from equivar_core import storage

from tests.conftest import catalog as _catalog


def _table(layers):
    return pa.table({"model": ["m"] * len(layers), "layer": layers, "unit": list(range(len(layers)))})


def test_hive_layout_and_round_trip(tmp_path):
    root = str(tmp_path)
    paths = storage.write_table(root, "tuning", _table(["a", "b", "b"]), "m", "layer")
    rel = sorted(os.path.relpath(p, root) for p in paths)
    assert rel == ["tuning/model=m/layer=a/data.parquet", "tuning/model=m/layer=b/data.parquet"]
    back = storage.read_table(root, "tuning", "m").to_pandas().sort_values("unit")
    assert list(back["layer"]) == ["a", "b", "b"]


def test_rewrite_replaces_and_drops_stale_partitions(tmp_path):
    root = str(tmp_path)
    storage.write_table(root, "t", _table(["a", "b"]), "m", "layer")
    storage.write_table(root, "t", _table(["a"]), "m", "layer")
    assert not os.path.exists(tmp_path / "t" / "model=m" / "layer=b" / "data.parquet")
    assert len(storage.read_table(root, "t", "m")) == 1
    assert not [f for d, _, fs in os.walk(root) for f in fs if ".tmp-" in f]


def test_catalog_views_are_readable_read_only(tmp_path):
    root = str(tmp_path)
    storage.write_table(root, "families", _table(["a", "b"]), "m", "layer")
    storage.write_table(root, "models", pa.table({"model": ["m"], "spec": ["x"]}), "m", None)
    path, views = storage.build_catalog(root)
    assert sorted(views) == ["families", "models"]
    con = _catalog(path)
    assert con.execute("select count(*) from families").fetchone()[0] == 2
    assert con.execute("select spec from models").fetchone()[0] == "x"
    con.close()


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    root = str(tmp_path)
    storage.write_table(root, "t", _table(["a"]), "m", "layer")
    target = tmp_path / "t" / "model=m" / "layer=a" / "data.parquet"
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(storage.pq, "write_table", boom)
    with pytest.raises(OSError):
        storage.write_table(root, "t", _table(["a", "a"]), "m", "layer")
    assert target.read_bytes() == before
    assert not [f for d, _, fs in os.walk(root) for f in fs if ".tmp-" in f]


def test_writing_a_part_keeps_other_parts_and_drops_the_whole_table_layout(tmp_path):
    root = str(tmp_path)
    old = pa.table({"model": ["m"], "layer": ["a"], "transform": ["rotate"], "x": [0.0]})
    storage.write_table(root, "pairs", old, "m", "layer")                       # before the split
    for t, x in (("rotate", 1.0), ("hue", 2.0)):
        storage.write_table(root, "pairs", pa.table({"model": ["m"], "layer": ["a"], "transform": [t], "x": [x]}),
                            "m", "layer", ("transform", t))
    storage.write_table(root, "pairs", pa.table({"model": ["m"], "layer": ["a"], "transform": ["hue"], "x": [3.0]}),
                        "m", "layer", ("transform", "hue"))
    back = storage.read_table(root, "pairs", "m").to_pandas().sort_values("transform")
    assert list(zip(back["transform"], back["x"])) == [("hue", 3.0), ("rotate", 1.0)]
    only = storage.read_table(root, "pairs", "m", ("transform", "rotate")).to_pandas()
    assert list(only["x"]) == [1.0]


@pytest.fixture
def small_results(tmp_path):
    root = tmp_path / "O"
    storage.write_table(str(root), "families", _table(["a", "b"]), "m", "layer")
    storage.build_catalog(str(root))
    return root


@pytest.mark.parametrize("query, message", [
    ("select 1; select 2", "exactly one statement"),
    ("copy (select 1) to 'x.csv'", "not COPY"),
    ("copy (select * from families limit 0) to 'O/families/model=m/layer=a/data.parquet' (format parquet)", "not COPY"),
    ("select * from read_text('/etc/hostname')", "disabled"),
    ("install httpfs", "not LOAD"),
    ("attach '/tmp/x.duckdb'", "not ATTACH"),
    ("set enable_external_access = true", "not SET"),
    ("drop view families", "not DROP"),
    ("pragma version", "not PRAGMA"),
])
def test_sql_is_one_read_only_statement_over_the_results_folder(small_results, query, message, capsys):
    """`equivar sql` refuses what is not one read-only query over the folder's own files (one line, exit 2),
    and the catalog answers afterwards with the same rows. In this process; the first case also as an
    `equivar` process of its own."""
    from tests.cli_runs import equivar, in_process

    run = (lambda *a: equivar(*a)) if query == "select 1; select 2" else (lambda *a: in_process(capsys, *a))
    r = run("sql", query, "--out", str(small_results))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    ok = run("sql", "select count(*) as n from families", "--out", str(small_results), "--format", "csv")
    assert ok.returncode == 0 and ok.stdout.splitlines()[1] == "2"


def test_moved_and_copied_results_folders_read_their_own_files(small_results, tmp_path):
    """The catalog's paths are relative: a moved folder still answers, a copy answers from its own files."""
    moved = tmp_path / "moved"
    small_results.rename(moved)
    con = storage.open_catalog(str(moved))
    assert con.execute("select count(*) from families").fetchone()[0] == 2
    con.close()
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    storage.write_table(str(moved), "families", _table(["a", "b", "c"]), "m", "layer")   # the original changes
    con = storage.open_catalog(str(copy))
    assert con.execute("select count(*) from families").fetchone()[0] == 2
    con.close()


def test_stage_columns_read_text_as_to_numpy_does():
    """Stages read a table's columns as arrays; text columns are converted value by value once, with the same
    result as ``to_numpy`` (missing values included)."""
    import numpy as np
    import pandas as pd

    from equivar_core.stages.common import _columns

    df = pd.DataFrame({"layer": pd.array(["a", None, "b", "a"], dtype="string"), "unit": [0, 1, 2, 3],
                       "stimulus": pd.Series(["edge", "line", None, "edge"], dtype="str")})
    cols = _columns(df)
    for name in df.columns:
        expected = df[name].to_numpy()
        assert cols[name].dtype == expected.dtype
        assert [str(v) for v in cols[name]] == [str(v) for v in expected]
    assert cols["layer"][1] is pd.NA and np.isnan(cols["stimulus"][2])


@pytest.mark.parametrize("declared", ["family_sweeps", "circuit_families", "families"])
def test_a_model_that_found_nothing_leaves_the_others_readable(tmp_path, declared):
    """An untrained network's run with no family writes its empty tables in the declared column types, so that
    the view over every model of the folder still reads (an empty text column used to be written as float,
    and the trained model's rows beside it became unreadable)."""
    import pandas as pd

    from equivar_core.tables import TABLES
    from pipelines.io_manager import partition_column

    table = TABLES[declared]
    value = {"text": "x", "integer": 1, "float": 0.5, "boolean": True}
    full = table.check(pd.DataFrame({c.name: [value[c.type]] for c in table.columns}))
    empty = pd.DataFrame({c.name: [] for c in table.columns})
    empty = table.check(empty)
    root = str(tmp_path)
    for model, df in (("trained", full.assign(model="trained")), ("untrained", empty)):
        storage.write_table(root, declared, pa.Table.from_pandas(df, preserve_index=False), model,
                            partition_column(df))
    storage.build_catalog(root)
    con = storage.open_catalog(root)
    assert storage.read_only_query(con, f"select model from {declared}")["model"].tolist() == ["trained"]
    con.close()
    # a column with no value in a table with rows gets its declared type too
    text = [c.name for c in table.columns if c.type == "text" and c.name != "model"][-1]
    half = table.check(full.assign(**{text: [None]}))
    assert pa.types.is_large_string(pa.Table.from_pandas(half, preserve_index=False).schema.field(text).type)


def test_an_empty_file_of_older_code_does_not_hide_the_rows_of_others(tmp_path):
    """Results folders written before empty columns kept their types hold empty files whose text columns are
    float: the catalog reads the other models' rows past them (and an all-empty table still reads, empty)."""
    root = str(tmp_path)
    storage.write_table(root, "families", _table(["a", "b"]), "m", "layer")
    storage.write_table(root, "families", pa.table({"model": pa.array([], pa.float64()),
                                                    "layer": pa.array([], pa.float64()),
                                                    "unit": pa.array([], pa.float64())}), "old", "layer")
    storage.write_table(root, "curve_detectors", pa.table({"model": pa.array([], pa.float64())}), "old", None)
    storage.build_catalog(root)
    con = storage.open_catalog(root)
    assert storage.read_only_query(con, "select layer from families order by layer")["layer"].tolist() == ["a", "b"]
    assert len(storage.read_only_query(con, "select * from curve_detectors")) == 0
    con.close()
