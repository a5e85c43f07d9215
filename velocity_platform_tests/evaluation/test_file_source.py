"""The file-drop source on small exports written here: formats, mapping, accounting, errors."""

import datetime as dt
import gzip

import polars as pl
import pytest

from velocity_platform.connectors.files import FILE_LINE_SCHEMA, FileSourceError, preset, read_export
from velocity_platform.domain.contracts import SKU_MASTER_SCHEMA
from velocity_platform.domain.validation import validate_lines

# An Online Retail-shaped export: a summer day (BST, UTC+1) and a winter day (GMT).
ROWS = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ("536365", "85123A", "WHITE HANGING HEART", "6.0", "2011-06-01 08:26:00", "2.55", "17850.0", "United Kingdom"),
    ("536365", "85123a", "WHITE HANGING HEART", "2.0", "2011-06-01 08:26:00", "2.55", "17850.0", "United Kingdom"),
    ("536365", "POST", "POSTAGE", "1.0", "2011-06-01 08:26:00", "18.0", "17850.0", "United Kingdom"),
    ("C536379", "85123A", "WHITE HANGING HEART", "-3.0", "2011-06-01 23:30:00", "2.55", "", "United Kingdom"),
    ("536380", "22139", "", "-10.0", "2011-06-02 00:10:00", "0.0", "", "United Kingdom"),
    ("536381", "gift_0001_20", "GIFT VOUCHER", "1.0", "2011-06-02 09:00:00", "20.0", "", "United Kingdom"),
    ("536382", "22139", "RETRO SPOT TEA SET", "two", "2011-12-01 10:00:00", "4.95", "", "France"),
    ("536383", "m", "Manual", "1.0", "2011-12-01 10:00:00", "1.0", "", "France"),
    ("536384", "22139", "RETRO SPOT TEA SET", "4.0", "not a date", "4.95", "", "France"),
]
COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


def frame() -> pl.DataFrame:
    return pl.DataFrame(ROWS, schema=COLUMNS, orient="row")


@pytest.fixture(params=["csv", "csv.gz", "parquet", "parquet.gz"])
def export_path(request, tmp_path):
    path = tmp_path / f"export.{request.param}"
    table = frame()
    if request.param.startswith("csv"):
        data = table.write_csv().encode()
    else:
        import io

        buffer = io.BytesIO()
        table.write_parquet(buffer)
        data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if request.param.endswith(".gz") else data)
    return path


def test_every_line_ends_in_exactly_one_place_whatever_the_format(export_path):
    export = read_export(export_path, preset("online-retail"))
    assert export.total_lines == len(ROWS)
    # postage and the manual line by name, the gift voucher by its shape: counted, never dead letters
    assert export.excluded_counts() == {"POST": 1, "gift_0001_20": 1, "m": 1}
    assert export.lines.height == len(ROWS) - 3
    lines = export.raw_lines_between(dt.date(2011, 1, 1), dt.date(2011, 12, 31))
    assert lines.schema == pl.Schema(FILE_LINE_SCHEMA)
    checked = validate_lines(lines, export.sku_master(), seen_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    # the unreadable quantity and the unreadable time are dead letters
    assert checked.valid.height == 4 and checked.rejects.height == 2
    reasons = " | ".join(r for rs in checked.rejects["reasons"] for r in rs)
    assert "quantity: 'two' is not a finite number" in reasons
    assert "event_ts: 'not a date' is not an ISO-8601" in reasons


def test_the_online_retail_conventions(export_path):
    export = read_export(export_path, preset("online-retail"))
    rows = {(r["txn_id"], r["line_no"]): r for r in export.lines.iter_rows(named=True)}
    order = rows[("536365", "1")]
    # 08:26 in London in June is 07:26 UTC; customer 17850.0 is customer 17850
    assert (order["txn_type"], order["quantity"], order["event_ts"]) == ("ORDER", "6.0", "2011-06-01T07:26:00Z")
    assert order["customer_id"] == "17850" and order["created_at"] == order["event_ts"]
    # lower-case codes are the same SKU; lines are numbered within the invoice in file order
    assert rows[("536365", "2")]["sku_id"] == "85123A"
    # a "C" invoice is a return of 3 units; another negative line is a stock adjustment
    returned = rows[("C536379", "1")]
    assert (returned["txn_type"], returned["quantity"], returned["business_date"]) == ("RETURN", "3.0", dt.date(2011, 6, 1))
    adjusted = rows[("536380", "1")]
    # 00:10 London time on 2 June is still 1 June in UTC, but the business date is London's
    assert (adjusted["txn_type"], adjusted["quantity"], adjusted["business_date"]) == ("ADJUSTMENT", "-10.0", dt.date(2011, 6, 2))
    assert adjusted["event_ts"] == "2011-06-01T23:10:00Z"
    # an unreadable time keeps its text and is filed on the file's first business date
    undated = rows[("536384", "1")]
    assert (undated["event_ts"], undated["business_date"]) == ("not a date", dt.date(2011, 6, 1))
    assert rows[("536382", "1")]["event_ts"] == "2011-12-01T10:00:00Z"  # GMT in winter
    assert export.line_counts(dt.date(2011, 6, 1)) == {"file_lines": 5, "raw_lines": 4, "excluded_lines": 1}


def test_the_sku_master_from_an_export_flags_its_default_cube(export_path):
    export = read_export(export_path, preset("online-retail", default_unit_cube_ft3=0.25))
    master = export.sku_master()
    assert master.schema == pl.Schema(SKU_MASTER_SCHEMA)
    assert master["sku_id"].to_list() == ["22139", "85123A"]  # a voucher is no SKU
    assert master["cube_is_default"].to_list() == [True, True]
    assert master["unit_cube_ft3"].to_list() == [0.25, 0.25]
    introduced = dict(zip(master["sku_id"], master["introduced_on"]))
    assert introduced == {"22139": dt.date(2011, 6, 1), "85123A": dt.date(2011, 6, 1)}
    # a master as of a date knows only what the export had shown by then
    assert export.sku_master(as_of=dt.date(2011, 6, 1))["sku_id"].to_list() == ["22139", "85123A"]


def test_our_own_line_format_reads_back_as_it_was_written(tmp_path):
    lines = pl.DataFrame(
        {
            "txn_id": ["T1", "T1", "T2"],
            "line_no": ["1", "2", "1"],
            "txn_type": ["ORDER", "ORDER", "RETURN"],
            "customer_id": ["C1", "C1", None],
            "sku_id": ["SKU-0001", "SKU-0002", "SKU-0001"],
            "quantity": ["2", "1", "1"],
            "uom": ["CS", "EA", "EA"],
            "event_ts": ["2026-03-01T10:15:00Z", "2026-03-01T10:15:00Z", "2026-03-01T23:30:00Z"],
            "created_at": ["2026-03-01T10:16:00Z", "2026-03-01T10:16:00Z", "2026-03-02T08:00:00Z"],
        }
    )
    path = tmp_path / "lines.csv"
    lines.write_csv(path)
    export = read_export(path, preset("erp-lines"), warehouse_tz="Europe/Berlin")
    raw = export.raw_lines_between(dt.date(2026, 3, 1), dt.date(2026, 3, 2))
    assert raw.select("txn_id", "line_no", "txn_type", "uom", "quantity", "created_at").rows() == lines.select(
        "txn_id", "line_no", "txn_type", "uom", "quantity", "created_at"
    ).rows()
    # 23:30 UTC is already 2 March in Berlin
    assert raw["business_date"].to_list() == [dt.date(2026, 3, 1), dt.date(2026, 3, 1), dt.date(2026, 3, 2)]


def test_a_file_that_does_not_match_its_mapping_is_refused_clearly(tmp_path):
    path = tmp_path / "export.csv"
    frame().drop("StockCode").write_csv(path)
    with pytest.raises(FileSourceError, match=r"no column for sku='StockCode'.*choose the preset"):
        read_export(path, preset("online-retail"))
    with pytest.raises(FileSourceError, match="cannot be read"):
        read_export(tmp_path / "missing.csv", preset("online-retail"))
    with pytest.raises(FileSourceError, match="cannot tell the format"):
        (tmp_path / "export.xlsx").write_bytes(b"x")
        read_export(tmp_path / "export.xlsx", preset("online-retail"))
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(FileSourceError, match="not a readable csv export"):
        read_export(broken, preset("online-retail"))
    with pytest.raises(ValueError, match="unknown file preset 'sap'"):
        preset("sap")


def test_a_mapping_declares_its_non_inventory_codes_by_shape(tmp_path):
    """Codes shaped like a voucher are excluded (and counted) like postage; a near miss is not."""
    from dataclasses import replace

    rows = [
        ("1", "GIFT_0002_75", "VOUCHER", "1", "2011-06-01 09:00:00", "75", "", "UK"),  # upper case, new number
        ("1", "gift_0001_10", "VOUCHER", "1", "2011-06-01 09:00:00", "10", "", "UK"),
        ("1", "GIFTBOX1", "GIFT BOX", "2", "2011-06-01 09:00:00", "3", "", "UK"),  # a product, not a voucher
        ("2", "VCH-0042", "STORE CREDIT", "1", "2011-06-01 10:00:00", "5", "", "UK"),
        ("2", "85123A", "WHITE HANGING HEART", "6", "2011-06-01 10:00:00", "2.55", "", "UK"),
    ]
    path = tmp_path / "export.csv"
    path.write_text(pl.DataFrame(rows, schema=COLUMNS, orient="row").write_csv())
    export = read_export(path, preset("online-retail"))
    assert export.excluded_counts() == {"GIFT_0002_75": 1, "gift_0001_10": 1}
    assert sorted(export.lines["sku_id"]) == ["85123A", "GIFTBOX1", "VCH-0042"]
    # another retailer's export says what its own non-inventory codes look like
    store_credit = replace(preset("online-retail"), non_inventory_patterns=(r"VCH-\d+",))
    export = read_export(path, store_credit)
    assert export.excluded_counts() == {"VCH-0042": 1}
    assert export.total_lines == export.lines.height + sum(export.excluded_counts().values())
    with pytest.raises(ValueError, match=r"'gift_\(' is not a regular expression"):
        replace(store_credit, non_inventory_patterns=("gift_(",))
