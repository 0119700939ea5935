"""Train the small CNN briefly and save checkpoints along the way, then let the sensor analyse them.

    python examples/train_checkpoints.py [--images ../shared/imagenet-sample] [--steps 600] [--out DIR]

Trains on the first 100 photos of the folder (one class per photo; random
crops and flips at 64 px), or on scikit-image's photos when the folder is
missing, and saves ``<out>/checkpoints/step_<N>.pt`` at a few steps. Then it
asks the checkpoint sensor for runs, executes each (as the Dagster daemon
would) into ``<out>/results`` and prints how families emerge over training:

    equivar sql --out <out>/results "select m.step, f.layer, f.transform, count(distinct f.family) as families,
        count(*) as units from families f join models m using (model) group by all order by 1, 2, 3"

and, with ``equivar emergence`` (``family_emergence``), when each family of the last checkpoint first
appeared and whether whole or member by member.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from equivar_core.images import load_view, plan_views  # noqa: E402
from examples.small_cnn import SmallCNN  # noqa: E402

SPEC = "examples.small_cnn:small_cnn"


def load_photos(source: str | None, n: int) -> torch.Tensor:
    """Up to ``n`` photos at 96 px (crops are taken from these)."""
    views = plan_views(source, n, seed=0)
    imgs = [load_view(v, 96) for v in views]
    return torch.stack([x for x in imgs if x is not None])


def train(photos: torch.Tensor, steps: int, save_at: list[int], folder: str, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = SmallCNN(n_classes=len(photos))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    os.makedirs(folder, exist_ok=True)
    for step in range(steps + 1):
        if step in save_at:
            torch.save(model.state_dict(), os.path.join(folder, f"step_{step}.pt"))
        if step == steps:
            break
        idx = torch.randint(len(photos), (32,), generator=gen)
        y0, x0 = torch.randint(0, 33, (2,), generator=gen).tolist()
        x = photos[idx, :, y0:y0 + 64, x0:x0 + 64]
        if torch.rand(1, generator=gen).item() < 0.5:
            x = x.flip(-1)
        loss = F.cross_entropy(model(x), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)


def analyse(folder: str, results: str, n_images: int) -> None:
    from dagster import DagsterInstance, build_sensor_context

    from pipelines.definitions import build_definitions
    from pipelines.resources import EquivarConfig
    from pipelines.sensors import checkpoint_sensor

    os.environ.update(EQUIVAR_CHECKPOINTS=folder, EQUIVAR_CHECKPOINT_MODEL=SPEC, EQUIVAR_CHECKPOINT_NAME="small_cnn")
    config = EquivarConfig(model=SPEC, layers=["relu1", "relu2", "relu3"], n_images=n_images, out=results,
                           images=os.environ.get("EQUIVAR_IMAGES") or None)
    job = build_definitions(config).resolve_job_def("equivar")
    with DagsterInstance.ephemeral() as instance:
        # what the daemon does with the sensor's result: add the partitions, then launch one run each
        with build_sensor_context(instance=instance, resources={"equivar": config}) as ctx:
            result = checkpoint_sensor(ctx)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for r in result.run_requests:
            print("analysing", r.partition_key, flush=True)
            assert job.execute_in_process(instance=instance, partition_key=r.partition_key, tags=r.tags,
                                          run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
                                          ).success


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(os.path.dirname(ROOT), "shared", "imagenet-sample"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default="equivar-training-example")
    ap.add_argument("--n-images", type=int, default=48)
    args = ap.parse_args()
    source = args.images if os.path.isdir(args.images) else None
    photos = load_photos(source, 100)
    folder = os.path.join(os.path.abspath(args.out), "checkpoints")
    save_at = sorted({0, args.steps // 12, args.steps // 3, args.steps})
    train(photos, args.steps, save_at, folder)
    if source:
        os.environ["EQUIVAR_IMAGES"] = source
    results = os.path.join(os.path.abspath(args.out), "results")
    analyse(folder, results, args.n_images)
    from pipelines.cli import main as equivar

    equivar(["emergence", "--out", results])              # when each family of the last checkpoint appeared
    print("results in", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
