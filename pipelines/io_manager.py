"""Tables as Hive-partitioned Parquet: ``<out>/<table>/model=<m>/[transform=<t>/]layer=<l>/data.parquet``.

An asset key ``[table]`` is the whole table of a model; a key ``[table, t]`` (the per-transform assets, e.g.
``transform_pairs/hue``) is the slice ``transform=<t>`` of it, so the catalog's ``transform_pairs`` view
covers every transform.
"""

import importlib.util
import os

import pandas as pd
import pyarrow as pa
from dagster import (ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency,
                     TableColumn, TableSchema)

from equivar_core import storage

from .fingerprints import FINGERPRINT_KEY, record_fingerprint, table_of
from .resources import EquivarConfig


def partition_column(df: pd.DataFrame):
    for col in ("layer", "src_layer", "small_layer"):
        if col in df.columns:
            return col
    return None


class ParquetIOManager(ConfigurableIOManager):
    """Writes each asset's DataFrame atomically, one file per model and layer; reads one model back.

    The model is the asset partition (a dynamic partition per model or checkpoint).
    """

    config: ResourceDependency[EquivarConfig]

    def _settings(self, context: OutputContext | InputContext):
        """Settings of the model partition being written or read (the configured model when unpartitioned)."""
        key = context.asset_partition_key if context.has_asset_partitions else None
        return self.config.settings(key)

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        s = self._settings(context)
        name, part = table_of(context.asset_key)
        table = pa.Table.from_pandas(obj, preserve_index=False)
        paths = storage.write_table(s.out, name, table, s.model_name, partition_column(obj), part)
        # the fingerprint the asset computed (its data version) as it handed the table over: recorded as the
        # output is committed (a test's own key, without one, records nothing)
        version = (context.output_metadata or {}).get(FINGERPRINT_KEY)
        if version is not None:
            record_fingerprint(s, context.asset_key.to_user_string(), getattr(version, "value", version))
        context.add_output_metadata({
            "rows": MetadataValue.int(len(obj)),
            "files": MetadataValue.int(len(paths)),
            "path": MetadataValue.path(os.path.dirname(paths[0]) if len(paths) == 1 else
                                       os.path.commonpath(paths)),
            "dagster/column_schema": TableSchema([TableColumn(c, str(t)) for c, t in obj.dtypes.items()]),
            "preview": MetadataValue.md(obj.head(8).to_markdown(index=False) if _has_tabulate() else
                                        obj.head(8).to_string(index=False)),
        })

    def load_input(self, context: InputContext) -> pd.DataFrame:
        s = self._settings(context)
        name, part = table_of(context.upstream_output.asset_key)
        table = storage.read_table(s.out, name, s.model_name, part)
        if table is None:
            raise FileNotFoundError(f"table {name} of model {s.model_name} not found under {s.out}: "
                                    "materialize it first")
        return table.to_pandas()


def _has_tabulate() -> bool:
    return importlib.util.find_spec("tabulate") is not None
