"""Built-in models load their weights correctly; bad weights give one clear error."""

import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equivar_core.errors import EquivarError
from equivar_core.models import inceptionv1
from equivar_core.tf_layers import LocalResponseNorm, pad, same_padding
from equivar_core.models.registry import load_model, resolve_layers


def _photo(name: str, size: int = 224) -> torch.Tensor:
    import skimage.data

    im = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
    h, w = im.shape[-2:]
    s = min(h, w)
    im = im[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(im, size=size, mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def effnet():
    return load_model("efficientnet_lite0")


def test_efficientnet_classifies_the_bundled_photos(effnet):
    with torch.inference_mode():
        cat = effnet.module(_photo("chelsea")).argmax(1).item()
        coffee = effnet.module(_photo("coffee")).argmax(1).item()
    assert 281 <= cat <= 285
    assert coffee == 967


def test_efficientnet_metadata(effnet):
    assert effnet.n_params == 4_652_008
    assert len(effnet.weights_sha256) == 64
    assert resolve_layers(effnet, None) == list(effnet.preset_layers)


def test_same_padding_is_tensorflows():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(5, 3, 1) == (1, 1)


@pytest.mark.parametrize("size,kernel,stride", [(224, 3, 1), (224, 3, 2), (225, 5, 2), (13, 5, 1), (12, 1, 1)])
def test_same_conv_equals_padding_then_convolving(size, kernel, stride):
    """Conv2dSame lets the convolution pad when TensorFlow's padding is symmetric; the result is the padded
    copy convolved without padding, as TensorFlow computes it."""
    from equivar_core.tf_layers import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, kernel, stride=stride)
    x = torch.randn(2, 4, size, size)
    top, bottom = same_padding(size, kernel, stride)
    want = F.conv2d(F.pad(x, (top, bottom, top, bottom)), conv.weight, conv.bias, stride)
    with torch.no_grad():
        got = conv(x)
    assert got.shape == want.shape == (2, 6, -(-size // stride), -(-size // stride))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_local_response_norm_follows_tensorflow_formula():
    x = torch.randn(2, 13, 3, 3)
    out = LocalResponseNorm()(x)
    ref = torch.empty_like(x)
    for c in range(13):
        lo, hi = max(0, c - 5), min(13, c + 6)
        ref[:, c] = x[:, c] / (2.0 + 1e-4 * x[:, lo:hi].pow(2).sum(1)) ** 0.5
    assert torch.allclose(out, ref, atol=1e-6)


def test_inceptionv1_loads_inception5h_layout_and_has_the_papers_shapes(tmp_path):
    state = {k: torch.randn_like(v) * 0.01 for k, v in inceptionv1.inception5h_template().items()}
    state["head0_bottleneck_pre_relu_conv.weight"] = torch.zeros(128, 508, 1, 1)   # aux heads are ignored
    path = tmp_path / "inception5h.pth"
    torch.save(state, path)
    model = load_model("inceptionv1", str(path))
    shapes = {}
    hooks = [dict(model.module.named_modules())[n].register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:]))) for n in inceptionv1.LAYERS]
    with torch.inference_mode():
        logits = model.module(torch.rand(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert logits.shape == (1, 1008)
    assert shapes["conv2d0"] == (64, 112, 112)
    assert shapes["mixed3a"] == (256, 28, 28)
    assert shapes["mixed3b"] == (480, 28, 28)
    assert shapes["mixed4a"] == (508, 14, 14)
    assert shapes["mixed5b"] == (1024, 7, 7)
    assert model.module.conv2d0.conv.weight.shape == (64, 3, 7, 7)
    assert torch.equal(model.module.mixed3a.b3x3[0].conv.weight, state["mixed3a_3x3_bottleneck_pre_relu_conv.weight"])


def test_inceptionv1_branch_order_is_1x1_3x3_5x5_pool():
    m = inceptionv1.InceptionV1().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.mixed3a.b5x5[1].conv.bias.fill_(1.0)       # only the 5x5 branch is on
        out = {}
        h = m.mixed3a.register_forward_hook(lambda mod, i, o: out.setdefault("a", o))
        m(torch.rand(1, 3, 224, 224))
        h.remove()
    on = (out["a"][0].abs().sum((1, 2)) > 0).nonzero().flatten()
    assert on.min().item() == 64 + 128 and on.max().item() == 64 + 128 + 32 - 1


def test_inceptionv1_needs_weights():
    with pytest.raises(EquivarError, match="--weights"):
        load_model("inceptionv1")


def test_unknown_model_lists_the_builtins():
    with pytest.raises(EquivarError, match="efficientnet_lite0"):
        load_model("resnet9000")


def test_unknown_layer_lists_valid_layers(effnet):
    with pytest.raises(EquivarError, match="unknown layer 'nope'.*_blocks"):
        resolve_layers(effnet, ["nope"])


def test_missing_corrupt_and_wrong_shape_weights(tmp_path):
    with pytest.raises(EquivarError, match="not found"):
        load_model("efficientnet_lite0", str(tmp_path / "missing.pth"))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(EquivarError, match="cannot read weights"):
        load_model("efficientnet_lite0", str(bad))
    wrong = tmp_path / "wrong.pth"
    state = load_model("efficientnet_lite0").module.state_dict()
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state, wrong)
    with pytest.raises(EquivarError, match=r"_conv_stem.weight has shape \(16, 3, 3, 3\)"):
        load_model("efficientnet_lite0", str(wrong))


def test_pickled_code_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(EquivarError):
        load_model("efficientnet_lite0", str(path))
    assert not (tmp_path / "pwned").exists()


def test_user_callable_models():
    m = load_model("equivar_core.planted:planted")
    assert m.name == "planted" and m.input_size == 64
    assert resolve_layers(m, None) == ["relu1", "relu2"]       # the nonlinearities: privileged layers
    with pytest.raises(EquivarError, match="cannot import"):
        load_model("no_such_package.mod:thing")
    a, b = load_model("equivar_core.planted:planted"), load_model("equivar_core.planted:planted")
    assert a.weights_sha256 == b.weights_sha256
    assert np.isfinite(m.n_params)


def test_layers_name_every_nonlinearity_and_say_which_are_privileged():
    """EfficientNet's shared ReLU6 is one module per call site (expand, depthwise) with the state dict intact;
    block outputs (linear bottleneck + residual) are not privileged; InceptionV1 takes Lucent's branch names."""
    from equivar_core.layer_info import inspect_layers
    from equivar_core.models.inceptionv1 import InceptionV1

    effnet = load_model("efficientnet_lite0")
    assert len(effnet.module.state_dict()) == 296
    infos = {i.layer: i for i in inspect_layers(effnet.module, 224)}
    assert infos["_blocks.4.expand"].privileged and infos["_blocks.4.expand"].n_units == 240
    assert infos["_blocks.4.depthwise"].privileged and infos["_blocks.7.depthwise"].stride == 16
    assert infos["_blocks.4._bn1"].privileged                   # feeds the ReLU6 (through nothing else)
    assert not infos["_blocks.4"].privileged and not infos["_blocks.4._project_conv"].privileged
    assert all(infos[n].privileged for n in effnet.preset_layers)
    strides = [infos[n].stride for n in effnet.preset_layers]
    assert min(strides) == 2 and max(strides) == 32
    inception = {i.layer: i for i in inspect_layers(InceptionV1().eval(), 224)}
    assert inception["mixed3b_3x3"].n_units == 192 and inception["mixed3b_3x3"].privileged
    assert inception["mixed3b"].privileged and inception["mixed3b"].n_units == 480   # a concat of ReLU outputs


def test_a_layer_without_privileged_basis_is_analysed_with_a_warning(caplog):
    effnet = load_model("efficientnet_lite0")
    with caplog.at_level("WARNING"):
        assert resolve_layers(effnet, ["_blocks.4", "_blocks.4.expand"]) == ["_blocks.4", "_blocks.4.expand"]
    warned = [r.getMessage() for r in caplog.records if "privileged" in r.getMessage()]
    assert len(warned) == 1 and "_blocks.4 " in warned[0]
    with pytest.raises(EquivarError, match="equivar models --layers"):
        resolve_layers(effnet, ["_blocks.4.nope"])


def test_safetensors_weights_load_like_a_state_dict(tmp_path):
    """A ``.safetensors`` file is read without unpickling; its weights are the ones loaded; a corrupt one
    gets one clear error."""
    from safetensors.torch import save_file

    from equivar_core.planted import family_sizes, planted_model

    other = planted_model(1, family_sizes(0))[0].state_dict()
    path = tmp_path / "planted.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, str(path))
    m = load_model("equivar_core.planted:planted", str(path))
    assert torch.equal(m.module.conv1.weight, other["conv1.weight"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(EquivarError, match="cannot read weights file"):
        load_model("equivar_core.planted:planted", str(bad))


def test_a_model_is_loaded_once_per_process_and_again_when_its_weights_file_or_callable_changes(tmp_path):
    from equivar_core import planted
    from equivar_core.models.registry import load_model_once

    spec = "equivar_core.planted:planted"
    first = load_model_once(spec)
    assert load_model_once(spec) is first                                  # the stages share one module
    path = tmp_path / "w.pt"
    torch.save(first.module.state_dict(), path)
    a = load_model_once(spec, str(path))
    assert load_model_once(spec, str(path)) is a
    state = first.module.state_dict()
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    b = load_model_once(spec, str(path))
    assert b is not a and b.weights_sha256 != a.weights_sha256             # a rewritten checkpoint is reloaded
    other = planted.planted_model(3)[0]
    original = planted.planted
    try:
        planted.planted = lambda: other                                    # a patched factory builds anew
        assert load_model_once(spec).module is other
    finally:
        planted.planted = original
    assert load_model_once(spec) is first


def test_capture_passes_large_cpu_batches_in_chunks_with_the_same_result(effnet, monkeypatch):
    """On the CPU a batch goes through the model in chunks whose largest activation stays under
    CPU_CHUNK_BYTES (EfficientNet-Lite0's largest, at 224 px: 96 x 112 x 112 floats, 4.8 MB per image);
    the captured layers are those of one pass over the whole batch."""
    from equivar_core import capture as cap_module

    x = torch.rand(7, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    layers = ["_act0", "_blocks.2.depthwise"]
    seen = []
    hook = effnet.module._conv_stem.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    try:
        with torch.inference_mode(), cap_module.capture(effnet.module, layers, pre_activation=True) as cap:
            monkeypatch.setattr(cap_module, "CPU_CHUNK_BYTES", 2**60)
            whole = cap.run(x)
            assert seen == [1, 7]                                 # one image measures the sizes, once
            monkeypatch.setattr(cap_module, "CPU_CHUNK_BYTES", 10 * 2**20)     # two images' largest activation
            seen.clear()
            chunked = cap.run(x)
    finally:
        hook.remove()
    assert seen == [2, 2, 2, 1], seen
    for name in layers:
        assert chunked[name].shape == whole[name].shape
        torch.testing.assert_close(chunked[name], whole[name], atol=1e-4, rtol=1e-4)


def test_fused_batch_norms_leave_every_layer_and_the_weights_as_they_were(effnet):
    """The loaded EfficientNet applies each batch norm inside the convolution before it: every layer (the
    batch norms' own outputs included) and the logits match a model without the fusion, and the parameters
    and state dict are the file's."""
    from equivar_core.capture import capture
    from equivar_core.models.registry import BUILTINS, load_state_into, read_state_dict

    arch = BUILTINS["efficientnet_lite0"]
    path = arch.default_weights()
    plain = arch.build()
    load_state_into(plain, arch.convert(read_state_dict(path)), path)
    plain.eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    layers = ["_act0", "_blocks.4._bn0", "_blocks.4.expand", "_blocks.4.depthwise", "_blocks.4._bn2", "_blocks.4",
              "_blocks.11.depthwise"]
    with torch.inference_mode():
        with capture(effnet.module, layers, pre_activation=True) as a, capture(plain, layers, pre_activation=True) as b:
            fused, ref = a.run(x), b.run(x)
        logits, ref_logits = effnet.module(x), plain(x)
    assert hasattr(effnet.module._blocks[4]._depthwise_conv, "_fused_weight")
    for name in layers:
        torch.testing.assert_close(fused[name], ref[name], atol=1e-3 * float(ref[name].abs().max()), rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits, atol=1e-3, rtol=1e-4)
    state = effnet.module.state_dict()
    assert state.keys() == plain.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())


@pytest.mark.parametrize("pre_activation", [True, False])
def test_capture_reads_layers_that_an_in_place_activation_overwrites(pre_activation):
    """With ``ReLU(inplace=True)`` the convolution's output and the activation's input are the tensor the
    activation clips: capture copies them, so every layer reads as with an out-of-place ReLU."""
    from equivar_core.capture import capture

    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)]
    plain = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU()).eval()
    inplace = nn.Sequential(convs[0], nn.ReLU(inplace=True), convs[1], nn.ReLU(inplace=True)).eval()
    x = torch.randn(2, 3, 8, 8)
    layers = ["0", "1", "2", "3"]
    with torch.inference_mode():
        with capture(plain, layers, pre_activation=pre_activation) as cap:
            want = cap.run(x)
        with capture(inplace, layers, pre_activation=pre_activation) as cap:
            got = cap.run(x)
    assert (want["0"] < 0).any()                      # the clip has something to overwrite
    for name in layers:
        assert torch.equal(want[name], got[name]), name


@pytest.mark.parametrize("pre_activation", [True, False])
def test_capture_reduces_inside_the_pass_as_after_it(pre_activation, monkeypatch):
    """``run(x, reduce)`` keeps only what ``reduce`` takes of each layer (here a slice: a view that the
    in-place ReLU would overwrite, and sample points), also in CPU chunks: the same values as reducing the
    whole captured maps."""
    from equivar_core import capture as cap_module
    from equivar_core.transforms import sample_at

    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)]
    inplace = nn.Sequential(convs[0], nn.ReLU(inplace=True), convs[1], nn.ReLU(inplace=True)).eval()
    x = torch.randn(5, 3, 8, 8)
    points = torch.tensor([[0.1, -0.3], [0.5, 0.25], [-0.7, 0.0]])
    layers = ["0", "1", "2", "3"]
    reductions = {"slice": lambda layer, a: a[:, 1:3, 2:5, 3:6], "points": lambda layer, a: sample_at(a, points)}
    monkeypatch.setattr(cap_module, "CPU_CHUNK_BYTES", 2 * 4 * 8 * 8 * 4)         # two images per chunk
    with torch.inference_mode(), cap_module.capture(inplace, layers, pre_activation=pre_activation) as cap:
        whole = cap.run(x)
        for how, reduce in reductions.items():
            got = cap.run(x, reduce)
            for name in layers:
                assert torch.equal(got[name], reduce(name, whole[name])), (how, name)
        assert cap.run(x)["0"].shape == whole["0"].shape         # the reduction was for that run only
    assert (whole["0"] < 0).any()                               # the clip has something to overwrite


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("amounts", [(0, 1, 0, 1), (1, 2, 1, 2), (2, 0, 0, 3), (0, 0, 0, 0)])
@pytest.mark.parametrize("value", [0.0, float("-inf")])
def test_pad_equals_torch_pad(memory_format, amounts, value):
    x = torch.randn(2, 5, 7, 6).contiguous(memory_format=memory_format)
    with torch.no_grad():
        out = pad(x, amounts, value)
    assert torch.equal(out, F.pad(x, amounts, value=value))
    assert out.is_contiguous(memory_format=memory_format)
    y = x.clone().requires_grad_(True)          # with gradients it is torch's own pad
    pad(y, amounts, value).sum().backward()
    assert y.grad is not None


def test_a_channels_last_tensor_is_not_read_as_channels_first():
    """ConvNeXt-style MLPs run on N x H x W x C: such a tensor is not offered as a layer (it would be read with
    the map's rows as channels), and asking for it is one clear error."""
    from equivar_core.layer_info import inspect_layers
    from tests.models_for_tests import channels_last_mlp

    model = channels_last_mlp()
    infos = {i.layer: i for i in inspect_layers(model, 32)}
    assert infos["relu"].n_units == 8 and infos["relu"].privileged
    assert "act" not in infos and "fc" not in infos
    m = load_model("tests.models_for_tests:channels_last_mlp")
    assert resolve_layers(m, None) == ["relu"]
    with pytest.raises(EquivarError, match="no N x C x H x W"):
        resolve_layers(m, ["act"])


def test_a_layer_that_ignores_the_input_is_listed_but_not_analysed(tmp_path):
    from equivar_core import stages
    from equivar_core.capture import layer_geometry
    from equivar_core.settings import RunSettings
    from tests.models_for_tests import zero_branch

    live, dead = layer_geometry(zero_branch(), ["relu", "dead_relu"], 32)
    assert live.rf_radius > 1 and np.isnan(dead.rf_radius)
    s = RunSettings(model="tests.models_for_tests:zero_branch", layers=("relu", "dead_relu"), out=str(tmp_path))
    with pytest.raises(EquivarError, match="dead_relu does not respond to the input"):
        stages.layer_table(s)


def test_other_libraries_activations_are_measured_at_their_input():
    """A library's own activation module, once registered, is a nonlinearity like ``nn.ReLU``: its layer is
    privileged and captured before it runs."""
    from equivar_core.capture import capture, is_activation, register_activation
    from equivar_core.layer_info import inspect_layers

    class Squareplus(nn.Module):            # not a torch.nn activation
        def forward(self, x):
            return 0.5 * (x + torch.sqrt(x * x + 4))

    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), act=Squareplus())).eval()
    x = torch.randn(2, 3, 8, 8)
    assert not is_activation(net.act)
    register_activation(Squareplus)
    assert is_activation(net.act) and is_activation(nn.Hardswish())
    with torch.inference_mode(), capture(net, ["act"], pre_activation=True) as cap:
        assert torch.equal(cap.run(x)["act"], net.conv(x))
    assert {i.layer: i.reason for i in inspect_layers(net, 8)}["act"] == "input of Squareplus"


def test_timm_specs_without_timm_say_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)        # import timm fails, as where it is not installed
    with pytest.raises(EquivarError, match="torchvision==0.29.1"):
        load_model("timm:resnet18")
    with pytest.raises(EquivarError, match="timm:NAME"):
        load_model("no_such_builtin")


def test_the_late_preset_names_the_last_blocks_and_the_head_of_each_lite_network():
    """``--layers late``: the depthwise steps of the four last blocks (at stride 32) and the head's ReLU6 input,
    each a privileged 7 x 7 (Lite0) map; an architecture without the preset says so."""
    from equivar_core.layer_info import inspect_layers

    expected = {"efficientnet_lite0": 15, "efficientnet_lite1": 20, "untrained:efficientnet_lite2": 20}
    for spec, last in expected.items():
        model = load_model(spec, untrained_ok=True)
        late = resolve_layers(model, ["late"])
        assert late == [f"_blocks.{i}.depthwise" for i in range(last - 3, last + 1)] + ["_act1"], spec
        assert max(int(n.split(".")[1]) for n in late[:-1]) == len(model.module._blocks) - 1
    infos = {i.layer: i for i in inspect_layers(load_model("efficientnet_lite0").module, 224, [
        "_blocks.12.depthwise", "_act1"])}
    assert all(i.privileged and i.height == 7 for i in infos.values()), infos
    assert infos["_act1"].n_units == 1280
    with pytest.raises(EquivarError, match="model planted has no 'late' preset"):
        resolve_layers(load_model("equivar_core.planted:planted"), ["late"])
