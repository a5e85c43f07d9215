"""Arbitrary records and pages thrown at ingestion and validation: each line ends valid or dead-
lettered with a reason, the counts add up, and nothing raises."""

import datetime as dt

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity_platform.connectors.erp_pages import raw_lines_from_pages
from velocity_platform.domain.contracts import DEAD_LETTER_SCHEMA, RAW_TABLE_SCHEMA
from velocity_platform.domain.validation import validate_lines

pytestmark = pytest.mark.reliability

DAY = dt.date(2026, 3, 1)
SEEN = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
MASTER = pl.DataFrame(
    {"sku_id": ["SKU-0001", "SKU-0002"], "uoms": [["EA", "CS"], ["EA"]]},
    schema={"sku_id": pl.String, "uoms": pl.List(pl.String)},
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["1", "ORDER", "ADJUSTMENT", "EA", "CS", "SKU-0001", "2026-03-01T10:00:00Z", "-3"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
field_names = st.sampled_from(["line_no", "sku_id", "quantity", "uom", "sku", "qty", "lot_no"])
lines = st.one_of(
    json_values,
    st.lists(st.one_of(st.dictionaries(field_names, json_values, max_size=5), json_values), max_size=4),
)
documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "txn_type": st.one_of(st.sampled_from(["ORDER", "RETURN", "ADJUSTMENT"]), json_values),
            "customer_id": json_values,
            "event_ts": st.one_of(st.just("2026-03-01T10:00:00Z"), json_values),
            "created_at": st.one_of(st.just("2026-03-01T10:00:05Z"), json_values),
            "lines": lines,
            "channel": json_values,
        },
    ),
)
GOOD = {
    "txn_type": "ORDER",
    "customer_id": "C1",
    "event_ts": "2026-03-01T10:00:00Z",
    "created_at": "2026-03-01T10:00:05Z",
    "lines": [{"line_no": 1, "sku_id": "SKU-0001", "quantity": 2, "uom": "EA"}],
}


def lines_of(doc: object) -> int:
    """How many raw lines a document must become: each entry of a non-empty list, else one."""
    if isinstance(doc, dict) and isinstance(doc.get("lines"), list):
        return len(doc["lines"])
    return 1


def with_ids(docs: list, keep_id: list[bool]) -> list:
    # Distinct ids (or none): two documents with the same id and content are one record served twice.
    out = []
    for i, (doc, keep) in enumerate(zip(docs, keep_id)):
        if isinstance(doc, dict):
            doc = {k: v for k, v in doc.items() if k != "txn_id"}
            if keep:
                doc["txn_id"] = f"SO-{i}"
        out.append(doc)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.lists(
        st.lists(st.tuples(st.one_of(documents, st.just(GOOD)), st.booleans()), max_size=6), min_size=1, max_size=3
    )
)
def test_arbitrary_documents_each_line_ends_valid_or_dead_lettered_with_a_reason(pages):
    bodies, expected = [], 0
    for n, page in enumerate(pages):
        docs = with_ids([d for d, _ in page], [k for _, k in page])
        # Unique ids across pages too.
        docs = [{**d, "txn_id": f"{d['txn_id']}-{n}"} if isinstance(d, dict) and "txn_id" in d else d for d in docs]
        expected += sum(lines_of(d) for d in docs)
        bodies.append((f"erp:{DAY}:page-{n + 1:04d}", orjson.dumps({"records": docs, "next_cursor": None})))
    day = raw_lines_from_pages(bodies, DAY)
    assert day.lines.schema == pl.Schema(RAW_TABLE_SCHEMA)
    assert day.lines_received == expected, "a line was dropped or invented"
    result = validate_lines(day.lines, MASTER, SEEN)
    assert result.valid.height + result.rejects.height == day.lines.height
    assert result.rejects.schema == pl.Schema(DEAD_LETTER_SCHEMA)
    assert all(len(r) > 0 for r in result.rejects["reasons"].to_list())
    assert result.rejects["raw_payload"].null_count() == 0
    # A line missing a contract field shows what arrived, not a row of nulls.
    for payload in result.rejects["raw_payload"].to_list():
        orjson.loads(payload)


@settings(max_examples=100, deadline=None)
@given(body=st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps)))
def test_an_arbitrary_page_body_is_read_or_dead_lettered_whole_never_raised(body):
    day = raw_lines_from_pages([("erp:2026-03-01:page-0001", body)], DAY)
    if day.dead_lettered_pages:
        assert day.lines.height == 1 and day.lines["page_error"][0].startswith("page erp:2026-03-01:page-0001")
    result = validate_lines(day.lines, MASTER, SEEN)
    assert result.valid.height + result.rejects.height == day.lines.height
    assert all(len(r) > 0 for r in result.rejects["reasons"].to_list())
