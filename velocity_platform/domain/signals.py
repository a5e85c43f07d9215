"""The figures behind the asset checks that are not computed inside an asset.

Gates decide whether a day may reach the WMS; signals (warnings) point at a day worth a look
without stopping it. Each function returns the figures the check shows in the UI; the check
itself only compares them with its threshold.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from velocity_platform.domain.contracts import ABC_CLASSES
from velocity_platform.domain.taxonomy import class_shares

# The Pareto shape a healthy pick face shows with the 0.80 / 0.95 ABC cut-offs: about a fifth of
# the SKUs carry four fifths of the units. A class far from its share means the demand feeding
# the classes is off (eaches not converted, a giant adjustment, a feed that lost most SKUs).
EXPECTED_SKU_SHARE = {"A": 0.20, "B": 0.30, "C": 0.50}


def ingestion_success_rate(lines_received: int, source_lines: int) -> float:
    """Share of the lines the source holds for a date that arrived as readable lines (1.0 if none)."""
    if lines_received < 0 or source_lines < 0:
        raise ValueError(f"line counts cannot be negative: received {lines_received}, source {source_lines}")
    return 1.0 if source_lines == 0 else lines_received / source_lines


def pareto_shape(
    velocity: pl.DataFrame, tolerance: float, expected: dict[str, float] = EXPECTED_SKU_SHARE
) -> pl.DataFrame:
    """Per ABC class: SKUs, share of SKUs and of 30-day units, the expected share and the deviation.

    `within` is False where the class's share of SKUs is more than `tolerance` from the expected.
    """
    shares = class_shares(velocity)
    return pl.DataFrame(
        {
            "abc_class": list(ABC_CLASSES),
            "skus": [shares[c]["skus"] for c in ABC_CLASSES],
            "sku_share": [shares[c]["sku_share"] for c in ABC_CLASSES],
            "units_share": [shares[c]["units_share"] for c in ABC_CLASSES],
            "expected_sku_share": [expected[c] for c in ABC_CLASSES],
        },
        schema={
            "abc_class": pl.String,
            "skus": pl.Int64,
            "sku_share": pl.Float64,
            "units_share": pl.Float64,
            "expected_sku_share": pl.Float64,
        },
    ).with_columns(
        (pl.col("sku_share") - pl.col("expected_sku_share")).alias("deviation"),
        ((pl.col("sku_share") - pl.col("expected_sku_share")).abs() <= tolerance).alias("within"),
    )


def thrash(directives: pl.DataFrame, earlier_moves: pl.DataFrame, day: dt.date, window_days: int) -> pl.DataFrame:
    """Directives of `day` for SKUs that already moved inside the hysteresis window, or twice today.

    `earlier_moves` is (business_date, sku_id) of moves the WMS applied; only those dated in
    [day - window_days, day - 1] count. Returns sku_id, directive_id, problem.
    """
    window_start = day - dt.timedelta(days=window_days)
    in_window = pl.col("business_date").is_between(pl.lit(window_start), pl.lit(day - dt.timedelta(days=1)))
    recent = (
        earlier_moves.filter(in_window)
        .group_by("sku_id")
        .agg(pl.col("business_date").max().alias("moved_on"))
    )
    today = directives.select("sku_id", "directive_id").with_columns(pl.len().over("sku_id").alias("times_today"))
    problem = (
        pl.when(pl.col("moved_on").is_not_null())
        .then(
            pl.lit("moved on ") + pl.col("moved_on").dt.to_string("%Y-%m-%d") + pl.lit(f", inside the {window_days}-day window")
        )
        .when(pl.col("times_today") > 1)
        .then(pl.lit("more than one directive today"))
    )
    return (
        today.join(recent, on="sku_id", how="left")
        .with_columns(problem.alias("problem"))
        .filter(pl.col("problem").is_not_null())
        .select("sku_id", "directive_id", "problem")
        .sort("sku_id", "directive_id")
    )


def day_on_day_changes(
    velocity: pl.DataFrame, demand: pl.DataFrame, day: dt.date, factor: float, min_units: float, window_days: int = 30
) -> tuple[pl.DataFrame, int]:
    """SKUs whose 30-day units changed by more than `factor` from D-1 to D, and how many were compared.

    Yesterday's window sum is today's minus day D's units plus day D-30's (the days that left and
    entered the window), from the daily demand of D-30..D. Only SKUs with a full window on both
    days are compared: during the first month of history every velocity grows by construction.
    A change from or to zero counts when the larger side reaches `min_units`.
    """
    if factor <= 1:
        raise ValueError(f"a day-on-day factor must exceed 1, got {factor}")
    entering = demand.filter(pl.col("business_date") == day).select("sku_id", pl.col("units").alias("_in"))
    leaving = demand.filter(pl.col("business_date") == day - dt.timedelta(days=window_days)).select(
        "sku_id", pl.col("units").alias("_out")
    )
    compared = (
        velocity.filter(pl.col("history_days") > window_days)
        .select("sku_id", pl.col("units_30d").alias("units_30d_today"))
        .join(entering, on="sku_id", how="left")
        .join(leaving, on="sku_id", how="left")
        .with_columns(
            (pl.col("units_30d_today") - pl.col("_in").fill_null(0.0) + pl.col("_out").fill_null(0.0))
            .clip(lower_bound=0.0)
            .alias("units_30d_yesterday")
        )
    )
    low = pl.min_horizontal("units_30d_today", "units_30d_yesterday")
    high = pl.max_horizontal("units_30d_today", "units_30d_yesterday")
    changed = (
        compared.with_columns(pl.when(low > 0).then(high / low).alias("change_factor"))
        .filter((high >= min_units) & (pl.col("change_factor").is_null() | (pl.col("change_factor") > factor)))
        .with_columns(
            pl.when(pl.col("units_30d_today") > pl.col("units_30d_yesterday"))
            .then(pl.lit("up"))
            .otherwise(pl.lit("down"))
            .alias("direction")
        )
        .select("sku_id", "units_30d_yesterday", "units_30d_today", "change_factor", "direction")
        .sort(pl.col("change_factor").fill_null(float("inf")), "sku_id", descending=[True, False])
    )
    return changed, compared.height


def batch_window(day: dt.date, timezone: str, start_hour: int, hours: float) -> tuple[dt.datetime, dt.datetime]:
    """The nightly batch window of business date `day`: from `start_hour` on the next day, `hours` long.

    Built on the wall clock of the warehouse, so a DST night still starts at 02:00 local.
    """
    start = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(start_hour), tzinfo=ZoneInfo(timezone))
    return start, start + dt.timedelta(hours=hours)
