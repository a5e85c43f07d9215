"""Record and table contracts shared by every stage.

Frames are described as polars schemas (the hot paths never build per-row objects); single
records that cross a boundary one at a time (a WMS directive, a SKU master row in a test) have a
pydantic model with the same rules, which also serves as the per-record baseline in benchmarks.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field, field_validator, model_validator

# --- vocabulary -------------------------------------------------------------------------------

TXN_TYPES = ("ORDER", "RETURN", "ADJUSTMENT")
UOMS = ("EA", "CS", "PL")
ABC_CLASSES = ("A", "B", "C")
XYZ_CLASSES = ("X", "Y", "Z")
SKU_ID_PATTERN = r"^[A-Z0-9-]{4,20}$"

UTC = "UTC"
TS = pl.Datetime("us", UTC)

# --- asset tables ------------------------------------------------------------------------------

# One row per order line exactly as received (text), with where it came from.
RAW_TRANSACTIONS_SCHEMA = {
    "business_date": pl.Date,
    "source_batch": pl.String,
    "txn_id": pl.String,
    "txn_type": pl.String,
    "customer_id": pl.String,
    "event_ts": pl.String,
    "created_at": pl.String,
    "line_no": pl.String,
    "sku_id": pl.String,
    "quantity": pl.String,
    "uom": pl.String,
}
RAW_FIELDS = [c for c in RAW_TRANSACTIONS_SCHEMA if c not in ("business_date", "source_batch")]

# What the raw_transactions table keeps beside the line fields (null on almost every row):
RAW_PROVENANCE_SCHEMA = {
    # The line exactly as it arrived (JSON), kept only where it did not fit the fields above (a
    # renamed or missing field), so its dead-letter copy shows what the source really sent.
    "raw_payload": pl.String,
    # Set on the one row that stands for a whole unreadable page (the row has no line fields).
    "page_error": pl.String,
    # The line's place in the order the source delivered the day (pages in order, documents and
    # lines in page order). Of two lines with the same key the first one is kept, so the order
    # is stored with the lines rather than left to the table's row order.
    "arrival_seq": pl.Int64,
}
RAW_TABLE_SCHEMA = {**RAW_TRANSACTIONS_SCHEMA, **RAW_PROVENANCE_SCHEMA}

VALIDATED_TRANSACTIONS_SCHEMA = {
    "business_date": pl.Date,
    "txn_id": pl.String,
    "line_no": pl.Int32,
    "txn_type": pl.String,
    "customer_id": pl.String,
    "sku_id": pl.String,
    "quantity": pl.Float64,
    "uom": pl.String,
    "event_ts": TS,
    "created_at": TS,
    "source_batch": pl.String,
}

DEAD_LETTER_SCHEMA = {
    "business_date": pl.Date,
    "source_batch": pl.String,
    "txn_id": pl.String,
    "line_no": pl.String,
    "sku_id": pl.String,
    "raw_payload": pl.String,
    "reasons": pl.List(pl.String),
    "fields": pl.List(pl.String),
    "attempt_count": pl.Int32,
    "first_seen_at": TS,
    "last_seen_at": TS,
}

SKU_MASTER_SCHEMA = {
    "sku_id": pl.String,
    "description": pl.String,
    "category": pl.String,
    "subcategory": pl.String,
    "unit_cube_ft3": pl.Float64,
    "unit_weight_lb": pl.Float64,
    "case_qty": pl.Int32,
    "pallet_qty": pl.Int32,
    "uoms": pl.List(pl.String),  # units of measure this SKU may be ordered in
    "introduced_on": pl.Date,
    "cube_is_default": pl.Boolean,  # True where the source had no cube and a default was filled
}

WMS_LOCATIONS_SCHEMA = {
    "location_id": pl.String,
    "zone": pl.String,
    "aisle": pl.Int32,
    "bay": pl.Int32,
    "side": pl.String,
    "level": pl.Int32,
    "capacity_ft3": pl.Float64,
    "distance_m": pl.Float64,
    "sku_id": pl.String,  # current occupant (null when empty), from the assignments endpoint
}

SALES_HISTORY_SCHEMA = {
    "business_date": pl.Date,
    "txn_id": pl.String,
    "line_no": pl.Int32,
    "txn_type": pl.String,
    "customer_id": pl.String,
    "sku_id": pl.String,
    "category": pl.String,
    "subcategory": pl.String,
    "quantity_eaches": pl.Float64,
    "unit_cube_ft3": pl.Float64,
    "line_cube_ft3": pl.Float64,
    "event_ts": TS,
}

DAILY_SKU_DEMAND_SCHEMA = {
    "business_date": pl.Date,
    "sku_id": pl.String,
    "units": pl.Float64,  # outbound order lines, eaches
    "pick_lines": pl.Int64,
    "orders": pl.Int64,
    "returns_units": pl.Float64,
    "adjustment_units": pl.Float64,
    "cube_ft3": pl.Float64,
}

SKU_VELOCITY_SCHEMA = {
    "business_date": pl.Date,  # the evaluation date D
    "sku_id": pl.String,
    "units_30d": pl.Float64,
    "units_60d": pl.Float64,
    "units_90d": pl.Float64,
    "pick_lines_30d": pl.Int64,
    "orders_30d": pl.Int64,
    "units_7d": pl.Float64,
    "abc_rank": pl.Int64,
    "share_before": pl.Float64,
    "abc_class": pl.String,
    "weekly_mean_12w": pl.Float64,
    "demand_cv": pl.Float64,
    "xyz_class": pl.String,
    "unit_cube_ft3": pl.Float64,
    "cubic_velocity_ft3_per_day": pl.Float64,
    "coi": pl.Float64,
    "seasonality_index": pl.Float64,
    "history_days": pl.Int32,
}

SLOTTING_DIRECTIVES_SCHEMA = {
    "business_date": pl.Date,
    "directive_id": pl.String,
    "sku_id": pl.String,
    "from_location": pl.String,
    "to_location": pl.String,
    "from_zone": pl.String,
    "to_zone": pl.String,
    "reason": pl.String,
    "expected_saving_m_per_day": pl.Float64,  # this move alone: pick lines/day x cost difference
    "priority": pl.Int32,
    "velocity_rank": pl.Int64,  # 1 = the busiest SKU by pick lines over 30 days
    "to_cost_rank": pl.Int64,  # 1 = the cheapest location under the routing
    "enables_saving_m_per_day": pl.Float64,  # a demotion: the saving of the promotion it makes room for
}

WMS_DIRECTIVE_ACKS_SCHEMA = {
    "business_date": pl.Date,
    "directive_id": pl.String,
    "sku_id": pl.String,
    "status": pl.String,  # applied | duplicate | rejected
    "http_status": pl.Int32,
    "ack_id": pl.String,
    "attempts": pl.Int32,
    "acked_at": TS,
    "detail": pl.String,
}


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast to the contract's columns, in order; a missing column is an error."""
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing contract columns {missing}; has {frame.columns}")
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()])


# --- single records ----------------------------------------------------------------------------


class OrderLineRecord(BaseModel):
    """One flattened ERP line (fields as received, text), validated one at a time.

    The same rules as domain.validation's vectorised checks: where a single record is handled,
    and in benchmarks as the per-record baseline the vectorised path is measured against.
    """

    txn_id: str
    line_no: int
    txn_type: Literal["ORDER", "RETURN", "ADJUSTMENT"]
    customer_id: str | None = None
    sku_id: str = Field(pattern=SKU_ID_PATTERN)
    quantity: float
    uom: Literal["EA", "CS", "PL"]
    event_ts: dt.datetime
    created_at: dt.datetime

    @field_validator("txn_id", "txn_type", "sku_id", "uom", mode="before")
    @classmethod
    def _stripped(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("txn_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value:
            raise ValueError("missing or blank")
        return value

    @field_validator("line_no", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> int:
        number = float(str(value).strip())  # "1", "1.0" and 1 are all line 1
        if not math.isfinite(number) or number != int(number) or not 1 <= number < 2**31:
            raise ValueError("not a whole number >= 1")
        return int(number)

    @field_validator("quantity", mode="before")
    @classmethod
    def _finite(cls, value: object) -> float:
        number = float(str(value).strip())
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        return number

    @field_validator("event_ts", "created_at", mode="before")
    @classmethod
    def _iso_with_offset(cls, value: object) -> dt.datetime:
        text = str(value).strip()
        if not _ISO_TS.match(text):
            raise ValueError("not an ISO-8601 UTC timestamp like 2026-03-01T10:15:00Z")
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)

    @model_validator(mode="after")
    def _sign(self) -> OrderLineRecord:
        if self.quantity < 0 and self.txn_type != "ADJUSTMENT":
            raise ValueError("quantity is negative on an ORDER/RETURN line")
        return self


_ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
