"""``equivar sql``: one read-only query on a results folder's catalog."""

from __future__ import annotations

import os
import sys

import duckdb

from equivar_core.errors import EquivarError
from equivar_core.settings import default_out
from equivar_core.storage import open_catalog, read_only_query


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    try:
        con = open_catalog(out)
    except FileNotFoundError:
        raise EquivarError(f"no catalog in {out}: run `equivar run --out {out}` first") from None
    except duckdb.Error as exc:
        raise EquivarError(f"the catalog in {out} is unreadable ({str(exc).strip().splitlines()[0]}): "
                           f"run `equivar run --out {out}` to rebuild it") from None
    try:
        df = read_only_query(con, args.query)
    except ValueError as exc:
        raise EquivarError(str(exc)) from None
    except duckdb.Error as exc:
        raise EquivarError(str(exc).strip().splitlines()[0]) from None
    finally:
        con.close()
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records") + "\n")
    else:
        print(df.to_string(index=False) if len(df) else "(no rows)")
    return 0
