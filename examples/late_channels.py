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


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or x[ok].std() == 0 or y[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def pair_statistics(total: pd.DataFrame, pairs: list[tuple[int, int]], invariant: list[int],
                    dst_pairs: list[tuple[int, int]]) -> pd.DataFrame:
    """The four statistics (module docstring) of each source pair (a, a'); ``total``: summed weights, rows
    source units, columns destination units."""
    others = [b for b in total.columns if b not in set(invariant)]
    first = [b for b, _ in dst_pairs] + [b2 for _, b2 in dst_pairs]
    mirror = [b2 for _, b2 in dst_pairs] + [b for b, _ in dst_pairs]
    rows = []
    for a, a2 in pairs:
        wa, wb = total.loc[a], total.loc[a2]
        rows.append({"a": a, "a_partner": a2,
                     "into_invariant": _corr(wa[invariant].to_numpy(), wb[invariant].to_numpy()),
                     "into_others": _corr(wa[others].to_numpy(), wb[others].to_numpy()),
                     "swapped": _corr(wa[first].to_numpy(), wb[mirror].to_numpy()),
                     "unswapped": _corr(wa[first].to_numpy(), wb[first].to_numpy())})
    return pd.DataFrame(rows)


def layer_pair_summary(total: pd.DataFrame, pairs: list[tuple[int, int]], invariant: list[int],
                       dst_pairs: list[tuple[int, int]]) -> dict:
    """Medians over the source pairs beside the mismatched partners' (the control) and the share of pairs
    above the control's 95th percentile."""
    real = pair_statistics(total, pairs, invariant, dst_pairs)
    mismatched = [(pairs[i][0], pairs[j][1]) for i in range(len(pairs)) for j in range(len(pairs)) if i != j]
    control = pair_statistics(total, mismatched, invariant, dst_pairs)
    out = {"pairs": len(pairs), "invariant_units": len(invariant), "dst_pairs": len(dst_pairs)}
    for col in ("into_invariant", "into_others", "swapped", "unswapped"):
        bar = np.nanquantile(control[col], 0.95) if control[col].notna().any() else np.nan
        out |= {col: np.nanmedian(real[col]) if real[col].notna().any() else np.nan,
                f"{col}_control": np.nanmedian(control[col]) if control[col].notna().any() else np.nan,
                f"{col}_above_control_p95": float((real[col] > bar).mean()) if np.isfinite(bar) else np.nan}
    out["swapped_beats_unswapped"] = float((real["swapped"] > real["unswapped"]).mean()) if dst_pairs else np.nan
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
