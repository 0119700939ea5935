"""Files on disk: atomic writes, Hive-style Parquet tables and the DuckDB catalog.

Every file is written under a temporary name in its final folder and then
renamed, so a reader sees the old file or the new one, never half of one.
Tables live at ``<root>/<table>/model=<m>/[transform=<t>/][layer=<l>/]data.parquet``
(``src_layer=<l>`` for circuit tables); the
catalog ``<root>/equivar.duckdb`` holds one view per table over those files
and is itself rebuilt under a temporary name and renamed.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import learned_control
from .layout import CATALOG, partition_dir, safe_value, table_dir


def atomic_path(path: str) -> str:
    """A unique temporary name beside ``path`` (same folder, so rename is atomic)."""
    d, base = os.path.split(path)
    return os.path.join(d, f".{base}.tmp-{uuid.uuid4().hex[:8]}")


#: the names :func:`atomic_path` makes (and DuckDB's write-ahead log of a temporary catalog)
_TEMPORARY = re.compile(r"\..+\.tmp-[0-9a-f]{8}(\.wal)?")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_path`'s temporary names."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_temporaries(folders: list[str], prefix: str = "", recursive: bool = True) -> list[str]:
    """Remove the temporary files (:func:`is_temporary`) in ``folders`` (and below, if ``recursive``) whose
    names start with ``"." + prefix``: files that a killed writer left. Only call it while no live writer can
    be using them (a run holds its model's run lock). Returns the files removed."""
    removed = []
    for folder in folders:
        for d, subdirs, files in os.walk(folder):
            if not recursive:
                subdirs[:] = []
            for f in files:
                if is_temporary(f) and f.startswith("." + prefix):
                    try:
                        os.remove(os.path.join(d, f))
                        removed.append(os.path.join(d, f))
                    except FileNotFoundError:
                        pass
    return removed


@contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; renamed to ``path`` when the block ends without error,
    removed when it fails (the folder is created)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npy(path: str, array) -> None:
    """``np.save``, atomically."""
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_npz(path: str, arrays: dict) -> None:
    """``np.savez`` of named arrays, atomically."""
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def write_parquet(table: pa.Table, path: str) -> None:
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_table(root: str, name: str, table: pa.Table, model: str, partition_column: str | None,
                part: tuple[str, str] | None = None) -> list[str]:
    """Write ``table`` for one model (or one ``part`` of it, e.g. ``("transform", "hue")``), one file per
    value of ``partition_column``.

    Partitions of this model (or part) that the new table no longer has are
    removed after the new files are in place; other parts are left alone.
    """
    written = []
    model_dir = table_dir(root, name, model, part)
    if partition_column is None or table.num_rows == 0:
        path = os.path.join(model_dir, "data.parquet")
        write_parquet(table, path)
        written.append(path)
    else:
        column = table.column(partition_column)
        for value in pc.unique(column).to_pylist():                  # in order of first appearance
            mask = pc.is_null(column) if value is None else pc.equal(column, value)
            path = os.path.join(model_dir, f"{partition_column}={safe_value(value)}", "data.parquet")
            write_parquet(table.filter(mask), path)
            written.append(path)
    keep = {os.path.abspath(p) for p in written}
    for dirpath, _, files in os.walk(model_dir):
        for f in files:
            full = os.path.abspath(os.path.join(dirpath, f))
            # stale partitions, and temporary files a killed writer left behind
            if (f == "data.parquet" and full not in keep) or f.startswith(".data.parquet.tmp-"):
                os.remove(full)
    if part is not None:          # files of the whole-table layout (before the table was split in parts)
        whole = partition_dir(root, name, model)
        for dirpath, _, files in os.walk(whole):
            inside_a_part = os.path.relpath(dirpath, whole).split(os.sep)[0].startswith(part[0] + "=")
            if not inside_a_part and "data.parquet" in files:
                os.remove(os.path.join(dirpath, "data.parquet"))
    return written


def read_table(root: str, name: str, model: str, part: tuple[str, str] | None = None) -> pa.Table | None:
    """All partitions of one model's table (or of one ``part`` of it), or None if it was never written.

    Files are one per layer, so rows come back in folder order; a table with a ``depth`` column (the layer's
    place in the forward pass: ``layers`` and the sample manifests) comes back in network order.
    """
    model_dir = table_dir(root, name, model, part)
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(model_dir) for f in fs if f == "data.parquet"
    )
    if not files:
        return None
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    return table.sort_by("depth") if "depth" in table.column_names else table


def list_tables(root: str) -> dict[str, str]:
    """Table name -> glob of its Parquet files, for every table with at least one file."""
    out = {}
    if not os.path.isdir(root):
        return out
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isdir(d) and not name.startswith(("_", ".")) and any(
            f == "data.parquet" for _, _, fs in os.walk(d) for f in fs
        ):
            out[name] = f"{name}/**/data.parquet"          # relative: a moved or copied folder reads its own files
    return out


def table_files(root: str) -> dict[str, list[str]]:
    """Table name -> its Parquet files (absolute paths, sorted), for every table with at least one file."""
    root = os.path.abspath(root)
    return {name: sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, name))
                         for f in fs if f == "data.parquet")
            for name in list_tables(root)}


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: statement types ``equivar sql`` runs (DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB); an EXPLAIN only of
#: a SELECT
READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")
#: the query nodes of a read, in DuckDB's serialized parse tree (json_serialize_sql); anything else, such as a
#: COPY, INSERT, UPDATE or DELETE inside a WITH clause (DuckDB parses ``WITH x AS (COPY ...) SELECT 1`` as a
#: SELECT statement and runs the COPY), is refused
READ_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
#: the options an ``EXPLAIN (...)`` may have
_EXPLAIN_OPTIONS = ("analyze", "analyse", "format")
_ALLOWED = "only read-only queries (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) are allowed"


def _dataset(files: list[str]):
    """The Parquet ``files`` of one table as one Arrow dataset: columns united by name (a column a file lacks
    is null there), dictionary columns as their values (as DuckDB's ``read_parquet`` reads them). Files
    without rows are left out where others have rows: they add nothing, and one written before empty
    columns kept their declared types (an empty text column as float) would make the union fail."""
    import pyarrow.dataset as ds

    metas = {f: pq.read_metadata(f) for f in files}
    files = [f for f in files if metas[f].num_rows > 0] or files
    schema = pa.unify_schemas([metas[f].schema.to_arrow_schema() for f in files], promote_options="permissive")
    schema = pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                        for f in schema])
    return ds.dataset(files, schema=schema, format="parquet")


def open_catalog(root: str):
    """A DuckDB connection to the tables of ``root`` that can neither read nor write any file.

    DuckDB itself is left no file access at all: external access off with no allowed path or directory, no
    temporary directory (a query that does not fit in memory fails instead of spilling), no extension
    installed or loaded, no Python variables as tables, and its configuration locked, so that no statement
    can give any of it back. (An allowed directory would not do: DuckDB lets a query write where it may
    read, ``COPY ... TO`` included.) Each table comes in as an Arrow dataset over the table's Parquet files,
    listed one by one (so no character of ``root`` is read as a glob), which pyarrow opens for reading only.

    The views derived from the tables (:mod:`equivar_core.learned_control`) are made over them, from the same
    SQL as in the catalog file.

    The catalog file's views hold paths relative to ``root`` (a moved or copied folder reads its own
    files; the DuckDB shell resolves them from the current directory, so run it inside the folder); here
    the tables are made from the folder itself, and the catalog file only has to exist.
    """
    import duckdb

    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, CATALOG)):
        raise FileNotFoundError(f"no catalog at {os.path.join(root, CATALOG)}")
    con = duckdb.connect(":memory:", config={"temp_directory": "", "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False, "python_enable_replacements": False})
    try:
        tables = table_files(root)
        for name, files in tables.items():
            try:
                con.register(name, _dataset(files))
            except (OSError, pa.ArrowException) as exc:      # a corrupt or unreadable file: only this table fails
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                message = (f"table {name} has an unreadable file ({reason}): "
                           f"run `equivar run --out {root}` to rebuild it")
                error = f"error('{_quoted(message)}')"      # raised by any query that reads the table
                con.execute(f"CREATE VIEW {_identifier(name)} AS SELECT {error} AS error FROM range(1) "
                            f"WHERE {error} IS NULL")
        learned_control.create(con, tables, temporary=True)     # views over the tables above
        # Turned off here, not in the configuration above: given there, DuckDB allows the database's own
        # paths (<cwd>/:memory:, <cwd>/:memory:.wal, ...) and its temporary folder (<cwd>/.tmp/) for reading
        # and writing.
        con.execute("SET enable_progress_bar = false")     # it would print into the query's output
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con


class ReadQuery(NamedTuple):
    """A query :func:`check_read_only` accepted: its statement type and its text without a final ``;``."""
    kind: str
    text: str


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """DuckDB's tokens of ``text`` but comments: (text, kind, offset in ``text``'s UTF-8 bytes)."""
    import duckdb

    data = text.encode("utf-8")
    raw = duckdb.tokenize(text)
    out = []
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(data)
        if kind.name != "comment":
            out.append((data[start:end].decode("utf-8", "replace").strip(), kind.name, start))
    return out


def _without_final_semicolon(text: str) -> str:
    tokens = _tokens(text)
    if tokens and tokens[-1][0] == ";":
        return text.encode("utf-8")[:tokens[-1][2]].decode("utf-8")
    return text


def _explained(text: str) -> str:
    """The statement an EXPLAIN explains: ``text`` after ``EXPLAIN [ANALYZE] [(option, ...)]``.

    Options are skipped only when every one is ANALYZE or FORMAT with a plain value; otherwise the
    parenthesis is left in front of the statement (which then does not parse as a SELECT, and is refused).
    """
    tokens = _tokens(text)
    i = 1                                                   # tokens[0] is EXPLAIN
    if i < len(tokens) and tokens[i][0].lower() in ("analyze", "analyse"):
        i += 1
    if i < len(tokens) and tokens[i][0] == "(":
        j, options, expect_name = i + 1, True, True
        while j < len(tokens) and tokens[j][0] != ")":
            word, kind, _ = tokens[j]
            if word == ",":
                expect_name = True
            elif kind not in ("keyword", "identifier", "string_const", "numeric_const") or (
                    expect_name and word.lower() not in _EXPLAIN_OPTIONS):
                options = False
                break
            else:
                expect_name = False
            j += 1
        if options and j < len(tokens):
            i = j + 1
    if i >= len(tokens):
        return ""
    return text.encode("utf-8")[tokens[i][2]:].decode("utf-8")


def _query_nodes(tree) -> set[str]:
    """Every query node type in a serialized parse tree (a dict with a ``cte_map`` or a ``..._NODE`` type)."""
    found = set()
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            if isinstance(kind, str) and ("cte_map" in item or kind.endswith("_NODE")):
                found.add(kind)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_select(con, text: str) -> None:
    """Raise ``ValueError`` unless every query node of the SELECT statement ``text`` is a read."""
    import json

    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0])
    if tree.get("error"):
        raise ValueError(f"{_ALLOWED}; this one could not be checked ({tree.get('error_message')})")
    bad = sorted(_query_nodes(tree) - READ_QUERY_NODES)
    if bad:
        names = ", ".join(b.removesuffix("_NODE").removesuffix("_QUERY") for b in bad)
        raise ValueError(f"{_ALLOWED}, not {names} inside a query")


def _statements(con, text: str) -> list[tuple[str, str]]:
    """(type, text) of each statement DuckDB's parser finds in ``text``."""
    out = []
    for statement in con.extract_statements(text):
        try:
            kind = statement.type.name
        except ValueError:                                  # a type the Python module has no name for
            kind = "this statement"
        out.append((kind, statement.query))
    return out


def check_read_only(con, query: str) -> ReadQuery:
    """Accept only what DuckDB's own parser says is one read: a SELECT (WITH, DESCRIBE, SHOW and SUMMARIZE
    are SELECTs to DuckDB) whose every query node is a read, or an EXPLAIN [ANALYZE] of one.

    Raises ``ValueError`` for anything else: several statements, COPY, ATTACH, SET, PRAGMA, INSTALL, CALL,
    PREPARE, EXECUTE, DDL, a COPY or INSERT inside a WITH clause, EXPLAIN ANALYZE of any of them (DuckDB's
    ``duckdb.Error`` for what does not parse). The connection of :func:`open_catalog` could not write a
    file even if a statement slipped through.
    """
    import duckdb

    statements = _statements(con, query)
    if len(statements) != 1:
        raise ValueError(f"exactly one statement is allowed, got {len(statements)}")
    kind, text = statements[0]
    if kind not in READ_ONLY_STATEMENTS:
        raise ValueError(f"{_ALLOWED}, not {kind}")
    text = _without_final_semicolon(text)
    if kind == "EXPLAIN":
        inner = _explained(text)
        try:
            kinds = [k for k, _ in _statements(con, inner)]
        except duckdb.Error as exc:                         # what follows EXPLAIN (and its options) does not parse
            kinds = [f"what does not parse alone ({str(exc).strip().splitlines()[0]})"]
        if kinds != ["SELECT"]:
            what = "nothing" if not kinds else kinds[0] if len(kinds) == 1 else f"{len(kinds)} statements"
            raise ValueError(f"EXPLAIN is allowed only of a read-only query (SELECT, WITH, DESCRIBE, SHOW, "
                             f"SUMMARIZE), not of {what}")
        _check_select(con, inner)
    else:
        _check_select(con, text)
    return ReadQuery(kind, text)


def read_only_query(con, query: str):
    """Run exactly one read-only query (see :func:`check_read_only`) on ``con``; returns a DataFrame."""
    return con.execute(check_read_only(con, query).text).df()


def view_sql(name: str, glob: str) -> str:
    return (f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM '
            f"read_parquet('{_quoted(glob)}', hive_partitioning = false, union_by_name = true)")


@contextmanager
def writer_lock(root: str) -> Iterator[None]:
    """One catalog writer at a time (an advisory lock file in ``root``)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".writer.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_catalog(root: str) -> tuple[str, list[str]]:
    """(Re)build ``<root>/equivar.duckdb`` with a view per table, and the views derived from them
    (:mod:`equivar_core.learned_control`, where its tables are there); returns its path and the views.

    DuckDB builds it in a private temporary folder (it misreads a database path with a ``?`` in it: its
    write-ahead log goes to another folder); the file is then copied in under a temporary name and renamed
    over the old one. A write-ahead log beside the old one (``equivar.duckdb.wal``, left by a process that
    opened it read-write and died) is removed first: it belongs to the old file, and beside the new one
    DuckDB would replay it or refuse to open. Temporary catalogs of killed builders are removed too (under
    the writer lock no live builder has one)."""
    import tempfile

    import duckdb

    tables = list_tables(root)
    path = os.path.join(root, CATALOG)
    with writer_lock(root), tempfile.TemporaryDirectory(prefix="equivar-catalog-") as scratch:
        remove_temporaries([root], CATALOG, recursive=False)
        built = os.path.join(scratch, CATALOG)
        con = duckdb.connect(built)
        try:
            con.execute(f"SET file_search_path = '{_quoted(os.path.abspath(root))}'")
            for name, glob in tables.items():
                con.execute(view_sql(name, glob))
            views = list(tables) + ([learned_control.NAME] if learned_control.create(con, tables) else [])
        finally:
            con.close()
        with atomic_file(path) as tmp:
            shutil.copyfile(built, tmp)
            if os.path.exists(path + ".wal"):
                os.remove(path + ".wal")
    return path, views


def remove_tree(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
