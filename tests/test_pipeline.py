"""The Dagster code location loads, and the whole asset graph materializes on a small model."""

import os

import pytest
from dagster import DagsterInstance, Definitions

from pipelines.assets import family_emergence, family_matches
from pipelines.definitions import ALL_ASSETS, build_definitions, defs
from pipelines.definitions_common import models_partitions
from pipelines.resources import EquivarConfig

from tests.conftest import catalog as _catalog

TABLES = ["models", "layers", "images", "unit_stats", "unit_classes", "activation_samples", "transformed_samples", "tuning",
          "tuning_random_basis", "unit_profiles", "scale_pairs", "transform_pairs", "transform_maps", "families",
          "basis_control", "layer_summary", "family_stability", "sensitivity", "curve_detectors", "family_sweeps",
          "weight_tying", "circuit_weights", "circuit_families"]
TRANSFORMS = ("rotate", "hflip", "hue", "scale")


def test_definitions_load():
    Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for a in ALL_ASSETS for k in a.keys}
    per_transform = {f"{table}/{t}" for table in ("transformed_samples", "transform_pairs") for t in TRANSFORMS}
    assert (set(TABLES) - {"transformed_samples", "transform_pairs"}) | per_transform | {
        "duckdb_catalog", "reference_families", "report", "family_matches", "family_emergence"} == keys


def test_every_asset_has_a_description_and_code_version():
    for a in ALL_ASSETS:
        for key in a.keys:
            assert a.descriptions_by_key.get(key), key
            assert a.code_versions_by_key.get(key), key


@pytest.fixture(scope="module")
def materialized(traced_run):
    """The whole graph on the planted model, run once per session (tests.conftest.traced_run)."""
    out, result, _ = traced_run
    return out, result


def test_every_asset_is_partitioned_by_model_but_family_matches_which_spans_models():
    for a in ALL_ASSETS:
        assert a.partitions_def == (None if a in (family_matches, family_emergence) else models_partitions), a
    assert defs.resolve_job_def("equivar").partitions_def == models_partitions
    assert defs.resolve_job_def("compare").partitions_def is None


def test_whole_graph_materializes(materialized):
    out, result = materialized
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 8 and all(c.passed for c in checks)
    con = _catalog(os.path.join(out, "equivar.duckdb"))
    for table in TABLES:
        # the planted model has no curve detector, and the scikit-image photos have no classes: empty, typed tables
        if table in ("curve_detectors", "unit_classes"):
            assert con.execute(f"describe {table}").fetchall(), table
            continue
        assert con.execute(f"select count(*) from {table}").fetchone()[0] > 0, table
    assert con.execute("select count(*) from unit_stats where top_classes is not null").fetchone()[0] == 0
    # no published list for the planted model: an empty, typed table
    assert con.execute("select count(*) from reference_families").fetchone()[0] == 0
    assert con.execute("select distinct model from tuning").fetchall() == [("planted",)]
    con.close()


def test_the_io_manager_records_the_data_version_each_asset_computed(materialized, monkeypatch, tmp_path):
    """Each asset computes its fingerprint once and reports it as its data version; the IO manager records
    that one (it recomputes nothing), and it is what the no-op check of the next run computes."""
    from pipelines import fingerprints
    from pipelines.assets import DECLARED

    out, result = materialized
    config = EquivarConfig(model="equivar_core.planted:planted", layers=["relu1", "relu2"], n_images=6, out=out)
    recorded = fingerprints.load_fingerprints(config.settings("planted"))
    versions = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        versions[mat.asset_key.to_user_string()] = mat.tags["dagster/data_version"]
    assert recorded == {k: v for k, v in versions.items() if k in DECLARED} and set(recorded) == set(DECLARED)
    assert recorded == fingerprints.asset_fingerprints(config.settings("planted"), DECLARED)
    monkeypatch.setattr(fingerprints, "asset_fingerprints", None)            # the IO manager does not call it
    import pandas as pd
    from dagster import AssetKey, build_output_context

    from pipelines.io_manager import ParquetIOManager

    mine = EquivarConfig(model="equivar_core.planted:planted", out=str(tmp_path))
    ParquetIOManager(config=mine).handle_output(
        build_output_context(asset_key=AssetKey("thing"), output_metadata={fingerprints.FINGERPRINT_KEY: "abc"}),
        pd.DataFrame({"model": ["planted"], "x": [1]}))
    assert fingerprints.load_fingerprints(mine.settings()) == {"thing": "abc"}

def _declared_type(arrow_type) -> str | None:
    """The declared column type (equivar_core.tables) of a Parquet column's type; None for an all-null column."""
    import pyarrow as pa

    from equivar_core.tables import BOOLEAN, FLOAT, INTEGER, TEXT

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    for test, kind in ((pa.types.is_string, TEXT), (pa.types.is_large_string, TEXT), (pa.types.is_integer, INTEGER),
                       (pa.types.is_floating, FLOAT), (pa.types.is_boolean, BOOLEAN), (pa.types.is_null, None)):
        if test(arrow_type):
            return kind
    return str(arrow_type)


def test_every_table_on_disk_has_its_declared_columns(materialized):
    """Each declared table's Parquet files hold its declared columns in order, of the declared types where
    the file has rows (an empty table's columns are untyped), and the catalog's learned_control view has its
    declared columns: the declarations that docs/tables.md is rendered from are what the run writes."""
    import pyarrow.parquet as pq

    from equivar_core.storage import table_files
    from equivar_core.tables import DECLARATIONS, TABLES

    out, _ = materialized
    files = table_files(out)
    # family_matches and family_emergence span models (equivar compare, emergence): test_universality checks them
    assert set(files) == {name for t in DECLARATIONS if not t.view for name in t.names} - {"family_matches",
                                                                                          "family_emergence"}
    for name, paths in files.items():
        declared = TABLES[name]
        for path in paths:
            schema, rows = pq.read_schema(path), pq.read_metadata(path).num_rows
            assert schema.names == declared.column_names, path
            found = {c.name: _declared_type(f.type) for c, f in zip(declared.columns, schema)}
            assert not rows or all(found[c.name] in (c.type, None) for c in declared.columns), (path, found)
    con = _catalog(os.path.join(out, "equivar.duckdb"))
    assert [r[0] for r in con.execute("describe learned_control").fetchall()] == TABLES["learned_control"].column_names
    con.close()


def test_exact_file_layout(materialized):
    out, _ = materialized
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
                   if f == "data.parquet")
    assert "models/model=planted/data.parquet" in files
    assert "tuning/model=planted/layer=relu1/data.parquet" in files
    assert "tuning/model=planted/layer=relu2/data.parquet" in files
    assert "circuit_weights/model=planted/src_layer=relu1/data.parquet" in files
    for t in TRANSFORMS:            # one slice per transform family's asset, one view over all of them
        assert f"transform_pairs/model=planted/transform={t}/layer=relu2/data.parquet" in files
        assert f"transformed_samples/model=planted/transform={t}/layer=relu1/data.parquet" in files
    assert not [f for f in files if not (f.split("/")[1] == "model=planted")]


def test_io_manager_round_trip(materialized, tmp_path):
    import pandas as pd
    from dagster import build_input_context, build_output_context

    from pipelines.io_manager import ParquetIOManager

    config = EquivarConfig(model="equivar_core.planted:planted", out=str(tmp_path))
    io = ParquetIOManager(config=config)
    df = pd.DataFrame({"model": "planted", "layer": ["a", "b"], "unit": [0, 1], "x": [0.5, 1.5]})
    from dagster import AssetKey

    io.handle_output(build_output_context(asset_key=AssetKey("thing")), df)
    back = io.load_input(build_input_context(upstream_output=build_output_context(asset_key=AssetKey("thing"))))
    assert back.sort_values("unit").reset_index(drop=True).equals(df)


def test_pictures_are_drawn_by_the_report_asset_only(materialized):
    """The report's metadata previews a family gallery and a circuit diagram; the science assets draw
    nothing (a plotting bug cannot fail them)."""
    _, result = materialized
    metadata = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        metadata[mat.asset_key.to_user_string()] = mat.metadata
    assert metadata["report"]["preview"].value.count("data:image/png;base64,") == 2
    for asset, md in metadata.items():
        if asset != "report":
            assert not any("data:image/png" in str(v.value) for v in md.values()), asset


def _hashes(folder):
    import hashlib

    return {os.path.join(d, f): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, fs in os.walk(folder) for f in fs}


def test_a_second_model_partition_leaves_the_first_untouched(materialized):
    from equivar_core import model_index

    out, _ = materialized
    before = {k: v for k, v in _hashes(out).items() if "model=planted" in k}
    model_index.register(out, model_index.ModelEntry(name="random", model="equivar_core.planted:random_planted",
                                                     layers=("relu1", "relu2")))
    config = EquivarConfig(model="equivar_core.planted:planted", layers=["relu1", "relu2"], n_images=6, out=out)
    job = build_definitions(config).resolve_job_def("equivar")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("models", ["planted", "random"])
        assert job.execute_in_process(instance=instance, partition_key="random").success
        # a key that names nothing fails at its first step with the reason
        instance.add_dynamic_partitions("models", ["no-such-model"])
        bad = job.execute_in_process(instance=instance, partition_key="no-such-model", raise_on_error=False)
    assert not bad.success
    failure = next(e for e in bad.all_events if e.is_step_failure).step_failure_data.error
    assert "unknown model 'no-such-model'" in failure.message + str(failure.cause and failure.cause.message)
    after = {k: v for k, v in _hashes(out).items() if "model=planted" in k}
    assert before == after
    con = _catalog(os.path.join(out, "equivar.duckdb"))
    assert con.execute("select model, count(*) from layers group by 1 order by 1").fetchall() == [
        ("planted", 2), ("random", 2)]
    con.close()


def test_one_transform_family_is_recomputed_alone(materialized):
    from dagster import AssetKey

    out, _ = materialized
    before = _hashes(out)
    mtimes = {p: os.stat(p).st_mtime_ns for p in before}
    config = EquivarConfig(model="equivar_core.planted:planted", layers=["relu1", "relu2"], n_images=6, out=out)
    job = build_definitions(config).resolve_job_def("equivar")
    hue = [AssetKey(["transformed_samples", "hue"]), AssetKey(["transform_pairs", "hue"])]
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("models", ["planted"])
        result = job.execute_in_process(instance=instance, partition_key="planted", asset_selection=hue)
    assert result.success
    done = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.all_events if e.is_step_materialization}
    assert done == {"transformed_samples/hue", "transform_pairs/hue"}
    after = _hashes(out)
    rewritten = {p for p in before if os.path.exists(p) and os.stat(p).st_mtime_ns != mtimes[p]}
    # the hue family's files, and the record of their fingerprints
    assert rewritten and all(".hue." in p or "transform=hue" in p or os.path.basename(p) in (
        "fingerprints.json", ".fingerprints.lock") for p in rewritten), sorted(rewritten)
    assert {p: h for p, h in after.items() if p in before and p not in rewritten} == {
        p: h for p, h in before.items() if p not in rewritten}
    con = _catalog(os.path.join(out, "equivar.duckdb"))
    assert {t for (t,) in con.execute("select distinct transform from transform_pairs").fetchall()} == set(
        TRANSFORMS)
    con.close()


def test_every_analysis_setting_is_reachable_by_name():
    """``SECTION.FIELD=VALUE`` overrides (CLI ``--set``, launchpad ``overrides``) reach nested settings and parse
    each value as its default's type; the resource applies them."""
    from equivar_core.errors import EquivarError
    from equivar_core.settings import RunSettings
    from pipelines.resources import EquivarConfig

    s = RunSettings().with_overrides(["families.min_similarity=0.85", "tuning.stimuli.orientation_step=10",
                                      "sweep.rotate=45, 90", "sweep.hflip=off", "rotation_test.top_k=3",
                                      "families.curve_weighting=amplitude"])
    assert s.families.min_similarity == 0.85 and s.tuning.stimuli.orientation_step == 10.0
    assert s.sweep.rotate == (45.0, 90.0) and s.sweep.hflip is False and s.rotation_test.top_k == 3
    assert s.families.curve_weighting == "amplitude" and s.families.min_spread == RunSettings().families.min_spread
    for bad in ("families=1", "families.min_similarity", "tuning.stimuli=3", "rotation_test.top_k=2.5"):
        with pytest.raises(EquivarError):
            RunSettings().with_overrides([bad])
    config = EquivarConfig(overrides=["circuits.max_radius=6"])
    assert config.settings().circuits.max_radius == 6
