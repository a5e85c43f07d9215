"""SKU velocity at the evaluation date: 30/60/90-day demand, ABC, XYZ, cubic velocity, COI, seasonality."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.daily import Day, daily_asset
from velocity_platform.defs.partitions import site_day_of, window
from velocity_platform.defs.resources import WarehouseResource
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.domain.pick_rate import PickRateConfig, with_pick_rates
from velocity_platform.domain.taxonomy import UNCLASSIFIED, TaxonomyConfig, classify_window_totals, demand_per_sku_sql

VELOCITY_WINDOW_DAYS = 90
DEMAND_TABLE = "daily_sku_demand"


def xyz_counts(velocity: pl.DataFrame) -> dict[str, int]:
    """SKUs per XYZ class, the SKUs without enough weeks on sale counted apart as UNCLASSIFIED."""
    counts = velocity.group_by(pl.col("xyz_class").fill_null(UNCLASSIFIED)).len().sort("xyz_class")
    return dict(counts.iter_rows())


def class_table(velocity: pl.DataFrame) -> str:
    counts = (
        velocity.with_columns(pl.col("xyz_class").fill_null(UNCLASSIFIED))
        .group_by("abc_class", "xyz_class")
        .len()
        .pivot(on="xyz_class", index="abc_class", values="len")
        .fill_null(0)
        .sort("abc_class")
    )
    xyz = [c for c in ("X", "Y", "Z", UNCLASSIFIED) if c in counts.columns]
    header = "| ABC \\ XYZ | " + " | ".join(xyz) + " |\n|---|" + "---:|" * len(xyz)
    rows = "\n".join(
        f"| {row['abc_class']} | " + " | ".join(f"{row[c]:,}" for c in xyz) + " |" for row in counts.iter_rows(named=True)
    )
    return f"{header}\n{rows}"


def history_start(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, warehouse_id: str, first_day: dt.date) -> dt.date:
    """The site's first business date with daily demand: seasonality needs 90 days of it, not 90 rows."""
    materialized = (site_day_of(key) for key in context.instance.get_materialized_partitions(dg.AssetKey("daily_sku_demand")))
    return min((sd.business_date for sd in materialized if sd.warehouse_id == warehouse_id), default=first_day)


@daily_asset(
    group="velocity",
    # 90 days of daily demand, summed per SKU where they are stored: a large catalogue's window
    # is millions of daily rows, and the taxonomy needs one row of window totals per SKU.
    deps=[dg.AssetDep("daily_sku_demand", partition_mapping=window(VELOCITY_WINDOW_DAYS - 1))],
    description="Per SKU at the evaluation date: windowed demand, ABC / XYZ class, cubic velocity, COI, seasonality. "
    "XYZ, demand_cv and seasonality are null (not yet classified) until the SKU has the weeks on sale they need.",
)
def sku_velocity(
    context: dg.AssetExecutionContext,
    day: dt.date,
    warehouse_id: str,
    warehouse: WarehouseResource,
    warehouse_tables: WarehouseTables,
    sku_master: pl.DataFrame,
) -> Day:
    start = history_start(context, warehouse_id, day)
    config = TaxonomyConfig(xyz_min_weeks=warehouse.xyz_min_weeks)
    rates = PickRateConfig()
    with warehouse_tables.session() as tables:
        if not tables.exists(DEMAND_TABLE):
            raise dg.Failure(
                description=f"{DEMAND_TABLE} does not exist yet: materialize daily_sku_demand for the 90 days up to {day} first"
            )
        totals = tables.query(DEMAND_TABLE, lambda name: demand_per_sku_sql(name, day, config))
        # The daily pick lines the pick rates read: the 28 days up to the date.
        daily_lines = tables.read(DEMAND_TABLE, rates.first_day(day), day, columns=["business_date", "sku_id", "pick_lines"])
        days_loaded = tables.dates_held(DEMAND_TABLE, day - dt.timedelta(days=VELOCITY_WINDOW_DAYS - 1), day)
    velocity = with_pick_rates(classify_window_totals(totals, sku_master, day, start, config), daily_lines, day, rates)
    # Every figure is the date's; a range shows its latest date's (LAST, the default).
    return Day(
        velocity,
        {
            "skus_classified": velocity.height,
            "days_of_demand_loaded": days_loaded,
            "abc_counts": dict(velocity.group_by("abc_class").len().iter_rows()),
            "xyz_counts": xyz_counts(velocity),
            # why a SKU has no XYZ class: fewer whole weeks on sale than the minimum
            "xyz_min_weeks": warehouse.xyz_min_weeks,
            "classes": dg.MetadataValue.md(class_table(velocity)),
            "skus_with_promotional_days": velocity.filter(pl.col("promo_days_28d") > 0).height,
            "promotional_uplift_lines_28d": int(velocity["promo_uplift_lines_28d"].sum()),
            "classified_as_of": str(day),
        },
    )
