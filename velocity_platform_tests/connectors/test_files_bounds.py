"""Bad input files cost bounded memory: each streams through or is refused in one line naming the
limit and the setting that raises it; the good lines of a partly bad file are kept. (Peak RSS on
full-size inputs is measured by benchmarks/bad_input_memory.py.)"""

import zlib

import polars as pl
import pytest

from velocity_platform.connectors.files import FileLimits, FileSourceError, preset, read_export

HEADER = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
LINE = b"536365,85123A,WHITE HANGING HEART,6,2011-06-01 08:26:00,2.55,17850.0,United Kingdom\n"
ONLINE_RETAIL = preset("online-retail")


def gzip_stream(path, head: bytes, repeated: bytes, total_bytes: int) -> None:
    """A gzip file that inflates to about `total_bytes`, written a block at a time (a few MB on disk)."""
    block = repeated * max(1, (1 << 20) // len(repeated))
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
    with open(path, "wb") as out:
        out.write(packer.compress(head))
        for _ in range(total_bytes // len(block) + 1):
            out.write(packer.compress(block))
        out.write(packer.flush())


def test_a_gzip_bomb_of_valid_lines_is_refused_at_the_default_limit_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("VELOCITY_FILE_MAX_BYTES", raising=False)
    bomb = tmp_path / "export.csv.gz"
    limit = FileLimits().max_bytes
    gzip_stream(bomb, HEADER, LINE, limit + (1 << 20))
    assert bomb.stat().st_size < limit // 100
    with pytest.raises(FileSourceError) as refused:
        read_export(bomb, ONLINE_RETAIL)
    message = str(refused.value)
    assert "\n" not in message and f"{limit:,}" in message and "VELOCITY_FILE_MAX_BYTES" in message
    assert "once decompressed" in message


def test_the_setting_raises_the_limit(tmp_path, monkeypatch):
    export = tmp_path / "export.csv.gz"
    gzip_stream(export, HEADER, LINE, 3 << 20)
    monkeypatch.setenv("VELOCITY_FILE_MAX_BYTES", str(2 << 20))
    with pytest.raises(FileSourceError, match="VELOCITY_FILE_MAX_BYTES"):
        read_export(export, ONLINE_RETAIL)
    monkeypatch.setenv("VELOCITY_FILE_MAX_BYTES", str(8 << 20))
    read = read_export(export, ONLINE_RETAIL)
    assert read.total_lines == read.lines.height > 30_000


def test_one_line_of_gigabytes_without_a_newline_is_refused_having_read_only_the_limit(tmp_path):
    export = tmp_path / "export.csv.gz"
    gzip_stream(export, HEADER + b"536365,85123A,", b"x" * 4096, 8 << 20)  # never a newline
    with pytest.raises(FileSourceError, match=r"more bytes once decompressed than the limit of 4,194,304 \(VELOCITY_FILE_MAX_BYTES"):
        read_export(export, ONLINE_RETAIL, limits=FileLimits(max_bytes=4 << 20))


def test_a_huge_field_dead_letters_its_line_and_every_other_line_is_read(tmp_path):
    export = tmp_path / "export.csv"
    huge = b"536366,22139," + b"A" * 50_000 + b",2,2011-06-01 09:00:00,4.95,,France\n"
    export.write_bytes(HEADER + LINE * 3 + huge + LINE * 2)
    read = read_export(export, ONLINE_RETAIL, limits=FileLimits(max_line_bytes=10_000))
    assert read.total_lines == 6 and read.lines.height == 6  # every line in exactly one place
    broken = read.unparsed_lines
    assert broken["line"].to_list() == [4]
    reason = broken["reason"][0]
    assert "50," in reason and "over the limit of 10,000 (VELOCITY_FILE_MAX_LINE_BYTES)" in reason
    assert broken["text"][0].startswith("536366,22139,AAA") and len(broken["text"][0]) < 300
    good = read.lines.filter(pl.col("page_error").is_null())
    assert good.height == 5 and set(good["sku_id"]) == {"85123A"}


def test_a_header_of_a_million_columns_is_refused_in_one_line(tmp_path):
    export = tmp_path / "export.csv"
    export.write_bytes(HEADER.rstrip(b"\n") + b"".join(b",c%d" % i for i in range(1_000_000)) + b"\n" + LINE)
    with pytest.raises(FileSourceError) as refused:
        read_export(export, ONLINE_RETAIL, limits=FileLimits(max_line_bytes=16 << 20))
    assert "1,000,008 columns, more than the limit of 1,000 (VELOCITY_FILE_MAX_COLUMNS" in str(refused.value)
    with pytest.raises(FileSourceError, match=r"header line holds more bytes than the limit of 1,048,576 \(VELOCITY_FILE_MAX_LINE_BYTES"):
        read_export(export, ONLINE_RETAIL)  # the default line limit says it first


def online_retail_frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "InvoiceNo": [536365 + i for i in range(rows)],  # numbers, not text
            "StockCode": ["85123A"] * rows,
            "Description": ["WHITE HANGING HEART"] * rows,
            "Quantity": [6.0] * (rows - 1) + [None],  # floats, one missing
            "InvoiceDate": pl.datetime_range(pl.datetime(2011, 6, 1, 8), pl.datetime(2011, 6, 1, 8) + pl.duration(seconds=rows - 1), "1s", eager=True),  # typed
            "UnitPrice": [2.55] * rows,
            "CustomerID": [17850] * rows,
            "Country": ["United Kingdom"] * rows,
        }
    )


def test_parquet_of_the_wrong_column_types_is_read_as_text_and_unmapped_nested_columns_are_not_read(tmp_path):
    export = tmp_path / "export.parquet"
    online_retail_frame(5).with_columns(pl.lit([1, 2]).alias("tags"), pl.struct(a=pl.lit(1)).alias("extra")).write_parquet(export)
    read = read_export(export, ONLINE_RETAIL)
    assert read.total_lines == read.lines.height == 5
    assert read.lines["txn_id"].to_list() == [str(536365 + i) for i in range(5)]
    assert read.lines["quantity"].to_list()[:4] == ["6.0"] * 4 and read.lines["quantity"][4] is None
    assert read.lines["event_ts"].to_list()[:2] == ["2011-06-01T07:00:00Z", "2011-06-01T07:00:01Z"]  # London summer time


def test_parquet_whose_business_times_are_all_unreadable_is_refused_in_one_line(tmp_path):
    export = tmp_path / "export.parquet"
    online_retail_frame(3).with_columns(pl.lit("not a time").alias("InvoiceDate")).write_parquet(export)
    with pytest.raises(FileSourceError, match="no line has a business time readable as '%Y-%m-%d %H:%M:%S' in column 'InvoiceDate'"):
        read_export(export, ONLINE_RETAIL)


def test_parquet_whose_mapped_column_is_a_list_or_too_big_is_refused_in_one_line(tmp_path):
    export = tmp_path / "export.parquet"
    online_retail_frame(3).with_columns(pl.lit([6, 1]).alias("Quantity")).write_parquet(export)
    with pytest.raises(FileSourceError, match=r"'Quantity' is List\(Int\d+\), not one value per line"):
        read_export(export, ONLINE_RETAIL)
    big = tmp_path / "big.parquet"
    online_retail_frame(50_000).write_parquet(big, compression="zstd")
    limit = big.stat().st_size + 1  # the file fits; what it unpacks to does not
    with pytest.raises(FileSourceError, match=rf"mapped columns hold more bytes uncompressed than the limit of {limit:,} \(VELOCITY_FILE_MAX_BYTES"):
        read_export(big, ONLINE_RETAIL, limits=FileLimits(max_bytes=limit))
