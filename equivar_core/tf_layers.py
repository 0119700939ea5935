"""Building blocks shared by the built-in architectures.

TensorFlow-trained weights need TensorFlow's "SAME" padding: the total padding
``max((ceil(n / s) - 1) * s + k - n, 0)`` is split with the extra pixel on the
bottom/right. Padding is computed from the input size at call time, so the
models accept any input resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Return (before, after) TF-"SAME" padding for one spatial axis."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def pad(x: torch.Tensor, amounts: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """``F.pad(x, (left, right, top, bottom), value=value)`` of an N x C x H x W tensor, in its memory format.

    Without gradients, the picture is copied into the middle of an empty tensor and only the border is filled:
    about 40% faster than ``F.pad`` on channels-last maps, and the same numbers.
    """
    left, right, top, bottom = amounts
    if x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad) or min(amounts) < 0:
        return F.pad(x, amounts, value=value)
    n, c, h, w = x.shape
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    out = torch.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                      memory_format=fmt)
    out[:, :, top:top + h, left:left + w] = x
    out[:, :, :top].fill_(value)
    out[:, :, top + h:].fill_(value)
    out[:, :, top:top + h, :left].fill_(value)
    out[:, :, top:top + h, left + w:].fill_(value)
    return out


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric for even sizes)."""

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = (self._fused_weight, self._fused_bias) if hasattr(self, "_fused_weight") else \
            (self.weight, self.bias)
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:        # symmetric: the convolution pads, without a padded copy
            return F.conv2d(x, weight, bias, self.stride, (top, left), self.dilation, self.groups)
        x = pad(x, (left, right, top, bottom))
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)

    def fuse(self, bn: nn.BatchNorm2d) -> None:
        """For inference: apply the (eval-mode) batch norm ``bn`` that follows this convolution inside it, and
        let ``bn`` pass its input on. Its output, and what hooks on either module see, stay the same (up to
        rounding); the parameters and the state dict are unchanged (the fused kernel is a buffer that is
        not saved)."""
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if self.bias is not None:
            bias = bias + self.bias * scale
        self.register_buffer("_fused_weight", (self.weight * scale.view(-1, 1, 1, 1)).detach(), persistent=False)
        self.register_buffer("_fused_bias", bias.detach(), persistent=False)
        bn.forward = _passes_input_on


def _passes_input_on(x: torch.Tensor) -> torch.Tensor:
    return x


class MaxPool2dSame(nn.MaxPool2d):
    """``nn.MaxPool2d`` with TensorFlow "SAME" padding (pads with -inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = _pair(self.kernel_size), _pair(self.stride)
        top, bottom = same_padding(x.shape[-2], k[0], s[0])
        left, right = same_padding(x.shape[-1], k[1], s[1])
        x = pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, k, s)


class AvgPool2dSame(nn.AvgPool2d):
    """Average pool with TF "SAME" padding; the linear stand-in for ``MaxPool2dSame``.

    Padded zeros are excluded from the mean, as in TensorFlow.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = _pair(self.kernel_size), _pair(self.stride)
        top, bottom = same_padding(x.shape[-2], k[0], s[0])
        left, right = same_padding(x.shape[-1], k[1], s[1])
        ones = torch.ones_like(x[:1, :1])
        pad = (left, right, top, bottom)
        total = F.avg_pool2d(F.pad(x, pad), k, s, divisor_override=1)
        count = F.avg_pool2d(F.pad(ones, pad), k, s, divisor_override=1)
        return total / count


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class LocalResponseNorm(nn.Module):
    """TensorFlow's ``tf.nn.local_response_normalization``.

    ``out_c = x_c / (bias + alpha * sum_{|j - c| <= depth_radius} x_j^2) ** beta``.
    Unlike ``torch.nn.LocalResponseNorm``, alpha is *not* divided by the window
    size: Lucent's port of InceptionV1 uses the torch module and therefore
    normalizes about eleven times too weakly.
    """

    def __init__(self, depth_radius: int = 5, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.5):
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.depth_radius
        sq = F.pad(x.pow(2), (0, 0, 0, 0, r, r))
        window = sq.unfold(1, 2 * r + 1, 1).sum(-1)
        return x / (self.bias + self.alpha * window).pow(self.beta)

    def extra_repr(self) -> str:
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"
