"""File-drop source: ERP exports as CSV or Parquet (plain or gzip), read through a column mapping.

An alternative to the HTTP ERP for warehouses whose ERP can only drop files. A `FileMapping`
declares which export column holds the order, the SKU, the quantity and the business time, and
how the export's conventions translate into ours (returns, adjustments, non-inventory codes).
Presets name the mappings we know; `online-retail` reads the UCI Online Retail export.

The file is read once per (path, size, mtime, mapping) and cached; every line is then in exactly
one of two places: a raw line (RAW_TRANSACTIONS_SCHEMA, text, for validation to judge) on its
business date, or an excluded non-inventory line (postage, fees, manual lines), counted per code.
Nothing is dropped: a line whose business time cannot be read is still a raw line, filed on the
file's first business date with its time as found, so validation dead-letters it with the reason.
A CSV line that cannot be parsed at all (an unterminated quote, the wrong number of fields, bytes
that are not UTF-8) is a raw line too, with its text and the reason and no fields, filed on the
business date of the line before it: validation dead-letters it, and the rest of the file is read.

Memory is bounded on any input (`FileLimits`, the VELOCITY_FILE_MAX_* settings): a file larger
than the limit once decompressed (a gzip bomb, a line of gigabytes) is refused in one line after
reading at most the limit; a header of more columns than the limit is refused; a CSV line longer
than the line limit (a field of 100 MB) is dead-lettered with its first bytes and the rest read;
a Parquet file is read only in the mapped columns, refused when they hold more than the limit
uncompressed, and a mapped column of a type that is no value (a list, a struct) is refused by name.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import io
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from velocity_platform.domain.contracts import RAW_SITE_SCHEMA, RAW_TRANSACTIONS_SCHEMA, SKU_MASTER_SCHEMA, conform
from velocity_platform.settings import SourceSettings

FileFormat = Literal["csv", "parquet"]
# Line number in the file, the header being line 0 (a record spanning lines: its first line).
_FIRST_LINE = "_file_line"
# A raw line from a file: the line fields, and for a line that could not be parsed its text
# (raw_payload) and why (page_error, which validation turns into the dead letter's reason).
FILE_LINE_SCHEMA = {**RAW_TRANSACTIONS_SCHEMA, **RAW_SITE_SCHEMA, "raw_payload": pl.String, "page_error": pl.String}
# A quoted field may span lines; one still open after this many lines is an unterminated quote.
MAX_LINES_PER_RECORD = 20


@dataclass(frozen=True)
class FileMapping:
    """How an export's columns and conventions map onto our raw order lines.

    Column fields name export columns; None means the export has no such column and the rule
    in the comment applies.
    """

    order: str  # -> txn_id
    sku: str  # -> sku_id
    quantity: str
    business_time: str  # local time of the business event, in `time_zone`
    time_format: str = "%Y-%m-%dT%H:%M:%S%.f%:z"
    time_zone: str = "UTC"  # zone of naive business times (ignored when the format has an offset)
    line_no: str | None = None  # None: lines are numbered 1..n within each order, in file order
    txn_type: str | None = None  # None: derived (return prefix, sign of the quantity)
    uom: str | None = None  # None: every line is in eaches
    customer: str | None = None
    description: str | None = None
    created_at: str | None = None  # None: the export has no commit time; the business time is used
    return_order_prefix: str | None = None  # an order number starting with this is a return
    sku_upper_case: bool = False  # codes differing only in case are one SKU
    non_inventory_codes: tuple[str, ...] = ()  # lines for these codes are counted, not picked
    # Codes shaped like these regular expressions (matched against the whole code as exported)
    # are non-inventory too: vouchers and fees a retailer numbers as it goes.
    non_inventory_patterns: tuple[str, ...] = ()
    default_unit_cube_ft3: float = 0.1  # the export has no cube: this one, flagged as a default
    # The warehouse of a line, from an export column: value -> warehouse id, and the warehouse of
    # every other value (a blank one included). None: the export is one warehouse's (null id).
    warehouse: str | None = None
    warehouse_of: tuple[tuple[str, str], ...] = ()
    other_warehouse: str | None = None

    def __post_init__(self) -> None:
        for pattern in self.non_inventory_patterns:
            try:
                pl.Series([""]).str.contains(pattern)
            except pl.exceptions.PolarsError as exc:
                why = next((line.strip() for line in str(exc).splitlines() if line.strip().startswith("error:")), "")
                raise ValueError(f"non_inventory_patterns: {pattern!r} is not a regular expression ({why})") from None

    def non_inventory(self, code: pl.Expr) -> pl.Expr:
        """True for this mapping's non-inventory codes, by name or by shape (a pattern matching the
        whole code)."""
        listed = code.is_in(list(self.non_inventory_codes))
        for pattern in self.non_inventory_patterns:
            listed = listed | code.str.contains(f"^(?:{pattern})$")
        return listed.fill_null(False)

    @property
    def columns(self) -> dict[str, str]:
        """Role -> export column, for the roles this export has."""
        roles = {
            "order": self.order,
            "sku": self.sku,
            "quantity": self.quantity,
            "business_time": self.business_time,
            "line_no": self.line_no,
            "txn_type": self.txn_type,
            "uom": self.uom,
            "customer": self.customer,
            "description": self.description,
            "created_at": self.created_at,
            "warehouse": self.warehouse,
        }
        return {role: column for role, column in roles.items() if column is not None}


PRESETS: dict[str, FileMapping] = {
    # UCI Online Retail (../shared/data/online_retail.csv.gz): InvoiceNo is the order, "C"
    # invoices are cancellations (returns), other negative quantities are stock adjustments,
    # InvoiceDate is local time in London, and a dozen codes are charges, not stock.
    "online-retail": FileMapping(
        order="InvoiceNo",
        sku="StockCode",
        quantity="Quantity",
        business_time="InvoiceDate",
        time_format="%Y-%m-%d %H:%M:%S",
        time_zone="Europe/London",
        customer="CustomerID",
        description="Description",
        return_order_prefix="C",
        # 15056bl and 15056BL are the same parasol: the export's case is noise.
        sku_upper_case=True,
        non_inventory_codes=(
            "POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE", "C2", "D", "CRUK", "PADS", "B", "S", "m",
        ),
        # Gift vouchers (gift_0001_10 .. gift_0001_50): sold, never picked from a location.
        non_inventory_patterns=(r"(?i)gift_\d{4}_\d+",),
    ),
    # Our own raw line columns, one file per drop: for ERPs that can export what the API serves.
    "erp-lines": FileMapping(
        order="txn_id",
        sku="sku_id",
        quantity="quantity",
        business_time="event_ts",
        line_no="line_no",
        txn_type="txn_type",
        uom="uom",
        customer="customer_id",
        created_at="created_at",
    ),
}


# The same export as a network of two sites: lines shipped to the United Kingdom are the UK
# warehouse's, every other country's the EU warehouse's.
PRESETS["online-retail-network"] = replace(
    PRESETS["online-retail"],
    warehouse="Country",
    warehouse_of=(("United Kingdom", "UK"),),
    other_warehouse="EU",
)


def preset(name: str, default_unit_cube_ft3: float | None = None) -> FileMapping:
    try:
        mapping = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown file preset {name!r}; choose one of {sorted(PRESETS)}") from None
    if default_unit_cube_ft3 is not None:
        if not default_unit_cube_ft3 > 0:
            raise ValueError(f"default unit cube must be > 0 ft3, got {default_unit_cube_ft3}")
        mapping = replace(mapping, default_unit_cube_ft3=float(default_unit_cube_ft3))
    return mapping


class FileSourceError(ValueError):
    """The file cannot be read as the mapping says (missing, unreadable, a mapped column absent)."""


@dataclass(frozen=True)
class FileLimits:
    """How much of an export is read at most (settings.py: VELOCITY_FILE_MAX_*)."""

    max_bytes: int = SourceSettings.model_fields["file_max_bytes"].default
    max_line_bytes: int = SourceSettings.model_fields["file_max_line_bytes"].default
    max_columns: int = SourceSettings.model_fields["file_max_columns"].default

    @classmethod
    def from_env(cls) -> FileLimits:
        source = SourceSettings.from_env(source="erp")  # the limits only: no file path needed
        return cls(source.file_max_bytes, source.file_max_line_bytes, source.file_max_columns)


# Bytes of an over-long line kept in its dead letter: enough to find it in the file.
_LONG_LINE_KEPT = 200


@dataclass(frozen=True)
class FileExport:
    """A mapped export: every line as a raw line or an excluded one, plus the file's accounting."""

    path: Path
    lines: pl.DataFrame  # FILE_LINE_SCHEMA + description, sorted by business_date
    excluded: pl.DataFrame  # business_date, sku_code, lines: non-inventory lines per date and code
    total_lines: int
    mapping: FileMapping = field(repr=False)

    @property
    def warehouses(self) -> list[str]:
        """The sites the export's lines belong to (empty: one warehouse's export)."""
        if self.mapping.warehouse is None:
            return []
        found = set(self.lines["warehouse_id"].drop_nulls()) | set(self.excluded["warehouse_id"].drop_nulls())
        return sorted(found | ({self.mapping.other_warehouse} if self.mapping.other_warehouse else set()))

    def of_site(self, warehouse_id: str | None) -> FileExport:
        """The lines of one site (the whole export when it is one warehouse's). A line whose site
        column could not be read (an unparsed line) is the catch-all site's, as a blank value is:
        every line belongs to exactly one site."""
        if self.mapping.warehouse is None or warehouse_id is None:
            return self
        site = pl.col("warehouse_id").fill_null(pl.lit(self.mapping.other_warehouse, pl.String)) == warehouse_id
        lines, excluded = self.lines.filter(site), self.excluded.filter(site)
        return FileExport(self.path, lines, excluded, lines.height + int(excluded["lines"].sum() or 0), self.mapping)

    @property
    def first_date(self) -> dt.date | None:
        dates = [d for d in (self.lines["business_date"].min(), self.excluded["business_date"].min()) if d]
        return min(dates) if dates else None

    @property
    def last_date(self) -> dt.date | None:
        dates = [d for d in (self.lines["business_date"].max(), self.excluded["business_date"].max()) if d]
        return max(dates) if dates else None

    def raw_lines(self, business_date: dt.date) -> pl.DataFrame:
        """The raw lines of one business date (FILE_LINE_SCHEMA), in file order."""
        return conform(self.lines.filter(pl.col("business_date") == business_date), FILE_LINE_SCHEMA)

    def raw_lines_between(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        between = pl.col("business_date").is_between(pl.lit(first, pl.Date), pl.lit(last, pl.Date))
        return conform(self.lines.filter(between), FILE_LINE_SCHEMA)

    @property
    def unparsed_lines(self) -> pl.DataFrame:
        """The lines that could not be parsed: line number, text as found, reason."""
        return self.lines.filter(pl.col("page_error").is_not_null()).select(
            pl.col("source_batch").str.extract(r"line-(\d+)$").cast(pl.Int64).alias("line"),
            pl.col("raw_payload").alias("text"),
            pl.col("page_error").alias("reason"),
        )

    def excluded_counts(self, business_date: dt.date | None = None) -> dict[str, int]:
        """Non-inventory lines per code (of one date, or of the whole file), most first."""
        rows = self.excluded if business_date is None else self.excluded.filter(pl.col("business_date") == business_date)
        counts = rows.group_by("sku_code").agg(pl.col("lines").sum()).sort(["lines", "sku_code"], descending=[True, False])
        return dict(zip(counts["sku_code"].to_list(), counts["lines"].to_list(), strict=True))

    def line_counts(self, business_date: dt.date) -> dict[str, int]:
        """Lines of the file on a date: raw (to validate) and excluded; `file_lines` is their sum."""
        raw = self.lines.filter(pl.col("business_date") == business_date).height
        excluded = int(self.excluded.filter(pl.col("business_date") == business_date)["lines"].sum())
        return {"file_lines": raw + excluded, "raw_lines": raw, "excluded_lines": excluded}

    def sku_master(self, as_of: dt.date | None = None) -> pl.DataFrame:
        """SKU_MASTER_SCHEMA for the SKUs the export mentions (up to `as_of`, if given).

        The export has no hierarchy, weight or case pack; the unit cube is the mapping's
        default, flagged `cube_is_default`. A SKU is introduced on the first business date it
        appears on, so a master as of a date knows nothing the export had not shown by then.
        """
        lines = self.lines.filter(pl.col("sku_id").is_not_null())
        if as_of is not None:
            lines = lines.filter(pl.col("business_date") <= as_of)
        master = (
            lines.group_by("sku_id")
            .agg(
                pl.col("description").drop_nulls().first(),
                pl.col("business_date").min().alias("introduced_on"),
            )
            .with_columns(
                pl.lit(None, pl.String).alias("category"),
                pl.lit(None, pl.String).alias("subcategory"),
                pl.lit(self.mapping.default_unit_cube_ft3).alias("unit_cube_ft3"),
                pl.lit(None, pl.Float64).alias("unit_weight_lb"),
                pl.lit(1, pl.Int32).alias("case_qty"),
                pl.lit(None, pl.Int32).alias("pallet_qty"),
                pl.lit(["EA"], pl.List(pl.String)).alias("uoms"),
                pl.lit(True).alias("cube_is_default"),
            )
        )
        return conform(master, SKU_MASTER_SCHEMA).sort("sku_id")


def read_export(
    path: str | os.PathLike,
    mapping: FileMapping,
    file_format: FileFormat | None = None,
    warehouse_tz: str | None = None,
    limits: FileLimits | None = None,
) -> FileExport:
    """Read and map an export; cached while the file is unchanged (size and mtime).

    Business dates are days in `warehouse_tz` (default: the mapping's time zone); `limits` default
    to the VELOCITY_FILE_MAX_* settings.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise FileSourceError(
            f"file-drop source {resolved} cannot be read ({exc.strerror}); set VELOCITY_FILE_PATH or --path to an export"
        ) from None
    file_format = file_format or detect_format(resolved)
    zone = warehouse_tz or mapping.time_zone
    limits = limits or FileLimits.from_env()
    return _read_export(resolved, stat.st_size, stat.st_mtime_ns, mapping, file_format, zone, limits)


def detect_format(path: Path) -> FileFormat:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "parquet"
    if suffixes and suffixes[-1] in (".csv", ".txt"):
        return "csv"
    raise FileSourceError(
        f"cannot tell the format of {path.name} from its name; expected .csv, .parquet (optionally .gz)"
    )


@functools.lru_cache(maxsize=2)
def _read_export(
    path: Path, size: int, mtime_ns: int, mapping: FileMapping, file_format: FileFormat, warehouse_tz: str, limits: FileLimits
) -> FileExport:
    del size, mtime_ns  # part of the cache key only: a changed file is read again
    frame, unparsed = _read_text_frame(path, file_format, limits, mapping)
    missing = [f"{role}={column!r}" for role, column in mapping.columns.items() if column not in frame.columns]
    if missing:
        raise FileSourceError(
            f"{path.name} has no column for {', '.join(missing)} (it has {frame.columns}); "
            "choose the preset that matches this export"
        )
    mapped = _map_lines(frame, mapping, path.name, warehouse_tz)
    if not unparsed.is_empty():
        mapped = _with_unparsed(mapped, unparsed, path.name)
    inventory = ~pl.col("_non_inventory")
    excluded = (
        mapped.filter(~inventory)
        .group_by("business_date", "warehouse_id", pl.col("_raw_sku").alias("sku_code"))
        .agg(pl.len().cast(pl.Int64).alias("lines"))
        .sort("business_date", "warehouse_id", "sku_code", nulls_last=True)
    )
    lines = mapped.filter(inventory).select(*FILE_LINE_SCHEMA, "description").sort(
        "business_date", maintain_order=True
    )
    return FileExport(path, lines, excluded, frame.height + unparsed.height, mapping)


_UNPARSED_SCHEMA = {_FIRST_LINE: pl.Int64, "text": pl.String, "reason": pl.String}


def _read_text_frame(
    path: Path, file_format: FileFormat, limits: FileLimits, mapping: FileMapping
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every column as text (so a drifted type becomes a dead letter rather than a crash), with
    each record's line number; and the lines that could not be parsed (_UNPARSED_SCHEMA)."""
    try:
        data = _read_bounded(path, limits)
        if file_format == "csv":
            return _read_csv(data, path.name, limits)
        table = _read_parquet(data, path.name, limits, mapping)
        return table.with_columns(_as_text(table.schema, mapping)).with_row_index(_FIRST_LINE, offset=1).with_columns(
            pl.col(_FIRST_LINE).cast(pl.Int64)
        ), pl.DataFrame(schema=_UNPARSED_SCHEMA)
    except (OSError, EOFError, pl.exceptions.PolarsError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileSourceError(f"{path.name} is not a readable {file_format} export: {message}") from None


def _as_text(schema: pl.Schema, mapping: FileMapping) -> list[pl.Expr]:
    """Parquet columns as text: a typed time as the mapping's time format writes it (a naive one
    where the format wants an offset, in ISO form with the mapping's zone's reading left to it)."""
    times = {mapping.business_time, mapping.created_at}
    has_offset = "%z" in mapping.time_format or "%:z" in mapping.time_format
    exprs = []
    for name, dtype in schema.items():
        column = pl.col(name)
        if name in times and dtype == pl.Date:
            column = column.cast(pl.Datetime("us"))
            dtype = pl.Datetime("us")
        if name in times and isinstance(dtype, pl.Datetime) and (dtype.time_zone or not has_offset):
            exprs.append(column.dt.strftime(mapping.time_format).alias(name))
        else:
            exprs.append(column.cast(pl.String))
    return exprs


def _too_large(name: str, what: str, limit: int, variable: str) -> FileSourceError:
    return FileSourceError(f"{name} is refused: {what} than the limit of {limit:,} ({variable}; raise it to read this file)")


def _read_bounded(path: Path, limits: FileLimits) -> bytes:
    """The file's bytes (decompressed), reading one byte past the limit at most: a gzip bomb or a
    line of gigabytes costs the limit, not the machine."""
    compressed = path.suffix.lower() == ".gz"
    with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
        data = handle.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        what = "it holds more bytes" + (" once decompressed" if compressed else "")
        raise _too_large(path.name, what, limits.max_bytes, SourceSettings.variable("file_max_bytes"))
    return data


def _read_parquet(data: bytes, name: str, limits: FileLimits, mapping: FileMapping) -> pl.DataFrame:
    """The mapped columns only (a wide file costs what it maps), refused when they hold more than
    the limit uncompressed or a type that is not a single value."""
    import pyarrow.parquet as pq  # polars' own dependency for Parquet metadata

    source = pq.ParquetFile(io.BytesIO(data))
    names = source.schema_arrow.names
    if len(names) > limits.max_columns:
        raise _too_large(name, f"its schema names {len(names):,} columns, more", limits.max_columns, SourceSettings.variable("file_max_columns"))
    wanted = [c for c in mapping.columns.values() if c in names]
    meta = source.metadata
    unpacked = sum(
        meta.row_group(g).column(i).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for i in range(meta.num_columns)
        if meta.row_group(g).column(i).path_in_schema.split(".")[0] in wanted
    )
    if unpacked > limits.max_bytes:
        raise _too_large(name, "its mapped columns hold more bytes uncompressed", limits.max_bytes, SourceSettings.variable("file_max_bytes"))
    table = pl.read_parquet(io.BytesIO(data), columns=wanted)
    nested = [f"{c!r} is {t}" for c, t in table.schema.items() if t.is_nested() or t == pl.Object]
    if nested:
        raise FileSourceError(
            f"{name} is refused: {', '.join(nested)}, not one value per line; export it as text or a number"
        )
    return table


# A quoted field as RFC 4180 writes it; what is left of a line without them holds no quote.
_QUOTED_FIELD = r'"(?:[^"]|"")*"'


def _read_csv(data: bytes, name: str, limits: FileLimits) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole file through polars' reader; the lines are checked for shape in the same pass
    (vectorised), and only a file with a broken line is read again, around the broken lines."""
    header_end = data.find(b"\n", 0, limits.max_line_bytes + 1)
    if header_end < 0 and len(data) > limits.max_line_bytes:
        raise _too_large(name, "its header line holds more bytes", limits.max_line_bytes, SourceSettings.variable("file_max_line_bytes"))
    header = data if header_end < 0 else data[:header_end]
    try:
        header_text = header.decode("utf-8").removeprefix("\ufeff").rstrip("\r")
    except UnicodeDecodeError:
        header_text = ""
    if not header_text.strip() or "\x00" in header_text:
        raise FileSourceError(f"{name} is not a CSV export: its first line is not a header of column names")
    columns = len(re.sub(_QUOTED_FIELD, "", header_text).split(","))
    if columns > limits.max_columns:
        raise _too_large(name, f"its header names {columns:,} columns, more", limits.max_columns, SourceSettings.variable("file_max_columns"))
    data, long_lines = _cut_long_lines(data, columns, limits.max_line_bytes)
    if long_lines:
        frame, unparsed = _read_csv_around_broken_lines(data, name, header_text, columns)
        return frame, _with_long_line_reasons(unparsed, long_lines, name, limits.max_line_bytes)
    try:
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except pl.exceptions.PolarsError:
        frame = None
    if frame is not None and _read_whole(data, frame, columns):
        return frame.with_row_index(_FIRST_LINE, offset=1).with_columns(pl.col(_FIRST_LINE).cast(pl.Int64)), pl.DataFrame(
            schema=_UNPARSED_SCHEMA
        )
    return _read_csv_around_broken_lines(data, name, header_text, columns)


def _cut_long_lines(data: bytes, columns: int, max_line_bytes: int) -> tuple[bytes, dict[int, tuple[int, bytes]]]:
    """Each line longer than the limit replaced by a line that cannot be a record (one field too
    many, no quote), so it is judged broken where it stands and the line numbers hold; returns
    line number -> (its length, its first bytes). Line ends are found vectorised (numpy)."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(data)]))
    long = np.flatnonzero(stops - starts > max_line_bytes)
    if not long.size:
        return data, {}
    pieces, cut, at = [], {}, 0
    for number in long.tolist():
        start, stop = int(starts[number]), int(stops[number])
        pieces += [data[at:start], b"," * columns]
        cut[number] = (stop - start, data[start : start + _LONG_LINE_KEPT])
        at = stop
    pieces.append(data[at:])
    return b"".join(pieces), cut


def _with_long_line_reasons(
    unparsed: pl.DataFrame, long_lines: dict[int, tuple[int, bytes]], name: str, limit: int
) -> pl.DataFrame:
    variable = SourceSettings.variable("file_max_line_bytes")
    found = pl.DataFrame(
        [
            (
                n,
                head.decode("utf-8", errors="backslashreplace") + " ...",
                f"line {n} of {name} (after the header) is {length:,} bytes, over the limit of {limit:,} "
                f"({variable}); its first {len(head)} bytes are kept",
            )
            for n, (length, head) in long_lines.items()
        ],
        schema=_UNPARSED_SCHEMA,
        orient="row",
    )
    return unparsed.update(found, on=_FIRST_LINE)


def _read_whole(data: bytes, frame: pl.DataFrame, columns: int) -> bool:
    """Whether polars read every line as one whole record. Too many fields or a quote never
    closed make its reader fail; a quote that swallowed lines, a field spanning lines or a blank
    line leave fewer records than lines; a line with too few fields is read with nulls at its
    end, so only the lines whose last field came out null are looked at."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - 1
    if lines != frame.height:
        return False
    short = frame.select(pl.col(frame.columns[-1]).is_null().arg_true())[frame.columns[-1]]
    if short.is_empty():
        return True
    text = _physical_lines(data)
    return text is not None and bool(_whole(text.gather(short + 1), columns).all())


def _physical_lines(data: bytes) -> pl.Series | None:
    """The file's lines as text, header first (no quoting applied; a blank line is ""), or None
    when the file is not all UTF-8."""
    separator = next((c for c in "\x1f\x1e\x1d\x1c" if c.encode() not in data), None)
    if separator is None:
        return None
    try:
        lines = pl.read_csv(
            io.BytesIO(data), has_header=False, separator=separator, quote_char=None, schema={"line": pl.String}
        )["line"]
    except pl.exceptions.PolarsError:
        return None
    return lines.str.strip_suffix("\r").fill_null("")


def _whole(lines: pl.Series, columns: int) -> pl.Series:
    """True for a line that is a whole record of `columns` fields (quoted fields well formed).
    The quoting rule is a regular expression, run only on the few lines that hold a quote."""
    quoted = lines.str.contains('"', literal=True)
    whole = (lines.str.count_matches(",", literal=True) == columns - 1) & ~quoted
    if quoted.any():
        positions = quoted.arg_true()
        unquoted = lines.gather(positions).str.replace_all(_QUOTED_FIELD, "")
        fits = (unquoted.str.count_matches(",", literal=True) == columns - 1) & ~unquoted.str.contains('"', literal=True)
        whole = whole.scatter(positions, fits)
    return whole


def _read_csv_around_broken_lines(
    data: bytes, name: str, header_text: str, columns: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The failure path: lines judged vectorised, then each suspect one on its own (a quoted
    field may continue over the following lines); the whole records parsed by polars, the
    others returned with their reason."""
    lines = _physical_lines(data)
    raw: list[bytes] = []
    not_utf8: dict[int, str] = {}
    if lines is None:  # bytes that are not UTF-8 somewhere: find the lines, one by one
        raw = data.split(b"\n")
        if raw and raw[-1] in (b"", b"\r"):
            raw.pop()
        text: list[str] = []
        for number, line in enumerate(raw):
            try:
                text.append(line.decode("utf-8").removesuffix("\r"))
            except UnicodeDecodeError as exc:
                text.append("")
                not_utf8[number] = (
                    f"bytes that are not UTF-8 at byte {exc.start + 1} (0x{line[exc.start : exc.start + 1].hex()}); "
                    "export the file as UTF-8"
                )
        lines = pl.Series("line", text, dtype=pl.String)
    blank = lines.str.strip_chars() == ""
    unreadable = pl.Series("unreadable", [False] * lines.len()).scatter(list(not_utf8), True) if not_utf8 else False
    suspects = ((~_whole(lines, columns) & ~blank) | unreadable).arg_true().to_list()
    dropped = set(blank.arg_true().to_list()) | {0}
    spanned: dict[int, str] = {}
    broken: list[tuple[int, str, str]] = []
    consumed_to = 0
    for number in suspects:
        if number == 0 or number < consumed_to:
            continue
        dropped.add(number)
        if number in not_utf8:
            broken.append((number, raw[number].decode("utf-8", errors="backslashreplace"), not_utf8[number]))
            continue
        line = lines[number]
        unquoted = re.sub(_QUOTED_FIELD, "", line)
        if '"' in unquoted:
            end = _spanning_record(lines, number, columns, set(not_utf8))
            if end:
                spanned[number] = "\n".join(lines.slice(number, end - number).to_list())
                dropped.update(range(number + 1, end))
                consumed_to = end
                dropped.discard(number)
                continue
            reason = "a quote that is never closed (or a stray quote inside a field); quote the field and double any quote in it"
        else:
            fields = unquoted.count(",") + 1
            reason = f"{fields} field{'s' if fields != 1 else ''} where the header has {columns}"
        broken.append((number, line, reason))
    numbered = pl.DataFrame({_FIRST_LINE: pl.int_range(lines.len(), eager=True, dtype=pl.Int64), "line": lines})
    records = numbered.filter(~pl.col(_FIRST_LINE).is_in(list(dropped)))
    if spanned:
        records = records.update(
            pl.DataFrame({_FIRST_LINE: list(spanned), "line": list(spanned.values())}, schema=records.schema), on=_FIRST_LINE
        )
    if records.is_empty():
        raise FileSourceError(
            f"{name} is not a CSV export: none of its {lines.len() - 1:,} lines is a record of the header's {columns} columns"
        )
    body = header_text + "\n" + records["line"].str.join("\n")[0] + "\n"
    try:
        frame = pl.read_csv(io.BytesIO(body.encode()), infer_schema=False)
    except pl.exceptions.PolarsError as exc:  # not expected: every record was checked above
        raise FileSourceError(f"{name} is not a readable csv export: {str(exc).splitlines()[0]}") from None
    frame = frame.with_columns(records[_FIRST_LINE]).select(_FIRST_LINE, *frame.columns)
    unparsed = pl.DataFrame(
        [(n, t, f"line {n} of {name} (after the header) could not be read as CSV: {r}") for n, t, r in broken],
        schema=_UNPARSED_SCHEMA,
        orient="row",
    )
    return frame, unparsed


def _spanning_record(lines: pl.Series, first: int, columns: int, not_utf8: set[int]) -> int | None:
    """Where a record whose quoted field continues on the next lines ends (exclusive), if it does."""
    for end in range(first + 2, min(first + MAX_LINES_PER_RECORD, lines.len()) + 1):
        if end - 1 in not_utf8:
            return None
        joined = "\n".join(lines.slice(first, end - first).to_list())
        unquoted = re.sub(_QUOTED_FIELD, "", joined)
        if '"' not in unquoted:
            return end if unquoted.count(",") == columns - 1 else None
    return None


def _with_unparsed(mapped: pl.DataFrame, unparsed: pl.DataFrame, source_name: str) -> pl.DataFrame:
    """The unparsed lines as raw rows without fields, each on the business date of the nearest
    line before it (after it, at the top of the file): where the file's order puts it."""
    rows = unparsed.select(
        pl.col(_FIRST_LINE),
        pl.lit(None, pl.Date).alias("business_date"),
        (pl.lit(f"file:{source_name}:line-") + pl.col(_FIRST_LINE).cast(pl.String)).alias("source_batch"),
        pl.col("text").alias("raw_payload"),
        pl.col("reason").alias("page_error"),
        pl.lit(False).alias("_non_inventory"),
    )
    combined = pl.concat([mapped, rows], how="diagonal_relaxed").sort(_FIRST_LINE)
    return combined.with_columns(pl.col("business_date").forward_fill().backward_fill())


def _text(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars()


def _map_lines(frame: pl.DataFrame, m: FileMapping, source_name: str, warehouse_tz: str) -> pl.DataFrame:
    """Export columns -> our raw line fields (text), business date, and the non-inventory flag."""
    raw_sku = _text(m.sku)
    sku = raw_sku.str.to_uppercase() if m.sku_upper_case else raw_sku
    order = _text(m.order)
    quantity = _text(m.quantity)
    number = quantity.cast(pl.Float64, strict=False)
    has_offset = "%z" in m.time_format or "%:z" in m.time_format
    time_text = _text(m.business_time).str.replace(r"Z$", "+00:00") if has_offset else _text(m.business_time)
    local = time_text.str.to_datetime(m.time_format, strict=False, time_unit="us")
    if not has_offset:
        # Naive local times: an hour that does not exist (spring forward) is still that hour.
        local = local.dt.replace_time_zone(m.time_zone, ambiguous="earliest", non_existent="null")
    utc = local.dt.convert_time_zone("UTC")
    business_date = utc.dt.convert_time_zone(warehouse_tz).dt.date()

    if m.txn_type is not None:
        txn_type, signed = _text(m.txn_type), quantity
    else:
        is_return = order.str.starts_with(m.return_order_prefix) if m.return_order_prefix else pl.lit(False)
        # A return is units coming back: positive. Any other negative line is a stock adjustment.
        txn_type = (
            pl.when(is_return.fill_null(False))
            .then(pl.lit("RETURN"))
            .when(number < 0)
            .then(pl.lit("ADJUSTMENT"))
            .otherwise(pl.lit("ORDER"))
        )
        signed = pl.when(is_return.fill_null(False) & number.is_not_null()).then((-number).cast(pl.String)).otherwise(quantity)

    line_no = (
        _text(m.line_no)
        if m.line_no is not None
        else pl.int_range(1, pl.len() + 1).over(order).cast(pl.String)
    )
    event_ts = pl.when(utc.is_not_null()).then(utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ")).otherwise(_text(m.business_time))
    customer = _text(m.customer).str.replace(r"\.0+$", "") if m.customer else pl.lit(None, pl.String)
    warehouse = pl.lit(None, pl.String)
    if m.warehouse is not None:
        warehouse = _text(m.warehouse).replace_strict(dict(m.warehouse_of), default=pl.lit(m.other_warehouse, pl.String), return_dtype=pl.String)
    mapped = frame.select(
        pl.col(_FIRST_LINE),
        business_date.alias("business_date"),
        pl.lit(None, pl.String).alias("source_batch"),
        order.alias("txn_id"),
        txn_type.alias("txn_type"),
        customer.alias("customer_id"),
        event_ts.alias("event_ts"),
        (_text(m.created_at) if m.created_at else event_ts).alias("created_at"),
        line_no.alias("line_no"),
        sku.alias("sku_id"),
        signed.alias("quantity"),
        (_text(m.uom) if m.uom else pl.lit("EA")).alias("uom"),
        warehouse.alias("warehouse_id"),
        (_text(m.description) if m.description else pl.lit(None, pl.String)).alias("description"),
        raw_sku.alias("_raw_sku"),
        m.non_inventory(raw_sku).alias("_non_inventory"),
        pl.lit(None, pl.String).alias("raw_payload"),
        pl.lit(None, pl.String).alias("page_error"),
    )
    # Undated lines still need a partition to be dead-lettered on: the file's first date.
    first_date = mapped["business_date"].min()
    if first_date is None and mapped.height:
        raise FileSourceError(
            f"{source_name}: no line has a business time readable as {m.time_format!r} in column {m.business_time!r}; "
            "choose the preset that matches this export"
        )
    return mapped.with_columns(
        pl.col("business_date").fill_null(first_date),
        (pl.lit(f"file:{source_name}:line-") + pl.col(_FIRST_LINE).cast(pl.String)).alias("source_batch"),
    )
