"""Feature visualization: the image that makes a unit fire, by gradient ascent.

As in Lucid/Lucent: the image is parameterized in a decorrelated Fourier
basis (each frequency scaled by 1/f, so the optimization does not favour
high-frequency noise) squashed into [0, 1] by a sigmoid; before each step it
is jittered, rescaled and rotated by small random amounts (transformation
robustness), so the result is a feature, not an adversarial pattern. The
objective is the unit's pre-activation at the central cell. The canvas is the
layer's stimulus canvas (sized to its receptive field), which keeps the cost
to seconds per unit on a CPU.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from .capture import LayerGeometry, Network, canvas_size, capture
from .transforms import rotation_matrix


def _spectrum_scale(size: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.clamp((fx**2 + fy**2).sqrt(), min=1.0 / size)


def visualize(net: Network, geom: LayerGeometry, unit: int, steps: int = 96, lr: float = 0.05, seed: int = 0
              ) -> tuple[np.ndarray, float]:
    """Optimize an image for ``unit`` of ``net``; returns it (S x S x 3 in [0, 1]) and the unit's final response."""
    model, device = net.module, net.device
    size = canvas_size(geom, net.input_size)
    cy, cx = geom.centre_cell(size)
    gen = torch.Generator().manual_seed(seed)
    scale = _spectrum_scale(size).to(device)
    spec = (torch.randn(3, size, size // 2 + 1, 2, generator=gen) * 0.01).to(device).requires_grad_(True)
    opt = torch.optim.Adam([spec], lr=lr)

    def image() -> torch.Tensor:
        z = torch.view_as_complex(spec) * scale
        return torch.sigmoid(torch.fft.irfft2(z, s=(size, size)) * size / 4)

    with capture(model, [geom.layer], pre_activation=True) as cap:
        for _ in range(steps):
            img = image()[None]
            shift = torch.randint(-4, 5, (2,), generator=gen).tolist()
            img = torch.roll(img, shifts=shift, dims=(2, 3))
            angle = float(torch.empty(1).uniform_(-10, 10, generator=gen))
            s = float(torch.empty(1).uniform_(0.95, 1.05, generator=gen))
            theta = torch.zeros(1, 2, 3, device=device)
            theta[0, :, :2] = rotation_matrix(-angle).to(device) / s
            grid = F.affine_grid(theta, list(img.shape), align_corners=False)
            img = F.grid_sample(img, grid, padding_mode="reflection", align_corners=False)
            with torch.enable_grad():
                act = cap.run(img)[geom.layer]
                loss = -act[0, unit, cy, cx]
                opt.zero_grad()
                loss.backward()
            opt.step()
        with torch.inference_mode():
            final = image()[None]
            response = float(cap.run(final)[geom.layer][0, unit, cy, cx])
    return final[0].detach().permute(1, 2, 0).cpu().numpy(), response
