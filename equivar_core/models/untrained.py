"""``untrained:NAME`` model specs: a built-in architecture with seeded random weights, the control that says
how much of a trained network's family structure its architecture alone gives.

``untrained:efficientnet_lite0`` builds the architecture of the built-in ``efficientnet_lite0`` and draws
every weight from a ``torch.Generator`` seeded with 0; ``untrained:efficientnet_lite0@seed=3`` draws them
with seed 3. Its default name (the ``model`` column and partition key) is ``untrained_efficientnet_lite0``,
``untrained_efficientnet_lite0_seed3`` for a seed other than 0. Nothing is read or downloaded: the spec
takes no ``--weights``.

The initialization is the one each architecture gets when trained from scratch:

* EfficientNet-Lite0, as TensorFlow's reference EfficientNet (and timm's ``_init_weight_goog``): every
  convolution normal with standard deviation ``sqrt(2 / fan_out)``, ``fan_out = kh * kw * out / groups``
  (so a depthwise kernel's fan-out is ``kh * kw``); the classifier uniform in ``+-1 / sqrt(out)``; biases 0;
  batch norms scale 1, shift 0.
* InceptionV1 (no batch norms): He et al.'s normal for ReLU networks, ``sqrt(2 / fan_in)``, biases 0, so
  the activations keep their scale from layer to layer.

Batch-norm statistics are then recomputed on photos (:func:`calibrate_batch_norms`): the run's own views
(up to :data:`CALIBRATION_IMAGES` of them, spread evenly over the run's list, :func:`calibration_subset`) go
through the network as one batch in training mode with ``momentum=None``, so each batch norm's running mean
and variance are exactly the mean and variance of its input over those photos (pixels of every photo
pooled), with every earlier batch norm already normalizing by its own: the eval-mode network computes what
that pass computed. The batch norms are folded into the convolutions afterwards, as
for the trained model. The weights therefore depend on the seed and on the photos, and both enter the
model's hash (``weights_sha256``: the state dict's content) and the ``models`` asset's fingerprint.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import EquivarError
from ..images import ImageView, load_view

PREFIX = "untrained:"
NAME_PREFIX = "untrained_"
#: at most this many of the run's photos set the batch-norm statistics (one forward batch)
CALIBRATION_IMAGES = 64

_SEED = re.compile(r"seed=(\d+)")


def is_untrained_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse(spec: str, builtins: Sequence[str]) -> tuple[str, int]:
    """``(built-in name, seed)`` of ``untrained:NAME[@seed=N]``; one clear error for anything else."""
    rest = spec[len(PREFIX):]
    base, at, option = rest.partition("@")
    if base not in builtins:
        raise EquivarError(f"model spec {spec!r}: untrained:NAME takes a built-in architecture "
                           f"({', '.join(builtins)}), e.g. untrained:{next(iter(builtins))}")
    if not at:
        return base, 0
    m = _SEED.fullmatch(option)
    if m is None:
        raise EquivarError(f"model spec {spec!r}: after '@' give the seed of the random weights, e.g. "
                           f"untrained:{base}@seed=1")
    return base, int(m.group(1))


def default_name(spec: str) -> str:
    """``untrained_NAME`` (seed 0) or ``untrained_NAME_seedN``; the spec itself when it does not parse (the
    load then says why)."""
    base, _, option = spec[len(PREFIX):].partition("@")
    m = _SEED.fullmatch(option)
    if not base or (option and m is None):
        return spec
    seed = int(m.group(1)) if m else 0
    return NAME_PREFIX + base + (f"_seed{seed}" if seed else "")


def spec_of_name(name: str, builtins: Sequence[str]) -> str | None:
    """The spec whose default name is ``name`` (``untrained_efficientnet_lite0_seed2`` ->
    ``untrained:efficientnet_lite0@seed=2``), or None."""
    if not name.startswith(NAME_PREFIX):
        return None
    rest = name[len(NAME_PREFIX):]
    if rest in builtins:
        return PREFIX + rest
    m = re.fullmatch(r"(.+)_seed([1-9]\d*)", rest)
    if m and m.group(1) in builtins:
        return f"{PREFIX}{m.group(1)}@seed={m.group(2)}"
    return None


def initialize(module: nn.Module, seed: int, scheme: str) -> None:
    """Draw every weight of ``module`` anew from a generator seeded with ``seed`` (modules in
    ``named_modules`` order). ``scheme``: ``"fan_out"`` (EfficientNet) or ``"fan_in"`` (He, for networks
    without batch norm)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                fan = kh * kw * (m.out_channels // m.groups if scheme == "fan_out" else m.in_channels // m.groups)
                m.weight.normal_(0.0, math.sqrt(2.0 / fan), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                if scheme == "fan_out":
                    bound = 1.0 / math.sqrt(m.out_features)
                    m.weight.uniform_(-bound, bound, generator=gen)
                else:
                    m.weight.normal_(0.0, math.sqrt(2.0 / m.in_features), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()            # scale 1, shift 0, running mean 0 and variance 1


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def calibration_subset(views: Sequence[ImageView], k: int = CALIBRATION_IMAGES) -> list[ImageView]:
    """At most ``k`` of the run's views, evenly spread over its list (a folder sorted by class gives photos of
    many classes)."""
    views = list(views)
    if len(views) <= k:
        return views
    idx = np.unique(np.linspace(0, len(views) - 1, k).round().astype(int))
    return [views[i] for i in idx]


def calibration_batch(views: Sequence[ImageView], size: int) -> torch.Tensor:
    """The photos of ``views`` at the model's input size, as one batch; unreadable files are left out."""
    loaded = [t for t in (load_view(v, size) for v in views) if t is not None]
    if len(loaded) < 2:
        raise EquivarError(f"an untrained model's batch-norm statistics need at least 2 readable photos; "
                           f"{len(loaded)} of the {len(views)} chosen could be read")
    return torch.stack(loaded)


def calibrate_batch_norms(module: nn.Module, images: torch.Tensor) -> None:
    """Set every batch norm's running mean and variance to the mean and variance of its input over ``images``
    (one batch, the earlier batch norms normalizing by their own new statistics), then put ``module`` in eval
    mode: in eval mode each batch norm then standardizes its input over the photos exactly as the training-mode
    pass did. Each batch norm keeps its momentum."""
    norms = batch_norms(module)
    momenta = [m.momentum for m in norms]
    counts: dict[int, int] = {}

    def count(m, args):
        x = args[0]
        counts[id(m)] = x.numel() // x.shape[1]

    hooks = [m.register_forward_pre_hook(count) for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None                   # a cumulative average: after one batch, that batch's statistics
        module.train()
        with torch.no_grad():
            module(images)
            for m in norms:                     # torch keeps the unbiased variance; the pass divided by n
                n = counts.get(id(m), 0)
                if n > 1:
                    m.running_var.mul_((n - 1) / n)
    finally:
        for h in hooks:
            h.remove()
        for m, mom in zip(norms, momenta):
            m.momentum = mom
    module.eval()
