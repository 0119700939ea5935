"""Faults and bad input: one clear line, nothing lost, nothing mixed, nothing run or read that should not be.

Table-driven: each case is named after what it tries. Bad input must fail with exit 2 and one line
before anything is written; faults (a kill, Ctrl-C, a corrupt file) must leave every table equal to
the clean run before or after it (rows hashed), never a mixture reported as current.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from tests.cli_runs import equivar, in_process

#: the planted run the cases damage: its tables (the HTML report, a few seconds of matplotlib a run, only where a
#: case is about it: PLANTED_WITH_REPORT)
PLANTED_WITH_REPORT = ["--model", "equivar_core.planted:planted", "--n-images", "6", "--layers", "relu1,relu2",
                       "--quiet"]
PLANTED = [*PLANTED_WITH_REPORT[:-1], "--no-report", "--quiet"]
TABLES = ("images", "layers", "unit_stats", "tuning", "unit_profiles", "families", "basis_control", "layer_summary",
          "family_stability", "sensitivity", "family_sweeps", "circuit_weights", "circuit_families")


def table_hashes(out: str) -> dict[str, str]:
    """Sorted rows of every table, hashed (through the read-only catalog, as a user reads them)."""
    from equivar_core.storage import open_catalog

    con = open_catalog(out)
    try:
        views = [r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()]
        hashes = {}
        for v in sorted(views):
            df = con.execute(f'select * from "{v}"').df()
            df = df.reindex(sorted(df.columns), axis=1)
            rows = sorted(repr(row) for row in df.itertuples(index=False, name=None))
            hashes[v] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return hashes
    finally:
        con.close()


def files_under(out: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs}


def file_digests(out: str) -> dict[str, str]:
    """Every file under ``out`` and the SHA-256 of its bytes: equal digests are equal tables, and cheaper
    to check than :func:`table_hashes`."""
    return {p: hashlib.sha256(open(os.path.join(out, p), "rb").read()).hexdigest() for p in files_under(out)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean run of the planted model: its folder (never modified by the cases) and its table hashes."""
    out = str(tmp_path_factory.mktemp("clean"))
    r = equivar("run", "--out", out, *PLANTED)
    assert r.returncode == 0, r.stderr
    return out, table_hashes(out)


@pytest.fixture
def results(clean, tmp_path):
    """A private copy of the clean results folder for a case to damage."""
    out = str(tmp_path / "O")
    shutil.copytree(clean[0], out)
    return out


def one_line_error(r, code: int = 2) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("equivar: "), r.stderr[-2000:]
    return lines[0]


# -- bad input: exit 2, one line, nothing written -------------------------------------------------------------

def _weights(tmp, kind: str) -> str:
    path = str(tmp / f"w-{kind}.pt")
    if kind == "missing":
        return path
    if kind == "random-bytes":
        open(path, "wb").write(os.urandom(4096))
    elif kind == "truncated":
        buf = io.BytesIO()
        torch.save({"conv1.weight": torch.zeros(3, 3, 9, 9)}, buf)
        open(path, "wb").write(buf.getvalue()[:200])
    elif kind == "pickled-code":
        marker = tmp / "PAYLOAD-RAN"

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        open(path, "wb").write(pickle.dumps({"conv1.weight": Payload()}))
    elif kind == "wrong-shape":
        torch.save({"conv1.weight": torch.zeros(2, 2)}, path)
    elif kind == "not-a-dict":
        torch.save([torch.zeros(1)], path)
    elif kind == "nan":
        from equivar_core.planted import planted

        torch.save({k: torch.full_like(v, float("nan")) for k, v in planted().state_dict().items()}, path)
    elif kind == "wrong-safetensors":
        from safetensors.torch import save_file

        path = path[:-3] + ".safetensors"
        save_file({"fc.weight": torch.zeros(2, 2)}, path)
    return path


def _images(tmp, kind: str) -> str:
    d = tmp / f"img-{kind}"
    if kind == "missing-folder":
        return str(d)
    d.mkdir()
    if kind == "no-image-files":
        (d / "notes.txt").write_text("nothing here")
    elif kind == "non-images-named-jpg":
        for i in range(3):
            (d / f"{i}.jpg").write_bytes(b"this is not a jpeg" * 10)
    elif kind == "list-of-missing-files":
        (d / "list.txt").write_text("a.jpg\nb.png\n")
        return str(d / "list.txt")
    elif kind == "empty-list":
        (d / "list.txt").write_text("# nothing\n")
        return str(d / "list.txt")
    return str(d)


BAD_INPUT = {
    # name: (extra args or a callable tmp -> args, message fragment)
    "batch_size_zero": (["--batch-size", "0"], "at least 1"),
    "batch_size_negative": (["--batch-size", "-1"], "at least 1"),
    "batch_size_not_a_number": (["--batch-size", "x"], "whole number"),
    "n_images_zero": (["--n-images", "0"], "at least 1"),
    "n_images_huge_on_default_photos": (["--n-images", "99999999999"], "--images"),
    "layers_only_commas": (["--layers", ",,,"], "names no layer"),
    "unknown_layer": (["--layers", "relu1,nope"], "nope"),
    "unknown_model": (["--model", "no_such_model"], "unknown"),
    "model_spec_that_does_not_import": (["--model", "no_such_pkg.mod:fn"], "no_such_pkg"),
    "name_too_long": (["--name", "n" * 300], "too long"),
    "name_empty": (["--name", ""], "name"),
    "name_with_newline": (["--name", "a\nb"], "name"),
    "unknown_option": (["--frobnicate"], "unrecognized"),
    "device_cuda_without_gpu": (["--device", "cuda"], "CUDA"),
    "setting_unknown_section": (["--set", "nope.x=1"], "unknown section"),
    "setting_unknown_field": (["--set", "families.nope=1"], "families.nope"),
    "setting_not_a_number": (["--set", "families.min_similarity=high"], "not a float"),
    "setting_without_value": (["--set", "families.min_similarity"], "SECTION.FIELD=VALUE"),
}
for _kind in ("missing", "random-bytes", "truncated", "pickled-code", "wrong-shape", "not-a-dict",
              "wrong-safetensors"):
    BAD_INPUT[f"weights_{_kind.replace('-', '_')}"] = (lambda tmp, k=_kind: ["--weights", _weights(tmp, k)],
                                                      "weights")
for _kind, _msg in (("missing-folder", "not found"), ("no-image-files", "no images"),
                    ("non-images-named-jpg", "opens as an image"), ("list-of-missing-files", "exists"),
                    ("empty-list", "names no files")):
    BAD_INPUT[f"images_{_kind.replace('-', '_')}"] = (lambda tmp, k=_kind: ["--images", _images(tmp, k)], _msg)
    BAD_INPUT[f"tying_images_{_kind.replace('-', '_')}"] = (
        lambda tmp, k=_kind: ["--set", f"tying.images={_images(tmp, k)}"], _msg)


#: one case of each kind of bad input runs as a real `equivar` process (argument parsing, a setting, the model,
#: its layers, its weights, the images); the others run the same command in this process
SUBPROCESS = {"batch_size_not_a_number", "setting_unknown_field", "model_spec_that_does_not_import", "unknown_layer",
              "weights_pickled_code", "images_non_images_named_jpg"}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_fails_in_one_line_before_writing(case, results, tmp_path, capsys):
    if case == "device_cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args, fragment = BAD_INPUT[case]
    args = args(tmp_path) if callable(args) else args
    before = file_digests(results)
    planted = [a for a in PLANTED if a not in ("--layers", "relu1,relu2")] if "--layers" in args else PLANTED
    planted = [a for a in planted if a not in ("--model", "equivar_core.planted:planted")] \
        if "--model" in args else planted
    command = ["run", "--out", results, *planted, *args]
    r = equivar(*command) if case in SUBPROCESS else in_process(capsys, *command)
    line = one_line_error(r)
    assert fragment.lower() in line.lower(), line
    assert file_digests(results) == before                  # no file added, removed or changed
    assert not (tmp_path / "PAYLOAD-RAN").exists()


#: bad input that used to end in a traceback or in silence, run in-process: (arguments, message fragment)
ONE_LINE = {
    "model_class_needing_arguments": (["run", *PLANTED[2:], "--model", "torch.nn:Conv2d"], "failed when called"),
    "model_callable_that_exits": (["run", *PLANTED[2:], "--model", "builtins:exit"], "exited"),
    "model_that_is_no_callable": (["run", *PLANTED[2:], "--model", "os:sep"], "not a callable"),
    "brace_pattern_of_a_billion_shards": (["run", *PLANTED, "--images", "x-{000000000..999999999}.tar"],
                                          "more than 100,000 shards"),
    "workers_without_ray": (["run", *PLANTED, "--workers", "2"], ".[ray]"),
    "report_model_name_too_long": (["report", "--model", "m" * 300], "too long"),
    "report_models_folder_holding_a_stray_file": (["report"], "no results"),
}


@pytest.mark.parametrize("case", sorted(ONE_LINE))
def test_bad_input_that_was_a_traceback_is_one_line(case, tmp_path, capsys, monkeypatch):
    from pipelines.cli import main

    args, fragment = ONE_LINE[case]
    out = tmp_path / "O"
    if case == "workers_without_ray":
        monkeypatch.setitem(sys.modules, "ray", None)          # as if the extra were not installed
    if case.startswith("report_"):
        (out / "models").mkdir(parents=True)
        (out / "models" / "notes.txt").write_text("a stray file")
    before = files_under(str(out)) if out.exists() else set()
    code = main([*args, "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("equivar: error: "), (code, lines)
    assert fragment in lines[0], lines[0]
    assert (files_under(str(out)) if out.exists() else set()) == before


def test_report_pictures_are_linked_by_url_quoted_names():
    """Escaped names hold `%XX` (layer `a/b` -> `family_a%2Fb_0.png`): the link quotes it so a browser
    asks for that file, not for `family_a/b_0.png`."""
    from equivar_core.layout import Layout
    from equivar_core.report import _src

    png = Layout("/r", "m").family_picture("a/b", 0)
    assert os.path.basename(png) == "family_a%2Fb_0.png" and _src(png) == "family_a%252Fb_0.png"


def test_read_only_results_folder_is_one_line(tmp_path, capsys):
    """A results folder the run cannot write: by its permissions, or (for root, who ignores them) on a file
    system mounted read-only."""
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    mounted = False
    try:
        if os.access(out, os.W_OK):
            mounted = not subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(out)],
                                         capture_output=True).returncode
            if not mounted:
                pytest.skip("can write anywhere (root) and cannot mount a read-only file system here")
        line = one_line_error(in_process(capsys, "run", "--out", str(out), *PLANTED))
        assert "cannot write" in line
        assert not os.listdir(out)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(out)], capture_output=True)
        out.chmod(0o700)


def test_results_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    """(test_cli runs this kind of bad input, a folder that cannot be made, as an `equivar` process)"""
    f = tmp_path / "file"
    f.write_text("x")
    assert "cannot write" in one_line_error(in_process(capsys, "run", "--out", str(f), *PLANTED))


# -- hostile names: stored apart, inside the folder, listed ---------------------------------------------------

def test_names_that_escaped_to_one_folder_are_stored_apart(tmp_path, capsys):
    """`a/b`, `a_b` and `a b` shared one folder (each run deleted the last one's rows); `.` and `..` were
    hidden dot-folders and `../x` wrote beside the results folder. (The runs are in this process, each of one
    layer on two images.)"""
    from equivar_core.storage import open_catalog

    out = str(tmp_path / "O")
    names = ["a/b", "a_b", "a b", ".", "..", "../escape"]
    small = ["--model", "equivar_core.planted:planted", "--n-images", "2", "--layers", "relu1", "--quiet"]
    for name in names:                 # the report's folder too for the name that would escape the results
        r = in_process(capsys, "run", "--out", out, *small, "--name", name,
                       *([] if name == "../escape" else ["--no-report"]))
        assert r.returncode == 0, (name, r.stderr)
    con = open_catalog(out)
    stored = {m for (m,) in con.execute("select distinct model from families").fetchall()}
    counts = dict(con.execute("select model, count(*) from families group by 1").fetchall())
    con.close()
    assert stored == set(names) and len(set(counts.values())) == 1, counts
    assert not os.path.exists(tmp_path / "escape") and not any(
        part.startswith(".") and part not in (".writer.lock",) and not part.startswith(".dagster")
        for p in files_under(out) for part in p.split(os.sep)[:2])
    listed = in_process(capsys, "models", "--out", out)
    assert all(n in listed.stdout for n in ("a/b", "a_b", "a b")), listed.stdout


# -- SQL: one read-only statement over the folder's own files --------------------------------------------------

SQL = {
    "two_statements": ("select 1; select 2", "exactly one statement"),
    "copy_to_a_file": ("copy (select 1) to 'x.csv'", "COPY"),
    "copy_over_a_table_file": ("copy (select * from families limit 0) to "
                               "'families/model=planted/layer=relu1/data.parquet' (format parquet)", "COPY"),
    "read_text_outside": ("select * from read_text('/etc/hostname')", "disabled"),
    "read_csv_outside": ("select * from read_csv('/etc/passwd')", "disabled"),
    "install_extension": ("install httpfs", "LOAD"),
    "attach_database": ("attach '/tmp/other.duckdb'", "ATTACH"),
    "set_external_access": ("set enable_external_access = true", "SET"),
    "drop_view": ("drop view families", "DROP"),
    "create_table": ("create table t as select 1", "CREATE"),
    "syntax_error": ("selec 1", "syntax"),
    "unknown_table": ("select * from no_such_table", "no_such_table"),
}


@pytest.mark.parametrize("case", sorted(SQL))
def test_sql_refuses_in_one_line_and_the_catalog_still_answers(case, results, capsys):
    """Each statement in this process, one (``copy_to_a_file``) as an `equivar sql` process."""
    query, fragment = SQL[case]
    sql = equivar if case == "copy_to_a_file" else lambda *a: in_process(capsys, *a)
    before = file_digests(results)
    line = one_line_error(sql("sql", query, "--out", results))
    assert fragment.lower() in line.lower(), line
    assert file_digests(results) == before                  # no file added, removed or changed
    ok = sql("sql", "select count(*) from families", "--out", results, "--format", "csv")
    assert ok.returncode == 0 and ok.stdout.splitlines()[1] != "0", ok


# -- corrupt files: noticed, recomputed, equal to a clean run -------------------------------------------------

def _corrupt(path: str, how: str) -> None:
    if how == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif how == "garbage":
        open(path, "wb").write(os.urandom(2048))
    elif how == "empty":
        open(path, "wb").close()


@pytest.mark.parametrize("how", ["truncate", "garbage", "empty"])
def test_corrupt_table_file_is_recomputed_not_reported_current(how, clean, results, capsys):
    target = os.path.join(results, "families", "model=planted", "layer=relu1", "data.parquet")
    _corrupt(target, how)
    r = in_process(capsys, "run", "--out", results, *PLANTED)
    assert r.returncode == 0 and "nothing changed" not in r.stdout, r.stdout + r.stderr
    assert table_hashes(results) == clean[1]


def _arrays() -> dict[str, str]:
    """One file of each kind of array and each asset that owns that kind, as declared (equivar_core.artifacts),
    spread over the layers and transform families of the planted run, and the fingerprint record: case name ->
    path under the results folder."""
    from equivar_core.activations import TRANSFORM_GROUPS
    from equivar_core.artifacts import owners
    from equivar_core.layout import Layout
    from equivar_core.transforms import IDENTITY

    layout = Layout("", "planted")                                    # paths relative to the results folder
    found = owners(layout, ["relu1", "relu2"], [IDENTITY, *TRANSFORM_GROUPS], [("relu1", "relu2")])
    cases: dict[str, list[tuple[str, str]]] = {}
    for path, (owner, kind) in sorted(found.items()):
        cases.setdefault(f"{kind}_of_{owner.split('/')[0]}", []).append((path, owner))
    picked = {name: files[k % len(files)] for k, (name, files) in enumerate(sorted(cases.items()))}
    return {**picked, "fingerprints_json": (layout.fingerprints, None)}


#: case -> (path under the results folder, the asset that owns the file)
ARRAYS = _arrays()


@pytest.mark.parametrize("what", sorted(ARRAYS))
def test_corrupt_array_or_record_is_recomputed_not_reported_current(what, clean, results, capsys):
    """A truncated sample array, score archive or fingerprint record: the no-op check finds its owner changed
    (only it: what reads it is recomputed only if the owner's result differs), the next run recomputes it and
    every table equals a clean run's."""
    from pipelines.assets import DECLARED
    from pipelines.fingerprints import changed_assets
    from pipelines.resources import EquivarConfig

    path, owner = ARRAYS[what]
    settings = EquivarConfig(model="equivar_core.planted:planted", layers=["relu1", "relu2"], n_images=6,
                             out=results).settings()
    assert changed_assets(settings, DECLARED)[0] == []
    _corrupt(os.path.join(results, path), "truncate")
    if owner is not None:
        assert changed_assets(settings, DECLARED)[0] == [owner]
    r = in_process(capsys, "run", "--out", results, *PLANTED)
    assert r.returncode == 0 and "nothing changed" not in r.stdout, r.stdout + r.stderr
    assert table_hashes(results) == clean[1]


def test_moved_results_folder_is_up_to_date_and_answers_from_its_files(clean, results, tmp_path, capsys):
    moved = str(tmp_path / "moved")
    os.rename(results, moved)
    assert table_hashes(moved) == clean[1]
    r = in_process(capsys, "run", "--out", moved, *PLANTED)
    assert r.returncode == 0 and "nothing changed" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("how", ["garbage", "empty"])
def test_corrupt_catalog_is_rebuilt_by_the_next_run(how, clean, results, capsys):
    _corrupt(os.path.join(results, "equivar.duckdb"), how)
    q = in_process(capsys, "sql", "select count(*) from families", "--out", results)  # sql never trusts the file
    assert q.returncode == 0, q.stderr
    r = in_process(capsys, "run", "--out", results, *PLANTED)
    assert r.returncode == 0, r.stderr
    assert table_hashes(results) == clean[1]


# -- kills and interrupts -------------------------------------------------------------------------------------

def _interruptible() -> None:
    """In the child: Ctrl-C as at a terminal, even where the suite itself was started in the background of a
    script (which ignores SIGINT, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--out", out, *PLANTED[:-1], *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=_interruptible)


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 300) -> None:
    """Read the run's progress lines until one contains ``text``."""
    t0 = time.time()
    for line in proc.stderr:
        if text in line:
            return
        assert time.time() - t0 < timeout, "timed out"
    raise AssertionError(f"the run ended before {text!r}")


#: settings changes: one that every asset reads (all are recomputed), and one that only the circuits read
NEW_SEED, NEW_CIRCUITS = ("--seed", "1"), ("--set", "circuits.max_radius=11")
#: a settings change that reaches a stage and no earlier one (the seed reaches every stage, and recomputes all)
CHANGE_AT = {"materializing families": ("--set", "families.min_similarity=0.75"),
             "materializing circuit_weights": NEW_CIRCUITS}


@pytest.mark.parametrize("stage", ["natural activations (identity)", "natural activations (rotate)",
                                   "transform scores", "materializing families", "materializing circuit_weights"])
def test_kill_after_a_settings_change_is_never_reported_current(stage, clean, results, capsys):
    """Run with a settings change (seed 1, or one that changes the stage's own settings), kill -9 it at
    ``stage``, re-run the original settings (in this process): not "nothing changed", and every table equals
    the clean run (before: 19 of 38 files from seed 1 were reported up to date)."""
    proc = _start(results, *CHANGE_AT.get(stage, NEW_SEED))
    _wait_for(proc, stage)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    r = in_process(capsys, "run", "--out", results, *PLANTED)
    assert r.returncode == 0 and "nothing changed" not in r.stdout, r.stdout + r.stderr
    assert table_hashes(results) == clean[1]
    assert not [p for p in files_under(results) if ".tmp-" in p]      # the killed run's are removed


@pytest.mark.parametrize("stage", ["natural activations (hue)", "materializing tuning", "materializing families"])
def test_ctrl_c_stops_within_seconds_with_exit_130(stage, clean, results, capsys):
    proc = _start(results, *CHANGE_AT.get(stage, NEW_SEED))
    _wait_for(proc, stage)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    assert code == 130 and time.time() - t0 < 10
    assert "interrupted" in proc.stderr.read()
    r = in_process(capsys, "run", "--out", results, *PLANTED)
    assert r.returncode == 0 and "nothing changed" not in r.stdout
    assert table_hashes(results) == clean[1]


def test_no_temporary_files_after_a_full_disk(tmp_path, monkeypatch):
    """Disk full when the samples' blocks are reserved: an OSError that says so, no `.tmp-` file left
    (before: SIGBUS, exit 135, temporary files behind)."""
    import errno

    from equivar_core import activations

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    tmp = {"a": str(tmp_path / ".a.tmp-1"), "b": str(tmp_path / ".b.tmp-2")}
    np.lib.format.open_memmap(tmp["a"], mode="w+", dtype=np.float16, shape=(2, 2))
    with pytest.raises(OSError, match="cannot store the activation samples.*No space left"):
        activations._allocated_memmap(tmp, "b", (4, 8, 16, 32))
    assert not os.listdir(tmp_path)


# -- odd images ------------------------------------------------------------------------------------------------

def test_16_bit_grey_png_keeps_its_contrast(tmp_path):
    """PIL's RGB conversion clips I;16 to white; the loader scales it to 8 bits."""
    from equivar_core.images import ImageView, load_view

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = str(tmp_path / "g16.png")
    Image.fromarray(ramp).save(path)
    x = load_view(ImageView(0, path), 32)
    assert x is not None and x.min() < 0.1 and x.max() > 0.9 and 0.3 < float(x.mean()) < 0.7


def test_symlink_loop_counts_each_file_once(tmp_path):
    from equivar_core.images import list_image_files

    d = tmp_path / "photos"
    d.mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(d / "a.png")
    os.symlink(d, d / "loop")
    os.symlink(d / "a.png", d / "same.png")
    assert len(list_image_files(str(d))) == 1


def test_one_uniform_image_runs(tmp_path, capsys):
    """A single uniform image: no unit varies (was numpy.linalg.LinAlgError: Singular matrix)."""
    d = tmp_path / "flat"
    d.mkdir()
    Image.new("RGB", (96, 96), (128, 128, 128)).save(d / "grey.png")
    args = [a for a in PLANTED if a not in ("--n-images", "6")]
    r = in_process(capsys, "run", "--out", str(tmp_path / "O"), *args, "--images", str(d), "--n-images", "1")
    assert r.returncode == 0, r.stderr[-2000:]


# -- who may run what from the UI ------------------------------------------------------------------------------

def test_unregistered_callable_partition_is_refused_without_importing(tmp_path):
    """A partition key `module:callable` added in the UI is not imported or called (before: `tempfile:mkdtemp`
    created directories on every retry)."""
    from equivar_core.errors import EquivarError
    from pipelines.resources import EquivarConfig

    sys.modules.pop("tests.models_for_tests", None)
    config = EquivarConfig(out=str(tmp_path))
    with pytest.raises(EquivarError, match="register it from a shell"):
        config.entry("tests.models_for_tests:nan_net")
    assert "tests.models_for_tests" not in sys.modules


def test_an_index_entry_naming_code_is_run_only_when_its_user_signed_it(tmp_path, capsys, monkeypatch):
    """`_models/<name>.json` is data anyone who can write the folder can write: an entry naming a callable that
    this user's key did not sign (written by hand, or signed and then edited) is refused in one line by
    `equivar run --name` and by the UI's partitions, without importing it; a built-in entry needs no signature."""
    import json

    from equivar_core import model_index, signing
    from equivar_core.errors import EquivarError
    from pipelines.cli import main
    from pipelines.resources import EquivarConfig

    out = str(tmp_path / "O")
    model_index.register(out, model_index.ModelEntry(name="mine", model="equivar_core.planted:planted"))
    assert model_index.lookup(out, "mine").model == "equivar_core.planted:planted"
    signed = json.load(open(os.path.join(out, "_models", "mine.json")))
    forged = {"by-hand": {"name": "by-hand", "model": "tests.models_for_tests:nan_net"},
              "edited": {**signed, "name": "edited", "model": "tests.models_for_tests:nan_net"}}
    for name, record in forged.items():
        json.dump(record, open(os.path.join(out, "_models", f"{name}.json"), "w"))
    json.dump({"name": "builtin", "model": "efficientnet_lite0"}, open(os.path.join(out, "_models", "builtin.json"), "w"))
    assert model_index.lookup(out, "builtin").model == "efficientnet_lite0"
    sys.modules.pop("tests.models_for_tests", None)
    for name in forged:
        code = main(["run", "--name", name, "--out", out, "--quiet"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and f"refusing model {name!r}" in lines[0], lines
        with pytest.raises(EquivarError, match="register it again"):
            EquivarConfig(out=out).entry(name)
    assert "tests.models_for_tests" not in sys.modules
    assert main(["models", "--out", out]) == 0
    listing = capsys.readouterr().out
    assert "by-hand  model=tests.models_for_tests:nan_net  (not signed" in listing
    assert "mine  model=equivar_core.planted:planted\n" in listing
    monkeypatch.setenv("EQUIVAR_CONFIG", str(tmp_path / "another-user"))       # another user: no key yet
    with pytest.raises(EquivarError, match="refusing model 'mine'.*cannot be checked.*no model index signing key"):
        model_index.lookup(out, "mine")
    signing.signing_key()                                                       # ... then a key of their own
    with pytest.raises(EquivarError, match="refusing model 'mine'.*key did not make"):
        model_index.lookup(out, "mine")


def test_the_signing_key_is_private(tmp_path, monkeypatch):
    from equivar_core import signing
    from equivar_core.errors import EquivarError

    monkeypatch.setenv("EQUIVAR_CONFIG", str(tmp_path / "cfg"))
    key = signing.signing_key()
    assert len(key) == 64 and os.stat(signing.key_path()).st_mode & 0o777 == 0o600
    assert signing.signing_key() == key                                         # made once
    os.chmod(signing.key_path(), 0o644)
    with pytest.raises(EquivarError, match="open to other users"):
        signing.signing_key()


def test_permanent_errors_are_not_retried(tmp_path):
    """An unknown partition fails once; the retry policy is for transient errors."""
    from dagster import DagsterInstance, materialize

    from pipelines.definitions import build_definitions
    from pipelines.resources import EquivarConfig

    config = EquivarConfig(out=str(tmp_path))
    defs = build_definitions(config)
    models_asset = defs.resolve_assets_def("models")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("models", ["tempfile:mkdtemp"])
        result = materialize([models_asset], partition_key="tempfile:mkdtemp", instance=instance,
                             raise_on_error=False)
    assert not result.success
    restarts = [e for e in result.all_events if e.event_type_value in ("STEP_RESTARTED", "STEP_UP_FOR_RETRY")]
    assert not restarts


# -- every run path records what it completed ------------------------------------------------------------------

def test_a_ui_style_materialization_then_the_cli_finds_nothing_changed(tmp_path, capsys):
    """The job run as the UI, the sensor and the schedule run it (not through `equivar run`) records each
    asset's fingerprint as its output is committed; the CLI with the same settings then has nothing to do
    (before: fingerprints were recorded by the CLI only, so every UI run looked stale)."""
    from dagster import DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.resources import EquivarConfig

    out = str(tmp_path / "O")
    config = EquivarConfig(model="equivar_core.planted:planted", layers=["relu1", "relu2"], n_images=6, out=out)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("models", ["planted"])
        job = build_definitions(config).resolve_job_def("equivar")
        assert job.execute_in_process(instance=instance, partition_key="planted").success
    r = in_process(capsys, "run", "--out", out, *PLANTED)
    assert r.returncode == 0 and "nothing changed" in r.stdout, r.stdout + r.stderr


def test_a_killed_run_resumes_from_the_assets_it_completed(clean, tmp_path, capsys):
    """kill -9 during `families`: the re-run (in this process) does not redo the forward passes and tuning the
    killed run committed, and its tables equal a clean run's."""
    out = str(tmp_path / "O")
    proc = _start(out)
    _wait_for(proc, "materializing families")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    r = in_process(capsys, "run", "--out", out, *PLANTED[:-1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "materializing tuning" not in r.stderr and "materializing families" in r.stderr
    assert table_hashes(out) == clean[1]


# -- a real full disk ------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (the planted run needs about 5 MB); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_then_freed_gives_a_clean_run(clean, small_disk, capsys):
    """The run fails on the full disk with one line (no traceback, no SIGBUS) and leaves no temporary file;
    with the disk made larger, a re-run (in this process) completes and every table equals a clean run's."""
    out = str(small_disk / "O")
    r = equivar("run", "--out", out, *PLANTED_WITH_REPORT)
    assert r.returncode in (1, 2), r.returncode
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("equivar: error:") and "space" in lines[0].lower(), r.stderr
    assert not [p for p in files_under(out) if ".tmp-" in p]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    r = in_process(capsys, "run", "--out", out, *PLANTED_WITH_REPORT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert table_hashes(out) == clean[1]


#: each kind of file a run writes, by a part of its name (tests/enospc.py fills the disk at the first such
#: write)
WRITES = {
    "samples_reserved": ".samples.npy",
    "top_images": ".top_images.npz",
    "covariance": ".cov.npy",
    "score_archive": ".scores.npz",
    "parquet_table": "data.parquet",
    "circuit_weights": "relu2.npz",
    "fingerprint_record": "fingerprints.json",
    "catalog": "equivar.duckdb",
    "report_page": "index.html",
}
#: the kinds written before the circuits: the failing run changes the seed (every asset is recomputed); the
#: others are reached by a change of the circuits' settings alone (the circuit tables, the report and the catalog
#: are recomputed), so that their two runs cost a few seconds, not two whole runs
EARLY_WRITES = {"samples_reserved", "top_images", "covariance", "score_archive"}
#: the kind whose failing run is an `equivar` process of its own (``python -m tests.enospc``): the samples'
#: blocks reserved on a full disk once ended in SIGBUS, which only a process of its own shows
WRITE_IN_A_PROCESS = "samples_reserved"


@pytest.mark.parametrize("kind", sorted(WRITES))
def test_disk_full_at_each_kind_of_write(kind, clean, results, capsys):
    """A run with new settings meets a full disk at one kind of write: one line that says so, exit 1, no
    temporary file; the re-run with the original settings recomputes what the failed run touched and every
    table equals a clean run's. Each writer fails in this process (tests.enospc.full_disk), one kind in an
    `equivar` process of its own."""
    from tests.enospc import full_disk

    planted = PLANTED_WITH_REPORT if kind == "report_page" else PLANTED
    command = ["run", "--out", results, *planted, *(NEW_SEED if kind in EARLY_WRITES else NEW_CIRCUITS)]
    if kind == WRITE_IN_A_PROCESS:
        env = dict(os.environ, PYTHONPATH=ROOT)
        r = subprocess.run([sys.executable, "-m", "tests.enospc", WRITES[kind], *command], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=900)
    else:
        with full_disk(results, WRITES[kind]) as disk:
            r = in_process(capsys, *command)
        assert disk["failed"], f"the run wrote no file named *{WRITES[kind]}*"
    line = one_line_error(r, code=1)
    assert line.startswith("equivar: error:") and "No space left" in line, line
    assert not [p for p in files_under(results) if ".tmp-" in p]
    r = in_process(capsys, "run", "--out", results, *PLANTED)
    # "nothing changed" is right only where the full disk stopped the run before it rewrote anything (the
    # first fingerprint write clears those about to be recomputed): the tables say which
    assert r.returncode == 0, r.stdout + r.stderr
    assert table_hashes(results) == clean[1]


def test_report_on_a_corrupt_table_is_one_line(results, capsys):
    _corrupt(os.path.join(results, "families", "model=planted", "layer=relu1", "data.parquet"), "garbage")
    line = one_line_error(in_process(capsys, "report", "--out", results))
    assert "equivar run" in line


def test_sql_during_a_run_reads_complete_tables(results, capsys):
    """`equivar sql` (in this process) while a run rewrites the tables: every query answers (old or new files,
    never half of one)."""
    proc = _start(results, "--seed", "1")
    _wait_for(proc, "materializing tuning")
    answers = []
    while proc.poll() is None and len(answers) < 200:      # a query every ~0.2 s until the run ends
        q = in_process(capsys, "sql", "select count(*) as n from tuning", "--out", results, "--format", "csv")
        answers.append((q.returncode, q.stdout.splitlines()[1:] if q.returncode == 0 else q.stderr))
        time.sleep(0.2)
    proc.wait(600)
    assert answers and all(code == 0 and int(rows[0]) > 0 for code, rows in answers), answers


# -- one run per model, what killed runs and killed catalog writers leave ----------------------------------------

def _run_in_process(out: str, capsys, *extra: str) -> tuple[int, str, str]:
    from pipelines.cli import main

    code = main(["run", "--out", out, *PLANTED, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_second_run_of_the_model_is_refused_naming_the_first(results, capsys):
    """While a run of a model holds its lock, another run of it in the same folder is refused in one line
    naming the first's pid, exit 75, and writes nothing (before: both ran and one replaced the other)."""
    from equivar_core.layout import Layout
    from equivar_core.runlock import run_lock

    before, hashes = files_under(results), table_hashes(results)
    with run_lock(Layout(results, "planted").run_lock, "planted"):
        code, _, err = _run_in_process(results, capsys)
    lines = err.strip().splitlines()
    assert code == 75 and len(lines) == 1 and f"pid {os.getpid()}" in lines[0], err
    assert files_under(results) == before and table_hashes(results) == hashes
    code, out, _ = _run_in_process(results, capsys)             # released on exit: the next run goes ahead
    assert code == 0 and "nothing changed" in out


def test_a_lock_whose_holder_was_killed_is_taken(tmp_path):
    """The kernel drops a flock when its holder dies: a lock file left by kill -9 is never stale."""
    from equivar_core.runlock import RunLocked, run_lock

    path = str(tmp_path / "_locks" / "m.lock")
    code = ("import sys, time; from equivar_core.runlock import run_lock\n"
            "with run_lock(sys.argv[1], 'm'):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {proc.pid} "):
            with run_lock(path, "m"):
                pass
    finally:
        proc.kill()
        proc.wait(30)
    with run_lock(path, "m") as locked:
        assert locked and f"pid {os.getpid()} " in open(path).read()
    assert open(path).read() == ""


def test_leftover_temporary_files_of_the_model_are_removed_and_no_others(results, capsys):
    """Temporary files a killed run of this model left (samples, table parts, its index entry, a catalog being
    built) go at the start of its next run, under its lock; another model's stay (its run may be live)."""
    mine = [os.path.join(results, "_artifacts", "model=planted", "activations", ".relu1.identity.samples.npy.tmp-0a1b2c3d"),
            os.path.join(results, "tuning", "model=planted", "layer=relu1", ".data.parquet.tmp-0a1b2c3d"),
            os.path.join(results, "_models", ".planted.json.tmp-0a1b2c3d"),
            os.path.join(results, ".equivar.duckdb.tmp-0a1b2c3d"),
            os.path.join(results, ".equivar.duckdb.tmp-0a1b2c3d.wal")]
    others = [os.path.join(results, "_artifacts", "model=other", ".x.samples.npy.tmp-0a1b2c3d"),
              os.path.join(results, "_models", ".other.json.tmp-0a1b2c3d")]
    for p in mine + others:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").write(b"partial")
    os.remove(os.path.join(results, "equivar.duckdb"))          # the catalog is rebuilt: its temporaries go too
    code, _, err = _run_in_process(results, capsys)
    assert code == 0, err
    assert not [p for p in mine if os.path.exists(p)] and all(os.path.exists(p) for p in others)


def test_a_stale_write_ahead_log_is_rebuilt_and_the_run_says_so(clean, results, capsys):
    """A process that opened the catalog read-write and died leaves `equivar.duckdb.wal`, which DuckDB would
    replay into the catalog: the next run rebuilds it from the tables, removes the log and says so; the run
    after that has nothing to do (before: every run rebuilt it and said "done")."""
    import duckdb

    catalog = os.path.join(results, "equivar.duckdb")
    other = str(results) + "-writer.duckdb"
    shutil.copy(catalog, other)
    con = duckdb.connect(other)
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("create or replace view families as select 42 as planted")
    con.close()
    os.replace(other + ".wal", catalog + ".wal")
    code, _, err = _run_in_process(results, capsys)
    assert code == 0 and "stale write-ahead log" in err and "rebuilding" in err, err
    assert not os.path.exists(catalog + ".wal")
    con = duckdb.connect(catalog, read_only=True)
    assert "42" not in con.execute("select sql from duckdb_views() where view_name = 'families'").fetchone()[0]
    con.close()
    assert table_hashes(results) == clean[1]
    code, out, _ = _run_in_process(results, capsys)
    assert code == 0 and "nothing changed" in out
