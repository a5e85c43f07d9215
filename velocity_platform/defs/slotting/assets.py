"""Slotting directives for the business date, and the shadow report of what they save.

Directives rank SKUs by pick frequency and locations by travel cost under the warehouse's
routing; the shadow report replays the last 30 days of real orders on the slotting before and
after the day's directives.
"""


import datetime as dt
from dataclasses import dataclass

import dagster as dg
import polars as pl

from velocity_platform.connectors.state import moves_sent_from
from velocity_platform.connectors.wms_pages import read_assignment_page
from velocity_platform.defs.daily import FIRST, SUM, DailyIn, Day, daily_asset
from velocity_platform.defs.partitions import DateVerdict, SiteDay, site_day_of
from velocity_platform.defs.resources import (
    OperationalStoreResource,
    SlottingResource,
    WarehouseResource,
    WmsResource,
)
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.defs.wms.assets import latest_snapshot
from velocity_platform.defs.slotting.plots import abc_pareto, cumulative_net_labor, heat_maps, markdown_image
from velocity_platform.domain.faces import faces, faces_short_of_a_day, replenishment_trips
from velocity_platform.domain.shadow import (
    Comparison,
    apply_directives,
    compare,
    sample_orders,
    walked_savings,
    with_order_hash,
)
from velocity_platform.domain.slotting import (
    MOVE_SCHEMA,
    SlottingConfig,
    capacity_violations,
    plan_day_after_day,
    ranked_locations,
    rewind_assignment,
)
from velocity_platform.domain.network import with_site_directive_ids
from velocity_platform.domain.travel import Layout

CAPACITY_CHECK = "location_capacity_respected"

_MOVE_SCHEMA = MOVE_SCHEMA
# Days of orders the walking cost of a location is measured on (the day and the two before it,
# so a quiet Sunday still has orders to walk).
WALK_COST_DAYS = 3


def assignment_at_start_of(day: dt.date, wms: WmsResource, state_store: OperationalStoreResource) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(assignment at the start of `day`, moves applied since day - hysteresis window)."""
    with wms.client() as client:
        current = pl.concat(client.assignments(reader=read_assignment_page, warehouse_id=wms.warehouse_id))
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


def _first_violations(values: list) -> dg.MarkdownMetadataValue:
    lines = [line for value in values for line in _plain_md(value).splitlines() if line != "none"]
    return dg.MetadataValue.md("\n".join(lines[:10]) or "none")


def _plain_md(value) -> str:
    return value.value if isinstance(value, dg.MarkdownMetadataValue) else str(value)


PLANNED_ON_TABLES = ["sku_velocity", "sales_history", "wms_locations", "sku_master"]


@daily_asset(
    group="slotting",
    ranged=True,  # each date is planned on the slotting the previous date's moves leave
    ins={
        "sku_velocity": DailyIn(),
        # the orders a walk needs, of the day and the two before it
        "sales_history": DailyIn(WALK_COST_DAYS - 1, ["business_date", "txn_id", "txn_type", "sku_id"]),
    },
    merge={
        "relocations": SUM,
        "new_skus_slotted": SUM,
        "expected_saving_m_per_day": SUM,
        "expected_net_saving_h": SUM,
        "relocation_hours": SUM,
        "skus_slotted_at_start": FIRST,
    },
    check_specs=[
        dg.AssetCheckSpec(
            CAPACITY_CHECK,
            asset="slotting_directives",
            blocking=True,
            description="No directive targets an occupied location, the same location twice, or one a case cannot fit.",
        )
    ],
    check_merge={CAPACITY_CHECK: {"violations": SUM, "first_violations": _first_violations}},
    description="Moves for the day that pay for their labor: SKUs ranked by a spike-proof pick rate into locations "
    "ranked by travel cost, confirmed on two disjoint windows, each relocation repaid by the walking it saves within "
    "the payback horizon; new SKUs slotted; best net value first, the budget a cap.",
)
def slotting_directives(
    context: dg.AssetExecutionContext,
    days: list[dt.date],
    warehouse: WarehouseResource,
    slotting: SlottingResource,
    wms: WmsResource,
    state_store: OperationalStoreResource,
    sku_velocity: pl.DataFrame,
    sales_history: pl.DataFrame,
    wms_locations: pl.DataFrame,
    sku_master: pl.DataFrame,
    warehouse_tables: WarehouseTables,
):
    wms_locations = latest_snapshot(wms_locations)
    start, earlier_moves = assignment_at_start_of(days[0], wms, state_store)
    # The lake's versions of what the moves are planned on: `delta_scan(..., version => N)` (or
    # DeltaTable(..., version=N)) shows the velocity a directive batch came from, after vacuums too
    # (the maintenance job keeps the versions of its retention window).
    planned_on = {table: version for table, version in warehouse_tables.versions(PLANNED_ON_TABLES).items() if version is not None}
    config = SlottingConfig(
        move_budget=warehouse.move_budget,
        hysteresis_days=warehouse.hysteresis_days,
        routing=slotting.routing,
        band_locations=slotting.band_locations,
        labor=slotting.labor,
        price_on=slotting.price_on,
    )
    velocity_of, orders_of = DailyIn(), DailyIn(WALK_COST_DAYS - 1)
    orders = sales_history.filter(pl.col("txn_type") == "ORDER").select(
        "business_date", pl.col("txn_id").alias("order_id"), "sku_id"
    )
    labor = config.labor
    # The one planning loop (also evaluate's): a backfill's range is planned as its nights
    # would have been, each on the slotting the previous night's moves leave.
    plans = plan_day_after_day(
        days,
        lambda day: velocity_of.cut(sku_velocity, day, single=False),
        wms_locations,
        start,
        sku_master,
        earlier_moves,
        lambda day: orders_of.cut(orders, day, single=False),
        config,
    )
    for day, plan in zip(days, plans, strict=True):
        directives = with_site_directive_ids(plan.directives, warehouse.warehouse_id)
        violations = capacity_violations(directives, wms_locations, plan.assignment, sku_master)
        relocations = int(directives["relocations"].sum())
        figures = {
            "move_budget": warehouse.move_budget,
            "relocations": relocations,
            "new_skus_slotted": directives.filter(pl.col("from_location").is_null()).height,
            "expected_saving_m_per_day": round(float(directives["expected_saving_m_per_day"].sum()), 1),
            "expected_net_saving_h": round(float(directives["net_saving_h"].sum()), 2),
            "relocation_hours": round(labor.relocation_hours(relocations), 2),
            # a range shows its latest date's median
            "median_payback_days": round(float(directives.filter(pl.col("relocations") > 0)["payback_days"].median() or 0.0), 1),
            "payback_horizon_days": labor.payback_horizon_days,
            "move_minutes": labor.move_minutes,
            "walk_speed_m_s": labor.walk_speed_m_s,
            "routing": slotting.routing,
            "skus_slotted_at_start": start.height,
        }
        if planned_on:
            figures["planned_on_table_versions"] = dg.MetadataValue.json(planned_on)
        check = DateVerdict(
            violations.is_empty(),
            {
                "violations": violations.height,
                "first_violations": dg.MetadataValue.md(
                    "\n".join(
                        f"- {r['directive_id']} -> {r['to_location']}: {r['problem']}" for r in violations.head(10).iter_rows(named=True)
                    )
                    or "none"
                ),
            },
        )
        yield day, Day(directives, figures, {CAPACITY_CHECK: check})


SHADOW_DAYS = 30

SHADOW_REPORT_SCHEMA = {
    "business_date": pl.Date,  # the day whose directives are judged
    "order_date": pl.Date,
    "order_id": pl.String,
    "pick_lines": pl.Int64,
    "travel_current_m": pl.Float64,
    "travel_after_m": pl.Float64,
}


@daily_asset(
    group="slotting",
    ranged=True,  # each date is walked on the slotting the previous date's moves leave
    ins={
        # the orders a walk needs, of the 30 days up to the date
        "sales_history": DailyIn(SHADOW_DAYS - 1, ["business_date", "txn_id", "txn_type", "sku_id", "quantity_eaches"]),
        "sku_velocity": DailyIn(),
        # the day's moves, and those of the 30 days before for what they realised since
        "slotting_directives": DailyIn(SHADOW_DAYS - 1),
    },
    description="Slotting report: net labor of the day's directives (walking and handling saved over the payback "
    "horizon, less relocation time; hours and % of walking, cumulative over the dates built, plotted), then "
    "replenishment hours, the golden-zone pick share and the saving the last 30 days' moves were priced at against "
    "what they realised on the orders since. The table: the last 30 days of orders walked on the current slotting "
    "and after the day's directives.",
)
def slotting_shadow_report(
    context: dg.AssetExecutionContext,
    days: list[dt.date],
    slotting: SlottingResource,
    wms: WmsResource,
    state_store: OperationalStoreResource,
    sales_history: pl.DataFrame,
    sku_velocity: pl.DataFrame,
    slotting_directives: pl.DataFrame,
    wms_locations: pl.DataFrame,
    sku_master: pl.DataFrame,
    warehouse_id: str,
):
    wms_locations = latest_snapshot(wms_locations)
    layout = Layout.from_locations(wms_locations)
    orders = with_order_hash(
        sales_history.filter(pl.col("txn_type") == "ORDER").select(
            "business_date", pl.col("txn_id").alias("order_id"), "sku_id"
        )
    )
    orders_per_date = dict(orders.group_by("business_date").agg(pl.col("order_id").n_unique()).iter_rows())
    in_window = {
        day: sum(orders_per_date.get(day - dt.timedelta(days=n), 0) for n in range(SHADOW_DAYS)) for day in days
    }
    # Every day's sample is drawn from the orders under the widest day's threshold: one pass over
    # the range's lines, then each day filters a small frame.
    all_orders, orders = orders, sample_orders(orders, SHADOW_MAX_ORDERS, min(in_window.values()))
    current, _ = assignment_at_start_of(days[0], wms, state_store)
    reports, replay, start_of_last = [], None, current
    for day in days:  # a backfill's range: each day on the slotting the previous day's moves left
        moves = slotting_directives.filter(pl.col("business_date") == day)
        orders_in_window = in_window[day]
        replay = replay_day(
            day,
            orders,
            orders_in_window,
            current,
            moves,
            wms_locations,
            layout,
            slotting.routing,
            count_unslotted_in=all_orders if day == days[-1] else None,
        )
        reports.append(replay.report)
        start_of_last, current = current, replay.proposed
    last = days[-1]
    moves = slotting_directives.filter(pl.col("business_date") == last)
    result = replay.comparison
    # The walk of the sample scaled to every order of the window, per day.
    scale = replay.orders_in_window / result.orders if result.orders else 0.0
    saved_per_day = (result.before_m - result.after_m) * scale / SHADOW_DAYS
    labor = slotting.labor
    relocations = int(moves["relocations"].sum())
    saved_h_per_day = labor.walk_hours(saved_per_day)
    relocation_h = labor.relocation_hours(relocations)
    rack = rack_figures(
        last, replay, start_of_last, orders, all_orders, sales_history, sku_velocity, slotting_directives, wms_locations,
        sku_master, layout, SlottingConfig(routing=slotting.routing, labor=labor), scale,
    )
    net_labor_h = (saved_h_per_day + rack["handling_saved_h_per_day"]) * labor.payback_horizon_days - relocation_h
    walking_h = labor.walk_hours(result.before_m * scale / SHADOW_DAYS) * labor.payback_horizon_days
    history = _net_labor_by_date(context, warehouse_id, {last: net_labor_h})
    # The figures and pictures are the last date's: a range shows one set of them. Net labor
    # leads (it is what the directives are for), then the rack's labor, then the walk itself.
    figures = {
        "net_labor_h": round(net_labor_h, 2),
        "net_labor_pct_of_walking": round(100.0 * net_labor_h / walking_h, 3) if walking_h else 0.0,
        "net_labor_cumulative_h": round(sum(history.values()), 2),
        "net_labor_plot": dg.MetadataValue.md(markdown_image(cumulative_net_labor(history), "cumulative net labor hours")),
        "replenishment_h_per_day": rack["replenishment_h_per_day"],
        "replenishments_per_day": rack["replenishments_per_day"],
        "skus_face_below_a_day": rack["skus_face_below_a_day"],
        "golden_zone_pick_share": rack["golden_zone_pick_share"],
        "golden_zone_a_pick_share": rack["golden_zone_a_pick_share"],
        "priced_saving_h_30d": rack["priced_saving_h_30d"],
        "realised_saving_h_30d": rack["realised_saving_h_30d"],
        "relocations": relocations,
        "relocation_hours": round(relocation_h, 2),
        "travel_saved_h_per_day": round(saved_h_per_day, 3),
        "handling_saved_h_per_day": round(rack["handling_saved_h_per_day"], 3),
        "payback_days": round(relocation_h / saved_h_per_day, 1) if relocations and saved_h_per_day > 0 else None,
        "payback_horizon_days": labor.payback_horizon_days,
        **({"figures_for": str(last)} if len(days) > 1 else {}),
        "orders": result.orders,
        "orders_in_window": replay.orders_in_window,
        "pick_lines": result.pick_lines,
        "lines_without_a_slot": replay.lines_without_a_slot,
        "routing": slotting.routing,
        "travel_current_m": round(result.before_m, 1),
        "travel_after_m": round(result.after_m, 1),
        "travel_per_order_current_m": round(result.before_m / result.orders, 2) if result.orders else 0.0,
        "travel_per_order_after_m": round(result.after_m / result.orders, 2) if result.orders else 0.0,
        "travel_reduction_pct": round(result.reduction_pct, 3),
        "moves": moves.height,
        "saving_m_per_day": round(saved_per_day, 2),
        "saving_m_per_day_per_move": round(saved_per_day / moves.height, 3) if moves.height else 0.0,
        "travel_saved_m_per_day": round(saved_per_day, 1),
        "expected_saving_m_per_day": round(float(moves["expected_saving_m_per_day"].sum()), 2),
        # Pictures of the last date only: a backfill's range shares one set of metadata.
        "abc_pareto": dg.MetadataValue.md(
            markdown_image(abc_pareto(sku_velocity.filter(pl.col("business_date") == last)), "ABC Pareto curve")
        ),
        "location_heat_map": dg.MetadataValue.md(
            markdown_image(
                heat_maps(replay.picks["current"], replay.picks["after"], layout.aisles, layout.bays_per_side),
                "pick lines per location before and after",
            )
        ),
    }
    for day, day_report in zip(days, reports, strict=True):
        yield day, Day(day_report, figures if day == last else {})


def rack_figures(
    day: dt.date,
    replay: "DayReplay",
    start_of_day: pl.DataFrame,
    sampled: pl.DataFrame,
    all_orders: pl.DataFrame,
    sales_history: pl.DataFrame,
    sku_velocity: pl.DataFrame,
    directives: pl.DataFrame,
    locations: pl.DataFrame,
    sku_master: pl.DataFrame,
    layout: Layout,
    config: SlottingConfig,
    scale: float,
) -> dict:
    """The rack's labor on `day`: handling by level saved per day, replenishment after the
    day's directives, the golden-zone pick shares, and the saving the relocations of the 30
    days before were priced at against what they realised on the orders since."""
    labor = config.labor
    placed = ranked_locations(locations, config).select("location_id", "handling_m").join(
        locations.select("location_id", "aisle", "bay", "capacity_ft3"), on="location_id"
    )
    handled = {name: picks.join(placed.select("location_id", "handling_m"), on="location_id") for name, picks in replay.picks.items()}
    handling_saved_m = float(handled["current"]["handling_m"].sum() - handled["after"]["handling_m"].sum()) * scale / SHADOW_DAYS
    after = handled["after"]
    a_skus = sku_velocity.filter((pl.col("business_date") == day) & (pl.col("abc_class") == "A")).select("sku_id")
    a_lines = after.join(a_skus, on="sku_id", how="semi")
    golden = pl.col("handling_m") == 0.0
    in_window = pl.col("business_date").is_between(day - dt.timedelta(days=SHADOW_DAYS - 1), day)
    units = (
        sales_history.filter((pl.col("txn_type") == "ORDER") & in_window)
        .group_by("sku_id")
        .agg((pl.col("quantity_eaches").sum() / SHADOW_DAYS).alias("units_per_day"))
    )
    faces_after = faces(replay.proposed, placed, sku_master)
    trips = float(replenishment_trips(units.rename({"units_per_day": "units"}), faces_after)["trips"].sum())
    # The relocations of the 30 days before `day`, each day's orders walked on the slotting of
    # that day (today's start, the later moves taken back).
    relocated = directives.filter(pl.col("from_location").is_not_null() & (pl.col("business_date") < day))
    priced_m = realised_m = 0.0
    lines = sampled.filter(in_window & (pl.col("business_date") < day))
    for order_day in sorted(set(relocated["business_date"].to_list())):
        priced_m += float(relocated.filter(pl.col("business_date") == order_day)["expected_saving_m_per_day"].sum()) * (day - order_day).days
    for (order_day,), today in lines.partition_by("business_date", as_dict=True).items():
        earlier = relocated.filter(pl.col("business_date").is_between(order_day - dt.timedelta(days=SHADOW_DAYS), order_day - dt.timedelta(days=1)))
        if earlier.is_empty():
            continue
        slotting_then = rewind_assignment(start_of_day, relocated.filter(pl.col("business_date") >= order_day).select(list(MOVE_SCHEMA)))
        walkable = today.join(slotting_then, on="sku_id", how="semi")
        saved = walked_savings(walkable, slotting_then, earlier.select(list(MOVE_SCHEMA)), placed, layout, config.routing)
        realised_m += float(saved["saved_m"].sum()) if saved.height else 0.0
    return {
        "handling_saved_h_per_day": labor.walk_hours(handling_saved_m),
        "replenishments_per_day": round(trips, 1),
        "replenishment_h_per_day": round(labor.replenish_hours(trips), 2),
        "skus_face_below_a_day": faces_short_of_a_day(units, faces_after).height,
        "golden_zone_pick_share": round(after.select(golden.mean()).item(), 4) if after.height else None,
        "golden_zone_a_pick_share": round(a_lines.select(golden.mean()).item(), 4) if a_lines.height else None,
        "priced_saving_h_30d": round(labor.walk_hours(priced_m), 2),
        # the sample scaled to every order of those days
        "realised_saving_h_30d": round(labor.walk_hours(realised_m * scale), 2),
    }


def recorded_net_labor(instance: dg.DagsterInstance) -> dict[SiteDay, float]:
    """The net labor hours every shadow report recorded, by site-day: the latest of each (the
    report's metadata is where the figure lives; the network roll-up reads it too)."""
    records = instance.fetch_materializations(dg.AssetKey("slotting_shadow_report"), limit=5000).records
    by_site_day: dict[SiteDay, float] = {}
    for record in reversed(records):  # oldest first, so the latest of a site-day wins
        event = record.asset_materialization
        value = event.metadata.get("net_labor_h") if event else None
        if event and event.partition and value is not None:
            by_site_day[site_day_of(event.partition)] = float(value.value)
    return by_site_day


def _net_labor_by_date(context: dg.AssetExecutionContext, warehouse_id: str, today: dict[dt.date, float]) -> dict[dt.date, float]:
    """The site's net labor hours of every date built so far, with `today`'s figures in place of earlier ones."""
    recorded = recorded_net_labor(context.instance)
    return {**{sd.business_date: h for sd, h in recorded.items() if sd.warehouse_id == warehouse_id}, **today}


# Orders replayed per day, about, at most: a deterministic sample (by order id) above this keeps
# the report to a second on a million-line day; the reduction is a ratio of paired walks, so a
# sample this size measures it to a small fraction of a percent.
SHADOW_MAX_ORDERS = 100_000


@dataclass(frozen=True)
class DayReplay:
    report: pl.DataFrame
    comparison: Comparison
    proposed: pl.DataFrame  # the slotting after the day's moves
    picks: dict[str, pl.DataFrame]
    orders_in_window: int
    lines_without_a_slot: int


def replay_day(
    day: dt.date,
    orders: pl.DataFrame,
    orders_in_window: int,
    current: pl.DataFrame,
    moves: pl.DataFrame,
    locations: pl.DataFrame,
    layout: Layout,
    routing: str,
    count_unslotted_in: pl.DataFrame | None = None,
) -> DayReplay:
    """The 30 days of orders up to `day` (a sample of them on a large warehouse) walked on
    `current` and on `current` after `moves`."""
    proposed = apply_directives(current, moves)
    in_window = pl.col("business_date").is_between(day - dt.timedelta(days=SHADOW_DAYS - 1), day)
    sampled = sample_orders(orders.filter(in_window), SHADOW_MAX_ORDERS, orders_in_window).rename(
        {"business_date": "order_date"}
    )
    # A line can be walked only where its SKU has a slot on both sides of the comparison.
    slotted_both = current.join(proposed, on="sku_id", how="semi").select("sku_id")
    replayed = sampled.join(slotted_both, on="sku_id", how="semi")
    result = compare(replayed, current, proposed, locations, layout, routing)
    report = (
        result.per_order.join(replayed.select("order_id", "order_date").unique("order_id"), on="order_id", how="left")
        .with_columns(pl.lit(day).alias("business_date"))
        .rename({"before_m": "travel_current_m", "after_m": "travel_after_m"})
        .select(list(SHADOW_REPORT_SCHEMA))
        .cast(SHADOW_REPORT_SCHEMA)
        .sort("order_date", "order_id")
    )
    located = locations.select("location_id", "aisle", "bay")
    picks = {
        name: replayed.join(assignment, on="sku_id").join(located, on="location_id")
        for name, assignment in (("current", current), ("after", proposed))
    }
    # Lines of the window (all of them, not the sample) whose SKU has no slot on one side.
    unslotted = (
        count_unslotted_in.filter(in_window).join(slotted_both, on="sku_id", how="anti").height
        if count_unslotted_in is not None
        else 0
    )
    return DayReplay(report, result, proposed, picks, orders_in_window, unslotted)
