"""`equivar sql` cannot write anywhere: hostile statements change no file, and its output says what it could
not represent. Every case runs the CLI in-process on a tiny results folder made without the pipeline."""

import hashlib
import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from equivar_core import storage
from pipelines.cli import main

from tests.conftest import ROOT


def _results(root) -> str:
    root = str(root)
    storage.write_table(root, "families", pa.table({"model": ["m"] * 3, "layer": ["a", "b", "b"],
                                                    "unit": [0, 1, 2], "similarity": [0.5, 0.25, 1.0]}),
                        "m", "layer")
    storage.write_table(root, "models", pa.table({"model": ["m"], "spec": ["x"]}), "m", None)
    os.makedirs(os.path.join(root, "_models"), exist_ok=True)
    with open(os.path.join(root, "_models", "m.json"), "w") as f:
        f.write('{"model": "x"}\n')
    storage.build_catalog(root)
    return root


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(results folder, working folder, a folder beside them); the query runs in the working folder."""
    out = _results(tmp_path / "O")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(work)
    return out, str(work), str(outside)


def snapshot(top: str) -> dict:
    """Every folder and file under ``top``: (size, mtime_ns, sha256) of files, None for folders."""
    seen = {}
    for d, dirs, files in os.walk(top):
        for name in dirs:
            seen[os.path.relpath(os.path.join(d, name), top)] = None
        for name in files:
            path = os.path.join(d, name)
            st = os.stat(path)
            seen[os.path.relpath(path, top)] = (st.st_size, st.st_mtime_ns,
                                                hashlib.sha256(open(path, "rb").read()).hexdigest())
    return seen


def sql(capsys, *args):
    code = main(["sql", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


DATA = "{out}/families/model=m/layer=a/data.parquet"
MODEL_JSON = "{out}/_models/m.json"

#: statements that must be refused; {out}, {work} and {outside} are the three folders
HOSTILE = [
    # the issue's: EXPLAIN ANALYZE runs what it explains
    f"EXPLAIN ANALYZE COPY (SELECT * FROM families LIMIT 0) TO '{DATA}' (FORMAT parquet)",
    f"EXPLAIN ANALYZE COPY (SELECT * FROM families LIMIT 0) TO '{DATA}' (FORMAT parquet, USE_TMP_FILE false)",
    f"EXPLAIN ANALYZE COPY (SELECT 1 AS model) TO '{MODEL_JSON}' (FORMAT json)",
    "explain (analyze) copy (select 1) to '{work}/x.csv'",
    "explain (format json, analyze) copy (select 1) to '{work}/x.csv'",
    "explain analyze (format json) copy (select 1) to '{work}/x.csv'",
    "/* hi */ EXPLAIN -- a comment\n ANALYZE COPY (SELECT 1) TO '{work}/x.csv'",
    "EXPLAIN ANALYZE INSERT INTO families VALUES ('m', 'a', 9, 0.0)",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN ANALYZE EXPORT DATABASE '{work}/exported'",
    "EXPLAIN ANALYZE ATTACH '{work}/new.duckdb'",
    "EXPLAIN ANALYZE SET temp_directory = '{work}'",
    "EXPLAIN ANALYZE WITH x AS (COPY (SELECT 1) TO '{work}/x.csv') SELECT 1",
    "EXPLAIN COPY (SELECT 1) TO '{work}/x.csv'",
    # COPY and friends
    f"COPY (SELECT * FROM families LIMIT 0) TO '{DATA}' (FORMAT parquet, USE_TMP_FILE false)",
    "COPY families TO '{work}/families.csv'",
    "COPY families FROM '{work}/notes.txt'",
    "COPY FROM DATABASE memory TO memory",
    "COPY FROM DATABASE memory TO memory (SCHEMA)",
    "EXPORT DATABASE '{outside}/exported'",
    "IMPORT DATABASE '{work}'",
    # a write hidden in a query DuckDB calls a SELECT
    f"WITH x AS (COPY (SELECT * FROM families LIMIT 0) TO '{DATA}' (FORMAT parquet, USE_TMP_FILE false)) "
    "SELECT 1",
    "WITH x AS (COPY (SELECT 1) TO '{work}/x.csv') SELECT * FROM families",
    "WITH x AS MATERIALIZED (COPY (SELECT 1) TO '{outside}/x.csv') SELECT 1",
    "WITH a AS (SELECT 1), b AS (COPY (SELECT 1) TO '{work}/x.csv') SELECT * FROM a",
    "WITH x AS (INSERT INTO families VALUES ('m', 'a', 9, 0.0) RETURNING *) SELECT * FROM x",
    "WITH x AS (DELETE FROM families RETURNING *) SELECT 1",
    "WITH x AS (UPDATE families SET unit = 0 RETURNING *) SELECT 1",
    "SELECT * FROM query('WITH x AS (COPY (SELECT 1) TO ''{work}/x.csv'') SELECT 1')",
    "SELECT (WITH x AS (COPY (SELECT 1) TO '{work}/x.csv') SELECT 1)",
    "SUMMARIZE WITH x AS (COPY (SELECT 1) TO '{work}/x.csv') SELECT 1",
    "DESCRIBE WITH x AS (COPY (SELECT 1) TO '{work}/x.csv') SELECT 1",
    # PREPARE / EXECUTE
    "PREPARE p AS COPY (SELECT 1) TO '{work}/x.csv'",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    # every other statement type
    "INSERT INTO families VALUES ('m', 'a', 9, 0.0)",
    "UPDATE families SET unit = 0",
    "DELETE FROM families",
    "TRUNCATE families",
    "MERGE INTO families USING (SELECT 1 AS unit) s ON families.unit = s.unit WHEN MATCHED THEN DELETE",
    "CREATE TABLE t AS SELECT * FROM families",
    "CREATE VIEW v AS SELECT 1",
    "CREATE MACRO m() AS 1",
    "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
    "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
    "CREATE TYPE e AS ENUM ('a')",
    "CREATE SEQUENCE q",
    "ALTER VIEW families RENAME TO f",
    "COMMENT ON VIEW families IS 'x'",
    "DROP VIEW families",
    "ATTACH '{work}/new.duckdb' AS n",
    "ATTACH '{out}/equivar.duckdb' AS c",
    "ATTACH ':memory:' AS m",
    "DETACH memory",
    "USE memory",
    "SET temp_directory = '{work}'",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SET VARIABLE v = 1",
    "PRAGMA enable_profiling",
    "PRAGMA profiling_output = '{work}/profile.json'",
    "CALL checkpoint()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "ANALYZE",
    "BEGIN TRANSACTION",
    "INSTALL httpfs",
    "LOAD httpfs",
    "UPDATE EXTENSIONS",
    "PIVOT families ON layer USING count(*)",
    # several statements, some behind comments
    "SELECT 1; COPY (SELECT 1) TO '{work}/x.csv'",
    "SELECT 1 /* ; */ ; COPY (SELECT 1) TO '{work}/x.csv'",
    "SELECT 1 -- ;\n; COPY (SELECT 1) TO '{work}/x.csv'",
    "SELECT ';'; COPY (SELECT 1) TO '{work}/x.csv'",
    # table functions that read or list files: none is reachable, not even inside the results folder
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_text('{work}/notes.txt')",
    f"SELECT * FROM read_text('{MODEL_JSON}')",
    "SELECT * FROM read_blob('{out}/equivar.duckdb')",
    "SELECT * FROM read_csv('{out}/.writer.lock')",
    f"SELECT * FROM read_json('{MODEL_JSON}')",
    f"SELECT * FROM read_parquet('{DATA}')",
    f"SELECT * FROM '{DATA}'",
    f"SELECT * FROM parquet_metadata('{DATA}')",
    "SELECT * FROM glob('{out}/*')",
    "SELECT * FROM sniff_csv('{work}/notes.txt')",
    "SELECT * FROM read_text('{work}/.tmp/*')",
]

#: statements that may answer, and must still change nothing
HARMLESS = [
    "SELECT * FROM families",
    "EXPLAIN ANALYZE SELECT count(*) FROM families",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM duckdb_settings() WHERE name LIKE '%directory%'",
    "SELECT * FROM range(3000000) ORDER BY random() LIMIT 3",
]


@pytest.mark.parametrize("template", HOSTILE + HARMLESS)
def test_no_statement_changes_any_file(template, folders, capsys):
    out, work, outside = folders
    query = template.format(out=out, work=work, outside=outside)
    top = os.path.dirname(out)                  # holds the results, working and neighbouring folders
    before = snapshot(top)
    code, stdout, stderr = sql(capsys, query, "--out", out, "--format", "csv")
    assert snapshot(top) == before, query
    if template in HOSTILE:
        assert code == 2 and stdout == "", (query, code, stdout)
    else:
        assert code == 0, (query, stderr)
    if code:
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("equivar: error: "), stderr
    ok = sql(capsys, "SELECT count(*) AS n FROM families", "--out", out, "--format", "csv")
    assert ok[:2] == (0, "n\n3\n")


def test_the_corpus_covers_every_kind_of_statement(folders):
    """At least 40 hostile statements, and among them every statement type DuckDB's parser makes (the others
    are made inside DuckDB or by its C++ API: ANALYZE parses as VACUUM, and UPDATE EXTENSIONS has no name in
    the Python module)."""
    import duckdb

    assert len(HOSTILE) >= 40
    out, work, outside = folders
    con = duckdb.connect()
    kinds = set()
    for template in HOSTILE:
        try:
            for statement in con.extract_statements(template.format(out=out, work=work, outside=outside)):
                try:
                    kinds.add(statement.type.name)
                except ValueError:
                    kinds.add("UNNAMED")
        except duckdb.Error:
            pass
    internal = {"INVALID", "ANALYZE", "VARIABLE_SET", "CREATE_FUNC", "RELATION", "EXTENSION", "LOGICAL_PLAN"}
    assert set(duckdb.StatementType.__members__) - internal | {"UNNAMED"} <= kinds, kinds


def test_the_connection_has_no_file_access_and_no_temporary_folder(folders):
    out, work, _ = folders
    con = storage.open_catalog(out)
    try:
        settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                    "('enable_external_access', 'temp_directory', 'lock_configuration', "
                                    "'allowed_directories', 'allowed_paths')").fetchall())
    finally:
        con.close()
    assert settings == {"enable_external_access": "false", "temp_directory": "", "lock_configuration": "true",
                        "allowed_directories": "[]", "allowed_paths": "[]"}, settings


@pytest.mark.parametrize("query", [
    "SELECT layer, count(*) AS n FROM families GROUP BY ALL ORDER BY 1",
    "WITH x AS (SELECT * FROM families) SELECT layer, count(*) AS n FROM x GROUP BY ALL ORDER BY 1",
    "FROM families SELECT layer, count(*) AS n GROUP BY ALL ORDER BY 1;",
    "/* two layers */ SELECT layer, count(*) AS n FROM families GROUP BY ALL ORDER BY 1 -- done",
])
def test_read_queries_answer(query, folders, capsys):
    code, stdout, _ = sql(capsys, query, "--out", folders[0], "--format", "csv")
    assert code == 0 and stdout == "layer,n\na,1\nb,2\n"


@pytest.mark.parametrize("query, column", [
    ("DESCRIBE families", "column_name"),
    ("SHOW TABLES", "name"),
    ("SUMMARIZE families", "column_name"),
    ("EXPLAIN SELECT * FROM families", "explain_key"),
    ("EXPLAIN ANALYZE SELECT * FROM families", "explain_key"),
    ("EXPLAIN (FORMAT json) SELECT * FROM families", "explain_key"),
    ("EXPLAIN (SELECT 1)", "explain_key"),
])
def test_describe_show_summarize_and_explain_of_a_select(query, column, folders, capsys):
    code, stdout, stderr = sql(capsys, query, "--out", folders[0], "--format", "json")
    assert code == 0 and column in json.loads(stdout)[0], stderr


def test_json_is_lossless_or_says_what_it_could_not_represent(folders, capsys):
    query = ("SELECT uuid() AS u, 'ab\\x00\\xff'::BLOB AS b, 170141183460469231731687303715884105727::HUGEINT AS h, "
             "340282366920938463463374607431768211455::UHUGEINT AS uh, 'inf'::DOUBLE AS i, '-inf'::FLOAT AS ni, "
             "'nan'::DOUBLE AS n, 0.1 + 0.2 AS d, 0.1::DOUBLE + 0.2 AS f, 1.25::DECIMAL(38, 10) AS dec, "
             "INTERVAL '1 month 2 days 3 microseconds' AS iv, TIMESTAMP_NS '2020-01-01 00:00:00.123456789' AS ns, "
             "'infinity'::DATE AS forever, 'é\"\\' AS s, [1, NULL] AS l, {'a': 'inf'::DOUBLE} AS st, 1 AS s")
    code, stdout, stderr = sql(capsys, query, "--out", folders[0], "--format", "json")
    assert code == 0, stderr
    [row] = json.loads(stdout)
    assert len(row["u"]) == 36
    assert row["b"] == "YWIA/w==" and row["h"] == 2 ** 127 - 1 and row["uh"] == 2 ** 128 - 1
    assert (row["i"], row["ni"], row["n"]) == ("inf", "-inf", "nan")
    assert str(row["d"]) == "0.3" and row["f"] == 0.1 + 0.2 and row["dec"] == 1.25
    assert '"dec":1.2500000000' in stdout and '"h":170141183460469231731687303715884105727' in stdout
    assert row["iv"] == "1 month 2 days 00:00:00.000003" and row["ns"] == "2020-01-01 00:00:00.123456789"
    assert row["forever"] == "infinity" and row["s"] == 'é"\\' and row["s_1"] == 1
    assert row["l"] == [1, None] and row["st"] == {"a": "inf"}
    [note] = stderr.strip().splitlines()
    assert note.startswith("equivar: note: ") and "base64" in note and '"inf"' in note and "(b)" in note
    # `select uuid() --format json` failed with UnicodeDecodeError
    code, stdout, _ = sql(capsys, "select uuid()", "--out", folders[0], "--format", "json")
    assert code == 0 and len(json.loads(stdout)[0]["uuid()"]) == 36


def test_json_keeps_row_order_when_columns_become_text(folders, capsys):
    query = "SELECT i, TIMESTAMP '2020-01-01' + to_seconds(i) AS t FROM range(20000) r(i) ORDER BY hash(i)"
    code, stdout, _ = sql(capsys, query, "--out", folders[0], "--format", "json")
    plain = sql(capsys, query.replace(" + to_seconds(i)", "::VARCHAR"), "--out", folders[0], "--format", "json")
    assert code == 0 and [r["i"] for r in json.loads(stdout)] == [r["i"] for r in json.loads(plain[1])]


@pytest.mark.parametrize("name", ["a[1]", "st*r", "q?m", "x[!a]"])
def test_glob_characters_in_the_results_folder(name, tmp_path, capsys):
    out = _results(tmp_path / name)
    (tmp_path / "a1").mkdir()                   # what a glob "a[1]" would match instead
    code, stdout, stderr = sql(capsys, "select count(*) as n from families", "--out", out, "--format", "csv")
    assert (code, stdout) == (0, "n\n3\n"), stderr


def test_a_corrupt_table_fails_alone_in_one_line(folders, capsys):
    out = folders[0]
    with open(os.path.join(out, "families", "model=m", "layer=b", "data.parquet"), "wb") as f:
        f.write(b"garbage")
    code, _, stderr = sql(capsys, "select count(*) from families", "--out", out)
    assert code == 2 and "unreadable" in stderr and "equivar run" in stderr and len(stderr.splitlines()) == 1
    code, stdout, _ = sql(capsys, "select spec from models", "--out", out, "--format", "csv")
    assert (code, stdout) == (0, "spec\nx\n")


def test_a_result_too_large_for_memory_is_one_line(folders, capsys, monkeypatch):
    import pandas as pd

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_memory)
    code, _, stderr = sql(capsys, "select * from families", "--out", folders[0], "--format", "csv")
    assert code == 2 and "does not fit in memory" in stderr and len(stderr.splitlines()) == 1


def test_a_closed_pipe_ends_quietly(folders):
    """`equivar sql ... | head -1`: no "error: Broken pipe", no traceback."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sql", "select * from range(300000)",
                             "--out", folders[0], "--format", "csv"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"range\n"
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(60) == 141 and stderr == b"", stderr
