"""Fingerprints: unchanged settings recompute nothing; a family setting recomputes families and downstream."""

import dataclasses

from equivar_core.settings import FamilySettings, RunSettings
from pipelines.definitions import defs
from pipelines.assets import DECLARED, GRAPH
from pipelines.fingerprints import asset_fingerprints


def test_the_graph_is_read_off_the_asset_definitions():
    """Fingerprints follow the Dagster asset graph itself (no second declaration), and every table asset
    says which settings it reads."""
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        if name in ("duckdb_catalog", "report"):
            continue
        parents = {p.to_user_string() for p in graph.get(key).parent_keys}
        if name in ("family_matches", "family_emergence"):      # span model partitions: not fingerprinted
            assert name not in GRAPH and parents == {"families", "tuning", "unit_profiles", "layers", "images",
                                                     "activation_samples"}
            continue
        assert parents == set(GRAPH[name]), name
    assert set(GRAPH) == set(DECLARED)
    assert all(DECLARED[name].upstream == tuple(GRAPH[name]) and DECLARED[name].code_version for name in GRAPH)


def _downstream(name: str) -> set[str]:
    """``name`` and every asset that reads it, directly or not."""
    found, todo = set(), [name]
    while todo:
        a = todo.pop()
        if a not in found:
            found.add(a)
            todo += [b for b, ups in GRAPH.items() if a in ups]
    return found


def test_an_assets_code_version_makes_only_it_and_its_downstream_stale():
    s = RunSettings(model="equivar_core.planted:planted")
    a = asset_fingerprints(s, DECLARED)
    for name in ("families", "unit_stats", "transform_pairs/hue", "circuit_weights"):
        bumped = dict(DECLARED, **{name: dataclasses.replace(DECLARED[name], code_version="bumped")})
        b = asset_fingerprints(s, bumped)
        assert {k for k in a if a[k] != b[k]} == _downstream(name), name
    assert asset_fingerprints(s, DECLARED, only="tuning")["tuning"] == a["tuning"]


def test_only_downstream_of_a_changed_setting_changes(tmp_path):
    s = RunSettings(model="equivar_core.planted:planted", out=str(tmp_path))
    a = asset_fingerprints(s, DECLARED)
    assert a == asset_fingerprints(s, DECLARED)
    s2 = dataclasses.replace(s, families=FamilySettings(min_similarity=0.75))
    b = asset_fingerprints(s2, DECLARED)
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"families", "family_sweeps", "circuit_weights", "circuit_families", "basis_control",
                       "layer_summary", "curve_detectors", "family_stability", "sensitivity", "weight_tying"}
    s3 = dataclasses.replace(s, n_images=s.n_images + 1)
    c = asset_fingerprints(s3, DECLARED)
    assert {k for k in a if a[k] != c[k]} >= {"images", "unit_stats", "tuning", "families"}
    assert a["models"] == c["models"] and a["layers"] == c["layers"]


def test_a_changed_transform_sweep_recomputes_only_that_family():
    from equivar_core.activations import SweepSettings

    s = RunSettings(model="equivar_core.planted:planted")
    a = asset_fingerprints(s, DECLARED)
    b = asset_fingerprints(dataclasses.replace(s, sweep=SweepSettings(hue=(90.0, 180.0, 270.0))), DECLARED)
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"transformed_samples/hue", "transform_pairs/hue", "transform_maps", "families",
                       "family_sweeps", "circuit_weights", "circuit_families", "basis_control", "layer_summary",
                       "curve_detectors", "family_stability", "sensitivity", "weight_tying"}
    c = asset_fingerprints(dataclasses.replace(s, sweep=SweepSettings(grid=16)), DECLARED)   # points: every pass
    assert {k for k in a if a[k] != c[k]} >= {"unit_stats", "activation_samples", *(
        f"transformed_samples/{t}" for t in ("rotate", "hflip", "hue", "scale"))}


def test_every_forward_pass_belongs_to_exactly_one_group():
    from equivar_core.activations import TRANSFORM_GROUPS, SweepSettings

    sweep = SweepSettings()
    labels = [g.label for name in ("identity", *TRANSFORM_GROUPS) for g in sweep.group(name)]
    assert len(labels) == len(set(labels)) == 1 + 11 + 1 + 11 + 2
    assert labels == [g.label for g in sweep.versions()]
