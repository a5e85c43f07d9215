"""The one partitions definition: a business day in the warehouse's time zone."""

import datetime as dt
import os
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class DateVerdict:
    """A check's verdict on one business date of a run over several."""

    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str | None = None
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


def record_per_date(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    asset: str,
    check: str,
    verdicts: dict[dt.date, DateVerdict],
    blocking: bool = False,
) -> None:
    """In a run over several dates, record a partitioned check's verdict on each date as its own
    evaluation.

    A check returns one result per run, which a run over a range records without a partition;
    Dagster would then show every date of the range as skipped. Each date's own verdict (with
    its figures) is what the UI shows on that partition; the run's result still gates the run.
    Only for the checks declared per partition (the separate @asset_checks): the gates inside
    an asset are not partitioned and record one result per run, nightly or backfill alike.
    """
    if len(verdicts) <= 1:
        return
    log = context.log_event if isinstance(context, dg.AssetExecutionContext) else context.op_execution_context.log_event
    for day, verdict in verdicts.items():
        log(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset),
                check_name=check,
                passed=verdict.passed,
                partition=day.isoformat(),
                metadata=verdict.metadata,
                severity=verdict.severity,
                description=verdict.description,
                blocking=blocking,
            )
        )


def same_verdict_each_date(
    days: list[dt.date], result: dg.AssetCheckResult, note: str = "figures of the whole range"
) -> dict[dt.date, DateVerdict]:
    """The run's verdict on every date, for checks whose figures exist only for the range."""
    description = f"{result.description} ({note})" if result.description else None
    return {day: DateVerdict(result.passed, dict(result.metadata), description, result.severity) for day in days}
