"""Slotting directives for the business date: held class changes, within the daily move budget."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import (
    DUCKDB_POOL,
    PARTITION_METADATA,
    business_days,
    partition_date,
    window,
)
from velocity_platform.defs.resources import OperationalStoreResource, WarehouseResource, WmsResource
from velocity_platform.domain.slotting import (
    SlottingConfig,
    capacity_violations,
    plan_directives,
    rewind_assignment,
)

CAPACITY_CHECK = "location_capacity_respected"

_MOVE_SCHEMA = {"business_date": pl.Date, "sku_id": pl.String, "from_location": pl.String, "to_location": pl.String}


def assignment_at_start_of(day: dt.date, wms: WmsResource, state_store: OperationalStoreResource) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(assignment at the start of `day`, moves applied since day - hysteresis window)."""
    with wms.client() as client:
        current = pl.DataFrame(client.assignments(), schema={"sku_id": pl.String, "location_id": pl.String, "assigned_at": pl.String})
    applied = pl.DataFrame(
        [
            {"business_date": m.business_date, "sku_id": m.sku_id, "from_location": m.from_location, "to_location": m.to_location}
            for m in state_store.store().acked_moves_from(day - dt.timedelta(days=30))
        ],
        schema=_MOVE_SCHEMA,
    )
    start = rewind_assignment(current.select("sku_id", "location_id"), applied.filter(pl.col("business_date") >= day))
    return start, applied.filter(pl.col("business_date") < day)


@dg.asset(
    partitions_def=business_days,
    metadata=PARTITION_METADATA,
    ins={"sku_velocity": dg.AssetIn(partition_mapping=window(1))},
    group_name="slotting",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            CAPACITY_CHECK,
            asset="slotting_directives",
            blocking=True,
            description="No directive targets an occupied location, the same location twice, or one a case cannot fit.",
        )
    ],
    description="Moves for the day: class changes held two evaluations, new SKUs slotted, best saving first, within budget.",
)
def slotting_directives(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    wms: WmsResource,
    state_store: OperationalStoreResource,
    sku_velocity: pl.DataFrame,
    wms_locations: pl.DataFrame,
    sku_master: pl.DataFrame,
):
    day = partition_date(context)
    start, earlier_moves = assignment_at_start_of(day, wms, state_store)
    window_start = day - dt.timedelta(days=warehouse.hysteresis_days)
    recently_moved = earlier_moves.filter(pl.col("business_date") >= window_start)
    directives = plan_directives(
        day,
        velocity_today=sku_velocity.filter(pl.col("business_date") == day),
        velocity_yesterday=sku_velocity.filter(pl.col("business_date") == day - dt.timedelta(days=1)),
        locations=wms_locations,
        assignment=start,
        sku_master=sku_master,
        recently_moved=recently_moved,
        config=SlottingConfig(move_budget=warehouse.move_budget, hysteresis_days=warehouse.hysteresis_days),
    )
    violations = capacity_violations(directives, wms_locations, start, sku_master)
    yield dg.Output(
        directives,
        metadata={
            "dagster/row_count": directives.height,
            "move_budget": warehouse.move_budget,
            "expected_saving_m_per_day": float(directives["expected_saving_m_per_day"].sum()),
            "new_skus_slotted": directives.filter(pl.col("from_location").is_null()).height,
            "skus_slotted_at_start": start.height,
        },
    )
    yield dg.AssetCheckResult(
        check_name=CAPACITY_CHECK,
        passed=violations.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "violations": violations.height,
            "first_violations": dg.MetadataValue.md(
                "\n".join(f"- {r['directive_id']} -> {r['to_location']}: {r['problem']}" for r in violations.head(10).iter_rows(named=True))
                or "none"
            ),
        },
    )
