"""Weight tying of a finished run's families, measured on labelled photos (the ``weight_tying`` stage, alone).

    python bench/tying.py efficientnet_lite0 --out lite --images ../shared/imagenet-sample --n-images 1000

Reads the model's ``families`` and ``layers`` tables from the results folder's Parquet files (no Dagster, no
catalog: it runs where only torch, numpy, pandas and pyarrow are installed, a GPU machine say) and writes the
``weight_tying`` rows that ``equivar run --set tying.images=...`` would write, as CSV. Every tying setting is a
flag; ``--weights`` loads a state-dict file for the architecture (where its weights package is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from equivar_core.settings import RunSettings  # noqa: E402
from equivar_core.stages.tying_tables import weight_tying_table  # noqa: E402
from equivar_core.storage import read_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the model's spec (a built-in name, or untrained:NAME): its run in the results "
                                 "folder gives the families")
    p.add_argument("--out", required=True, help="the results folder of the run")
    p.add_argument("--images", required=True, help="a folder of labelled photos")
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--weights", default=None)
    p.add_argument("--max-families", type=int, default=2)
    p.add_argument("--controls", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=None, help="write the rows here (default: print them)")
    args = p.parse_args(argv)
    name = RunSettings(model=args.model).model_name          # untrained:NAME is stored as untrained_NAME
    tables = {t: read_table(args.out, t, name) for t in ("families", "layers")}
    missing = [t for t, v in tables.items() if v is None]
    if missing:
        print(f"no {', '.join(missing)} of {args.model} under {args.out}: run `equivar run` first", file=sys.stderr)
        return 2
    families, layers = (tables[t].to_pandas() for t in ("families", "layers"))
    base = RunSettings()
    # the photos are also the run's: an untrained: model's batch norms are set on them, as when it was run there
    s = RunSettings(model=args.model, weights=args.weights, out=args.out, layers=tuple(layers["layer"]),
                    images=args.images, n_images=args.n_images,
                    device=args.device, batch_size=args.batch_size, seed=args.seed,
                    tying=dataclasses.replace(base.tying, images=args.images, n_images=args.n_images,
                                              max_families=args.max_families, controls=args.controls)).validate()
    t0 = time.perf_counter()
    df = weight_tying_table(s, families, layers.iloc[:0], layers)
    print(f"{args.model}: {len(df)} rows in {time.perf_counter() - t0:.0f} s on {s.resolved_device()}",
          file=sys.stderr)
    if args.csv:
        df.to_csv(args.csv, index=False)
    else:
        print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
