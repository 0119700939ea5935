"""Families matched across networks (equivar_core.universality): planted curve sets, then planted networks."""

import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey

from equivar_core.universality import (Families, comparable_layers, frame_curves, match_families,
                                       shift_similarity, turn_back)

T = 72                                    # the curves' grid: 5 degrees


def _bump(centre: float, width: float = 25.0, harmonic: int = 1) -> np.ndarray:
    """A von Mises bump at ``centre`` degrees on the grid (``harmonic`` 2: period 180)."""
    theta = np.radians(np.arange(T) * 360.0 / T - centre) * harmonic
    return np.exp((np.cos(theta) - 1) / np.radians(width) ** 2 * harmonic ** 2)


def _template(angle: float, kind: str) -> np.ndarray:
    """Two stimuli's curves (S = 2) of a unit of feature ``kind`` turned to ``angle``."""
    if kind == "edge":
        return np.stack([_bump(angle), 0.5 * _bump(angle + 180, 40)])
    if kind == "line":
        return np.stack([_bump(angle, 20, 2), 0.3 + 0.0 * _bump(angle)])
    if kind == "blob":                     # two lobes 100 degrees apart on the second stimulus only
        return np.stack([0.2 * _bump(angle, 60), _bump(angle + 100, 15) + _bump(angle - 20, 15)])
    raise ValueError(kind)


def _layer(rng, families: list[tuple[str, list[float]]], n_noise: int, offset: float = 0.0
           ) -> tuple[Families, list[np.ndarray]]:
    """Units of planted families (each member the template turned to offset + its place, scaled by a random
    gain, plus a little noise) among noise units, in a shuffled channel order; the families' true units."""
    curves, members = [], []
    for kind, places in families:
        units = []
        for p in places:
            units.append(len(curves))
            curves.append(rng.uniform(0.5, 2.0) * _template(offset + p, kind) + rng.normal(0, 0.02, (2, T)))
        members.append((np.array(units), np.array(places, float)))
    for _ in range(n_noise):
        curves.append(np.stack([np.convolve(rng.normal(0, 1, T), np.ones(9) / 9, "same") for _ in range(2)]))
    order = rng.permutation(len(curves))          # unit of curve i is order[i]
    c = np.zeros((len(curves), 2, T))
    c[order] = np.stack(curves)
    members = [(order[u], p) for u, p in members]
    selectivity = c.max(axis=(1, 2)) - c.min(axis=(1, 2))
    periods = [180.0 if kind == "line" else 360.0 for kind, _ in families]
    return Families(list(range(len(members))), members, c, selectivity, periods=periods), [m[0] for m in members]


def test_turning_back_exact_copies_gives_the_template():
    edges = np.stack([_template(p, "edge") for p in (0, 40, 95, 200)])
    back = turn_back(edges, np.array([0, 40, 95, 200]))
    assert np.allclose(back, edges[0], atol=2e-2)            # 95 and 200 fall between grid points
    assert np.allclose(back[:2], edges[0], atol=1e-9)        # 0 and 40 degrees: whole grid steps
    frame = frame_curves(edges, [(np.arange(4), np.array([0, 40, 95, 200.0]))])
    assert frame.shape == (1, 2, T) and np.allclose(frame[0], edges[0], atol=2e-2)


def test_shift_similarity_finds_the_turn_between_two_frames():
    a = _template(0, "edge")[None]
    b = np.stack([_template(-35, "edge"), _template(0, "blob")])
    sim, shift = shift_similarity(a, b)
    assert sim[0, 0] == pytest.approx(1.0, abs=1e-9) and shift[0, 0] == 325.0     # B turned by -35
    assert sim[0, 1] < 0.8


def test_permuted_copies_match_family_to_family_mutually_above_the_null():
    """B holds A's three families (unevenly spaced, unequal gains, different sizes) turned by 37 degrees, in
    another channel order and another family order, among other noise units."""
    rng = np.random.default_rng(0)
    design = [("edge", [0, 45, 80, 135, 180, 230, 270, 320]), ("line", [0, 30, 60, 95, 120, 150]),
              ("blob", [0, 90, 180, 270])]
    a, _ = _layer(rng, design, n_noise=30)
    b, _ = _layer(rng, [design[2], design[0], design[1]], n_noise=45, offset=37.0)
    rows = match_families(a, b, np.random.default_rng(1), draws=20)
    assert rows["family_b"].tolist() == [1, 2, 0]
    # 37 degrees lies between grid steps (5 degrees): the narrow line curves lose a little to it
    assert (rows["similarity"] > 0.95).all() and rows["mutual"].all() and rows["above_null"].all()
    assert (rows["null_similarity"] < rows["similarity"] - 0.2).all()
    edge_shift = rows.loc[0, "shift"]
    assert min(abs(edge_shift - 37), abs(edge_shift - 37 - 360)) <= 5


def test_matched_members_are_paired_by_place_and_their_photo_responses_correlated():
    """B's families are A's turned by 35 degrees (their places 35 degrees less, in another channel order);
    on photos, each member of B responds as the member of A at its place turned back. The photo correlation of
    each match is about 1, its null (random units of B at the members' places) about 0; pairing members with
    the shift's sign reversed pairs other members and loses it."""
    from equivar_core.universality import SharedPhotos, member_pairs, photo_correlation, standardized_responses

    rng = np.random.default_rng(4)
    places = [[0, 45, 80, 135, 180, 230, 270, 320], [0, 30, 60, 95, 120, 150, 200]]
    a, units_a = _layer(rng, [("edge", places[0]), ("line", places[1])], n_noise=30)
    b, units_b = _layer(rng, [("edge", [(p - 35) % 360 for p in places[0]]),
                              ("line", [(p - 35) % 360 for p in places[1]])], n_noise=40, offset=35.0)
    n = 400
    photos_a = rng.normal(size=(n, len(a.curves)))
    photos_b = rng.normal(size=(n, len(b.curves)))
    for ua, ub in zip(units_a, units_b):
        photos_b[:, ub] = 3.0 * photos_a[:, ua] + rng.normal(0, 0.1, (n, len(ua)))      # unequal scale
    rows = match_families(a, b, np.random.default_rng(1), draws=20, photos=SharedPhotos(photos_a, photos_b, 50))
    assert rows["family_b"].tolist() == [0, 1] and rows["shift"].tolist() in ([35.0, 35.0], [35.0, 215.0])
    assert (rows["photos"] == 50).all()
    assert (rows["photo_correlation"] > 0.99).all(), rows
    assert (rows["turned_photo_correlation"] < 0.3).all(), rows          # paired with the orthogonal members
    assert (rows["null_photo_p95"] < 0.3).all() and (rows["null_photo_correlation"].abs() < 0.1).all(), rows
    za, zb = standardized_responses(photos_a), standardized_responses(photos_b)
    wrong = photo_correlation(za, zb, member_pairs(a.members[0], b.members[0], -35.0))
    assert wrong < 0.5
    # the lines repeat after 180 degrees: paired on the full circle at a shift of 215, their members miss
    on_360 = photo_correlation(za, zb, member_pairs(a.members[1], b.members[1], 215.0))
    on_180 = photo_correlation(za, zb, member_pairs(a.members[1], b.members[1], 215.0, period=180.0))
    assert on_180 > 0.99 and on_360 < 0.5
    # without photos the columns say so
    none = match_families(a, b, np.random.default_rng(1), draws=5)
    assert (none["photos"] == 0).all() and none["photo_correlation"].isna().all()


def test_families_of_other_features_do_not_match_above_the_null():
    rng = np.random.default_rng(2)
    a, _ = _layer(rng, [("edge", [0, 45, 90, 135, 180, 225, 270, 315])], n_noise=30)
    b, _ = _layer(rng, [("blob", [0, 60, 120, 180, 240, 300])], n_noise=30)
    rows = match_families(a, b, np.random.default_rng(3), draws=50)
    assert rows.loc[0, "family_b"] == 0 and not rows.loc[0, "above_null"]
    empty = Families([], [], b.curves, b.selectivity)
    none = match_families(a, empty, np.random.default_rng(3), draws=5)
    assert none["family_b"].isna().all() and not none["above_null"].any()


def test_layers_pair_by_nominal_stride_then_by_relative_depth():
    a = pd.DataFrame({"layer": ["s", "b3", "b6", "b10", "b15"], "depth": [1, 5, 9, 14, 20],
                      "stride": [2.0, 4.0, 7.88, 16.25, 32.5]})
    b = pd.DataFrame({"layer": ["stem", "b2", "b4", "b5", "b11"], "depth": [1, 4, 7, 8, 15],
                      "stride": [2.0, 4.0, 8.0, 8.0, 32.0]})
    pairs = comparable_layers(a, b)
    assert pairs == [("s", "stem", "stride"), ("b3", "b2", "stride"), ("b6", "b4", "stride"),
                     ("b10", "b5", "depth"), ("b15", "b11", "stride")]


# --- planted networks through the pipeline -------------------------------------------------------------------

def permuted_planted():
    """The default planted network with both layers' channels in another order (so its families come out in
    another order, under other unit numbers)."""
    import torch

    from equivar_core.planted import planted

    net = planted(0)
    g = torch.Generator().manual_seed(11)
    p1, p2 = torch.randperm(net.conv1.out_channels, generator=g), torch.randperm(net.conv2.out_channels, generator=g)
    with torch.no_grad():
        net.conv1.weight.copy_(net.conv1.weight[p1].clone())
        net.conv1.bias.copy_(net.conv1.bias[p1].clone())
        net.conv2.weight.copy_(net.conv2.weight[p2][:, p1].clone())
        net.conv2.bias.copy_(net.conv2.bias[p2].clone())
    return net


def _radial(size: int, rng):
    """A grey filter with no orientation: a random radial profile (sum of two signed Gaussian rings)."""
    import torch

    y, x = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2, indexing="ij")
    r = torch.sqrt((x ** 2 + y ** 2).float())
    w = sum(float(rng.choice([-1, 1])) * torch.exp(-(r - float(rng.uniform(0, 3))) ** 2 / 2.0) for _ in range(2))
    return w.expand(3, size, size) / w.norm() / math.sqrt(3)


def other_planted():
    """A planted network of other features: conv1 holds red-green colour edges at eight angles (the planted
    network's edges are grey, and it has no colour edges) among grey filters with no orientation; conv2 is
    random. (A family of grey curve detectors is no good here: on the stimuli, arcs turn as edges do, and
    their best match in the planted network is its edge family, at similarity 0.8, mutual and above the
    null.)"""
    import torch

    from equivar_core.planted import PlantedNet, edge_kernel

    rng = np.random.default_rng(5)
    filters = [edge_kernel(9, i * 45.0, rgb=(1.0, -1.0, 0.0)) for i in range(8)]
    filters += [_radial(9, rng) for _ in range(14)]
    order = rng.permutation(len(filters))
    net = PlantedNet(len(filters), 8)
    with torch.no_grad():
        net.conv1.weight.copy_(torch.stack([filters[i] for i in order]) * 3.0)
        net.conv1.bias.zero_()
        net.conv2.weight.copy_(torch.tensor(rng.normal(size=net.conv2.weight.shape), dtype=torch.float32) * 0.03)
        net.conv2.bias.zero_()
    return net.eval()


@pytest.fixture(scope="module")
def three_planted(tmp_path_factory):
    from pipelines.cli import main

    out = str(tmp_path_factory.mktemp("universality"))
    for spec in ("equivar_core.planted:planted", "tests.test_universality:permuted_planted",
                 "tests.test_universality:other_planted"):
        assert main(["run", "--model", spec, "--layers", "relu1,relu2", "--n-images", "8", "--out", out,
                     "--no-report", "--quiet"]) == 0
    return out


def test_a_permuted_copy_of_the_planted_network_matches_family_to_family(three_planted, capsys):
    from pipelines.cli import main
    from tests.conftest import catalog

    capsys.readouterr()
    assert main(["compare", "planted", "permuted_planted", "--out", three_planted, "--draws", "20"]) == 0
    said = capsys.readouterr().out
    line = next(x for x in said.splitlines() if x.startswith("planted -> permuted_planted | rotate |"))
    families, matched, alike = (x.strip() for x in line.split("|")[2:])
    assert int(families) == int(matched) == int(alike) >= 2, said      # all matched, all alike on the photos
    con = catalog(f"{three_planted}/equivar.duckdb")
    rows = con.execute("select * from family_matches where model_a = 'planted' and layer_a = 'relu1'").df()
    families = con.execute("select model, transform, family, list(unit order by unit) as units from families "
                           "where layer = 'relu1' and transform in ('rotate', 'hue') group by all").df()
    assert len(rows) == len(families[families["model"] == "planted"]) >= 3      # edges, lines, hues at least
    assert (rows["similarity"] > 0.999).all() and rows["mutual"].all() and rows["above_null"].all()
    assert (rows["layer_b"] == "relu1").all() and (rows["paired_by"] == "stride").all()
    assert (rows["shift"] % 360).isin([0.0]).all()           # the same reference units, in another order
    # on the 8 photos both runs kept, each matched member responds exactly as its counterpart
    assert (rows["photos"] == 8).all() and (rows["photo_correlation"] > 0.999).all(), rows
    assert (rows["null_photo_p95"] < 0.9).all(), rows
    assert (rows["turned_photo_correlation"] < rows["photo_correlation"] - 0.1).all(), rows
    # each family matched the family of the same units, renumbered by the permutation
    import torch

    g = torch.Generator().manual_seed(11)
    p1 = torch.randperm(len(con.execute("select * from unit_stats where model = 'planted' and layer = 'relu1'")
                                .df()), generator=g).numpy()
    new_unit = {int(old): new for new, old in enumerate(p1)}       # unit `new` of the copy is unit `old` here
    units = {(r.model, r.transform, r.family): sorted(r.units) for r in families.itertuples()}
    for r in rows.itertuples():
        mine = units[("planted", r.transform, r.family_a)]
        assert sorted(new_unit[u] for u in mine) == units[("permuted_planted", r.transform, r.family_b)]
    back = con.execute("select count(*) from family_matches where model_a = 'permuted_planted'").fetchone()[0]
    assert back == con.execute("select count(distinct (layer, transform, family)) from families where model = "
                               "'permuted_planted' and transform in ('rotate', 'hue')").fetchone()[0]   # both ways
    # the report shows each matched family beside its match, and what tying the families would cost
    from equivar_core.report import build_report

    index = build_report(three_planted, "planted")
    page = open(index).read()
    assert "<h2>Across models</h2>" in page and "<h3>In permuted_planted</h3>" in page
    shown = [f for f in os.listdir(os.path.dirname(index)) if f.startswith("match_permuted_planted_")]
    assert len(shown) == min(3, len(rows)) and all(f"src='{f}'" in page for f in shown)
    assert "What building the families in would cost" in page
    assert "on the 8 photos both runs kept, the members' responses correlate at 1.00" in page


def test_a_planted_network_of_other_features_matches_nothing_above_the_null(three_planted, capsys):
    from pipelines.cli import main
    from tests.conftest import catalog

    assert main(["compare", "planted", "other_planted", "--out", three_planted, "--draws", "50"]) == 0
    con = catalog(f"{three_planted}/equivar.duckdb")
    rows = con.execute("select * from family_matches where model_a = 'planted' and model_b = 'other_planted' "
                       "and layer_a = 'relu1'").df()
    assert len(rows) >= 3 and not (rows["above_null"] & rows["mutual"]).any(), rows
    compared = rows[rows["family_b"].notna()]
    assert len(compared) >= 1, rows          # not empty: its colour edges come out as hue pairs, and are compared
    assert (compared["photos"] == 8).all() and (compared["photo_correlation"] < 0.9).all(), compared
    back = con.execute("select * from family_matches where model_a = 'other_planted'").df()
    assert len(back) >= 1 and not back["above_null"].any(), back


def test_family_matches_materialize_from_dagster_as_from_the_cli(three_planted, capsys):
    """The `compare` job (the UI's path): the unpartitioned `family_matches` asset reads the model partitions
    it compares and writes the tables `equivar compare` writes."""
    from pipelines.cli import main
    from pipelines.definitions import build_definitions
    from pipelines.resources import EquivarConfig
    from tests.conftest import catalog

    query = "select * from family_matches where model_b = 'permuted_planted' or model = 'permuted_planted' order by all"
    assert main(["compare", "planted", "permuted_planted", "--out", three_planted, "--draws", "20"]) == 0
    by_cli = catalog(f"{three_planted}/equivar.duckdb").execute(query).df()
    defs = build_definitions(EquivarConfig(out=three_planted))
    job = defs.resolve_job_def("compare")
    assert {n.name for n in job.graph.node_defs} == {"family_matches", "family_emergence"}
    assert not {"family_matches", "family_emergence"} & {n.name for n in
                                                        defs.resolve_job_def("equivar").graph.node_defs}
    config = {"ops": {"family_matches": {"config": {"pairs": ["planted,permuted_planted"], "draws": 20}}}}
    result = job.execute_in_process(run_config=config, asset_selection=[AssetKey("family_matches")])
    assert result.success
    by_dagster = catalog(f"{three_planted}/equivar.duckdb").execute(query).df()
    pd.testing.assert_frame_equal(by_cli, by_dagster)
    assert len(by_dagster) >= 6


def test_family_matches_files_have_the_declared_columns_and_types(three_planted, capsys):
    from equivar_core.storage import table_files
    from pipelines.cli import main

    assert main(["compare", "planted", "other_planted", "--out", three_planted, "--draws", "5"]) == 0
    assert any("model=other_planted/model_b=planted" in p for p in table_files(three_planted)["family_matches"])
    _check_declared(three_planted, "family_matches")


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_kept_samples_give_one_clear_error_and_write_nothing(three_planted, tmp_path, capsys, damage):
    """A results folder whose kept samples of one model are cut short or gone: `equivar compare` says which
    model and layer and how to recompute them, in one line, and writes no `family_matches` of the pair."""
    from equivar_core.storage import read_table, table_files
    from tests.cli_runs import in_process
    from tests.conftest import catalog

    out = str(tmp_path / "copy")
    shutil.copytree(three_planted, out)
    con = catalog(f"{out}/equivar.duckdb")
    path = con.execute("select path from activation_samples where model = 'permuted_planted' and layer = 'relu1'"
                       ).fetchone()[0]
    con.close()
    path = os.path.join(out, path)
    if damage == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
    else:
        os.remove(path)
    before = sorted(p for p in table_files(out).get("family_matches", []) if "permuted_planted" in p)
    r = in_process(capsys, "compare", "planted", "permuted_planted", "--out", out, "--draws", "5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot read the kept samples of model permuted_planted, layer relu1" in r.stderr
    assert "equivar run --name permuted_planted" in r.stderr
    after = sorted(p for p in table_files(out).get("family_matches", []) if "permuted_planted" in p)
    assert after == before
    assert read_table(out, "families", "permuted_planted") is not None          # nothing else was touched


def test_compare_needs_two_models_that_were_run(three_planted, capsys):
    from tests.cli_runs import in_process

    r = in_process(capsys, "compare", "planted", "nosuchmodel", "--out", three_planted)
    assert r.returncode == 2 and "model nosuchmodel has no" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = in_process(capsys, "compare", "planted", "planted", "--out", three_planted)
    assert r.returncode == 2 and "two different models" in r.stderr
    r = in_process(capsys, "compare", "planted", "other_planted", "--out", three_planted + "/nothing-here")
    assert r.returncode == 2 and "no results folder" in r.stderr


# --- families over training -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted_training(tmp_path_factory):
    """A planted "training run" of three checkpoints of one architecture: step 0 random weights, step 100 the
    planted network with three of its six edge units still smooth noise (the lines and hues already whole),
    step 300 the planted network."""
    import torch

    from equivar_core.planted import family_sizes, planted_model, smooth_noise
    from pipelines.cli import main

    folder = tmp_path_factory.mktemp("training")
    out = str(folder / "results")
    full, truth = planted_model(0, family_sizes(0))
    random, _ = planted_model(0, family_sizes(0), random=True)
    partial, _ = planted_model(0, family_sizes(0))
    edge_units = truth.families["conv1"]["edges"][0]
    rng = np.random.default_rng(9)
    with torch.no_grad():
        for u in edge_units[::2]:
            partial.conv1.weight[u] = smooth_noise(9, rng) * 3.0
    for step, net in ((0, random), (100, partial), (300, full)):
        path = str(folder / f"step_{step}.pt")
        torch.save(net.state_dict(), path)
        assert main(["run", "--model", "equivar_core.planted:planted", "--weights", path, "--step", str(step),
                     "--name", f"planted@step_{step}", "--layers", "relu1,relu2", "--n-images", "8", "--out", out,
                     "--no-report", "--quiet"]) == 0
    return out, truth


def test_families_over_training_say_when_and_how_each_family_appeared(planted_training, capsys):
    from pipelines.cli import main
    from tests.conftest import catalog

    out, truth = planted_training
    assert main(["emergence", "--out", out, "--draws", "20"]) == 0
    con = catalog(f"{out}/equivar.duckdb")
    rows = con.execute("select * from family_emergence where layer = 'relu1' order by family, step").df()
    assert set(rows["model"]) == {"planted@step_300"} and set(rows["step"]) == {0, 100}
    members = con.execute("select family, list(unit order by unit) as units from families "
                          "where model = 'planted@step_300' and layer = 'relu1' group by all").df()
    family_of = {tuple(r.units): int(r.family) for r in members.itertuples()}
    conv1 = truth.families["conv1"]
    edges, lines, hues = (family_of[tuple(sorted(conv1[k][0]))] for k in ("edges", "lines", "hues"))
    summary = rows.drop_duplicates("family").set_index("family")
    assert summary.loc[edges, "appeared"] == "piecewise" and summary.loc[edges, "first_step"] == 100
    for whole in (lines, hues):
        assert summary.loc[whole, "appeared"] == "whole" and summary.loc[whole, "first_step"] == 100
    at_random = rows[rows["step"] == 0]
    assert not at_random["present"].any()                  # nothing at random initialization
    assert rows[(rows["step"] == 100) & rows["family"].isin([edges, lines, hues])]["present"].all()
    _check_declared(out, "family_emergence")
    # the same table from the `compare` job (the UI's path): the unpartitioned family_emergence asset
    from pipelines.definitions import build_definitions
    from pipelines.resources import EquivarConfig

    query = "select * from family_emergence order by all"
    by_cli = con.execute(query).df()
    from equivar_core.layout import table_dir

    shutil.rmtree(table_dir(out, "family_emergence", "planted@step_300"))       # the asset writes it again
    job = build_definitions(EquivarConfig(out=out)).resolve_job_def("compare")
    result = job.execute_in_process(run_config={"ops": {"family_emergence": {"config": {"draws": 20}}}},
                                    asset_selection=[AssetKey("family_emergence")])
    assert result.success
    pd.testing.assert_frame_equal(by_cli, catalog(f"{out}/equivar.duckdb").execute(query).df())


def _check_declared(out: str, table: str) -> None:
    """The table's Parquet files in ``out`` hold its declared columns in order, of the declared types."""
    import pyarrow.parquet as pq

    from equivar_core.storage import table_files
    from equivar_core.tables import TABLES
    from tests.test_pipeline import _declared_type

    declared = TABLES[table]
    for path in table_files(out)[table]:
        schema, rows = pq.read_schema(path), pq.read_metadata(path).num_rows
        assert schema.names == declared.column_names, path
        found = {c.name: _declared_type(f.type) for c, f in zip(declared.columns, schema)}
        assert not rows or all(found[c.name] in (c.type, None) for c in declared.columns), (path, found)
