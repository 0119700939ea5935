"""``equivar emergence``: families over training, for each training run of a results folder."""

from __future__ import annotations

import os

from equivar_core.errors import EquivarError
from equivar_core.settings import default_out
from equivar_core.stages.match_tables import write_emergence
from equivar_core.storage import build_catalog


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    tables = write_emergence(out, args.draws, args.seed) if os.path.isdir(out) else {}
    if not tables:
        raise EquivarError(f"no training run in {out}: it needs at least two analysed checkpoints of one model "
                           "with --step (equivar run --model SPEC --weights CKPT --step N)")
    print("spec | last checkpoint | transform | appeared | families | earliest step")
    for spec, df in tables.items():
        families = df.drop_duplicates(["layer", "transform", "family"])
        for (transform, appeared), g in families.groupby(["transform", "appeared"], sort=True):
            print(f"{spec} | {df['model'].iloc[0]} | {transform} | {appeared} | {len(g)} | "
                  f"{int(g['first_step'].min())}")
    build_catalog(out)
    print(f"family_emergence written to {out}")
    return 0
