"""The one partitions definition: a business day in the warehouse's time zone."""

import datetime as dt
import os

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


def partition_dates(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[dt.date]:
    """The business dates a run covers, oldest first: one for the nightly run or a single-date
    run, several for a backfill run over a range (see BACKFILL_POLICY)."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def days_per_backfill_run() -> int:
    raw = os.environ.get("VELOCITY_BACKFILL_DAYS_PER_RUN", "").strip()
    days = int(raw) if raw else 30
    if days < 1:
        raise ValueError(f"VELOCITY_BACKFILL_DAYS_PER_RUN={raw!r}: use a whole number of days, 1 or more")
    return days


# A backfill runs consecutive business dates together, up to this many per run, oldest range
# first: one run start (process, code load, queue) per range instead of per date, and every
# stage works on the whole range at once. Each asset handles a range as the dates in order
# (moves are planned day after day on the slotting the previous day's moves leave). Memory
# grows with the range: about lines per day x days x 0.3 KB at the widest stage.
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=days_per_backfill_run())


def window(days_back: int) -> dg.TimeWindowPartitionMapping:
    """Upstream days D-days_back..D; days before the first partition simply have no rows."""
    return dg.TimeWindowPartitionMapping(start_offset=-days_back, allow_nonexistent_upstream_partitions=True)
