"""The ``equivar`` command line (see CONTRACT.md): run, sql, models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time

from equivar_core.errors import EquivarError
from equivar_core.settings import DEFAULT_N_IMAGES, default_out

def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``equivar: error: ...``, exit 2), like every other bad input."""

    def error(self, message: str):
        where = self.prog.removeprefix("equivar").strip()
        self.exit(2, f"equivar: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="equivar", description="Find transformed copies of units in vision models.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every table for one model")
    run.add_argument("--model", default=None, help="built-in name or package.module:callable (default: what --name "
                                                     "is registered as in --out, else efficientnet_lite0)")
    run.add_argument("--weights", default=None, help="state-dict file for the architecture")
    run.add_argument("--name", default=None,
                     help="value of the model column and the partition key (default: from the spec)")
    run.add_argument("--step", type=int, default=None, help="training step of the checkpoint in --weights")
    run.add_argument("--layers", default=None, help="comma-separated layer names (default: the model's preset)")
    run.add_argument("--images", default=None, help="folder (recursive) or text file of image paths")
    run.add_argument("--n-images", type=_positive, default=DEFAULT_N_IMAGES, help="number of natural images")
    run.add_argument("--out", default=None, help="output folder (default: $EQUIVAR_HOME or ./equivar-data)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--batch-size", type=_positive, default=16)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--workers", type=_positive, default=1,
                     help="image shards as Ray tasks: the cluster at $RAY_ADDRESS, else a local one (default 1: "
                          "in this process)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="overrides",
                     help="any analysis setting, e.g. families.min_similarity=0.8 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--force", action="store_true", help="recompute every asset, changed or not")
    sql = sub.add_parser("sql", help="run one read-only SQL query on the results")
    sql.add_argument("query")
    sql.add_argument("--out", default=None)
    sql.add_argument("--format", default="table", choices=["table", "csv", "json"])
    models = sub.add_parser("models", help="list the built-in models and the models registered in --out")
    models.add_argument("--out", default=None)
    models.add_argument("--layers", default=None, metavar="MODEL",
                        help="list every addressable layer of MODEL (a spec) with channels, stride, receptive "
                             "field and whether its basis is privileged")
    models.add_argument("--weights", default=None, help="with --layers: a state-dict file for the architecture")
    models_sub = models.add_subparsers(dest="action")
    add = models_sub.add_parser("add", help="register a model or checkpoint as a partition (no run)")
    add.add_argument("name", help="the model column value and partition key, e.g. mynet@step_1200")
    add.add_argument("--model", default="efficientnet_lite0", help="built-in name or package.module:callable")
    add.add_argument("--weights", default=None, help="state-dict file for the architecture")
    add.add_argument("--step", type=int, default=None, help="training step of the checkpoint")
    add.add_argument("--layers", default=None, help="comma-separated layer names (default: the model's preset)")
    add.add_argument("--out", default=None, dest="add_out")
    rep = sub.add_parser("report", help="write a static HTML report of a run")
    rep.add_argument("--out", default=None)
    rep.add_argument("--model", default=None, help="the model column value (default: the first model in --out)")
    rep.add_argument("--featurevis", action="store_true",
                     help="add feature visualizations of family members (cached; seconds per unit on a CPU)")
    rep.add_argument("--featurevis-steps", type=int, default=96)
    rep.add_argument("--families-per-layer", type=int, default=3,
                     help="galleries of each layer's N largest families (the rest are listed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "sql":
            return _sql(args)
        if args.command == "report":
            return _report(args)
        if args.action == "add":
            return _add_model(args)
        return _models(args)
    except EquivarError as exc:
        print(f"equivar: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equivar: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:                      # a full disk, a folder taken away: one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"equivar: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


def _models(args) -> int:
    from equivar_core.model_index import registered
    from equivar_core.models.registry import BUILTINS

    if args.layers:
        return _model_layers(args.layers, args.weights)

    for arch in BUILTINS.values():
        print(f"{arch.name}\n  {arch.description}\n  default layers: {', '.join(arch.preset_layers)}")
    print("package.module:callable\n  any torch.nn.Module returned by a no-argument callable")
    out = os.path.abspath(args.out or default_out())
    entries = registered(out)
    if entries:
        print(f"\nregistered in {out}:")
        for e in entries:
            extra = (f" weights={e.weights}" if e.weights else "") + (f" step={e.step}" if e.step is not None else "")
            print(f"{e.name}  model={e.model}{extra}")
    return 0


def _model_layers(spec: str, weights: str | None) -> int:
    """``equivar models --layers SPEC``: one line per addressable layer."""
    from equivar_core.capture import layer_geometry
    from equivar_core.layer_info import inspect_layers
    from equivar_core.models.registry import load_model

    model = load_model(spec, weights, untrained_ok=True)
    infos = inspect_layers(model.module, model.input_size)
    rf = {g.layer: g.rf_radius for g in layer_geometry(model.module, [i.layer for i in infos], model.input_size)}
    print(f"{'layer':<34} {'kind':<14} {'units':>5} {'map':>9} {'stride':>6} {'rf_px':>6}  privileged")
    for i in infos:
        print(f"{i.layer:<34} {i.kind[:14]:<14} {i.n_units:>5} {f'{i.height}x{i.width}':>9} {i.stride:>6g} "
              f"{rf[i.layer]:>6.1f}  {'yes' if i.privileged else 'no '} ({i.reason})")
    if model.weights_sha256 == "untrained":
        print(f"(no weights given for {spec}: receptive fields measured on an untrained network)")
    return 0


def _instance():
    """The Dagster instance of $DAGSTER_HOME (runs and partitions then show in the UI), else a throwaway one."""
    from dagster import DagsterInstance

    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


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


def _layers(text: str | None) -> list[str]:
    if text is None:
        return []
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise EquivarError(f"--layers {text!r} names no layer (leave it out for the model's preset)")
    return names


def _add_model(args) -> int:
    from equivar_core.model_index import ModelEntry

    from .partitions import add_model
    from .resources import EquivarConfig

    out = os.path.abspath(args.add_out or args.out or default_out())
    _check_writable(out)
    entry = ModelEntry(name=args.name, model=args.model, weights=args.weights, step=args.step,
                       layers=tuple(_layers(args.layers)))
    with _instance() as instance:
        entry = add_model(EquivarConfig(model=args.model, out=out), entry, instance)
    print(f"added {entry.name}: {entry.model}" + (f" with {entry.weights}" if entry.weights else "") +
          f" (materialize it with `equivar run --name {entry.name}` or from the UI)")
    return 0


def _check_writable(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise EquivarError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def _validate(config, entry) -> None:
    """Fail fast on bad input, before anything is written."""
    from equivar_core.images import plan_views, readable, source_file

    from .partitions import check_loads

    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise EquivarError("--device cuda given but no CUDA device is available")
    check_loads(config, entry)
    s = config.settings()
    views = plan_views(s.images, s.n_images, s.seed)
    if s.images is not None and not any(os.path.isfile(source_file(v.path)) for v in views):
        raise EquivarError(f"none of the images listed in {s.images} exists")
    if not any(readable(v.path) for v in views):
        raise EquivarError(f"none of the {len(views)} files chosen from {s.images or 'the default photos'} "
                           "opens as an image")
    _check_writable(s.out)


class _Progress(logging.Handler):
    def __init__(self):
        super().__init__()
        self.t0 = time.time()

    def emit(self, record):
        print(f"[{time.time() - self.t0:6.1f}s] {record.getMessage()}", file=sys.stderr, flush=True)


def _run(args) -> int:
    from equivar_core.model_index import ModelEntry, lookup

    from .definitions import build_definitions
    from .assets import GRAPH, SIBLINGS
    from .fingerprints import catalog_intact, changed_assets, load_fingerprints, run_selection, save_fingerprints
    from .partitions import add_model
    from .resources import CODE_VERSION, EquivarConfig

    out = os.path.abspath(args.out or default_out())
    if args.name is not None and not args.name.strip():
        raise EquivarError("bad model name: --name must not be empty")
    model, weights, step, layers = args.model, args.weights, args.step, _layers(args.layers)
    known = lookup(out, args.name) if args.name and model is None else None
    if known is not None:                  # `equivar run --name X`: the model registered as X, options on top
        model, weights = known.model, weights or known.weights
        step = step if step is not None else known.step
        layers = layers or list(known.layers)
    config = EquivarConfig(model=model or "efficientnet_lite0", weights=weights, name=args.name, layers=layers,
                           images=args.images, n_images=args.n_images, out=out, device=args.device,
                           batch_size=args.batch_size, seed=args.seed, workers=args.workers,
                           overrides=list(args.overrides))
    entry = ModelEntry(name=config.default_partition, model=config.model, weights=weights, step=step,
                       layers=tuple(layers))
    _validate(config, entry)
    handler = _Progress()
    loggers = [logging.getLogger("equivar_core"), logging.getLogger("equivar")]
    if not args.quiet:
        for lg in loggers:
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)
    try:
        with _instance() as instance:
            entry = add_model(config, entry, instance, check=False)     # its partition; checked by _validate
            s = config.settings(entry.name)
            changed, fingerprints = changed_assets(s, CODE_VERSION, GRAPH)
            if args.force:
                changed = list(fingerprints)
            catalog = os.path.join(s.out, "equivar.duckdb")
            if not changed and catalog_intact(s.out):
                print(f"nothing changed: {s.model_name} is up to date in {catalog} "
                      f"({time.time() - handler.t0:.1f}s)")
                return 0
            # forget what is about to be rewritten first: a run killed half-way must never leave tables of
            # two settings reported up to date (the next run recomputes whatever has no fingerprint)
            save_fingerprints(s, {k: v for k, v in load_fingerprints(s).items() if k not in changed})
            selection = run_selection(changed, SIBLINGS)
            job = build_definitions(config).resolve_job_def("equivar")
            result = _interruptible(lambda: job.execute_in_process(
                instance=instance, raise_on_error=False, asset_selection=selection, partition_key=entry.name,
                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}))
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    # each completed asset recorded its fingerprint as its output was committed (pipelines.io_manager)
    if not result.success:
        message, code = "run failed", 1
        for event in result.all_events:
            if event.event_type_value == "ASSET_CHECK_EVALUATION":
                ev = event.event_specific_data
                if not ev.passed:
                    message = (f"check {ev.check_name} failed on {ev.asset_key.to_user_string()}: "
                               f"{ev.description or ''}").strip()
                    break
        for event in result.all_events if message == "run failed" else []:
            if event.is_step_failure:
                err = event.step_failure_data.error
                while err.cause is not None and "EquivarError" not in err.cls_name:
                    err = err.cause
                code = 2 if err.cls_name == "EquivarError" else 1
                message = f"{event.step_key}: {err.message.strip().splitlines()[-1]}"
                break
        print(f"equivar: error: {message}", file=sys.stderr)
        return code
    print(f"done: {s.model_name} -> {os.path.join(s.out, 'equivar.duckdb')} ({time.time() - handler.t0:.1f}s)")
    return 0


def _report(args) -> int:
    from equivar_core.report import build_report

    out = os.path.abspath(args.out or default_out())
    import pyarrow as pa

    try:
        index = build_report(out, args.model, args.featurevis, args.featurevis_steps, args.families_per_layer)
    except FileNotFoundError as exc:
        raise EquivarError(str(exc)) from None
    except pa.ArrowException as exc:           # a damaged table file
        raise EquivarError(f"{str(exc).splitlines()[0]}: run `equivar run --out {out}` to recompute it") from None
    print(index)
    return 0


def _sql(args) -> int:
    import duckdb

    from equivar_core.storage import open_catalog, read_only_query

    out = os.path.abspath(args.out or default_out())
    try:
        con = open_catalog(out)
    except FileNotFoundError:
        raise EquivarError(f"no catalog in {out}: run `equivar run --out {out}` first") from None
    except duckdb.Error as exc:
        raise EquivarError(f"the catalog in {out} is unreadable ({str(exc).strip().splitlines()[0]}): "
                           f"run `equivar run --out {out}` to rebuild it") from None
    try:
        df = read_only_query(con, args.query)
    except ValueError as exc:
        raise EquivarError(str(exc)) from None
    except duckdb.Error as exc:
        raise EquivarError(str(exc).strip().splitlines()[0]) from None
    finally:
        con.close()
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records") + "\n")
    else:
        print(df.to_string(index=False) if len(df) else "(no rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
