"""The partitions and the job shared by assets, definitions, sensors and schedules."""

from dagster import AssetSelection, DynamicPartitionsDefinition, define_asset_job

#: one partition per model: a built-in, a callable spec, or a registered name such as a checkpoint
#: (``smallcnn@step_200``); keys are the ``model`` column of every table (see equivar_core.model_index)
models_partitions = DynamicPartitionsDefinition(name="models")

equivar_job = define_asset_job("equivar", selection=AssetSelection.all(),
                               description="Materialize every table and the catalog for one model (a partition).")
