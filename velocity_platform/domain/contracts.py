"""Record and table contracts shared by every stage.

Frames are described as polars schemas (the hot paths never build per-row objects). The rules of
an order line are one table, LINE_RULES: domain.validation compiles it to polars expressions for
frames, and the pydantic OrderLineRecord applies it to a single record (the per-record baseline
in benchmarks), so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, BeforeValidator, StringConstraints, model_validator

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
# The warehouse a line belongs to, as its source names it (the ERP document's `warehouse_id`, a
# file preset's mapping). Null where the source names none: a one-warehouse deployment's lines.
RAW_SITE_SCHEMA = {"warehouse_id": pl.String}
RAW_TABLE_SCHEMA = {**RAW_TRANSACTIONS_SCHEMA, **RAW_SITE_SCHEMA, **RAW_PROVENANCE_SCHEMA}

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
    "demand_cv": pl.Float64,  # null: not yet classified (fewer than xyz_min_weeks weeks on sale)
    "xyz_class": pl.String,  # X / Y / Z, or null: not yet classified
    "xyz_weeks": pl.Int32,  # whole weeks the SKU could have sold in, of the 12 XYZ weeks
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
    "velocity_rank": pl.Int64,  # 1 = the busiest SKU by expected pick lines per day
    "to_cost_rank": pl.Int64,  # 1 = the cheapest location under the routing
    "enables_saving_m_per_day": pl.Float64,  # a demotion: the saving of the promotion it makes room for
    "expected_pick_lines_per_day": pl.Float64,  # the rate the move is planned on (pick_rate)
    "relocations": pl.Int32,  # 0 for a new SKU's first slot (a putaway that happens anyway), else 1
    "payback_days": pl.Float64,  # days of expected saving that repay the relocation(s); 0 for a putaway
    "net_saving_h": pl.Float64,  # walking saved over the payback horizon less relocation time, hours
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


# --- the rules of an order line -----------------------------------------------------------------
#
# One row per rule, in the order a dead letter lists its reasons. `problem` follows the value as
# received (or stands alone for a missing id) and names the fix.

# What a valid value is, per kind of rule (each engine implements each kind once):
#   present        text that is not blank after trimming
#   whole_number   a whole number in [LINE_NO_MIN, LINE_NO_END) ("1", "1.0" and 1 are all 1)
#   one_of         trimmed text, one of `allowed`
#   pattern        trimmed text matching `pattern`
#   finite_number  a finite number
#   utc_timestamp  ISO-8601 with Z or a numeric offset (ISO_UTC_TIMESTAMP), normalised to UTC
#   sign           the field may be below zero only on the transaction types in `allowed`
RuleKind = Literal["present", "whole_number", "one_of", "pattern", "finite_number", "utc_timestamp", "sign"]
LINE_NO_MIN, LINE_NO_END = 1, 2**31
ISO_UTC_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_NOT_A_TIMESTAMP = " is not an ISO-8601 UTC timestamp like 2026-03-01T10:15:00Z"


@dataclass(frozen=True)
class LineRule:
    field: str
    kind: RuleKind
    problem: str
    allowed: tuple[str, ...] = ()
    pattern: str = ""


LINE_RULES = (
    LineRule("txn_id", "present", "missing or blank; every ERP document needs its id (fix the export)"),
    LineRule("line_no", "whole_number", " is not a whole number >= 1; number the document's lines 1..n"),
    LineRule("txn_type", "one_of", f" is not one of {', '.join(TXN_TYPES)}", allowed=TXN_TYPES),
    LineRule(
        "sku_id",
        "pattern",
        " must be 4-20 characters of A-Z, 0-9 and '-'; correct the SKU code in the ERP",
        pattern=SKU_ID_PATTERN,
    ),
    LineRule("quantity", "finite_number", " is not a finite number"),
    LineRule(
        "quantity",
        "sign",
        " is negative on an ORDER/RETURN line; only ADJUSTMENT lines may be negative",
        allowed=("ADJUSTMENT",),
    ),
    LineRule("uom", "one_of", f" is not a unit of measure ({', '.join(UOMS)})", allowed=UOMS),
    LineRule("event_ts", "utc_timestamp", _NOT_A_TIMESTAMP),
    LineRule("created_at", "utc_timestamp", _NOT_A_TIMESTAMP),
)


# --- single records: the same table applied one value at a time -------------------------------


def _trimmed(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# Each kind of rule as a check of one value: made once per field, returning the value as parsed or
# raising ValueError with the rule's problem.


def _present(rule: LineRule) -> Callable[[object], object]:
    def check(value: object) -> object:
        value = value.strip() if isinstance(value, str) else value
        if not value:
            raise ValueError(rule.problem)
        return value

    return check


def _whole_number(rule: LineRule) -> Callable[[object], int]:
    def check(value: object) -> int:
        number = float(str(value).strip())  # "1", "1.0" and 1 are all line 1
        if not math.isfinite(number) or number != int(number) or not LINE_NO_MIN <= number < LINE_NO_END:
            raise ValueError(rule.problem.strip())
        return int(number)

    return check


def _finite_number(rule: LineRule) -> Callable[[object], float]:
    def check(value: object) -> float:
        number = float(str(value).strip())
        if not math.isfinite(number):
            raise ValueError(rule.problem.strip())
        return number

    return check


_ISO_UTC_TIMESTAMP = re.compile(ISO_UTC_TIMESTAMP)


def _utc_timestamp(rule: LineRule) -> Callable[[object], dt.datetime]:
    def check(value: object) -> dt.datetime:
        text = str(value).strip()
        if not _ISO_UTC_TIMESTAMP.match(text):
            raise ValueError(rule.problem.strip())
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)

    return check


def _ruled(field: str) -> Any:
    """The type of a field of OrderLineRecord with its rule from LINE_RULES attached.

    Where pydantic has the constraint itself (a fixed set of values, a pattern) it checks it in
    its compiled core; the other kinds run the rule's check above.
    """
    rule = _VALUE_RULES[field]
    if rule.kind == "one_of":
        return Annotated[Literal[rule.allowed], BeforeValidator(_trimmed)]
    if rule.kind == "pattern":
        return Annotated[str, BeforeValidator(_trimmed), StringConstraints(pattern=rule.pattern)]
    python_type, check = {
        "present": (str, _present),
        "whole_number": (int, _whole_number),
        "finite_number": (float, _finite_number),
        "utc_timestamp": (dt.datetime, _utc_timestamp),
    }[rule.kind]
    return Annotated[python_type, BeforeValidator(check(rule))]


# The value rules by field (the sign rule relates two fields: it runs on the whole record).
_VALUE_RULES = {rule.field: rule for rule in LINE_RULES if rule.kind != "sign"}
_SIGN_RULES = [rule for rule in LINE_RULES if rule.kind == "sign"]
TxnId, LineNo, TxnType, SkuId = _ruled("txn_id"), _ruled("line_no"), _ruled("txn_type"), _ruled("sku_id")
Quantity, Uom, EventTs, CreatedAt = _ruled("quantity"), _ruled("uom"), _ruled("event_ts"), _ruled("created_at")


class OrderLineRecord(BaseModel):
    """One flattened ERP line (fields as received, text), validated one at a time by LINE_RULES.

    Where a single record is handled, and in benchmarks as the per-record baseline the
    vectorised path (domain.validation, the same table) is measured against.
    """

    txn_id: TxnId
    line_no: LineNo
    txn_type: TxnType
    customer_id: str | None = None
    sku_id: SkuId
    quantity: Quantity
    uom: Uom
    event_ts: EventTs
    created_at: CreatedAt

    @model_validator(mode="after")
    def _sign(self) -> OrderLineRecord:
        for rule in _SIGN_RULES:
            if getattr(self, rule.field) < 0 and self.txn_type not in rule.allowed:
                raise ValueError(f"{rule.field}{rule.problem}")
        return self
