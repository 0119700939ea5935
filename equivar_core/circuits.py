"""Circuits: expanded weights between analysed layers and their symmetry.

Expanded weights (as in Lucid's and Captum's ``expanded weights``): make the
network between two layers linear -- ReLU, ReLU6 and the other pointwise
nonlinearities become the identity, max pooling becomes average pooling,
local response normalization the identity, batch norm is affine in eval mode
anyway -- and take the gradient of each destination unit at the centre of
its map with respect to the source layer's activation map:

    W[b, a, dy, dx] = d dst_b(centre) / d src_a(centre_src + (dy, dx)).

This works between any two layers, adjacent or not, through residual
connections and parallel branches. Positive and negative paths between the
same two units add up; ``cancellation = |sum W| / sum |W|`` over the kernel
is near 0 where excitatory and inhibitory parts cancel.

Circuit equivariance of a source family F and a destination family G under a
transform T: for members a, a' of F with a' = T_t(a) (t = param(a') -
param(a)) and b in G, let b' be the member of G at param(b) + t. If the
weights are equivariant, ``W[b', a'] = T_t(W[b, a])`` with the kernel
rotated (or flipped) in space; ``equivariance`` is the Pearson correlation
of the two sides over all such (a, a', b) and all kernel positions inside the
central disc, with bilinear interpolation for angles that are not multiples
of 90 degrees.

A score needs a baseline: kernels between units of a layer can be alike for
reasons that have nothing to do with the families (every member sends a
similar blob; a hue transform does not move kernels at all). The null
(:class:`CircuitNull`) scores the same source family, with the same member
pairs and amounts, into stand-ins for the destination members: each member
(or the invariant unit) is replaced by a random unit of the destination
layer whose kernel norm is close to its own, on both sides of the
comparison (``T_t(W[s(b), a])`` against ``W[s(b'), a']``); ``null_mean`` and
``null_sd`` are the scores' mean and spread over ``draws`` such draws, and
``z`` the real score's distance from them in null standard deviations.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .capture import Network, is_activation, layer_modules
from .errors import EquivarError
from .tf_layers import AvgPool2dSame, LocalResponseNorm, MaxPool2dSame
from .transforms import TRANSFORMS


class _StopAt(Exception):
    pass


class NotConnected(EquivarError):
    """The destination layer is computed without the source layer (no path of weights between them)."""


@contextmanager
def linearized(model: nn.Module):
    """Temporarily replace nonlinearities by their linear stand-ins (forward patched per instance)."""
    patched = []
    for m in model.modules():
        if is_activation(m) or isinstance(m, (LocalResponseNorm, nn.LocalResponseNorm, nn.Dropout)):
            new = lambda x, *a, **k: x  # noqa: E731
        elif isinstance(m, MaxPool2dSame):
            new = AvgPool2dSame(m.kernel_size, m.stride).forward
        elif isinstance(m, nn.MaxPool2d):
            new = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode,
                               count_include_pad=False).forward
        else:
            continue
        patched.append(m)
        m.forward = new
    try:
        yield model
    finally:
        for m in patched:
            del m.forward


@dataclass(frozen=True)
class Expansion:
    """How expanded weights are cropped and computed: the crop is the smallest radius (at most ``max_radius``
    source cells) holding ``mass`` of sum |W|; destination units are computed ``chunk`` at a time."""

    max_radius: int = 12
    chunk: int = 32
    mass: float = 0.99


def expanded_weights(net: Network, src: str, dst: str, dst_units: np.ndarray | None = None,
                     expansion: Expansion = Expansion()) -> np.ndarray:
    """Expanded weights ``W`` of shape C_dst x C_src x (2R+1) x (2R+1) around the destination centre.

    R is the smallest radius (at most ``expansion.max_radius`` source cells) holding ``expansion.mass`` of
    sum |W|. With ``dst_units`` only those destination units are computed (rows in that order).
    ``net.input_size`` need not be the model's: the linearized network is a convolution, so any input whose
    source map holds the destination centre's receptive field away from the border gives the same weights,
    and a small one is cheaper (:func:`probe_size`).
    """
    grads, c_src = _unit_gradients(net, src, dst, dst_units, expansion.chunk)
    if not grads:
        return np.zeros((0, c_src, 1, 1), np.float32)
    return _cropped(torch.cat(grads), expansion.max_radius, expansion.mass)         # C_dst x C_src x Hs x Ws


def _unit_gradients(net: Network, src: str, dst: str, dst_units: np.ndarray | None, chunk: int
                    ) -> tuple[list[torch.Tensor], int]:
    """The gradients of the linearized network's destination units (``chunk`` at a time) at the centre of their
    map with respect to the whole source map (each chunk: units x C_src x Hs x Ws), and C_src."""
    model, device = net.module, net.device
    modules = layer_modules(model)
    x = torch.zeros(1, 3, net.input_size, net.input_size, device=device)
    state: dict = {}

    def src_hook(module, inputs, output):
        if "z" not in state:
            state["z"] = torch.zeros_like(output).expand(state["batch"], -1, -1, -1).clone().requires_grad_(True)
        return state["z"]

    def dst_hook(module, inputs, output):
        state["out"] = output
        raise _StopAt

    h1 = modules[src].register_forward_hook(src_hook)
    h2 = modules[dst].register_forward_hook(dst_hook)
    grads = []
    try:
        with linearized(model), torch.enable_grad():
            _run_to_destination(model, x, state, 1)
            if "z" not in state or not state["out"].requires_grad or torch.autograd.grad(
                    state["out"].sum(), state["z"], allow_unused=True)[0] is None:
                raise NotConnected(f"layer {dst} does not depend on layer {src}: no weights lead from one to the "
                                   "other (a parallel branch, or a layer before it)")
            c_dst = state["out"].shape[1]
            hd, wd = state["out"].shape[-2:]
            wanted = torch.arange(c_dst) if dst_units is None else torch.as_tensor(np.asarray(dst_units, int))
            # The layers below ``src`` see one zero image: ``src_hook`` puts the batch of probes in their
            # place, and anything that mixes a tensor from below ``src`` with one from above (a residual
            # sum) broadcasts the one image over the batch. A model that cannot (a concatenation across
            # ``src``) gets the whole batch below ``src`` too.
            shared_prefix = True
            for start in range(0, len(wanted), chunk):
                units = wanted[start:start + chunk].to(device)
                shared_prefix = _probe_units(model, x, state, len(units), shared_prefix)
                out = state["out"]
                out[torch.arange(len(units)), units, hd // 2, wd // 2].sum().backward()
                grads.append(state["z"].grad.detach().cpu())
    finally:
        h1.remove()
        h2.remove()
    return grads, state["z"].shape[1]


def _run_to_destination(model: nn.Module, x: torch.Tensor, state: dict, batch: int) -> None:
    """One pass of ``x`` up to the destination layer, ``batch`` probes in place of the source map (the hooks of
    :func:`_unit_gradients` fill ``state``)."""
    state.clear()
    state["batch"] = batch
    try:
        model(x)
    except _StopAt:
        pass


def _probe_units(model: nn.Module, x: torch.Tensor, state: dict, n: int, shared_prefix: bool) -> bool:
    """The pass for ``n`` destination units: one zero image below the source while the model allows it
    (``shared_prefix``), else the whole batch; returns whether the prefix is still shared."""
    if shared_prefix:
        try:
            _run_to_destination(model, x, state, n)
            return True
        except RuntimeError:
            pass
    _run_to_destination(model, x.expand(n, -1, -1, -1), state, n)
    return False


def _cropped(w: torch.Tensor, max_radius: int, mass: float) -> np.ndarray:
    """``w`` (C_dst x C_src x Hs x Ws) cropped around the source cell under the destination centre to the
    smallest radius (at most ``max_radius``) that holds ``mass`` of sum |W|."""
    hs, ws = w.shape[-2:]
    energy = w.abs().sum((0, 1))
    cy, cx = support_centre(energy)
    yy, xx = torch.meshgrid(torch.arange(hs), torch.arange(ws), indexing="ij")
    cheb = torch.maximum((yy - cy).abs(), (xx - cx).abs())
    total = float(energy.sum())
    radius = max_radius
    for r in range(0, max_radius + 1):
        if float(energy[cheb <= r].sum()) >= mass * total:
            radius = r
            break
    pad = F.pad(w, (radius, radius, radius, radius))
    return pad[:, :, cy:cy + 2 * radius + 1, cx:cx + 2 * radius + 1].numpy()


def support_centre(energy: torch.Tensor, rel: float = 1e-6) -> tuple[int, int]:
    """The source cell under the destination centre: the middle of the support of ``energy`` (Hs x Ws).

    The support (cells where any expanded weight is non-zero) is where the destination unit's receptive
    field lies on the source grid, whatever the weights; its middle is the geometric centre, exact for
    any chain of strides and asymmetric ("SAME") paddings. The nominal ``(i + 0.5) * stride - 0.5``
    falls half-way between two cells at stride 2 with TF padding and rounds to the wrong one. Where the
    support touches the map's edge on one side only, that side is cut off; the centroid of ``energy``
    is used on that axis.
    """
    rows, cols = energy.sum(1), energy.sum(0)

    def middle(profile: torch.Tensor) -> int:
        on = torch.nonzero(profile > rel * float(profile.max())).flatten()
        lo, hi, n = int(on[0]), int(on[-1]), len(profile)
        if (lo == 0) != (hi == n - 1):            # clipped on one side: fall back on the centroid
            pos = torch.arange(n, dtype=profile.dtype)
            return int(round(float((profile * pos).sum() / profile.sum())))
        return (lo + hi) // 2        # an even-sized support has two middle cells: the first

    return middle(rows), middle(cols)


def probe_size(input_size: int, src_stride: float, dst_stride: float, max_radius: int) -> int:
    """The smallest input (a multiple of ``dst_stride``, at most ``input_size``) whose source map holds
    ``max_radius`` cells around the destination centre plus a margin: enough for :func:`expanded_weights`."""
    need = src_stride * (2 * max_radius + 9)
    step = max(int(round(dst_stride)), 1)
    return int(min(input_size, step * math.ceil(need / step)))


def invariant_equivariance(source: "SourceKernels", dst_rows, null: "CircuitNull | None" = None) -> np.ndarray:
    """Equivariant -> invariant circuit equivariance of one source family into each destination row.

    For every ordered pair of members (a, a') with t = param(a') - param(a), ``W(a' -> c)`` should equal
    ``T_t(W(a -> c))``; the Pearson correlation of the two sides over all pairs and kernel positions in
    the central disc, for each destination c (``family_equivariance(..., invariant=True)`` per row, from
    the family's :class:`SourceKernels`). With ``null`` the result is D x 3: the score, and the null's mean and
    standard deviation (c replaced by random destination units of similar kernel norm).
    """
    dst_rows = np.asarray(dst_rows, int)
    if len(source.t) == 0 or not len(dst_rows):
        return np.full((len(dst_rows), 3) if null else len(dst_rows), np.nan)
    out = [family_equivariance(source, Family(np.array([c]), np.zeros(1), np.inf), invariant=True, null=null)
           for c in dst_rows]
    if null is None:
        return np.array([o[0] for o in out])
    return np.array([(o[0], o[2], o[3]) for o in out])


@dataclass(frozen=True)
class Family:
    """One family's members: their units (source columns or destination rows of the weights), their params,
    and the period of the family's circle (infinite for scale pairs)."""

    units: np.ndarray
    params: np.ndarray
    period: float


@dataclass
class SourceKernels:
    """One source family's kernels into every destination row of ``w``, inside the central disc, for each
    ordered pair p = (a_i, a_j) of its members: ``x[r, p] = T_t(W[r, a_i])`` (t = param(a_j) - param(a_i))
    and ``y[r, p] = W[r, a_j]``. Every score of the family (into each destination family, each invariant
    unit, and the null's stand-ins) gathers from these, so each kernel is transformed once."""

    i: np.ndarray                   # P: index of a_i among the members
    j: np.ndarray                   # P: index of a_j
    t: np.ndarray                   # P: the amounts
    x: torch.Tensor                 # R x P x m
    y: torch.Tensor                 # R x P x m
    norms: np.ndarray               # R: each row's kernel norm over the family's members
    transform: str                  # the family's transform

    @classmethod
    def of(cls, w: np.ndarray, src: Family, transform: str) -> "SourceKernels":
        """The kernels of source family ``src`` of ``transform`` into every row of ``w`` (C_dst x C_src x k x k);
        a family of fewer than two members has no pairs."""
        src_units, src_params = np.asarray(src.units, int), np.asarray(src.params, float)
        T = TRANSFORMS[transform]
        i, j = np.nonzero(~np.eye(len(src_units), dtype=bool))
        t = T.relative(src_params[i], src_params[j], src.period).astype(float)
        wt = torch.as_tensor(w).float()
        rows, k = wt.shape[0], wt.shape[-1]
        mask = disc_mask(k)
        moved = wt[:, src_units[i]].reshape(-1, k, k)
        source = T.act_on_kernels(moved, np.tile(t, rows)) if len(i) else moved
        x = source.reshape(rows, len(i), k, k)[..., mask]
        y = wt[:, src_units[j]][..., mask]
        norms = np.linalg.norm(w[:, src_units].reshape(rows, -1), axis=1)
        return cls(i, j, t, x, y, norms, transform)


@dataclass
class CircuitNull:
    """How the circuit scores' null is drawn (see the module docstring): ``draws`` draws, each replacing every
    destination member by a unit picked at random among the ``window`` share (at least 4) of the layer's
    other units nearest to it in kernel norm, from ``rng``."""

    draws: int
    window: float
    rng: np.random.Generator

    def draw(self, members: np.ndarray, pool: np.ndarray, norms: np.ndarray) -> np.ndarray | None:
        """draws x len(members) random units of ``pool``, each near its member in ``norms``; units with no
        weights at all (``norms`` 0: not connected) are no stand-ins, and None when no unit is left."""
        members, pool = np.asarray(members, int), np.asarray(pool, int)
        pool = pool[norms[pool] > 0]
        if not len(pool):
            return None
        order = pool[np.argsort(norms[pool], kind="stable")]
        half = max(2, int(math.ceil(self.window * len(order) / 2)))
        at = np.searchsorted(norms[order], norms[members])
        lo = np.clip(at - half, 0, max(len(order) - 2 * half, 0))
        hi = np.minimum(lo + 2 * half, len(order))
        pick = lo[None, :] + np.floor(self.rng.random((self.draws, len(members))) * (hi - lo)[None, :]).astype(int)
        return order[pick]


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last axis, in float64 (NaN where either side is constant)."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    denom = torch.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    return torch.where(denom > 0, (x * y).sum(-1) / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))


def cancellation(w: np.ndarray) -> np.ndarray:
    """|sum W| / sum |W| per (dst, src) pair: near 0 where excitatory and inhibitory parts cancel."""
    return np.abs(w.sum((2, 3))) / np.maximum(np.abs(w).sum((2, 3)), 1e-12)


def kernel_rank_one(w: np.ndarray) -> float:
    """How far the kernels into a destination unit are one spatial pattern, whatever the source.

    For each destination row of ``w`` (D x S x k x k), the share of the energy of its S x k^2 matrix of
    kernels that the first singular vector holds, sigma_1^2 / sum sigma^2; the median over the rows with
    any weight. 1 where only 1 x 1 convolutions lie between the two layers but for the destination's own
    spatial step, as between consecutive depthwise layers of an inverted-residual network: there
    ``W(a -> b) = c_ab K_b``, the kernel is the destination's own ``K_b`` for every source, and comparing
    kernels tests only whether ``K_b`` has the symmetry and whether the coefficients ``c`` line up (for an
    invariant destination and a two-member source, the Pearson score of a near-constant ``K_b`` then tends
    to -1 for any unequal pair of coefficients, and its null with it). 1 for 1 x 1 kernels.
    """
    d, s, k = w.shape[0], w.shape[1], w.shape[-1]
    if k == 1 or s < 2:
        return 1.0
    sv = np.linalg.svd(w.reshape(d, s, k * k).astype(np.float64), compute_uv=False)
    energy = (sv ** 2).sum(1)
    live = energy > 1e-20
    return float(np.median(sv[live, 0] ** 2 / energy[live])) if live.any() else float("nan")


def disc_mask(size: int) -> torch.Tensor:
    r = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - r, torch.arange(size) - r, indexing="ij")
    return (yy**2 + xx**2).sqrt() <= r + 1e-6


def family_equivariance(source: SourceKernels, dst: Family, tolerance: float = 20.0, invariant: bool = False,
                        null: CircuitNull | None = None) -> tuple:
    """Circuit equivariance of one family pair (see module docstring) and the number of matched pairs; with
    ``null`` also the null's mean and standard deviation (every destination member replaced by a random
    destination unit of similar kernel norm, :class:`CircuitNull`; NaN where no other unit is connected).

    ``source`` holds the source family's kernels into every row of ``w`` (C_dst x C_src x k x k), made once
    per source family (:meth:`SourceKernels.of`); ``dst`` is the destination family (its units are rows of
    ``w``). With ``invariant`` the destination units are each invariant to the transform (equivariant ->
    invariant circuits): b' = b, so ``W(a' -> b)`` must equal ``T_t(W(a -> b))``.

    Members are matched by place on the family's circle within ``tolerance`` (angular transforms) or as the
    other member of a pair (flips). Scale pairs have no circle (their period is infinite) and matching them
    across layers is not defined: unless ``invariant``, they give ``(nan, 0)``.
    """
    none = (float("nan"), 0) if null is None else (float("nan"), 0, float("nan"), float("nan"))
    dst_units = np.asarray(dst.units, int)
    T = TRANSFORMS[source.transform]
    if len(source.t) == 0 or len(dst_units) == 0 or not (invariant or T.angular or T.involution):
        return none                                                 # fewer than two source members, or no place
    partner = _partners(source.t, dst, T, tolerance, invariant)
    keep = partner >= 0
    pair, b_idx = np.nonzero(keep)                                  # quads (b, a, b2, a2, t)
    if not len(pair):
        return none
    b2_idx = partner[keep]
    score = float(_pearson(source.x[dst_units[b_idx], pair].flatten(),
                           source.y[dst_units[b2_idx], pair].flatten()))
    if null is None:
        return score, len(pair)
    return (score, len(pair), *_null_scores(source, dst_units, (pair, b_idx, b2_idx), null))


def _partners(t: np.ndarray, dst: Family, T, tolerance: float, invariant: bool) -> np.ndarray:
    """pairs x destination members: the member b' each member b is matched with for each source pair's amount
    t (-1: none within ``tolerance``)."""
    dst_params = np.asarray(dst.params, float)
    period = dst.period
    n_dst = len(dst_params)
    k = np.arange(n_dst)
    if invariant:                                                   # b' = b
        return np.broadcast_to(k, (len(t), n_dst))
    if T.involution:                                                # a flip pair: b's partner is the other member
        return np.broadcast_to(np.where(k == 0, 1, 0) if n_dst >= 2 else -1, (len(t), n_dst))
    target = np.mod(dst_params[None, :, None] + t[:, None, None], period)    # the member nearest b's param moved by t
    d = np.mod(dst_params[None, None, :] - target, period)
    d = np.minimum(d, period - d)                                   # pairs x b x candidate
    return np.where(d.min(-1) <= tolerance, d.argmin(-1), -1)


def _null_scores(source: SourceKernels, dst_units: np.ndarray, quads: tuple, null: CircuitNull) -> tuple[float, float]:
    """The null's mean and standard deviation for the matched ``quads`` (source pairs, b, b') of
    :func:`family_equivariance` (NaN where no other destination unit is connected)."""
    pair, b_idx, b2_idx = quads
    pool = np.setdiff1d(np.arange(len(source.norms)), dst_units)
    drawn = null.draw(dst_units, pool, source.norms)               # draws x members
    if drawn is None:
        return float("nan"), float("nan")
    x = source.x[torch.as_tensor(drawn[:, b_idx]), torch.as_tensor(pair)[None]].flatten(1)
    y = source.y[torch.as_tensor(drawn[:, b2_idx]), torch.as_tensor(pair)[None]].flatten(1)
    r_null = _pearson(x, y).numpy()
    return float(np.nanmean(r_null)), float(np.nanstd(r_null, ddof=1))
