"""InceptionV1 (GoogLeNet) as used by Lucid, Lucent and the Circuits thread.

This is the ``inception5h`` graph: TF "SAME" padding everywhere, local
response normalization after ``conv2d0`` and ``conv2d2`` with TensorFlow's
parameters (depth radius 5, bias 2, alpha 1e-4, beta 0.5), and each mixed
layer the concatenation of its branches in the order 1x1, 3x3, 5x5,
pool_reduce. Parameter names follow the ``inception5h.pth`` layout
(``conv2d0_pre_relu_conv.weight``, ``mixed3a_1x1_pre_relu_conv.weight``...).

Input is RGB in [0, 1]; the graph's own preprocessing ``255 x - 117`` happens inside.
A layer's activation is the output of the module of that name: after ReLU for
the convolutions, the concatenated (post-ReLU) branches for the mixed layers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..tf_layers import Conv2dSame, LocalResponseNorm, MaxPool2dSame

#: name -> (in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool_reduce)
MIXED = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
#: mixed layers preceded by a stride-2 max pool
POOL_BEFORE = {"mixed3a", "mixed4a", "mixed5a"}
LAYERS = ("conv2d0", "conv2d1", "conv2d2", *MIXED)
PRESET_LAYERS = ("conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a")


class ConvReLU(nn.Module):
    """``<name>_pre_relu_conv`` followed by ReLU; the parameters live on the parent."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = Conv2dSame(c_in, c_out, kernel, stride=stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class Mixed(nn.Module):
    """One inception module; output channels are [1x1, 3x3, 5x5, pool_reduce]."""

    def __init__(self, c_in, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.b1x1 = ConvReLU(c_in, c1, 1)
        self.b3x3 = nn.Sequential(ConvReLU(c_in, c3r, 1), ConvReLU(c3r, c3, 3))
        self.b5x5 = nn.Sequential(ConvReLU(c_in, c5r, 1), ConvReLU(c5r, c5, 5))
        self.bpool = nn.Sequential(MaxPool2dSame(3, 1), ConvReLU(c_in, cp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1x1(x), self.b3x3(x), self.b5x5(x), self.bpool(x)], 1)


def _branch_aliases() -> dict[str, str]:
    """Lucent's names of every branch's post-ReLU tensor (``mixed3b_3x3``) -> module path."""
    branches = {"1x1": "b1x1", "3x3_bottleneck": "b3x3.0", "3x3": "b3x3.1", "5x5_bottleneck": "b5x5.0",
                "5x5": "b5x5.1", "pool_reduce": "bpool.1"}
    return {f"{name}_{branch}": f"{name}.{path}" for name in MIXED for branch, path in branches.items()}


class InceptionV1(nn.Module):
    """InceptionV1 up to ``mixed5b`` plus the 1008-way ``softmax2`` classifier."""

    input_size = 224
    #: Lucent's layer names of the branches (see :func:`equivar_core.capture.layer_modules`)
    layer_aliases = _branch_aliases()

    def __init__(self):
        super().__init__()
        self.conv2d0 = ConvReLU(3, 64, 7, stride=2)
        self.maxpool0 = MaxPool2dSame(3, 2)
        self.localresponsenorm0 = LocalResponseNorm()
        self.conv2d1 = ConvReLU(64, 64, 1)
        self.conv2d2 = ConvReLU(64, 192, 3)
        self.localresponsenorm1 = LocalResponseNorm()
        for name, spec in MIXED.items():
            if name in POOL_BEFORE:
                setattr(self, f"pool_{name}", MaxPool2dSame(3, 2))
            setattr(self, name, Mixed(*spec))
        self.softmax2 = nn.Linear(1024, 1008)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 255.0 - 117.0
        x = self.localresponsenorm0(self.maxpool0(self.conv2d0(x)))
        x = self.localresponsenorm1(self.conv2d2(self.conv2d1(x)))
        for name in MIXED:
            if name in POOL_BEFORE:
                x = getattr(self, f"pool_{name}")(x)
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax2(self.features(x).mean((2, 3)))


def _key_map() -> dict[str, str]:
    """Map ``inception5h.pth`` parameter names to this module's names."""
    out = {}
    for base in ("conv2d0", "conv2d1", "conv2d2"):
        for p in ("weight", "bias"):
            out[f"{base}_pre_relu_conv.{p}"] = f"{base}.conv.{p}"
    branches = {"1x1": "b1x1", "3x3_bottleneck": "b3x3.0", "3x3": "b3x3.1",
                "5x5_bottleneck": "b5x5.0", "5x5": "b5x5.1", "pool_reduce": "bpool.1"}
    for name in MIXED:
        for src, dst in branches.items():
            for p in ("weight", "bias"):
                out[f"{name}_{src}_pre_relu_conv.{p}"] = f"{name}.{dst}.conv.{p}"
    for p in ("weight", "bias"):
        out[f"softmax2_pre_activation_matmul.{p}"] = f"softmax2.{p}"
    return out


KEY_MAP = _key_map()


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``inception5h.pth`` state dict for :class:`InceptionV1`.

    Keys this model does not use (the auxiliary ``head0``/``head1`` heads) are
    dropped; keys already in this module's naming pass through unchanged.
    """
    own = set(KEY_MAP.values())
    return {KEY_MAP.get(k, k): v for k, v in state.items() if k in KEY_MAP or k in own}


def inception5h_template() -> dict[str, torch.Tensor]:
    """Zero tensors of the ``inception5h.pth`` names and shapes (for tests and docs)."""
    model = InceptionV1()
    own = model.state_dict()
    return {src: torch.zeros_like(own[dst]) for src, dst in KEY_MAP.items()}
