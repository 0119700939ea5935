"""What a unit sees, in words (``unit_classes``): classes from file and folder names, counted among each unit's
strongest photos beside what chance gives."""

import os

import numpy as np
import pandas as pd
import pytest

from equivar_core.activations import TopImages
from equivar_core.labels import class_of, top_class_names, unit_top_classes
from equivar_core.settings import RunSettings
from equivar_core.stages import unit_class_table
from equivar_core.storage import save_npz

from .conftest import SHARED_IMAGES


def test_a_photo_s_class_comes_from_its_file_name_else_its_folder_else_none():
    assert (class_of("/x/n01440764_tench.JPEG").wnid, class_of("/x/n01440764_tench.JPEG").name) == \
        ("n01440764", "tench")
    assert class_of("n01443537.jpg").name == "goldfish"                          # an id alone
    assert class_of("/data/train/n01484850/img_0001.jpg").name == "great_white_shark"   # folder per class
    # the file name wins over the folder
    assert class_of("/data/train/n01484850/n01440764_7.JPEG").name == "tench"
    for none in ("/skimage/data/astronaut.png", "/photos/tench/1.jpg", "/x/n99999999_nothing.jpg",
                 "/x/n0144076_short.jpg"):
        assert class_of(none) is None, none


def _classes(*wnids):
    return [class_of(f"{w}.jpg") if w else None for w in wnids]


def test_top_classes_are_counted_ranked_and_set_beside_chance():
    # photos 0-9: three of the tench, two of the goldfish, one of the shark, four without a class
    classes = _classes("n01440764", "n01443537", "n01440764", None, "n01484850", None, "n01440764", "n01443537",
                       None, None)
    top = np.array([[1, 0, 2, 7, 6, 4],           # tench 3 (photos 0, 2, 6), goldfish 2, shark 1
                    [4, 1, 3, 5, -1, -1],         # shark 1 and goldfish 1: a tie, the shark's photo is stronger
                    [3, 5, 8, 9, -1, -1],         # no labelled photo: no row
                    [7, -1, -1, -1, -1, -1]])     # one photo read
    df = unit_top_classes(top, classes)
    assert sorted(set(df["unit"])) == [0, 1, 3]
    u0 = df[df["unit"] == 0].sort_values("rank")
    assert u0["class_name"].tolist() == ["tench", "goldfish", "great_white_shark"]
    assert u0["count"].tolist() == [3, 2, 1] and (u0["labelled"] == 6).all()
    # chance: the labelled photos are 3 tench, 2 goldfish, 1 shark of 6
    assert np.allclose(u0["expected"], [6 * 3 / 6, 6 * 2 / 6, 6 * 1 / 6])
    u1 = df[df["unit"] == 1].sort_values("rank")
    assert u1["class_name"].tolist() == ["great_white_shark", "goldfish"] and (u1["labelled"] == 2).all()
    assert df[df["unit"] == 3]["count"].tolist() == [1]
    assert unit_top_classes(top, classes, shown=1).groupby("unit").size().max() == 1
    assert top_class_names(df, 5) == ["tench, goldfish, great_white_shark", "great_white_shark, goldfish", None,
                                      "goldfish", None]


def _stage(tmp_path, paths: list[str], top: np.ndarray) -> pd.DataFrame:
    """``unit_classes`` of a run whose photos are ``paths`` and whose one layer's strongest photos are ``top``."""
    s = RunSettings(model="equivar_core.planted:planted", out=str(tmp_path))
    os.makedirs(os.path.dirname(s.layout.top_images("relu1")), exist_ok=True)
    save_npz(s.layout.top_images("relu1"), TopImages(np.ones(top.shape, np.float32), top,
                                                    np.zeros(top.shape, np.int64)).arrays())
    images = pd.DataFrame({"image": np.arange(len(paths)), "path": paths})
    return unit_class_table(s, images, pd.DataFrame({"layer": ["relu1"]}))


def test_the_stage_reads_classes_from_folders_and_gives_an_empty_table_without_them(tmp_path):
    folders = [f"/imagenet/train/{w}/{i}.JPEG" for i, w in enumerate(["n01440764", "n01440764", "n01443537"])]
    df = _stage(tmp_path / "a", folders, np.array([[0, 1, 2], [2, -1, -1]]))
    assert df.columns.tolist()[:3] == ["model", "layer", "unit"]
    assert df[df["unit"] == 0]["class_name"].tolist() == ["tench", "goldfish"]
    assert df[df["unit"] == 1][["class_name", "count", "labelled"]].values.tolist() == [["goldfish", 1, 1]]
    flat = _stage(tmp_path / "b", ["/skimage/data/astronaut.png", "/skimage/data/coffee.png"], np.array([[0, 1]]))
    assert flat.empty and flat.columns.tolist() == df.columns.tolist()


@pytest.mark.skipif(not os.path.isdir(SHARED_IMAGES), reason="shared ImageNet sample not present")
def test_a_run_on_the_shared_photos_names_what_its_units_see(tmp_path, capsys):
    from tests.cli_runs import in_process
    from tests.conftest import catalog

    r = in_process(capsys, "run", "--out", str(tmp_path), "--images", SHARED_IMAGES, "--n-images", "12",
                   "--model", "equivar_core.planted:planted", "--layers", "relu1,relu2", "--no-report", "--quiet")
    assert r.returncode == 0, r.stderr
    con = catalog(tmp_path / "equivar.duckdb")
    rows = con.execute("select c.*, i.path, s.top_classes from unit_classes c join unit_stats s using (model, layer, unit) "
                       "join images i on i.image = s.best_image where c.rank = 1").df()
    n_units = con.execute("select count(*) from unit_stats").fetchone()[0]
    assert len(rows) == n_units                        # every unit's top photos are labelled here
    # with 12 photos and 16 slots each unit's top photos are all 12: one of each class, so every count is 1,
    # at chance, and rank 1 is the class of the unit's strongest photo
    assert (rows["count"] == 1).all() and (rows["labelled"] == 12).all() and np.allclose(rows["expected"], 1.0)
    assert all(os.path.basename(p).split("_", 1)[1].rsplit(".", 1)[0] == name
               for p, name in zip(rows["path"], rows["class_name"]))
    # unit_stats names the same classes, rank 1 first
    assert (rows["top_classes"].str.split(", ").str[0] == rows["class_name"]).all()
    assert (rows["top_classes"].str.count(", ") == 2).all()
    # the report's galleries label each member's strongest photos with them
    from equivar_core.report import RunTables, _top_classes

    run = RunTables(str(tmp_path), "planted")
    first = rows.iloc[0]
    assert _top_classes(run, first["layer"], int(first["unit"])) == first["top_classes"]
    # and shows the mirror pairs (the planted network's two left/right pairs) side by side
    from equivar_core.report import build_report

    mirror = con.execute("select layer, count(distinct family) as pairs from families where transform = 'hflip' "
                         "and relation = 'mirror' group by all").df()
    assert len(mirror) >= 1, con.execute("select * from families where transform = 'hflip'").df()
    page = open(build_report(str(tmp_path), "planted")).read()
    assert "<h2>Mirror pairs</h2>" in page
    for layer, pairs in zip(mirror["layer"], mirror["pairs"]):
        assert f"{layer}: {pairs} mirror pairs" in page and f"src='mirror_{layer}.png'" in page
