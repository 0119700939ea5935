"""A small CNN for the training example: ``equivar run --model examples.small_cnn:small_cnn --weights step_N.pt``."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv 7x7 (32) - pool - conv 3x3 (64) - pool - conv 3x3 (64) - global pool - linear; RGB in [0, 1]."""

    input_size = 64

    def __init__(self, n_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, padding=3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def small_cnn() -> SmallCNN:
    """Untrained, seeded (the weights of a checkpoint come with ``--weights``)."""
    torch.manual_seed(0)
    return SmallCNN().eval()
