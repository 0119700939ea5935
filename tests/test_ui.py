"""The Dagster UI for real: webserver + daemon, a model partition added and materialized through GraphQL, pages
checked in Chromium."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BIN = os.path.dirname(sys.executable)
KEY = "equivar_core.planted:planted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _run_group(cmd: list[str], timeout: float) -> str:
    """stdout of ``cmd``; on timeout the whole process group (Chromium's helpers too) is killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def _chromium(url: str, tmp, name: str) -> str:
    """The page's rendered DOM; a screenshot is kept under $EQUIVAR_TEST_ARTIFACTS."""
    def flags(profile: str) -> list[str]:
        return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp / ('profile-' + profile)}", "--virtual-time-budget=20000",
                "--window-size=1400,900"]

    for attempt in range(2):             # headless Chromium now and then hangs on a loaded 2-core machine
        try:
            dom = _run_group([*flags(f"{name}-{attempt}"), "--dump-dom", url], 120)
            break
        except subprocess.TimeoutExpired:
            if attempt:
                raise
    keep = os.environ.get("EQUIVAR_TEST_ARTIFACTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        try:
            _run_group([*flags(f"{name}-shot"), f"--screenshot={os.path.join(keep, name + '.png')}", url], 120)
        except subprocess.TimeoutExpired:
            pass                          # a missing screenshot is not a failure of the UI
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_materialize_through_graphql_and_see_it_in_the_ui(tmp_path):
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(home), EQUIVAR_HOME=str(tmp_path / "out"), PYTHONPATH=ROOT,
               EQUIVAR_MODEL="equivar_core.planted:planted", EQUIVAR_LAYERS="relu1,relu2", EQUIVAR_N_IMAGES="4")
    procs = [subprocess.Popen([os.path.join(BIN, "dagster-webserver"), "-w", "workspace.yaml", "-p", str(port),
                               "-h", "127.0.0.1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True),
             subprocess.Popen([os.path.join(BIN, "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        location = None
        for _ in range(300):                               # a loaded 2-core machine can take minutes
            try:
                ws = _graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                    "locationOrLoadError { __typename } } } } }")
                entries = ws["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    location = entries[0]["name"]
                    break
            except OSError:
                pass
            time.sleep(1)
        assert location, "the code location did not load"
        repo = {"repositoryLocationName": location, "repositoryName": "__repository__"}
        # what the UI's "Add partition" does: a new model partition, typed by the user (a callable spec
        # needs no registration; the configured model's own partition is added by the registered_models sensor)
        added = _graphql(port, """
            mutation($r: RepositorySelector!, $k: String!) {
              addDynamicPartition(repositorySelector: $r, partitionsDefName: "models", partitionKey: $k) {
                __typename ... on PythonError { message } } }""", {"r": repo, "k": KEY})
        assert added["data"]["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess", added
        launch = _graphql(port, """
            mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
              __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                          {"p": {"selector": {**repo, "jobName": "equivar"}, "runConfigData": {},
                                 "executionMetadata": {"tags": [{"key": "dagster/partition", "value": KEY}]}}})
        result = launch["data"]["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        run_id = result["run"]["runId"]
        status = None
        for _ in range(600):
            status = _graphql(port, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                              {"id": run_id})["data"]["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        assert status == "SUCCESS"
        import duckdb

        con = duckdb.connect(str(tmp_path / "out" / "equivar.duckdb"), read_only=True)
        assert con.execute("select distinct model from families").fetchall() == [(KEY,)]
        con.close()
        graph = _chromium(f"http://127.0.0.1:{port}/asset-groups", tmp_path, "ui-asset-graph")
        for name in ("activations", "families", "circuits", "catalog"):
            assert name in graph, name
        page = _chromium(f"http://127.0.0.1:{port}/assets/families", tmp_path, "ui-families")
        assert "families" in page and ("Materialized" in page or "materialization" in page.lower())
        partitions = _chromium(f"http://127.0.0.1:{port}/assets/families?view=partitions", tmp_path,
                               "ui-families-partitions")
        assert KEY in partitions
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
