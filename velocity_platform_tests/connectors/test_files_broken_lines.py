"""A CSV export with lines that cannot be parsed: those lines are dead-lettered with their line
number, text and reason; every other line is read, and the counts reconcile."""

import datetime as dt
import gzip

import polars as pl
import pytest

from velocity_platform.connectors.files import FileSourceError, preset, read_export
from velocity_platform.domain.validation import validate_lines

HEADER = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
SEEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def good(invoice: int, day: str, sku: str = "85123A") -> bytes:
    return f"{invoice},{sku},WHITE HANGING HEART,6,{day} 08:26:00,2.55,17850.0,United Kingdom".encode()


# (bytes of the line(s), what it is). Line numbers count the header as line 0.
LINES = [
    (good(536365, "2011-06-01"), "good"),  # 1
    (b'536366,22139,"RETRO SPOT ""TEA"" SET, 3 PIECES",2,2011-06-01 09:00:00,4.95,,France', "good"),  # 2
    (b'536367,22139,"UNTERMINATED,2,2011-06-01 09:10:00,4.95,,France', "unterminated quote"),  # 3
    (good(536368, "2011-06-01", "POST").replace(b"WHITE HANGING HEART", b"POSTAGE"), "excluded"),  # 4
    (b"536369,22139,TEA SET,2,2011-06-02 09:00:00,4.95,17850.0,France,EXTRA", "too many fields"),  # 5
    (b"536370,22139,TEA SET,2,2011-06-02 09:00:00", "too few fields"),  # 6
    (b"536371,22139,CAF\xe9 SET,2,2011-06-02 09:00:00,4.95,,France", "not UTF-8"),  # 7 (latin-1 e-acute)
    (b'536372,21730,"GLASS STAR\nFROSTED",1,2011-06-02 10:00:00,4.25,,France', "good over two lines"),  # 8-9
    (b"", "blank"),  # 10
    (good(536373, "2011-06-02"), "good"),  # 11
    (b"536374,22139,TEA SET,two,2011-06-02 11:00:00,4.95,,France", "parsed, rejected by validation"),  # 12
]
RECORDS = sum(kind != "blank" for _, kind in LINES)


@pytest.fixture(params=["csv", "csv.gz"])
def broken_export(request, tmp_path):
    data = b"\n".join([HEADER, *(line for line, _ in LINES)]) + b"\n"
    path = tmp_path / f"export.{request.param}"
    path.write_bytes(gzip.compress(data) if request.param.endswith(".gz") else data)
    return read_export(path, preset("online-retail"))


def test_each_unparseable_line_is_kept_with_its_number_text_and_reason(broken_export):
    unparsed = broken_export.unparsed_lines.sort("line")
    assert unparsed["line"].to_list() == [3, 5, 6, 7]
    texts = dict(zip(unparsed["line"], unparsed["text"], strict=True))
    reasons = dict(zip(unparsed["line"], unparsed["reason"], strict=True))
    assert texts[3] == LINES[2][0].decode()
    assert texts[5] == LINES[4][0].decode()
    assert texts[7] == r"536371,22139,CAF\xe9 SET,2,2011-06-02 09:00:00,4.95,,France"  # the bytes as found
    assert "line 3 of export" in reasons[3] and "quote that is never closed" in reasons[3]
    assert "9 fields where the header has 8" in reasons[5]
    assert "5 fields where the header has 8" in reasons[6]
    assert "not UTF-8 at byte 17 (0xe9)" in reasons[7] and "export the file as UTF-8" in reasons[7]


def test_every_other_line_is_read_and_the_counts_reconcile(broken_export):
    assert broken_export.total_lines == RECORDS
    raw = broken_export.raw_lines_between(dt.date(2011, 1, 1), dt.date(2011, 12, 31))
    checked = validate_lines(raw, broken_export.sku_master(), seen_at=SEEN)
    excluded = sum(broken_export.excluded_counts().values())
    assert (checked.valid.height, excluded, checked.rejects.height) == (4, 1, 5)
    assert checked.valid.height + excluded + checked.rejects.height == RECORDS
    # a quoted field may hold a doubled quote, a comma and a line break
    descriptions = set(broken_export.lines["description"].drop_nulls())
    assert 'RETRO SPOT "TEA" SET, 3 PIECES' in descriptions and "GLASS STAR\nFROSTED" in descriptions
    # the dead letters carry the line's text and the parser's reason, not an empty record
    dead = checked.rejects.filter(pl.col("raw_payload") == LINES[2][0].decode())
    assert dead["reasons"][0].to_list() == [broken_export.unparsed_lines.filter(pl.col("line") == 3)["reason"][0]]
    assert dead["source_batch"][0].endswith(":line-3")
    # one broken line, not a page lost whole: it counts towards the dead-letter rate like any other
    assert set(checked.rejects.filter(pl.col("source_batch").str.contains(":line-(3|5|6|7)$"))["fields"].explode()) == {"line"}


def test_a_broken_line_is_filed_on_the_business_date_of_the_line_before_it(broken_export, tmp_path):
    dates = dict(
        zip(
            broken_export.lines["source_batch"].str.extract(r"line-(\d+)$").cast(pl.Int64),
            broken_export.lines["business_date"],
            strict=True,
        )
    )
    assert dates[3] == dt.date(2011, 6, 1)  # after line 2 (1 June)
    assert dates[5] == dates[6] == dates[7] == dt.date(2011, 6, 1)  # line 4 (excluded postage) is 1 June
    # at the top of the file there is no line before: the first line after it
    path = tmp_path / "top.csv"
    path.write_bytes(b"\n".join([HEADER, LINES[2][0], good(1, "2011-06-05")]) + b"\n")
    top = read_export(path, preset("online-retail"))
    assert top.unparsed_lines["line"].to_list() == [1]
    assert top.lines.filter(pl.col("page_error").is_not_null())["business_date"].to_list() == [dt.date(2011, 6, 5)]


def test_a_clean_file_reads_exactly_as_polars_reads_it(tmp_path):
    rows = [LINES[0][0], LINES[1][0], LINES[7][0], LINES[10][0]]
    path = tmp_path / "clean.csv"
    path.write_bytes(b"\n".join([HEADER, *rows]) + b"\n")
    export = read_export(path, preset("online-retail"))
    assert export.unparsed_lines.is_empty() and export.total_lines == 4
    expected = pl.read_csv(path, infer_schema=False)
    assert export.lines["txn_id"].to_list() == expected["InvoiceNo"].to_list()
    assert export.lines["description"].to_list() == expected["Description"].to_list()
    # a record is numbered by its first line in the file (the third spans lines 3 and 4)
    assert export.lines["source_batch"].to_list() == [f"file:clean.csv:line-{n}" for n in (1, 2, 3, 5)]


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", bytes(range(256)) * 4, b"\n\n"],
    ids=["png", "binary", "empty"],
)
def test_a_file_that_is_not_a_csv_at_all_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    with pytest.raises(FileSourceError, match=r"^export.csv is not a CSV export: ") as refused:
        read_export(path, preset("online-retail"))
    assert "\n" not in str(refused.value)
