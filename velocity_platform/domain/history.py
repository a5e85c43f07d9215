"""Sales history in warehouse terms.

ERP order documents (nested lines) are flattened to one row per line; valid lines are mapped to
the WMS SKU, converted to eaches with the SKU master's case and pallet quantities, given the SKU
hierarchy and cube; and summed per SKU per day. Velocity reads the daily table, never raw lines.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import polars as pl

from velocity_platform.domain.contracts import (
    DAILY_SKU_DEMAND_SCHEMA,
    ERP_PAGE_SCHEMA,
    RAW_TRANSACTIONS_SCHEMA,
    SALES_HISTORY_SCHEMA,
    SKU_MASTER_SCHEMA,
    WMS_LOCATIONS_SCHEMA,
    conform,
    empty_frame,
)

DOCUMENT_FIELDS = ["txn_id", "txn_type", "customer_id", "event_ts", "created_at"]


def parse_erp_page(body: bytes) -> pl.DataFrame:
    """One ERP page -> one row per document, every leaf as text. Raises on invalid JSON."""
    page = pl.read_json(io.BytesIO(body), schema=ERP_PAGE_SCHEMA)
    return page.select(pl.col("records").explode()).unnest("records").filter(
        pl.any_horizontal(pl.all().is_not_null())
    )


def drop_repeated_documents(documents: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop documents served again by the ERP's paging (same id and identical content).

    A repeat is the same record delivered twice, not a second record: counting it would break
    reconciliation with the ERP. Two different documents under one id are both kept, so that
    validation dead-letters the conflicting lines instead of hiding them.
    """
    content = pl.struct([c for c in documents.columns if c != "source_batch"]).hash(seed=0)
    kept = documents.filter(content.is_first_distinct())
    return kept, documents.height - kept.height


def flatten_documents(documents: pl.DataFrame, business_date: dt.date) -> pl.DataFrame:
    """Documents (with nested `lines`) -> RAW_TRANSACTIONS_SCHEMA, one row per line.

    A document whose `lines` is missing becomes one line with empty line fields, so it is
    dead-lettered ("line_no missing") rather than vanishing. An empty list holds no line.
    """
    no_lines = pl.col("lines").is_null()
    lines = (
        documents.with_columns(
            pl.when(no_lines)
            .then(pl.lit([None], dtype=documents.schema["lines"]))
            .otherwise(pl.col("lines"))
            .alias("lines")
        )
        .explode("lines")
        .filter(pl.col("lines").is_not_null() | no_lines)
    )
    return conform(
        lines.unnest("lines").with_columns(pl.lit(business_date).alias("business_date")),
        RAW_TRANSACTIONS_SCHEMA,
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


# --- pages and reference data --------------------------------------------------------------


@dataclass(frozen=True)
class IngestedDay:
    lines: pl.DataFrame  # RAW_TRANSACTIONS_SCHEMA
    pages: int
    documents: int
    repeated_documents: int


def raw_lines_from_pages(pages: list[tuple[str, bytes]], business_date: dt.date) -> IngestedDay:
    """Parse every page of a business date and flatten it to raw lines, in arrival order."""
    parsed = [parse_erp_page(body).with_columns(pl.lit(batch).alias("source_batch")) for batch, body in pages]
    documents = pl.concat(parsed, how="vertical") if parsed else _empty_documents()
    kept, repeated = drop_repeated_documents(documents)
    return IngestedDay(flatten_documents(kept, business_date), len(pages), kept.height, repeated)


def _empty_documents() -> pl.DataFrame:
    schema = dict(ERP_PAGE_SCHEMA["records"].inner.to_schema())
    return pl.DataFrame(schema={**schema, "source_batch": pl.String})


def sku_master_from_records(records: list[dict]) -> pl.DataFrame:
    """The ERP's SKU rows as SKU_MASTER_SCHEMA; cube comes from the ERP, so it is not a default."""
    if not records:
        return empty_frame(SKU_MASTER_SCHEMA)
    frame = pl.from_dicts(records, infer_schema_length=None).with_columns(
        pl.col("introduced_on").str.to_date(),
        pl.lit(False).alias("cube_is_default"),
    )
    return conform(frame, SKU_MASTER_SCHEMA).sort("sku_id")


def locations_from_records(locations: list[dict], assignments: list[dict]) -> pl.DataFrame:
    """The WMS location master with each location's current occupant (null when empty)."""
    master = pl.from_dicts(locations, infer_schema_length=None)
    occupants = (
        pl.from_dicts(assignments, infer_schema_length=None).select("location_id", "sku_id")
        if assignments
        else pl.DataFrame(schema={"location_id": pl.String, "sku_id": pl.String})
    )
    return conform(master.join(occupants, on="location_id", how="left"), WMS_LOCATIONS_SCHEMA).sort("location_id")
