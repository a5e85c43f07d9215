"""Signal on the nightly batch: the day landed at the WMS within its window (02:00 + 4 h, local)."""


import datetime as dt

import dagster as dg

from velocity_platform.defs.daily import MAX, daily_check
from velocity_platform.defs.partitions import DateVerdict, SiteDay
from velocity_platform.defs.resources import OperationsResource, WarehouseResource
from velocity_platform.domain.signals import batch_window

BATCH_WINDOW_CHECK = "landed_within_batch_window"
SCHEDULE_TAG = "dagster/schedule_name"


@daily_check(
    asset="wms_directive_acks",
    name=BATCH_WINDOW_CHECK,
    merge={"minutes_after_window": MAX},
    description="The scheduled nightly run landed the day's acknowledgements within 4 hours of its 02:00 start "
    "in the warehouse's own time zone.",
)
def landed_within_batch_window(
    context: dg.AssetCheckExecutionContext,
    days: list[dt.date],
    warehouse_id: str,
    operations: OperationsResource,
    warehouse: WarehouseResource,
) -> dict[dt.date, DateVerdict]:
    scheduled = context.run.tags.get(SCHEDULE_TAG) is not None
    return {
        day: _landed_verdict(day, _landed_at(context, SiteDay(warehouse_id, day)), scheduled, warehouse.timezone, operations)
        for day in days
    }


def _landed_at(context: dg.AssetCheckExecutionContext, site_day: SiteDay) -> dt.datetime:
    """When the site-day's acknowledgements landed: wms_directive_acks' materialization of it,
    made just before this check in the same run (now, if it is not recorded yet)."""
    record = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("wms_directive_acks"), asset_partitions=[site_day.key]),
        limit=1,
    ).records
    return dt.datetime.fromtimestamp(record[0].timestamp, dt.UTC) if record else dt.datetime.now(dt.UTC)


def _landed_verdict(
    day: dt.date, landed: dt.datetime, scheduled: bool, timezone: str, operations: OperationsResource
) -> DateVerdict:
    start, end = batch_window(day, timezone, operations.batch_start_hour, operations.batch_window_hours)
    figures = {
        "landed_at": landed.astimezone(start.tzinfo).isoformat(timespec="seconds"),
        "window_start": start.isoformat(timespec="minutes"),
        "window_end": end.isoformat(timespec="minutes"),
        "minutes_after_window": dg.MetadataValue.float(round(max((landed - end).total_seconds(), 0.0) / 60, 1)),
        "scheduled_run": scheduled,
    }
    if not scheduled:
        # A backfill, a command-line range or a manual re-run lands a past day late by design: the
        # KPI is the nightly run's. A nightly run that did not land at all shows as stale freshness.
        not_judged = "not a scheduled nightly run: the batch window applies to runs of the 02:00 schedule"
        return DateVerdict(True, {"not_judged": not_judged, **figures}, None, dg.AssetCheckSeverity.WARN)
    on_time = landed <= end
    return DateVerdict(
        on_time,
        figures,
        None
        if on_time
        else f"{day} landed at {figures['landed_at']}, {figures['minutes_after_window'].value:.0f} minutes after its "
        f"batch window closed at {figures['window_end']}; see the run's step durations for the slow stage.",
        dg.AssetCheckSeverity.WARN,
    )
