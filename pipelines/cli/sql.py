"""``equivar sql``: one read-only query on a results folder's catalog.

``--format json`` writes one object per row and loses nothing: integers of any size (HUGEINT included) are
exact JSON integers, decimals exact JSON numbers, dates, times, timestamps and intervals DuckDB's own text
(nanoseconds, months and ``infinity`` kept), UUIDs strings; what JSON has no value for is written as a string
and named in one ``equivar: note:`` line on stderr: a blob is its bytes in base64, a float that is not
finite is ``"inf"``, ``"-inf"`` or ``"nan"``, a repeated column name gets ``_1``, ``_2``... as DuckDB numbers
them in a subquery.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import os
import sys
import uuid

import duckdb

from equivar_core.errors import EquivarError
from equivar_core.settings import default_out
from equivar_core.storage import check_read_only, open_catalog

#: DuckDB types whose Python values lose something (months of an interval, nanoseconds, ``infinity`` dates):
#: JSON gets DuckDB's text of them instead
_AS_TEXT = frozenset({"interval", "date", "time", "time_ns", "time with time zone", "timestamp", "timestamp_s",
                      "timestamp_ms", "timestamp_ns", "timestamp with time zone"})
#: rows fetched at a time for JSON
_BATCH = 4096


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    try:
        con = open_catalog(out)
    except FileNotFoundError:
        raise EquivarError(f"no catalog in {out}: run `equivar run --out {out}` first") from None
    except duckdb.Error as exc:
        raise EquivarError(f"the catalog in {out} is unreadable ({_first_line(exc)}): "
                           f"run `equivar run --out {out}` to rebuild it") from None
    try:
        query = check_read_only(con, args.query)
        if args.format == "json":
            _write_json(con, query, sys.stdout.write)
        else:
            df = con.execute(query.text).df()
            if args.format == "csv":
                df.to_csv(sys.stdout, index=False)
            else:
                print(df.to_string(index=False) if len(df) else "(no rows)")
    except duckdb.Error as exc:
        raise EquivarError(_first_line(exc)) from None
    except MemoryError:
        raise EquivarError("the result does not fit in memory: narrow the query (WHERE, LIMIT, GROUP BY)") from None
    except ValueError as exc:
        raise EquivarError(_first_line(exc)) from None
    finally:
        con.close()
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _needs_text(kind) -> bool:
    """Whether a DuckDB type is or holds one of ``_AS_TEXT``."""
    if kind.id in _AS_TEXT:
        return True
    try:
        children = kind.children
    except duckdb.Error:                                    # not a nested type
        return False
    return any(_needs_text(child) for _, child in children if hasattr(child, "id"))


def _write_json(con, query, write) -> None:
    """The rows of ``query`` as a JSON array of objects, a batch of rows at a time."""
    text, notes = query.text, {}
    if query.kind == "SELECT":
        relation = con.sql(text)
        kinds = relation.types
        if any(_needs_text(k) for k in kinds):
            # DuckDB's text of those columns; DuckDB numbers repeated column names of the subquery
            inner = con.sql(f"SELECT * FROM (\n{text}\n) AS q").columns
            renamed = [new for old, new in zip(relation.columns, inner) if new != old]
            if renamed:
                notes["repeated column names are numbered"] = renamed
            columns = []
            for name, kind in zip(inner, kinds):
                quoted = '"' + name.replace('"', '""') + '"'
                if _needs_text(kind):
                    columns.append(f"CAST({quoted} AS VARCHAR) AS {quoted}")
                    if kind.id not in _AS_TEXT:
                        notes.setdefault("nested values with dates, times or intervals are DuckDB's text of the "
                                         "whole value", []).append(name)
                else:
                    columns.append(quoted)
            text = check_read_only(con, f"SELECT {', '.join(columns)} FROM (\n{text}\n) AS q").text
    cursor = con.execute(text)
    names = [d[0] for d in cursor.description]
    keys, seen = [], set()
    for name in names:
        key, n = name, 0
        while key in seen:
            n += 1
            key = f"{name}_{n}"
        if key != name:
            notes.setdefault("repeated column names are numbered", []).append(key)
        seen.add(key)
        keys.append(json.dumps(key) + ":")
    write("[")
    first = True
    while rows := cursor.fetchmany(_BATCH):
        for row in rows:
            fields = ",".join(key + _json_value(value, notes, name) for key, value, name in zip(keys, row, names))
            write(("" if first else ",") + "{" + fields + "}")
            first = False
    write("]\n")
    if notes:
        print("equivar: note: " + "; ".join(f"{what} ({', '.join(dict.fromkeys(cols))})"
                                            for what, cols in notes.items()), file=sys.stderr)


def _json_value(value, notes: dict, column: str) -> str:
    """One value as JSON text, exactly; a blob or a float that is not finite as a string, noted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        notes.setdefault('floats that are not finite are the strings "inf", "-inf", "nan"', []).append(column)
        return '"nan"' if math.isnan(value) else '"inf"' if value > 0 else '"-inf"'
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value).lower())
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        notes.setdefault("blobs are base64 strings", []).append(column)
        return json.dumps(base64.b64encode(bytes(value)).decode("ascii"))
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + _json_value(v, notes, column)
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json_value(v, notes, column) for v in value) + "]"
    if isinstance(value, (uuid.UUID, datetime.date, datetime.time, datetime.timedelta)):
        return json.dumps(str(value))
    notes.setdefault("values of other types are their Python text", []).append(column)
    return json.dumps(str(value))
