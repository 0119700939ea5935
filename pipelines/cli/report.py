"""``equivar report``: a static HTML report of a run."""

from __future__ import annotations

import os

import pyarrow as pa

from equivar_core.errors import EquivarError, damaged_table
from equivar_core.report import build_report
from equivar_core.settings import default_out


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    try:
        index = build_report(out, args.model, args.featurevis, args.featurevis_steps, args.families_per_layer)
    except FileNotFoundError as exc:
        raise EquivarError(str(exc)) from None
    except pa.ArrowException as exc:           # a damaged table file
        raise damaged_table(exc, out) from None
    print(index)
    return 0
