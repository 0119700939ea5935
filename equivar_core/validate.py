"""Invariants of the tables, checked before downstream stages read them.

Each check takes a table and returns ``(passed, description)``; the Dagster
layer turns them into blocking asset checks so bad data stops flowing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def finite_stats(unit_stats: pd.DataFrame) -> tuple[bool, str]:
    """Every unit's natural-image mean and std are finite, and every layer has a unit that varies."""
    if unit_stats.empty:
        return False, "no unit statistics"
    bad = ~np.isfinite(unit_stats[["mean", "std"]].to_numpy()).all(1)
    dead_layers = [l for l, g in unit_stats.groupby("layer") if (g["std"] <= 0).all()]
    if bad.any():
        return False, f"{int(bad.sum())} units with non-finite activations"
    if dead_layers:
        return False, f"layers with no varying unit: {', '.join(dead_layers)}"
    return True, f"{len(unit_stats)} units, all finite"


def finite_tuning(tuning: pd.DataFrame, layers: list[str]) -> tuple[bool, str]:
    """Every analysed layer whose tuning is measured (``layers``: those of ``layers.tuned``) has tuning rows,
    all finite."""
    missing = sorted(set(layers) - set(tuning["layer"].unique()))
    if missing:
        return False, f"layers without tuning: {', '.join(missing)}"
    bad = int((~np.isfinite(tuning["response"].to_numpy())).sum())
    return (bad == 0), (f"{bad} non-finite responses" if bad else f"{len(tuning)} finite responses")


def scores_in_range(pairs: pd.DataFrame) -> tuple[bool, str]:
    """Scores and null scores are correlations: finite and within [-1, 1]."""
    if pairs.empty:
        return False, "no transform pairs"
    v = pairs[["score", "null_score"]].to_numpy()
    bad = int((~np.isfinite(v) | (np.abs(v) > 1 + 1e-6)).any(1).sum())
    return (bad == 0), (f"{bad} rows out of range" if bad else f"{len(pairs)} rows within [-1, 1]")


def families_well_formed(families: pd.DataFrame) -> tuple[bool, str]:
    """Families have at least two members and a unit is in at most one family per transform."""
    if families.empty:
        return True, "no families"
    sizes = families.groupby(["layer", "family"])["unit"].nunique()
    small = sizes[sizes < 2]
    dup = families.duplicated(["layer", "transform", "unit"]).sum()
    fit = families["fit"].dropna()
    problems = []
    if len(small):
        problems.append(f"{len(small)} families with fewer than two units")
    if dup:
        problems.append(f"{int(dup)} units in two families of one transform")
    if len(fit) and ((fit < -1e-6) | (fit > 1 + 1e-6)).any():
        problems.append("fit outside [0, 1]")
    return (not problems), ("; ".join(problems) or f"{sizes.size} families")


def circuits_match_families(circuit_families: pd.DataFrame, families: pd.DataFrame) -> tuple[bool, str]:
    """Every family a circuit row names exists, in the named layer, with the named transform."""
    if circuit_families.empty:
        return True, "no circuit rows"
    known = set(zip(families["layer"], families["family"], families["transform"]))
    src = set(zip(circuit_families["src_layer"], circuit_families["src_family"], circuit_families["transform"]))
    fam_rows = circuit_families[circuit_families["dst_family"] >= 0]
    dst = set(zip(fam_rows["dst_layer"], fam_rows["dst_family"], fam_rows["transform"]))
    unknown = (src | dst) - known
    eq = circuit_families["equivariance"].dropna()
    if unknown:
        return False, f"{len(unknown)} referenced families do not exist, e.g. {sorted(unknown)[0]}"
    if len(eq) and (np.abs(eq) > 1 + 1e-6).any():
        return False, "equivariance outside [-1, 1]"
    return True, f"{len(src | dst)} families referenced, all present"
