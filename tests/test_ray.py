"""A real multi-worker run: every step as a Ray job on a local Ray cluster (dagster-ray's executor).

The cluster is started and stopped by the test; the tables must equal those of an in-process run.
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


def _tables(path: str, table: str):
    return _catalog(path).execute(f"select * exclude (model) from {table} order by all").df()


@pytest.mark.skipif(not os.path.exists(RAY), reason="ray is not installed in this environment")
def test_ray_executor_run_equals_in_process_run(tmp_path, capsys):
    port, dash = free_port(), free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")          # short: Ray's socket paths must stay short
    env = dict(os.environ, PYTHONPATH=ROOT, DAGSTER_HOME=str(tmp_path / "home"), EQUIVAR_HOME=str(tmp_path / "ray"),
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
                            "equivar_ray", "--tags", '{"dagster/partition": "planted"}'], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    inproc = tmp_path / "inproc"
    r = in_process(capsys, "run", "--model", "equivar_core.planted:planted", "--layers", "relu1,relu2", "--n-images",
                   "8", "--out", str(inproc), "--quiet")                      # in this very process
    assert r.returncode == 0, r.stderr
    for table in ("tuning", "transform_pairs", "families", "circuit_weights", "circuit_families", "family_sweeps"):
        a = _tables(str(tmp_path / "ray" / "equivar.duckdb"), table)
        b = _tables(str(inproc / "equivar.duckdb"), table)
        num = [c for c in a.columns if a[c].dtype.kind in "fiub" or str(a[c].dtype) in ("Int64", "boolean")]
        assert a.shape == b.shape, table
        assert np.allclose(a[num].astype(float).fillna(-9), b[num].astype(float).fillna(-9), atol=1e-5), table
