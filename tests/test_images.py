"""Natural-image sources: folders, lists, the default photos, and the files a loader must survive."""

import os

import numpy as np
import pytest
from PIL import Image

from equivar_core.errors import EquivarError
from equivar_core.images import iter_batches, list_image_files, load_view, plan_views

from .conftest import SHARED_IMAGES


def _write(path, mode="RGB", size=(40, 30)):
    Image.new(mode, size, color=128 if mode == "L" else (200, 10, 10)).save(path)


def test_folder_is_searched_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    _write(tmp_path / "b" / "x.png")
    _write(tmp_path / "a" / "y.jpg")
    _write(tmp_path / "z.JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    files = list_image_files(str(tmp_path))
    assert [os.path.relpath(f, tmp_path) for f in files] == ["z.JPEG", "a/y.jpg", "b/x.png"]


def test_list_file_with_relative_paths(tmp_path):
    _write(tmp_path / "one.png")
    (tmp_path / "list.txt").write_text("# comment\none.png\n\n")
    assert list_image_files(str(tmp_path / "list.txt")) == [str(tmp_path / "one.png")]


def test_empty_folder_and_missing_source(tmp_path):
    with pytest.raises(EquivarError, match="no images found"):
        list_image_files(str(tmp_path))
    with pytest.raises(EquivarError, match="not found"):
        list_image_files(str(tmp_path / "nope"))


def test_grayscale_tiny_and_corrupt_files(tmp_path):
    _write(tmp_path / "gray.png", mode="L", size=(300, 200))
    _write(tmp_path / "tiny.png", size=(5, 7))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    views = plan_views(str(tmp_path), 10, seed=0)
    assert len(views) == 3
    batches = list(iter_batches(views, 32, batch_size=2))
    got = [i for b in batches for i in b.indices]
    assert len(got) == 2                                   # the broken file is skipped, not fatal
    for b in batches:
        assert b.images.shape[1:] == (3, 32, 32)
        assert float(b.images.min()) >= 0 and float(b.images.max()) <= 1


def test_default_photos_are_extended_by_deterministic_crops():
    a = plan_views(None, 40, seed=3)
    b = plan_views(None, 40, seed=3)
    c = plan_views(None, 40, seed=4)
    assert a == b and a != c and len(a) == 40
    x = load_view(a[-1], 64)
    assert x.shape == (3, 64, 64)


def test_subsampling_a_large_folder_is_seeded(tmp_path):
    for i in range(12):
        _write(tmp_path / f"{i:02d}.png")
    v1 = [v.path for v in plan_views(str(tmp_path), 5, seed=0)]
    v2 = [v.path for v in plan_views(str(tmp_path), 5, seed=0)]
    assert v1 == v2 == sorted(v1) and len(set(v1)) == 5


@pytest.mark.skipif(not os.path.isdir(SHARED_IMAGES), reason="shared ImageNet sample not present")
def test_shared_imagenet_sample_loads_including_grayscale():
    files = list_image_files(SHARED_IMAGES)
    assert len(files) == 1000
    gray = [f for f in files if Image.open(f).mode == "L"][:2]
    views = [v for v in plan_views(SHARED_IMAGES, 1000, 0) if v.path in gray]
    x = np.stack([load_view(v, 224).numpy() for v in views])
    assert x.shape == (len(gray), 3, 224, 224)
    assert np.allclose(x[:, 0], x[:, 1])
