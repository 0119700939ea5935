"""The run's settings as a Dagster resource (translated into :class:`equivar_core.settings.RunSettings`)."""

from __future__ import annotations

import os
from typing import Optional

from dagster import ConfigurableResource

from equivar_core.settings import DEFAULT_N_IMAGES, RunSettings, default_out

#: bump when a change of code changes results (it enters every asset's code version and fingerprint)
CODE_VERSION = "1"


class EquivarConfig(ConfigurableResource):
    """Which model, layers and images to analyse, and where results go.

    Defaults come from the environment when the code location loads
    (``EQUIVAR_MODEL``, ``EQUIVAR_WEIGHTS``, ``EQUIVAR_LAYERS``, ``EQUIVAR_IMAGES``,
    ``EQUIVAR_N_IMAGES``, ``EQUIVAR_HOME``), so ``dagster dev`` and ``equivar run``
    agree.
    """

    model: str = "efficientnet_lite0"
    weights: Optional[str] = None
    name: Optional[str] = None
    layers: list[str] = []
    images: Optional[str] = None
    n_images: int = DEFAULT_N_IMAGES
    out: str = "equivar-data"
    device: str = "auto"
    batch_size: int = 16
    seed: int = 0

    def settings(self) -> RunSettings:
        return RunSettings(model=self.model, weights=self.weights, name=self.name, layers=tuple(self.layers),
                           images=self.images, n_images=self.n_images, out=os.path.abspath(self.out),
                           device=self.device, batch_size=self.batch_size, seed=self.seed)

    def fingerprint(self, asset: str) -> str:
        """This asset's fingerprint (its Dagster data version); see :mod:`pipelines.fingerprints`."""
        from .fingerprints import asset_fingerprints

        return asset_fingerprints(self.settings(), CODE_VERSION)[asset]

    @classmethod
    def from_env(cls) -> "EquivarConfig":
        env = os.environ.get
        layers = [x for x in env("EQUIVAR_LAYERS", "").split(",") if x]
        return cls(model=env("EQUIVAR_MODEL", "efficientnet_lite0"), weights=env("EQUIVAR_WEIGHTS") or None,
                   layers=layers, images=env("EQUIVAR_IMAGES") or None,
                   n_images=int(env("EQUIVAR_N_IMAGES", DEFAULT_N_IMAGES)), out=default_out())
