"""Signal on the day's moves: no SKU moved again inside the hysteresis window (thrash)."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import DUCKDB_POOL, DateVerdict, business_days, partition_dates, record_per_date
from velocity_platform.defs.resources import OperationalStoreResource, WarehouseResource
from velocity_platform.domain.signals import thrash

THRASH_CHECK = "no_thrash_within_hysteresis"


@dg.asset_check(
    asset="slotting_directives",
    name=THRASH_CHECK,
    partitions_def=business_days,
    pool=DUCKDB_POOL,
    description="No directive moves a SKU the WMS already moved inside the hysteresis window, nor one SKU twice.",
)
def no_thrash_within_hysteresis(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    state_store: OperationalStoreResource,
    slotting_directives: pl.DataFrame,
) -> dg.AssetCheckResult:
    days = partition_dates(context)
    window_days = warehouse.hysteresis_days
    # What the WMS really applied before the run (the outbox's acknowledged moves), and, inside a
    # backfill's range, the moves planned for the range's earlier dates.
    acked = pl.DataFrame(
        [
            {"business_date": m.business_date, "sku_id": m.sku_id}
            for m in state_store.store().acked_moves_from(days[0] - dt.timedelta(days=window_days))
            if m.business_date < days[0]
        ],
        schema={"business_date": pl.Date, "sku_id": pl.String},
    )
    planned = slotting_directives.select("business_date", "sku_id").cast({"business_date": pl.Date, "sku_id": pl.String})
    applied = pl.concat([acked, planned])
    per_date = {
        day: thrash(
            slotting_directives.filter(pl.col("business_date") == day),
            applied.filter(pl.col("business_date") < day),
            day,
            window_days,
        )
        for day in days
    }
    record_per_date(
        context,
        "slotting_directives",
        THRASH_CHECK,
        {
            day: DateVerdict(
                found.is_empty(),
                {"thrashing_directives": found.height},
                None if found.is_empty() else f"{found.height} directives move a SKU again inside the window (first: {found['sku_id'][0]})",
                dg.AssetCheckSeverity.WARN,
            )
            for day, found in per_date.items()
        },
    )
    thrashing = pl.concat(list(per_date.values()))
    day = days[-1] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    listing = "\n".join(
        f"- {r['sku_id']} ({r['directive_id']}): {r['problem']}" for r in thrashing.head(15).iter_rows(named=True)
    )
    return dg.AssetCheckResult(
        passed=thrashing.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "directives": slotting_directives.height,
            "thrashing_directives": thrashing.height,
            "hysteresis_days": window_days,
            "moves_in_window": applied.filter(pl.col("business_date") < days[-1]).height,
            "first_thrashing": dg.MetadataValue.md(listing or "none"),
        },
        description=None
        if thrashing.is_empty()
        else f"{thrashing.height} of the {slotting_directives.height} directives for {day} move a SKU again inside "
        f"the {window_days}-day hysteresis window (first: {thrashing['sku_id'][0]}); the planner should have held "
        "them back: look at that SKU's recent directives and class history.",
    )
