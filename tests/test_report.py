"""The HTML report: valid, non-blank pictures, and a page that renders in headless Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from .test_pipeline import materialized  # noqa: F401  (the shared materialized planted run)

from tests.conftest import catalog as _catalog


def test_report_pictures_are_valid_and_not_blank(materialized):  # noqa: F811
    out, _ = materialized
    folder = os.path.join(out, "report", "planted")
    index = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
    pngs = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    assert "first_layer.png" in pngs
    assert any(p.startswith("family_") for p in pngs) and any(p.startswith("circuit_") for p in pngs)
    assert set(re.findall(r"src='([^']+)'", index)) == set(pngs)
    for p in pngs:
        with Image.open(os.path.join(folder, p)) as im:
            im.verify()
        arr = np.asarray(Image.open(os.path.join(folder, p)).convert("L"), dtype=float)
        assert arr.std() > 5, p


def test_report_cli_and_missing_results(materialized, tmp_path):  # noqa: F811
    from pipelines.cli import main

    out, _ = materialized
    assert main(["report", "--out", out, "--model", "planted"]) == 0
    assert main(["report", "--out", str(tmp_path)]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(materialized, tmp_path):  # noqa: F811
    out, _ = materialized
    index = os.path.join(out, "report", "planted", "index.html")
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
           f"file://{index}"]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.exists()
    arr = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert arr.std() > 5                                      # text and pictures, not a blank page
    keep = os.environ.get("EQUIVAR_TEST_ARTIFACTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "report.png"))


def test_feature_visualization_drives_its_unit_harder_than_photos_and_noise():
    """On the planted edge unit: the optimized image beats the best natural image and random noise."""
    import torch

    from equivar_core.capture import Network, capture, layer_geometry
    from equivar_core.featurevis import visualize
    from equivar_core.images import iter_batches, plan_views
    from equivar_core.planted import planted_model

    net, truth = planted_model(0)
    geom = layer_geometry(net, ["relu1"], 64)[0]
    unit = truth.families["conv1"]["edges"][0][0]
    img, response = visualize(Network(net, 64), geom, unit, steps=64)
    assert img.shape[-1] == 3 and 0 <= img.min() and img.max() <= 1
    with torch.inference_mode(), capture(net, ["relu1"], pre_activation=True) as cap:
        photos = torch.cat([b.images for b in iter_batches(plan_views(None, 16, 0), 64, 16)])
        best_photo = float(cap.run(photos)["relu1"][:, unit].amax())
        noise = float(cap.run(torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0)))["relu1"][
            :, unit].amax())
    assert response > best_photo and response > noise


def test_report_with_feature_visualizations(materialized):  # noqa: F811
    from equivar_core.report import build_report


    out, _ = materialized
    build_report(out, "planted", featurevis=True, featurevis_steps=8)
    fv = os.path.join(out, "_artifacts", "model=planted", "featurevis")
    con = _catalog(os.path.join(out, "equivar.duckdb"))
    members = con.execute("select count(*) from (select distinct layer, unit from families "   # test_pipeline adds
                          "where model = 'planted')").fetchone()[0]                           # another model
    assert len([f for f in os.listdir(fv) if f.endswith(".png")]) == min(32, members)   # cached, capped at 32


@pytest.mark.parametrize("r", [np.array([]), np.array([np.nan, 1.0, 2.0, 0.5]), np.zeros(4)])
def test_polar_curve_draws_missing_and_flat_responses(tmp_path, r):
    """A unit without rows for the plotted stimulus, with a missing response, or with a flat curve still
    gets its polar plot (limits are finite)."""
    import matplotlib.pyplot as plt

    from equivar_core.report import _polar_curve

    fig, ax = plt.subplots()
    _polar_curve(ax, np.arange(len(r)) * 90.0, r)
    assert np.isfinite(ax.get_xlim()).all() and ax.get_xlim()[1] > 0
    fig.savefig(tmp_path / "polar.png")
    plt.close(fig)


def test_kernel_mosaic_places_each_kernel_in_its_tile_with_gaps_between():
    from equivar_core.report import kernel_mosaic

    tiles = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)       # 2 rows x 3 columns of 2x2 kernels
    m = kernel_mosaic(tiles)
    assert m.shape == (2 * 3 - 1, 3 * 3 - 1)
    for i in range(2):
        for j in range(3):
            assert np.array_equal(m[3 * i:3 * i + 2, 3 * j:3 * j + 2], tiles[i, j]), (i, j)
    assert np.isnan(m[2]).all() and np.isnan(m[:, [2, 5]]).all()            # the gaps
    assert np.isfinite(m).sum() == tiles.size


def test_kernel_mosaic_keeps_colour_channels_and_fills_gaps():
    from equivar_core.report import kernel_mosaic

    tiles = np.random.default_rng(0).random((1, 2, 3, 3, 3))               # two RGB 3x3 filters side by side
    m = kernel_mosaic(tiles, gap=2, fill=1.0)
    assert m.shape == (3, 8, 3)
    assert np.array_equal(m[:, :3], tiles[0, 0]) and np.array_equal(m[:, 5:], tiles[0, 1])
    assert (m[:, 3:5] == 1.0).all()


def test_tile_centres_are_the_middles_of_the_mosaics_tiles():
    from equivar_core.report import kernel_mosaic, tile_centres

    tiles = np.zeros((1, 3, 3, 3))
    tiles[0, :, 1, 1] = 1.0                                                    # each tile's middle pixel
    m = kernel_mosaic(tiles)
    assert np.array_equal(np.flatnonzero(np.nan_to_num(m[1]) == 1.0), tile_centres(3, 3))
