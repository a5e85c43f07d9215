"""The one partitions definition: a business day in the warehouse's time zone."""

import datetime as dt

import dagster as dg

from velocity_platform.settings import Settings

_settings = Settings.from_env()

business_days = dg.DailyPartitionsDefinition(
    start_date=_settings.first_partition_date.isoformat(),
    timezone=_settings.timezone,
)

# Every partitioned table carries its business date in this DATE column (the I/O manager
# filters on it; a text column would silently load nothing downstream).
PARTITION_METADATA = {"partition_expr": "business_date"}

# DuckDB has one writer: every asset that writes it takes the single slot of this pool.
DUCKDB_POOL = "duckdb"


def partition_date(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def window(days_back: int) -> dg.TimeWindowPartitionMapping:
    """Upstream days D-days_back..D; days before the first partition simply have no rows."""
    return dg.TimeWindowPartitionMapping(start_offset=-days_back, allow_nonexistent_upstream_partitions=True)
