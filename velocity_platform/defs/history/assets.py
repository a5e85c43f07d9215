"""Sales history in warehouse terms, and the per-SKU daily demand that velocity reads."""


import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import BACKFILL_POLICY, DUCKDB_POOL, PARTITION_METADATA, business_days
from velocity_platform.domain.history import daily_demand, to_sales_history


@dg.asset(
    partitions_def=business_days,
    backfill_policy=BACKFILL_POLICY,
    metadata=PARTITION_METADATA,
    group_name="history",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    description="Valid lines in warehouse terms: eaches, SKU hierarchy, unit and line cube.",
)
def sales_history(
    context: dg.AssetExecutionContext, validated_transactions: pl.DataFrame, sku_master: pl.DataFrame
) -> pl.DataFrame:
    history = to_sales_history(validated_transactions, sku_master)
    context.add_output_metadata(
        {
            "dagster/row_count": history.height,
            "eaches_out": float(history.filter(pl.col("txn_type") == "ORDER")["quantity_eaches"].sum()),
        }
    )
    return history


@dg.asset(
    partitions_def=business_days,
    backfill_policy=BACKFILL_POLICY,
    metadata=PARTITION_METADATA,
    group_name="history",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    description="Per SKU per day: demand units and pick lines, orders, returns, adjustments, cube moved.",
)
def daily_sku_demand(context: dg.AssetExecutionContext, sales_history: pl.DataFrame) -> pl.DataFrame:
    demand = daily_demand(sales_history)
    context.add_output_metadata(
        {
            "dagster/row_count": demand.height,
            "skus_with_demand": demand.filter(pl.col("units") > 0).height,
            "pick_lines": int(demand["pick_lines"].sum()),
            "units": float(demand["units"].sum()),
        }
    )
    return demand
