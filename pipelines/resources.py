"""The run's settings as a Dagster resource (translated into :class:`equivar_core.settings.RunSettings`)."""

from __future__ import annotations

import os
from typing import Mapping, Optional

from dagster import ConfigurableResource

from equivar_core.settings import DEFAULT_N_IMAGES, RunSettings, default_out

#: run tags that override the resource per run: equivar/model, equivar/weights, equivar/name, equivar/step
TAG_PREFIX = "equivar/"

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

    def settings(self, tags: Mapping[str, str] | None = None) -> RunSettings:
        """The run's settings; run tags ``equivar/<field>`` override fields (a checkpoint run, say)."""
        values = dict(model=self.model, weights=self.weights, name=self.name, step=None)
        for key, value in (tags or {}).items():
            if key.startswith(TAG_PREFIX) and key[len(TAG_PREFIX):] in values:
                values[key[len(TAG_PREFIX):]] = value
        step = int(values["step"]) if values["step"] not in (None, "") else None
        return RunSettings(model=values["model"], weights=values["weights"], name=values["name"], step=step,
                           layers=tuple(self.layers), images=self.images, n_images=self.n_images,
                           out=os.path.abspath(self.out), device=self.device, batch_size=self.batch_size,
                           seed=self.seed)

    def fingerprint(self, asset: str, tags: Mapping[str, str] | None = None) -> str:
        """This asset's fingerprint (its Dagster data version); see :mod:`pipelines.fingerprints`."""
        from .fingerprints import asset_fingerprints

        return asset_fingerprints(self.settings(tags), CODE_VERSION)[asset]

    @classmethod
    def from_env(cls) -> "EquivarConfig":
        env = os.environ.get
        layers = [x for x in env("EQUIVAR_LAYERS", "").split(",") if x]
        return cls(model=env("EQUIVAR_MODEL", "efficientnet_lite0"), weights=env("EQUIVAR_WEIGHTS") or None,
                   layers=layers, images=env("EQUIVAR_IMAGES") or None,
                   n_images=int(env("EQUIVAR_N_IMAGES", DEFAULT_N_IMAGES)), out=default_out())
