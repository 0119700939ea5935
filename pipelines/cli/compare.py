"""``equivar compare A B``: the families of two models of one results folder matched to each other."""

from __future__ import annotations

import os

import pyarrow as pa

from equivar_core.errors import EquivarError, damaged_table
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
        raise damaged_table(exc, out) from None
    build_catalog(out)
    print("model_a -> model_b | transform | families | mutual matches above the null | of those, alike on the "
          "same photos (photo correlation above its null's 95th percentile; - where the runs share no photos)")
    for df in tables.values():
        for (a, b, transform), g in df.groupby(["model_a", "model_b", "transform"], sort=True):
            matched = g[g["mutual"] & g["above_null"]]
            alike = int((matched["photo_correlation"] > matched["null_photo_p95"]).sum())
            print(f"{a} -> {b} | {transform} | {len(g)} | {len(matched)} | "
                  f"{alike if (g['photos'] > 0).any() else '-'}")
    print(f"family_matches written to {out} (equivar sql \"select * from family_matches\")")
    return 0
