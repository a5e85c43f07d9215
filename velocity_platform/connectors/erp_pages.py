"""ERP pages as the ERP sends them: order documents with nested lines, flattened to raw lines.

A page is read with `pl.read_json` against a schema in which every leaf is text, so a drifted
type never crashes a parse; a document that does not fit is kept as the raw JSON it arrived as
(for its dead-letter copy). Pages served twice by the ERP's paging are dropped, an unreadable
page becomes one dead-letter row, and the lines come out in arrival order. The SKU master's
pages are read here too. What the lines mean (validation, sales history) is domain/.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import orjson
import polars as pl

from velocity_platform.connectors.pages import InvalidPage, load_page, read_records_page
from velocity_platform.domain.contracts import (
    RAW_TABLE_SCHEMA,
    SKU_MASTER_SCHEMA,
    conform,
)
from velocity_platform.domain.history import in_arrival_order

# --- the ERP page as we read it: every leaf as text, so a drifted type can never crash a parse --

ERP_LINE_STRUCT = pl.Struct(
    {"line_no": pl.String, "sku_id": pl.String, "quantity": pl.String, "uom": pl.String}
)
ERP_DOCUMENT_STRUCT = pl.Struct(
    {
        "txn_id": pl.String,
        "txn_type": pl.String,
        "customer_id": pl.String,
        "event_ts": pl.String,
        "created_at": pl.String,
        "warehouse_id": pl.String,  # the site the document is for (absent from a one-site ERP's: null)
        "lines": pl.List(ERP_LINE_STRUCT),
    }
)
ERP_PAGE_SCHEMA = {"records": pl.List(ERP_DOCUMENT_STRUCT), "next_cursor": pl.String}

DOCUMENT_FIELDS = ["txn_id", "txn_type", "customer_id", "event_ts", "created_at", "warehouse_id"]
LINE_FIELDS = ["line_no", "sku_id", "quantity", "uom"]
# A document or line missing one of these does not fit the contract: its raw text is kept.
REQUIRED_DOCUMENT_FIELDS = ["txn_id", "txn_type", "event_ts", "created_at"]
_DOC, _LINE, _ROW = "__doc", "__line", "__row"
PAGE_EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class ParsedPage:
    """One ERP page, read: documents (every leaf as text) and the raw text of what did not fit."""

    documents: pl.DataFrame  # ERP_DOCUMENT_STRUCT fields + __doc (position on the page)
    raw_payloads: pl.DataFrame  # __doc, __line, raw_payload: lines missing a required field, as received
    unexpected_fields: dict[str, int]  # among those documents: field name -> documents carrying it


@dataclass(frozen=True)
class ReceivedPage:
    """A page as the pull ended with it: read, or unreadable after every fetch (error set)."""

    source_batch: str
    body: bytes
    parsed: ParsedPage | None
    error: str | None = None
    fetches: int = 1
    cursor: str | None = None  # the cursor it was asked for from (None: the day's first page)
    limit: int | None = None  # documents asked for: 1 for a document a broken page was narrowed down to


_RAW_PAYLOADS_SCHEMA = {_DOC: pl.UInt32, _LINE: pl.Int64, "raw_payload": pl.String}


def read_erp_page(body: bytes) -> ParsedPage:
    """One ERP page -> its documents, every leaf as text. Raises InvalidPage on a body that is not a page.

    The fast path reads the page with one fixed schema. A page where some value has a shape the
    schema cannot hold (an object where text is expected, a `lines` that is not a list) is read
    again document by document, so one odd record never costs the page. Documents that lack a
    required field are looked up in the raw JSON, so a renamed field shows as it arrived.
    """
    raw: dict | None = None
    try:
        records = pl.read_json(io.BytesIO(body), schema=ERP_PAGE_SCHEMA)["records"]
        if records.len() != 1 or records.null_count():
            raise InvalidPage("not a page: no 'records' list")
        documents = records.explode().struct.unnest() if records.list.len()[0] else _empty_documents(False)
    except InvalidPage:
        raise
    except Exception:  # noqa: BLE001  # polars raises several error types on shapes the schema cannot hold
        raw = load_page(body)
        documents = _documents_one_by_one(raw["records"])
    documents = documents.with_row_index(_DOC)
    misfits = documents.filter(_does_not_fit())[_DOC]
    if misfits.is_empty():
        return ParsedPage(documents, pl.DataFrame(schema=_RAW_PAYLOADS_SCHEMA), {})
    positions = misfits.to_list()
    if raw is not None:
        records = raw["records"]
    else:
        # Cut just those documents out of the body by their id; parse the whole page only if that fails.
        ids = documents["txn_id"].gather(positions).to_list()
        cut = [_cut_document(body, txn_id) for txn_id in ids]
        records = None if any(c is _NOT_FOUND for c in cut) else dict(zip(positions, cut, strict=True))
        if records is None:
            records = load_page(body)["records"]
    payloads, unexpected = _raw_payloads(records, positions)
    return ParsedPage(documents, payloads, unexpected)


_NOT_FOUND = object()


def _cut_document(body: bytes, txn_id: str | None) -> object:
    """The raw JSON document whose first field is `"txn_id": <txn_id>`, parsed; _NOT_FOUND if unsure."""
    if txn_id is None:
        return _NOT_FOUND
    key = b'{"txn_id":' + orjson.dumps(txn_id)
    start = body.find(key)
    if start < 0 or body.find(key, start + 1) >= 0:  # absent, or twice on the page: ambiguous
        return _NOT_FOUND
    depth, in_string, escaped = 0, False, False
    for end in range(start, len(body)):
        byte = body[end]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
            if depth == 0:
                try:
                    document = orjson.loads(body[start : end + 1])
                except orjson.JSONDecodeError:
                    return _NOT_FOUND
                return document if isinstance(document, dict) and document.get("txn_id") == txn_id else _NOT_FOUND
    return _NOT_FOUND


def parse_erp_page(body: bytes) -> pl.DataFrame:
    """One ERP page -> one row per document, every leaf as text. Raises InvalidPage."""
    return read_erp_page(body).documents.drop(_DOC)


def _leaf(value: object) -> str | None:
    """A JSON value as the text the fixed-schema read would give (objects and lists as JSON)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(value).decode()


def _documents_one_by_one(records: list) -> pl.DataFrame:
    rows = []
    for record in records:
        doc = record if isinstance(record, dict) else {}
        lines = doc.get("lines")
        rows.append(
            {
                **{f: _leaf(doc.get(f)) for f in DOCUMENT_FIELDS},
                "lines": [
                    {f: _leaf(line.get(f)) for f in LINE_FIELDS} if isinstance(line, dict) else None for line in lines
                ]
                if isinstance(lines, list)
                else None,
            }
        )
    return pl.DataFrame(rows, schema=ERP_DOCUMENT_STRUCT.to_schema()) if rows else _empty_documents(False)


def _does_not_fit() -> pl.Expr:
    line_gap = pl.element().is_null() | pl.any_horizontal([pl.element().struct.field(f).is_null() for f in LINE_FIELDS])
    return (
        pl.any_horizontal([pl.col(f).is_null() for f in REQUIRED_DOCUMENT_FIELDS])
        | pl.col("lines").is_null()
        | pl.col("lines").list.eval(line_gap).list.any().fill_null(False)
    )


def _raw_payloads(records: list | dict[int, object], positions: list[int]) -> tuple[pl.DataFrame, dict[str, int]]:
    """The raw JSON of each line of the given documents: the document's fields with that line's."""
    known_document, known_line = {*DOCUMENT_FIELDS, "lines"}, set(LINE_FIELDS)
    rows: list[tuple[int, int, str]] = []
    unexpected: dict[str, int] = {}
    for position in positions:
        record = records[position]
        if not isinstance(record, dict):
            rows.append((position, 0, orjson.dumps({"document": record}).decode()))
            continue
        head = {k: v for k, v in record.items() if k != "lines"}
        extra = {k for k in record if k not in known_document}
        lines = record.get("lines")
        if isinstance(lines, list) and lines:
            for j, line in enumerate(lines):
                if isinstance(line, dict):
                    extra |= {k for k in line if k not in known_line}
                    payload = {**head, **{(f"line.{k}" if k in head else k): v for k, v in line.items()}}
                else:
                    payload = {**head, "line": line}
                rows.append((position, j, orjson.dumps(payload).decode()))
        elif not isinstance(lines, list):
            rows.append((position, 0, orjson.dumps(record).decode()))
        for name in extra:
            unexpected[name] = unexpected.get(name, 0) + 1
    return pl.DataFrame(rows, schema=_RAW_PAYLOADS_SCHEMA, orient="row"), unexpected


def drop_repeated_documents(documents: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop documents served again by the ERP's paging (same id and identical content).

    A repeat is the same record delivered twice, not a second record: counting it would break
    reconciliation with the ERP. Two different documents under one id are both kept, so that
    validation dead-letters the conflicting lines instead of hiding them.
    """
    content = pl.struct([c for c in documents.columns if c not in ("source_batch", _DOC)]).hash(seed=0)
    # Without an id two documents cannot be told to be the same record: both stay (and fail validation).
    kept = documents.filter(content.is_first_distinct() | pl.col("txn_id").is_null())
    return kept, documents.height - kept.height


def _flatten(documents: pl.DataFrame, business_date: dt.date) -> pl.DataFrame:
    """Flattened lines keeping source_batch, __doc and __line (the line's position in its document)."""
    no_lines = pl.col("lines").is_null()
    with_lines = documents.with_columns(
        pl.when(no_lines).then(pl.lit([None], dtype=documents.schema["lines"])).otherwise(pl.col("lines")).alias("lines")
    )
    # Where each document's lines start once exploded: positions without a window over documents.
    sizes = pl.col("lines").list.len().cast(pl.Int64)
    with_lines = with_lines.with_columns((sizes.cum_sum() - sizes).alias("__first_row"))
    lines = (
        with_lines.filter(pl.col("lines").list.len() > 0)
        .explode("lines")
        .with_row_index(_ROW)
        .with_columns((pl.col(_ROW).cast(pl.Int64) - pl.col("__first_row")).alias(_LINE))
    )
    line_fields = pl.col("lines").struct.field(*LINE_FIELDS)
    return lines.with_columns(line_fields, pl.lit(business_date).alias("business_date")).drop("lines", "__first_row", _ROW)


# --- a day of pages -> raw lines -------------------------------------------------------------


@dataclass(frozen=True)
class IngestedDay:
    lines: pl.DataFrame  # RAW_TABLE_SCHEMA: one row per line, plus one per unreadable page
    pages: int
    documents: int
    repeated_documents: int
    dead_lettered_pages: list[str] = field(default_factory=list)  # source batches of unreadable pages
    misfit_documents: int = 0  # documents missing a required field (kept raw for the dead-letter copy)
    unexpected_fields: dict[str, int] = field(default_factory=dict)

    @property
    def lines_received(self) -> int:
        """Order lines read from the ERP (the rows standing for unreadable pages are not lines)."""
        return self.lines.height - len(self.dead_lettered_pages)


def raw_lines_from_pages(pages: list[tuple[str, bytes]], business_date: dt.date) -> IngestedDay:
    """Parse every page of a business date and flatten it to raw lines, in arrival order."""
    received = []
    for batch, body in pages:
        try:
            received.append(ReceivedPage(batch, body, read_erp_page(body)))
        except InvalidPage as exc:
            received.append(ReceivedPage(batch, body, None, str(exc)))
    return raw_lines_from_received(received, business_date)


def raw_lines_from_received(pages: list[ReceivedPage], business_date: dt.date) -> IngestedDay:
    """Read pages -> raw lines in arrival order; an unreadable page becomes one dead-letter row."""
    readable = [p for p in pages if p.parsed is not None]
    unreadable = [p for p in pages if p.parsed is None]
    parts = [p.parsed.documents.with_columns(pl.lit(p.source_batch).alias("source_batch")) for p in readable]
    documents = pl.concat(parts, how="vertical") if parts else _empty_documents(True)
    kept, repeated = drop_repeated_documents(documents)
    lines = _flatten(kept, business_date)
    payloads = [
        p.parsed.raw_payloads.with_columns(pl.lit(p.source_batch).alias("source_batch"))
        for p in readable
        if not p.parsed.raw_payloads.is_empty()
    ]
    if payloads:
        lines = lines.join(pl.concat(payloads), on=["source_batch", _DOC, _LINE], how="left", maintain_order="left")
    else:
        lines = lines.with_columns(pl.lit(None, dtype=pl.String).alias("raw_payload"))
    lines = lines.with_columns(pl.lit(None, dtype=pl.String).alias("page_error"))
    unexpected: dict[str, int] = {}
    for p in readable:
        for name, n in p.parsed.unexpected_fields.items():
            unexpected[name] = unexpected.get(name, 0) + n
    frames = [conform(lines.with_columns(pl.lit(None, dtype=pl.Int64).alias("arrival_seq")), RAW_TABLE_SCHEMA)]
    if unreadable:
        frames.append(dead_lettered_pages(unreadable, business_date))
    misfits = sum(p.parsed.raw_payloads[_DOC].n_unique() for p in readable)
    return IngestedDay(
        in_arrival_order(pl.concat(frames)),
        len(pages),
        kept.height,
        repeated,
        [p.source_batch for p in unreadable],
        misfits,
        dict(sorted(unexpected.items(), key=lambda kv: -kv[1])),
    )


def dead_lettered_pages(pages: list[ReceivedPage], business_date: dt.date) -> pl.DataFrame:
    """One raw row per unreadable page or document: no line fields, the reason, the cursor it was
    asked for from, and its raw bytes (a whole page: its start)."""
    rows = [
        {
            "business_date": business_date,
            "source_batch": p.source_batch,
            "raw_payload": _raw_text(p.body if p.limit == 1 else p.body[:PAGE_EXCERPT_CHARS]),
            "page_error": (
                (
                    f"document {p.source_batch} (the one document at cursor {p.cursor or '(first page)'}, "
                    f"asked for alone) stayed unreadable after {p.fetches} fetch{'es' if p.fetches != 1 else ''} "
                    f"({p.error}); its lines are not in this partition, the rest of its page is. "
                )
                if p.limit == 1
                else (
                    f"page {p.source_batch} stayed unreadable after {p.fetches} fetch{'es' if p.fetches != 1 else ''} "
                    f"({p.error}); none of its documents are in this partition. "
                )
            )
            + "Re-materialize the partition once the ERP serves it intact (if it never does, the export "
            "itself is broken: raise it with the ERP team).",
        }
        for p in pages
    ]
    return pl.DataFrame(rows, schema=RAW_TABLE_SCHEMA)


def _raw_text(body: bytes) -> str:
    """Bytes as text a table can hold: invalid UTF-8 and NUL bytes escaped, nothing dropped."""
    return body.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


def _empty_documents(with_batch: bool) -> pl.DataFrame:
    schema = dict(ERP_DOCUMENT_STRUCT.to_schema())
    if with_batch:
        schema = {_DOC: pl.UInt32, **schema, "source_batch": pl.String}
    return pl.DataFrame(schema=schema)


# --- the SKU master ----------------------------------------------------------------------------

# Reference records as the upstreams send them (text dates; extra fields are ignored).
_SKU_RECORD = pl.Struct({**{k: v for k, v in SKU_MASTER_SCHEMA.items() if k != "cube_is_default"}, "introduced_on": pl.String})


def read_sku_page(body: bytes) -> pl.DataFrame:
    return read_records_page(body, _SKU_RECORD)


def sku_master_from_pages(pages: list[pl.DataFrame]) -> pl.DataFrame:
    """The ERP's SKU pages (read by read_sku_page) as SKU_MASTER_SCHEMA, sorted by sku_id."""
    frame = pl.concat(pages) if pages else pl.DataFrame(schema=_SKU_RECORD.to_schema())
    frame = frame.with_columns(pl.col("introduced_on").str.to_date(), pl.lit(False).alias("cube_is_default"))
    return conform(frame, SKU_MASTER_SCHEMA).sort("sku_id")
