"""``equivar run``: materialize one model's changed assets in-process, through the same Dagster definitions as
the UI, with progress lines; bad input fails in one line before anything is written."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import torch

from equivar_core.errors import EquivarError
from equivar_core.images import plan_views, readable, source_file
from equivar_core.layout import Layout, safe_value
from equivar_core.model_index import INDEX_DIR, ModelEntry, lookup
from equivar_core.runlock import run_lock
from equivar_core.settings import DEFAULT_MODEL, default_out
from equivar_core.storage import remove_temporaries

from ..assets import DECLARED, SIBLINGS
from ..definitions import build_definitions
from ..fingerprints import catalog_problem, changed_assets, load_fingerprints, run_selection, save_fingerprints
from ..partitions import add_model, check_loads
from ..resources import EquivarConfig
from ..shards import require_ray
from . import _layers
from .common import _check_writable, _instance


def command(args) -> int:
    out = os.path.abspath(args.out or default_out())
    if args.name is not None and not args.name.strip():
        raise EquivarError("bad model name: --name must not be empty")
    model, weights, step, layers = args.model, args.weights, args.step, _layers(args.layers)
    known = lookup(out, args.name) if args.name and model is None else None
    if known is not None:                  # `equivar run --name X`: the model registered as X, options on top
        model, weights = known.model, weights or known.weights
        step = step if step is not None else known.step
        layers = layers or list(known.layers)
    config = EquivarConfig(model=model or DEFAULT_MODEL, weights=weights, name=args.name, layers=layers,
                           images=args.images, n_images=args.n_images, out=out, device=args.device,
                           batch_size=args.batch_size, seed=args.seed, workers=args.workers,
                           keep_samples=args.keep_samples, overrides=list(args.overrides))
    entry = ModelEntry(name=config.default_partition, model=config.model, weights=weights, step=step,
                       layers=tuple(layers))
    _validate(config, entry)
    layout = Layout(out, entry.name)
    with run_lock(layout.run_lock, f"{entry.name} in {out}") as locked:
        return _locked_run(args, config, entry, layout, locked)


def _locked_run(args, config, entry, layout, locked: bool) -> int:
    """The run, holding the model's run lock (``locked``: False where the file system has no locks)."""
    handler = _Progress()
    if locked:                             # no live writer of this model: what a killed run left can go
        left = remove_temporaries(layout.own_dirs()) + remove_temporaries(
            [os.path.join(layout.out, INDEX_DIR)], safe_value(entry.name) + ".json", recursive=False)
        if left and not args.quiet:
            print(f"removed {len(left)} temporary file(s) an interrupted run of {entry.name} left", file=sys.stderr)
    loggers = [logging.getLogger("equivar_core"), logging.getLogger("equivar")]
    if not args.quiet:
        for lg in loggers:
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)
    try:
        with _instance() as instance:
            entry = add_model(config, entry, instance, check=False)     # its partition; checked by _validate
            s = config.settings(entry.name)
            changed, fingerprints = changed_assets(s, DECLARED)
            if args.force:
                changed = list(fingerprints)
            problem = catalog_problem(s.out)
            report = not args.no_report
            if not changed and problem is None and (not report or os.path.exists(s.layout.report_index)):
                print(f"nothing changed: {s.model_name} is up to date in {s.layout.catalog} "
                      f"({time.time() - handler.t0:.1f}s)")
                return 0
            if problem is not None and problem != "missing":
                # said even with --quiet: the user may have had it open, or seen it fail to open
                print(f"equivar: the catalog {s.layout.catalog} cannot be used ({problem}): rebuilding it from "
                      "the tables", file=sys.stderr)
            # forget what is about to be rewritten first: a run killed half-way must never leave tables of
            # two settings reported up to date (the next run recomputes whatever has no fingerprint)
            save_fingerprints(s, {k: v for k, v in load_fingerprints(s).items() if k not in changed})
            selection = run_selection(changed, SIBLINGS, report)
            if changed and not report:         # a report of the tables as they were would be out of date
                _remove(s.layout.report_index)
            job = build_definitions(config).resolve_job_def("equivar")
            result = _interruptible(lambda: job.execute_in_process(
                instance=instance, raise_on_error=False, asset_selection=selection, partition_key=entry.name,
                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}))
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    # each completed asset recorded its fingerprint as its output was committed (pipelines.io_manager)
    if not result.success:
        message, code = _failure(result)
        print(f"equivar: error: {message}", file=sys.stderr)
        return code
    print(f"done: {s.model_name} -> {s.layout.catalog} ({time.time() - handler.t0:.1f}s)")
    return 0


def _check_photos(source: str | None, n_images: int, seed: int, what: str = "") -> None:
    """That some of the photos a run would read from ``source`` exist and open (one line otherwise)."""
    views = plan_views(source, n_images, seed)
    if source is not None and not any(os.path.isfile(source_file(v.path)) for v in views):
        raise EquivarError(f"{what}none of the images listed in {source} exists")
    if not any(readable(v.path) for v in views):
        raise EquivarError(f"{what}none of the {len(views)} files chosen from {source or 'the default photos'} "
                           "opens as an image")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _validate(config, entry) -> None:
    """Fail fast on bad input, before anything is written: the settings first (cheap, no model loaded)."""
    s = config.settings()                      # every setting within its declared range (RunSettings.validate)
    if config.device == "cuda":
        if not torch.cuda.is_available():
            raise EquivarError("--device cuda given but no CUDA device is available")
    require_ray(s.workers)
    check_loads(config, entry)
    _check_photos(s.images, s.n_images, s.seed)
    if s.tying.images:                         # the photos weight_tying measures on
        _check_photos(s.tying.images, s.tying.n_images, s.seed, "tying.images: ")
    _check_writable(s.out)


class _Progress(logging.Handler):
    def __init__(self):
        super().__init__()
        self.t0 = time.time()

    def emit(self, record):
        print(f"[{time.time() - self.t0:6.1f}s] {record.getMessage()}", file=sys.stderr, flush=True)


def _interruptible(work):
    """``work()`` in a worker thread, so that Ctrl-C stops the run within a moment (Dagster's in-process
    executor captures SIGINT in the main thread and finishes the running step). On Ctrl-C: one line,
    exit 130. Every file is written under a temporary name and renamed, and the fingerprints of the
    assets being recomputed were cleared before the run, so the folder holds complete files and a re-run
    recomputes what did not finish."""
    box = {}

    def run():
        try:
            box["result"] = work()
        except BaseException as exc:          # handed to the main thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="equivar-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        print("equivar: interrupted: finished tables are kept; a re-run recomputes the rest", file=sys.stderr,
              flush=True)
        os._exit(130)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _failure(result) -> tuple[str, int]:
    """One line and an exit code for a failed run, from Dagster's result API: a failed asset check first, else
    the first failed step's error (exit 2 where it is an :class:`EquivarError`, bad input; else 1)."""
    for ev in result.get_asset_check_evaluations():
        if not ev.passed:
            return (f"check {ev.check_name} failed on {ev.asset_key.to_user_string()}: "
                    f"{ev.description or ''}").strip(), 1
    for event in result.get_step_failure_events():
        err = event.step_failure_data.error
        while err.cause is not None and "EquivarError" not in err.cls_name:
            err = err.cause
        return f"{event.step_key}: {err.message.strip().splitlines()[-1]}", 2 if err.cls_name == "EquivarError" else 1
    return "run failed", 1
