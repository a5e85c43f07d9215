"""Sales history in warehouse terms.

Valid lines are mapped to the WMS SKU, converted to eaches with the SKU master's case and pallet
quantities, given the SKU hierarchy and cube; and summed per SKU per day. Velocity reads the
daily table, never raw lines. (Reading the ERP's pages into raw lines is the connectors' part:
connectors/erp_pages.py.)
"""

from __future__ import annotations

import polars as pl

from velocity_platform.domain.contracts import (
    DAILY_SKU_DEMAND_SCHEMA,
    RAW_PROVENANCE_SCHEMA,
    RAW_SITE_SCHEMA,
    RAW_TABLE_SCHEMA,
    SALES_HISTORY_SCHEMA,
    conform,
)


def _eaches_per_uom() -> pl.Expr:
    return (
        pl.when(pl.col("uom") == "CS")
        .then(pl.col("case_qty"))
        .when(pl.col("uom") == "PL")
        .then(pl.col("pallet_qty"))
        .otherwise(1)
        .cast(pl.Float64)
    )


def to_sales_history(validated: pl.DataFrame, sku_master: pl.DataFrame) -> pl.DataFrame:
    """Valid lines in warehouse terms: eaches, hierarchy, cube. Unknown SKUs keep null cube."""
    mapped = validated.join(
        sku_master.select("sku_id", "category", "subcategory", "unit_cube_ft3", "case_qty", "pallet_qty"),
        on="sku_id",
        how="left",
    ).with_columns((pl.col("quantity") * _eaches_per_uom()).alias("quantity_eaches"))
    return conform(
        mapped.with_columns((pl.col("quantity_eaches") * pl.col("unit_cube_ft3")).alias("line_cube_ft3")),
        SALES_HISTORY_SCHEMA,
    )


def _is(txn_type: str) -> pl.Expr:
    return pl.col("txn_type") == txn_type


def daily_demand(sales_history: pl.DataFrame) -> pl.DataFrame:
    """Per SKU per day: outbound units and pick lines (demand), returns and adjustments apart."""
    order_units = pl.when(_is("ORDER")).then(pl.col("quantity_eaches")).otherwise(0.0)
    daily = sales_history.group_by("business_date", "sku_id").agg(
        order_units.sum().alias("units"),
        _is("ORDER").sum().cast(pl.Int64).alias("pick_lines"),
        pl.col("txn_id").filter(_is("ORDER")).n_unique().cast(pl.Int64).alias("orders"),
        pl.col("quantity_eaches").filter(_is("RETURN")).sum().alias("returns_units"),
        pl.col("quantity_eaches").filter(_is("ADJUSTMENT")).sum().alias("adjustment_units"),
        (order_units * pl.col("unit_cube_ft3").fill_null(0.0)).sum().alias("cube_ft3"),
    )
    return conform(daily.sort("business_date", "sku_id"), DAILY_SKU_DEMAND_SCHEMA)


# --- raw lines from any source --------------------------------------------------------------


def with_provenance(lines: pl.DataFrame) -> pl.DataFrame:
    """Raw lines (RAW_TRANSACTIONS_SCHEMA, from any source) as the raw table holds them; lines
    without an arrival order take the order they are in."""
    optional = {**RAW_SITE_SCHEMA, **RAW_PROVENANCE_SCHEMA}  # a source that names no warehouse gives null
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in optional.items() if c not in lines.columns]
    lines = conform(lines.with_columns(missing) if missing else lines, RAW_TABLE_SCHEMA)
    return lines if lines["arrival_seq"].null_count() == 0 else in_arrival_order(lines)


def in_arrival_order(lines: pl.DataFrame) -> pl.DataFrame:
    """Number the lines in the order they are in: the order the source delivered them."""
    return lines.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("arrival_seq"))
