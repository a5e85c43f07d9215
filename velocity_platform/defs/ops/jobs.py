"""The nightly batch: the whole graph for one business date, and its 02:00 schedule."""

import dagster as dg

from velocity_platform.defs.partitions import business_days

nightly_batch = dg.define_asset_job(
    name="nightly_slotting_batch",
    selection=dg.AssetSelection.all(),
    partitions_def=business_days,
    description="ERP pull to WMS acknowledgements for one business date (reference data refreshed first).",
)

# At 02:00 warehouse time, build the business date that just ended.
nightly_schedule = dg.build_schedule_from_partitioned_job(
    nightly_batch, name="nightly_slotting_schedule", hour_of_day=2, minute_of_hour=0
)
