"""Expanded weights against brute force, and circuit equivariance on planted and random weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equivar_core.capture import Network
from equivar_core.circuits import (Expansion, Family, SourceKernels, cancellation, disc_mask, expanded_weights,
                                    family_equivariance, kernel_rank_one, linearized)
from equivar_core.planted import PlantedDesign, planted_model
from equivar_core.transforms import TRANSFORMS


def _randomize(module: nn.Module, seed: int) -> None:
    """Every parameter of ``module`` drawn from a standard normal, seeded."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g)


class ThreeConv(nn.Module):
    input_size = 32

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(4, 5, 3, padding=1)
        self.r2 = nn.ReLU6()
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.c3 = nn.Conv2d(5, 3, 3, padding=1)
        _randomize(self, 0)

    def forward(self, x):
        return self.c3(self.pool(self.r2(self.c2(self.r1(self.c1(x))))))


def test_adjacent_layers_give_the_conv_kernel_itself():
    net, _ = planted_model(0)
    w = expanded_weights(Network(net, 64), "relu1", "relu2", expansion=Expansion(max_radius=6))
    assert w.shape == (net.conv2.out_channels, net.conv1.out_channels, 7, 7)
    assert np.allclose(w, net.conv2.weight.detach().numpy(), atol=1e-5)


class InvertedResidual(nn.Module):
    """Two depthwise steps with only 1 x 1 convolutions between them, as in consecutive MobileNet blocks."""
    input_size = 32

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.dw1 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.r1 = nn.ReLU6()
        self.project = nn.Conv2d(6, 4, 1)
        self.expand = nn.Conv2d(4, 8, 1)
        self.r2 = nn.ReLU6()
        self.dw2 = nn.Conv2d(8, 8, 5, padding=2, groups=8)
        _randomize(self, 1)

    def forward(self, x):
        return self.dw2(self.r2(self.expand(self.project(self.r1(self.dw1(self.stem(x)))))))


def test_kernels_between_consecutive_depthwise_steps_are_rank_one():
    """W(a -> b) = c_ab K_b between depthwise steps joined by 1 x 1 convolutions (the late preset's layer pairs):
    one spatial pattern per destination, which the pair's ``kernel_rank_one`` reports; full convolutions do not."""
    net = InvertedResidual().eval()
    w = expanded_weights(Network(net, 32), "dw1", "dw2", expansion=Expansion(max_radius=3, mass=1.0))
    assert kernel_rank_one(w) == pytest.approx(1.0, abs=1e-6)
    k = net.dw2.weight.detach().numpy()[:, 0]                      # each destination's own depthwise kernel
    r = w.shape[-1] // 2
    flat = w[:, :, r - 2:r + 3, r - 2:r + 3].reshape(8, 6, -1)
    for b in range(8):
        assert np.abs(np.corrcoef(np.vstack([k[b].ravel(), flat[b]]))[0, 1:]).min() > 0.999
    # through a full 3 x 3 convolution and a second layer, the kernel depends on the source
    full = expanded_weights(Network(ThreeConv().eval(), 32), "r1", "c3", expansion=Expansion(max_radius=3, mass=1.0))
    assert kernel_rank_one(full) < 0.8
    planted = expanded_weights(Network(planted_model(0)[0], 64), "relu1", "relu2", expansion=Expansion(max_radius=6))
    assert kernel_rank_one(planted) < 0.8
    assert kernel_rank_one(np.ones((2, 3, 1, 1))) == 1.0                  # 1 x 1 kernels have no spatial pattern


def test_non_adjacent_layers_match_brute_force_impulses():
    net = ThreeConv().eval()
    w = expanded_weights(Network(net, 32), "r1", "c3", expansion=Expansion(max_radius=3, mass=1.0))
    r = w.shape[-1] // 2
    c2, c3 = net.c2, net.c3
    ref = np.zeros_like(w)
    with torch.no_grad():
        for a in range(4):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    z = torch.zeros(1, 4, 8, 8)
                    z[0, a, 4 + dy, 4 + dx] = 1.0
                    h = F.conv2d(z, c2.weight, padding=1)             # biases drop out of the gradient
                    h = F.avg_pool2d(h, 3, 1, 1, count_include_pad=False)
                    out = F.conv2d(h, c3.weight, padding=1)
                    ref[:, a, r + dy, r + dx] = out[0, :, 4, 4].numpy()
    # the map used internally is 32 x 32; the impulse response at the centre does not see the border
    assert np.allclose(w, ref, atol=1e-4)


class Branches(nn.Module):
    """Two branches concatenated after the source layer, and a residual sum across it."""

    input_size = 32

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.r2 = nn.ReLU()
        self.side = nn.Conv2d(3, 2, 1)
        self.c3 = nn.Conv2d(6, 3, 3, padding=1)
        _randomize(self, 1)

    def forward(self, x):
        h = self.r1(self.c1(x))
        h = self.r2(self.c2(h)) + h                                   # residual across the source
        return self.c3(torch.cat([h, self.side(x)], 1))               # concatenation across the source


@pytest.mark.parametrize("src", ["r1", "r2"])
def test_expanded_weights_through_a_concatenation_and_a_residual(src):
    """The layers below the source see one image while the probes are a batch: a residual sum broadcasts it,
    a concatenation cannot (the whole batch then runs below the source too); both give the brute-force
    impulse responses."""
    net = Branches().eval()
    w = expanded_weights(Network(net, 32), src, "c3", expansion=Expansion(max_radius=3, chunk=3, mass=1.0))
    r = w.shape[-1] // 2
    ref = np.zeros_like(w)
    with torch.no_grad():
        for a in range(4):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    z = torch.zeros(1, 4, 32, 32)
                    z[0, a, 16 + dy, 16 + dx] = 1.0
                    h = F.conv2d(z, net.c2.weight, padding=1) + z if src == "r1" else z
                    h = torch.cat([h, torch.zeros(1, 2, 32, 32)], 1)
                    ref[:, a, r + dy, r + dx] = F.conv2d(h, net.c3.weight, padding=1)[0, :, 16, 16].numpy()
    assert np.allclose(w, ref, atol=1e-4)


def test_linearized_restores_the_model():
    net = ThreeConv().eval()
    x = torch.randn(1, 3, 32, 32)
    before = net(x)
    with linearized(net):
        lin = net(x)
    assert not torch.allclose(before, lin)
    assert torch.allclose(net(x), before)


def test_cancellation_flags_opposite_paths():
    w = np.zeros((1, 2, 3, 3))
    w[0, 0, 0, 0], w[0, 0, 2, 2] = 1.0, -1.0
    w[0, 1, 1, 1] = 2.0
    assert np.allclose(cancellation(w), [[0.0, 1.0]])


def _equivariance(net, truth):
    w = expanded_weights(Network(net, 64), "relu1", "relu2")
    src_units, src_params, _ = truth.families["conv1"]["edges"]
    dst_units, dst_params, _ = truth.families["conv2"]["edges2"]
    source = SourceKernels.of(w, Family(src_units, src_params, 360.0), "rotate")
    return family_equivariance(source, Family(dst_units, dst_params, 360.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_group_convolution_is_equivariant_and_random_weights_are_not(seed):
    net, truth = planted_model(seed, PlantedDesign(n_edges=6 + 2 * seed))
    n_edges = 6 + 2 * seed
    eq, n = _equivariance(net, truth)
    assert n == n_edges * (n_edges - 1) * n_edges
    assert eq >= 0.8
    rand, _ = planted_model(seed, PlantedDesign(n_edges=n_edges), random=True)
    eq_random, _ = _equivariance(rand, truth)
    assert eq_random < 0.3


def test_flip_equivariance_of_a_mirrored_kernel_pair():
    w = np.zeros((2, 2, 5, 5))
    rng = np.random.default_rng(0)
    k = rng.normal(size=(5, 5))
    w[0, 0] = k
    w[1, 1] = k[:, ::-1]
    k2 = rng.normal(size=(5, 5))
    w[1, 0] = k2
    w[0, 1] = k2[:, ::-1]
    pair = Family([0, 1], [0.0, 1.0], 2.0)
    eq, n = family_equivariance(SourceKernels.of(w, pair, "hflip"), pair)
    assert n == 4 and eq > 0.999


def test_pipeline_reports_the_planted_circuit(planted_runs):
    run, truth = planted_runs[0]
    edges = set(truth.families["conv1"]["edges"][0])
    fam = run.families
    src = fam[(fam["layer"] == "relu1") & fam["unit"].isin(edges) & (fam["transform"] == "rotate")]["family"]
    rows = run.circuits[(run.circuits["src_family"] == int(src.mode()[0])) & (run.circuits["transform"] == "rotate")]
    assert len(rows) and rows["equivariance"].max() >= 0.8
    assert (run.circuits["kernel_rank_one"] < 0.8).all()          # full convolutions: the kernels depend on the source


def test_pipeline_finds_the_invariant_unit_and_its_equivariant_input(planted_runs):
    """Equivariant -> invariant: the planted unit pooling the edge family with rotated kernels."""
    run, truth = planted_runs[0]
    inv = run.circuits[run.circuits["dst_family"] == -1]
    edges = set(truth.families["conv1"]["edges"][0])
    fam = run.families
    src = int(fam[(fam["layer"] == "relu1") & fam["unit"].isin(edges)]["family"].mode()[0])
    rows = inv[(inv["src_family"] == src) & (inv["dst_unit"] == truth.invariant_unit)]
    assert len(rows) and rows["equivariance"].iloc[0] >= 0.8
    others = inv[(inv["src_family"] == src) & (inv["dst_unit"] != truth.invariant_unit)]
    assert (others["equivariance"].fillna(0) < 0.5).all()


def _pairs_by_loops(src_params, dst_params, transform, period_src, period_dst, tolerance, invariant):
    """The matched member pairs (b, a, b2, a2, t) of family_equivariance, written out member by member."""
    T = TRANSFORMS[transform]
    quads = []
    for i in range(len(src_params)):
        for j in range(len(src_params)):
            if i == j:
                continue
            t = float(T.relative(src_params[i], src_params[j], period_src))
            for k in range(len(dst_params)):
                if invariant:
                    m = k
                elif T.involution:
                    if len(dst_params) < 2:
                        continue
                    m = 1 if k == 0 else 0
                else:
                    d = np.mod(dst_params - np.mod(dst_params[k] + t, period_dst), period_dst)
                    d = np.minimum(d, period_dst - d)
                    m = int(np.argmin(d))
                    if d[m] > tolerance:
                        continue
                quads.append((k, i, m, j, t))
    return quads


@pytest.mark.parametrize("transform,invariant", [("rotate", False), ("rotate", True), ("hue", False),
                                                 ("hflip", False), ("hflip", True)])
def test_family_equivariance_matches_every_member_pair(transform, invariant):
    """The broadcast pairing of members equals the member-by-member definition (irregular spacings, a missing
    member, a single-member destination), and so does the score computed from the pairs it names."""
    rng = np.random.default_rng(1)
    period = 2.0 if transform == "hflip" else 360.0
    for n_src, n_dst in [(5, 4), (2, 1), (3, 6), (1, 3)]:
        src_p = np.sort(rng.uniform(0, period, n_src)) if transform != "hflip" else np.arange(n_src) % 2.0
        dst_p = np.sort(rng.uniform(0, period, n_dst)) if transform != "hflip" else np.arange(n_dst) % 2.0
        src_u, dst_u = rng.permutation(12)[:n_src], rng.permutation(9)[:n_dst]
        w = rng.normal(size=(9, 12, 5, 5)).astype(np.float32)
        source = SourceKernels.of(w, Family(src_u, src_p, period), transform)
        score, n = family_equivariance(source, Family(dst_u, dst_p, period), 40.0, invariant)
        quads = _pairs_by_loops(src_p, dst_p, transform, period, period, 40.0, invariant)
        assert n == len(quads)
        if not quads:
            assert np.isnan(score)
            continue
        k, i, m, j, t = (np.array(c) for c in zip(*quads))
        wt = torch.as_tensor(w)
        x = TRANSFORMS[transform].act_on_kernels(wt[dst_u[k], src_u[i]], torch.as_tensor(t))[:, disc_mask(5)]
        y = wt[dst_u[m], src_u[j]][:, disc_mask(5)]
        expected = np.corrcoef(x.flatten().double().numpy(), y.flatten().double().numpy())[0, 1]
        assert score == pytest.approx(expected, abs=1e-9)


def test_scale_pairs_have_no_circuit_equivariance_unless_the_destination_is_invariant():
    """Scale families have an infinite period: no place on a circle to match members by (the member-by-member
    loop used to match NaN distances to the first member); invariant destinations are still scored."""
    w = np.random.default_rng(0).normal(size=(4, 4, 5, 5)).astype(np.float32)
    source = SourceKernels.of(w, Family([0, 1], [1.0, 2.0], np.inf), "scale")
    score, n = family_equivariance(source, Family([2, 3], [1.0, 2.0], np.inf))
    assert np.isnan(score) and n == 0
    score, n = family_equivariance(source, Family([2], [0.0], np.inf), invariant=True)
    assert n == 2 and np.isfinite(score)


def test_layers_on_parallel_branches_have_no_circuit_and_the_table_skips_them(tmp_path, caplog):
    """Two layers computed side by side from the input (``small`` and ``large``), or given in the wrong
    order, have no weights between them: one clear error, and the circuit table leaves that pair out."""
    import pandas as pd

    from equivar_core import stages
    from equivar_core.circuits import NotConnected
    from equivar_core.settings import RunSettings
    from tests.models_for_tests import three_conv_chain, two_scales

    with pytest.raises(NotConnected, match="does not depend on layer small"):
        expanded_weights(Network(two_scales(), 96), "small", "large")
    with pytest.raises(NotConnected, match="does not depend on layer r2"):
        expanded_weights(Network(three_conv_chain(), 32), "r2", "r1")     # the destination runs first
    assert expanded_weights(Network(three_conv_chain(), 32), "r1", "r2").shape[:2] == (5, 4)
    s = RunSettings(model="tests.models_for_tests:two_scales", layers=("small", "large"), out=str(tmp_path))
    layers = pd.DataFrame({"layer": ["small", "large"], "stride": [1.0, 1.0], "n_units": [4, 4]})
    with caplog.at_level("WARNING"):
        table = stages.circuit_weight_table(s, layers, pd.DataFrame({"layer": [], "unit": []}))
    assert len(table) == 0 and "small -> large skipped" in caplog.text
