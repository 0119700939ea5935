"""The run's settings as a Dagster resource (translated into :class:`equivar_core.settings.RunSettings`)."""

from __future__ import annotations

import os
from typing import Optional

from dagster import ConfigurableResource

from equivar_core import model_index
from equivar_core.errors import EquivarError
from equivar_core.models.registry import default_name, is_callable_spec
from equivar_core.settings import RunSettings, default_out

class EquivarConfig(ConfigurableResource):
    """Which model, layers and images to analyse, and where results go.

    Defaults come from the environment when the code location loads
    (``EQUIVAR_MODEL``, ``EQUIVAR_WEIGHTS``, ``EQUIVAR_LAYERS``, ``EQUIVAR_IMAGES``,
    ``EQUIVAR_N_IMAGES``, ``EQUIVAR_HOME``), so ``dagster dev`` and ``equivar run``
    agree.
    """

    model: str = RunSettings.model
    weights: Optional[str] = None
    name: Optional[str] = None
    layers: list[str] = []
    images: Optional[str] = None
    n_images: int = RunSettings.n_images
    out: str = "equivar-data"
    device: str = RunSettings.device
    batch_size: int = RunSettings.batch_size
    workers: int = RunSettings.workers
    keep_samples: int = RunSettings.keep_samples
    seed: int = RunSettings.seed
    #: any analysis setting as ``SECTION.FIELD=VALUE`` (``RunSettings.with_overrides``), e.g.
    #: ``["families.min_similarity=0.8", "tuning.stimuli.orientation_step=10"]``
    overrides: list[str] = []

    @property
    def default_partition(self) -> str:
        """The partition (model name) of the configured model."""
        return self.name or default_name(self.model)

    def entry(self, partition_key: str | None = None) -> model_index.ModelEntry:
        """What the partition ``partition_key`` loads: the model index of ``out`` first, then the configured
        model when the key is its name, then built-in names and callable specs."""
        key = partition_key or self.default_partition
        out = os.path.abspath(self.out)
        found = model_index.lookup(out, key)
        if found is not None:
            return found
        if key == self.default_partition:
            return model_index.ModelEntry(name=key, model=self.model, weights=self.weights)
        if is_callable_spec(key):
            # importing and calling a spec runs code: only a shell may ask for that (equivar models add / run)
            raise EquivarError(f"partition {key!r} is not a registered model; a module:callable spec runs code, so "
                               f"register it from a shell first: `equivar models add NAME --model {key}`")
        return model_index.resolve(out, key)

    def settings(self, partition_key: str | None = None) -> RunSettings:
        """The run's settings for one model partition (default: the configured model)."""
        e = self.entry(partition_key)
        layers = e.layers or (tuple(self.layers) if e.model == self.model else ())
        return RunSettings(model=e.model, weights=e.weights, name=e.name, step=e.step, layers=layers,
                           images=self.images, n_images=self.n_images, out=os.path.abspath(self.out),
                           device=self.device, batch_size=self.batch_size, workers=self.workers,
                           keep_samples=self.keep_samples, seed=self.seed).with_overrides(self.overrides)

    @classmethod
    def from_env(cls) -> "EquivarConfig":
        env = os.environ.get
        layers = [x for x in env("EQUIVAR_LAYERS", "").split(",") if x]
        return cls(model=env("EQUIVAR_MODEL", RunSettings.model), weights=env("EQUIVAR_WEIGHTS") or None,
                   layers=layers, images=env("EQUIVAR_IMAGES") or None,
                   n_images=int(env("EQUIVAR_N_IMAGES", RunSettings.n_images)), out=default_out())
