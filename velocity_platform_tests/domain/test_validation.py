"""Feed validation: every line ends valid or dead-lettered with a reason naming the field."""

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from velocity_platform.domain.contracts import (
    DEAD_LETTER_SCHEMA,
    LINE_RULES,
    RAW_TRANSACTIONS_SCHEMA,
    VALIDATED_TRANSACTIONS_SCHEMA,
    OrderLineRecord,
)
from velocity_platform.domain.validation import validate_lines

SEEN = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 3, 1)
MASTER = pl.DataFrame(
    {"sku_id": ["SKU-0001", "SKU-0002"], "uoms": [["EA", "CS"], ["EA"]]},
    schema={"sku_id": pl.String, "uoms": pl.List(pl.String)},
)


def line(**overrides) -> dict:
    base = {
        "business_date": DAY,
        "source_batch": "erp:2026-03-01:page-0001",
        "txn_id": "SO-1",
        "txn_type": "ORDER",
        "customer_id": "C1",
        "event_ts": "2026-03-01T10:15:00Z",
        "created_at": "2026-03-01T10:15:04Z",
        "line_no": "1",
        "sku_id": "SKU-0001",
        "quantity": "3",
        "uom": "EA",
    }
    return {**base, **overrides}


def frame(*lines: dict) -> pl.DataFrame:
    return pl.DataFrame(list(lines), schema=RAW_TRANSACTIONS_SCHEMA)


def test_a_clean_line_is_typed():
    result = validate_lines(frame(line(quantity="2.5", uom="CS", event_ts="2026-03-01T11:15:00+01:00")), MASTER, SEEN)
    assert result.rejects.is_empty()
    row = result.valid.row(0, named=True)
    assert row["line_no"] == 1 and row["quantity"] == 2.5
    assert row["event_ts"] == dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.UTC)
    assert result.valid.schema == pl.Schema(VALIDATED_TRANSACTIONS_SCHEMA)


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"sku_id": "sku-1"}, "sku_id", "'sku-1' must be 4-20 characters"),
        ({"sku_id": "ABC"}, "sku_id", "4-20 characters"),
        ({"sku_id": "SKU-9999"}, "sku_id", "not in the SKU master"),
        ({"txn_type": "SALE"}, "txn_type", "'SALE' is not one of"),
        ({"uom": "BX"}, "uom", "'BX' is not a unit of measure"),
        ({"uom": "PL"}, "uom", "not a unit of measure this SKU is sold in"),
        ({"quantity": "abc"}, "quantity", "'abc' is not a finite number"),
        ({"quantity": "NaN"}, "quantity", "not a finite number"),
        ({"quantity": "-1"}, "quantity", "negative on an ORDER/RETURN line"),
        ({"line_no": None}, "line_no", "<missing> is not a whole number"),
        ({"line_no": "1.5"}, "line_no", "not a whole number"),
        ({"txn_id": "  "}, "txn_id", "missing or blank"),
        ({"event_ts": "31/12/2026 25:00"}, "event_ts", "not an ISO-8601 UTC timestamp"),
        ({"created_at": "2026-03-01 10:15:00"}, "created_at", "not an ISO-8601 UTC timestamp"),
    ],
)
def test_each_rule_names_field_value_and_fix(overrides, field, fragment):
    result = validate_lines(frame(line(**overrides)), MASTER, SEEN)
    assert result.valid.is_empty()
    reject = result.rejects.row(0, named=True)
    assert field in reject["fields"]
    assert any(fragment in reason for reason in reject["reasons"])
    assert reject["raw_payload"].startswith("{") and reject["attempt_count"] == 1


def test_adjustments_may_be_negative():
    result = validate_lines(frame(line(txn_type="ADJUSTMENT", quantity="-4")), MASTER, SEEN)
    assert result.valid.height == 1


def test_all_reasons_of_a_line_are_kept():
    result = validate_lines(frame(line(sku_id="x", quantity="abc", uom="BOX")), MASTER, SEEN)
    assert set(result.rejects["fields"][0]) == {"sku_id", "quantity", "uom"}


def test_duplicate_key_keeps_the_first_in_arrival_order():
    first = line(quantity="1")
    again = line(quantity="7", source_batch="erp:2026-03-01:page-0002")
    other = line(line_no="2")
    result = validate_lines(frame(first, again, other), MASTER, SEEN)
    assert result.valid["quantity"].to_list() == [1.0, 3.0]
    assert result.rejects.height == 1
    assert result.rejects["source_batch"][0] == "erp:2026-03-01:page-0002"
    assert result.rejects["fields"][0].to_list() == ["txn_id,line_no"]


def test_without_a_master_the_sku_is_only_shape_checked():
    result = validate_lines(frame(line(sku_id="SKU-7777", uom="PL")), None, SEEN)
    assert result.valid.height == 1


text_or_null = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["1", "-2", "3.5", "ORDER", "EA", "SKU-0001"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({k: text_or_null for k in RAW_TRANSACTIONS_SCHEMA if k not in ("business_date",)}), max_size=30))
def test_arbitrary_lines_never_raise_and_are_counted_once(records):
    raw = pl.DataFrame(
        [{**r, "business_date": DAY} for r in records], schema=RAW_TRANSACTIONS_SCHEMA
    )
    result = validate_lines(raw, MASTER, SEEN)
    assert result.valid.height + result.rejects.height == raw.height
    assert result.rejects.schema == pl.Schema(DEAD_LETTER_SCHEMA)
    assert all(len(reasons) > 0 for reasons in result.rejects["reasons"].to_list())


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "txn_id": st.sampled_from(["SO-1", "", " ", "X"]),
            "line_no": st.sampled_from(["1", "0", "2", "x", "1.0", None]),
            "txn_type": st.sampled_from(["ORDER", "RETURN", "ADJUSTMENT", "SALE", None]),
            "sku_id": st.sampled_from(["SKU-0001", "SKU-0002", "sku-1", "AB", None, "A" * 21]),
            "quantity": st.sampled_from(["1", "-1", "abc", "2.5", None, "inf"]),
            "uom": st.sampled_from(["EA", "CS", "PL", "BX", None]),
            "event_ts": st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T10:00:00+02:00", "bad", None]),
        }
    )
)
def test_vectorised_rules_agree_with_the_per_record_model(fields):
    """The polars rules and the pydantic model accept exactly the same single lines (shape rules)."""
    raw = frame(line(**fields, created_at="2026-03-01T10:00:00Z"))
    vectorised_ok = validate_lines(raw, None, SEEN).valid.height == 1
    record = {k: v for k, v in raw.row(0, named=True).items() if v is not None}
    try:
        OrderLineRecord.model_validate(record)
        model_ok = True
    except ValueError:
        model_ok = False
    assert vectorised_ok == model_ok


# A value that breaks exactly one rule, per kind of rule in the table (the sign rule: a negative
# quantity on an ORDER line).
BREAKS_ONE_RULE = {
    "present": " ",
    "whole_number": "0",
    "one_of": "XX",
    "pattern": "ab",
    "finite_number": "inf",
    "utc_timestamp": "2026-03-01 10:15",
    "sign": "-1",
}


@pytest.mark.parametrize("rule", LINE_RULES, ids=lambda rule: f"{rule.field}-{rule.kind}")
def test_each_rule_of_the_table_rejects_in_both_engines_naming_its_field(rule):
    raw = frame(line(**{rule.field: BREAKS_ONE_RULE[rule.kind]}))
    rejects = validate_lines(raw, None, SEEN).rejects
    assert rejects["fields"].to_list() == [[rule.field]]
    assert rule.problem in rejects["reasons"][0][0]
    record = {k: v for k, v in raw.row(0, named=True).items() if v is not None}
    with pytest.raises(ValidationError) as refused:
        OrderLineRecord.model_validate(record)
    [error] = refused.value.errors()
    # A value rule fails on its field; the sign rule relates two fields, so it fails the record.
    assert error["loc"] == (() if rule.kind == "sign" else (rule.field,))
