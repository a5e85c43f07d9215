"""The one owner of the warehouse tables: where they live, how they are read and written.

The layout: one DuckDB file, schema `warehouse`, one table per asset (named after the asset),
every partitioned table carrying its business date in the DATE column `business_date` and its
site in `warehouse_id` (one table holds every site: a network's velocity is one query). A session
scoped to a site (`session(warehouse_id=...)`) reads that site's rows only, without the column,
so a stage's code and the domain's SQL builders see one warehouse as they always did. The I/O
manager, velocity's window, the signals, the sensors, the dead-letter history and the run
summary all read through `WarehouseTables`; no other module writes SQL that names a table here
(the domain's SQL builders take the table's name as an argument, and get it from here).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field

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

    def replace(self, table: str, frame: pl.DataFrame, site_days: dict[str, list[dt.date]] | None) -> None:
        """Store `frame` as the table's rows of these sites' dates (the whole table without them).

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
            return
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


class WarehouseTables(dg.ConfigurableResource):
    """The asset tables in the DuckDB file: read a table (some columns) for some dates, ask
    whether it exists, run a domain aggregation on it. One writer at a time: see the duckdb pool."""

    database: str = Field(description="The DuckDB file (VELOCITY_DUCKDB_PATH)")
    schema_: str = Field(default=SCHEMA, alias="schema", description="The schema holding one table per asset")
    warehouse_id: str | None = Field(default=None, description="Read one site's rows only (None: every site's)")

    def for_site(self, warehouse_id: str) -> "WarehouseTables":
        """The same tables as one site sees them (what a stage's body is handed)."""
        return WarehouseTables(database=self.database, schema=self.schema_, warehouse_id=warehouse_id)

    @contextmanager
    def session(self, read_only: bool = False, warehouse_id: str | None = None) -> Iterator[TableSession]:
        site = warehouse_id or self.warehouse_id
        if read_only:
            with duckdb.connect(self.database, read_only=True) as con:
                yield TableSession(con, self.schema_, site)
            return
        # DuckDBResource retries while another process holds the file's lock.
        with DuckDBResource(database=self.database).get_connection() as con:
            yield TableSession(con, self.schema_, site)

    def exists(self, table: str) -> bool:
        with self.session() as tables:
            return tables.exists(table)

    def read(self, table: str, first: dt.date | None = None, last: dt.date | None = None, **kwargs) -> pl.DataFrame:
        with self.session() as tables:
            return tables.read(table, first, last, **kwargs)


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

    database: str = Field(description="The DuckDB file (VELOCITY_DUCKDB_PATH)")
    schema_: str = Field(default=SCHEMA, alias="schema", description="The schema holding one table per asset")

    @property
    def tables(self) -> WarehouseTables:
        return WarehouseTables(database=self.database, schema=self.schema_)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        table = context.asset_key.path[-1]
        site_days = _site_days(context)
        started = time.perf_counter()
        with self.tables.session() as tables:
            tables.replace(table, obj, site_days)
            name = tables.name(table)
        context.add_output_metadata(
            {
                "row_count": obj.height,
                "duckdb_write_s": round(time.perf_counter() - started, 3),
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
