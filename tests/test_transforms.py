"""Transforms on hand-written tensors with exact answers, and their agreement with the stimuli."""

import math

import numpy as np
import pytest
import torch

from equivar_core.capture import Network, layer_geometry
from equivar_core.stimuli import StimulusSettings, render
from equivar_core.tuning import TuningSettings, measure_tuning
from equivar_core.transforms import (TRANSFORMS, HFlip, HueRotate, Rotate, Scale, disc_points, hue_color, make_transform,
                                     sample_at)


def test_rotate_kernels_by_90_is_exact_counter_clockwise():
    k = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # a dot above the centre
    out = Rotate(90).kernels(k)
    # counter-clockwise on screen: "up" goes to "left"
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_rotate_by_45_interpolates_and_matches_90_after_two_steps():
    k = torch.zeros(5, 5)
    k[2, 4] = 1.0                                  # a dot to the right
    twice = Rotate(45).kernels(Rotate(45).kernels(k))
    exact = Rotate(90).kernels(k)
    assert exact[0, 2] == 1.0                      # right -> up
    assert twice.argmax() == exact.argmax()


def test_points_follow_the_image():
    p = torch.tensor([[1.0, 0.0]])                 # right of centre
    assert torch.allclose(Rotate(90).points(p), torch.tensor([[0.0, -1.0]]), atol=1e-6)   # -> up (y down)
    assert torch.allclose(HFlip().points(p), torch.tensor([[-1.0, 0.0]]))
    assert torch.allclose(Scale(2.0).points(p), torch.tensor([[2.0, 0.0]]))


def test_hflip_images_and_kernels():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert torch.equal(HFlip().images(x), torch.tensor([[[[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]]]))


def test_hue_rotation_cycles_primaries():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    green = HueRotate(120).images(red)
    assert torch.allclose(green.flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    grey = torch.full((1, 3, 1, 1), 0.4)
    assert torch.allclose(HueRotate(77).images(grey), grey, atol=1e-6)


def test_hue_color_agrees_with_hue_rotation():
    c0 = hue_color(torch.tensor(30.0), 0.2).view(1, 3, 1, 1)
    c1 = hue_color(torch.tensor(100.0), 0.2).view(1, 3, 1, 1)
    assert torch.allclose(HueRotate(70).images(c0), c1, atol=1e-6)


@pytest.mark.parametrize("kind", ["edge", "curve", "high_low"])
def test_rotating_a_stimulus_adds_to_its_orientation(kind):
    size, centre = 64, (32.0, 32.0)
    batch = render(kind, size, centre, 8.0)
    step = 5.0
    per = len(batch.param) // 72
    first = batch.images[0:1]
    target = batch.images[per * int(90 / step)]      # orientation 90 with the same nuisance index
    rotated = Rotate(90).images(first)[0]
    inner = disc_points(size, size, 0.8, 10_000)
    assert torch.allclose(sample_at(rotated[None], inner), sample_at(target[None], inner), atol=1e-4)


def test_color_contrast_orientation_plus_180_is_hue_plus_180():
    b = render("color_contrast", 48, (24.0, 24.0), 6.0)
    key = {(p, h): i for i, (p, h) in enumerate(zip(b.param, b.param2))}
    assert torch.allclose(b.images[key[(30.0, 45.0)]], b.images[key[(210.0, 225.0)]], atol=1e-5)


@pytest.mark.parametrize("step", [5.0, 7.0])
def test_half_turn_twins_are_drawn_once_and_are_the_same_picture(step):
    """Every stimulus of a ``distinct`` sweep shows the picture the full sweep draws for it (the centre off
    the pixel grid); only lines, gratings and colour contrast have twins, and only when the sweep holds
    theta + 180 (a 7 degree step does not)."""
    settings = StimulusSettings(orientation_step=step, color_contrast_step=3 * step)
    halves = {"line", "grating", "color_contrast"} if step == 5.0 else set()
    for kind in settings.kinds:
        full = render(kind, 37, (17.3, 19.8), 6.5, settings)
        once = render(kind, 37, (17.3, 19.8), 6.5, settings, distinct=True)
        assert np.array_equal(once.param, full.param) and np.array_equal(once.nuisance, full.nuisance)
        assert len(once.images) == (len(full.param) // 2 if kind in halves else len(full.param)), kind
        assert torch.allclose(once.images[torch.as_tensor(once.picture)], full.images, atol=1e-4), kind
        assert torch.equal(once.image(len(full.param) - 1), once.images[once.picture[-1]])


def test_tuning_reads_each_twin_from_its_picture():
    """Responses of a strided random network are the same whether twins pass through it once or twice."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(6, 5, 3),
                              torch.nn.ReLU()).eval()
    geom = layer_geometry(net, ["3"], 48)
    stats = {"3": (np.zeros(5), np.ones(5))}
    stim = StimulusSettings(kinds=("line", "grating", "color_contrast", "edge"))
    a = measure_tuning(Network(net, 48), geom, stats, TuningSettings(stimuli=stim, draw_twins_once=False))
    b = measure_tuning(Network(net, 48), geom, stats, TuningSettings(stimuli=stim))
    assert all(np.array_equal(a[k], b[k]) for k in ("layer", "unit", "stimulus", "param", "nuisance")
               if k in a)
    assert np.ptp(a["response"]) > 0.1
    np.testing.assert_allclose(b["response"], a["response"], atol=1e-4)


def test_disc_points_and_valid_mask():
    pts = disc_points(16, 16, 0.6, 1000)
    assert (pts.norm(dim=1) <= 0.6).all() and len(pts) > 20
    assert Rotate(33).valid(pts, 0.6).all()
    assert not Scale(2.0).valid(pts, 0.6).all()


def test_unknown_transform():
    with pytest.raises(ValueError, match="unknown transform"):
        make_transform("shear", 1.0)


def test_sample_at_reads_cell_centres_exactly():
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    p = torch.tensor([[-0.75, -0.75], [0.25, 0.75]])   # cell (0, 0) and cell (row 3, col 2)
    assert torch.equal(sample_at(maps, p)[0, 0], torch.tensor([0.0, 14.0]))
    assert math.isclose(float(sample_at(maps, torch.tensor([[0.0, 0.0]]))), 7.5)


def test_images_about_moves_the_source_to_the_target_and_turns_about_it():
    """A dot at source (y, x) = (5.5, 9.5) plus a dot 3 px to its right: moved to target (12.5, 12.5) and
    rotated 90 degrees counter-clockwise about it, the second dot lands 3 px above the target."""
    x = torch.zeros(1, 1, 24, 24)
    x[0, 0, 5, 9] = 1.0
    x[0, 0, 5, 12] = 0.5
    out = Rotate(90).images_about(x, (5.5, 9.5), (12.5, 12.5))[0, 0]
    assert out[12, 12] == pytest.approx(1.0, abs=1e-5)
    assert out[9, 12] == pytest.approx(0.5, abs=1e-5)
    moved = HueRotate(120).images_about(x.expand(1, 3, -1, -1).contiguous(), (5.5, 9.5), (12.5, 12.5))
    assert moved[0, :, 12, 12].sum() > 0.9 and moved[0, :, 12, 15].sum() > 0.4     # shifted, not turned


# -- every registered transform, through its own testing elements ----------------------------------------------

@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_points_say_where_the_image_moves_a_dot(name):
    """A bright dot at normalized p lands, in g.x, at g.points(p) (hue: where it was)."""
    size = 64
    for g in TRANSFORMS[name].testing_elements():
        p = torch.tensor([[0.3, -0.2]])
        x = torch.zeros(1, 3, size, size)
        cy, cx = int((p[0, 1] + 1) / 2 * size), int((p[0, 0] + 1) / 2 * size)
        x[..., cy - 1:cy + 1, cx - 1:cx + 1] = 1.0
        out = g.images(x).sum(1)[0]
        yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        centre = torch.stack([(out * xx).sum() / out.sum(), (out * yy).sum() / out.sum()]) / size * 2 - 1
        assert torch.allclose(centre, g.points(torch.tensor([[cx / size * 2 - 1, cy / size * 2 - 1]]))[0],
                              atol=2.5 / size), (g, centre)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_kernel_action_of_a_batch_is_each_elements_own(name):
    """``act_on_kernels`` (each kernel by its own amount, as circuits use it) agrees with each element's
    ``kernels``; hue moves no kernel. Scale is left out of circuits: its kernels stay (documented)."""
    T = TRANSFORMS[name]
    k = torch.zeros(7, 7)
    k[1, 4], k[3, 5] = 1.0, -0.5
    elements = T.testing_elements()
    batch = T.act_on_kernels(k.expand(len(elements), 7, 7).clone(), [g.amount for g in elements])
    for g, got in zip(elements, batch):
        want = k if (not T.spatial or name == "scale") else g.kernels(k)
        assert torch.allclose(got, want, atol=1e-5), (g, got, want)


@pytest.mark.parametrize("name", [n for n in sorted(TRANSFORMS) if TRANSFORMS[n].angular])
def test_angular_transforms_close_after_a_full_turn_and_relate_members_on_the_circle(name):
    T = TRANSFORMS[name]
    x = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    assert torch.allclose(T(360.0).images(x), x, atol=1e-4)
    assert np.allclose(T.relative(np.array([350.0, 10.0]), np.array([10.0, 350.0]), 360.0), [20.0, 340.0])
    assert T.family_period([np.nan, 180.0]) == 180.0 and T.family_period([np.nan]) == 360.0


def test_rotation_test_turns_a_family_through_one_period():
    from equivar_core.sweeps import sweep_angles

    assert sweep_angles(360.0, 10.0).tolist() == list(range(0, 360, 10))
    assert sweep_angles(180.0, 5.0).tolist() == list(range(0, 180, 5))
    assert sweep_angles(90.0, 10.0).max() == 80.0
    assert len(sweep_angles(float("nan"), 10.0)) == 36


def test_a_label_reads_back_as_written():
    """``NAME:AMOUNT`` is written and read by equivar_core.transforms alone (tests/test_structure.py)."""
    from equivar_core.transforms import IDENTITY_LABEL, label_amount, parse_label, version_labels, versions_text

    assert [Rotate(30.0).label, Scale(1.5).label, HFlip().label, IDENTITY_LABEL] == [
        "rotate:30", "scale:1.5", "hflip:1", "identity:0"]
    for g in (g for T in TRANSFORMS.values() for g in T.testing_elements()):
        assert make_transform(*parse_label(g.label)) == g and label_amount(g.label) == g.amount
    assert version_labels(versions_text(["rotate:30", "rotate:60"])) == ["rotate:30", "rotate:60"]
    assert version_labels("") == []
    for bad in ("rotate", "rotate:30:null", "centred-identity:hue", ":30"):
        with pytest.raises(ValueError, match="not a transform label"):
            parse_label(bad)
