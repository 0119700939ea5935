"""The ``equivar`` command line (see CONTRACT.md): one module per command (``run``, ``sql``, ``models``,
``report``); this module parses the arguments and turns every error into one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from equivar_core.errors import EquivarError
from equivar_core.settings import RunSettings


def _at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_nonnegative, _positive = _at_least(0), _at_least(1)


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
    run.add_argument("--layers", default=None, help="comma-separated layer names, or a named preset: late (the last "
                     "blocks and the head of a built-in architecture, or a model's late_layers; default: the "
                     "model's preset)")
    run.add_argument("--images", default=None, help="folder (recursive) or text file of image paths")
    run.add_argument("--n-images", type=_positive, default=RunSettings.n_images, help="number of natural images")
    run.add_argument("--out", default=None, help="output folder (default: $EQUIVAR_HOME or ./equivar-data)")
    run.add_argument("--device", default=RunSettings.device, choices=["auto", "cpu", "cuda"])
    run.add_argument("--batch-size", type=_positive, default=RunSettings.batch_size)
    run.add_argument("--seed", type=int, default=RunSettings.seed)
    run.add_argument("--workers", type=_positive, default=RunSettings.workers,
                     help="image shards as Ray tasks: the cluster at $RAY_ADDRESS, else a local one (default 1: "
                          "in this process)")
    run.add_argument("--keep-samples", type=_nonnegative, default=RunSettings.keep_samples, metavar="N",
                     help="store per-image activation samples for the first N images (default %(default)s); "
                          "scores come from moments over all images either way")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="overrides",
                     help="any analysis setting, e.g. families.min_similarity=0.8 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--force", action="store_true", help="recompute every asset, changed or not")
    run.add_argument("--no-report", action="store_true",
                     help="tables and catalog only, no HTML report (a report of older results is removed; the "
                          "next run without this flag writes it)")
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
    add.add_argument("--model", default=RunSettings.model, help="built-in name or package.module:callable")
    add.add_argument("--weights", default=None, help="state-dict file for the architecture")
    add.add_argument("--step", type=int, default=None, help="training step of the checkpoint")
    add.add_argument("--layers", default=None, help="comma-separated layer names, or a named preset: late (the last "
                     "blocks and the head of a built-in architecture, or a model's late_layers; default: the "
                     "model's preset)")
    add.add_argument("--out", default=None, dest="add_out")
    cmp = sub.add_parser("compare", help="match the families of two models run into one folder (family_matches)")
    cmp.add_argument("model_a", help="a model name of --out (the model column, as `equivar models --out` lists)")
    cmp.add_argument("model_b", help="the other model")
    cmp.add_argument("--out", default=None)
    cmp.add_argument("--draws", type=_positive, default=50, help="rebuilds of the null (default %(default)s)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the null's random units")
    emg = sub.add_parser("emergence", help="families over training: each family of a training run's last "
                                           "checkpoint matched in the earlier ones (family_emergence)")
    emg.add_argument("--out", default=None)
    emg.add_argument("--draws", type=_positive, default=50, help="rebuilds of the null (default %(default)s)")
    emg.add_argument("--seed", type=int, default=0, help="seed of the null's random units")
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
        # each command's module is imported when it runs: `equivar sql` does not load Dagster or torch
        code = importlib.import_module(f".{args.command}", __name__).command(args)
        sys.stdout.flush()                      # a closed pipe shows here, not at exit
        return code
    except EquivarError as exc:                 # bad input: exit 2 (a busy model: 75, see equivar_core.runlock)
        print(f"equivar: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("equivar: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                     # `equivar sql ... | head -1`: stop quietly, as `seq` does
        _drop_stdout()
        return 141
    except MemoryError:
        print("equivar: error: out of memory", file=sys.stderr)
        return 1
    except OSError as exc:                      # a full disk, a folder taken away: one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"equivar: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):               # stdout is not a file (tests capture it)
        pass


def _layers(text: str | None) -> list[str]:
    if text is None:
        return []
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise EquivarError(f"--layers {text!r} names no layer (leave it out for the model's preset)")
    return names
