"""Every setting is validated before a run writes anything: a table of bad values derived from the limits
declared beside each default (equivar_core.limits), each refused in one line with exit 2."""

from __future__ import annotations

import dataclasses
import os

import pytest

from equivar_core.errors import EquivarError
from equivar_core.limits import leaf_fields
from equivar_core.settings import RunSettings

PLANTED = ["--model", "equivar_core.planted:planted", "--layers", "relu1,relu2", "--n-images", "8", "--quiet"]


def _outside(limits) -> list:
    """Values just outside the declared range, below and above."""
    out = []
    if limits.low is not None:
        out.append(limits.low if limits.low_open else limits.low - 1)
    if limits.high is not None:
        out.append(limits.high if limits.high_open else limits.high + 1)
    return out


def _text(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def bad_values() -> dict[str, str]:
    """``SECTION.FIELD=VALUE`` -> why it is bad, for every section field: NaN and a value out of range for
    numbers (and each element of a tuple of numbers), an unknown value for enums, an empty tuple."""
    cases = {}
    for name, default, limits in leaf_fields(RunSettings()):
        if "." not in name or isinstance(default, bool):
            continue
        if isinstance(default, str) and not limits.choices:
            continue            # a path (tying.images): `equivar run` checks it with the other inputs
        if isinstance(default, tuple):
            cases[f"{name}="] = "empty"
        if limits.choices:
            cases[f"{name}=no_such_{name.rsplit('.', 1)[1]}"] = "unknown"
            continue
        cases[f"{name}=nan"] = "nan"
        for outside in _outside(limits):
            cases[f"{name}={_text(outside)}"] = "out of range"
        if limits.divides:
            cases[f"{name}=7"] = "does not divide"
    return cases


CASES = bad_values()


def test_every_section_field_declares_its_limits():
    missing = [name for name, _, limits in leaf_fields(RunSettings()) if "." in name and limits is None]
    assert not missing, f"settings without declared limits: {missing}"
    assert len(CASES) > 100


def test_the_defaults_are_valid():
    assert RunSettings().validate() == RunSettings()


@pytest.mark.parametrize("item", sorted(CASES))
def test_bad_setting_is_one_line_exit_2_and_writes_nothing(item, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "out"
    code = main(["run", "--out", str(out), *PLANTED, "--set", item])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (item, err)
    assert len(err) == 1 and err[0].startswith("equivar: error: setting"), err
    assert item.split("=")[0] in err[0]
    assert not out.exists()


@pytest.mark.parametrize("field,value", [("n_images", 0), ("batch_size", 0), ("workers", 0), ("keep_samples", -1),
                                         ("seed", -1)])
def test_top_level_numbers_are_validated_too(field, value):
    """The launchpad and the sensors reach RunSettings without argparse's checks."""
    with pytest.raises(EquivarError, match=field):
        dataclasses.replace(RunSettings(), **{field: value}).validate()


def test_the_ui_config_validates_its_overrides():
    from pipelines.resources import EquivarConfig

    config = EquivarConfig(model="equivar_core.planted:planted", overrides=["sweep.grid=0"])
    with pytest.raises(EquivarError, match="sweep.grid"):
        config.settings()


def test_a_run_whose_only_image_is_truncated_fails_before_writing(tmp_path, capsys):
    import io

    import numpy as np
    from PIL import Image

    from pipelines.cli import main

    images = tmp_path / "images"
    images.mkdir()
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(buf, "JPEG")
    (images / "a.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out = tmp_path / "out"
    code = main(["run", "--out", str(out), *PLANTED, "--images", str(images)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "opens as an image" in err[0], err
    assert not out.exists() or not os.listdir(out)
