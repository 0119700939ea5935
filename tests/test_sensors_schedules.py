"""The checkpoint sensor and the stale-asset schedule, through Dagster's test helpers."""

import os

import duckdb
import torch
from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context, build_sensor_context

from equivar_core.planted import family_sizes, planted_model
from pipelines.definitions import build_definitions
from pipelines.resources import EquivarConfig
from pipelines.schedules import nightly_recompute
from pipelines.sensors import checkpoint_sensor, checkpoint_step

SPEC = "equivar_core.planted:planted"


def _save_checkpoint(path, seed):
    torch.save(planted_model(seed, **family_sizes(0))[0].state_dict(), path)   # the shapes of `planted`


def test_checkpoint_step_from_file_name():
    assert checkpoint_step("run3_step_1200.pt") == 1200
    assert checkpoint_step("final.pth") is None


def test_sensor_requests_new_and_changed_checkpoints_once(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    _save_checkpoint(folder / "step_10.pt", 0)
    _save_checkpoint(folder / "step_20.pt", 1)
    (folder / "notes.txt").write_text("not a checkpoint")
    monkeypatch.setenv("EQUIVAR_CHECKPOINTS", str(folder))
    monkeypatch.setenv("EQUIVAR_CHECKPOINT_MODEL", SPEC)
    instance = DagsterInstance.ephemeral()

    ctx = build_sensor_context(instance=instance)
    first = checkpoint_sensor(ctx)
    assert [r.tags["equivar/name"] for r in first] == ["planted@step_10", "planted@step_20"]
    assert [r.tags["equivar/step"] for r in first] == ["10", "20"]

    again = checkpoint_sensor(build_sensor_context(instance=instance, cursor=ctx.cursor))
    assert isinstance(again, SkipReason)

    os.utime(folder / "step_10.pt")                          # touched, same bytes: nothing new
    ctx2 = build_sensor_context(instance=instance, cursor=ctx.cursor)
    assert isinstance(checkpoint_sensor(ctx2), SkipReason)
    _save_checkpoint(folder / "step_10.pt", 2)               # new bytes: one new run
    changed = checkpoint_sensor(build_sensor_context(instance=instance, cursor=ctx2.cursor))
    assert len(changed) == 1 and changed[0].run_key != first[0].run_key


def test_a_checkpoint_run_fills_tables_with_its_name_and_step(tmp_path):
    ckpt = tmp_path / "step_30.pt"
    _save_checkpoint(ckpt, 3)
    config = EquivarConfig(model=SPEC, layers=["relu1"], n_images=4, out=str(tmp_path / "out"))
    job = build_definitions(config).resolve_job_def("equivar")
    tags = {"equivar/weights": str(ckpt), "equivar/name": "planted@step_30", "equivar/step": "30"}
    with DagsterInstance.ephemeral() as instance:
        assert job.execute_in_process(instance=instance, tags=tags).success
    con = duckdb.connect(str(tmp_path / "out" / "equivar.duckdb"), read_only=True)
    assert con.execute("select model, step from models").fetchall() == [("planted@step_30", 30)]
    assert con.execute("select distinct model from tuning").fetchall() == [("planted@step_30",)]


def test_schedule_requests_stale_assets_only(tmp_path):
    config = EquivarConfig(model=SPEC, layers=["relu1"], n_images=4, out=str(tmp_path))
    request = nightly_recompute(build_schedule_context(resources={"equivar": config}))
    assert isinstance(request, RunRequest) and len(request.asset_selection) == 17
    from pipelines.cli import main

    assert main(["run", "--model", SPEC, "--layers", "relu1", "--n-images", "4", "--out", str(tmp_path),
                 "--quiet"]) == 0
    assert isinstance(nightly_recompute(build_schedule_context(resources={"equivar": config})), SkipReason)
