"""What the ERP's and the WMS's pages share: `{"records": [...], "next_cursor": ...}` read into columns.

Wire format only: the pages' own shape, read without a Python object per record where the
fixed schema holds. What the records mean is the domain's business (domain/).
"""

from __future__ import annotations

import io

import orjson
import polars as pl


class InvalidPage(ValueError):
    """The page's body is not a readable page of records (e.g. truncated JSON)."""


def load_page(body: bytes) -> dict:
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPage(f"not valid JSON ({exc})") from None
    if not isinstance(page, dict) or not isinstance(page.get("records"), list):
        raise InvalidPage("not a page: no 'records' list")
    return page


def read_records_page(body: bytes, record: pl.Struct) -> pl.DataFrame:
    """A page of flat reference records read straight into columns (no Python dict per record).

    A record shape the fixed schema cannot hold falls back to reading the page as Python objects,
    so an odd record costs speed, never the page.
    """
    try:
        records = pl.read_json(io.BytesIO(body), schema={"records": pl.List(record), "next_cursor": pl.String})["records"]
    except Exception:  # noqa: BLE001  # polars raises several error types on shapes the schema cannot hold
        rows = [row if isinstance(row, dict) else {} for row in load_page(body)["records"]]
        return pl.from_dicts(rows, schema=dict(record.to_schema()), strict=False)
    if records.len() != 1 or records.null_count():
        raise InvalidPage("not a page: no 'records' list")
    return records.explode().struct.unnest() if records.list.len()[0] else pl.DataFrame(schema=record.to_schema())
