"""The partitions and the job shared by assets, definitions, sensors and schedules."""

from dagster import AssetSelection, DynamicPartitionsDefinition, define_asset_job

#: one partition per model: a built-in, a callable spec, or a registered name such as a checkpoint
#: (``smallcnn@step_200``); keys are the ``model`` column of every table (see equivar_core.model_index)
models_partitions = DynamicPartitionsDefinition(name="models")

#: the model partitions' assets: all but ``family_matches`` and ``family_emergence`` (group ``universality``),
#: which span models
PER_MODEL = AssetSelection.all() - AssetSelection.groups("universality")

equivar_job = define_asset_job("equivar", selection=PER_MODEL,
                               description="Materialize every table and the catalog for one model (a partition).")
compare_job = define_asset_job("compare", selection=AssetSelection.groups("universality"),
                               description="Match the families of models already run (family_matches; config: "
                                           "pairs 'A,B', empty for every pair of analysed models) and follow each "
                                           "training run's families over its checkpoints (family_emergence).")
