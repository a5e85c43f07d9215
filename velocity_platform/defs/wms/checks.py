"""Signal on the nightly batch: the day landed at the WMS within its window (02:00 + 4 h, local)."""


import datetime as dt

import dagster as dg

from velocity_platform.defs.partitions import business_days, partition_dates, record_per_date, same_verdict_each_date
from velocity_platform.defs.resources import OperationsResource, WarehouseResource
from velocity_platform.domain.signals import batch_window

BATCH_WINDOW_CHECK = "landed_within_batch_window"
SCHEDULE_TAG = "dagster/schedule_name"


@dg.asset_check(
    asset="wms_directive_acks",
    name=BATCH_WINDOW_CHECK,
    partitions_def=business_days,
    description="The scheduled nightly run landed the day's acknowledgements within 4 hours of its 02:00 start.",
)
def landed_within_batch_window(
    context: dg.AssetCheckExecutionContext, operations: OperationsResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_dates(context)[-1]  # a backfill's range lands with its last date
    start, end = batch_window(day, warehouse.timezone, operations.batch_start_hour, operations.batch_window_hours)
    # The day lands with its last asset, materialized just before this check in the same run.
    record = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("wms_directive_acks"), asset_partitions=[day.isoformat()]),
        limit=1,
    ).records
    landed = dt.datetime.fromtimestamp(record[0].timestamp, dt.UTC) if record else dt.datetime.now(dt.UTC)
    schedule = context.run.tags.get(SCHEDULE_TAG)
    figures = {
        "landed_at": landed.astimezone(start.tzinfo).isoformat(timespec="seconds"),
        "window_start": start.isoformat(timespec="minutes"),
        "window_end": end.isoformat(timespec="minutes"),
        "minutes_after_window": dg.MetadataValue.float(round(max((landed - end).total_seconds(), 0.0) / 60, 1)),
        "scheduled_run": schedule is not None,
    }
    if schedule is None:
        # A backfill, a command-line range or a manual re-run lands a past day late by design: the
        # KPI is the nightly run's. A nightly run that did not land at all shows as stale freshness.
        result = dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=figures,
            description="not a scheduled nightly run: the batch window applies to runs of the 02:00 schedule",
        )
        record_per_date(context, "wms_directive_acks", BATCH_WINDOW_CHECK, same_verdict_each_date(partition_dates(context), result))
        return result
    on_time = landed <= end
    return dg.AssetCheckResult(
        passed=on_time,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=figures,
        description=None
        if on_time
        else f"{day} landed at {figures['landed_at']}, {figures['minutes_after_window'].value:.0f} minutes after its "
        f"batch window closed at {figures['window_end']}; see the run's step durations for the slow stage.",
    )
