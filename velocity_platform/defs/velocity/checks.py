"""Signals on the velocity classes, judged against what is normal for this warehouse: class
shares off the Pareto shape or jumping in a day, and velocity changes out of the ordinary."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.daily import daily_check
from velocity_platform.defs.partitions import DUCKDB_POOL, DateVerdict
from velocity_platform.defs.resources import OperationsResource
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.defs.velocity.assets import history_start
from velocity_platform.domain.signals import (
    EXPECTED_SKU_SHARE,
    ParetoVerdict,
    VelocityChangePolicy,
    VelocityChangeVerdict,
    change_window_sql,
    changed_sku_counts_from,
    judged_change_counts,
    pareto_verdict,
    usual_line_sizes_sql,
    velocity_change_verdict,
)

PARETO_CHECK = "class_shares_follow_pareto"
DAY_ON_DAY_CHECK = "velocity_change_within_factor"
VELOCITY_WINDOW = 30
BASELINE_DAYS = VelocityChangePolicy().baseline_days
# What the signals read of their inputs: a large day's lines carry many more columns.
DEMAND_COLUMNS = ["business_date", "sku_id", "units"]
LINE_COLUMNS = ["business_date", "sku_id", "txn_type", "quantity_eaches"]


def _md_table(frame: pl.DataFrame, limit: int = 15) -> str:
    if frame.is_empty():
        return "none"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = "\n".join(
        "| " + " | ".join(f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.head(limit).iter_rows()
    )
    more = f"\n\n… and {frame.height - limit:,} more" if frame.height > limit else ""
    return f"{head}\n{rows}{more}"


def _demand_between(warehouse_tables: WarehouseTables, first: dt.date, last: dt.date) -> pl.DataFrame:
    """Daily demand of first..last, read from the warehouse table.

    Not an additional input with a window partition mapping: Dagster 1.13 hands an asset check's
    additional input only the check's own partitions (the mapping is not applied), so a window
    of earlier days would silently be today alone.
    """
    return warehouse_tables.read("daily_sku_demand", first, last, columns=DEMAND_COLUMNS)


def _pareto_date(verdict: ParetoVerdict, day: dt.date, constants: dict) -> DateVerdict:
    if verdict.not_judged:
        return DateVerdict(True, {"not_judged": verdict.not_judged, **constants}, None, dg.AssetCheckSeverity.WARN)
    metadata = {f"{r['abc_class']}_sku_share": dg.MetadataValue.float(r["sku_share"]) for r in verdict.shape.iter_rows(named=True)}
    if verdict.largest_shift is not None:
        metadata["largest_shift"] = dg.MetadataValue.float(verdict.largest_shift)
    metadata.update({f"{r['abc_class']}_units_share": dg.MetadataValue.float(r["units_share"]) for r in verdict.shape.iter_rows(named=True)})
    metadata["skus"] = int(verdict.shape["skus"].sum())
    table = verdict.shape.drop("within")
    if verdict.shift is not None:
        table = table.join(verdict.shift.select("abc_class", "sku_share_yesterday", "shift"), on="abc_class")
    metadata["shares"] = dg.MetadataValue.md(_md_table(table))
    description = None
    if verdict.problems:
        description = (
            f"{day}: " + "; ".join(verdict.problems) + ". Check daily_sku_demand for unconverted units of measure "
            "or one giant line before trusting the moves."
        )
    return DateVerdict(verdict.passed, {**metadata, **constants}, description, dg.AssetCheckSeverity.WARN)


@daily_check(
    asset="sku_velocity",
    name=PARETO_CHECK,
    pool=DUCKDB_POOL,
    # D and D-30 of daily demand (yesterday's 30-day units, for yesterday's class shares), read
    # from the warehouse table (see _demand_between).
    additional_deps=["daily_sku_demand"],
    description="Each ABC class's share of SKUs sits near the Pareto shape (A 20%, B 30%, C 50%) and near "
    "yesterday's share; not judged before the warehouse has 30 days of history.",
)
def class_shares_follow_pareto(
    context: dg.AssetCheckExecutionContext,
    days: list[dt.date],  # a backfill's range: every date judged, the worst one shown
    warehouse_id: str,
    operations: OperationsResource,
    warehouse_tables: WarehouseTables,
    sku_velocity: pl.DataFrame,
) -> dict[dt.date, DateVerdict]:
    start = history_start(context, warehouse_id, days[0])
    daily_sku_demand = _demand_between(warehouse_tables, days[0] - dt.timedelta(days=VELOCITY_WINDOW), days[-1])
    found = {
        day: pareto_verdict(
            sku_velocity.filter(pl.col("business_date") == day),
            daily_sku_demand,
            day,
            (day - start).days + 1,
            operations.pareto_tolerance,
            operations.pareto_shift_max,
            VELOCITY_WINDOW,
        )
        for day in days
    }
    constants = {
        "expected_sku_share": EXPECTED_SKU_SHARE,
        "tolerance": dg.MetadataValue.float(operations.pareto_tolerance),
        "shift_max": dg.MetadataValue.float(operations.pareto_shift_max),
    }
    # Every date judged; a range's result shows its latest date off shape (see daily.range_result).
    return {day: _pareto_date(verdict, day, constants) for day, verdict in found.items()}


def _unusual_lines_today(
    warehouse_tables: WarehouseTables, lines_today: pl.DataFrame, day: dt.date, policy: VelocityChangePolicy
) -> pl.DataFrame:
    """The usual line of the SKUs with enough lines today, from the sales history stored before it."""
    busy = (
        lines_today.filter(pl.col("txn_type") == "ORDER")
        .group_by("sku_id")
        .len()
        .filter(pl.col("len") >= policy.min_lines_today)
        .select("sku_id")
    )
    if busy.is_empty():
        return pl.DataFrame(schema={"sku_id": pl.String, "usual_line_units": pl.Float64, "lines_before": pl.Int64})
    with warehouse_tables.session() as tables:
        return tables.query(
            "sales_history",
            lambda name: usual_line_sizes_sql(name, day, policy.line_days, "busy_skus"),
            frames={"busy_skus": busy},
        )


@daily_check(
    asset="sku_velocity",
    name=DAY_ON_DAY_CHECK,
    pool=DUCKDB_POOL,
    # The 30-day sums of D and the 28 days before it (the usual count), and the day's own lines.
    # The day's own lines come as an input; the demand of D-58..D is read from the warehouse
    # table (see _demand_between).
    additional_ins={"sales_history": dg.AssetIn(metadata={"columns": LINE_COLUMNS})},
    additional_deps=["daily_sku_demand"],
    description="The day's velocity changes are usual for this warehouse: no more SKUs change their 30-day units "
    "by more than 3x than on a normal day of the four weeks before, and no SKU has half or more of its order lines "
    "more than 12x (or under 1/12 of) its usual line -- the mark of an unconverted unit of measure.",
)
def velocity_change_within_factor(
    context: dg.AssetCheckExecutionContext,
    days: list[dt.date],
    warehouse_id: str,
    operations: OperationsResource,
    warehouse_tables: WarehouseTables,
    sales_history: pl.DataFrame,
) -> dict[dt.date, DateVerdict]:
    policy = VelocityChangePolicy(factor=operations.day_on_day_factor, min_units=operations.day_on_day_min_units)
    start = history_start(context, warehouse_id, days[0])
    first = days[0] - dt.timedelta(days=BASELINE_DAYS)
    # The window's daily rows per SKU from the table, counted in memory (domain/signals.py).
    with warehouse_tables.session() as tables:
        rows = tables.query("daily_sku_demand", lambda table: change_window_sql(table, first, days[-1], policy))
    changed = changed_sku_counts_from(rows, first, days[-1], policy)
    counts = judged_change_counts(changed, first, days[-1], start, policy)
    verdicts: dict[dt.date, VelocityChangeVerdict] = {}
    for day in days:
        today = sales_history.filter(pl.col("business_date") == day)
        usual = _unusual_lines_today(warehouse_tables, today, day, policy)
        verdicts[day] = velocity_change_verdict(day, (day - start).days + 1, counts, today, usual, policy)

    def figures(v: VelocityChangeVerdict) -> dict:
        return {
            **({"not_judged": v.not_judged} if v.not_judged else {}),
            **({"skus_changed": v.skus_changed} if v.skus_changed is not None else {}),
            **({"usual_limit": dg.MetadataValue.float(v.usual_limit)} if v.usual_limit is not None else {}),
            "skus_with_unusual_lines": v.unusual_lines.height,
        }

    def describe(day: dt.date, v: VelocityChangeVerdict) -> str | None:
        if v.passed:
            return None
        parts = []
        if v.count_off:
            parts.append(
                f"{v.skus_changed:,} SKUs' 30-day units changed by more than {policy.factor:g}x since "
                f"{day - dt.timedelta(days=1)}, above this warehouse's usual {v.usual_limit:,.1f}"
            )
        if not v.unusual_lines.is_empty():
            first = v.unusual_lines.row(0, named=True)
            parts.append(
                f"{v.unusual_lines.height} SKU(s) with most lines out of their usual size (first: {first['sku_id']}, "
                f"median line {first['median_line_today']:,.0f} vs usual {first['usual_line_units']:,.0f} eaches)"
            )
        return f"{day}: " + "; ".join(parts) + (
            ". Look for a unit of measure not converted (cases read as eaches, or the reverse) or a bulk load "
            "in those SKUs' lines before their moves are trusted."
        )

    constants = {
        "factor": dg.MetadataValue.float(policy.factor),
        "min_units_30d": dg.MetadataValue.float(policy.min_units),
        "line_factor": dg.MetadataValue.float(policy.line_factor),
    }
    # Every date judged; a range's result shows its latest failing date (see daily.range_result).
    return {
        day: DateVerdict(
            v.passed,
            {**figures(v), **constants, "unusual_lines": dg.MetadataValue.md(_md_table(v.unusual_lines))},
            describe(day, v),
            dg.AssetCheckSeverity.WARN,
        )
        for day, v in verdicts.items()
    }
