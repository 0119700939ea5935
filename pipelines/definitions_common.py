"""The job shared by definitions, sensors and schedules."""

from dagster import AssetSelection, define_asset_job

equivar_job = define_asset_job("equivar", selection=AssetSelection.all(),
                               description="Materialize every table and the catalog for one model.")
