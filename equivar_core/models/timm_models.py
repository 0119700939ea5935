"""``timm:NAME`` model specs: any architecture of timm (PyTorch Image Models), with weights read from a file
or from the caches timm itself fills, never downloaded.

``NAME`` is what ``timm.create_model`` takes, with an optional pretrained tag (``resnet50``,
``resnet50.a1_in1k``, ``convnext_tiny.fb_in22k``). The architecture is built without weights, then:

* with ``--weights PATH`` (``.safetensors``, or a ``torch.save`` state dict read with ``weights_only=True``)
  that file is loaded, strictly: the file must fit the architecture key for key;
* without it, the weights timm would use are looked up in its local caches only: the Hugging Face hub cache
  (``timm/<name>.<tag>`` repositories, ``model.safetensors`` first) and the older torch hub cache
  (``<torch hub dir>/checkpoints/<file of the pretrained URL>``). When neither holds them the load fails
  with a message saying how to get them; nothing is fetched over the network.

Like the built-in models, the module takes RGB in [0, 1]: the normalization of the weights' training
(``pretrained_cfg`` mean and std) runs in a forward pre-hook, so every layer keeps the name timm gives it
(``layer1.0.act1``, ``stages.2.blocks.0.mlp.act``). The input size is the pretrained config's.
"""

from __future__ import annotations

import difflib
import os

import torch
from torch import nn

from ..capture import register_activation
from ..errors import EquivarError

PREFIX = "timm:"

#: torchvision is timm's dependency; on x86_64 only a matching CUDA build of torch imports beside it
INSTALL_HINT = ("install timm and a torchvision that matches your torch; on an x86_64 machine without a GPU: "
                "pip install torch==2.14.1 torchvision==0.29.1 && pip install 'equivar[timm]' (see the README)")

#: file names of a timm repository on the Hugging Face hub, in the order timm reads them
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_timm_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _timm():
    try:
        import timm
    except Exception as exc:    # missing, or torchvision failing to import beside this torch
        raise EquivarError(f"model specs timm:NAME need the package timm, which cannot be imported here "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                           f"{INSTALL_HINT}") from None
    _register_timm_activations()
    return timm


def _register_timm_activations() -> None:
    """timm's own elementwise activation modules are nonlinearities too: equivar measures their input."""
    from timm.layers import activations

    for name in ("Swish", "Mish", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "HardMish", "GELU", "GELUTanh",
                 "QuickGELU", "PReLU"):
        if hasattr(activations, name):
            register_activation(getattr(activations, name))


def build(spec: str) -> nn.Module:
    """The architecture of ``timm:NAME`` with timm's random initialization, taking RGB in [0, 1]."""
    timm = _timm()
    name = spec[len(PREFIX):]
    if not name:
        raise EquivarError("model spec timm: needs a model name, e.g. timm:resnet50 (see timm.list_models())")
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.6)
        raise EquivarError(f"timm has no model {name!r}" + (f"; similar names: {', '.join(close)}" if close else "")
                           + " (all of them: python -c 'import timm; print(timm.list_models())')")
    try:
        module = timm.create_model(name, pretrained=False)
    except Exception as exc:       # e.g. an unknown pretrained tag
        raise EquivarError(f"cannot build timm model {name!r}: {str(exc).splitlines()[0][:200]}") from None
    cfg = getattr(module, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    mean, std = cfg.get("mean", (0.0, 0.0, 0.0)), cfg.get("std", (1.0, 1.0, 1.0))
    if size[0] != 3 or len(mean) != 3:
        raise EquivarError(f"timm model {name!r} takes {size[0]} input channels; equivar feeds RGB images")
    module.register_forward_pre_hook(Normalize(mean, std))
    module.input_size = int(size[-1])
    return module


class Normalize:
    """A forward pre-hook: the model's input ``(x - mean) / std`` per channel."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return ((x - self.mean.to(x)) / self.std.to(x), *args[1:])


def cached_weights(module: nn.Module, hub_cache: str | None = None) -> str | None:
    """The path of the weights timm would load for ``module`` if they are in a local cache, else None.

    ``hub_cache``: the Hugging Face hub cache folder (default: the one ``huggingface_hub`` uses, set by
    ``HF_HOME`` or ``HF_HUB_CACHE``)."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_WEIGHT_FILES
        for filename in names:
            found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url")
    if url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
        if os.path.isfile(path):
            return path
    return None


def missing_weights_message(spec: str, module: nn.Module) -> str:
    cfg = getattr(module, "pretrained_cfg", None) or {}
    where = cfg.get("hf_hub_id") or cfg.get("url")
    found = f"timm's weights ({where}) are not in the local caches" if where else "timm lists no weights for it"
    return (f"no weights for {spec}: {found}, and equivar downloads nothing. Pass --weights PATH (a .safetensors "
            f"or state-dict file of this architecture), or fetch them once where there is internet with "
            f"python -c \"import timm; timm.create_model('{spec[len(PREFIX):]}', pretrained=True)\" and copy "
            f"the Hugging Face cache (HF_HOME) here")
