"""Do two results folders hold the same tables? The check behind "behaviour unchanged" for a refactor.

    python bench/compare_tables.py OLD_OUT NEW_OUT [--atol 1e-6] [--ignore-columns path,points_path]

Every table of the catalog is read from both folders, its rows sorted by every non-float column (then by
the float columns), and compared column by column: equal strings and integers, floats within ``atol``
(NaN equals NaN). Prints one line per table and exits 1 if any differs. To compare a commit with the
working tree, run the same command line at both into two folders, e.g.::

    git worktree add /tmp/old HEAD~1
    (cd /tmp/old && python -m pipelines.cli run --model equivar_core.planted:planted --layers relu1,relu2 --out /tmp/A)
    python -m pipelines.cli run --model equivar_core.planted:planted --layers relu1,relu2 --out /tmp/B
    python bench/compare_tables.py /tmp/A /tmp/B
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from equivar_core.storage import list_tables, open_catalog  # noqa: E402

#: columns that differ between two folders by construction (when they were made, how long they took)
VOLATILE = {"created_at", "materialized_at", "seconds", "wall_seconds"}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(sorted(df.columns), axis=1)
    keys = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c])]
    floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
    return df.sort_values(keys + floats, kind="stable", na_position="last").reset_index(drop=True)


def compare(old: pd.DataFrame, new: pd.DataFrame, atol: float) -> str | None:
    """``None`` when equal, else what differs first."""
    if set(old.columns) != set(new.columns):
        return f"columns differ: {sorted(set(old.columns) ^ set(new.columns))}"
    if len(old) != len(new):
        return f"{len(old)} rows before, {len(new)} now"
    old, new = _sorted(old), _sorted(new)
    for c in old.columns:
        a, b = old[c], new[c]
        if pd.api.types.is_float_dtype(a) and pd.api.types.is_float_dtype(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            bad = ~(np.isclose(x, y, rtol=0, atol=atol) | (np.isnan(x) & np.isnan(y)))
            if bad.any():
                return f"column {c}: {int(bad.sum())} values differ by up to {np.nanmax(np.abs(x - y)):.3g}"
        elif not a.astype(str).equals(b.astype(str)):
            return f"column {c}: {int((a.astype(str) != b.astype(str)).sum())} values differ"
    return None


def read_all(out: str, name: str) -> pd.DataFrame:
    """Every model's rows of one table, read through the folder's catalog as a user reads them."""
    if name not in list_tables(out):
        return pd.DataFrame()
    con = open_catalog(out)
    try:
        return con.execute(f'select * from "{name}"').df()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--ignore-columns", default="", help="comma-separated columns left out of the comparison")
    args = p.parse_args(argv)
    ignore = VOLATILE | {c for c in args.ignore_columns.split(",") if c}
    names = sorted(set(list_tables(args.old)) | set(list_tables(args.new)))
    differ = 0
    for name in names:
        old, new = read_all(args.old, name), read_all(args.new, name)
        old = old.drop(columns=[c for c in old.columns if c in ignore])
        new = new.drop(columns=[c for c in new.columns if c in ignore])
        why = compare(old, new, args.atol)
        differ += why is not None
        print(f"{name:24s} {'same' if why is None else 'DIFFERS: ' + why} ({len(new)} rows)")
    print(f"{len(names) - differ} of {len(names)} tables equal (atol {args.atol:g})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
