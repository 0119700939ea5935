"""``timm:NAME`` model specs, on timm's small test architectures with random weights (nothing downloaded).

timm needs torchvision, which imports only beside a matching torch: these tests run in the README's timm
environment (``.venv-timm``, see "timm models" there; CI builds it) and are skipped where timm is absent.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from equivar_core.errors import EquivarError  # noqa: E402
from equivar_core.layer_info import inspect_layers  # noqa: E402
from equivar_core.models.registry import file_sha256, load_model, resolve_layers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a timm test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def random_weights(name: str, path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of timm's ``name`` saved as ``.safetensors``; batch norms get random non-zero scales
    (timm zero-initializes a residual block's last one, which would silence that layer)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(mod.weight, 0.5, 1.5)
            torch.nn.init.normal_(mod.bias, 0.0, 0.1)
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(state, str(path))
    return state


def test_weights_from_a_file_are_loaded_strictly_and_inputs_normalized_as_in_training(tmp_path):
    path = tmp_path / "w.safetensors"
    state = random_weights("test_resnet", path)
    m = load_model("timm:test_resnet", str(path))
    assert m.name == "test_resnet" and m.input_size == 160 and m.weights_sha256 == file_sha256(str(path))
    assert torch.equal(m.module.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    raw = timm.create_model("test_resnet", pretrained=False).eval()
    raw.load_state_dict(state)
    cfg = raw.pretrained_cfg
    x = torch.rand(2, 3, 160, 160)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(m.module(x), raw((x - mean) / std), atol=1e-5)
    other = tmp_path / "other.safetensors"
    random_weights("test_efficientnet", other)
    with pytest.raises(EquivarError, match="does not fit this architecture"):
        load_model("timm:test_resnet", str(other))


def test_layers_keep_timm_names_and_privileged_flags(tmp_path):
    path = tmp_path / "w.safetensors"
    random_weights("test_resnet", path)
    m = load_model("timm:test_resnet", str(path))
    infos = {i.layer: i for i in inspect_layers(m.module, m.input_size)}
    assert infos["layer1.0.act1"].privileged and infos["layer1.0.act1"].reason == "input of ReLU"
    assert infos["layer2.0.act2"].stride == 8 and infos["layer2.0.act2"].n_units == 48
    assert not infos["layer2.0.downsample.1"].privileged           # a 1x1 shortcut projection: linear
    layers = resolve_layers(m, None)
    assert 2 <= len(layers) <= 6 and all(infos[n].reason.startswith("input of") for n in layers)
    eff = load_model("timm:test_efficientnet", untrained_ok=True)
    e = {i.layer: i for i in inspect_layers(eff.module, eff.input_size)}
    act = next(n for n in e if n.endswith("bn1.act") and n.startswith("blocks.1"))
    assert e[act].privileged and e[act].reason.startswith("input of")    # inside timm's BatchNormAct2d
    with pytest.raises(EquivarError, match="unknown layer"):
        resolve_layers(m, ["layer9.act"])


def test_cli_lists_the_layers_and_runs_on_random_weights(tmp_path):
    path = tmp_path / "w.safetensors"
    random_weights("test_resnet", path)
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1")

    def equivar(*args):
        return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=900)

    listed = equivar("models", "--layers", "timm:test_resnet")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("layer2.0.act1 ") and "yes (input of ReLU)" in line for line in listed.stdout.splitlines())
    assert "no weights given" in listed.stdout
    out = tmp_path / "out"
    # layer3.0.downsample.2 lies on a parallel branch of layer3.0.act1: that pair has no circuit and is skipped
    layers = "act1,layer2.0.act1,layer3.0.act1,layer3.0.downsample.2"
    r = equivar("run", "--model", "timm:test_resnet", "--weights", str(path), "--layers", layers, "--n-images", "6",
                "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "layer3.0.downsample.2 has no privileged basis" in r.stderr
    assert "layer3.0.act1 -> layer3.0.downsample.2 skipped" in r.stderr

    def sql(q):
        got = equivar("sql", "--out", str(out), "--format", "csv", q)
        assert got.returncode == 0, got.stderr
        return got.stdout.strip().splitlines()[1:]

    assert sql("select count(*) from layers where privileged") == ["3"]
    assert sql("select count(*) from layers") == ["4"]
    assert sql("select weights_sha256 from models") == [file_sha256(str(path))]
    pairs = sql("select distinct src_layer || '>' || dst_layer from circuit_weights order by 1")
    assert pairs == ["act1>layer2.0.act1", "layer2.0.act1>layer3.0.act1"]
    assert int(sql("select count(*) from basis_control")[0]) > 0
    assert int(sql("select count(distinct layer) from tuning")[0]) == 4


def _fake_hub_cache(root, repo: str, filename: str, state: dict) -> str:
    """The layout ``huggingface_hub`` keeps a downloaded file in."""
    from safetensors.torch import save_file

    folder = os.path.join(root, "models--" + repo.replace("/", "--"))
    snapshot = os.path.join(folder, "snapshots", "0" * 40)
    os.makedirs(snapshot)
    os.makedirs(os.path.join(folder, "refs"))
    with open(os.path.join(folder, "refs", "main"), "w") as f:
        f.write("0" * 40)
    path = os.path.join(snapshot, filename)
    save_file(state, path)
    return path


def test_without_weights_the_local_hub_cache_is_read_and_nothing_downloaded(tmp_path, monkeypatch):
    import huggingface_hub.constants

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(empty))
    with pytest.raises(EquivarError, match="no weights for timm:test_resnet.*--weights"):
        load_model("timm:test_resnet")
    state = random_weights("test_resnet", tmp_path / "w.safetensors", seed=3)
    repo = timm.create_model("test_resnet", pretrained=False).pretrained_cfg["hf_hub_id"]
    cached = _fake_hub_cache(str(tmp_path / "hub"), repo, "model.safetensors", state)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    m = load_model("timm:test_resnet")
    assert m.weights_sha256 == file_sha256(cached) and m.found_weights == cached
    assert np.array_equal(m.module.state_dict()["fc.weight"].numpy(), state["fc.weight"].numpy())


def test_unknown_names_and_token_models_get_one_clear_error():
    with pytest.raises(EquivarError, match="timm has no model 'resnet_nope'; similar names: resnet"):
        load_model("timm:resnet_nope", untrained_ok=True)
    vit = load_model("timm:test_vit", untrained_ok=True)          # tokens, not maps: only its patch projection
    assert [i.layer for i in inspect_layers(vit.module, vit.input_size)] == ["patch_embed.proj"]
    with pytest.raises(EquivarError, match="no N x C x H x W"):
        resolve_layers(vit, ["blocks.0.mlp.act"])
