"""How a model becomes a partition: from the CLI, from the UI, from the checkpoint sensor.

A partition key is a model name. What the name loads is kept in the model
index of the results folder (:mod:`equivar_core.model_index`); built-in names,
their untrained controls (``untrained_efficientnet_lite0``) and
``package.module:callable`` specs need no entry, so in the UI one can add
``efficientnet_lite0`` or ``untrained_efficientnet_lite0`` as a partition and
materialize it. A checkpoint (a
weights file) needs an entry: the ``add_model`` job (launchpad config: name,
model, weights, step, layers), ``equivar models add`` and the checkpoint
sensor write it and add the partition. The ``registered_models`` sensor adds
a partition for every indexed model and the configured default, so models
registered from a shell show up in the UI.
"""

import os
from typing import Optional

from dagster import (Config, DagsterInstance, DefaultSensorStatus, OpExecutionContext, SensorEvaluationContext,
                     SensorResult, SkipReason, job, op, sensor)

from equivar_core import model_index, stages
from equivar_core.errors import EquivarError
from equivar_core.layout import safe_value
from equivar_core.model_index import ModelEntry
from equivar_core.models.registry import file_sha256
from equivar_core.settings import RunSettings

from .definitions_common import models_partitions
from .resources import EquivarConfig


def check_loads(config: EquivarConfig, entry: ModelEntry) -> None:
    """Raise :class:`EquivarError` unless ``entry`` builds a network with its weights and layers."""
    if not entry.name or entry.name != entry.name.strip() or "..." in entry.name or not entry.name.isprintable():
        raise EquivarError(f"bad model name {entry.name!r}: give a printable name without '...' or surrounding "
                           "spaces")
    try:
        safe_value(entry.name)
    except ValueError as exc:
        raise EquivarError(f"bad model name: {exc}") from None
    if entry.weights is not None and not os.path.isfile(entry.weights):
        raise EquivarError(f"weights file not found: {entry.weights}")
    layers = entry.layers or (tuple(config.layers) if entry.model == config.model else ())
    # the run's photos too: an untrained: model's batch norms are computed on them (and the load is remembered)
    stages.load(RunSettings(model=entry.model, weights=entry.weights, name=entry.name, layers=layers, device="cpu",
                            images=config.images, n_images=config.n_images, seed=config.seed))


def add_model(config: EquivarConfig, entry: ModelEntry, instance: DagsterInstance | None = None,
              check: bool = True) -> ModelEntry:
    """Index ``entry`` in ``config.out`` and add its partition to ``instance``; returns the entry as stored."""
    if check:
        check_loads(config, entry)
    if entry.weights is not None:
        entry = ModelEntry(name=entry.name, model=entry.model, weights=os.path.abspath(entry.weights),
                           step=entry.step, sha256=entry.sha256 or file_sha256(entry.weights), layers=entry.layers)
    model_index.register(os.path.abspath(config.out), entry)
    if instance is not None and not instance.has_dynamic_partition(models_partitions.name, entry.name):
        instance.add_dynamic_partitions(models_partitions.name, [entry.name])
    return entry


class AddModelConfig(Config):
    """A model to analyse: its name (the partition key and ``model`` column) and what to load."""

    name: str
    model: str = RunSettings.model
    weights: Optional[str] = None
    step: Optional[int] = None
    layers: list[str] = []


@op(description="Check that the model loads, index it and add its partition.")
def register_model(context: OpExecutionContext, config: AddModelConfig, equivar: EquivarConfig) -> None:
    entry = add_model(equivar, ModelEntry(name=config.name, model=config.model, weights=config.weights,
                                          step=config.step, layers=tuple(config.layers)), context.instance)
    context.log.info(f"model {entry.name} added: {entry.model}" + (f" with {entry.weights}" if entry.weights else ""))


@job(name="add_model",
     description="Add a model or checkpoint as a partition (launchpad config: name, model, weights, step, layers).")
def add_model_job():
    register_model()


@sensor(default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
        description="Add a partition for the configured model and every model in the results folder's index.")
def registered_models(context: SensorEvaluationContext, equivar: EquivarConfig):
    names = {equivar.default_partition} | {e.name for e in model_index.registered(os.path.abspath(equivar.out))}
    new = sorted(n for n in names if not context.instance.has_dynamic_partition(models_partitions.name, n))
    if not new:
        return SkipReason("every indexed model has its partition")
    return SensorResult(dynamic_partitions_requests=[models_partitions.build_add_request(new)])
