"""Benchmarks: each figure is a ratio of two timings taken in this same process run.

    python bench/run.py [--quick] [--device cpu|cuda] [--scaling]

``--scaling`` adds the dataset-size figures of issue 13 (whole runs on 200 and 1,000 shared ImageNet photos with
``--keep-samples 100``, and one vs two local Ray workers): about half an hour on two cores.

Prints ``name value`` lines and writes them to ``bench/results/latest.json``.
These machines are noisy: compare figures only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from equivar_core.activations import TRANSFORM_GROUPS, GroupPasses, SweepSettings, sample_activations  # noqa: E402
from equivar_core.capture import Network, capture, layer_modules  # noqa: E402
from equivar_core.images import iter_batches, plan_views  # noqa: E402
from equivar_core.models.registry import load_model  # noqa: E402
from equivar_core.scores import SampleGrid, TransformedVersion, pearson_cross, version_scores  # noqa: E402
from equivar_core.stimuli import render  # noqa: E402
from equivar_core.transforms import Rotate  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def activation_overhead(model, layers, n_images: int, batch: int, device: str) -> float:
    """sample_activations (every group) over the limit it could reach: the same model object passing the same
    transformed inputs in the same batches to the same deepest layer (in capture's CPU chunks), with nothing
    kept. The ratio is what capturing, sampling and summing moments add to the forward passes."""
    sweep = SweepSettings()
    views = plan_views(None, n_images, 0)
    versions = sweep.versions()
    inputs = []
    for b in iter_batches(views, 224, batch):
        x = b.images.to(device)
        inputs += [(g.images(x) if i else x).contiguous(memory_format=torch.channels_last)
                   for i, g in enumerate(versions)]
    deepest = [name for name in layer_modules(model) if name in layers][-1]

    @torch.inference_mode()
    def bare():                         # the passes alone: stop at the deepest layer, keep none of it
        with capture(model, [deepest], pre_activation=True) as cap:
            for x in inputs:
                cap.run(x, lambda name, acts: acts[:, :0])

    with tempfile.TemporaryDirectory() as d:
        def grouped():                  # what the pipeline does: the identity group, then each transform family
            for group in ("identity", *TRANSFORM_GROUPS):
                sample_activations(Network(model, 224, device), layers, views, d, GroupPasses(sweep, group, batch))

        work = best_of(grouped, 2)
    return work / best_of(bare, 2)


@contextlib.contextmanager
def forward_time(cls):
    """Seconds spent in ``cls.forward`` (the whole model's passes, however they end) while the block runs: a
    one-element list, filled in place."""
    spent, forward = [0.0], cls.forward

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return forward(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    cls.forward = timed
    try:
        yield spent
    finally:
        cls.forward = forward


def chunked_forward_speedup(model, n_images: int, batch: int = 16) -> float:
    """Time of ``batch``-image forward passes to ``_blocks.11.depthwise`` (224 px, CPU) in one piece over the
    same passes in ``capture``'s CPU chunks (:data:`equivar_core.capture.CPU_CHUNK_BYTES`)."""
    from equivar_core import capture as cap_module

    x = torch.rand(n_images, 3, 224, 224).contiguous(memory_format=torch.channels_last)

    def passes():
        with torch.inference_mode(), cap_module.capture(model, ["_blocks.11.depthwise"], pre_activation=True) as c:
            for i in range(0, n_images, batch):
                c.run(x[i:i + batch])

    chunked = best_of(passes)
    default, cap_module.CPU_CHUNK_BYTES = cap_module.CPU_CHUNK_BYTES, 2**62
    try:
        whole = best_of(passes)
    finally:
        cap_module.CPU_CHUNK_BYTES = default
    return whole / chunked


def scoring_figures(c: int = 80, n: int = 64, p: int = 113, naive_units: int = 24) -> dict[str, float]:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(2, n, p, c)).astype(np.float16)
    points = np.zeros((p, 2))                 # every point valid: the timing is of the products
    images = np.arange(n)
    grid = SampleGrid(points, 0.6, images)
    scoring = best_of(lambda: version_scores(samples, TransformedVersion(1, Rotate(90)), grid))
    a = torch.tensor(samples[0].reshape(-1, c), dtype=torch.float32)
    b = torch.tensor(samples[1].reshape(-1, c), dtype=torch.float32)
    gemm = best_of(lambda: torch.mm(a.T, b), 5)
    small = samples[:, :, :, :naive_units].astype(np.float32)
    xa, xb = small[0].reshape(-1, naive_units), small[1].reshape(-1, naive_units)

    def naive():
        return [[np.corrcoef(xa[:, u], xb[:, v])[0, 1] for v in range(naive_units)] for u in range(naive_units)]

    t_naive = best_of(naive, 1)
    t_fast = best_of(lambda: pearson_cross([xa], [xb]))
    # a score computes score and null: two products
    return {"scoring_vs_gemm": scoring / (2 * gemm), "scoring_vs_naive": t_naive / t_fast}


def stimuli_vs_pil(size: int = 64, n: int = 72) -> float:
    """Batched analytic rendering of an edge sweep over drawing each edge with PIL (4x supersampled)."""
    from PIL import Image, ImageDraw

    def pil():
        out = []
        for k in range(n):
            t = np.deg2rad(k * 360 / n)
            big = Image.new("L", (size * 4, size * 4), 64)
            c = size * 2
            d = np.array([np.cos(t), -np.sin(t)])
            e = np.array([-d[1], d[0]]) * size * 8
            poly = [tuple(c + e), tuple(c + e + d * size * 8), tuple(c - e + d * size * 8), tuple(c - e)]
            ImageDraw.Draw(big).polygon([tuple(map(float, q)) for q in poly], fill=192)
            out.append(np.asarray(big.resize((size, size), Image.BOX), dtype=np.float32) / 255)
        return np.stack(out)

    return best_of(pil) / best_of(lambda: render("edge", size, (size / 2, size / 2), size / 6))


def peak_rss_of_run(n_images: int, out: str) -> int:
    """Peak RSS (KiB) of a child process that streams ``n_images`` through the activation stage."""
    code = (
        "import sys, resource; sys.path.insert(0, %r)\n"
        "from equivar_core.activations import GroupPasses, SweepSettings, sample_activations\n"
        "from equivar_core.capture import Network\n"
        "from equivar_core.images import plan_views\n"
        "from equivar_core.models.registry import load_model\n"
        "m = load_model('efficientnet_lite0').module\n"
        "for g in ('identity', 'rotate', 'hflip', 'hue', 'scale'):\n"
        "    sample_activations(Network(m, 224), ['_act0', '_blocks.2'], plan_views(None, %d, 0), %r,\n"
        "                       GroupPasses(SweepSettings(), g, 16))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n" % (ROOT, n_images, out))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1])


def default_run_breakdown(n_images: int, out: str, layers: list[str]
                          ) -> tuple[dict[str, float], float, float, float]:
    """Share of each asset in a whole run (``layers``: empty = the preset); the times of a CLI run and of its
    unchanged re-run; and the run's wall time over the time its forward passes of the model take (the run's
    floor on this machine: every pass the run makes, with nothing else)."""
    from equivar_core.models.efficientnet_lite import EfficientNetLite
    from equivar_core.models.registry import load_model_once
    from pipelines.cli import main as cli

    load_model_once("efficientnet_lite0")           # loaded before the clock starts, as for the CLI run below
    with forward_time(EfficientNetLite) as passes:
        t = time.perf_counter()
        durations = asset_durations(n_images, os.path.join(out, "breakdown"), None, layers)
        wall = time.perf_counter() - t
    total = sum(durations.values())
    args = ["run", "--out", os.path.join(out, "cli"), "--n-images", str(n_images), "--quiet"] + (
        ["--layers", ",".join(layers)] if layers else [])
    t = time.perf_counter()
    assert cli(args) == 0
    full = time.perf_counter() - t
    t = time.perf_counter()
    assert cli(args) == 0
    noop = time.perf_counter() - t
    return {k: v / total for k, v in sorted(durations.items())}, full, noop, wall / passes[0]


SHARED_IMAGES = os.path.join(os.path.dirname(ROOT), "shared", "imagenet-sample")


def run_figures(n_images: int, keep: int, out: str, images: str | None, layers: list[str],
                trace: str | None = None) -> dict:
    """One whole run in a child process (its own peak memory): wall time, peak RSS, bytes under ``--out``,
    seconds per image of the passes over the images (every sampling asset's time over ``n_images``), and
    the asset during which the resident memory (sampled every 0.2 s) was highest, with that peak; ``trace``:
    a JSON file for the memory samples and each asset's start and end."""
    code = (
        "import json, resource, sys, threading, time; sys.path.insert(0, %r)\n"
        "sys.argv = ['run.py']\n"
        "from bench.run import asset_spans, resident_samples\n"
        "samples, stop = [], threading.Event()\n"
        "threading.Thread(target=resident_samples, args=(samples, stop), daemon=True).start()\n"
        "t = time.perf_counter()\n"
        "spans = asset_spans(%d, %r, %r, %r, keep_samples=%d)\n"
        "stop.set()\n"
        "print(json.dumps({'wall': time.perf_counter() - t, 'spans': spans, 'rss': samples,\n"
        "                  'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
        % (ROOT, n_images, out, images, layers, keep))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    found = json.loads(r.stdout.strip().splitlines()[-1])
    if trace:
        with open(trace, "w") as f:
            json.dump({"spans": found["spans"], "rss": found["rss"]}, f)
    disk = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
    passes = sum(end - start for k, (start, end) in found["spans"].items() if "samples" in k)
    peaks = {step: max((b for t, b in found["rss"] if start <= t <= end), default=0)
             for step, (start, end) in found["spans"].items()}
    top = max(peaks, key=peaks.get) if peaks else ""
    return {"wall_s": found["wall"], "peak_rss_gb": found["maxrss_kib"] / 2**20, "disk_gb": disk / 1e9,
            "passes_s_per_image": passes / n_images, "peak_step": top,
            "peak_step_rss_gb": peaks.get(top, 0) / 2**30}


def resident_samples(samples: list, stop, every: float = 0.2) -> None:
    """Append (time, resident bytes of this process) to ``samples`` every ``every`` seconds until ``stop``."""
    page = os.sysconf("SC_PAGE_SIZE")
    while not stop.wait(every):
        with open("/proc/self/statm") as f:
            samples.append((time.time(), int(f.read().split()[1]) * page))


def asset_durations(n_images: int, out: str, images: str | None, layers: list[str], **config) -> dict[str, float]:
    """Seconds per asset of one run of the ``equivar`` job in this process."""
    return {k: end - start for k, (start, end) in asset_spans(n_images, out, images, layers, **config).items()}


def asset_spans(n_images: int, out: str, images: str | None, layers: list[str], **config
                ) -> dict[str, tuple[float, float]]:
    """Start and end times of each asset's step in one run of the ``equivar`` job in this process."""
    from dagster import DagsterEventType, DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.resources import EquivarConfig

    config = EquivarConfig(n_images=n_images, out=out, images=images, layers=layers, **config)
    job = build_definitions(config).resolve_job_def("equivar")
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    starts, ends = {}, {}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("models", [config.default_partition])
        result = job.execute_in_process(instance=instance, run_config=quiet, partition_key=config.default_partition)
        for entry in instance.all_logs(result.run_id):
            ev = entry.dagster_event
            if ev is not None and ev.event_type == DagsterEventType.STEP_START:
                starts[ev.step_key] = entry.timestamp
            elif ev is not None and ev.event_type == DagsterEventType.STEP_SUCCESS:
                ends[ev.step_key] = entry.timestamp
    return {k: (starts[k], ends[k]) for k in ends if k in starts}


def shard_speedup(n_images: int, out: str, layers: list[str]) -> float:
    """Time of one sweep group's passes (``rotate``) in one process over the same on two local Ray workers
    (each second call timed: Ray already up; each task still loads the model, as it does in a run)."""
    from dataclasses import replace

    from equivar_core import stages
    from equivar_core.settings import RunSettings
    from pipelines.shards import shard_runner

    base = RunSettings(n_images=n_images, out=out, layers=tuple(layers))
    images_df, layers_df = stages.image_table(base), stages.layer_table(base)
    times = {}
    for workers in (1, 2):
        s = replace(base, workers=workers)
        run = shard_runner(s, layers)
        stages.transformed_activations(s, images_df, layers_df, "rotate", run_shards=run)
        t = time.perf_counter()
        stages.transformed_activations(s, images_df, layers_df, "rotate", run_shards=run)
        times[workers] = time.perf_counter() - t
    return times[1] / times[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run for CI")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scaling", action="store_true", help="also the dataset-size figures (about 30 minutes)")
    args = ap.parse_args()
    quick = args.quick
    figures: dict[str, object] = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                                  "threads": torch.get_num_threads(), "quick": quick}
    model = load_model("efficientnet_lite0").module.to(args.device)
    figures["activation_overhead"] = activation_overhead(model, ["_act0", "_blocks.2", "_blocks.4"],
                                                         8 if quick else 64, 16, args.device)
    if args.device == "cpu":
        figures["chunked_forward_speedup"] = chunked_forward_speedup(model, 16 if quick else 96)
    figures.update(scoring_figures(c=40 if quick else 112, n=16 if quick else 200))
    figures["stimuli_vs_pil"] = stimuli_vs_pil()
    with tempfile.TemporaryDirectory() as d:
        small, large = (8, 40) if quick else (200, 1000)
        figures["rss_growth"] = peak_rss_of_run(large, os.path.join(d, "l")) / peak_rss_of_run(small,
                                                                                              os.path.join(d, "s"))
    with tempfile.TemporaryDirectory() as d:
        # quick: three small privileged layers; else the default run (the preset, 48 photos)
        layers = ["_act0", "_blocks.0.depthwise", "_blocks.2.depthwise"] if quick else []
        breakdown, full, rerun, over_passes = default_run_breakdown(4 if quick else 48, d, layers)
    figures["noop_rerun"] = rerun / full
    figures["run_over_forward_passes"] = over_passes
    figures["default_run_breakdown"] = breakdown
    figures["family_sweeps_share"] = breakdown.get("family_sweeps", 0.0)
    if args.scaling or quick:
        # quick: the same measurement on a few photos and small layers (the code path, not the figure)
        images = SHARED_IMAGES if os.path.isdir(SHARED_IMAGES) else None
        small, large, keep = (6, 12, 4) if quick else (200, 1000, 100)
        layers = ["_act0", "_blocks.0.depthwise"] if quick else []
        with tempfile.TemporaryDirectory() as d:
            a = run_figures(small, keep, os.path.join(d, "small"), images, layers)
            b = run_figures(large, keep, os.path.join(d, "large"), images, layers)
        figures[f"run_{small}_images"], figures[f"run_{large}_images"] = a, b
        figures["keep_samples_disk_ratio"] = b["disk_gb"] / a["disk_gb"]
        figures["keep_samples_peak_rss_ratio"] = b["peak_rss_gb"] / a["peak_rss_gb"]
        figures["passes_per_image_ratio"] = b["passes_s_per_image"] / a["passes_s_per_image"]
        with tempfile.TemporaryDirectory() as d:
            figures["ray_2_workers_speedup"] = shard_speedup(8 if quick else 64, d,
                                                             ["_act0", "_blocks.2.depthwise", "_blocks.4.depthwise"])
    for k, v in figures.items():
        if isinstance(v, dict):
            print(k, " ".join(f"{a}={b:.3f}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items()))
        elif isinstance(v, float):
            print(k, f"{v:.3f}")
        else:
            print(k, v)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.json"), "w") as f:
        json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
