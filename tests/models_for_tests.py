"""Small models with one planted property each, importable as ``tests.models_for_tests:<name>``."""

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
