"""Natural-image activations, original and transformed, at corresponding positions.

For each batch of natural images x, the model sees x and then every
transformed version g.x of the sweep; each forward pass captures all
requested layers at once and stops after the deepest. For each layer we keep, per image, the activations at a fixed set of
points p inside the central disc of radius ``disc_radius`` (normalized
coordinates) for x, and at the corresponding points ``A_g p`` for g.x
(bilinear), so that row p of every version refers to the same image content.
These samples are streamed batch by batch into one ``float16`` array per
layer of shape V x N x P x C (version, image, point, unit), written to a
temporary file and renamed when complete.

Alongside: per-unit mean and standard deviation over all positions of the
original images (the unit of tuning responses), and each image's maximum per
unit with its position (for top examples).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .capture import capture
from .images import ImageView, iter_batches
from .storage import atomic_path, save_npy
from .transforms import HFlip, HueRotate, Rotate, Scale, Transform, disc_points, sample_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepSettings:
    """The transformed versions of every natural image."""

    rotate: tuple[float, ...] = tuple(float(a) for a in range(30, 360, 30))
    hflip: bool = True
    hue: tuple[float, ...] = tuple(float(a) for a in range(30, 360, 30))
    scale: tuple[float, ...] = (1.5, 2.0)
    disc_radius: float = 0.6
    grid: int = 20          # sample points: centres of a grid x grid partition of the image inside the disc

    def versions(self) -> list[Transform]:
        """Identity first, then the sweep."""
        out: list[Transform] = [Transform(0.0)]
        out += [Rotate(a) for a in self.rotate]
        out += [HFlip()] if self.hflip else []
        out += [HueRotate(a) for a in self.hue]
        out += [Scale(s) for s in self.scale]
        return out


@dataclass
class LayerSamples:
    """Paths and shapes of one layer's samples (see module docstring)."""

    layer: str
    path: str            # .npy, V x N x P x C float16
    points_path: str     # .npy, P x 2
    n_versions: int
    n_images: int
    n_points: int
    n_units: int


@torch.inference_mode()
def sample_activations(model: nn.Module, layers: list[str], views: list[ImageView], input_size: int,
                       sweep: SweepSettings, out_dir: str, batch_size: int = 8, device: str = "cpu",
                       ) -> tuple[list[LayerSamples], dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Stream natural images and their transforms through the model.

    Returns
    -------
    samples : one :class:`LayerSamples` per layer (files under ``out_dir``)
    stats : layer -> {"mean", "std": (C,), "image_max": (N, C), "image_argmax": (N, C) flat map index}
    loaded : (N,) bool, False for images that could not be read
    """
    versions = sweep.versions()
    n_views, n_versions = len(views), len(versions)
    os.makedirs(out_dir, exist_ok=True)
    arrays: dict[str, np.memmap] = {}
    points: dict[str, torch.Tensor] = {}
    acc: dict[str, dict] = {}
    tmp: dict[str, str] = {}
    loaded = np.zeros(n_views, dtype=bool)
    done = 0
    with capture(model, layers, pre_activation=True) as cap:
        for batch in iter_batches(views, input_size, batch_size):
            x = batch.images
            x = x.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else x.to(device)
            b = len(batch.indices)
            idx = np.asarray(batch.indices)
            loaded[idx] = True
            for v, g in enumerate(versions):
                gx = (g.images(x) if v else x).contiguous(memory_format=torch.channels_last)
                for name, a in cap.run(gx).items():
                    a = a.float()
                    if name not in arrays:
                        c = a.shape[1]
                        points[name] = disc_points(sweep.grid, sweep.grid, sweep.disc_radius, sweep.grid**2)
                        tmp[name] = atomic_path(os.path.join(out_dir, f"{_safe(name)}.samples.npy"))
                        arrays[name] = np.lib.format.open_memmap(
                            tmp[name], mode="w+", dtype=np.float16, shape=(n_versions, n_views, len(points[name]), c))
                        acc[name] = {"sum": torch.zeros(c, dtype=torch.float64),
                                     "sq": torch.zeros(c, dtype=torch.float64), "n": 0,
                                     "image_max": np.zeros((n_views, c), np.float32),
                                     "image_argmax": np.zeros((n_views, c), np.int64)}
                    vals = sample_at(a, g.points(points[name]))          # B x C x P
                    arrays[name][v, idx] = vals.transpose(1, 2).cpu().numpy().astype(np.float16)
                    if v == 0:
                        _accumulate(acc[name], a, idx)
            done += b
            log.info("natural activations: %d/%d images x %d versions", done, n_views, n_versions)
    if not arrays:
        raise ValueError("no readable image among the inputs")
    samples, stats = [], {}
    for name, arr in arrays.items():
        arr.flush()
        del arr
        final = os.path.join(out_dir, f"{_safe(name)}.samples.npy")
        os.replace(tmp[name], final)
        pts_path = os.path.join(out_dir, f"{_safe(name)}.points.npy")
        save_npy(pts_path, points[name].numpy())
        st = acc[name]
        mean = (st["sum"] / st["n"]).numpy()
        std = np.sqrt(np.maximum((st["sq"] / st["n"]).numpy() - mean**2, 0.0))
        stats[name] = {"mean": mean, "std": std, "image_max": st["image_max"], "image_argmax": st["image_argmax"]}
        c = len(mean)
        samples.append(LayerSamples(name, final, pts_path, n_versions, n_views, len(points[name]), c))
    return samples, stats, loaded


def _accumulate(st: dict, a: torch.Tensor, idx: np.ndarray) -> None:
    """Running per-unit sums over all positions, and each image's maximum and its flat position."""
    flat = a.flatten(2)
    st["sum"] += flat.sum((0, 2)).double().cpu()
    st["sq"] += flat.pow(2).sum((0, 2)).double().cpu()
    st["n"] += flat.shape[0] * flat.shape[2]
    mx, arg = flat.max(2)
    st["image_max"][idx], st["image_argmax"][idx] = mx.cpu().numpy(), arg.cpu().numpy()


def _safe(name: str) -> str:
    return name.replace("/", "_")

