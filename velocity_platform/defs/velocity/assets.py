"""SKU velocity at the evaluation date: 30/60/90-day demand, ABC, XYZ, cubic velocity, COI, seasonality."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import (
    DUCKDB_POOL,
    PARTITION_METADATA,
    business_days,
    partition_date,
    window,
)
from velocity_platform.domain.taxonomy import classify_skus

VELOCITY_WINDOW_DAYS = 90
DEMAND_COLUMNS_READ = ["business_date", "sku_id", "units", "pick_lines", "orders"]


def class_table(velocity: pl.DataFrame) -> str:
    counts = velocity.group_by("abc_class", "xyz_class").len().pivot(
        on="xyz_class", index="abc_class", values="len"
    ).fill_null(0).sort("abc_class")
    xyz = [c for c in ("X", "Y", "Z") if c in counts.columns]
    header = "| ABC \\ XYZ | " + " | ".join(xyz) + " |\n|---|" + "---:|" * len(xyz)
    rows = "\n".join(
        f"| {row['abc_class']} | " + " | ".join(f"{row[c]:,}" for c in xyz) + " |" for row in counts.iter_rows(named=True)
    )
    return f"{header}\n{rows}"


def history_start(context: dg.AssetExecutionContext) -> dt.date:
    """The first business date with daily demand: seasonality needs 90 days of it, not 90 rows."""
    materialized = context.instance.get_materialized_partitions(dg.AssetKey("daily_sku_demand"))
    return min((dt.date.fromisoformat(key) for key in materialized), default=partition_date(context))


@dg.asset(
    partitions_def=business_days,
    metadata=PARTITION_METADATA,
    ins={
        "daily_sku_demand": dg.AssetIn(
            partition_mapping=window(VELOCITY_WINDOW_DAYS - 1),
            # Only what the taxonomy reads: 90 days of a large catalogue is millions of rows.
            metadata={"columns": DEMAND_COLUMNS_READ},
        )
    },
    group_name="velocity",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    description="Per SKU at the evaluation date: windowed demand, ABC / XYZ class, cubic velocity, COI, seasonality.",
)
def sku_velocity(
    context: dg.AssetExecutionContext, daily_sku_demand: pl.DataFrame, sku_master: pl.DataFrame
) -> pl.DataFrame:
    day = partition_date(context)
    velocity = classify_skus(daily_sku_demand, sku_master, day, history_start=history_start(context))
    abc = dict(velocity.group_by("abc_class").len().iter_rows())
    xyz = dict(velocity.group_by("xyz_class").len().iter_rows())
    days_loaded = daily_sku_demand["business_date"].n_unique()
    context.add_output_metadata(
        {
            "dagster/row_count": velocity.height,
            "skus_classified": velocity.height,
            "days_of_demand_loaded": days_loaded,
            "abc_counts": abc,
            "xyz_counts": xyz,
            "classes": dg.MetadataValue.md(class_table(velocity)),
        }
    )
    return velocity
