"""The DuckDB tables I/O manager: upgrades that add a column, writes by name, in-run hand-over."""

import datetime as dt

import dagster as dg
import duckdb
import polars as pl

from velocity_platform.defs.resources import RUN_OUTPUTS, WarehouseTablesIOManager

DAYS = dg.DailyPartitionsDefinition(start_date="2026-03-01")


def _asset(frame: pl.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name="raw_transactions", partitions_def=DAYS, metadata={"partition_expr": "business_date"})
    def raw_transactions() -> pl.DataFrame:
        return frame

    return raw_transactions


def test_a_column_added_by_a_newer_version_is_added_to_the_existing_table(tmp_path):
    path = str(tmp_path / "velocity.duckdb")
    with duckdb.connect(path) as con:  # the table as an older version of the asset left it
        con.execute("CREATE SCHEMA warehouse")
        con.execute("CREATE TABLE warehouse.raw_transactions (business_date DATE, txn_id VARCHAR)")
        con.execute("INSERT INTO warehouse.raw_transactions VALUES ('2026-03-01', 'OLD-1')")
    # The newer version adds arrival_seq, and puts its columns in another order.
    newer = pl.DataFrame(
        {"arrival_seq": [0, 1], "txn_id": ["T-1", "T-2"], "business_date": [dt.date(2026, 3, 2)] * 2}
    )
    result = dg.materialize(
        [_asset(newer)],
        partition_key="2026-03-02",
        resources={"io_manager": WarehouseTablesIOManager(database=path, schema="warehouse")},
    )
    assert result.success
    with duckdb.connect(path, read_only=True) as con:
        rows = con.execute(
            "SELECT business_date, txn_id, arrival_seq FROM warehouse.raw_transactions ORDER BY txn_id"
        ).fetchall()
    assert rows == [
        (dt.date(2026, 3, 1), "OLD-1", None),
        (dt.date(2026, 3, 2), "T-1", 0),
        (dt.date(2026, 3, 2), "T-2", 1),
    ]


def test_a_frame_is_handed_on_only_within_the_run_that_stored_it(tmp_path):
    path = str(tmp_path / "velocity.duckdb")
    day = dt.date(2026, 3, 2)

    @dg.asset(partitions_def=DAYS, metadata={"partition_expr": "business_date"})
    def upstream() -> pl.DataFrame:
        return pl.DataFrame({"business_date": [day], "units": [3]})

    @dg.asset(partitions_def=DAYS, metadata={"partition_expr": "business_date"})
    def downstream(upstream: pl.DataFrame) -> pl.DataFrame:
        return upstream.with_columns(pl.col("units") * 2)

    io = {"io_manager": WarehouseTablesIOManager(database=path, schema="warehouse")}
    first = dg.materialize([upstream, downstream], partition_key="2026-03-02", resources=io)
    assert first.success and RUN_OUTPUTS.run_id == first.run_id
    # Another process changes the table; a later run that only reads it must see the change,
    # not the frame an earlier run left in memory.
    with duckdb.connect(path) as con:
        con.execute("UPDATE warehouse.upstream SET units = 5")
    again = dg.materialize([upstream.to_source_asset(), downstream], partition_key="2026-03-02", resources=io)
    assert again.success
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT units FROM warehouse.downstream").fetchall() == [(10,)]


def test_a_large_frame_waits_for_its_reader_while_small_ones_are_stored(monkeypatch):
    from velocity_platform.defs.tables import _RunOutputs

    def TableSlice(table: str, schema: str) -> tuple:  # noqa: N802  # the hand-over's key for a whole table
        return (table, None, None)

    memo = _RunOutputs(budget_mb=1)
    monkeypatch.setattr(_RunOutputs, "LARGE_BYTES", 1e6)
    big = pl.DataFrame({"units": range(200_000)})  # 1.6 MB: large here
    small = [pl.DataFrame({"units": range(50_000)}) for _ in range(3)]  # 0.4 MB each
    memo.put("run-1", TableSlice("raw_transactions", "warehouse"), big)
    for n, frame in enumerate(small):
        memo.put("run-1", TableSlice(f"small_{n}", "warehouse"), frame)
    assert memo.get("run-1", TableSlice("raw_transactions", "warehouse")) is big
    assert memo.get("run-1", TableSlice("raw_transactions", "warehouse")) is None  # let go once read
    assert memo.get("run-1", TableSlice("small_0", "warehouse")) is None  # the oldest small one, over budget
    assert memo.get("run-1", TableSlice("small_2", "warehouse")) is small[2]
    assert memo.get("run-1", TableSlice("small_2", "warehouse")) is small[2]  # small ones stay for every reader
    assert memo.get("run-2", TableSlice("small_2", "warehouse")) is None  # never to another run


def test_the_owner_of_the_tables_reads_dates_columns_and_matching_rows(tmp_path):
    from velocity_platform.defs.tables import WarehouseTables

    tables = WarehouseTables(database=str(tmp_path / "velocity.duckdb"))
    assert not tables.exists("raw_transactions")
    with tables.session() as session:
        assert session.count("raw_transactions") == 0  # a table not built yet holds nothing
        lines = pl.DataFrame(
            {
                "business_date": [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 2), dt.date(2026, 3, 3)],
                "txn_id": ["T-1", "T-2", "T-3", "T-4"],
                "status": ["acked", "acked", "pending", "acked"],
            }
        )
        session.replace("raw_transactions", lines, None)
        # Replacing one date leaves the others alone.
        session.replace("raw_transactions", lines.filter(pl.col("txn_id") == "T-2"), {None: [dt.date(2026, 3, 2)]})
        assert session.count("raw_transactions") == 3
        assert session.count("raw_transactions", dt.date(2026, 3, 2), dt.date(2026, 3, 3), equal={"status": "acked"}) == 2
        assert session.dates_held("raw_transactions", dt.date(2026, 2, 28), dt.date(2026, 3, 2)) == 2
        wanted = pl.DataFrame({"business_date": [dt.date(2026, 3, 3)], "txn_id": ["T-4"]})
        found = session.read("raw_transactions", dt.date(2026, 3, 1), dt.date(2026, 3, 3), columns=["txn_id"], matching=None)
        assert sorted(found["txn_id"]) == ["T-1", "T-2", "T-4"] and found.columns == ["txn_id"]
        held = session.read("raw_transactions", dt.date(2026, 3, 1), dt.date(2026, 3, 3), columns=["business_date", "txn_id"], matching=wanted)
        assert held["txn_id"].to_list() == ["T-4"]
    assert tables.exists("raw_transactions")
    try:
        tables.read("raw_transactions; drop table x")
    except ValueError as exc:
        assert "not a warehouse table name" in str(exc)
    else:
        raise AssertionError("a table name outside the warehouse's shape reached SQL")


def test_a_site_day_is_replaced_and_read_without_touching_another_sites_rows(tmp_path):
    from velocity_platform.defs.tables import WarehouseTables

    path = str(tmp_path / "velocity.duckdb")
    day, next_day = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    with duckdb.connect(path) as con:  # written before sites existed: the one warehouse's rows
        con.execute("CREATE SCHEMA warehouse")
        con.execute("CREATE TABLE warehouse.daily_sku_demand (business_date DATE, sku_id VARCHAR, units DOUBLE)")
        con.execute("INSERT INTO warehouse.daily_sku_demand VALUES ('2026-03-02', 'SKU-1', 4.0)")

    def demand(site: str, units: float, when: dt.date = day) -> pl.DataFrame:
        return pl.DataFrame({"business_date": [when], "sku_id": ["SKU-1"], "units": [units], "warehouse_id": [site]})

    tables = WarehouseTables(database=path)
    with tables.session() as session:
        session.replace("daily_sku_demand", demand("BER", 9.0), {"BER": [day]})
        session.replace("daily_sku_demand", demand("BER", 1.0, next_day), {"BER": [next_day]})
        # BER's day again: its own row replaced, WH-01's (upgraded) and BER's other day untouched.
        session.replace("daily_sku_demand", demand("BER", 7.0), {"BER": [day]})
        rows = session.read_site_days("daily_sku_demand", {"WH-01": [day], "BER": [day, next_day]}).sort("warehouse_id", "business_date")
    assert rows.select("warehouse_id", "units").rows() == [("BER", 7.0), ("BER", 1.0), ("WH-01", 4.0)]
    with tables.for_site("BER").session() as ber:
        assert ber.count("daily_sku_demand") == 2
        # a site's session sees its rows only, without the site column, in reads and in SQL builders
        assert "warehouse_id" not in ber.read("daily_sku_demand").columns
        total = ber.query("daily_sku_demand", lambda name: f"SELECT sum(units) AS units FROM {name}")
        assert total["units"].to_list() == [8.0]
    with tables.session(warehouse_id="WH-01") as wh01:
        assert wh01.read("daily_sku_demand")["units"].to_list() == [4.0]
