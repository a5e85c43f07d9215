"""The one owner of the warehouse tables: where they live, how they are read and written.

Two stores, one layout. The lake (the default): one Delta Lake table per asset under
`VELOCITY_LAKE_PATH`, written by delta-rs, partitioned by site and business date, so many
processes and machines write at once (each replace of a (date, site) partition is one commit by
predicate; disjoint partitions never conflict, an overlap is retried) and DuckDB reads them through
its delta extension, each table a view of schema `warehouse` on an in-memory connection. The
DuckDB file (`VELOCITY_TABLE_STORE=duckdb-file`): schema `warehouse` of one file, one writer at a
time, kept for comparison and for deployments not yet moved. Either way one table per asset
(named after the asset), every partitioned table carrying its business date in the DATE column
`business_date` and its site in `warehouse_id` (one table holds every site: a network's velocity
is one query). A session
scoped to a site (`session(warehouse_id=...)`) reads that site's rows only, without the column,
so a stage's code and the domain's SQL builders see one warehouse as they always did. The I/O
manager, velocity's window, the signals, the sensors, the dead-letter history and the run
summary all read through `WarehouseTables`; no other module writes SQL that names a table here
(the domain's SQL builders take the table's name as an argument, and get it from here).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from pydantic import Field
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from velocity_platform.connectors.object_store import S3Lake, is_remote
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID, check_warehouse_id

SCHEMA = "warehouse"
# Every partitioned table carries its business date in this DATE column (a text column would
# silently load nothing downstream), and its site in this one.
PARTITION_COLUMN = "business_date"
WAREHOUSE_COLUMN = "warehouse_id"
# Identifiers that reach SQL text: tables and columns only by a name of the warehouse's own shape.
# Values are always parameters.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _checked(name: str, what: str = "table") -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a warehouse {what} name (lower-case letters, digits and '_')")
    return name


def _site_clause(site_days: dict[str | None, list[dt.date]]) -> tuple[str, list]:
    """Rows of exactly these sites' dates (site None: the dates of a table partitioned by date
    alone): consecutive dates as one range (zone maps skip the rest of the table), scattered ones
    as a list."""
    clauses, params = [], []
    for site, days in sorted(site_days.items(), key=lambda kv: kv[0] or ""):
        days = sorted(set(days))
        of_site, site_params = (f"{WAREHOUSE_COLUMN} = ? AND ", [site]) if site is not None else ("", [])
        if (days[-1] - days[0]).days == len(days) - 1:
            clauses.append(f"({of_site}{PARTITION_COLUMN} BETWEEN ? AND ?)")
            params += [*site_params, days[0], days[-1]]
        else:
            clauses.append(f"({of_site}list_contains(?, {PARTITION_COLUMN}))")
            params += [*site_params, days]
    return "(" + " OR ".join(clauses) + ")", params


class TableSession:
    """Reads and writes of the warehouse tables on one open connection; with a `warehouse_id`,
    every read sees that site's rows only (and no site column)."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, schema: str, warehouse_id: str | None = None) -> None:
        self.connection = connection
        self.schema = schema
        self.warehouse_id = check_warehouse_id(warehouse_id) if warehouse_id is not None else None

    def scoped(self, warehouse_id: str | None) -> "TableSession":
        """The same connection as one site sees it."""
        return TableSession(self.connection, self.schema, warehouse_id)

    def name(self, table: str) -> str:
        """The table's qualified name (every site's rows)."""
        return f'{self.schema}."{_checked(table)}"'

    def source(self, table: str) -> str:
        """What the session reads the table as, for the domain's SQL builders: the table itself,
        or, scoped to a site, that site's rows without the site column. Network-wide tables (the
        SKU master) have no site column and read whole."""
        if self.warehouse_id is None or WAREHOUSE_COLUMN not in self.columns(table):
            return self.name(table)
        # The id is checked against the id pattern (letters, digits, '-', '_'): safe as a literal,
        # which the builders' SQL needs (they do not pass parameters).
        return f"(SELECT * EXCLUDE ({WAREHOUSE_COLUMN}) FROM {self.name(table)} WHERE {WAREHOUSE_COLUMN} = '{self.warehouse_id}')"

    def columns(self, table: str) -> set[str]:
        """The table's columns; empty when it does not exist yet."""
        rows = self.connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [self.schema, _checked(table)],
        ).fetchall()
        return {row[0] for row in rows}

    def exists(self, table: str) -> bool:
        return bool(self.columns(table))

    def _where(self, first: dt.date | None, last: dt.date | None, equal: dict | None = None) -> tuple[str, list]:
        clauses, params = [], []
        if first is not None:
            clauses.append(f"{PARTITION_COLUMN} BETWEEN ? AND ?")
            params += [first, last or first]
        for column, value in (equal or {}).items():
            clauses.append(f'"{_checked(column, "column")}" = ?')
            params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def read(
        self,
        table: str,
        first: dt.date | None = None,
        last: dt.date | None = None,
        columns: list[str] | None = None,
        matching: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """The table's rows for the business dates first..last (all rows without dates), only
        `columns` if given, and only rows whose values of `matching`'s columns appear in it."""
        selected = ", ".join(f'"{_checked(c, "column")}"' for c in columns) if columns else "*"
        where, params = self._where(first, last)
        sql = f"SELECT {selected} FROM {self.source(table)}{where}"
        if matching is None:
            return pl.DataFrame(self.connection.execute(sql, params).arrow())
        keys = [_checked(c, "column") for c in matching.columns]
        self.connection.register("matching_rows", matching.to_arrow())
        try:
            on = " AND ".join(f't."{k}" = m."{k}"' for k in keys)
            return pl.DataFrame(
                self.connection.execute(
                    f"SELECT * FROM ({sql}) t WHERE EXISTS (SELECT 1 FROM matching_rows m WHERE {on})", params
                ).arrow()
            )
        finally:
            self.connection.unregister("matching_rows")

    def count(self, table: str, first: dt.date | None = None, last: dt.date | None = None, equal: dict | None = None) -> int:
        """Rows of the table for the dates (and with these column values); 0 when it does not exist."""
        if not self.exists(table):
            return 0
        where, params = self._where(first, last, equal)
        return self.connection.execute(f"SELECT count(*) FROM {self.source(table)}{where}", params).fetchone()[0]

    def dates_held(self, table: str, first: dt.date, last: dt.date) -> int:
        """How many of the business dates first..last the table holds rows for."""
        where, params = self._where(first, last)
        return self.connection.execute(
            f"SELECT count(DISTINCT {PARTITION_COLUMN}) FROM {self.source(table)}{where}", params
        ).fetchone()[0]

    def query(self, table: str, sql_of: Callable[[str], str], frames: dict[str, pl.DataFrame] | None = None) -> pl.DataFrame:
        """The result of a domain SQL builder run on the table (given its qualified name), with
        `frames` registered under their names for the SQL to join."""
        for name, frame in (frames or {}).items():
            self.connection.register(name, frame.to_arrow())
        try:
            return pl.DataFrame(self.connection.execute(sql_of(self.source(table))).arrow())
        finally:
            for name in frames or {}:
                self.connection.unregister(name)

    def read_site_days(self, table: str, site_days: dict[str, list[dt.date]], columns: list[str] | None = None) -> pl.DataFrame:
        """The table's rows of exactly these sites' dates, with the site column (the I/O manager's
        load of a run's partitions, which may span sites)."""
        if columns and None not in site_days:
            columns = list(dict.fromkeys([*columns, WAREHOUSE_COLUMN]))
        selected = ", ".join(f'"{_checked(c, "column")}"' for c in columns) if columns else "*"
        where, params = _site_clause(site_days)
        return pl.DataFrame(self.connection.execute(f"SELECT {selected} FROM {self.name(table)} WHERE {where}", params).arrow())

    def replace(self, table: str, frame: pl.DataFrame, site_days: dict[str, list[dt.date]] | None) -> int:
        """Store `frame` as the table's rows of these sites' dates (the whole table without them);
        the commit retries it took (always 0 here: the file has one writer).

        - Exactly those (site, date) pairs are replaced: a run over some sites' dates never
          touches another site's rows, nor dates it was not given.
        - An empty frame still creates its (empty) table: the first reader downstream would
          otherwise fail on a missing table instead of reading zero rows.
        - Rows are written by column name, and a column a newer version of an asset adds is added
          to the existing table (null in the rows already there), so an upgrade never fails a write.
          The site column, added to a table written before sites existed, marks the rows already
          there as the default site's: they are that one warehouse's.
        - Row groups are written in parallel, in any order, which halves the cost of storing a
          large day; no table's row order means anything (raw lines carry theirs in arrival_seq).
        """
        con, name = self.connection, self.name(table)
        arrow = frame.to_arrow()  # noqa: F841  # referenced by name in the SQL below
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        con.execute("SET preserve_insertion_order = false")
        columns = self.columns(table)
        if not columns:
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM arrow")
            return 0
        for column, column_type, *_ in con.execute("DESCRIBE SELECT * FROM arrow").fetchall():
            if column not in columns:
                con.execute(f'ALTER TABLE {name} ADD COLUMN "{column}" {column_type}')
                if column == WAREHOUSE_COLUMN:
                    con.execute(f"UPDATE {name} SET {WAREHOUSE_COLUMN} = ?", [DEFAULT_WAREHOUSE_ID])
        if site_days is None:
            con.execute(f"DELETE FROM {name}")
        elif site_days:
            where, params = _site_clause(site_days)
            con.execute(f"DELETE FROM {name} WHERE {where}", params)
        if not frame.is_empty():
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM arrow")
        return 0


# --- the lake: Delta tables written by delta-rs, read by DuckDB -----------------------------------

# A replace whose commit lost a race with another writer of the same partition is tried again:
# the conflict is real (both wrote those rows) and the later writer wins, as on the file.
LAKE_COMMIT_ATTEMPTS = 8


# Every tenth commit of a table writes a checkpoint of its log, so a reader replays at most ten
# JSON commits after it, each a GET in a bucket. Delta's default, 100, had a 90-commit table's
# readers replay all 90: opening it took 0.45 s from moto's S3 against 0.04 s from a checkpoint
# (benchmarks/lake_checkpoints.py; docs/performance.md, "A table's log").
CHECKPOINT_EVERY_COMMITS = 10


def table_properties(retain_days: int) -> dict[str, str]:
    """The Delta properties every lake table is created with, and the weekly maintenance keeps."""
    return {
        "delta.checkpointInterval": str(CHECKPOINT_EVERY_COMMITS),
        # A checkpoint also drops the log entries older than this: kept as long as the vacuum keeps
        # files, so a version a directive batch records stays readable for the whole retention.
        "delta.logRetentionDuration": f"interval {retain_days} days",
    }


def _commit_retries() -> Retrying:
    """A commit that lost a race with another writer of the same files, tried again after a random,
    growing pause."""
    return Retrying(
        retry=retry_if_exception_type(CommitFailedError),
        stop=stop_after_attempt(LAKE_COMMIT_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        reraise=True,
    )


def _lake_predicate(site_days: dict[str | None, list[dt.date]]) -> str:
    """The Delta predicate selecting exactly these sites' dates (delta-rs takes SQL text, not
    parameters: ids are checked against the id pattern and dates are ISO dates, so both are safe as
    literals)."""
    clauses = []
    for site, days in sorted(site_days.items(), key=lambda kv: kv[0] or ""):
        days = sorted(set(days))
        of_site = f"{WAREHOUSE_COLUMN} = '{check_warehouse_id(site)}' AND " if site is not None else ""
        if (days[-1] - days[0]).days == len(days) - 1:
            clauses.append(f"({of_site}{PARTITION_COLUMN} BETWEEN '{days[0].isoformat()}' AND '{days[-1].isoformat()}')")
        else:
            listed = ", ".join(f"'{d.isoformat()}'" for d in days)
            clauses.append(f"({of_site}{PARTITION_COLUMN} IN ({listed}))")
    return " OR ".join(clauses)


@cache
def duckdb_extension(name: str) -> str:
    """An extension's binary shipped by its `duckdb-extension-NAME` wheel (delta; httpfs for an
    S3 lake): an extension download at run time fails offline, and would fetch whatever version
    the server has."""
    import importlib

    package = importlib.import_module(f"duckdb_extension_{name}")
    folder = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    binary = folder / f"{name}.duckdb_extension"
    if not binary.exists():
        raise RuntimeError(
            f"duckdb {duckdb.__version__} has no {name} extension in {folder.parent}: install the "
            f"duckdb-extension-{name} release matching duckdb (pyproject.toml pins both)"
        )
    return str(binary)


def delta_extension() -> str:
    return duckdb_extension("delta")


def storage_options(root: str) -> dict[str, str] | None:
    """delta-rs's options for the lake at `root`: None for a folder, the bucket's way in for s3://."""
    return S3Lake(root).storage_options() if is_remote(root) else None


def table_uri(root: str, table: str) -> str:
    """Where a table of the lake at `root` lives (a folder of its own, on disk or under the bucket's prefix)."""
    return f"{root.rstrip('/')}/{_checked(table)}"


_LAKE_DATABASES: dict[tuple[int, str], duckdb.DuckDBPyConnection] = {}
_LAKE_DATABASES_LOCK = threading.Lock()


def lake_connection(root: str) -> duckdb.DuckDBPyConnection:
    """A connection to the process's in-memory DuckDB of the lake at `root`, which reads Delta
    tables: nothing on disk is locked, so any number of processes read and write the lake at
    once. Loading the extension costs about 0.2 s, so each lake's database is made once per
    process (one per lake: its views name that lake's tables) and each session gets a cursor of
    it, its own connection with the extension and the views shared."""
    key = (os.getpid(), root)  # a forked child makes its own
    with _LAKE_DATABASES_LOCK:
        if key not in _LAKE_DATABASES:
            con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
            con.execute(f"LOAD '{delta_extension()}'")
            if is_remote(root):
                # delta_scan reads a bucket through httpfs, with the secret scoped to that bucket.
                con.execute(f"LOAD '{duckdb_extension('httpfs')}'")
                con.execute(S3Lake(root).duckdb_secret_sql())
            _LAKE_DATABASES[key] = con
        return _LAKE_DATABASES[key].cursor()


class LakeSession(TableSession):
    """Reads as on the file (each table a view over `delta_scan`), writes by delta-rs.

    A view is made the first time a table is named in the session and made again after the
    session writes it; `delta_scan` reads the table's latest version at each query, so a session
    sees what other processes committed meanwhile.
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        schema: str,
        root: str,
        warehouse_id: str | None = None,
        storage_options: dict[str, str] | None = None,
        views: dict[str, bool] | None = None,
        retain_days: int = 30,
    ) -> None:
        super().__init__(connection, schema, warehouse_id)
        self.root = root.rstrip("/")
        self.storage_options = storage_options or None
        self.retain_days = retain_days
        self._views = views if views is not None else {}  # table -> whether it exists (shared by scoped copies)
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    def scoped(self, warehouse_id: str | None) -> "LakeSession":
        return LakeSession(self.connection, self.schema, self.root, warehouse_id, self.storage_options, self._views, self.retain_days)

    @property
    def properties(self) -> dict[str, str]:
        return table_properties(self.retain_days)

    def uri(self, table: str) -> str:
        return table_uri(self.root, table)

    def _delta_table(self, table: str) -> DeltaTable | None:
        uri = self.uri(table)
        if not is_remote(uri) and not os.path.isdir(os.path.join(uri, "_delta_log")):
            return None  # cheaper than asking delta-rs, and what most first looks find
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
            return None
        return DeltaTable(uri, storage_options=self.storage_options)

    def _view(self, table: str) -> bool:
        """Make the table's view if the table exists; whether it does."""
        if table in self._views:
            return self._views[table]
        delta = self._delta_table(table)
        if delta is not None:
            # The columns in the order they were written (DuckDB would put the partition columns last).
            listed = ", ".join(f'"{f.name}"' for f in delta.schema().fields)
            uri = self.uri(table).replace("'", "''")
            self.connection.execute(f"CREATE OR REPLACE VIEW {TableSession.name(self, table)} AS SELECT {listed} FROM delta_scan('{uri}')")
        self._views[table] = delta is not None
        return delta is not None

    def name(self, table: str) -> str:
        self._view(_checked(table))
        return super().name(table)

    def columns(self, table: str) -> set[str]:
        return super().columns(table) if self._view(_checked(table)) else set()

    def version(self, table: str) -> int | None:
        """The table's latest version (None: no table yet)."""
        delta = self._delta_table(table)
        return None if delta is None else delta.version()

    def replace(self, table: str, frame: pl.DataFrame, site_days: dict[str | None, list[dt.date]] | None) -> int:
        """Store `frame` as the table's rows of these sites' dates, in one commit (the whole table
        when `site_days` is None), and return the retries the commit took.

        - One commit by predicate: readers see the partition's old rows or its new ones, never
          none, and a crash leaves the old ones (DuckDB's DELETE then INSERT is two commits).
        - Disjoint partitions never conflict; a writer that lost a race on the same rows commits
          again after a random, growing pause (tenacity), up to LAKE_COMMIT_ATTEMPTS times.
        - A new column (a newer version of an asset) is merged into the table's schema, null in
          the rows already there; an unpartitioned table is replaced whole, schema and all.
        """
        uri = self.uri(table)
        partitioned = site_days is not None
        # An empty list, not None: None keeps the partitioning the table had.
        options: dict = {
            "partition_by": [c for c in (WAREHOUSE_COLUMN, PARTITION_COLUMN) if partitioned and c in frame.columns],
            "configuration": self.properties,  # taken when the write creates the table
        }
        if not partitioned:
            options["schema_mode"] = "overwrite"
        elif site_days:
            # Always by predicate, even for a table not there yet: were it created by another writer
            # meanwhile, a plain overwrite would drop that writer's sites. delta-rs also refuses a
            # row outside the predicate, so a frame can only ever replace the partitions it names.
            options |= {"predicate": _lake_predicate(site_days), "schema_mode": "merge"}
        elif not frame.is_empty():
            raise ValueError(f"{table}: {frame.height} rows for no partition (a run of no dates writes none)")
        elif self._delta_table(table) is not None:
            return 0  # no partitions and the table is there: nothing to replace
        frame = self._without_null_columns(table, frame)
        attempts = 0
        for attempt in _commit_retries():
            with attempt:
                attempts += 1
                frame.write_delta(uri, mode="overwrite", storage_options=self.storage_options, delta_write_options=options)
        self._views.pop(table, None)
        return attempts - 1

    def _without_null_columns(self, table: str, frame: pl.DataFrame) -> pl.DataFrame:
        """Delta has no type for a column of nothing but nulls (an empty day's optional field):
        it takes the table's type for that column, or text when the table has none yet."""
        nulls = [name for name, dtype in frame.schema.items() if dtype == pl.Null]
        if not nulls:
            return frame
        known = {}
        if self._view(table):
            described = self.connection.execute(f"DESCRIBE {TableSession.name(self, table)}").fetchall()
            known = {column: column_type for column, column_type, *_ in described}
        typed = self.connection.execute(
            "SELECT " + ", ".join(f'CAST(NULL AS {known.get(n, "VARCHAR")}) AS "{n}"' for n in nulls)
        ).pl().schema
        return frame.with_columns(pl.col(n).cast(typed[n]) for n in nulls)

    def maintain(self, table: str) -> dict:
        """Compact the table's small files, vacuum what no version within the retention reads, and
        checkpoint its log (dropping the log entries older than the retention)."""
        delta = self._delta_table(table)
        if delta is None:
            return {"table": table, "exists": False}
        properties_set = {k: v for k, v in self.properties.items() if delta.metadata().configuration.get(k) != v}
        if properties_set:  # a table made before these properties, or the retention changed since
            for attempt in _commit_retries():
                with attempt:
                    delta.update_incremental()
                    delta.alter.set_table_properties(properties_set)
        for attempt in _commit_retries():
            with attempt:
                compacted = delta.optimize.compact()
        removed = delta.vacuum(retention_hours=self.retain_days * 24, dry_run=False, enforce_retention_duration=False)
        delta.create_checkpoint()
        delta.cleanup_metadata()
        return {
            "table": table,
            "exists": True,
            "version": delta.version(),
            "files_added": compacted.get("numFilesAdded", 0),
            "files_removed": compacted.get("numFilesRemoved", 0),
            "files_vacuumed": len(removed),
            "properties_set": properties_set,
        }

    def view_every_table(self) -> None:
        for table in self.tables():
            self._view(table)

    def tables(self) -> list[str]:
        """The lake's tables (a folder per table on a local path)."""
        if is_remote(self.root):
            return S3Lake(self.root).table_folders()
        root = Path(self.root)
        return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir()) if root.is_dir() else []


class WarehouseTables(dg.ConfigurableResource):
    """The asset tables: read a table (some columns) for some dates, ask whether it exists, run a
    domain aggregation on it. In the lake when `lake_path` is set (any number of writers), else in
    the DuckDB file (one writer at a time: see the duckdb pool)."""

    database: str = Field(description="The DuckDB file (VELOCITY_DUCKDB_PATH), when the tables are not in the lake")
    lake_path: str | None = Field(default=None, description="The lake's folder (VELOCITY_LAKE_PATH); None: the DuckDB file")
    lake_retain_days: int = Field(default=30, description="Days of table versions the lake's vacuum keeps (VELOCITY_LAKE_RETAIN_DAYS)")
    schema_: str = Field(default=SCHEMA, alias="schema", description="The schema holding one table per asset")
    warehouse_id: str | None = Field(default=None, description="Read one site's rows only (None: every site's)")

    @classmethod
    def of_settings(cls, settings, warehouse_id: str | None = None) -> "WarehouseTables":
        """The tables where the settings keep them (VELOCITY_TABLE_STORE)."""
        lake = settings.lake_path if settings.table_store == "lake" else None
        return cls(database=settings.duckdb_path, lake_path=lake, lake_retain_days=settings.lake_retain_days, warehouse_id=warehouse_id)

    def for_site(self, warehouse_id: str) -> "WarehouseTables":
        """The same tables as one site sees them (what a stage's body is handed)."""
        return self.model_copy(update={"warehouse_id": warehouse_id})

    @property
    def location(self) -> str:
        """Where the tables are, for messages."""
        return f"the lake at {self.lake_path}" if self.lake_path else f"the DuckDB file {self.database}"

    @contextmanager
    def session(self, read_only: bool = False, warehouse_id: str | None = None) -> Iterator[TableSession]:
        site = warehouse_id or self.warehouse_id
        if self.lake_path:
            if not is_remote(self.lake_path):
                Path(self.lake_path).mkdir(parents=True, exist_ok=True)
            with lake_connection(self.lake_path) as con:
                yield LakeSession(
                    con, self.schema_, self.lake_path, site, storage_options(self.lake_path), retain_days=self.lake_retain_days
                )
            return
        if read_only:
            with duckdb.connect(self.database, read_only=True) as con:
                yield TableSession(con, self.schema_, site)
            return
        # DuckDBResource retries while another process holds the file's lock.
        with DuckDBResource(database=self.database).get_connection() as con:
            yield TableSession(con, self.schema_, site)

    def stamp(self, tables: list[str]) -> tuple:
        """What changes when any of `tables` is written, cheap enough to look at before every read
        of the ERP (the exception service reads its rates again only then); all None: no tables
        yet. The lake: each table's log folder (a commit adds a file to it), or on a bucket each
        table's version, looked up at most every REMOTE_STAMP_EVERY_S; the file: it and its WAL."""

        def stat(path: str) -> tuple[int, int] | None:
            try:
                found = os.stat(path)
            except OSError:
                return None
            return found.st_size, found.st_mtime_ns

        if self.lake_path and is_remote(self.lake_path):
            return _remote_versions(self.lake_path, tuple(tables))
        if self.lake_path:
            return tuple(stat(os.path.join(self.lake_path, _checked(t), "_delta_log")) for t in tables)
        return stat(self.database), stat(self.database + ".wal")

    @contextmanager
    def every_table(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection whose schema `warehouse` holds every table, for looking around
        (a DuckDB shell, the tests, the benchmarks): the lake's as views, or the file itself."""
        with self.session(read_only=True) as session:
            if isinstance(session, LakeSession):
                session.view_every_table()
            yield session.connection

    def exists(self, table: str) -> bool:
        with self.session() as tables:
            return tables.exists(table)

    def read(self, table: str, first: dt.date | None = None, last: dt.date | None = None, **kwargs) -> pl.DataFrame:
        with self.session() as tables:
            return tables.read(table, first, last, **kwargs)

    def versions(self, tables: list[str]) -> dict[str, int | None]:
        """Each table's latest version in the lake (what a batch of directives was planned on);
        empty for the DuckDB file, which keeps none."""
        if not self.lake_path:
            return {}
        with self.session() as session:
            return {table: session.version(table) for table in tables}


# A bucket has no cheap stat: a table's version costs a listing of its log. The exception service
# looks before every ERP read; new rates come once a night, so a few seconds late is no loss.
REMOTE_STAMP_EVERY_S = 5.0
_REMOTE_STAMPS: dict[tuple[str, tuple[str, ...]], tuple[float, tuple]] = {}


def _remote_versions(root: str, tables: tuple[str, ...]) -> tuple:
    now = time.monotonic()
    looked = _REMOTE_STAMPS.get((root, tables))
    if looked is None or now - looked[0] >= REMOTE_STAMP_EVERY_S:
        options = storage_options(root)

        def version(table: str) -> int | None:
            try:
                return DeltaTable(table_uri(root, table), storage_options=options).version()
            except TableNotFoundError:
                return None

        versions = tuple(version(t) for t in tables)
        looked = _REMOTE_STAMPS[(root, tables)] = (now, versions)
    return looked[1]


def import_duckdb_file(database: str, lake: WarehouseTables, progress: Callable[[str], None] = print, days_per_commit: int = 31) -> dict[str, int]:
    """Copy every table of a DuckDB file store into the lake (moving a deployment to the lake
    without rebuilding its history): each site's dates in commits of `days_per_commit` dates, so
    memory holds one such slice at a time; rows already in the lake for those site-days are
    replaced, so an interrupted import is simply run again. The rows copied, by table."""
    source = WarehouseTables(database=database)
    copied: dict[str, int] = {}
    with source.session(read_only=True) as old, lake.session() as new:
        names = [r[0] for r in old.connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [old.schema]
        ).fetchall()]
        for table in names:
            columns = old.columns(table)
            copied[table] = 0
            if PARTITION_COLUMN not in columns:
                frame = old.read(table)
                new.replace(table, frame, None)
                copied[table] = frame.height
            else:
                sites = [r[0] for r in old.connection.execute(f"SELECT DISTINCT {WAREHOUSE_COLUMN} FROM {old.name(table)} ORDER BY 1").fetchall()] if WAREHOUSE_COLUMN in columns else [None]
                for site in sites:
                    scoped = old.scoped(site) if site is not None else old
                    days = [r[0] for r in old.connection.execute(
                        f"SELECT DISTINCT {PARTITION_COLUMN} FROM {old.name(table)}"
                        + (f" WHERE {WAREHOUSE_COLUMN} = ?" if site is not None else "") + " ORDER BY 1",
                        [site] if site is not None else [],
                    ).fetchall()]
                    for i in range(0, len(days), days_per_commit):
                        chunk = days[i : i + days_per_commit]
                        frame = scoped.read(table, chunk[0], chunk[-1])  # the dates held in between are the chunk's
                        if site is not None:
                            frame = frame.with_columns(pl.lit(site).alias(WAREHOUSE_COLUMN))
                        new.replace(table, frame, {site: chunk})
                        copied[table] += frame.height
            progress(f"{table}: {copied[table]:,} rows into {lake.location}")
    return copied


# --- the I/O manager: every asset's output stored, every input loaded, through the owner above ---


class _RunOutputs:
    """Frames this process stored during the current run, by table, columns and dates.

    The in-process executor runs every step of a run in one process, so the next step can take
    the frame a step just stored instead of reading it back from DuckDB (a large day's raw and
    validated lines cost a second or more each way, a backfill range's many more). Entries belong
    to one run: a frame is only handed to a step of the run that stored it, and the first output
    of another run clears them. A large frame has one reader, the next step, and is let go once
    handed over, so holding it costs no memory the reading step would not hold anyway; small
    ones stay for every reader, within a budget, the oldest dropped first.
    """

    LARGE_BYTES = 64e6

    def __init__(self, budget_mb: float) -> None:
        self.budget_bytes = budget_mb * 1e6
        self.run_id: str | None = None
        self.frames: dict[tuple, pl.DataFrame] = {}

    def put(self, run_id: str, key: tuple, frame: pl.DataFrame) -> None:
        if run_id != self.run_id:
            self.run_id, self.frames = run_id, {}
        self.frames.pop(key, None)
        self.frames[key] = frame
        # The budget is for the small frames kept for several readers; a large one waits for its
        # reader whatever else is stored meanwhile (raw lines, then the SKU master, then validation).
        small = [k for k, f in self.frames.items() if f.estimated_size() < self.LARGE_BYTES]
        while small and sum(self.frames[k].estimated_size() for k in small) > self.budget_bytes:
            del self.frames[small.pop(0)]  # the oldest first: its readers have run

    def get(self, run_id: str | None, key: tuple) -> pl.DataFrame | None:
        if not run_id or run_id != self.run_id:
            return None
        frame = self.frames.get(key)
        if frame is not None and frame.estimated_size() >= self.LARGE_BYTES:
            del self.frames[key]
        return frame


# The one hand-over of the process; its budget is set from VELOCITY_RUN_MEMO_MB when the
# resources are built (defs/resources.py: build_resources), never read at import.
RUN_OUTPUTS = _RunOutputs(budget_mb=512)


def _site_days(context: dg.InputContext | dg.OutputContext) -> dict[str | None, list[dt.date]] | None:
    """Each site's business dates of the slice (None for an unpartitioned table; the site None
    for a table partitioned by date alone, the network's)."""
    if not context.has_asset_partitions:
        return None
    sites: dict[str | None, list[dt.date]] = {}
    for key in context.asset_partition_keys:
        # "2026-01-05|WH-01": the dimensions in name order (date, warehouse)
        date, _, warehouse_id = str(key).partition("|")
        sites.setdefault(warehouse_id or None, []).append(dt.date.fromisoformat(date))
    return {site: sorted(days) for site, days in sites.items()}


def _memo_key(site_days: dict[str | None, list[dt.date]] | None) -> tuple | None:
    return None if site_days is None else tuple((site or "", tuple(days)) for site, days in sorted(site_days.items(), key=lambda kv: kv[0] or ""))


def _run_id(context: dg.InputContext) -> str | None:
    try:
        return context.step_context.run_id
    except dg.DagsterInvariantViolationError:  # an InputContext built outside a run
        return None


class WarehouseTablesIOManager(dg.ConfigurableIOManager):
    """Every asset's frame in its warehouse table (see WarehouseTables), replaced per partition.

    A frame stored earlier in the same run is handed to the next step without a DuckDB round
    trip (`RUN_OUTPUTS`).
    """

    database: str = Field(description="The DuckDB file (VELOCITY_DUCKDB_PATH), when the tables are not in the lake")
    lake_path: str | None = Field(default=None, description="The lake's folder (VELOCITY_LAKE_PATH); None: the DuckDB file")
    schema_: str = Field(default=SCHEMA, alias="schema", description="The schema holding one table per asset")

    @property
    def tables(self) -> WarehouseTables:
        return WarehouseTables(database=self.database, lake_path=self.lake_path, schema=self.schema_)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        table = context.asset_key.path[-1]
        site_days = _site_days(context)
        started = time.perf_counter()
        with self.tables.session() as tables:
            retries = tables.replace(table, obj, site_days)
            name = tables.name(table)
        context.add_output_metadata(
            {
                "row_count": obj.height,
                "table_write_s": round(time.perf_counter() - started, 3),
                "lake_commit_retries": retries,
                "dataframe_columns": dg.MetadataValue.table_schema(
                    dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in obj.schema.items()])
                ),
                "dagster/table_name": name,
            }
        )
        RUN_OUTPUTS.put(context.run_id, (table, None, _memo_key(site_days)), obj)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        table = context.asset_key.path[-1]
        columns = (context.definition_metadata or {}).get("columns")
        site_days = _site_days(context)
        if site_days == {}:  # a window wholly before the first partition
            return pl.DataFrame()
        key = (table, tuple(columns) if columns else None, _memo_key(site_days))
        stored = RUN_OUTPUTS.get(_run_id(context), key)
        if stored is not None:
            return stored
        with self.tables.session() as tables:
            if site_days is None:
                return tables.read(table, columns=columns)
            return tables.read_site_days(table, site_days, columns=columns)
