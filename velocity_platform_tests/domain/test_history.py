"""Flattening ERP pages, UoM conversion and daily demand, on hand-computed fixtures."""

import datetime as dt

import orjson
import polars as pl

from velocity_platform.connectors.erp_pages import raw_lines_from_pages
from velocity_platform.domain.contracts import DAILY_SKU_DEMAND_SCHEMA, RAW_TABLE_SCHEMA
from velocity_platform.domain.history import daily_demand, to_sales_history
from velocity_platform.domain.validation import validate_lines

DAY = dt.date(2026, 3, 1)
MASTER = pl.DataFrame(
    {
        "sku_id": ["SKU-0001", "SKU-0002"],
        "category": ["Kitchen", "Garden"],
        "subcategory": ["Mugs", "Tools"],
        "unit_cube_ft3": [0.1, 0.5],
        "case_qty": [12, 6],
        "pallet_qty": [480, 120],
        "uoms": [["EA", "CS", "PL"], ["EA", "CS"]],
    }
)


def doc(txn_id, txn_type, lines, created="2026-03-01T10:00:05Z"):
    return {
        "txn_id": txn_id,
        "txn_type": txn_type,
        "customer_id": "C1",
        "event_ts": "2026-03-01T10:00:00Z",
        "created_at": created,
        "lines": lines,
    }


def page(*docs, cursor=None) -> bytes:
    return orjson.dumps({"records": list(docs), "next_cursor": cursor})


def l(no, sku, qty, uom="EA"):
    return {"line_no": no, "sku_id": sku, "quantity": qty, "uom": uom}


def test_pages_flatten_to_one_row_per_line_with_text_fields():
    pages = [
        ("p1", page(doc("SO-1", "ORDER", [l(1, "SKU-0001", 2), l(2, "SKU-0002", 1, "CS")]))),
        ("p2", page(doc("SO-2", "ORDER", [l(1, "SKU-0001", "3")]), doc("SO-3", "ORDER", None))),
    ]
    day = raw_lines_from_pages(pages, DAY)
    assert day.lines.schema == pl.Schema(RAW_TABLE_SCHEMA)
    # SO-3 has no lines list: it becomes one empty line so it is dead-lettered, not lost.
    assert day.lines.height == 4 and day.documents == 3 and day.pages == 2
    assert day.lines["quantity"].to_list() == ["2", "1", "3", None]
    assert day.lines["source_batch"].to_list() == ["p1", "p1", "p2", "p2"]


def test_a_document_served_on_two_pages_is_counted_once():
    same = doc("SO-1", "ORDER", [l(1, "SKU-0001", 2)])
    changed = doc("SO-1", "ORDER", [l(1, "SKU-0001", 5)])
    day = raw_lines_from_pages([("p1", page(same)), ("p2", page(same, changed))], DAY)
    assert day.repeated_documents == 1
    # The conflicting version is kept, for validation to dead-letter as a duplicate key.
    assert day.lines["quantity"].to_list() == ["2", "5"]


def test_uom_conversion_hierarchy_and_daily_demand():
    pages = [
        (
            "p1",
            page(
                doc("SO-1", "ORDER", [l(1, "SKU-0001", 2, "CS"), l(2, "SKU-0002", 3)]),
                doc("SO-2", "ORDER", [l(1, "SKU-0001", 1, "PL")]),
                doc("SO-3", "ORDER", [l(1, "SKU-0001", 4)]),
                doc("RT-1", "RETURN", [l(1, "SKU-0001", 5)]),
                doc("AJ-1", "ADJUSTMENT", [l(1, "SKU-0002", -2)]),
            ),
        )
    ]
    raw = raw_lines_from_pages(pages, DAY).lines
    valid = validate_lines(raw, MASTER, dt.datetime(2026, 3, 2, tzinfo=dt.UTC)).valid
    history = to_sales_history(valid, MASTER)
    eaches = dict(zip(history["txn_id"] + ":" + history["line_no"].cast(str), history["quantity_eaches"], strict=True))
    assert eaches == {"SO-1:1": 24.0, "SO-1:2": 3.0, "SO-2:1": 480.0, "SO-3:1": 4.0, "RT-1:1": 5.0, "AJ-1:1": -2.0}
    assert history.filter(pl.col("sku_id") == "SKU-0002")["category"].unique().to_list() == ["Garden"]

    demand = daily_demand(history)
    assert demand.schema == pl.Schema(DAILY_SKU_DEMAND_SCHEMA)
    sku1 = demand.filter(pl.col("sku_id") == "SKU-0001").row(0, named=True)
    # Demand is outbound order lines only: 24 + 480 + 4 eaches over 3 pick lines in 3 orders.
    assert sku1["units"] == 508.0 and sku1["pick_lines"] == 3 and sku1["orders"] == 3
    assert sku1["returns_units"] == 5.0 and sku1["adjustment_units"] == 0.0
    assert abs(sku1["cube_ft3"] - 50.8) < 1e-9
    sku2 = demand.filter(pl.col("sku_id") == "SKU-0002").row(0, named=True)
    assert sku2["units"] == 3.0 and sku2["adjustment_units"] == -2.0 and sku2["returns_units"] == 0.0
