"""The untrained-network control: ``untrained:NAME`` specs and the ``learned_control`` view."""

import math
import os

import duckdb
import pyarrow as pa
import pytest
import torch

from equivar_core import model_index, storage
from equivar_core.errors import EquivarError
from equivar_core.images import plan_views
from equivar_core.models import untrained
from equivar_core.models.registry import (BUILTINS, default_name, is_callable_spec, load_model, load_model_once,
                                          untrained_spec_of_name)
from equivar_core.settings import RunSettings

SPEC = "untrained:efficientnet_lite0"


def _batch(n=6, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _untrained_effnet(seed=0, images=None):
    """The architecture with the spec's weights and batch norms calibrated on ``images`` (small and random:
    the network takes any input size), not folded."""
    m = BUILTINS["efficientnet_lite0"].build()
    untrained.initialize(m, seed, "fan_out")
    untrained.calibrate_batch_norms(m, _batch() if images is None else images)
    return m


# -- spec and name -------------------------------------------------------------------------------------------

def test_spec_syntax_and_names():
    assert default_name(SPEC) == "untrained_efficientnet_lite0"
    assert default_name(SPEC + "@seed=0") == "untrained_efficientnet_lite0"
    assert default_name(SPEC + "@seed=3") == "untrained_efficientnet_lite0_seed3"
    assert default_name("untrained:inceptionv1") == "untrained_inceptionv1"
    assert RunSettings(model=SPEC + "@seed=3").model_name == "untrained_efficientnet_lite0_seed3"
    assert untrained.parse(SPEC + "@seed=3", list(BUILTINS)) == ("efficientnet_lite0", 3)
    assert untrained_spec_of_name("untrained_efficientnet_lite0") == SPEC
    assert untrained_spec_of_name("untrained_efficientnet_lite0_seed3") == SPEC + "@seed=3"
    assert untrained_spec_of_name("untrained_nothing") is None and untrained_spec_of_name("efficientnet_lite0") is None
    assert not is_callable_spec(SPEC)                       # names no code: no signature needed, the UI may load it
    for bad, message in ((SPEC + "@3", "after '@'"), ("untrained:resnet", "built-in architecture"),
                         ("untrained:", "built-in architecture")):
        with pytest.raises(EquivarError, match=message):
            load_model(bad, calibration=[])
    with pytest.raises(EquivarError, match="give no --weights"):
        load_model(SPEC, "w.pt")
    with pytest.raises(EquivarError, match="photos"):
        load_model(SPEC)                                    # batch norms need the run's photos
    listed = load_model(SPEC, untrained_ok=True)           # `equivar models --layers`: no photos needed
    assert float(listed.module._bn0.running_var.min()) == 1


def test_the_default_name_resolves_to_the_spec_as_a_partition(tmp_path):
    """A name typed in the UI (a partition key) loads the control without an index entry."""
    from pipelines.resources import EquivarConfig

    assert model_index.resolve(str(tmp_path), "untrained_efficientnet_lite0_seed2") == model_index.ModelEntry(
        name="untrained_efficientnet_lite0_seed2", model=SPEC + "@seed=2")
    config = EquivarConfig(out=str(tmp_path))
    s = config.settings("untrained_inceptionv1")
    assert s.model == "untrained:inceptionv1" and s.model_name == "untrained_inceptionv1"
    assert EquivarConfig(model=SPEC, out=str(tmp_path)).default_partition == "untrained_efficientnet_lite0"


def test_models_lists_the_untrained_spec(capsys, tmp_path):
    from types import SimpleNamespace

    from pipelines.cli import models

    models.command(SimpleNamespace(action=None, layers=None, weights=None, out=str(tmp_path)))
    assert "untrained:NAME[@seed=N]" in capsys.readouterr().out


# -- weights -------------------------------------------------------------------------------------------------

def test_weights_are_seeded_and_not_the_trained_ones():
    a, b, c = (BUILTINS["efficientnet_lite0"].build() for _ in range(3))
    untrained.initialize(a, 0, "fan_out")
    untrained.initialize(b, 0, "fan_out")
    untrained.initialize(c, 1, "fan_out")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["_conv_stem.weight"], sc["_conv_stem.weight"])
    trained = load_model("efficientnet_lite0").module.state_dict()
    assert not torch.equal(sa["_blocks.4._depthwise_conv.weight"], trained["_blocks.4._depthwise_conv.weight"])
    # TensorFlow's EfficientNet: normal with std sqrt(2 / fan_out), fan_out = k * k * out / groups
    w = sa["_blocks.4._depthwise_conv.weight"]              # depthwise 5 x 5: fan_out 25
    assert abs(float(w.std()) - math.sqrt(2 / 25)) < 0.02
    w = sa["_blocks.4._project_conv.weight"]                # 1 x 1, 240 -> 40
    assert abs(float(w.std()) - math.sqrt(2 / 40)) < 0.01
    assert float(sa["_fc.weight"].abs().max()) <= 1 / math.sqrt(1000) and float(sa["_fc.bias"].abs().max()) == 0
    assert float(sa["_blocks.4._bn1.weight"].min()) == 1 and float(sa["_blocks.4._bn1.bias"].abs().max()) == 0
    inc = BUILTINS["inceptionv1"].build()
    untrained.initialize(inc, 0, "fan_in")                  # He normal, no batch norm to rescale it
    w = inc.state_dict()["mixed3b.b3x3.1.conv.weight"]      # 3 x 3 from 128
    assert abs(float(w.std()) - math.sqrt(2 / (9 * 128))) < 0.005


def test_batch_norm_statistics_are_those_of_the_photos():
    """After calibration each batch norm's running mean and variance are its input's over the photos, and
    the eval-mode network reproduces them (the earlier batch norms normalize by their own)."""
    x = _batch()
    m = _untrained_effnet(images=x)
    assert not m.training
    seen = {}
    bns = {"stem": m._bn0, "block4": m._blocks[4]._bn1, "head": m._bn1}
    hooks = [bn.register_forward_hook(lambda mod, inp, out, k=k: seen.__setitem__(k, inp[0].detach()))
             for k, bn in bns.items()]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    for k, bn in bns.items():
        a = seen[k]
        mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3), unbiased=False)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-4 * float(var.sqrt().mean()))
        torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-7)
        assert bn.momentum == 0.01                          # the architecture's own momentum is back
    other = _untrained_effnet(images=_batch(seed=1))
    assert not torch.equal(other._bn0.running_mean, m._bn0.running_mean)     # other photos, other statistics


def test_load_model_calibrates_before_folding_and_hashes_the_result():
    views = plan_views(None, 3, 0)
    a = load_model(SPEC, calibration=views)
    assert a.name == "untrained_efficientnet_lite0" and a.preset_layers == BUILTINS["efficientnet_lite0"].preset_layers
    assert hasattr(a.module._blocks[4]._depthwise_conv, "_fused_weight")        # folded, like the trained one
    assert int(a.module._bn0.num_batches_tracked) == 1                          # one calibration batch
    # the folded convolution applies the calibrated statistics: the stem's output is standardized per channel
    x = untrained.calibration_batch(views, 224)
    with torch.no_grad():
        out = a.module._bn0(a.module._conv_stem((x - a.module.mean) / a.module.std))
    rv = a.module._bn0.running_var                                              # eps = 1e-3 shrinks small ones
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(32), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.var((0, 2, 3), unbiased=False), rv / (rv + 1e-3), atol=1e-3, rtol=1e-3)
    assert load_model(SPEC, calibration=views).weights_sha256 == a.weights_sha256     # deterministic
    assert load_model(SPEC + "@seed=1", calibration=views).weights_sha256 != a.weights_sha256
    assert load_model(SPEC, calibration=views[:2]).weights_sha256 != a.weights_sha256   # other photos
    assert len(a.weights_sha256) == 64 and a.weights_sha256 != load_model("efficientnet_lite0").weights_sha256


def test_load_once_keys_on_the_photos():
    views = plan_views(None, 2, 0)
    a = load_model_once(SPEC, calibration=views)
    assert load_model_once(SPEC, calibration=list(views)) is a
    assert load_model_once(SPEC, calibration=plan_views(None, 2, 0)[::-1][:1] + views[:1]) is not a


def test_inceptionv1_needs_no_photos():
    """No batch norm: nothing to calibrate, no weights file needed."""
    m = load_model("untrained:inceptionv1@seed=2")
    assert m.name == "untrained_inceptionv1_seed2" and len(m.weights_sha256) == 64
    with torch.no_grad():
        y = m.module(_batch(2, 96))
    assert torch.isfinite(y).all() and float(y.std()) > 0


def test_the_models_fingerprint_follows_the_photos_of_an_untrained_spec():
    from pipelines.assets import DECLARED
    from pipelines.fingerprints import own_values

    base = RunSettings(model=SPEC)

    def own(s):
        return own_values(s, DECLARED["models"])

    assert own(base) != own(RunSettings(model=SPEC, n_images=7))
    assert own(base) != own(RunSettings(model=SPEC, seed=1))
    assert own(base) == own(RunSettings(model=SPEC))
    assert own(RunSettings())["calibration"] == {}           # trained models: the photos do not enter


# -- learned_control -----------------------------------------------------------------------------------------

def _summary(model, rows):
    cols = ["layer", "transform", "units", "units_in_families", "families", "largest_family"]
    return pa.table({"model": [model] * len(rows), **{c: [r[i] for r in rows] for i, c in enumerate(cols)}})


def _sweeps(model, rows, tolerance=15.0):
    """rows: (layer, transform, role, error, chance); each at angles 0 and 10 (only angle 0 counts); ``passed``
    as a run whose ``rotation_test.tolerance`` is ``tolerance`` writes it."""
    rows = [(a, *r, r[3] <= tolerance) for r in rows for a in (0.0, 10.0)]
    cols = ["angle", "layer", "transform", "role", "error", "chance", "passed"]
    return pa.table({"model": [model] * len(rows), "family": [0] * len(rows),
                     **{c: [r[i] for r in rows] for i, c in enumerate(cols)}})


def _folder(root, sweeps=True):
    def models(name, spec):
        storage.write_table(root, "models", pa.table({"model": [name], "spec": [spec]}), name, None)

    models("m", "efficientnet_lite0")
    models("u", "untrained:efficientnet_lite0")
    models("u3", "untrained:efficientnet_lite0@seed=3")
    models("other", "inceptionv1")                          # no twin: no rows
    storage.write_table(root, "layer_summary", _summary("m", [("L1", "rotate", 10, 6, 2, 4),
                                                              ("L1", "hue", 10, 2, 1, 2),
                                                              ("L2", "rotate", 20, 8, 2, 5)]), "m", None)
    storage.write_table(root, "layer_summary", _summary("u", [("L1", "rotate", 10, 3, 1, 3),
                                                              ("L1", "hue", 10, 0, 0, 0)]), "u", None)
    storage.write_table(root, "layer_summary", _summary("u3", [("L1", "rotate", 10, 0, 0, 0)]), "u3", None)
    storage.write_table(root, "layer_summary", _summary("other", [("L1", "rotate", 10, 5, 1, 5)]), "other", None)
    if sweeps:
        storage.write_table(root, "family_sweeps", _sweeps("m", [
            ("L1", "rotate", "self", 0.0, 1.0),             # the driver itself: left out
            ("L1", "rotate", "member", 5.0, 0.2), ("L1", "rotate", "member", 20.0, 0.1),
            ("L1", "rotate", "member", 15.0, 0.15),
            ("L1", "rotate", "control", 40.0, 0.2), ("L1", "rotate", "control", 10.0, 0.2)], tolerance=20.0), "m", None)
        storage.write_table(root, "family_sweeps", _sweeps("u", [
            ("L1", "rotate", "self", 0.0, 1.0),
            ("L1", "rotate", "member", 30.0, 0.1), ("L1", "rotate", "member", 90.0, 0.3),
            ("L1", "rotate", "control", 0.0, 0.1)]), "u", None)
        storage.write_table(root, "family_sweeps", _sweeps("other", [
            ("L1", "rotate", "member", 0.0, 0.1)]), "other", None)


def _rows(con):
    df = con.execute("select * from learned_control order by model, untrained_model, layer, transform").df()
    return [dict(r) for _, r in df.iterrows()]


def _check(rows):
    assert [(r["model"], r["untrained_model"], r["layer"], r["transform"]) for r in rows] == [
        ("m", "u", "L1", "hue"), ("m", "u", "L1", "rotate"), ("m", "u3", "L1", "rotate")]
    hue, rot, rot3 = rows
    assert (rot["units"], rot["units_in_families"], rot["units_in_families_untrained"]) == (10, 6, 3)
    assert (rot["families"], rot["families_untrained"], rot["largest_family"], rot["largest_family_untrained"]) == \
        (2, 1, 4, 3)
    assert rot["units_ratio"] == pytest.approx(0.5)
    assert rot["rotation_pass_rate"] == pytest.approx(1.0)    # errors 5, 20, 15: all pass at m's run's 20 degrees
    assert rot["rotation_pass_rate_untrained"] == pytest.approx(0.0)
    assert rot["control_pass_rate"] == pytest.approx(0.5) and rot["control_pass_rate_untrained"] == pytest.approx(1)
    assert rot["chance"] == pytest.approx(0.15) and rot["chance_untrained"] == pytest.approx(0.2)
    assert (hue["units_in_families"], hue["units_in_families_untrained"]) == (2, 0)
    assert hue["units_ratio"] == 0 and math.isnan(hue["rotation_pass_rate"])      # hue was not swept here
    assert rot3["units_in_families_untrained"] == 0 and math.isnan(rot3["rotation_pass_rate_untrained"])


def test_learned_control_in_the_catalog_file_and_in_equivar_sql(tmp_path, monkeypatch):
    root = str(tmp_path)
    _folder(root)
    path, views = storage.build_catalog(root)
    assert "learned_control" in views
    monkeypatch.chdir(root)                                 # the file's views read paths relative to the folder
    con = duckdb.connect(path, read_only=True)
    _check(_rows(con))
    con.close()
    con = storage.open_catalog(root)                        # `equivar sql`'s own connection
    _check(_rows(con))
    assert storage.read_only_query(con, "select count(*) as n from learned_control")["n"][0] == 3
    con.close()


def test_learned_control_without_sweeps_or_twins(tmp_path):
    root = str(tmp_path / "a")
    _folder(root, sweeps=False)
    storage.build_catalog(root)
    con = storage.open_catalog(root)
    rows = _rows(con)
    assert len(rows) == 3 and all(math.isnan(r["rotation_pass_rate"]) for r in rows)
    con.close()
    root = str(tmp_path / "b")                              # only trained models: the view is there, empty
    storage.write_table(root, "models", pa.table({"model": ["m"], "spec": ["efficientnet_lite0"]}), "m", None)
    storage.write_table(root, "layer_summary", _summary("m", [("L1", "rotate", 10, 6, 2, 4)]), "m", None)
    _, views = storage.build_catalog(root)
    assert "learned_control" in views
    con = storage.open_catalog(root)
    assert _rows(con) == []
    con.close()
    root = str(tmp_path / "c")                              # no layer_summary: no view, nothing fails
    storage.write_table(root, "models", pa.table({"model": ["m"], "spec": ["x"]}), "m", None)
    assert storage.build_catalog(root)[1] == ["models"]


def test_a_run_of_the_control_in_process(tmp_path):
    """The stages' model for an untrained spec is calibrated on the run's own views and remembered."""
    from equivar_core.stages import common

    s = RunSettings(model=SPEC, n_images=3, out=str(tmp_path), device="cpu")
    model, layers = common.load(s)
    assert layers == list(BUILTINS["efficientnet_lite0"].preset_layers)
    assert common.load(s)[0] is model
    assert model.weights_sha256 == load_model(SPEC, calibration=plan_views(None, 3, 0)).weights_sha256
    assert common.calibration_views(RunSettings()) is None
    assert os.path.basename(s.layout.artifacts) == "model=untrained_efficientnet_lite0"
