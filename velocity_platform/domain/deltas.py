"""What the ERP committed since the last look, in warehouse terms.

The exception service reads the ERP by commit time (`created_at`) and the delta sensor reads
the late lines it recorded; this module sorts them into the three things an operator acts on:

- late arrivals: lines for a business date whose partition is already built but which that
  partition does not hold (decided against the partition's own txn_ids, not by comparing clocks,
  so a record committed while the nightly pull was running is judged correctly either way);
- SKUs the SKU master does not know yet (only well-formed ids: a malformed id is a dead letter,
  not a new product);
- demand spikes: a SKU's units ordered today outside its own range (a multiple of its largest
  day of the last 90), judged by the exception service as the lines arrive.

Pure polars (and SQL builders for DuckDB): no per-row Python.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection

import polars as pl

from velocity_platform.domain.contracts import SKU_ID_PATTERN, TS
from velocity_platform.domain.policies import SpikePolicy

DELTA_LINES_SCHEMA = {
    "txn_id": pl.String,
    "txn_type": pl.String,
    "created_at": TS,
    "business_date": pl.Date,  # the event time's date in the warehouse time zone; null if unreadable
    "sku_id": pl.String,
    "quantity": pl.Float64,  # in the line's unit of measure; null if not a finite number
    "uom": pl.String,
}

LATE_ARRIVALS_SCHEMA = {
    "business_date": pl.Date,
    "documents": pl.UInt32,
    "lines": pl.UInt32,
    "first_committed_at": TS,
    "last_committed_at": TS,
    "fingerprint": pl.String,  # digest of the late txn_ids: the same records give the same run key
}

SPIKES_SCHEMA = {
    "sku_id": pl.String,
    "units": pl.Float64,  # eaches ordered (the exception service: so far today)
    "peak_day_units": pl.Float64,  # the SKU's largest day of demand in the days before (its normal range)
    "multiple_of_peak_day": pl.Float64,
}

# How far back a SKU's normal range of daily demand reaches.
SPIKE_BASELINE_DAYS = 90


def spike_baseline_sql(table: str, through: dt.date | None = None, days: int = SPIKE_BASELINE_DAYS) -> str:
    """Per SKU over the `days` days ending `through` (the table's latest date when None): the
    largest day of demand and the days sold, from a daily demand table (DuckDB). Dates are
    literals built from a date, never user text."""
    if through is None:
        last = f"(SELECT max(business_date) FROM {table})"
        window = f"business_date > {last} - {days} AND business_date <= {last}"
    else:
        first = (through - dt.timedelta(days=days - 1)).isoformat()
        window = f"business_date BETWEEN DATE '{first}' AND DATE '{through.isoformat()}'"
    return (
        "SELECT sku_id, CAST(max(units) AS DOUBLE) AS peak_day_units, "
        "CAST(count(*) FILTER (WHERE units > 0) AS BIGINT) AS days_sold "
        f"FROM {table} WHERE {window} AND sku_id IS NOT NULL GROUP BY sku_id"
    )


def spike_baseline(daily_demand: pl.DataFrame, through: dt.date, days: int = SPIKE_BASELINE_DAYS) -> pl.DataFrame:
    """`spike_baseline_sql` on a frame: (sku_id, peak_day_units, days_sold)."""
    first = through - dt.timedelta(days=days - 1)
    return (
        daily_demand.filter(pl.col("business_date").is_between(first, through) & pl.col("sku_id").is_not_null())
        .group_by("sku_id")
        .agg(
            pl.col("units").max().cast(pl.Float64).alias("peak_day_units"),
            (pl.col("units") > 0).sum().cast(pl.Int64).alias("days_sold"),
        )
    )


def digest(values: list[str]) -> str:
    """A short, stable name for a set of ids (sorted by the caller): what a run key is made of."""
    return hashlib.sha1("\n".join(values).encode()).hexdigest()[:16]


def late_arrivals(lines: pl.DataFrame, built: Collection[dt.date], already_held: pl.DataFrame) -> pl.DataFrame:
    """Per built business date, the documents its partition does not hold (LATE_ARRIVALS_SCHEMA).

    `already_held` is (business_date, txn_id) of those candidates that the built partitions do
    hold. A document without a txn_id cannot be matched, so it counts as late: it is new data
    for that day either way (and will be dead-lettered there with its reason).
    """
    built_dates = pl.Series("business_date", sorted(built), dtype=pl.Date)
    late = lines.filter(pl.col("business_date").is_in(built_dates.implode())).join(
        already_held.select("business_date", "txn_id"), on=["business_date", "txn_id"], how="anti"
    )
    per_day = (
        late.group_by("business_date")
        .agg(
            pl.col("txn_id").n_unique().cast(pl.UInt32).alias("documents"),
            pl.any_horizontal(pl.col("sku_id", "quantity", "uom").is_not_null()).sum().cast(pl.UInt32).alias("lines"),
            pl.col("created_at").min().alias("first_committed_at"),
            pl.col("created_at").max().alias("last_committed_at"),
            pl.col("txn_id").fill_null("").unique().sort().str.join("\n").alias("_txn_ids"),
        )
        .sort("business_date")
    )
    # One digest per late day (a handful of rows), so hashlib here is not a per-record loop.
    digests = [digest(ids.split("\n")) for ids in per_day["_txn_ids"]]
    return per_day.drop("_txn_ids").with_columns(pl.Series("fingerprint", digests, dtype=pl.String)).select(
        list(LATE_ARRIVALS_SCHEMA)
    )


def candidate_keys(lines: pl.DataFrame, built: Collection[dt.date]) -> pl.DataFrame:
    """(business_date, txn_id) of the records that belong to built dates: what to look up."""
    built_dates = pl.Series("business_date", sorted(built), dtype=pl.Date)
    return (
        lines.filter(pl.col("business_date").is_in(built_dates.implode()) & pl.col("txn_id").is_not_null())
        .select("business_date", "txn_id")
        .unique()
    )


def unknown_skus(lines: pl.DataFrame, known_skus: pl.DataFrame) -> list[str]:
    """Well-formed SKU ids on the new lines that the SKU master (`known_skus.sku_id`) lacks."""
    return (
        lines.filter(pl.col("sku_id").str.contains(SKU_ID_PATTERN))
        .select("sku_id")
        .unique()
        .join(known_skus.select("sku_id"), on="sku_id", how="anti")
        .sort("sku_id")["sku_id"]
        .to_list()
    )


def _eaches() -> pl.Expr:
    # An unknown unit of measure gives null: not demand until the line is fixed at the source.
    return (
        pl.when(pl.col("uom") == "EA")
        .then(1.0)
        .when(pl.col("uom") == "CS")
        .then(pl.col("case_qty").cast(pl.Float64))
        .when(pl.col("uom") == "PL")
        .then(pl.col("pallet_qty").cast(pl.Float64))
    )


def ordered_eaches(lines: pl.DataFrame, sku_master: pl.DataFrame) -> pl.DataFrame:
    """Per SKU: the eaches ordered on `lines` (ORDER lines with a positive quantity, cases and
    pallets converted with the master's pack sizes): (sku_id, units)."""
    master = sku_master.select("sku_id", "case_qty", "pallet_qty")
    return (
        lines.filter((pl.col("txn_type") == "ORDER") & (pl.col("quantity") > 0) & pl.col("sku_id").is_not_null())
        .join(master, on="sku_id", how="left")
        .with_columns((pl.col("quantity") * _eaches()).alias("eaches"))
        .group_by("sku_id")
        .agg(pl.col("eaches").sum().cast(pl.Float64).alias("units"))
    )


def outside_range(units: pl.DataFrame, baseline: pl.DataFrame, policy: SpikePolicy = SpikePolicy()) -> pl.DataFrame:
    """SKUs whose `units` (sku_id, units: eaches ordered so far) lie outside their own range (see
    SpikePolicy), against `baseline` (sku_id, peak_day_units, days_sold over the days before).

    A SKU missing from the baseline, or sold on fewer than `min_days_sold` days, is not judged: a
    new SKU's first orders are not a spike of anything. Sorted by units, largest first.
    """
    peak = pl.col("peak_day_units")
    return (
        units.join(baseline.select("sku_id", "peak_day_units", "days_sold"), on="sku_id", how="inner")
        .filter(
            (pl.col("days_sold") >= policy.min_days_sold)
            & (pl.col("units") >= policy.min_units)
            & (pl.col("units") > policy.multiple * peak)
        )
        .with_columns(pl.when(peak > 0).then(pl.col("units") / peak).alias("multiple_of_peak_day"))
        .sort(["units", "sku_id"], descending=[True, False])
        .select(list(SPIKES_SCHEMA))
        .cast(SPIKES_SCHEMA)
    )


def demand_spikes(
    lines: pl.DataFrame, sku_master: pl.DataFrame, baseline: pl.DataFrame, policy: SpikePolicy = SpikePolicy()
) -> pl.DataFrame:
    """SKUs whose ordered eaches on `lines` lie outside their own range: `outside_range` of
    `ordered_eaches` (the exception service judges the day's running total the same way)."""
    return outside_range(ordered_eaches(lines, sku_master), baseline, policy)

