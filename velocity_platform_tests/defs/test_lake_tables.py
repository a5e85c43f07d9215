"""The lake: Delta tables written by delta-rs, read by DuckDB, many writers at once.

Each replace of a (date, site) partition is one commit by predicate: it touches no other partition,
a reader never sees the partition empty in between, writers of different sites never conflict,
and two writers of the same partition end with one writer's rows (never both, never none).
Writers here are separate processes, as the runs of two sites are. The tests of what a bucket
does differently -- commits by conditional put when writers race, the stamp, the round trip --
run on a folder and again on an S3 bucket (moto's S3 server on loopback); the rest, Delta's own
semantics and the same on either, on a folder (a bucket's read costs several HTTP requests to a
Python server, and CI's 15 minutes are shared).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time

import polars as pl
import pytest

from velocity_platform.defs.tables import LakeSession, WarehouseTables

DAY = dt.date(2026, 3, 2)


def lines(site: str, day: dt.date, n: int, writer: str = "w") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "warehouse_id": [site] * n,
            "business_date": [day] * n,
            "line_no": list(range(n)),
            "writer": [writer] * n,
        }
    )


@pytest.fixture(params=["folder", "bucket"])
def lake_uri(request, tmp_path) -> str:
    return str(tmp_path / "lake") if request.param == "folder" else request.getfixturevalue("s3_lake")


@pytest.fixture
def folder_lake(tmp_path) -> str:
    return str(tmp_path / "lake")


def lake(uri: str) -> WarehouseTables:
    return WarehouseTables(database="/nonexistent/unused.duckdb", lake_path=uri)


def counts_by(tables: WarehouseTables, *columns: str) -> dict:
    with tables.session() as session:
        frame = session.read("raw_transactions")
    return {tuple(key): n for *key, n in frame.group_by(list(columns)).len().iter_rows()} if frame.height else {}


def test_a_replace_touches_only_the_site_days_it_names(lake_uri):
    tables = lake(lake_uri)
    with tables.session() as session:
        assert isinstance(session, LakeSession)
        session.replace("raw_transactions", pl.concat([lines("WH-01", DAY, 3), lines("WH-01", DAY + dt.timedelta(days=1), 4)]),
                        {"WH-01": [DAY, DAY + dt.timedelta(days=1)]})
        session.replace("raw_transactions", lines("WH-02", DAY, 5), {"WH-02": [DAY]})
        # Day two of WH-01 again, with other rows: WH-01's day one and WH-02 keep theirs.
        session.replace("raw_transactions", lines("WH-01", DAY + dt.timedelta(days=1), 2, "again"), {"WH-01": [DAY + dt.timedelta(days=1)]})
        # An empty frame empties its partition (a day whose lines all moved elsewhere).
        session.replace("raw_transactions", lines("WH-02", DAY, 0), {"WH-02": [DAY]})
    found = {(site, day.isoformat(), writer): n for (site, day, writer), n in counts_by(tables, "warehouse_id", "business_date", "writer").items()}
    assert found == {("WH-01", DAY.isoformat(), "w"): 3, ("WH-01", (DAY + dt.timedelta(days=1)).isoformat(), "again"): 2}
    # Scoped to a site, a session reads that site's rows without the column, as on the file.
    with tables.session(warehouse_id="WH-01") as session:
        assert session.count("raw_transactions", DAY, DAY + dt.timedelta(days=1)) == 5
        assert "warehouse_id" not in session.read("raw_transactions", DAY).columns


def test_a_row_outside_the_partitions_named_is_refused_not_written(folder_lake):
    tables = lake(folder_lake)
    with tables.session() as session:
        session.replace("raw_transactions", lines("WH-01", DAY, 3), {"WH-01": [DAY]})
        with pytest.raises(Exception, match="failed validation"):
            session.replace("raw_transactions", lines("WH-02", DAY, 3), {"WH-01": [DAY]})
    assert counts_by(tables, "warehouse_id") == {("WH-01",): 3}


def test_a_column_a_newer_version_adds_is_merged_into_the_table(folder_lake):
    tables = lake(folder_lake)
    with tables.session() as session:
        session.replace("raw_transactions", lines("WH-01", DAY, 2), {"WH-01": [DAY]})
        newer = lines("WH-02", DAY, 1).with_columns(pl.lit(7).alias("arrival_seq"))
        session.replace("raw_transactions", newer, {"WH-02": [DAY]})
        frame = session.read("raw_transactions").sort("warehouse_id")
    assert frame["arrival_seq"].to_list() == [None, None, 7]


def _replace_many(uri: str, site: str, rows: int, times: int, start, spans) -> None:
    tables = lake(uri)
    start.wait()
    with tables.session() as session:
        for attempt in range(times):
            began = time.monotonic()
            retries = session.replace("raw_transactions", lines(site, DAY, rows, f"{site}#{attempt}"), {site: [DAY]})
            spans.put((site, began, time.monotonic(), retries))


def _writers(uri: str, sites: list[str], rows: int, times: int) -> list[tuple]:
    spawn = multiprocessing.get_context("spawn")
    start, spans = spawn.Barrier(len(sites)), spawn.Queue()
    workers = [spawn.Process(target=_replace_many, args=(uri, site, rows, times, start, spans)) for site in sites]
    for w in workers:
        w.start()
    done = [spans.get(timeout=120) for _ in range(len(sites) * times)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    return done


def test_writers_of_different_sites_commit_at_the_same_time_without_a_conflict(lake_uri):
    sites = ["WH-01", "WH-02", "WH-03", "WH-04"]
    # The table exists (creating it is a race of its own: one creator wins, the others retry).
    with lake(lake_uri).session() as session:
        session.replace("raw_transactions", lines("WH-01", DAY, 1), {"WH-01": [DAY]})
    spans = _writers(lake_uri, sites, rows=20_000, times=4)
    # Exact counts: each site holds its last write, whole.
    assert counts_by(lake(lake_uri), "warehouse_id", "writer") == {(site, f"{site}#3"): 20_000 for site in sites}
    assert [retries for *_, retries in spans] == [0] * len(spans)  # disjoint partitions never conflict
    # At the same time, not in turns: some write of one site ran while another site's did.
    overlapping = [
        (a, b) for a in spans for b in spans if a[0] < b[0] and a[1] < b[2] and b[1] < a[2]
    ]
    assert overlapping, spans


def test_two_writers_of_the_same_partition_leave_one_writers_rows(lake_uri):
    # Both are site WH-01: the same partition, a real conflict. Each commit is retried until it
    # lands; the table ends with exactly one write's rows, never a mix and never both.
    spans = _writers(lake_uri, ["WH-01", "WH-01"], rows=5_000, times=3)
    found = counts_by(lake(lake_uri), "warehouse_id", "writer")
    assert len(found) == 1 and list(found.values()) == [5_000], found
    assert len(spans) == 6


def _read_while_replaced(uri: str, rows: int, reads: int, ready, out) -> None:
    tables = lake(uri)
    seen = []
    with tables.session(warehouse_id="WH-01") as session:
        ready.wait()
        for _ in range(reads):
            seen.append(session.count("raw_transactions", DAY))
    out.put(seen)


def test_a_reader_never_sees_a_partition_empty_while_it_is_replaced(folder_lake):
    tables = lake(folder_lake)
    with tables.session() as session:
        session.replace("raw_transactions", lines("WH-01", DAY, 10_000), {"WH-01": [DAY]})
    spawn = multiprocessing.get_context("spawn")
    ready, out = spawn.Barrier(2), spawn.Queue()
    reader = spawn.Process(target=_read_while_replaced, args=(folder_lake, 10_000, 200, ready, out))
    reader.start()
    ready.wait()
    with tables.session() as session:
        for attempt in range(10):
            session.replace("raw_transactions", lines("WH-01", DAY, 10_000, f"#{attempt}"), {"WH-01": [DAY]})
    seen = out.get(timeout=120)
    reader.join(timeout=60)
    assert set(seen) == {10_000}  # old rows or new ones, never none and never both


def test_the_stamp_moves_when_a_table_is_written_and_only_then(lake_uri, monkeypatch):
    # On a bucket the stamp is looked up every few seconds; here at every look.
    monkeypatch.setattr("velocity_platform.defs.tables.REMOTE_STAMP_EVERY_S", 0.0)
    tables = lake(lake_uri)
    before = tables.stamp(["sku_velocity"])
    assert before == (None,)
    with tables.session() as session:
        session.replace("sku_velocity", lines("WH-01", DAY, 1), {"WH-01": [DAY]})
        written = tables.stamp(["sku_velocity"])
        assert written != before and tables.stamp(["sku_velocity"]) == written
        session.read("sku_velocity")
        assert tables.stamp(["sku_velocity"]) == written  # a read is not a write
        session.replace("sku_velocity", lines("WH-01", DAY, 2), {"WH-01": [DAY]})
    assert tables.stamp(["sku_velocity"]) != written
    assert tables.versions(["sku_velocity", "raw_transactions"]) == {"sku_velocity": 1, "raw_transactions": None}


def test_writers_racing_to_create_a_table_keep_every_sites_rows(lake_uri):
    # No table yet: each writer's first commit may try to create it. The losers commit again on the
    # table the winner made, by predicate, so no site's rows are overwritten by another's.
    sites = ["WH-01", "WH-02", "WH-03"]
    spans = _writers(lake_uri, sites, rows=1_000, times=1)
    assert counts_by(lake(lake_uri), "warehouse_id", "writer") == {(site, f"{site}#0"): 1_000 for site in sites}
    assert len(spans) == 3


def test_a_duckdb_file_store_is_copied_into_the_lake_table_by_table(folder_lake, tmp_path):
    from velocity_platform.defs.tables import import_duckdb_file

    old = WarehouseTables(database=str(tmp_path / "velocity.duckdb"))
    days = [DAY + dt.timedelta(days=d) for d in (0, 1, 5)]  # a gap: the chunks hold only the dates held
    with old.session() as session:
        session.replace("raw_transactions", pl.concat([lines(s, d, 3) for s in ("WH-01", "WH-02") for d in days]),
                        {"WH-01": days, "WH-02": days})
        session.replace("network_daily_rollup", pl.DataFrame({"business_date": days, "sites": [2, 2, 2]}), {None: days})
        session.replace("sku_master", pl.DataFrame({"sku_id": ["A", "B"]}), None)
    lines_seen = []
    copied = import_duckdb_file(old.database, lake(folder_lake), progress=lines_seen.append, days_per_commit=2)
    assert copied == {"network_daily_rollup": 3, "raw_transactions": 18, "sku_master": 2}
    assert len(lines_seen) == 3 and "raw_transactions: 18 rows" in lines_seen[1]
    assert counts_by(lake(folder_lake), "warehouse_id", "business_date") == {(s, d): 3 for s in ("WH-01", "WH-02") for d in days}
    # Run again (an import cut short is simply repeated): the same rows, not twice as many.
    import_duckdb_file(old.database, lake(folder_lake), progress=lines_seen.append)
    with lake(folder_lake).session() as session:
        assert session.count("raw_transactions") == 18 and session.count("sku_master") == 2
        assert session.count("network_daily_rollup", days[0], days[-1]) == 3
