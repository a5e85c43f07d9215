"""Slotting directives for the business date, and the shadow report of what they save.

Directives rank SKUs by pick frequency and locations by travel cost under the warehouse's
routing; the shadow report replays the last 30 days of real orders on the slotting before and
after the day's directives.
"""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.connectors.state import moves_sent_from
from velocity_platform.defs.partitions import (
    DUCKDB_POOL,
    PARTITION_METADATA,
    business_days,
    partition_date,
    window,
)
from velocity_platform.defs.resources import (
    OperationalStoreResource,
    SlottingResource,
    WarehouseResource,
    WmsResource,
)
from velocity_platform.defs.slotting.plots import abc_pareto, heat_maps, markdown_image
from velocity_platform.domain.history import read_assignment_page
from velocity_platform.domain.shadow import apply_directives, compare
from velocity_platform.domain.slotting import (
    SlottingConfig,
    capacity_violations,
    plan_directives,
    rewind_assignment,
)
from velocity_platform.domain.travel import Layout

CAPACITY_CHECK = "location_capacity_respected"

_MOVE_SCHEMA = {"business_date": pl.Date, "sku_id": pl.String, "from_location": pl.String, "to_location": pl.String}


def assignment_at_start_of(day: dt.date, wms: WmsResource, state_store: OperationalStoreResource) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(assignment at the start of `day`, moves applied since day - hysteresis window)."""
    with wms.client() as client:
        current = pl.concat(client.assignments(reader=read_assignment_page))
    applied = pl.DataFrame(
        [
            {"business_date": m.business_date, "sku_id": m.sku_id, "from_location": m.from_location, "to_location": m.to_location}
            # Pending moves too: one may be applied with its answer lost (or its pusher killed).
            for m in moves_sent_from(state_store.store(), day - dt.timedelta(days=30))
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
    description="Moves for the day: SKUs ranked by pick frequency into locations ranked by travel cost, target band "
    "held two evaluations, new SKUs slotted, best saving first, within budget.",
)
def slotting_directives(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    slotting: SlottingResource,
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
        config=SlottingConfig(
            move_budget=warehouse.move_budget,
            hysteresis_days=warehouse.hysteresis_days,
            routing=slotting.routing,
            band_locations=slotting.band_locations,
        ),
    )
    violations = capacity_violations(directives, wms_locations, start, sku_master)
    yield dg.Output(
        directives,
        metadata={
            "dagster/row_count": directives.height,
            "move_budget": warehouse.move_budget,
            "expected_saving_m_per_day": float(directives["expected_saving_m_per_day"].sum()),
            "new_skus_slotted": directives.filter(pl.col("from_location").is_null()).height,
            "routing": slotting.routing,
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


SHADOW_DAYS = 30

SHADOW_REPORT_SCHEMA = {
    "business_date": pl.Date,  # the day whose directives are judged
    "order_date": pl.Date,
    "order_id": pl.String,
    "pick_lines": pl.Int64,
    "travel_current_m": pl.Float64,
    "travel_after_m": pl.Float64,
}


@dg.asset(
    partitions_def=business_days,
    metadata=PARTITION_METADATA,
    ins={
        "sales_history": dg.AssetIn(partition_mapping=window(SHADOW_DAYS - 1)),
        "sku_velocity": dg.AssetIn(),
    },
    group_name="slotting",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    description="Shadow mode: the last 30 days of real orders walked on the current slotting and on the slotting "
    "after the day's directives; travel per order, % reduction, saving per move, with the ABC Pareto and heat maps.",
)
def slotting_shadow_report(
    context: dg.AssetExecutionContext,
    slotting: SlottingResource,
    wms: WmsResource,
    state_store: OperationalStoreResource,
    sales_history: pl.DataFrame,
    sku_velocity: pl.DataFrame,
    slotting_directives: pl.DataFrame,
    wms_locations: pl.DataFrame,
) -> pl.DataFrame:
    day = partition_date(context)
    current, _ = assignment_at_start_of(day, wms, state_store)
    proposed = apply_directives(current, slotting_directives)
    orders = sales_history.filter(pl.col("txn_type") == "ORDER").select(
        pl.col("business_date").alias("order_date"), pl.col("txn_id").alias("order_id"), "sku_id"
    )
    # A line can be walked only where its SKU has a slot on both sides of the comparison.
    slotted_both = current.join(proposed, on="sku_id", how="semi").select("sku_id")
    walkable = orders.join(slotted_both, on="sku_id", how="semi")
    layout = Layout.from_locations(wms_locations)
    routing = slotting.routing
    result = compare(walkable, current, proposed, wms_locations, layout, routing)
    report = (
        result.per_order.join(walkable.select("order_id", "order_date").unique("order_id"), on="order_id", how="left")
        .with_columns(pl.lit(day).alias("business_date"))
        .rename({"before_m": "travel_current_m", "after_m": "travel_after_m"})
        .select(list(SHADOW_REPORT_SCHEMA))
        .cast(SHADOW_REPORT_SCHEMA)
        .sort("order_date", "order_id")
    )
    moves = slotting_directives.height
    saved_per_day = (result.before_m - result.after_m) / SHADOW_DAYS
    located = wms_locations.select("location_id", "aisle", "bay")
    picks = {
        name: walkable.join(assignment, on="sku_id").join(located, on="location_id")
        for name, assignment in (("current", current), ("after", proposed))
    }
    context.add_output_metadata(
        {
            "dagster/row_count": report.height,
            "orders": result.orders,
            "pick_lines": result.pick_lines,
            "lines_without_a_slot": orders.height - walkable.height,
            "routing": routing,
            "travel_current_m": round(result.before_m, 1),
            "travel_after_m": round(result.after_m, 1),
            "travel_per_order_current_m": round(result.before_m / result.orders, 2) if result.orders else 0.0,
            "travel_per_order_after_m": round(result.after_m / result.orders, 2) if result.orders else 0.0,
            "travel_reduction_pct": round(result.reduction_pct, 3),
            "moves": moves,
            "saving_m_per_day": round(saved_per_day, 2),
            "saving_m_per_day_per_move": round(saved_per_day / moves, 3) if moves else 0.0,
            "expected_saving_m_per_day": round(float(slotting_directives["expected_saving_m_per_day"].sum()), 2),
            "abc_pareto": dg.MetadataValue.md(
                markdown_image(abc_pareto(sku_velocity.filter(pl.col("business_date") == day)), "ABC Pareto curve")
            ),
            "location_heat_map": dg.MetadataValue.md(
                markdown_image(
                    heat_maps(picks["current"], picks["after"], layout.aisles, layout.bays_per_side),
                    "pick lines per location before and after",
                )
            ),
        }
    )
    return report
