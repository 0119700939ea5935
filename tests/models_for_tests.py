"""Small models with one planted property each, importable as ``tests.models_for_tests:<name>``."""

from collections import OrderedDict

import torch
from torch import nn

from equivar_core.planted import edge_kernel


class TwoScales(nn.Module):
    """Two parallel layers on the input: edges at 4 orientations, and the same edges twice as large.

    Unit i of ``large`` is unit i of ``small`` at scale 2.
    """

    input_size = 96

    def __init__(self):
        super().__init__()
        self.small = nn.Conv2d(3, 4, 9, padding=4, bias=False)
        self.large = nn.Conv2d(3, 4, 17, padding=8, bias=False)
        with torch.no_grad():
            for i, deg in enumerate((0.0, 45.0, 90.0, 135.0)):
                self.small.weight[i] = edge_kernel(9, deg, sigma=1.5)
                self.large.weight[i] = edge_kernel(17, deg, sigma=3.0)

    def forward(self, x):
        return self.small(x) + self.large(x)[:, :, :, :]


def two_scales() -> TwoScales:
    return TwoScales().eval()


class NaNNet(nn.Module):
    """A convolution whose weights are NaN: every activation is NaN."""

    input_size = 64

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.fill_(float("nan"))

    def forward(self, x):
        return self.relu(self.conv(x))


def nan_net() -> NaNNet:
    return NaNNet().eval()


class ChannelsLastMLP(nn.Module):
    """A convolution, then a pointwise MLP run channels-last (N x H x W x C), as ConvNeXt's blocks run it."""

    input_size = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 16)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.relu(self.conv(x)).permute(0, 2, 3, 1)          # N x H x W x C
        return self.act(self.fc(x)).permute(0, 3, 1, 2)


def channels_last_mlp() -> ChannelsLastMLP:
    return ChannelsLastMLP().eval()


class ZeroBranch(nn.Module):
    """A ReLU after a convolution whose weights are all zero (as timm zero-initializes a residual block's last
    batch norm): that layer does not respond to the input."""

    input_size = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.dead = nn.Conv2d(4, 4, 3, padding=1)
        self.dead_relu = nn.ReLU()
        with torch.no_grad():
            self.dead.weight.zero_()

    def forward(self, x):
        return self.dead_relu(self.dead(self.relu(self.conv(x))))


def zero_branch() -> ZeroBranch:
    return ZeroBranch().eval()


def three_conv_chain() -> nn.Module:
    """Convolution, ReLU, convolution, ReLU6 in a chain (``r1`` feeds ``r2``)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(c1=nn.Conv2d(3, 4, 3, padding=1), r1=nn.ReLU(),
                                     c2=nn.Conv2d(4, 5, 3, padding=1), r2=nn.ReLU6())).eval()
