"""Sales history in warehouse terms, and the per-SKU daily demand that velocity reads."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.daily import SUM, DailyIn, Day, daily_asset
from velocity_platform.domain.history import daily_demand, to_sales_history


@daily_asset(
    group="history",
    ins={"validated_transactions": DailyIn()},
    merge={"eaches_out": SUM},
    description="Valid lines in warehouse terms: eaches, SKU hierarchy, unit and line cube.",
)
def sales_history(
    context: dg.AssetExecutionContext, day: dt.date, validated_transactions: pl.DataFrame, sku_master: pl.DataFrame
) -> Day:
    history = to_sales_history(validated_transactions, sku_master)
    return Day(history, {"eaches_out": float(history.filter(pl.col("txn_type") == "ORDER")["quantity_eaches"].sum())})


@daily_asset(
    group="history",
    ins={"sales_history": DailyIn()},
    merge={"skus_with_demand": SUM, "pick_lines": SUM, "units": SUM},
    description="Per SKU per day: demand units and pick lines, orders, returns, adjustments, cube moved.",
)
def daily_sku_demand(context: dg.AssetExecutionContext, day: dt.date, sales_history: pl.DataFrame) -> Day:
    demand = daily_demand(sales_history)
    return Day(
        demand,
        {
            "skus_with_demand": demand.filter(pl.col("units") > 0).height,
            "pick_lines": int(demand["pick_lines"].sum()),
            "units": float(demand["units"].sum()),
        },
    )
