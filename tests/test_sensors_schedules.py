"""Models as partitions: the checkpoint sensor, the add_model job, the index sync sensor and the stale schedule,
through Dagster's test helpers and real runs."""

import os

import torch
from dagster import (DagsterInstance, RunRequest, SensorResult, SkipReason, build_schedule_context,
                     build_sensor_context, instance_for_test)

from equivar_core import model_index
from equivar_core.planted import family_sizes, planted_model
from pipelines.assets import GRAPH
from pipelines.definitions import build_definitions
from pipelines.partitions import registered_models
from pipelines.resources import EquivarConfig
from pipelines.schedules import nightly_recompute
from pipelines.sensors import checkpoint_sensor, checkpoint_step

from tests.conftest import catalog as _catalog

SPEC = "equivar_core.planted:planted"


def _save_checkpoint(path, seed):
    torch.save(planted_model(seed, family_sizes(0))[0].state_dict(), path)   # the shapes of `planted`


def _config(out, **kw):
    return EquivarConfig(model=SPEC, layers=["relu1"], n_images=4, out=str(out), **kw)


def _tick(sensor, instance, config, cursor=None):
    """One evaluation of ``sensor``; the context is closed afterwards (its resources torn down at once, not
    whenever the garbage collector gets to them)."""
    with build_sensor_context(instance=instance, cursor=cursor, resources={"equivar": config}) as ctx:
        return sensor(ctx), ctx.cursor


def test_checkpoint_step_from_file_name():
    assert checkpoint_step("run3_step_1200.pt") == 1200
    assert checkpoint_step("final.pth") is None


def test_sensor_indexes_new_and_changed_checkpoints_as_partitions_once(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    _save_checkpoint(folder / "step_10.pt", 0)
    _save_checkpoint(folder / "step_20.pt", 1)
    (folder / "notes.txt").write_text("not a checkpoint")
    (folder / "step_30.pt").write_bytes(b"a half-written file")        # does not load: skipped, no run
    monkeypatch.setenv("EQUIVAR_CHECKPOINTS", str(folder))
    monkeypatch.setenv("EQUIVAR_CHECKPOINT_MODEL", SPEC)
    config = _config(tmp_path / "out")
    instance = DagsterInstance.ephemeral()

    first, cursor = _tick(checkpoint_sensor, instance, config)
    assert isinstance(first, SensorResult)
    assert [r.partition_key for r in first.run_requests] == ["planted@step_10", "planted@step_20"]
    (add,) = first.dynamic_partitions_requests
    assert add.partitions_def_name == "models" and list(add.partition_keys) == ["planted@step_10", "planted@step_20"]
    entry = model_index.lookup(str(tmp_path / "out"), "planted@step_20")
    assert entry.step == 20 and entry.weights == str(folder / "step_20.pt") and entry.model == SPEC
    assert model_index.lookup(str(tmp_path / "out"), "planted@step_30") is None

    again, _ = _tick(checkpoint_sensor, instance, config, cursor)
    assert isinstance(again, SkipReason)

    os.utime(folder / "step_10.pt")                          # touched, same bytes: nothing new
    touched, cursor2 = _tick(checkpoint_sensor, instance, config, cursor)
    assert isinstance(touched, SkipReason)
    _save_checkpoint(folder / "step_10.pt", 2)               # new bytes: one new run of the same partition
    changed, _ = _tick(checkpoint_sensor, instance, config, cursor2)
    assert [r.partition_key for r in changed.run_requests] == ["planted@step_10"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_checkpoint_partition_fills_tables_with_its_name_and_step(tmp_path):
    ckpt = tmp_path / "step_30.pt"
    _save_checkpoint(ckpt, 3)
    config = _config(tmp_path / "out")
    defs = build_definitions(config)
    with DagsterInstance.ephemeral() as instance:
        # what a user does from the UI's launchpad: the add_model job with the checkpoint's config
        add = defs.resolve_job_def("add_model").execute_in_process(instance=instance, run_config={"ops": {
            "register_model": {"config": {"name": "planted@step_30", "model": SPEC, "weights": str(ckpt),
                                          "step": 30}}}})
        assert add.success
        assert instance.get_dynamic_partitions("models") == ["planted@step_30"]
        job = defs.resolve_job_def("equivar")
        assert job.execute_in_process(instance=instance, partition_key="planted@step_30").success
    con = _catalog(str(tmp_path / "out" / "equivar.duckdb"))
    assert con.execute("select model, step from models").fetchall() == [("planted@step_30", 30)]
    assert con.execute("select distinct model from tuning").fetchall() == [("planted@step_30",)]


def test_add_model_job_refuses_a_broken_checkpoint(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a state dict")
    config = _config(tmp_path / "out")
    with DagsterInstance.ephemeral() as instance:
        result = build_definitions(config).resolve_job_def("add_model").execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {"register_model": {"config": {"name": "broken", "model": SPEC, "weights": str(bad)}}}})
        assert not result.success
        assert instance.get_dynamic_partitions("models") == []
    assert model_index.registered(str(tmp_path / "out")) == []


def test_registered_models_sensor_adds_missing_partitions(tmp_path):
    config = _config(tmp_path)
    model_index.register(str(tmp_path), model_index.ModelEntry(name="planted@step_5", model=SPEC, step=5))
    instance = DagsterInstance.ephemeral()
    result, _ = _tick(registered_models, instance, config)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["planted", "planted@step_5"]
    instance.add_dynamic_partitions("models", ["planted", "planted@step_5"])
    assert isinstance(_tick(registered_models, instance, config)[0], SkipReason)


def test_schedule_requests_stale_partitions_only(tmp_path):
    config = _config(tmp_path)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("models", ["planted", "planted_b"])
        model_index.register(str(tmp_path), model_index.ModelEntry(name="planted_b", model=SPEC))

        def evaluate():
            with build_schedule_context(instance=instance, resources={"equivar": config}) as ctx:
                return nightly_recompute(ctx)

        requests = evaluate()
        assert [r.partition_key for r in requests] == ["planted", "planted_b"]
        # a model never analysed: every table asset, then the catalog and the report
        whole = len(GRAPH) + 2
        assert all(isinstance(r, RunRequest) and len(r.asset_selection) == whole for r in requests)
        from pipelines.cli import main

        assert main(["run", "--model", SPEC, "--layers", "relu1", "--n-images", "4", "--out", str(tmp_path),
                     "--no-report", "--quiet"]) == 0
        assert [r.partition_key for r in evaluate()] == ["planted_b"]          # only the model not yet analysed
        assert main(["run", "--name", "planted_b", "--layers", "relu1", "--n-images", "4", "--out", str(tmp_path),
                     "--no-report", "--quiet"]) == 0
        assert isinstance(evaluate(), SkipReason)
