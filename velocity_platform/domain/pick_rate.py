"""The expected pick rate of a SKU: pick lines per day that a one-off spike does not move.

Slotting prices a move at the SKU's pick rate, so the rate must describe the demand the SKU
will see in the coming weeks, not its best day. From the daily pick lines of the last
``level_days`` (28) days, for each SKU:

- ``promo_cap_lines``: the most pick lines a normal day has, ``cap_multiple`` (3) x the median
  of its days with demand + ``cap_floor`` (2). A day above it is a promotional (or one-off) day;
  ``promo_days_28d`` counts them and ``promo_uplift_lines_28d`` holds the lines above the cap:
  the promotional uplift, recorded, never planned on.
- ``expected_pick_lines_per_day``: the capped lines over the 28 days, per day on sale (a SKU on
  sale for fewer days is judged on those days).
- two disjoint confirmation windows of ``confirm_days`` (4) days each, ``pick_lines_per_day_recent``
  (D-3..D) and ``pick_lines_per_day_prior`` (D-7..D-4), on the same capped lines. A band change
  moves stock only when both windows agree on it; a spike lies inside one window only, so it can
  never satisfy both, while a sustained change fills both within ``2 * confirm_days`` days. A
  window the SKU was not on sale for is null (not confirmable yet).

One group-by over the window's daily rows; no loop over SKUs or days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

PICK_RATE_COLUMNS = {
    "expected_pick_lines_per_day": pl.Float64,
    "pick_lines_per_day_recent": pl.Float64,
    "pick_lines_per_day_prior": pl.Float64,
    "promo_days_28d": pl.Int32,
    "promo_uplift_lines_28d": pl.Int64,
}


@dataclass(frozen=True)
class PickRateConfig:
    level_days: int = 28
    confirm_days: int = 4
    cap_multiple: float = 3.0
    cap_floor: float = 2.0

    def __post_init__(self) -> None:
        if self.confirm_days < 1 or 2 * self.confirm_days > self.level_days:
            raise ValueError(f"confirm_days must be in 1..{self.level_days // 2}, got {self.confirm_days}")

    def first_day(self, evaluation_date: dt.date) -> dt.date:
        return evaluation_date - dt.timedelta(days=self.level_days - 1)


def _age(evaluation_date: dt.date) -> pl.Expr:
    return (pl.lit(evaluation_date, pl.Date) - pl.col("business_date")).dt.total_days()


def pick_rates(
    daily_lines: pl.DataFrame | pl.LazyFrame,
    days_on_sale: pl.DataFrame,
    evaluation_date: dt.date,
    config: PickRateConfig = PickRateConfig(),
) -> pl.DataFrame:
    """sku_id + PICK_RATE_COLUMNS for every SKU of `days_on_sale` (sku_id, history_days).

    `daily_lines` has business_date, sku_id, pick_lines (daily_sku_demand); rows outside the
    level window are ignored.
    """
    n, k = config.level_days, config.confirm_days
    age = _age(evaluation_date)
    days = (
        daily_lines.lazy()
        .select("business_date", "sku_id", pl.col("pick_lines").cast(pl.Int64))
        .with_columns(age.alias("_age"))
        .filter(pl.col("_age").is_between(0, n - 1) & (pl.col("pick_lines") > 0))
    )
    cap = (config.cap_multiple * pl.col("pick_lines").median() + config.cap_floor).over("sku_id")
    capped = days.with_columns(cap.alias("_cap")).with_columns(
        pl.min_horizontal(pl.col("pick_lines").cast(pl.Float64), pl.col("_cap")).alias("_capped")
    )
    per_sku = capped.group_by("sku_id").agg(
        pl.col("_capped").sum().alias("_level"),
        pl.col("_capped").filter(pl.col("_age") < k).sum().alias("_recent"),
        pl.col("_capped").filter(pl.col("_age").is_between(k, 2 * k - 1)).sum().alias("_prior"),
        (pl.col("pick_lines") > pl.col("_cap")).sum().cast(pl.Int32).alias("promo_days_28d"),
        (pl.col("pick_lines") - pl.col("_cap")).clip(lower_bound=0).sum().ceil().cast(pl.Int64).alias(
            "promo_uplift_lines_28d"
        ),
    )
    on_sale = pl.col("history_days").fill_null(n).cast(pl.Int64)
    recent_days = on_sale.clip(0, k)
    prior_days = (on_sale - k).clip(0, k)
    rate = lambda total, days: pl.when(days > 0).then(pl.col(total).fill_null(0.0) / days)  # noqa: E731
    return (
        days_on_sale.lazy()
        .select("sku_id", "history_days")
        .join(per_sku, on="sku_id", how="left")
        .select(
            "sku_id",
            rate("_level", on_sale.clip(1, n)).fill_null(0.0).alias("expected_pick_lines_per_day"),
            rate("_recent", recent_days).alias("pick_lines_per_day_recent"),
            rate("_prior", prior_days).alias("pick_lines_per_day_prior"),
            pl.col("promo_days_28d").fill_null(0),
            pl.col("promo_uplift_lines_28d").fill_null(0),
        )
        .collect()
    )


def with_pick_rates(
    velocity: pl.DataFrame,
    daily_lines: pl.DataFrame | pl.LazyFrame,
    evaluation_date: dt.date,
    config: PickRateConfig = PickRateConfig(),
) -> pl.DataFrame:
    """sku_velocity at `evaluation_date` with the pick-rate columns (replacing any it had)."""
    rates = pick_rates(daily_lines, velocity.select("sku_id", "history_days"), evaluation_date, config)
    kept = velocity.drop([c for c in PICK_RATE_COLUMNS if c in velocity.columns])
    return kept.join(rates, on="sku_id", how="left", maintain_order="left")
