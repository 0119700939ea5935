"""Natural-image sources: folders, lists, the default photos, and the files a loader must survive."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from equivar_core.errors import EquivarError
from equivar_core.images import ImageView, iter_batches, list_image_files, load_view, plan_views

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


# -- WebDataset-style tar shards -------------------------------------------------------------------------------

def _shards(photos: list[str], folder, per_shard: int) -> list[str]:
    """Uncompressed tars named NAME-000000.tar ..., each sample's image as ``KEY.jpg`` (WebDataset layout)."""
    import tarfile

    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(0, len(photos), per_shard):
        path = str(folder / f"sample-{k // per_shard:06d}.tar")
        with tarfile.open(path, "w") as tar:
            for p in photos[k:k + per_shard]:
                key = os.path.splitext(os.path.basename(p))[0]
                tar.add(p, arcname=f"{key}.jpg")
                meta = folder / "meta.cls"
                meta.write_text("0")
                tar.add(str(meta), arcname=f"{key}.cls")      # other files of a sample are ignored
        paths.append(path)
    return paths


def test_brace_patterns_expand_like_webdataset():
    from equivar_core.images import expand_braces

    assert expand_braces("d/x-{000000..000002}.tar") == ["d/x-000000.tar", "d/x-000001.tar", "d/x-000002.tar"]
    assert expand_braces("{a,b}-{1..2}.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_a_huge_brace_pattern_is_refused_before_its_names_are_made():
    import time

    from equivar_core.images import expand_braces

    t0 = time.time()
    for pattern in ("x-{000000000..999999999}.tar", "x-{0..999}-{0..999}.tar"):
        with pytest.raises(EquivarError, match="more than 100,000 shards"):
            expand_braces(pattern)
    assert time.time() - t0 < 5


def test_a_folder_whose_name_holds_double_colons_is_a_folder(tmp_path):
    """`::` marks a tar member only after a file (the shard): a folder `co::lon` holds ordinary images, and a
    shard in it still lists its members."""
    import tarfile

    from equivar_core.images import readable, source_file

    folder = tmp_path / "co::lon"
    folder.mkdir()
    _write(folder / "a.png")
    files = list_image_files(str(folder))
    assert files == [str(folder / "a.png")] and source_file(files[0]) == files[0] and readable(files[0])
    assert load_view(ImageView(0, files[0]), 16) is not None
    shard = folder / "s.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(str(folder / "a.png"), arcname="b::c.png")
    members = list_image_files(str(shard))
    assert members == [f"{shard}::b::c.png"] and source_file(members[0]) == str(shard) and readable(members[0])


def test_a_truncated_jpeg_is_not_readable(tmp_path):
    from equivar_core.images import readable

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert not readable(str(tmp_path / "t.jpg"))
    assert load_view(ImageView(0, str(tmp_path / "t.jpg")), 16) is None


def test_tar_shards_are_read_in_place_and_equal_the_files(tmp_path):
    """A folder of shards, a brace pattern and one shard list the same members; each member loads exactly
    as the file it was made from, and nothing is unpacked."""
    photos = []
    for i in range(5):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        photos.append(str(p))
    shards = _shards(photos, tmp_path / "shards", per_shard=2)
    listed = list_image_files(str(tmp_path / "shards"))
    assert len(listed) == 5 and listed == list_image_files(str(tmp_path / "shards" / "sample-{000000..000002}.tar"))
    assert list_image_files(shards[0]) == listed[:2]
    for member, photo in zip(listed, photos):
        a = load_view(ImageView(0, member), 32)
        b = load_view(ImageView(0, photo), 32)
        assert a is not None and np.array_equal(a.numpy(), b.numpy())
    assert sorted(os.listdir(tmp_path / "shards")) == ["meta.cls"] + [os.path.basename(s) for s in shards]


def test_missing_or_broken_shards_are_one_clear_error(tmp_path):
    with pytest.raises(EquivarError, match="tar shard not found"):
        list_image_files(str(tmp_path / "x-{0..1}.tar"))
    (tmp_path / "bad.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(EquivarError, match="cannot read tar shard"):
        list_image_files(str(tmp_path / "bad.tar"))


@pytest.mark.skipif(not os.path.isdir(SHARED_IMAGES), reason="shared ImageNet sample not present")
def test_run_on_webdataset_shards_of_the_imagenet_sample_equals_the_run_on_the_files(tmp_path, capsys):
    """Twelve shared photos in three shards: the run's unit statistics equal those of the same photos as
    files (the CI-sized version of an ImageNet shard set). Both runs are in this process."""
    import pandas as pd

    from tests.cli_runs import in_process
    from tests.test_faults import PLANTED

    names = sorted(f for f in os.listdir(SHARED_IMAGES) if f.endswith(".JPEG"))[:12]
    files = tmp_path / "files"
    files.mkdir()
    for n in names:
        os.symlink(os.path.join(SHARED_IMAGES, n), files / n)
    _shards([os.path.join(SHARED_IMAGES, n) for n in names], tmp_path / "shards", per_shard=4)
    stats = {}
    for kind in ("files", "shards"):
        out = str(tmp_path / f"out-{kind}")
        args = [a for a in PLANTED if a not in ("--n-images", "6")]
        r = in_process(capsys, "run", "--out", out, *args, "--images", str(tmp_path / kind), "--n-images", "12")
        assert r.returncode == 0, r.stderr[-2000:]
        q = in_process(capsys, "sql", "select layer, unit, mean, std from unit_stats order by all", "--out", out,
                       "--format", "csv")
        stats[kind] = pd.read_csv(io.StringIO(q.stdout))
    assert len(stats["files"]) and stats["files"].equals(stats["shards"])
