"""Top-1 of built-in models on labelled photos (the class from each file name or folder, equivar_core.labels).

    python bench/top1.py efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 --images ../shared/imagenet-sample

One pass over the photos per model, a batch at a time; each photo's centre square at the model's input size,
as every run reads photos.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from equivar_core.images import plan_views  # noqa: E402
from equivar_core.labels import top1  # noqa: E402
from equivar_core.models.registry import load_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model specs")
    p.add_argument("--images", required=True, help="a folder of labelled photos")
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    views = plan_views(args.images, args.n_images, 0)
    print("| model | input | parameters | photos | top-1 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in args.models:
        t = time.perf_counter()
        model = load_model(spec)
        accuracy, seen = top1(model.module, views, model.input_size, args.batch_size)
        print(f"| {spec} | {model.input_size} | {model.n_params / 1e6:.2f} M | {seen} | {100 * accuracy:.1f}% "
              f"| {time.perf_counter() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
