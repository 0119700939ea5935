"""What building a family in would save: its members' weights tied to what the group predicts.

If the members of a rotation family are one feature turned to each member's place, the kernels that make
them are one template acted on by the rotation: ``K_m = g_m R(theta_m) T``, with a gain ``g_m`` per member
(a batch norm rescales each channel, and a group convolution with a per-channel gain would keep it). A flip
pair is the same with the identity and the left-right mirror as its two actions. Tying a family replaces its
members' kernels by the best such approximation and keeps everything else of the network; what that costs is
measured on photos through the whole network (:func:`measure_tying`), what it saves is counted in weights.

**Which weights make a unit** (:func:`producer`). The unit's pre-activation is one output channel of the
convolution that feeds the layer's tensor (through channel-wise modules: batch norms, folded or not). Two kinds
of convolution can be tied, because only there does the transform act on the kernel alone:

* ``kernel``: the network's first convolution, over the (per-channel normalized) image: rotating the image
  rotates the kernel's spatial axes and leaves its colour axis alone (EfficientNet's stem, the planted
  models' ``conv1``);
* ``depthwise``: a depthwise convolution (one input channel per output channel, as in EfficientNet's
  blocks): the member's own k x k kernel is turned; the 1 x 1 expansion that makes its input channel is
  left free (it mixes channels, which the rotation does not move). Tying the effective kernel from the
  previous analysed layer through the expansion is not measured: the ReLU6 between them makes it no
  kernel.

A convolution over channels that are themselves transformed (any later dense convolution) is not tied: the
transform permutes its input channels too, which the stored families of the layer below do not fully describe.

**The template** (:func:`tie_kernels`) is the least-squares solution of ``min sum_m |K_m - g_m A_m T|^2``
over T and the gains, with ``A_m`` the member's action on a kernel as the circuit tables use it
(:meth:`~equivar_core.transforms.Transform.act_on_kernels`: bilinear rotation about the kernel's centre,
exact for quarter turns; the mirror). Where every ``A_m`` is exact (a permutation of the kernel's cells)
this is the mean of the members' kernels turned back to the reference place, each divided by its gain.

**The control** is a sham family: as many units drawn at random (seeded) from the layer's units outside every
family of the transform, given the family's places, and tied the same way. A family of real copies costs
little; the sham shows what tying as many unrelated units costs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .capture import is_activation, layer_modules
from .errors import EquivarError
from .layer_info import CHANNELWISE
from .limits import setting
from .transforms import TRANSFORMS


@dataclass(frozen=True)
class TyingSettings:
    """Which families are tied one by one, their controls, and the photos the cost is measured on."""

    #: per layer and transform, the largest families whose cost is measured one by one (every family of the
    #: layer is tied together in the layer's own row)
    max_families: int = setting(2, low=0)
    #: sham families per tied family (and per layer row); their costs are averaged
    controls: int = setting(1, low=0, high=100)
    #: a folder of photos to measure on (labelled ones give top-1: class from the file name or folder,
    #: :mod:`equivar_core.labels`); empty: the run's own images
    images: str = setting("")
    #: ... this many of them (of the run's own: the first); each configuration is a pass over them
    n_images: int = setting(16, low=1)
    #: least-squares rounds between the template and the gains
    rounds: int = setting(8, low=1, high=100)


@dataclass(frozen=True)
class Producer:
    """The convolution whose output channels are a layer's units, and which of its weights tying replaces."""

    conv: nn.Conv2d
    kind: str                    # ``kernel`` or ``depthwise``
    layer: nn.Module             # the layer's module: its input (a nonlinearity's) or output holds the units
    reads_input: bool            # whether the units are the layer module's input (it is a nonlinearity)

    @contextlib.contextmanager
    def units(self):
        """Captures the layer's tensor on each forward pass inside the block: yields a list that holds the
        last one (a copy, taken before an in-place nonlinearity changes it)."""
        got: list[torch.Tensor] = []

        def keep(t):
            got[:] = [t.detach().clone()]

        handle = (self.layer.register_forward_pre_hook(lambda m, inputs: keep(inputs[0])) if self.reads_input else
                  self.layer.register_forward_hook(lambda m, inputs, output: keep(output)))
        try:
            yield got
        finally:
            handle.remove()

    @property
    def weight(self) -> torch.Tensor:
        """The kernel the forward pass uses (a folded batch norm's, where one is folded in)."""
        return self.conv._fused_weight if hasattr(self.conv, "_fused_weight") else self.conv.weight

    @property
    def n_weights(self) -> int:
        return int(self.conv.weight.numel())


def producer(module: nn.Module, layer: str, input_size: int) -> Producer | None:
    """What makes the units of ``layer`` (see the module docstring), from one forward pass on a small random
    image; None where the layer's units come from no convolution that tying can act on."""
    modules = layer_modules(module)
    if layer not in modules:
        raise EquivarError(f"unknown layer {layer!r}")
    events: list[tuple[nn.Module, torch.Tensor | None, torch.Tensor]] = []

    def hook(m, inputs, output):
        if isinstance(output, torch.Tensor):
            events.append((m, inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None, output))

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in modules.values()}.values()]
    device = next(module.parameters()).device
    try:
        with torch.no_grad():
            module(torch.rand(1, 3, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    target = next(((inp if is_activation(m) else out) for m, inp, out in events if m is modules[layer]), None)
    first_conv = next((m for m, _, _ in events if isinstance(m, nn.Conv2d)), None)
    for m, inp, out in reversed(events):
        if target is None or out is not target or m is modules[layer]:
            continue
        if isinstance(m, nn.Conv2d):
            if m.groups == m.in_channels == m.out_channels:
                return Producer(m, "depthwise", modules[layer], is_activation(modules[layer]))
            if m is first_conv and m.groups == 1:
                return Producer(m, "kernel", modules[layer], is_activation(modules[layer]))
            return None
        if isinstance(m, CHANNELWISE) and inp is not None:
            target = inp
            continue
        return None
    return None


def actions(transform: str, params: np.ndarray, k: int) -> torch.Tensor:
    """Each member's action on a k x k kernel as a (k*k) x (k*k) matrix (column j: the image of cell j)."""
    cells = torch.eye(k * k).reshape(k * k, k, k)
    act = TRANSFORMS[transform]
    if act.involution:                 # a pair: the side at param 0 is the reference, the one at 1 its image
        image = act.act_on_kernels(cells, [1.0] * (k * k)).reshape(k * k, k * k).T
        return torch.stack([image if p >= 0.5 else torch.eye(k * k) for p in params])
    return torch.stack([act.act_on_kernels(cells, [float(p)] * (k * k)).reshape(k * k, k * k).T for p in params])


def tie_kernels(kernels: torch.Tensor, acts: torch.Tensor, rounds: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The tied kernels ``g_m A_m T`` nearest ``kernels`` (M x C x k x k) in least squares, and the gains.

    Alternates the template (normal equations, shared by every input channel) and the gains (projections),
    starting from the members' kernels turned back by ``A_m^T`` at unit norm."""
    m, c, k, _ = kernels.shape
    K = kernels.reshape(m, c, k * k).double()
    A = acts.double()
    g = K.flatten(1).norm(dim=1).clamp_min(1e-12)
    T = torch.einsum("mji,mcj->ci", A, K / g[:, None, None]) / m
    eye = torch.eye(k * k, dtype=torch.float64)
    for _ in range(rounds):
        P = torch.einsum("mij,cj->mci", A, T)                                  # A_m T
        g = (P * K).flatten(1).sum(1) / (P * P).flatten(1).sum(1).clamp_min(1e-24)
        lhs = torch.einsum("m,mji,mjk->ik", g**2, A, A) + 1e-9 * eye
        rhs = torch.einsum("m,mji,mcj->ic", g, A, K)
        T = torch.linalg.solve(lhs, rhs).T
    P = torch.einsum("mij,cj->mci", A, T)
    g = (P * K).flatten(1).sum(1) / (P * P).flatten(1).sum(1).clamp_min(1e-24)
    tied = (g[:, None, None] * P).reshape(m, c, k, k)
    return tied.to(kernels.dtype), g.to(kernels.dtype)


@dataclass(frozen=True)
class Tie:
    """One tying to measure: these units of one producer, at these places of ``transform``."""

    producer: Producer
    units: np.ndarray
    params: np.ndarray
    transform: str

    def kernels(self, rounds: int = 8) -> tuple[torch.Tensor, float, float]:
        """The tied kernels of the units, with |K' - K|^2 and |K|^2 of their weights."""
        w = self.producer.weight.detach()
        K = w[torch.as_tensor(np.array(self.units), dtype=torch.long, device=w.device)].cpu()
        tied, _ = tie_kernels(K, actions(self.transform, self.params, w.shape[-1]), rounds)
        return tied, float(((tied - K).double() ** 2).sum()), float((K.double() ** 2).sum())

    @property
    def saved(self) -> int:
        """Weights saved: every member's kernel but one template, less one gain per member."""
        per_kernel = int(np.prod(self.producer.weight.shape[1:]))
        return (len(self.units) - 1) * per_kernel - len(self.units)


@dataclass(frozen=True)
class Prepared:
    """A configuration (ties applied together) with its tied kernels computed once."""

    ties: list[Tie]
    kernels: list[torch.Tensor]
    weight_change: float          # |K' - K| / |K| over every tied kernel

    @classmethod
    def of(cls, ties: list[Tie], rounds: int = 8) -> "Prepared":
        done = [tie.kernels(rounds) for tie in ties]
        base = sum(b for _, _, b in done)
        change = float(np.sqrt(sum(d for _, d, _ in done) / base)) if base > 0 else float("nan")
        return cls(ties, [k for k, _, _ in done], change)


@contextlib.contextmanager
def tied(prepared: Prepared):
    """The network with the prepared kernels in place, restored on exit (also on error)."""
    saved = []
    try:
        with torch.no_grad():
            for tie, kernels in zip(prepared.ties, prepared.kernels):
                w = tie.producer.weight
                index = torch.as_tensor(np.array(tie.units), dtype=torch.long, device=w.device)
                saved.append((w, index, w[index].clone()))
                w[index] = kernels.to(w.device, w.dtype)
        yield
    finally:
        with torch.no_grad():
            for w, index, old in reversed(saved):
                w[index] = old


def sham_units(rng: np.random.Generator, size: int, outside: np.ndarray, n_units: int,
               avoid: set[int]) -> np.ndarray:
    """``size`` units drawn without replacement from ``outside`` (the layer's units in no family of the
    transform), topped up from the rest of the layer where it is too small; none of ``avoid``."""
    pool = np.array([u for u in outside if u not in avoid], dtype=int)
    if len(pool) < size:
        rest = np.array([u for u in range(n_units) if u not in avoid and u not in set(pool)], dtype=int)
        pool = np.concatenate([pool, rng.permutation(rest)[:size - len(pool)]])
    return rng.permutation(pool)[:size] if len(pool) >= size else pool


@dataclass
class Effect:
    """What one configuration does to the network's output over the photos, summed a batch at a time."""

    diff2: float = 0.0                  # sum of squared output changes
    base2: float = 0.0                  # sum of squared untied outputs
    seen: int = 0                       # photos
    scored: int = 0                     # photos with a class-score vector (the output is N x classes)
    agree: int = 0                      # ... whose top class stays the untied network's
    labelled: int = 0                   # ... with a known class
    right: int = 0                      # ... classified right
    unit_diff2: float = 0.0             # sum of squared changes of the tied units' own responses
    unit_base2: float = 0.0             # sum of their squared untied responses

    def add_units(self, base: torch.Tensor, tied: torch.Tensor) -> None:
        self.unit_diff2 += float(((tied - base).double() ** 2).sum())
        self.unit_base2 += float((base.double() ** 2).sum())

    @property
    def unit_change(self) -> float:
        """|a_tied - a| / |a| of the tied units' own responses (their layer's tensor) over every photo and
        place: what the tie does where it acts, whatever reads the units downstream."""
        return float(np.sqrt(self.unit_diff2 / self.unit_base2)) if self.unit_base2 > 0 else float("nan")

    def add(self, base: torch.Tensor, out: torch.Tensor, labels: torch.Tensor) -> None:
        self.diff2 += float(((out - base).double() ** 2).sum())
        self.base2 += float((base.double() ** 2).sum())
        self.seen += len(base)
        if base.dim() == 2:
            top = out.argmax(1)
            self.scored += len(base)
            self.agree += int((top == base.argmax(1)).sum())
            known = labels >= 0
            self.labelled += int(known.sum())
            self.right += int((top[known] == labels[known]).sum())

    @property
    def output_change(self) -> float:
        """|f_tied - f| / |f| over every photo's output (logits, or the output map)."""
        return float(np.sqrt(self.diff2 / self.base2)) if self.base2 > 0 else float("nan")

    @property
    def agreement(self) -> float:
        """Share of photos whose top class is the untied network's (NaN without class scores)."""
        return self.agree / self.scored if self.scored else float("nan")

    @property
    def top1(self) -> float:
        return self.right / self.labelled if self.labelled else float("nan")


@torch.no_grad()
def measure_tying(module: nn.Module, batches, configurations: list[Prepared]) -> tuple[Effect, list[Effect]]:
    """The untied network's record (its top-1) and each configuration's, from one read of the photos: each
    batch goes through the untied network and then through every configuration. ``batches`` yields
    (images, labels), label -1 for a photo without a class. Every configuration's ties act on one layer."""
    base_effect = Effect()
    effects = [Effect() for _ in configurations]
    device = next(module.parameters()).device
    producers = {id(p.ties[0].producer.layer): p.ties[0].producer for p in configurations if p.ties}
    for images, labels in batches:
        images = images.to(device)
        with contextlib.ExitStack() as stack:
            untied = {k: stack.enter_context(p.units()) for k, p in producers.items()}
            base = module(images).float().cpu()
        base_effect.add(base, base, labels)
        for effect, prepared in zip(effects, configurations):
            if not prepared.ties:
                continue
            made_by = prepared.ties[0].producer
            with tied(prepared), made_by.units() as got:
                effect.add(base, module(images).float().cpu(), labels)
            units = torch.as_tensor(np.concatenate([t.units for t in prepared.ties]), dtype=torch.long)
            effect.add_units(untied[id(made_by.layer)][0][:, units], got[0][:, units])
    return base_effect, effects
