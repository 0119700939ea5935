"""The Dagster UI for real: webserver + daemon, a model partition added and materialized through GraphQL, pages
checked in Chromium."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import ROOT, free_port

from tests.conftest import catalog as _catalog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BIN = os.path.dirname(sys.executable)
KEY = "planted"          # registered from a shell: a UI partition never imports a module:callable itself


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


#: close the UI's one-time "join the community" dialog so that screenshots show the page
SKIP_WELCOME = "[...document.querySelectorAll('button')].filter(b => b.textContent.trim() == 'Skip')" \
               ".forEach(b => b.click());"


class Browser:
    """Headless Chromium driven through the DevTools protocol: open a page, wait in real time until the
    rendered DOM holds the expected words, keep a screenshot under $EQUIVAR_TEST_ARTIFACTS.

    (``--dump-dom`` with a virtual-time budget never finishes while the page keeps polling a slow server.)
    """

    def __init__(self, tmp):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,900",
             f"--remote-debugging-port={self.port}", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        target = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
                    target = next(t for t in json.loads(r.read()) if t["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                time.sleep(0.5)
        assert target, "Chromium's DevTools endpoint did not come up"
        from websockets.sync.client import connect

        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.ids = 0

    def call(self, method: str, **params) -> dict:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.ids:
                return msg.get("result", {})

    def page(self, url: str, expect: list[str], name: str, timeout: float = 240) -> str:
        self.call("Page.navigate", url=url)
        dom, deadline = "", time.time() + timeout
        while time.time() < deadline:
            time.sleep(2)
            dom = self.call("Runtime.evaluate", expression=SKIP_WELCOME + "document.documentElement.outerHTML",
                            returnByValue=True).get("result", {}).get("value", "")
            if all(word.lower() in dom.lower() for word in expect):
                break
        keep = os.environ.get("EQUIVAR_TEST_ARTIFACTS")
        if keep:
            import base64

            os.makedirs(keep, exist_ok=True)
            shot = self.call("Page.captureScreenshot", format="png")
            with open(os.path.join(keep, name + ".png"), "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        return dom

    def close(self):
        try:
            self.stack.close()
        finally:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_materialize_through_graphql_and_see_it_in_the_ui(tmp_path):
    port = free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(home), EQUIVAR_HOME=str(tmp_path / "out"), PYTHONPATH=ROOT,
               EQUIVAR_MODEL="equivar_core.planted:planted", EQUIVAR_LAYERS="relu1,relu2", EQUIVAR_N_IMAGES="4")
    # the instance's storage made once, before the webserver, its code server and the daemon start: each of them
    # creates it on a fresh $DAGSTER_HOME, and two at once can leave its schema table with two heads
    subprocess.run([os.path.join(BIN, "dagster"), "instance", "migrate"], cwd=ROOT, env=env, capture_output=True,
                   check=True, timeout=300)
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
        # a callable spec runs code, so it is registered from a shell first (issue 12); then the UI's
        # "Add partition" names it (already there: `models add` added it to this instance)
        reg = subprocess.run([sys.executable, "-m", "pipelines.cli", "models", "add", KEY, "--model",
                              "equivar_core.planted:planted"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        assert reg.returncode == 0, reg.stderr
        added = _graphql(port, """
            mutation($r: RepositorySelector!, $k: String!) {
              addDynamicPartition(repositorySelector: $r, partitionsDefName: "models", partitionKey: $k) {
                __typename ... on PythonError { message } } }""", {"r": repo, "k": KEY})
        assert added["data"]["addDynamicPartition"]["__typename"] in (
            "AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), added
        # the run's steps in the run's own process (the job's in_process executor, as the launchpad offers): what
        # is tested here is the UI's path (GraphQL, daemon, run launcher, pages); steps in processes of their own
        # are test_ray's, and a fresh interpreter per step would cost this test minutes of imports
        launch = _graphql(port, """
            mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
              __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                          {"p": {"selector": {**repo, "jobName": "equivar"},
                                 "runConfigData": {"execution": {"config": {"in_process": {}}}},
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

        con = _catalog(str(tmp_path / "out" / "equivar.duckdb"))
        assert con.execute("select distinct model from families").fetchall() == [(KEY,)]
        con.close()
        browser = Browser(tmp_path)
        try:
            graph = browser.page(f"http://127.0.0.1:{port}/asset-groups", ["activations", "families", "circuits",
                                                                           "catalog"], "ui-asset-graph")
            for name in ("activations", "families", "circuits", "catalog"):
                assert name in graph, name
            page = browser.page(f"http://127.0.0.1:{port}/assets/families", ["families", "materializ"],
                                "ui-families")
            assert "families" in page and ("Materialized" in page or "materialization" in page.lower())
            partitions = browser.page(f"http://127.0.0.1:{port}/assets/families?view=partitions", [KEY],
                                      "ui-families-partitions")
            assert KEY in partitions
        finally:
            browser.close()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
