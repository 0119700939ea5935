"""Mirror pairs read by the next layer, weight by weight, where kernels cannot tell (the late preset).

    python examples/late_channels.py --out equivar-data --model efficientnet_lite0

Between consecutive depthwise layers of an inverted-residual network every kernel into a unit b is b's own
depthwise kernel times a number, ``W(a -> b) = c_ab K_b`` (``circuit_families.kernel_rank_one`` near 1), so
the kernel-level circuit tests say little there. What is left to test is the numbers ``c`` (the summed
kernels of the run's circuit weights, all sources into the units the circuit tables computed). For each flip
pair (a, a') of the source layer:

* ``into_invariant``: the correlation, over the destination units invariant to mirroring
  (``circuit_families`` rows of ``hflip`` with ``dst_family = -1``), of a's weights with a''s. A pose-invariant
  unit weighs both members alike, so a layer whose invariant units pool the pair gives near 1.
* ``into_others``: the same over the other computed destination units (family members): if it is as high,
  the pooling is not particular to the invariant units; the next layer reads the pair alike everywhere.
* ``swapped`` and ``unswapped``: over the destination flip pairs (b, b'), the correlation of a's weights into
  (b, b') with a''s into (b', b) (the mirrored wiring, ``W(a -> b) = W(a' -> b')``) and with a''s into (b, b').
  Equivariant wiring makes the first the higher.

Controls: every statistic again for mismatched partners (a of one pair with a' of another), whose 95th
percentile is the bar a pair's value is counted against.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from equivar_core.layout import Layout  # noqa: E402
from equivar_core.storage import read_table  # noqa: E402


def _row_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every row of ``x`` with every row of ``y`` (NaN for a constant row, or under 3 columns)."""
    if x.shape[1] < 3:
        return np.full((len(x), len(y)), np.nan)
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    norm = np.outer(np.linalg.norm(xc, axis=1), np.linalg.norm(yc, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, xc @ yc.T / norm, np.nan)


#: the statistics of a source pair (module docstring)
STATISTICS = ("into_invariant", "into_others", "swapped", "unswapped")


def pair_statistics(total: pd.DataFrame, pairs: list[tuple[int, int]], invariant: list[int],
                    dst_pairs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Each statistic (module docstring) as a P x P matrix over the source pairs: entry (i, j) correlates the
    weights of pair i's first member with those of pair j's second, so the diagonal holds the pairs and the
    rest the mismatched partners. ``total``: summed weights, rows source units, columns destination units."""
    others = [b for b in total.columns if b not in set(invariant)]
    first = [b for b, _ in dst_pairs] + [b2 for _, b2 in dst_pairs]
    mirror = [b2 for _, b2 in dst_pairs] + [b for b, _ in dst_pairs]
    a = total.loc[[u for u, _ in pairs]]
    a2 = total.loc[[v for _, v in pairs]]
    columns = dict(zip(STATISTICS, ((invariant, invariant), (others, others), (first, mirror), (first, first))))
    return {name: _row_correlations(a[ca].to_numpy(float), a2[cb].to_numpy(float))
            for name, (ca, cb) in columns.items()}


def layer_pair_summary(total: pd.DataFrame, pairs: list[tuple[int, int]], invariant: list[int],
                       dst_pairs: list[tuple[int, int]]) -> dict:
    """Medians over the source pairs beside the mismatched partners' (the control) and the share of pairs
    above the control's 95th percentile."""
    stats = pair_statistics(total, pairs, invariant, dst_pairs)
    off = ~np.eye(len(pairs), dtype=bool)
    out = {"pairs": len(pairs), "invariant_units": len(invariant), "dst_pairs": len(dst_pairs)}
    for col in STATISTICS:
        real, control = np.diag(stats[col]), stats[col][off]
        bar = np.nanquantile(control, 0.95) if np.isfinite(control).any() else np.nan
        out |= {col: np.nanmedian(real) if np.isfinite(real).any() else np.nan,
                f"{col}_control": np.nanmedian(control) if np.isfinite(control).any() else np.nan,
                f"{col}_above_control_p95": float((real > bar).mean()) if np.isfinite(bar) else np.nan}
    beats = np.diag(stats["swapped"]) > np.diag(stats["unswapped"])
    out["swapped_beats_unswapped"] = float(beats.mean()) if dst_pairs else np.nan
    return out


def flip_pairs(families: pd.DataFrame, layer: str) -> list[tuple[int, int]]:
    f = families[(families["layer"] == layer) & (families["transform"] == "hflip")].sort_values(["family", "param"])
    return [tuple(int(u) for u in g["unit"]) for _, g in f.groupby("family") if len(g) == 2]


def summarize(out: str, model: str) -> pd.DataFrame:
    families = read_table(out, "families", model).to_pandas()
    circuits = read_table(out, "circuit_families", model).to_pandas()
    layout = Layout(out, model)
    rows = []
    for (src, dst), g in circuits.groupby(["src_layer", "dst_layer"], sort=False):
        path = layout.circuit_weights(src, dst)
        if not os.path.exists(path):
            continue
        with np.load(path) as z:
            total = pd.DataFrame(z["weights"].sum((2, 3)).T, columns=z["dst_units"].astype(int))
        invariant = sorted({int(u) for u in g.loc[(g["transform"] == "hflip") & (g["dst_family"] == -1), "dst_unit"]}
                           & set(total.columns))
        pairs = flip_pairs(families, src)
        if len(pairs) < 2:
            continue
        rank_one = g["kernel_rank_one"].iloc[0] if "kernel_rank_one" in g else np.nan
        rows.append({"src_layer": src, "dst_layer": dst, "kernel_rank_one": rank_one,
                     **layer_pair_summary(total, pairs, invariant, flip_pairs(families, dst))})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("EQUIVAR_HOME", "equivar-data"))
    p.add_argument("--model", default="efficientnet_lite0")
    args = p.parse_args(argv)
    df = summarize(os.path.abspath(args.out), args.model)
    print(df.round(2).T.to_string(header=False) if len(df) else "no layer pair with two or more flip pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
