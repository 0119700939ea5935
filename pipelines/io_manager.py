"""Tables as Hive-partitioned Parquet: ``<out>/<asset>/model=<m>/layer=<l>/data.parquet``."""


import pandas as pd
import pyarrow as pa
from dagster import (ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency, TableColumn,
                     TableSchema)

from equivar_core import storage

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
        name = context.asset_key.path[-1]
        table = pa.Table.from_pandas(obj, preserve_index=False)
        paths = storage.write_table(s.out, name, table, s.model_name, partition_column(obj))
        context.add_output_metadata({
            "rows": MetadataValue.int(len(obj)),
            "files": MetadataValue.int(len(paths)),
            "path": MetadataValue.path(storage.partition_dir(s.out, name, s.model_name)),
            "dagster/column_schema": TableSchema([TableColumn(c, str(t)) for c, t in obj.dtypes.items()]),
            "preview": MetadataValue.md(obj.head(8).to_markdown(index=False) if _has_tabulate() else
                                        obj.head(8).to_string(index=False)),
        })

    def load_input(self, context: InputContext) -> pd.DataFrame:
        s = self._settings(context)
        name = context.upstream_output.asset_key.path[-1]
        table = storage.read_table(s.out, name, s.model_name)
        if table is None:
            raise FileNotFoundError(f"table {name} of model {s.model_name} not found under {s.out}: "
                                    "materialize it first")
        return table.to_pandas()


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False
