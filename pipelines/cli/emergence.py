"""``equivar emergence``: families over training, for each training run of a results folder."""

from __future__ import annotations

import os

import pyarrow as pa

from equivar_core.errors import EquivarError
from equivar_core.settings import default_out
from equivar_core.stages.match_tables import family_emergence_table, training_runs
from equivar_core.storage import build_catalog, write_table


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    runs = training_runs(out) if os.path.isdir(out) else {}
    if not runs:
        raise EquivarError(f"no training run in {out}: it needs at least two analysed checkpoints of one model "
                           "with --step (equivar run --model SPEC --weights CKPT --step N)")
    print("spec | last checkpoint | transform | appeared | families | earliest step")
    for spec, checkpoints in runs.items():
        steps, names = [s for s, _ in checkpoints], [n for _, n in checkpoints]
        try:
            df = family_emergence_table(out, names, steps, args.draws, args.seed)
        except pa.ArrowException as exc:
            raise EquivarError(f"{str(exc).splitlines()[0]}: run `equivar run --out {out}` to recompute it") from None
        write_table(out, "family_emergence", pa.Table.from_pandas(df, preserve_index=False), names[-1], None)
        families = df.drop_duplicates(["layer", "transform", "family"])
        for (transform, appeared), g in families.groupby(["transform", "appeared"], sort=True):
            print(f"{spec} | {names[-1]} | {transform} | {appeared} | {len(g)} | {int(g['first_step'].min())}")
    build_catalog(out)
    print(f"family_emergence written to {out}")
    return 0
