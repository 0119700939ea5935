"""Which tensors of a network can hold features one channel at a time: the privileged basis.

A channel can be a feature on its own only where the network treats channels
one by one: at the input of an elementwise nonlinearity (ReLU, ReLU6, ...)
or at its output. A linear bottleneck (EfficientNet's 1x1 projection), a
residual sum, or a convolution whose output is only added to others has no
preferred basis: any rotation of its channels, undone by the next layer,
gives the same network, so single channels there need not be features and
families of them are not expected (Elhage et al., "Privileged Bases in the
Transformer Residual Stream"; the Circuits thread analyses post-ReLU units).

:func:`inspect_layers` decides this from one forward pass, not from names:
a layer is privileged when the tensor it gives (for a nonlinearity module,
its input, as :class:`~equivar_core.capture.capture` measures it)

* feeds an elementwise nonlinearity, directly or through channel-wise
  modules (batch norm, dropout, pooling), or
* comes out of one, directly or through channel-wise operations and
  channel concatenation (an Inception module's output).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .capture import is_activation, layer_modules
from .tf_layers import AvgPool2dSame, MaxPool2dSame

#: modules that act on each channel alone (a per-channel affine map or a spatial pooling)
CHANNELWISE = (nn.BatchNorm2d, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, MaxPool2dSame, AvgPool2dSame)
#: autograd nodes of elementwise nonlinearities
_NONLINEAR_FN = ("Relu", "Hardtanh", "LeakyRelu", "Silu", "Gelu", "Elu", "Sigmoid", "Tanh", "Clamp", "Hardswish",
                 "Hardsigmoid", "Mish", "Softplus", "Prelu")
#: autograd nodes that keep each channel's values in its own channel
_CHANNELWISE_FN = ("NativeBatchNorm", "CudnnBatchNorm", "MaxPool2D", "AvgPool2D", "ConstantPadNd", "Clone",
                   "ToCopy", "MaxPool2DWithIndices", "ReflectionPad2D", "ReplicationPad2D")


@dataclass(frozen=True)
class LayerInfo:
    """One addressable layer at the model's input size."""

    layer: str
    kind: str            # the module's class
    n_units: int
    height: int
    width: int
    stride: float        # input pixels per map cell
    privileged: bool
    reason: str          # why (not) privileged, in a few words


def _follows_nonlinearity(fn, depth: int = 0) -> str | None:
    """The nonlinearity the tensor with autograd node ``fn`` comes out of, through channel-wise steps."""
    if fn is None or depth > 50:
        return None
    name = type(fn).__name__
    if name.startswith(_NONLINEAR_FN):
        return name.removesuffix("Backward0").removesuffix("Backward1")
    parents = [f for f, _ in fn.next_functions if f is not None and type(f).__name__ != "AccumulateGrad"]
    if name.startswith("Cat") and parents:
        found = [_follows_nonlinearity(f, depth + 1) for f in parents]
        return found[0] if all(found) else None
    if name.startswith(_CHANNELWISE_FN) and parents:
        return _follows_nonlinearity(parents[0], depth + 1)
    return None


def inspect_layers(model: nn.Module, input_size: int, names: list[str] | None = None,
                   device: str = "cpu") -> list[LayerInfo]:
    """Shape, stride and privileged basis of every addressable layer with an N x C x H x W output (or of
    ``names``). A 4-d tensor whose last two axes differ on the square input is channels-last (N x H x W x C)
    and left out."""
    modules = layer_modules(model)
    wanted = list(names) if names is not None else list(modules)
    events: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []    # (module, input, output) in call order

    def hook(module, inputs, output):
        inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if isinstance(output, torch.Tensor):
            events.append((module, inp, output))

    unique = {id(m): m for m in modules.values()}
    handles = [m.register_forward_hook(hook) for m in unique.values()]
    x = torch.rand(1, 3, input_size, input_size, device=device, requires_grad=True)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    feeds: dict[int, str] = {}                           # id(tensor) -> the nonlinearity it feeds
    for module, inp, out in reversed(events):
        if inp is None:
            continue
        if is_activation(module):
            feeds[id(inp)] = type(module).__name__
        elif isinstance(module, CHANNELWISE) and id(out) in feeds:
            feeds[id(inp)] = feeds[id(out)]
    measured: dict[int, tuple[torch.Tensor, str]] = {}
    for module, inp, out in events:
        if id(module) in measured:
            continue                                     # a module called twice is measured at its first call
        if is_activation(module):
            measured[id(module)] = (inp, f"input of {type(module).__name__}")
        elif id(out) in feeds:
            measured[id(module)] = (out, f"feeds {feeds[id(out)]}")
        else:
            after = _follows_nonlinearity(out.grad_fn)
            measured[id(module)] = (out, f"output of {after}" if after else "linear: no elementwise nonlinearity "
                                                                             "next to it")
    infos = []
    for name in wanted:
        got = measured.get(id(modules[name])) if name in modules else None
        if got is None or got[0] is None or got[0].dim() != 4:
            continue
        t, reason = got
        _, c, h, w = t.shape
        if h != w:          # the input is square, so a map's height and width agree: this is N x H x W x C
            continue        # (a channels-last MLP, as in ConvNeXt's blocks), which the pipeline would misread
        infos.append(LayerInfo(name, type(modules[name]).__name__, int(c), int(h), int(w), input_size / w,
                               not reason.startswith("linear"), reason))
    return infos
