"""Signals on the velocity classes: a Pareto shape gone odd, a SKU's velocity jumping in a day."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import (
    DUCKDB_POOL,
    DateVerdict,
    business_days,
    partition_dates,
    record_per_date,
    window,
)
from velocity_platform.defs.resources import OperationsResource
from velocity_platform.domain.signals import EXPECTED_SKU_SHARE, day_on_day_changes, pareto_shape

PARETO_CHECK = "class_shares_follow_pareto"
DAY_ON_DAY_CHECK = "velocity_change_within_factor"
VELOCITY_WINDOW = 30


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


@dg.asset_check(
    asset="sku_velocity",
    name=PARETO_CHECK,
    partitions_def=business_days,
    pool=DUCKDB_POOL,
    description="Each ABC class's share of SKUs sits near the expected Pareto shape (A 20%, B 30%, C 50%).",
)
def class_shares_follow_pareto(
    context: dg.AssetCheckExecutionContext, operations: OperationsResource, sku_velocity: pl.DataFrame
) -> dg.AssetCheckResult:
    days = partition_dates(context)  # a backfill's range: every date judged, the worst one shown
    shapes = {day: pareto_shape(sku_velocity.filter(pl.col("business_date") == day), operations.pareto_tolerance) for day in days}
    dates_off = [day for day, shape in shapes.items() if not shape["within"].all()]
    record_per_date(
        context,
        "sku_velocity",
        PARETO_CHECK,
        {
            day: DateVerdict(
                bool(shape["within"].all()),
                {f"{r['abc_class']}_sku_share": dg.MetadataValue.float(r["sku_share"]) for r in shape.iter_rows(named=True)},
                None if shape["within"].all() else "class shares off the Pareto shape: see the run's result for the figures",
                dg.AssetCheckSeverity.WARN,
            )
            for day, shape in shapes.items()
        },
    )
    shown = dates_off[-1] if dates_off else days[-1]
    shape = shapes[shown]
    off = shape.filter(~pl.col("within"))
    by_class = {row["abc_class"]: row for row in shape.iter_rows(named=True)}
    return dg.AssetCheckResult(
        passed=off.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **{f"{c}_sku_share": dg.MetadataValue.float(by_class[c]["sku_share"]) for c in by_class},
            **{f"{c}_units_share": dg.MetadataValue.float(by_class[c]["units_share"]) for c in by_class},
            "expected_sku_share": EXPECTED_SKU_SHARE,
            "tolerance": dg.MetadataValue.float(operations.pareto_tolerance),
            "skus": int(shape["skus"].sum()),
            "shares": dg.MetadataValue.md(_md_table(shape.drop("within"))),
            **({"shown_for": str(shown), "dates_off_shape": len(dates_off)} if len(days) > 1 else {}),
        },
        description=None
        if off.is_empty()
        else (f"{shown} (one of {len(dates_off)} dates off shape): " if len(days) > 1 else "")
        + "; ".join(
            f"class {r['abc_class']} holds {r['sku_share']:.1%} of SKUs (expected {r['expected_sku_share']:.0%} "
            f"± {operations.pareto_tolerance:.0%})"
            for r in off.iter_rows(named=True)
        )
        + ". Check daily_sku_demand for unconverted units of measure or one giant line before trusting the moves.",
    )


@dg.asset_check(
    asset="sku_velocity",
    name=DAY_ON_DAY_CHECK,
    partitions_def=business_days,
    pool=DUCKDB_POOL,
    # D-30..D of daily demand: the day that entered the 30-day window and the one that left it.
    additional_ins={"daily_sku_demand": dg.AssetIn(partition_mapping=window(VELOCITY_WINDOW))},
    description="No SKU's 30-day velocity changes by more than the configured factor from one day to the next.",
)
def velocity_change_within_factor(
    context: dg.AssetCheckExecutionContext,
    operations: OperationsResource,
    sku_velocity: pl.DataFrame,
    daily_sku_demand: pl.DataFrame,
) -> dg.AssetCheckResult:
    days = partition_dates(context)
    found = [
        day_on_day_changes(
            sku_velocity.filter(pl.col("business_date") == day),
            daily_sku_demand,
            day,
            operations.day_on_day_factor,
            operations.day_on_day_min_units,
            VELOCITY_WINDOW,
        )
        for day in days
    ]
    record_per_date(
        context,
        "sku_velocity",
        DAY_ON_DAY_CHECK,
        {
            day: DateVerdict(
                frame.is_empty(),
                {"skus_compared": n, "skus_changed": frame.height},
                None if frame.is_empty() else f"{frame.height:,} SKUs' 30-day units changed by more than "
                f"{operations.day_on_day_factor:g}x since {day - dt.timedelta(days=1)} (first: {frame['sku_id'][0]})",
                dg.AssetCheckSeverity.WARN,
            )
            for day, (frame, n) in zip(days, found, strict=True)
        },
    )
    changed = pl.concat([frame for frame, _ in found], how="diagonal_relaxed")
    compared = sum(n for _, n in found)
    day = days[-1]
    return dg.AssetCheckResult(
        passed=changed.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "skus_compared": compared,
            "skus_changed": changed.height,
            "factor": dg.MetadataValue.float(operations.day_on_day_factor),
            "min_units_30d": dg.MetadataValue.float(operations.day_on_day_min_units),
            "largest_changes": dg.MetadataValue.md(_md_table(changed)),
        },
        description=None
        if changed.is_empty()
        else f"{changed.height:,} SKUs' 30-day units changed by more than {operations.day_on_day_factor:g}x "
        + (f"since {day - dt.timedelta(days=1)}" if len(days) == 1 else f"from one day to the next in {days[0]} .. {day}")
        + f" (first: {changed['sku_id'][0]}); look for a bulk order or a unit-of-measure "
        "error in that SKU's lines before its move is trusted.",
    )
