"""Natural images: where they come from and how they become model inputs.

A source is the photos that scikit-image ships (the default), a folder
(searched recursively, so an ImageNet ``train/`` or ``val/`` tree works), a
text file listing one path per line, or WebDataset-style tar shards (a folder
of ``.tar`` files, one ``.tar`` or a brace pattern), whose image members are
read in place (``SHARD::MEMBER``). Each image becomes a square RGB float
tensor in [0, 1] of the model's input size: grayscale is repeated to RGB, the
largest centred square is cropped and resized with antialiasing (tiny images
are upscaled). When the default photos are fewer than ``n_images``, further
views are deterministic random crops (scale 0.35-1 of the short side) drawn
from the run's seed. Unreadable files are skipped and counted, never fatal.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import EquivarError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

#: Photographs among scikit-image's bundled data (no synthetic test patterns).
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)


@dataclass(frozen=True)
class ImageView:
    """One model input: a file and the crop taken from it (fractions of width and height)."""

    index: int
    path: str
    top: float = 0.0
    left: float = 0.0
    size: float = 1.0  # side of the square crop as a fraction of the short side; 1 = centre square

    def row(self) -> dict:
        """This view as a row of the ``images`` table."""
        return {"image": self.index, "path": self.path, "crop_top": self.top, "crop_left": self.left,
                "crop_size": self.size}

    @classmethod
    def from_row(cls, r) -> "ImageView":
        """The view of a row of the ``images`` table (a namedtuple or Series with its columns)."""
        return cls(int(r.image), r.path, float(r.crop_top), float(r.crop_left), float(r.crop_size))


def skimage_data_dir() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


#: ``SHARD.tar::MEMBER``: an image inside a tar shard, read in place (never unpacked)
TAR_MEMBER = "::"


#: the most shard names a brace pattern may expand to (checked before any list is built)
MAX_SHARDS = 100_000


def expand_braces(pattern: str, limit: int = MAX_SHARDS) -> list[str]:
    """WebDataset's shard patterns: ``data-{000000..000009}.tar`` -> the ten names (zero padding kept);
    ``{a,b}`` alternatives too; a pattern without braces is itself. A pattern that names more than ``limit``
    shards is refused (:class:`EquivarError`) before their names are made."""
    return _expand(pattern, pattern, limit)


def _expand(pattern: str, original: str, limit: int) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail, body = pattern[:m.start()], pattern[m.end():], m.group(1)
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    too_many = EquivarError(f"the shard pattern {original!r} names more than {limit:,} shards")
    if span:
        a, b = span.groups()
        if int(b) - int(a) + 1 > limit:
            raise too_many
        width = len(a) if a.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    names: list[str] = []
    for item in items:
        names += _expand(head + item + tail, original, limit)
        if len(names) > limit:
            raise too_many
    return names


def tar_shards(source: str) -> list[str] | None:
    """The tar shards a source names (a brace pattern, one ``.tar``, or a folder holding tars and no
    images), sorted; None when the source is not a set of shards."""
    if "{" in source and ".tar" in source:
        return expand_braces(source)
    if source.endswith(".tar") and os.path.isfile(source):
        return [source]
    if os.path.isdir(source):
        names = sorted(os.listdir(source))
        tars = [os.path.join(source, n) for n in names if n.endswith(".tar")]
        if tars and not any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
            return tars
    return None


@functools.lru_cache(maxsize=64)
def _tar_index(shard: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """Image member -> (data offset, size) of a tar shard: one pass over its headers, then every member
    is read with one seek (size and mtime key the cache, so a rewritten shard is read again)."""
    import tarfile

    try:
        with tarfile.open(shard, "r:") as tar:
            return {m.name: (m.offset_data, m.size) for m in tar
                    if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)}
    except (tarfile.TarError, OSError) as exc:
        raise EquivarError(f"cannot read tar shard {shard} (an uncompressed tar is expected): {exc}") from None


def _index_of(shard: str) -> dict[str, tuple[int, int]]:
    if not os.path.isfile(shard):
        raise EquivarError(f"tar shard not found: {shard}")
    st = os.stat(shard)
    return _tar_index(shard, st.st_size, st.st_mtime_ns)


def _tar_members(shard: str) -> list[str]:
    """``SHARD::MEMBER`` for every image member of a tar shard, in the shard's order (WebDataset keeps a
    sample's files together; a sample here is its image)."""
    return [f"{shard}{TAR_MEMBER}{name}" for name in _index_of(shard)]


def _split_member(path: str) -> tuple[str, str] | None:
    """``(shard, member)`` when ``path`` is ``SHARD::MEMBER`` (the part before a ``::`` is a file: the
    shard), else None: a folder or file whose own name holds ``::`` is an ordinary path."""
    if TAR_MEMBER not in path or os.path.exists(path):
        return None
    at = path.find(TAR_MEMBER)
    while at >= 0:
        if os.path.isfile(path[:at]):
            return path[:at], path[at + len(TAR_MEMBER):]
        at = path.find(TAR_MEMBER, at + 1)
    return None


def open_image(path: str):
    """``Image.open`` of a file, or of a tar member ``SHARD::MEMBER`` read from the shard in place."""
    split = _split_member(path)
    if split is None:
        return Image.open(path)
    shard, member = split
    try:
        offset, size = _index_of(shard)[member]
    except (KeyError, EquivarError) as exc:
        raise OSError(f"{member} is not an image in {shard}") from exc
    with open(shard, "rb") as f:
        f.seek(offset)
        return Image.open(io.BytesIO(f.read(size)))


def source_file(path: str) -> str:
    """The file on disk that holds an image path (the shard of a tar member)."""
    split = _split_member(path)
    return path if split is None else split[0]


def list_image_files(source: str | None) -> list[str]:
    """Image paths of a source in a deterministic (sorted) order (tar members as ``SHARD::MEMBER``)."""
    shards = tar_shards(source) if source is not None else None
    if shards is not None:
        found = [p for shard in shards for p in _tar_members(shard)]
        if not found:
            raise EquivarError(f"no images found in the tar shards of {source}")
        return found
    if source is None:
        d = skimage_data_dir()
        return [os.path.join(d, f) for f in SKIMAGE_PHOTOS if os.path.isfile(os.path.join(d, f))]
    if os.path.isdir(source):
        found, seen_dirs, seen_files = [], set(), set()
        for root, dirs, files in os.walk(source, followlinks=True):
            real = os.path.realpath(root)
            if real in seen_dirs:              # a symlink loop or a second link to a folder: walk it once
                dirs[:] = []
                continue
            seen_dirs.add(real)
            dirs.sort()
            for f in sorted(files):
                path = os.path.join(root, f)
                real = os.path.realpath(path)
                if f.lower().endswith(IMAGE_EXTENSIONS) and real not in seen_files:
                    seen_files.add(real)
                    found.append(path)
        if not found:
            raise EquivarError(f"no images found in folder {source} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return found
    if os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        with open(source, encoding="utf-8", errors="replace") as f:
            paths = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        if not paths:
            raise EquivarError(f"image list {source} names no files")
        return [p if os.path.isabs(p) else os.path.join(base, p) for p in paths]
    raise EquivarError(f"image source not found: {source}")


#: the most views (seeded random crops) made of the default photos
MAX_DEFAULT_VIEWS = 20_000


def plan_views(source: str | None, n_images: int, seed: int) -> list[ImageView]:
    """Choose ``n_images`` views, deterministic for a seed.

    A folder or list larger than ``n_images`` is subsampled by a seeded
    permutation (kept in sorted order); the default photos are extended with
    seeded random crops.
    """
    if n_images < 1:
        raise EquivarError(f"--n-images must be at least 1, got {n_images}")
    if source is None and n_images > MAX_DEFAULT_VIEWS:
        raise EquivarError(f"--n-images {n_images} is more than the {MAX_DEFAULT_VIEWS} crops equivar makes of the "
                           "default photos; point --images at a folder for more")
    files = list_image_files(source)
    rng = np.random.default_rng(seed)
    if len(files) >= n_images:
        keep = np.sort(rng.permutation(len(files))[:n_images])
        return [ImageView(i, files[j]) for i, j in enumerate(keep)]
    views = [ImageView(i, f) for i, f in enumerate(files)]
    if source is not None:
        return views
    while len(views) < n_images:
        size = float(rng.uniform(0.35, 1.0))
        top, left = (float(v) for v in rng.uniform(0.0, 1.0, 2))
        views.append(ImageView(len(views), files[len(views) % len(files)], top, left, size))
    return views


def _rgb8(im: Image.Image) -> np.ndarray:
    """H x W x 3 uint8. 16- and 32-bit grey images are scaled to 8 bits (PIL's own conversion clips them to
    white); everything else goes through PIL's RGB conversion (alpha dropped, CMYK and palettes mapped)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode != "I" or wide.max() > 255 else 255.0
        grey = np.clip(np.round(wide / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def readable(path: str) -> bool:
    """Whether ``path`` decodes as an image, as :func:`load_view` decodes it (a truncated file whose header
    reads is not readable). The pre-run check stops at the first readable file, so it decodes one image."""
    try:
        with open_image(path) as im:
            if im.size[0] < 1 or im.size[1] < 1:
                return False
            im.load()
            return True
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError):
        return False


def load_view(view: ImageView, size: int) -> torch.Tensor | None:
    """Read one view as a 3 x size x size float tensor in [0, 1]; None if unreadable."""
    try:
        with open_image(view.path) as im:
            arr = _rgb8(im)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    if arr.ndim != 3 or min(arr.shape[:2]) < 1:
        return None
    h, w = arr.shape[:2]
    side = max(1, int(round(min(h, w) * view.size)))
    if view.size >= 1.0:
        y0, x0 = (h - side) // 2, (w - side) // 2
    else:
        y0, x0 = int(view.top * (h - side)), int(view.left * (w - side))
    crop = torch.from_numpy(arr[y0:y0 + side, x0:x0 + side].copy()).permute(2, 0, 1).float().div_(255.0)
    out = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    return out[0].clamp_(0.0, 1.0)


@dataclass
class ImageBatch:
    images: torch.Tensor  # B x 3 x S x S
    indices: list[int]    # view indices of the rows


def iter_batches(views: list[ImageView], size: int, batch_size: int, threads: int = 2) -> Iterator[ImageBatch]:
    """Yield batches of loaded views; decoding runs ahead in a thread pool.

    Unreadable files are logged and skipped; ``skipped`` on the generator's
    caller side is ``len(views) - sum(len(b.indices))``.
    """
    with ThreadPoolExecutor(max_workers=threads) as pool:
        chunks = [views[i:i + batch_size] for i in range(0, len(views), batch_size)]
        pending = [pool.map(lambda v: load_view(v, size), c) for c in chunks[:2]]
        for k, chunk in enumerate(chunks):
            loaded = list(pending[k])
            if k + 2 < len(chunks):
                pending.append(pool.map(lambda v: load_view(v, size), chunks[k + 2]))
            good = [(v.index, t) for v, t in zip(chunk, loaded) if t is not None]
            for v, t in zip(chunk, loaded):
                if t is None:
                    log.warning("skipped unreadable image %s", v.path)
            if good:
                yield ImageBatch(torch.stack([t for _, t in good]), [i for i, _ in good])
