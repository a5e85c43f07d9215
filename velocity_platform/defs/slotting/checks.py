"""Signals on the day's moves: no SKU moved again inside the hysteresis window (thrash), and moves that
pay for their labor without undoing a recent relocation."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.connectors.state import moves_sent_from
from velocity_platform.defs.daily import SUM, daily_check
from velocity_platform.defs.partitions import DUCKDB_POOL, DateVerdict
from velocity_platform.defs.wms.assets import latest_snapshot
from velocity_platform.defs.resources import OperationalStoreResource, SlottingResource, WarehouseResource
from velocity_platform.domain.signals import thrash
from velocity_platform.domain.slotting import MOVE_SCHEMA, REVERSAL_GUARD_DAYS, reversing_relocations

THRASH_CHECK = "no_thrash_within_hysteresis"


def _listed(values: list) -> dg.MarkdownMetadataValue:
    """The first lines of several dates' markdown lists."""
    lines = [line for v in values for line in v.value.splitlines() if line != "none"]
    return dg.MetadataValue.md("\n".join(lines[:15]) or "none")


@daily_check(
    asset="slotting_directives",
    name=THRASH_CHECK,
    pool=DUCKDB_POOL,
    merge={"directives": SUM, "thrashing_directives": SUM, "first_thrashing": _listed},
    description="No directive moves a SKU the WMS already moved inside the hysteresis window, nor one SKU twice.",
)
def no_thrash_within_hysteresis(
    context: dg.AssetCheckExecutionContext,
    days: list[dt.date],
    warehouse: WarehouseResource,
    state_store: OperationalStoreResource,
    slotting_directives: pl.DataFrame,
) -> dict[dt.date, DateVerdict]:
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
    verdicts = {}
    for day in days:
        todays = slotting_directives.filter(pl.col("business_date") == day)
        found = thrash(todays, applied.filter(pl.col("business_date") < day), day, window_days)
        listing = "\n".join(f"- {r['sku_id']} ({r['directive_id']}): {r['problem']}" for r in found.head(15).iter_rows(named=True))
        verdicts[day] = DateVerdict(
            found.is_empty(),
            {
                "directives": todays.height,
                "thrashing_directives": found.height,
                "hysteresis_days": window_days,
                "moves_in_window": applied.filter(pl.col("business_date") < day).height,
                "first_thrashing": dg.MetadataValue.md(listing or "none"),
            },
            None
            if found.is_empty()
            else f"{found.height} of the {todays.height} directives for {day} move a SKU again inside the {window_days}-day "
            f"hysteresis window (first: {found['sku_id'][0]}); the planner should have held them back: look at that SKU's "
            "recent directives and class history.",
            dg.AssetCheckSeverity.WARN,
        )
    return verdicts


NET_LABOR_CHECK = "moves_pay_for_their_labor"


@daily_check(
    asset="slotting_directives",
    name=NET_LABOR_CHECK,
    pool=DUCKDB_POOL,
    merge={"expected_net_saving_h": SUM, "relocations": SUM, "moves_back_within_30d": SUM},
    additional_ins={"wms_locations": dg.AssetIn("wms_locations")},
    description="The day's directives are worth more walking than their relocations cost, and none moves a SKU back "
    "within 30 days of an earlier relocation.",
)
def moves_pay_for_their_labor(
    context: dg.AssetCheckExecutionContext,
    days: list[dt.date],
    slotting: SlottingResource,
    state_store: OperationalStoreResource,
    slotting_directives: pl.DataFrame,
    wms_locations: pl.DataFrame,
) -> dict[dt.date, DateVerdict]:
    guard = REVERSAL_GUARD_DAYS
    earlier = pl.DataFrame(
        [
            {"business_date": m.business_date, "sku_id": m.sku_id, "from_location": m.from_location, "to_location": m.to_location}
            for m in moves_sent_from(state_store.store(), days[0] - dt.timedelta(days=guard))
            if m.business_date < days[0]
        ],
        schema=MOVE_SCHEMA,
    )
    moves = pl.concat([earlier, slotting_directives.select(list(MOVE_SCHEMA)).cast(MOVE_SCHEMA)])
    reversing = reversing_relocations(moves, latest_snapshot(wms_locations), slotting.routing, guard)
    verdicts = {}
    for day in days:
        # New SKUs' first slots are putaways that happen anyway: only relocations are judged.
        todays = slotting_directives.filter(pl.col("business_date") == day)
        relocating = todays.filter(pl.col("relocations") > 0)
        net_h = float(relocating["net_saving_h"].sum())
        undone = reversing.filter(pl.col("business_date") == day)
        problems = ([f"expected net value {net_h:.2f} h is negative"] if net_h < 0 else []) + (
            [f"{undone.height} directives move a SKU back within {guard} days (first: {undone['sku_id'][0]})"] if undone.height else []
        )
        verdicts[day] = DateVerdict(
            not problems,
            {
                "expected_net_saving_h": round(net_h, 2),
                "relocations": int(todays["relocations"].sum()),
                "moves_back_within_30d": undone.height,
            },
            None
            if not problems
            else f"{day}: " + "; ".join(problems) + ". The planner should only plan moves that repay their labor and never "
            "undo a recent relocation: look at those directives' reason and payback_days, and at the labor settings "
            "(VELOCITY_MOVE_MINUTES, VELOCITY_WALK_SPEED_M_S, VELOCITY_PAYBACK_HORIZON_DAYS).",
            dg.AssetCheckSeverity.WARN,
        )
    return verdicts
