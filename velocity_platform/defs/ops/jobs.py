"""The jobs operators run: the nightly batch and its 02:00 schedule, and what the delta sensor asks for."""

import datetime as dt

import dagster as dg

from velocity_platform.defs.partitions import WAREHOUSES_PARTITIONS, SiteDay
from velocity_platform.defs.resources import WarehouseResource
from velocity_platform.domain.network import nightly_runs_due
from velocity_platform.settings import NIGHTLY_START_HOUR

# Every site-day asset; the network roll-up (partitioned by date alone) follows by automation.
NETWORK_ASSETS = ("network_daily_rollup",)
nightly_batch = dg.define_asset_job(
    name="nightly_slotting_batch",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(*NETWORK_ASSETS),
    description="ERP pull to WMS acknowledgements for one business date (reference data refreshed first).",
)

network_rollup = dg.define_asset_job(
    name="network_rollup",
    selection=dg.AssetSelection.assets(*NETWORK_ASSETS),
    description="The network's figures of one business date, every site side by side (the daemon runs it as sites land).",
)

# Every time zone's offset is a multiple of 15 minutes, so a tick every 15 minutes (UTC) meets
# each site's 02:00 exactly; each tick asks for the sites whose 02:00 passed since the last one.
SCHEDULE_TICK_MINUTES = 15
WAREHOUSE_TAG = "velocity/warehouse"
# Nightly runs go ahead of queued backfill runs (the run queue dequeues by priority): a site's
# backfill never holds another site's night back (dagster.yaml: per-site run limits).
NIGHTLY_PRIORITY = "10"


@dg.schedule(
    name="nightly_slotting_schedule",
    job=nightly_batch,
    cron_schedule=f"*/{SCHEDULE_TICK_MINUTES} * * * *",
    execution_timezone="Etc/UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 02:00 in each warehouse's own time zone (DST included), that site's business date that just "
    "ended: one run per site and night. Running by default: deploying the code location turns the nights on.",
)
def nightly_slotting_schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    sites = warehouse.network()
    known = set(context.instance.get_dynamic_partitions(WAREHOUSES_PARTITIONS))
    due = nightly_runs_due(sites, tick - dt.timedelta(minutes=SCHEDULE_TICK_MINUTES), tick, NIGHTLY_START_HOUR)
    requests = []
    for run in due:
        if run.warehouse_id not in known:
            # Registered in the store but not yet a partition: the registry sensor adds it.
            context.log.warning(f"{run.warehouse_id}: registered but not a warehouse partition yet; its night is skipped")
            continue
        site_day = SiteDay(run.warehouse_id, run.business_date)
        requests.append(
            dg.RunRequest(
                run_key=f"nightly:{site_day}",
                partition_key=site_day.key,
                tags={WAREHOUSE_TAG: run.warehouse_id, "dagster/priority": NIGHTLY_PRIORITY},
            )
        )
    if not requests:
        return dg.SkipReason(
            f"no site's {NIGHTLY_START_HOUR:02d}:00 fell in the {SCHEDULE_TICK_MINUTES} minutes to {tick.isoformat(timespec='minutes')} "
            f"({len(sites)} site(s))"
        )
    return requests


# A day that received late ERP records: its data again, through sku_velocity, and no further.
# Its moves are not re-planned: a past day's directives were planned against that day's
# assignment and are already at the WMS; the next nightly run plans from the corrected velocity.
LATE_ARRIVAL_ASSETS = (
    "sku_master",
    "raw_transactions",
    "validated_transactions",
    "dead_letter_transactions",
    "sales_history",
    "daily_sku_demand",
    "sku_velocity",
)
late_arrival_refresh = dg.define_asset_job(
    name="late_arrival_refresh",
    selection=dg.AssetSelection.assets(*LATE_ARRIVAL_ASSETS),
    description="Re-pull a built business date that received late ERP records, through sku_velocity (no moves).",
)

sku_master_refresh = dg.define_asset_job(
    name="sku_master_refresh",
    selection=dg.AssetSelection.assets("sku_master"),
    description="Refresh the SKU master when the ERP sells SKUs it does not list yet.",
)
