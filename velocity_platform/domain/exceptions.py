"""The exceptions the resident delta service acts on, judged on a batch of validated lines.

- **A SKU ordered that has no pick location**: slot it now, in the cheapest free location of
  its expected band (``slotting.first_slot``, the nightly planner's own first-slot step). Its
  expected band is where its expected pick rate ranks among the SKUs with one (``sku_velocity``'s
  ``expected_pick_lines_per_day``); a SKU with no rate yet is ranked by the pick lines it got
  today, which puts a brand-new product with one order line with the slow movers, until the
  nightly run's two windows confirm it belongs further forward.
- **A SKU ordered today far beyond its own range**: an observation, nothing moves (stock moves
  only on changes confirmed over two windows, so one day's spike never causes thrash). The rule
  is `deltas.SpikePolicy`, measured on real order history (`deltas.outside_range`).
- **Lines for a business date before today**: kept for the delta sensor, which asks for the
  rebuild of the built dates that do not hold them.

Pure polars on small frames: no dagster, no httpx.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from velocity_platform.domain.slotting import directive_id_expr, first_slot

EXPECTED_RATES_SCHEMA = {"sku_id": pl.String, "expected_pick_lines_per_day": pl.Float64}


def expected_rates_sql(table: str) -> str:
    """The expected pick rates of the newest date of a sku_velocity table (DuckDB)."""
    return (
        f"SELECT sku_id, CAST(expected_pick_lines_per_day AS DOUBLE) AS expected_pick_lines_per_day FROM {table} "
        f"WHERE business_date = (SELECT max(business_date) FROM {table})"
    )


PICK_LINES_SCHEMA = {"sku_id": pl.String, "pick_lines": pl.UInt32, "first_committed_at": pl.Datetime("us", "UTC")}
_NO_DIRECTIVES = pl.DataFrame(
    schema={
        "directive_id": pl.String,
        "business_date": pl.Date,
        "sku_id": pl.String,
        "from_location": pl.String,
        "to_location": pl.String,
        "to_band": pl.Int64,
        "target_band": pl.Int64,
        "expected_pick_lines_per_day": pl.Float64,
        "reason": pl.String,
        "first_committed_at": PICK_LINES_SCHEMA["first_committed_at"],
    }
)


def pick_lines(valid: pl.DataFrame) -> pl.DataFrame:
    """Per SKU: the order lines of the batch (ORDER, quantity > 0) and the earliest commit time."""
    return (
        valid.filter((pl.col("txn_type") == "ORDER") & (pl.col("quantity") > 0))
        .group_by("sku_id")
        .agg(pl.len().cast(pl.UInt32).alias("pick_lines"), pl.col("created_at").min().alias("first_committed_at"))
        .sort("sku_id")
    )


def expected_bands(seekers: pl.DataFrame, velocity: pl.DataFrame, band_locations: int) -> pl.DataFrame:
    """`seekers` (sku_id, observed_rate) with rate, velocity_rank, target_band and min_rank (the
    first cost rank of the band), busiest first: what `first_slot` takes.

    The rate is the SKU's expected pick lines per day where ``velocity`` has it, else the rate
    observed today; its rank is one more than the number of SKUs in ``velocity`` expected to be
    picked more often (ties go the seeker's way).
    """
    known = velocity.select("sku_id", pl.col("expected_pick_lines_per_day").cast(pl.Float64)).drop_nulls()
    rates = known.filter(~pl.col("sku_id").is_in(seekers["sku_id"].implode()))["expected_pick_lines_per_day"].sort()
    with_rate = seekers.join(known, on="sku_id", how="left").with_columns(
        pl.coalesce("expected_pick_lines_per_day", pl.col("observed_rate").cast(pl.Float64)).alias("rate")
    )
    higher = rates.len() - rates.search_sorted(with_rate["rate"], side="right")
    ranked = with_rate.with_columns((higher.cast(pl.Int64) + 1).alias("velocity_rank")).sort(["velocity_rank", "sku_id"])
    band = (pl.col("velocity_rank") - 1) // band_locations
    return ranked.with_columns(band.alias("target_band"), (band * band_locations + 1).alias("min_rank"))


def first_slot_directives(
    business_date: dt.date, unslotted: pl.DataFrame, velocity: pl.DataFrame, free: pl.DataFrame, band_locations: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """First slots for `unslotted` (sku_id, pick_lines, first_committed_at): (directives, free slots left).

    `free` is `slotting.free_slots` of the location master; `band_locations` must be the band
    size it was banded with (the location count over `slotting.DEFAULT_BANDS`, rounded up).

    A directive: directive_id (the nightly planner's deterministic id), business_date, sku_id,
    from_location (null), to_location, to_band, target_band, expected_pick_lines_per_day, reason
    and first_committed_at (the ERP commit of the line that asked for it). A SKU for which no
    free location is left gets none (the caller counts it).
    """
    if unslotted.is_empty():  # the usual batch: nothing to place, the free slots as they were
        return _NO_DIRECTIVES, free
    seekers = expected_bands(unslotted.rename({"pick_lines": "observed_rate"}), velocity, band_locations)
    placed, left = first_slot(seekers, free)
    placed = placed.with_columns(pl.lit(None, pl.String).alias("from_location"))
    rate = pl.col("rate").round(2).cast(pl.String)
    directives = placed.select(
        directive_id_expr(business_date).alias("directive_id"),
        pl.lit(business_date).alias("business_date"),
        "sku_id",
        "from_location",
        "to_location",
        pl.col("to_band").cast(pl.Int64),
        pl.col("target_band").cast(pl.Int64),
        pl.col("rate").alias("expected_pick_lines_per_day"),
        (
            pl.lit("new SKU ordered without a pick location, slotted at once (putaway, no relocation): ")
            + rate
            + pl.lit(" pick lines/day expected, band ")
            + pl.col("target_band").cast(pl.String)
            + pl.lit(" -> slot in band ")
            + pl.col("to_band").cast(pl.String)
        ).alias("reason"),
        "first_committed_at",
    )
    return directives, left


def before(lines: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """Lines whose business date is before `today` (maybe late for a built date)."""
    return lines.filter(pl.col("business_date") < today)
