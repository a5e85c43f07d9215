"""The jobs operators run: the nightly batch and its 02:00 schedule, and what the delta sensor asks for."""

import dagster as dg

from velocity_platform.settings import NIGHTLY_START_HOUR

nightly_batch = dg.define_asset_job(
    name="nightly_slotting_batch",
    selection=dg.AssetSelection.all(),
    description="ERP pull to WMS acknowledgements for one business date (reference data refreshed first).",
)

# At 02:00 warehouse time (the partitions' time zone), build the business date that just ended.
# Running by default: deploying the code location is what turns the nightly batch on.
nightly_schedule = dg.build_schedule_from_partitioned_job(
    nightly_batch,
    name="nightly_slotting_schedule",
    hour_of_day=NIGHTLY_START_HOUR,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

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
