"""A real multi-worker run: steps as Ray jobs on a local Ray cluster (dagster-ray's executor).

The cluster is started and stopped by the test. The steps that carry the work (the forward passes, with their
CPU/GPU requests) run as Ray jobs; the rest of the graph is then finished in-process on the same folder, which
must find those steps' outputs current (their fingerprints were committed by the Ray workers), and the tables
must equal those of a run made wholly in-process.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from .conftest import ROOT, free_port

from tests.conftest import catalog as _catalog
from tests.cli_runs import in_process

BIN = os.path.dirname(sys.executable)
RAY = os.path.join(BIN, "ray")
pytest.importorskip("dagster_ray")

RUN = ["--model", "equivar_core.planted:planted", "--layers", "relu1,relu2", "--n-images", "8", "--no-report"]
# the forward passes with everything upstream of them, and one transform's passes: six steps as Ray jobs
RAY_OPS = "*natural_activations,transformed_samples__hue"
RAY_ASSETS = {"models", "layers", "images", "activation_samples", "unit_stats", "transformed_samples/hue"}


def _tables(path: str, table: str):
    return _catalog(path).execute(f"select * exclude (model) from {table} order by all").df()


def _changed(out: str) -> set[str]:
    """The assets of the planted partition in ``out`` that a run with :data:`RUN`'s settings would recompute."""
    from pipelines.assets import DECLARED
    from pipelines.fingerprints import changed_assets
    from pipelines.resources import EquivarConfig

    config = EquivarConfig(model="equivar_core.planted:planted", layers=["relu1", "relu2"], n_images=8, out=out)
    return set(changed_assets(config.settings("planted"), DECLARED)[0])


def _ray_steps(tmp_path) -> str:
    """Runs :data:`RAY_OPS` of the ``equivar_ray`` job on a throwaway local cluster; returns the results folder."""
    port, dash = free_port(), free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")          # short: Ray's socket paths must stay short
    out = str(tmp_path / "ray")
    env = dict(os.environ, PYTHONPATH=ROOT, DAGSTER_HOME=str(tmp_path / "home"), EQUIVAR_HOME=out,
               EQUIVAR_MODEL="equivar_core.planted:planted", EQUIVAR_LAYERS="relu1,relu2", EQUIVAR_N_IMAGES="8",
               RAY_ADDRESS=f"http://127.0.0.1:{dash}",
               # a throwaway cluster on loopback: without token auth, whatever token an earlier local Ray left in
               # ~/.ray (Ray enables token auth when one is there, and the job client would not send it)
               RAY_AUTH_MODE="disabled",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))    # Ray jobs run `dagster api ...` from PATH
    (tmp_path / "home").mkdir()
    start = [RAY, "start", "--head", "--num-cpus", "2", "--port", str(port), "--dashboard-port", str(dash),
             "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--disable-usage-stats",
             "--temp-dir", ray_tmp]
    try:
        subprocess.run(start, check=True, capture_output=True, env=env, timeout=180)
        add = subprocess.run([sys.executable, "-m", "pipelines.cli", "models", "add", "planted", "--model",
                              "equivar_core.planted:planted"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)                 # the partition, in the instance of $DAGSTER_HOME
        assert add.returncode == 0, add.stderr
        r = subprocess.run([os.path.join(BIN, "dagster"), "job", "execute", "-m", "pipelines.definitions", "-j",
                            "equivar_ray", "--tags", '{"dagster/partition": "planted"}', "--op-selection", RAY_OPS],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return out


@pytest.mark.skipif(not os.path.exists(RAY), reason="ray is not installed in this environment")
def test_ray_executor_steps_are_current_and_give_the_in_process_tables(tmp_path, capsys):
    out = _ray_steps(tmp_path)
    changed = _changed(out)
    assert not changed & RAY_ASSETS, sorted(changed & RAY_ASSETS)      # each Ray step committed its fingerprint
    assert {"tuning", "families", "circuit_weights"} <= changed          # and the rest was not run
    finished = in_process(capsys, "run", "--out", out, *RUN)              # the rest of the graph, in this process
    assert finished.returncode == 0, finished.stderr
    ran = {line.split("materializing ", 1)[1].strip() for line in finished.stderr.splitlines()
           if "materializing " in line}
    assert ran and not ran & RAY_ASSETS, sorted(ran & RAY_ASSETS)
    assert not _changed(out)
    inproc = tmp_path / "inproc"
    r = in_process(capsys, "run", "--out", str(inproc), *RUN, "--quiet")      # the whole graph in this process
    assert r.returncode == 0, r.stderr
    for table in ("activation_samples", "unit_stats", "tuning", "transform_pairs", "families", "circuit_weights",
                  "circuit_families", "family_sweeps"):
        a = _tables(os.path.join(out, "equivar.duckdb"), table)
        b = _tables(str(inproc / "equivar.duckdb"), table)
        num = [c for c in a.columns if a[c].dtype.kind in "fiub" or str(a[c].dtype) in ("Int64", "boolean")]
        assert a.shape == b.shape, table
        assert np.allclose(a[num].astype(float).fillna(-9), b[num].astype(float).fillna(-9), atol=1e-5), table
