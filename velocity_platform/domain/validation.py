"""Vectorised feed validation: raw ERP lines -> (valid typed lines, dead-letter rows with reasons).

Every rule is one polars expression that yields a human-readable reason (naming the field, the
offending value and the fix) or null. The reasons of one line are gathered into a list, so a line
with three problems shows all three. A line is valid when its list is empty. Nothing here loops
over rows, and nothing raises on bad data: whatever the input, each line ends in exactly one of
the two outputs.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import polars as pl

from velocity_platform.domain.contracts import (
    DEAD_LETTER_SCHEMA,
    LINE_NO_END,
    LINE_NO_MIN,
    LINE_RULES,
    RAW_FIELDS,
    RAW_PROVENANCE_SCHEMA,
    TS,
    VALIDATED_TRANSACTIONS_SCHEMA,
    LineRule,
    conform,
)


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


_UNEXPECTED = "__unexpected_fields"


def _drift_hint() -> pl.Expr:
    """For a missing field: the fields the line carried that the contract does not know (a rename?)."""
    return (
        pl.when(pl.col(_UNEXPECTED).list.len() > 0)
        .then(
            pl.lit(" (the line as received has unexpected field(s) ")
            + pl.col(_UNEXPECTED).list.join(", ")
            + pl.lit(": renamed at the source? map it back in the ERP export)")
        )
        .otherwise(pl.lit(""))
    )


def _shown(name: str) -> pl.Expr:
    """The raw value as it should appear inside a reason (quoted, or <missing> with a drift hint)."""
    return pl.when(pl.col(name).is_null()).then(pl.lit("<missing>") + _drift_hint()).otherwise(
        pl.lit("'") + pl.col(name).str.slice(0, 40) + pl.lit("'")
    )


def _unexpected_fields() -> pl.Expr:
    """Field names in a line's raw JSON that the contract does not know (empty where no raw was kept)."""
    keys = pl.col("raw_payload").str.extract_all(r'"[^"\\]+"\s*:').list.eval(
        pl.element().str.strip_chars_end(": ").str.strip_chars('"')
    )
    known = pl.lit(RAW_FIELDS + ["warehouse_id", "lines", "line", "document"], dtype=pl.List(pl.String))
    return keys.list.set_difference(known).list.sort().fill_null(pl.lit([], dtype=pl.List(pl.String)))


def parse_quantity(name: str = "quantity") -> pl.Expr:
    value = _text(name).cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value)


def parse_line_no(name: str = "line_no") -> pl.Expr:
    as_float = _text(name).cast(pl.Float64, strict=False)
    is_whole = (
        as_float.is_finite() & (as_float == as_float.floor()) & (as_float >= LINE_NO_MIN) & (as_float < LINE_NO_END)
    )
    return pl.when(is_whole).then(as_float.cast(pl.Int32, strict=False))


def parse_utc_timestamp(name: str) -> pl.Expr:
    """ISO-8601 with a Z or numeric offset, normalised to UTC; anything else is null."""
    text = _text(name).str.replace(r"Z$", "+00:00")
    with_offset = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
    return with_offset.dt.convert_time_zone("UTC").cast(TS)


# --- rules --------------------------------------------------------------------------------------
#
# The rules are contracts.LINE_RULES (the table the per-record model applies too), compiled here
# to polars: a rule becomes a field, a failure test over the parsed columns, and a message. The
# tests run over every line and are cheap (booleans); messages are built only for the few
# rejected lines.

# How each kind of rule parses its field: text in, typed value or null out.
_PARSE = {
    "present": _text,
    "one_of": _text,
    "pattern": _text,
    "whole_number": parse_line_no,
    "finite_number": parse_quantity,
    "utc_timestamp": parse_utc_timestamp,
}
_PARSED = {rule.field: _PARSE[rule.kind](rule.field) for rule in LINE_RULES if rule.kind != "sign"}


def _p(name: str) -> pl.Expr:
    return pl.col(f"__parsed_{name}")


@dataclass(frozen=True)
class Rule:
    name: str
    field: str
    failed: pl.Expr
    message: pl.Expr

    def reason(self) -> pl.Expr:
        return pl.when(pl.col(self.name)).then(pl.lit(f"{self.field}: ") + self.message)


def _compiled(rule: LineRule) -> Rule:
    """One row of LINE_RULES as a polars failure test and message."""
    parsed = _p(rule.field)
    if rule.kind == "present":
        failed, message = parsed.fill_null("") == "", pl.lit(rule.problem) + _drift_hint()
    elif rule.kind in ("whole_number", "finite_number", "utc_timestamp"):
        failed = parsed.is_null()  # the parser gives null for whatever is not one
    elif rule.kind == "one_of":
        failed = ~parsed.is_in(list(rule.allowed)).fill_null(False)
    elif rule.kind == "pattern":
        failed = ~_matches(rule)
    elif rule.kind == "sign":
        failed = (parsed < 0).fill_null(False) & ~_p("txn_type").is_in(list(rule.allowed)).fill_null(False)
    else:
        raise ValueError(f"no vectorised check for rule kind {rule.kind!r} ({rule.field})")
    if rule.kind != "present":
        message = _shown(rule.field) + pl.lit(rule.problem)
    return Rule(f"__bad_{rule.field}_{rule.kind}", rule.field, failed, message)


def _matches(rule: LineRule) -> pl.Expr:
    return _p(rule.field).str.contains(rule.pattern).fill_null(False)


@functools.cache  # the same expressions every time; the exception service validates many small batches
def rules(known_skus: bool) -> list[Rule]:
    checks = [_compiled(rule) for rule in LINE_RULES]
    if known_skus:
        # Only for a SKU code of the right shape and a unit of measure that exists: otherwise the
        # line already has its reason.
        [sku_shape] = [rule for rule in LINE_RULES if rule.field == "sku_id" and rule.kind == "pattern"]
        [uom_known] = [rule for rule in LINE_RULES if rule.field == "uom" and rule.kind == "one_of"]
        sku_shape_ok = _matches(sku_shape)
        uom_ok = _p("uom").is_in(list(uom_known.allowed)).fill_null(False)
        checks += [
            Rule(
                "__unknown_sku",
                "sku_id",
                sku_shape_ok & ~pl.col("__sku_known"),
                _shown("sku_id") + pl.lit(" is not in the SKU master; refresh sku_master or fix the code"),
            ),
            Rule(
                "__uom_not_sold",
                "uom",
                sku_shape_ok & uom_ok & pl.col("__sku_known") & ~pl.col("__uom_sold"),
                _shown("uom") + pl.lit(" is not a unit of measure this SKU is sold in (see sku_master.uoms)"),
            ),
        ]
    # A later line with the same (txn_id, line_no) as an earlier one, in arrival order.
    is_keyed = _p("txn_id").is_not_null() & _p("line_no").is_not_null()
    checks.append(
        Rule(
            "__duplicate_key",
            "txn_id,line_no",
            is_keyed & ~pl.struct(_p("txn_id"), _p("line_no")).is_first_distinct(),
            pl.lit("duplicate of an earlier line with the same (txn_id, line_no); the first one was kept"),
        )
    )
    return checks


def _with_master(frame: pl.DataFrame, sku_master: pl.DataFrame) -> pl.DataFrame:
    """Flags: is the SKU known, and is the line's UoM one it is sold in (one hash join)."""
    # Only the master's rows of the SKUs on these lines: a read of a few dozen lines against a
    # master of 100k SKUs would otherwise hash every SKU each time.
    on_lines = sku_master.filter(pl.col("sku_id").is_in(frame["__parsed_sku_id"].drop_nulls().unique().implode()))
    master = on_lines.select(
        pl.col("sku_id").alias("__parsed_sku_id"), pl.col("uoms").alias("__uoms"), pl.lit(True).alias("__sku_known")
    ).unique("__parsed_sku_id", keep="first")
    return (
        frame.join(master, on="__parsed_sku_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("__sku_known").fill_null(False),
            pl.col("__uoms").list.contains(pl.col("__parsed_uom")).fill_null(False).alias("__uom_sold"),
        )
        .drop("__uoms")
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
    must be known and the UoM one it is sold in. Arrival order (`arrival_seq` where present, else
    row order) decides which duplicate is kept.
    """
    if "arrival_seq" in raw.columns and not raw["arrival_seq"].is_sorted():
        raw = raw.sort("arrival_seq", nulls_last=True, maintain_order=True)
    absent = [pl.lit(None, dtype=t).alias(c) for c, t in RAW_PROVENANCE_SCHEMA.items() if c not in raw.columns]
    frame = raw.with_columns(*absent, *(expr.alias(f"__parsed_{name}") for name, expr in _PARSED.items()))
    if sku_master is not None:
        frame = _with_master(frame, sku_master)
    checks = rules(known_skus=sku_master is not None)
    is_page = pl.col("page_error").is_not_null()
    judged = frame.with_columns(rule.failed.alias(rule.name) for rule in checks).with_columns(
        (pl.any_horizontal(rule.name for rule in checks) | is_page).alias("__rejected")
    )
    valid = judged.filter(~pl.col("__rejected")).with_columns(
        _p(name).alias(name) for name in _PARSED
    )
    rejected = judged.filter(pl.col("__rejected"))
    if rejected.is_empty():  # the usual case: no reasons to build (the exception service reads every few ms)
        return ValidationResult(
            valid=conform(valid, VALIDATED_TRANSACTIONS_SCHEMA), rejects=pl.DataFrame(schema=DEAD_LETTER_SCHEMA)
        )
    seen = pl.lit(seen_at).cast(TS)
    # A row standing for a whole unreadable page has one reason, the page's: line rules do not apply.
    rejects = rejected.with_columns(_unexpected_fields().alias(_UNEXPECTED)).with_columns(
        pl.when(is_page)
        .then(pl.concat_list(pl.col("page_error")))
        .otherwise(pl.concat_list(rule.reason() for rule in checks).list.drop_nulls())
        .alias("reasons"),
        pl.when(is_page)
        # A row standing for one line of a file that could not be parsed (its source batch names
        # the line) is one broken line, counted like any dead letter; 'document' is one ERP document
        # unreadable alone (a broken page narrowed down), counted like one too; 'page' is a page lost whole.
        .then(
            pl.concat_list(
                pl.when(pl.col("source_batch").str.contains(r":line-\d+$"))
                .then(pl.lit("line"))
                .when(pl.col("source_batch").str.ends_with(":document"))
                .then(pl.lit("document"))
                .otherwise(pl.lit("page"))
            )
        )
        .otherwise(
            pl.concat_list(pl.when(pl.col(rule.name)).then(pl.lit(rule.field)) for rule in checks).list.drop_nulls()
        )
        .alias("fields"),
        # What arrived: the raw JSON where the line did not fit the contract, else its fields as text.
        pl.coalesce(pl.col("raw_payload"), pl.struct(RAW_FIELDS).struct.json_encode()).alias("raw_payload"),
        pl.lit(attempt_count, dtype=pl.Int32).alias("attempt_count"),
        seen.alias("first_seen_at"),
        seen.alias("last_seen_at"),
    )
    return ValidationResult(
        valid=conform(valid, VALIDATED_TRANSACTIONS_SCHEMA),
        rejects=conform(rejects, DEAD_LETTER_SCHEMA),
    )


def carry_dead_letter_history(rejects: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """Carry attempt counts and first-seen times from the partition's previous dead letters.

    A line is the same dead letter when its raw payload is identical (the n-th copy of a payload
    matches the n-th copy before, so repeated lines stay apart). Its attempt_count grows by this
    run's, first_seen_at keeps the earliest, last_seen_at is now. Lines fixed at the source are
    no longer rejected, so they simply drop out.
    """
    if previous is None or previous.is_empty() or rejects.is_empty():
        return rejects
    # Several business dates at once (a backfill range): each date against its own dead letters.
    same = ["business_date", "raw_payload"] if "business_date" in previous.columns else ["raw_payload"]
    occurrence = pl.int_range(pl.len()).over(same).alias("__occurrence")
    before = previous.select(
        *same,
        occurrence,
        pl.col("attempt_count").alias("__attempts_before"),
        pl.col("first_seen_at").cast(TS).alias("__first_seen_before"),
    )
    carried = (
        rejects.with_columns(occurrence)
        .join(before, on=[*same, "__occurrence"], how="left", maintain_order="left")
        .with_columns(
            (pl.col("attempt_count") + pl.col("__attempts_before").fill_null(0)).cast(pl.Int32).alias("attempt_count"),
            pl.coalesce("__first_seen_before", "first_seen_at").alias("first_seen_at"),
        )
    )
    return conform(carried, DEAD_LETTER_SCHEMA)
