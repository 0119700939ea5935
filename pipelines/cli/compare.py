"""``equivar compare A B``: the families of two models of one results folder matched to each other."""

from __future__ import annotations

import os

import pyarrow as pa

from equivar_core.errors import EquivarError
from equivar_core.settings import default_out
from equivar_core.stages.match_tables import compare_models
from equivar_core.storage import build_catalog


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    if not os.path.isdir(out):
        raise EquivarError(f"no results folder {out}: run both models there first (equivar run --out {out})")
    try:
        tables = compare_models(out, args.model_a, args.model_b, args.draws, args.seed)
    except pa.ArrowException as exc:           # a damaged table file
        raise EquivarError(f"{str(exc).splitlines()[0]}: run `equivar run --out {out}` to recompute it") from None
    build_catalog(out)
    print("model_a -> model_b | transform | families | mutual matches above the null")
    for df in tables.values():
        for (a, b, transform), g in df.groupby(["model_a", "model_b", "transform"], sort=True):
            print(f"{a} -> {b} | {transform} | {len(g)} | {int((g['mutual'] & g['above_null']).sum())}")
    print(f"family_matches written to {out} (equivar sql \"select * from family_matches\")")
    return 0
