"""Capturing layer activations with forward hooks.

:class:`capture` is a context manager that hooks the requested modules, and
removes every hook on exit. One forward pass fills all requested layers; with
``stop_early`` the pass ends as soon as the last requested layer has fired,
so deeper layers cost nothing. For modules that are themselves a
nonlinearity (ReLU, ReLU6, Hardtanh...), ``pre_activation=True`` records the
module's input: the pre-activation, where tuning is not hidden by saturation.

A captured tensor is copied (a later in-place operation would overwrite it),
unless the caller needs only part of it: ``run(x, reduce=...)`` applies the
reduction (a few cells, sample points) inside the pass, so only the reduced
values are kept and copied, and a batch's chunks join small tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .errors import EquivarError

#: elementwise nonlinearity modules: ``pre_activation`` captures their input
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Mish,
               nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.CELU, nn.SELU, nn.PReLU)
_activation_types: list[type] = list(ACTIVATIONS)


def register_activation(cls: type) -> None:
    """Count the module class ``cls`` as an elementwise nonlinearity (a library's own GELU, say)."""
    if cls not in _activation_types:
        _activation_types.append(cls)


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise nonlinearity (:data:`ACTIVATIONS` or a registered class)."""
    return isinstance(module, tuple(_activation_types))


class _Stop(Exception):
    pass


#: On the CPU, :meth:`capture.run` passes a batch through the model in chunks whose largest activation stays
#: under this many bytes. glibc serves blocks above 32 MiB (its largest mmap threshold) with a fresh ``mmap``
#: and unmaps them when freed, so every forward pass of a large batch faults all their pages in again: with
#: EfficientNet-Lite0 at 224 px, a batch of 16 spent as much time in the kernel as in the network.
CPU_CHUNK_BYTES = 16 * 2**20


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every addressable layer of ``model`` by name: ``named_modules()`` plus the model's own aliases.

    A model may set ``layer_aliases`` (alias -> module path), e.g. Lucent's ``mixed3b_3x3`` for the
    post-ReLU output of InceptionV1's 3x3 branch. This is the one place layer names resolve.
    """
    modules = {n: m for n, m in model.named_modules() if n}
    for alias, path in getattr(model, "layer_aliases", {}).items():
        if path in modules:
            modules[alias] = modules[path]
    return modules


class capture:
    """Hooks ``layers`` of ``model``; ``run(x)`` returns ``{layer: N x C x H x W}``."""

    def __init__(self, model: nn.Module, layers: list[str], pre_activation: bool = False, stop_early: bool = True):
        modules = layer_modules(model)
        self.model, self.layers, self.stop_early = model, list(layers), stop_early
        self._modules = {name: modules[name] for name in self.layers}
        self.pre_activation = pre_activation
        self._handles: list = []
        self._out: dict[str, torch.Tensor] = {}
        self._largest: dict[tuple, int] = {}
        self._reduce = None

    def __enter__(self) -> "capture":
        for name, module in self._modules.items():
            if self.pre_activation and is_activation(module):     # its input, before it runs
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            else:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        """A module's output, copied: a later in-place operation (an in-place activation of a convolution's
        output, a residual ``+=``) would overwrite it."""
        def hook(module, inputs, output):
            self._keep(name, output, copy=True)

        return hook

    def _pre_hook(self, name: str):
        """The pre-activation is the activation's input before it runs: an in-place activation (``inplace=True``,
        as EfficientNet-Lite0's ReLU6) overwrites it, so it is copied first."""
        def hook(module, inputs):
            self._keep(name, inputs[0] if inputs else None, copy=getattr(module, "inplace", False))

        return hook

    def _keep(self, name: str, value, copy: bool) -> None:
        if not isinstance(value, torch.Tensor) or value.dim() != 4:
            raise ValueError(f"layer {name} gives {type(value).__name__} {getattr(value, 'shape', '')}, "
                             "expected an N x C x H x W tensor")
        if self._reduce is not None:
            kept = self._reduce(name, value)
            # a view of the activations (a slice) is overwritten with them: copy it (it is small)
            copy = copy and kept.untyped_storage().data_ptr() == value.untyped_storage().data_ptr()
            value = kept
        self._out[name] = value.clone() if copy else value
        if self.stop_early and len(self._out) == len(self._modules):
            raise _Stop

    def run(self, x: torch.Tensor, reduce=None) -> dict[str, torch.Tensor]:
        """The requested layers' activations for the batch ``x`` (on the CPU without gradients, computed in
        chunks of images whose largest activation stays under ``CPU_CHUNK_BYTES``; the result is the same).

        ``reduce(layer, activations)``: what to keep of each layer's N x C x H x W activations (a tensor whose
        first axis is still the images, computed image by image), applied inside the pass.
        """
        self._reduce = reduce
        try:
            if x.device.type != "cpu" or torch.is_grad_enabled() or len(x) < 2:
                return self._run(x)
            chunk = max(1, CPU_CHUNK_BYTES // self._bytes_per_image(x[:1]))
            if chunk >= len(x):
                return self._run(x)
            parts = [self._run(part) for part in x.split(chunk)]
            return {n: torch.cat([p[n] for p in parts]) for n in self.layers}
        finally:
            self._reduce = None

    def _bytes_per_image(self, x: torch.Tensor) -> int:
        """The largest tensor a module outputs for one image of this shape, up to the last requested layer."""
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in self._largest:
            largest = [x.numel() * x.element_size()]

            def watch(module, inputs, output):
                if isinstance(output, torch.Tensor):
                    largest[0] = max(largest[0], output.numel() * output.element_size())

            handle = nn.modules.module.register_module_forward_hook(watch)
            try:
                self._run(x)
            finally:
                handle.remove()
            self._largest[key] = largest[0]
        return self._largest[key]

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._out = {}
        try:
            self.model(x)
        except _Stop:
            pass
        missing = [n for n in self.layers if n not in self._out]
        if missing:
            raise ValueError(f"layer {missing[0]} did not run in the forward pass")
        out, self._out = self._out, {}
        return {n: out[n] for n in self.layers}


@dataclass(frozen=True)
class Network:
    """A model as the forward passes see it: its ``module`` (on ``device``) and the side of the square inputs
    it takes (``input_size``; a smaller probe where the caller needs less, see ``circuits.probe_size``)."""

    module: nn.Module
    input_size: int
    device: str = "cpu"


@dataclass(frozen=True)
class LayerGeometry:
    """Shape and receptive field of one layer at the model's input size."""

    layer: str
    n_units: int
    height: int
    width: int
    stride: float          # input pixels per map cell
    rf_radius: float       # effective receptive-field radius in input pixels
    rf_offset: tuple[float, float] = (0.0, 0.0)  # RF centre minus the nominal cell centre (dy, dx), pixels

    def row(self) -> dict:
        """The geometry columns of this layer's row in the ``layers`` table."""
        return {"layer": self.layer, "n_units": self.n_units, "height": self.height, "width": self.width,
                "stride": self.stride, "rf_radius": self.rf_radius, "rf_offset_y": self.rf_offset[0],
                "rf_offset_x": self.rf_offset[1]}

    @classmethod
    def from_row(cls, r, layer: str | None = None) -> "LayerGeometry":
        """The geometry in a row of the ``layers`` table (``layer``: where the row is indexed by it)."""
        return cls(layer or r.layer, int(r.n_units), int(r.height), int(r.width), float(r.stride),
                   float(r.rf_radius), (float(r.rf_offset_y), float(r.rf_offset_x)))

    def centre_cell(self, canvas: int) -> tuple[int, int]:
        """Index of the central map cell on a square canvas of ``canvas`` pixels."""
        n = int(math.ceil(canvas / self.stride))
        return n // 2, n // 2

    def rf_centre(self, canvas: int) -> tuple[float, float]:
        """Pixel coordinates (y, x) of the central cell's receptive-field centre on a canvas."""
        cy, cx = self.centre_cell(canvas)
        return ((cy + 0.5) * self.stride + self.rf_offset[0], (cx + 0.5) * self.stride + self.rf_offset[1])


def layer_geometry(model: nn.Module, layers: list[str], input_size: int, device: str = "cpu",
                   seed: int = 0, dead_ok: bool = True) -> list[LayerGeometry]:
    """Shapes at ``input_size`` and the effective receptive field of each layer.

    The effective RF radius is the radius around the centre unit's position
    holding 90% of the mean |d unit / d input| (over units and three noise
    images), measured on the pre-activation. Where that gradient is zero (a
    layer whose weights are all zero, as in some untrained networks) the
    radius and offset are NaN, or with ``dead_ok=False`` an error is raised.
    """
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.1 * torch.randn(3, 3, input_size, input_size, generator=gen)).to(device).requires_grad_(True)
    out = []
    for name in layers:
        with capture(model, [name], pre_activation=True) as cap, torch.enable_grad():   # stops at the layer
            acts = cap.run(x)[name]
            n, c, h, w = acts.shape
            acts[:, :, h // 2, w // 2].sum().backward()
            g = x.grad.abs().sum((0, 1)).cpu()
            x.grad = None
            stride = input_size / w
            if float(g.sum()) == 0.0:         # the unit ignores the input (zero weights): no receptive field
                if not dead_ok:
                    raise EquivarError(f"layer {name} does not respond to the input (its gradient is zero "
                                       "everywhere, e.g. untrained weights set to zero): nothing to analyse there")
                out.append(LayerGeometry(name, c, h, w, stride, float("nan"), (float("nan"), float("nan"))))
                continue
            yy, xx = torch.meshgrid(torch.arange(input_size) + 0.5, torch.arange(input_size) + 0.5, indexing="ij")
            cy, cx = float((g * yy).sum() / g.sum()), float((g * xx).sum() / g.sum())
            offset = (cy - (h // 2 + 0.5) * stride, cx - (w // 2 + 0.5) * stride)
            r = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt().flatten()
            order = torch.argsort(r)
            cum = torch.cumsum(g.flatten()[order], 0)
            k = int(torch.searchsorted(cum, 0.9 * cum[-1]))
            radius = float(r[order][min(k, len(r) - 1)])
            out.append(LayerGeometry(name, c, h, w, stride, max(radius, stride / 2, 1.0), offset))
    return out


def canvas_size(geom: LayerGeometry, input_size: int) -> int:
    """Size of a stimulus canvas that holds the layer's RF twice over (a multiple of 2 x stride)."""
    step = max(2, int(round(2 * geom.stride)))
    need = max(32, 4.0 * geom.rf_radius + 4 * geom.stride)
    return int(min(input_size, step * math.ceil(need / step)))
