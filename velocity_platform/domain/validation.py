"""Vectorised feed validation: raw ERP lines -> (valid typed lines, dead-letter rows with reasons).

Every rule is one polars expression that yields a human-readable reason (naming the field, the
offending value and the fix) or null. The reasons of one line are gathered into a list, so a line
with three problems shows all three. A line is valid when its list is empty. Nothing here loops
over rows, and nothing raises on bad data: whatever the input, each line ends in exactly one of
the two outputs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from velocity_platform.domain.contracts import (
    DEAD_LETTER_SCHEMA,
    RAW_FIELDS,
    SKU_ID_PATTERN,
    TS,
    TXN_TYPES,
    UOMS,
    VALIDATED_TRANSACTIONS_SCHEMA,
    conform,
)

_ROW = "__arrival_order"


@dataclass(frozen=True)
class ValidationResult:
    valid: pl.DataFrame
    rejects: pl.DataFrame

    @property
    def total(self) -> int:
        return self.valid.height + self.rejects.height

    @property
    def dlq_rate(self) -> float:
        return self.rejects.height / self.total if self.total else 0.0

    def reason_counts(self) -> dict[str, int]:
        """Rejects per rule (the field named by each reason), for metadata and summaries."""
        if self.rejects.is_empty():
            return {}
        counts = (
            self.rejects.select(pl.col("fields").list.unique().explode().alias("field"))
            .drop_nulls()
            .group_by("field")
            .len()
            .sort("len", descending=True)
        )
        return dict(zip(counts["field"].to_list(), counts["len"].to_list(), strict=True))


# --- parsing helpers: text in, typed value or null out -----------------------------------------


def _text(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars()


def _shown(name: str) -> pl.Expr:
    """The raw value as it should appear inside a reason (quoted, or <missing>)."""
    return pl.when(pl.col(name).is_null()).then(pl.lit("<missing>")).otherwise(
        pl.lit("'") + pl.col(name).str.slice(0, 40) + pl.lit("'")
    )


def parse_quantity(name: str = "quantity") -> pl.Expr:
    value = _text(name).cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value)


def parse_line_no(name: str = "line_no") -> pl.Expr:
    as_float = _text(name).cast(pl.Float64, strict=False)
    is_whole = as_float.is_finite() & (as_float == as_float.floor()) & (as_float >= 1) & (as_float < 2**31)
    return pl.when(is_whole).then(as_float.cast(pl.Int32, strict=False))


def parse_utc_timestamp(name: str) -> pl.Expr:
    """ISO-8601 with a Z or numeric offset, normalised to UTC; anything else is null."""
    text = _text(name).str.replace(r"Z$", "+00:00")
    with_offset = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
    return with_offset.dt.convert_time_zone("UTC").cast(TS)


# --- rules: each returns (reason expression or null, field name) --------------------------------


def _rule(failed: pl.Expr, field: str, message: pl.Expr) -> tuple[pl.Expr, str]:
    return pl.when(failed).then(pl.lit(f"{field}: ") + message), field


def rules(known_skus: bool) -> list[tuple[pl.Expr, str]]:
    txn_type_ok = _text("txn_type").is_in(list(TXN_TYPES))
    quantity = parse_quantity()
    checks = [
        _rule(
            _text("txn_id").fill_null("") == "",
            "txn_id",
            pl.lit("missing or blank; every ERP document needs its id (fix the export)"),
        ),
        _rule(
            parse_line_no().is_null(),
            "line_no",
            _shown("line_no") + pl.lit(" is not a whole number >= 1; number the document's lines 1..n"),
        ),
        _rule(
            ~txn_type_ok.fill_null(False),
            "txn_type",
            _shown("txn_type") + pl.lit(f" is not one of {', '.join(TXN_TYPES)}"),
        ),
        _rule(
            ~_text("sku_id").str.contains(SKU_ID_PATTERN).fill_null(False),
            "sku_id",
            _shown("sku_id")
            + pl.lit(" must be 4-20 characters of A-Z, 0-9 and '-'; correct the SKU code in the ERP"),
        ),
        _rule(
            quantity.is_null(),
            "quantity",
            _shown("quantity") + pl.lit(" is not a finite number"),
        ),
        _rule(
            quantity.is_not_null() & (quantity < 0) & (_text("txn_type") != "ADJUSTMENT").fill_null(True),
            "quantity",
            _shown("quantity") + pl.lit(" is negative on an ORDER/RETURN line; only ADJUSTMENT lines may be negative"),
        ),
        _rule(
            ~_text("uom").is_in(list(UOMS)).fill_null(False),
            "uom",
            _shown("uom") + pl.lit(f" is not a unit of measure ({', '.join(UOMS)})"),
        ),
        _rule(
            parse_utc_timestamp("event_ts").is_null(),
            "event_ts",
            _shown("event_ts") + pl.lit(" is not an ISO-8601 UTC timestamp like 2026-03-01T10:15:00Z"),
        ),
        _rule(
            parse_utc_timestamp("created_at").is_null(),
            "created_at",
            _shown("created_at") + pl.lit(" is not an ISO-8601 UTC timestamp like 2026-03-01T10:15:00Z"),
        ),
    ]
    if known_skus:
        sku_shape_ok = _text("sku_id").str.contains(SKU_ID_PATTERN).fill_null(False)
        uom_ok = _text("uom").is_in(list(UOMS)).fill_null(False)
        checks += [
            _rule(
                sku_shape_ok & pl.col("__sku_uoms").is_null(),
                "sku_id",
                _shown("sku_id") + pl.lit(" is not in the SKU master; refresh sku_master or fix the code"),
            ),
            _rule(
                sku_shape_ok
                & uom_ok
                & pl.col("__sku_uoms").is_not_null()
                & ~pl.col("__sku_uoms").list.contains(_text("uom")).fill_null(False),
                "uom",
                _shown("uom") + pl.lit(" is not a unit of measure this SKU is sold in (see sku_master.uoms)"),
            ),
        ]
    return checks


def _duplicate_rule() -> tuple[pl.Expr, str]:
    """A later line with the same (txn_id, line_no) as an earlier one in arrival order."""
    key = [_text("txn_id"), parse_line_no()]
    later = pl.int_range(pl.len()).over(key) > 0
    is_keyed = _text("txn_id").is_not_null() & parse_line_no().is_not_null()
    return _rule(
        is_keyed & later,
        "txn_id,line_no",
        pl.lit("duplicate of an earlier line with the same (txn_id, line_no); the first one was kept"),
    )


# --- the entry point ---------------------------------------------------------------------------


def validate_lines(
    raw: pl.DataFrame,
    sku_master: pl.DataFrame | None,
    seen_at: dt.datetime,
    attempt_count: int = 1,
) -> ValidationResult:
    """Split raw lines into typed valid lines and dead-letter rows.

    `raw` follows RAW_TRANSACTIONS_SCHEMA (all text). With `sku_master` (sku_id, uoms) the SKU
    must be known and the UoM one it is sold in. Arrival order decides which duplicate is kept.
    """
    frame = raw.with_row_index(_ROW)
    if sku_master is not None:
        frame = frame.join(
            sku_master.select(pl.col("sku_id").alias("__sku_key"), pl.col("uoms").alias("__sku_uoms")),
            left_on=_text("sku_id"),
            right_on="__sku_key",
            how="left",
            maintain_order="left",
        )
    checks = [*rules(known_skus=sku_master is not None), _duplicate_rule()]
    reasons = pl.concat_list([expr for expr, _ in checks]).list.drop_nulls()
    fields = pl.concat_list(
        [pl.when(expr.is_not_null()).then(pl.lit(field)) for expr, field in checks]
    ).list.drop_nulls()
    judged = frame.with_columns(reasons.alias("reasons"), fields.alias("fields"))
    is_valid = pl.col("reasons").list.len() == 0

    valid = judged.filter(is_valid).with_columns(
        _text("txn_id").alias("txn_id"),
        parse_line_no().alias("line_no"),
        _text("txn_type").alias("txn_type"),
        _text("sku_id").alias("sku_id"),
        parse_quantity().alias("quantity"),
        _text("uom").alias("uom"),
        parse_utc_timestamp("event_ts").alias("event_ts"),
        parse_utc_timestamp("created_at").alias("created_at"),
    )
    seen = pl.lit(seen_at).cast(TS)
    rejects = judged.filter(~is_valid).with_columns(
        pl.struct(RAW_FIELDS).struct.json_encode().alias("raw_payload"),
        pl.lit(attempt_count, dtype=pl.Int32).alias("attempt_count"),
        seen.alias("first_seen_at"),
        seen.alias("last_seen_at"),
    )
    return ValidationResult(
        valid=conform(valid, VALIDATED_TRANSACTIONS_SCHEMA),
        rejects=conform(rejects, DEAD_LETTER_SCHEMA),
    )
