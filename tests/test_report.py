"""The HTML report: valid, non-blank pictures, and a page that renders in headless Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from .test_pipeline import materialized  # noqa: F401  (the shared materialized planted run)


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
