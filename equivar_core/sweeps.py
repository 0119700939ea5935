"""The paper's own test: turn a unit's best natural images and watch its siblings.

For each member u of a rotation (or hue) family and each of its ``top_k``
strongest natural images, the image is shifted so that u's peak position
sits on the receptive-field centre of the layer's central cell, and rotated
(or hue-rotated) about that centre through the full circle in ``step``
degree steps. Every family member's response is read at the central cell
(pre-activation, maximum over the 3 x 3 cell jitter) and averaged over the
images, in natural-image standard deviations. If the family is real, member
v peaks at the angle ``param(v) - param(u)``: the peak offsets are evidence
independent of the tuning curves and of the transform scores.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from .capture import LayerGeometry, capture
from .families import circular_distance
from .images import ImageView, load_view
from .transforms import HueRotate, Rotate

log = logging.getLogger(__name__)


def centre_on(image: torch.Tensor, y: float, x: float, target: tuple[float, float]) -> torch.Tensor:
    """Translate ``image`` (3 x S x S) so that pixel coordinates (y, x) land on ``target`` (reflecting)."""
    s = image.shape[-1]
    theta = torch.tensor([[[1.0, 0.0, 2 * (x - target[1]) / s], [0.0, 1.0, 2 * (y - target[0]) / s]]])
    grid = torch.nn.functional.affine_grid(theta, [1, *image.shape], align_corners=False)
    return torch.nn.functional.grid_sample(image[None], grid, padding_mode="reflection", align_corners=False)[0]


@torch.inference_mode()
def family_sweep(model: nn.Module, geom: LayerGeometry, input_size: int, views: list[ImageView],
                 image_max: np.ndarray, image_argmax: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 members: np.ndarray, params: np.ndarray, period: float, transform: str,
                 step: float = 10.0, top_k: int = 2, device: str = "cpu") -> dict[str, np.ndarray]:
    """Sweep responses of one family; columns driver, member, angle, response, peak_angle, expected_angle."""
    angles = np.arange(0.0, 360.0, step)
    make = Rotate if transform == "rotate" else HueRotate
    cy, cx = geom.centre_cell(input_size)
    target = geom.rf_centre(input_size)
    cols: dict[str, list] = {k: [] for k in ("driver", "member", "angle", "response", "peak_angle",
                                             "expected_angle")}
    with capture(model, [geom.layer], pre_activation=True) as cap:
        for i, u in enumerate(members):
            best = np.argsort(-image_max[:, u])[:top_k]
            curves = []
            for n in best:
                img = load_view(views[n], input_size)
                if img is None:
                    continue
                py, px = divmod(int(image_argmax[n, u]), geom.width)
                peak = ((py + 0.5) * geom.stride + geom.rf_offset[0], (px + 0.5) * geom.stride + geom.rf_offset[1])
                batch = torch.cat([make(float(a)).images_about(img[None], peak, target) for a in angles]).to(device)
                acts = cap.run(batch.contiguous(memory_format=torch.channels_last))[geom.layer].float()
                idx = torch.tensor(np.asarray(members), dtype=torch.long, device=acts.device)
                resp = acts[:, idx, max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2].amax((2, 3)).cpu().numpy()
                curves.append((resp - mean[members]) / np.maximum(std[members], 1e-6))
            if not curves:
                continue
            curve = np.mean(curves, 0)                                     # angles x members
            peaks = angles[np.argmax(curve, 0)]
            expected = np.mod(params - params[i], period)
            for j, v in enumerate(members):
                cols["driver"] += [int(u)] * len(angles)
                cols["member"] += [int(v)] * len(angles)
                cols["angle"] += angles.tolist()
                cols["response"] += curve[:, j].tolist()
                cols["peak_angle"] += [float(np.mod(peaks[j], period))] * len(angles)
                cols["expected_angle"] += [float(expected[j])] * len(angles)
    return {k: np.asarray(v) for k, v in cols.items()}


def sweep_error(peak: np.ndarray, expected: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Circular distance between observed and expected peak angles."""
    return circular_distance(peak, expected, period)
