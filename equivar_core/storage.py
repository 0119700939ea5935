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
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def _quoted(text: str) -> str:
    return text.replace("'", "''")


#: statement types ``equivar sql`` runs (DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB)
READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")


def open_catalog(root: str):
    """A read-only DuckDB connection to the tables of ``root`` that can read nothing outside ``root``.

    The catalog file's views hold paths relative to ``root`` (a moved or copied folder reads its own
    files; the DuckDB shell resolves them from the current directory, so run it inside the folder).
    Here the same views are made in memory over ``root``'s absolute path, then external access is
    turned off with ``root`` as the only allowed directory, extensions are neither installed nor
    loaded, and the configuration is locked so that no statement can give any of it back.
    """
    import duckdb

    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, CATALOG)):
        raise FileNotFoundError(f"no catalog at {os.path.join(root, CATALOG)}")
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        for name, glob in list_tables(root).items():
            con.execute(view_sql(name, os.path.join(root, glob)))
        con.execute(f"SET allowed_directories = ['{_quoted(root + os.sep)}']")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con


def read_only_query(con, query: str):
    """Run exactly one SELECT (or EXPLAIN) statement on ``con``; returns a DataFrame.

    Raises ``ValueError`` for anything else: several statements, COPY, ATTACH, SET, PRAGMA, INSTALL, DDL.
    """
    statements = con.extract_statements(query)
    if len(statements) != 1:
        raise ValueError(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise ValueError(f"only read-only queries (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) are allowed, "
                         f"not {kind}")
    return con.execute(query).df()


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
    """(Re)build ``<root>/equivar.duckdb`` with a view per table; returns its path and the views.

    The new catalog is written under a temporary name and renamed over the old one. A write-ahead log
    beside the old one (``equivar.duckdb.wal``, left by a process that opened it read-write and died) is
    removed first: it belongs to the old file, and beside the new one it would stop it from opening.
    Temporary catalogs of killed builders are removed too (under the writer lock no live builder has one)."""
    import duckdb

    tables = list_tables(root)
    path = os.path.join(root, CATALOG)
    with writer_lock(root):
        remove_temporaries([root], CATALOG, recursive=False)
        tmp = atomic_path(path)
        try:
            con = duckdb.connect(tmp)
            con.execute(f"SET file_search_path = '{_quoted(os.path.abspath(root))}'")
            for name, glob in tables.items():
                con.execute(view_sql(name, glob))
            con.close()
            if os.path.exists(path + ".wal"):
                os.remove(path + ".wal")
            os.replace(tmp, path)
        finally:
            for p in (tmp, tmp + ".wal"):
                if os.path.exists(p):
                    os.remove(p)
    return path, list(tables)


def remove_tree(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
