"""SKU velocity taxonomy: rolling windows, ABC, XYZ, cubic velocity, COI, seasonality.

Input is ``daily_sku_demand`` (contracts.DAILY_SKU_DEMAND_SCHEMA, one row per SKU per business
day), output is ``sku_velocity`` (contracts.SKU_VELOCITY_SCHEMA, one row per SKU at the evaluation
date D). The per-SKU window totals are one SQL aggregation (``demand_per_sku_sql``: conditional
sums over the look-back window's rows, no SKU x day grid), run by DuckDB on the warehouse table or,
for a frame, on an in-memory DuckDB; the rest is a lazy polars plan built from the small
expression functions below: a join to the SKU master and one sort for the ABC ranking. Nothing
loops over rows or SKUs.

Definitions (docs/architecture.md, "Velocity taxonomy"; bracketed values are TaxonomyConfig):

- Demand is the ``units`` column (outbound eaches); returns and adjustments do not count.
- Windows end on D inclusive. A row's age is ``D - business_date`` in days; the N-day window is
  age 0..N-1 (30d = D-29..D [windows]; units_7d = D-6..D). Rows outside D-89..D (the longest
  window), including rows dated after D, are ignored.
- ABC [basis units_30d or pick_lines_30d; cut-offs 0.80/0.95]: SKUs sorted by basis descending,
  then sku_id ascending; ``abc_rank`` is the 1-based position in that order and ``share_before``
  the basis of all SKUs ranked above divided by the total basis. A if share_before < 0.80, B if
  < 0.95, else C. A SKU with zero basis is C. When the total basis is 0 every SKU is C and
  share_before is null (0 / 0: no share is defined).
- XYZ [12 trailing weeks, cut-offs 0.5/1.0, at least 8 weeks]: week w covers D-7w-6 .. D-7w
  (w = 0..11), i.e. the row's age // 7. Only the weeks in which the SKU could have sold count:
  ``xyz_weeks`` = min(12, history_days // 7), the whole weeks since the later of the first built
  day and introduced_on (a week the SKU was not yet on sale, or the warehouse had not yet built,
  is not a week without sales). Among those weeks empty ones count as zero; ``weekly_mean_12w``
  is the mean over them and ``demand_cv`` the population standard deviation over the mean.
  X if cv <= 0.5, Y if cv <= 1.0, else Z; a zero weekly mean is Z with demand_cv null. With
  fewer than ``xyz_min_weeks`` such weeks the SKU is not yet classified: xyz_class and
  demand_cv are null (weekly_mean_12w is still the mean of the weeks there are; null with none).
- ``cubic_velocity_ft3_per_day`` = units_30d * unit_cube_ft3 / 30.
- ``coi`` (cube-per-order index; lower means it belongs closer to the pick face). We read "cube
  of 7 days of demand" as the slot cube a week of stock needs at the 30-day demand rate:
  ``units_30d / 30 * 7 * unit_cube_ft3``, divided by ``pick_lines_30d`` (the pick frequency).
  Null when pick_lines_30d is 0 or the unit cube is unknown.
- ``seasonality_index`` = (units_30d / 30) / (units_90d / 90) clipped to [0.1, 5.0]; null (not
  yet known) when history_days < 90, 1.0 when units_90d == 0. With non-negative demand the raw ratio is at most 3 (all
  of the 90-day demand inside the 30 days), so only the lower clip can bite at the default
  windows; the upper bound guards other window settings and bad input.
- ``history_days`` = D - max(history_start, introduced_on) + 1, floored at 0. history_start
  defaults to the earliest business_date present in daily_demand (all rows, not just the
  window); a null introduced_on (or a SKU unknown to the master) uses history_start alone. With
  no demand rows at all and no history_start, history_start is D.

Population: every SKU of the master introduced on or before D (a null introduced_on counts as
introduced), plus every SKU with at least one daily_demand row in the window (a master SKU
introduced after D that has such rows keeps its master attributes). A SKU unknown to the master
has a null unit cube, so its cubic velocity and COI are null. Rows are returned in abc_rank
order, one per SKU.

Numerics: the class decisions are made without division (see the note over the per-SKU
expressions), so for whole-unit demand they are exact at the cut-offs and independent of row
order. The reported floats (share_before, demand_cv, rates) can differ in the last bit between
runs with differently chunked input, and with fractional units the per-SKU sums themselves
depend on summation order, so two SKUs whose basis differs only in the last bits may swap ranks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb
import polars as pl

from velocity_platform.domain.contracts import ABC_CLASSES, SKU_VELOCITY_SCHEMA, conform
from velocity_platform.settings import XYZ_MIN_WEEKS

# What a null XYZ class means, wherever classes are shown (UI metadata, checks, summaries).
UNCLASSIFIED = "not yet classified"

_EPOCH = dt.date(1970, 1, 1)
WEEK_PREFIX = "_week_units_"
BASIS = "_abc_basis"
RUNNING = "_abc_basis_running"
BEFORE = "_abc_basis_before"
TOTAL = "_abc_basis_total"
WEEK_TOTAL = "_week_total"
WEEK_SQDEV = "_week_scaled_sq_dev"
ROWS = "_rows_in_window"


@dataclass(frozen=True)
class TaxonomyConfig:
    """The configurable values of the taxonomy.

    ``windows`` are the (short, medium, long) windows in days feeding units_30d / units_60d /
    units_90d (the contract names are fixed; the defaults are what those names say). The short
    window is the rate for cubic velocity, COI and the seasonality numerator, the long one the
    seasonality denominator, the history needed for a seasonality index, and the look-back.
    """

    abc_basis: Literal["units", "pick_lines"] = "units"
    abc_cutoffs: tuple[float, float] = (0.80, 0.95)
    xyz_weeks: int = 12
    xyz_cutoffs: tuple[float, float] = (0.5, 1.0)
    xyz_min_weeks: int = XYZ_MIN_WEEKS
    seasonality_clip: tuple[float, float] = (0.1, 5.0)
    windows: tuple[int, int, int] = (30, 60, 90)

    def __post_init__(self) -> None:
        if self.abc_basis not in ("units", "pick_lines"):
            raise ValueError(f"abc_basis must be 'units' or 'pick_lines', got {self.abc_basis!r}")
        a, b = self.abc_cutoffs
        if not 0.0 < a <= b <= 1.0:
            raise ValueError(f"abc_cutoffs must satisfy 0 < A <= B <= 1, got {self.abc_cutoffs}")
        x, y = self.xyz_cutoffs
        if not 0.0 <= x <= y:
            raise ValueError(f"xyz_cutoffs must satisfy 0 <= X <= Y, got {self.xyz_cutoffs}")
        if not 1 <= self.xyz_min_weeks <= self.xyz_weeks:
            raise ValueError(
                f"xyz_min_weeks must be between 1 and xyz_weeks ({self.xyz_weeks}), got {self.xyz_min_weeks}"
            )
        lo, hi = self.seasonality_clip
        if not 0.0 <= lo <= hi:
            raise ValueError(f"seasonality_clip must satisfy 0 <= lo <= hi, got {lo, hi}")
        short, medium, long = self.windows
        if not 0 < short <= medium <= long:
            raise ValueError(f"windows must be three ascending day counts, got {self.windows}")
        if self.xyz_weeks < 1 or 7 * self.xyz_weeks > self.lookback_days:
            raise ValueError(
                f"xyz_weeks must be >= 1 and fit in the {self.lookback_days}-day look-back, "
                f"got {self.xyz_weeks}"
            )

    @property
    def basis_column(self) -> str:
        return "units_30d" if self.abc_basis == "units" else "pick_lines_30d"

    @property
    def lookback_days(self) -> int:
        return self.windows[2]


# --- expressions on the per-SKU frame ------------------------------------------------------------
#
# Polars divides by a broadcast scalar as a multiplication by its reciprocal, which can be 1 ulp
# off, and whether a value takes that path depends on the frame's length and chunking. So the
# class decisions never divide: "share_before < 0.80" is decided as "basis_before < 0.80 * total"
# and "cv <= 0.5" as "n^2 * sum of squared deviations <= 0.5^2 * n * total^2", both exact for
# whole-unit demand. The reported share_before and demand_cv are the quotients themselves.


def weekly_columns(weeks: int) -> list[pl.Expr]:
    return [pl.col(_week_name(w)) for w in range(weeks)]


def weekly_total(weekly: Sequence[pl.Expr], weeks: pl.Expr | int | None = None) -> pl.Expr:
    """Demand over the first ``weeks`` weeks (all of them when None): the weeks that count."""
    return pl.sum_horizontal(_counted(weekly, weeks))


def weekly_mean(weekly: Sequence[pl.Expr], weeks: pl.Expr | int | None = None) -> pl.Expr:
    """Mean over the weeks that count (empty weeks among them are zeros, not missing); null
    when no week counts."""
    n = len(weekly) if weeks is None else weeks
    n = pl.lit(n) if isinstance(n, int) else n
    return pl.when(n > 0).then(weekly_total(weekly, weeks) / n)


def scaled_squared_deviations(weekly: Sequence[pl.Expr], weeks: pl.Expr | int | None = None) -> pl.Expr:
    """sum((n * w - total)^2) = n^2 * sum((w - mean)^2) over the n weeks that count, without
    dividing by n."""
    n = len(weekly) if weeks is None else weeks
    total = weekly_total(weekly, weeks)
    deviations = [(w * n - total) for w in weekly]
    return pl.sum_horizontal(_counted([d * d for d in deviations], weeks))


def population_cv(total: pl.Expr, scaled_sq_dev: pl.Expr, weeks: pl.Expr | int) -> pl.Expr:
    """Population std / mean = sqrt(scaled_sq_dev / (n * total^2)); null unless total > 0."""
    return pl.when(total > 0).then((scaled_sq_dev / (total * total * weeks)).sqrt())


def xyz_class(
    total: pl.Expr,
    scaled_sq_dev: pl.Expr,
    weeks: pl.Expr | int,
    cutoffs: tuple[float, float] = (0.5, 1.0),
) -> pl.Expr:
    """X if cv <= x, Y if cv <= y, else Z (and Z for a zero mean), decided as cv^2 without
    division: scaled_sq_dev <= x^2 * n * total^2."""
    x, y = cutoffs
    scale = total * total * weeks
    has_demand = total > 0
    return (
        pl.when(has_demand & (scaled_sq_dev <= scale * (x * x)))
        .then(pl.lit("X"))
        .when(has_demand & (scaled_sq_dev <= scale * (y * y)))
        .then(pl.lit("Y"))
        .otherwise(pl.lit("Z"))
    )


def xyz_weeks(history: pl.Expr, weeks: int) -> pl.Expr:
    """Whole trailing weeks in which the SKU could have sold: min(weeks, history_days // 7)."""
    return (history // 7).clip(upper_bound=weeks).cast(pl.Int32)


def when_judged(value: pl.Expr, weeks_counted: pl.Expr, min_weeks: int) -> pl.Expr:
    """``value`` once the SKU has ``min_weeks`` weeks to judge by, else null (not yet classified)."""
    return pl.when(weeks_counted >= min_weeks).then(value)


def abc_rank() -> pl.Expr:
    """1-based position; the frame must already be in ABC order (see ``with_abc``)."""
    return pl.int_range(1, pl.len() + 1, dtype=pl.Int64)


def basis_before(running_total: pl.Expr) -> pl.Expr:
    """Basis of all rows above this one, from the running total in frame order."""
    return running_total.shift(1, fill_value=0.0)


def basis_total(running_total: pl.Expr) -> pl.Expr:
    """The last running total, so that 0 <= before <= total holds exactly on every row."""
    return running_total.last()


def share_before(before: pl.Expr, total: pl.Expr) -> pl.Expr:
    """before / total; null when the total is 0."""
    return pl.when(total > 0).then(before / total)


def abc_class(
    before: pl.Expr,
    total: pl.Expr,
    basis: pl.Expr,
    cutoffs: tuple[float, float] = (0.80, 0.95),
) -> pl.Expr:
    """A if before / total < a, B if < b, else C (decided as before < a * total); zero (or
    null) basis is always C."""
    a, b = cutoffs
    has_basis = basis > 0
    return (
        pl.when(has_basis & (before < total * a))
        .then(pl.lit("A"))
        .when(has_basis & (before < total * b))
        .then(pl.lit("B"))
        .otherwise(pl.lit("C"))
    )


def with_abc(
    frame: pl.LazyFrame, basis: str, cutoffs: tuple[float, float] = (0.80, 0.95)
) -> pl.LazyFrame:
    """Sort by ``basis`` desc then sku_id asc and add abc_rank, share_before, abc_class."""
    b, before, total = pl.col(BASIS), pl.col(BEFORE), pl.col(TOTAL)
    return (
        frame.with_columns(pl.col(basis).cast(pl.Float64).fill_null(0.0).alias(BASIS))
        .sort([BASIS, "sku_id"], descending=[True, False])
        .with_columns(b.cum_sum().alias(RUNNING))
        .with_columns(
            basis_before(pl.col(RUNNING)).alias(BEFORE), basis_total(pl.col(RUNNING)).alias(TOTAL)
        )
        .with_columns(
            abc_rank().alias("abc_rank"),
            share_before(before, total).alias("share_before"),
            abc_class(before, total, b, cutoffs).alias("abc_class"),
        )
        .drop(BASIS, RUNNING, BEFORE, TOTAL)
    )


def cubic_velocity(units_30d: pl.Expr, unit_cube: pl.Expr, window_days: int = 30) -> pl.Expr:
    """Cubic feet of demand per day over the short window."""
    return units_30d * unit_cube / window_days


def coi(
    units_30d: pl.Expr,
    unit_cube: pl.Expr,
    pick_lines_30d: pl.Expr,
    window_days: int = 30,
    cover_days: int = 7,
) -> pl.Expr:
    """Cube of ``cover_days`` of demand at the short-window rate / pick lines in that window:
    (units_30d / 30 * 7 * unit_cube) / pick_lines_30d; null without pick lines."""
    cover_cube = units_30d * unit_cube * cover_days
    return pl.when(pick_lines_30d > 0).then(cover_cube / (pick_lines_30d * window_days))


def history_days(
    evaluation_date: dt.date, history_start: dt.date, introduced_on: pl.Expr
) -> pl.Expr:
    """D - max(history_start, introduced_on) + 1 (a null introduced_on is ignored), floored at 0."""
    start = pl.max_horizontal(
        pl.lit(_day_number(history_start), pl.Int32), introduced_on.cast(pl.Int32)
    )
    days = pl.lit(_day_number(evaluation_date) + 1, pl.Int32) - start
    return days.clip(lower_bound=0).cast(pl.Int32)


def seasonality_index(
    units_short: pl.Expr,
    units_long: pl.Expr,
    history: pl.Expr,
    windows: tuple[int, int] = (30, 90),
    clip: tuple[float, float] = (0.1, 5.0),
) -> pl.Expr:
    """(units_short / short) / (units_long / long), clipped; null (not yet known) when history <
    long, 1.0 when there is no long-window demand. Computed as one division of exact products."""
    short, long = windows
    ratio = (units_short * long) / (units_long * short)
    return pl.when(history < long).then(None).when(units_long > 0).then(ratio.clip(*clip)).otherwise(1.0)


# --- the taxonomy --------------------------------------------------------------------------------


def classify_skus(
    daily_demand: pl.DataFrame | pl.LazyFrame,
    sku_master: pl.DataFrame | pl.LazyFrame,
    evaluation_date: dt.date,
    config: TaxonomyConfig = TaxonomyConfig(),
    history_start: dt.date | None = None,
) -> pl.DataFrame:
    """The sku_velocity table at ``evaluation_date`` (see the module docstring for definitions).

    ``daily_demand`` follows DAILY_SKU_DEMAND_SCHEMA (only business_date, sku_id, units,
    pick_lines and orders are read); ``sku_master`` follows SKU_MASTER_SCHEMA (sku_id,
    unit_cube_ft3, introduced_on are read) and must have unique sku_ids.
    """
    demand = daily_demand.lazy()
    if history_start is None:
        history_start = _earliest_date(demand) or evaluation_date
    per_sku = _demand_per_sku(demand, evaluation_date, config)
    return classify_window_totals(per_sku, sku_master, evaluation_date, history_start, config)


# What demand_per_sku_sql returns, column by column (the per-SKU frame _demand_per_sku builds).
COUNTERS = ["units_30d", "units_60d", "units_90d", "pick_lines_30d", "orders_30d", "units_7d"]


def demand_per_sku_sql(table: str, evaluation_date: dt.date, config: TaxonomyConfig = TaxonomyConfig()) -> str:
    """The same per-SKU window totals as the polars path, as one SQL aggregation over a daily
    demand table (DuckDB dialect), so a store holding months of daily rows hands back one row
    per SKU instead of every row. Dates are literals built from a date, never from user text."""
    short, medium, long = config.windows
    day = evaluation_date.isoformat()
    age = f"(DATE '{day}' - business_date)"

    def total(column: str, days: int, cast: str) -> str:
        return f"CAST(SUM(CASE WHEN {age} < {days} THEN {column} ELSE 0 END) AS {cast})"

    sums = [
        f"{total('units', short, 'DOUBLE')} AS units_30d",
        f"{total('units', medium, 'DOUBLE')} AS units_60d",
        f"{total('units', long, 'DOUBLE')} AS units_90d",
        f"{total('pick_lines', short, 'BIGINT')} AS pick_lines_30d",
        f"{total('orders', short, 'BIGINT')} AS orders_30d",
        f"{total('units', 7, 'DOUBLE')} AS units_7d",
        *(
            f"CAST(SUM(CASE WHEN {age} BETWEEN {7 * w} AND {7 * w + 6} THEN units ELSE 0.0 END) AS DOUBLE) AS {_week_name(w)}"
            for w in range(config.xyz_weeks)
        ),
        f"CAST(COUNT(*) AS UINTEGER) AS {ROWS}",
    ]
    first_day = (evaluation_date - dt.timedelta(days=long - 1)).isoformat()
    return (
        f"SELECT sku_id, {', '.join(sums)} FROM {table} "
        f"WHERE business_date BETWEEN DATE '{first_day}' AND DATE '{day}' AND sku_id IS NOT NULL GROUP BY sku_id"
    )


def classify_window_totals(
    per_sku: pl.DataFrame | pl.LazyFrame,
    sku_master: pl.DataFrame | pl.LazyFrame,
    evaluation_date: dt.date,
    history_start: dt.date,
    config: TaxonomyConfig = TaxonomyConfig(),
) -> pl.DataFrame:
    """The sku_velocity table from per-SKU window totals (`_demand_per_sku`, or the same columns
    from `demand_per_sku_sql`)."""
    short, medium, long = config.windows
    weeks = config.xyz_weeks
    weekly = weekly_columns(weeks)
    counted = pl.col("xyz_weeks")
    counters = COUNTERS
    velocity = (
        _master(sku_master)
        .join(per_sku.lazy(), on="sku_id", how="full", coalesce=True)
        .filter(_in_population(evaluation_date))
        .with_columns(pl.col(counters).fill_null(0), *(w.fill_null(0.0) for w in weekly))
        .with_columns(
            history_days(evaluation_date, history_start, pl.col("introduced_on")).alias(
                "history_days"
            ),
        )
        .with_columns(xyz_weeks(pl.col("history_days"), weeks).alias("xyz_weeks"))
        .with_columns(
            weekly_total(weekly, counted).alias(WEEK_TOTAL),
            scaled_squared_deviations(weekly, counted).alias(WEEK_SQDEV),
        )
        .with_columns(
            pl.lit(evaluation_date, pl.Date).alias("business_date"),
            weekly_mean(weekly, counted).alias("weekly_mean_12w"),
            when_judged(
                population_cv(pl.col(WEEK_TOTAL), pl.col(WEEK_SQDEV), counted), counted, config.xyz_min_weeks
            ).alias("demand_cv"),
            when_judged(
                xyz_class(pl.col(WEEK_TOTAL), pl.col(WEEK_SQDEV), counted, config.xyz_cutoffs),
                counted,
                config.xyz_min_weeks,
            ).alias("xyz_class"),
            cubic_velocity(pl.col("units_30d"), pl.col("unit_cube_ft3"), short).alias(
                "cubic_velocity_ft3_per_day"
            ),
            coi(
                pl.col("units_30d"), pl.col("unit_cube_ft3"), pl.col("pick_lines_30d"), short
            ).alias("coi"),
            seasonality_index(
                pl.col("units_30d"),
                pl.col("units_90d"),
                pl.col("history_days"),
                (short, long),
                config.seasonality_clip,
            ).alias("seasonality_index"),
        )
        .pipe(with_abc, config.basis_column, config.abc_cutoffs)
    )
    return conform(velocity.collect(), SKU_VELOCITY_SCHEMA)


def class_shares(velocity: pl.DataFrame) -> dict[str, dict[str, int | float]]:
    """Per ABC class: SKU count and share of SKUs, units_30d and share of units_30d.

    ``{"A": {"skus": 12, "sku_share": 0.1, "units_30d": 800.0, "units_share": 0.79}, ...}``;
    every class is present. Shares are 0.0 when the frame is empty or has no units.
    """
    per_class = (
        pl.DataFrame({"abc_class": list(ABC_CLASSES)})
        .join(
            velocity.group_by("abc_class").agg(
                pl.len().alias("skus"), pl.col("units_30d").sum().alias("units_30d")
            ),
            on="abc_class",
            how="left",
        )
        .with_columns(pl.col("skus").fill_null(0), pl.col("units_30d").fill_null(0.0))
        .with_columns(
            _share(pl.col("skus")).alias("sku_share"),
            _share(pl.col("units_30d")).alias("units_share"),
        )
    )
    return {
        row.pop("abc_class"): {k: (int(v) if k == "skus" else float(v)) for k, v in row.items()}
        for row in per_class.iter_rows(named=True)
    }


# --- internals -----------------------------------------------------------------------------------


def _counted(values: Sequence[pl.Expr], weeks: pl.Expr | int | None) -> list[pl.Expr]:
    """The per-week values of the weeks that count (week w counts when w < weeks), others 0."""
    if weeks is None:
        return list(values)
    n = pl.lit(weeks) if isinstance(weeks, int) else weeks
    return [pl.when(n > w).then(v).otherwise(0.0) for w, v in enumerate(values)]


def _week_name(week: int) -> str:
    return f"{WEEK_PREFIX}{week}"


def _share(values: pl.Expr) -> pl.Expr:
    total = values.sum()
    return pl.when(total > 0).then(values / total).otherwise(0.0).cast(pl.Float64)


def _day_number(day: dt.date) -> int:
    return (day - _EPOCH).days


def _earliest_date(demand: pl.LazyFrame) -> dt.date | None:
    return demand.select(pl.col("business_date").min()).collect().item()


def _demand_per_sku(
    demand: pl.LazyFrame, evaluation_date: dt.date, config: TaxonomyConfig
) -> pl.LazyFrame:
    """The window totals of `demand_per_sku_sql`, run by an in-memory DuckDB over the frame: the
    totals are written once, in SQL, for the warehouse table and for a frame alike."""
    rows = demand.select("business_date", "sku_id", "units", "pick_lines", "orders").collect()
    with duckdb.connect() as con:
        con.register("daily_demand", rows)
        return con.execute(demand_per_sku_sql("daily_demand", evaluation_date, config)).pl().lazy()


def _master(sku_master: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    master = sku_master.lazy().select("sku_id", "unit_cube_ft3", "introduced_on")
    duplicated = master.select(pl.col("sku_id").is_duplicated().any()).collect().item()
    if duplicated:
        raise ValueError("sku_master has duplicate sku_id values")
    return master.filter(pl.col("sku_id").is_not_null())


def _in_population(evaluation_date: dt.date) -> pl.Expr:
    """Introduced on or before D (a null date counts as introduced), or has demand rows in the
    window."""
    introduced = pl.col("introduced_on")
    return (
        introduced.is_null()
        | (introduced <= pl.lit(evaluation_date, pl.Date))
        | pl.col(ROWS).is_not_null()
    )
