"""The exception service's expected pick rates and demand ranges: read once per state of the
nightly tables (on start, then after a nightly write), kept in memory, swapped whole; quiet while
no table exists."""

from __future__ import annotations

import datetime as dt
import logging

import polars as pl
import pytest

from velocity_platform.connectors.state import OperationalStore
from velocity_platform.defs.resources import ErpResource, WmsResource
from velocity_platform.defs import tables as tables_module
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.deltas.service import DeltaService
from velocity_platform.settings import Settings
from velocity_platform_tests.deltas.helpers import service_settings


@pytest.fixture
def service(tmp_path) -> DeltaService:
    # Every path named: a VELOCITY_* variable another test's environment left set must not win.
    settings = Settings(
        state_dir=tmp_path,
        table_store="lake",
        lake_path=str(tmp_path / "lake"),
        duckdb_path=str(tmp_path / "velocity.duckdb"),
        store_url=f"sqlite:///{tmp_path / 'operational.sqlite'}",
    )
    # Never reached: the rates come from the warehouse tables only.
    erp = ErpResource(base_url="http://127.0.0.1:9", token="unused")
    wms = WmsResource(base_url="http://127.0.0.1:9", token="unused")
    return DeltaService(settings, service_settings(), erp, wms, OperationalStore(settings.store_url))


def nightly_writes(settings: Settings, rate: float) -> None:
    """What a nightly materialization of sku_velocity and daily_sku_demand leaves in the tables
    (without the site column: the one default site's)."""
    velocity = pl.DataFrame({"business_date": [dt.date(2026, 2, 9)] * 3, "sku_id": ["A", "B", "C"], "expected_pick_lines_per_day": [rate] * 3})
    demand = pl.DataFrame({"business_date": [dt.date(2026, 2, 1) + dt.timedelta(days=d) for d in range(6)], "sku_id": ["A"] * 6, "units": [4.0] * 6})
    with WarehouseTables.of_settings(settings).session() as tables:
        tables.replace("sku_velocity", velocity, None)
        tables.replace("daily_sku_demand", demand, None)


def test_rates_are_read_once_per_state_of_the_nightly_tables_and_swapped_whole(service, monkeypatch):
    nightly_writes(service.settings, 2.0)
    first = service.refresh_rates()
    assert first.velocity["expected_pick_lines_per_day"].to_list() == [2.0] * 3 and first.spike_baseline.height == 1
    # Commit after commit, nothing written: the same rates, and no DuckDB opened to find that out.
    monkeypatch.setattr(tables_module, "lake_connection", lambda *a, **k: pytest.fail("the rates were read again"))
    for _ in range(50):
        assert not service.rates_changed()
        assert service.refresh_rates() is first
    monkeypatch.undo()
    # The next nightly run writes new rates: read once, swapped in as a new object; the old one is intact.
    nightly_writes(service.settings, 7.0)
    assert service.rates_changed()
    second = service.refresh_rates()
    assert second is not first and service.rates is second
    assert second.velocity["expected_pick_lines_per_day"].to_list() == [7.0] * 3
    assert first.velocity["expected_pick_lines_per_day"].to_list() == [2.0] * 3
    assert service.refresh_rates() is second


def test_before_the_first_nightly_run_the_service_says_once_that_there_are_no_rates(service, caplog):
    caplog.set_level(logging.DEBUG, logger="velocity_platform.deltas")
    for _ in range(20):
        rates = service.refresh_rates()
    assert rates.velocity.is_empty() and rates.spike_baseline.is_empty()
    lines = [r for r in caplog.records if r.name == "velocity_platform.deltas"]
    assert len(lines) == 1 and "no warehouse tables" in lines[0].getMessage(), [r.getMessage() for r in lines]
    nightly_writes(service.settings, 3.0)
    assert service.refresh_rates().velocity.height == 3


def test_each_site_reads_its_own_rows_and_the_tables_are_opened_once_for_all_sites(tmp_path, monkeypatch):
    """A network: one sku_velocity for every site (its `warehouse_id` column); each site's rates are
    its own rows, from one open of the tables per nightly state for the whole process."""
    from velocity_platform.deltas.service import RatesReader
    from velocity_platform.domain.network import Warehouse

    settings = Settings(
        state_dir=tmp_path,
        table_store="lake",
        lake_path=str(tmp_path / "lake"),
        duckdb_path=str(tmp_path / "velocity.duckdb"),
        store_url=f"sqlite:///{tmp_path / 'operational.sqlite'}",
    )
    erp = ErpResource(base_url="http://127.0.0.1:9", token="unused")
    wms = WmsResource(base_url="http://127.0.0.1:9", token="unused")
    store = OperationalStore(settings.store_url)
    zones = {"WH-01": "Europe/London", "WH-02": "America/Chicago"}
    reader = RatesReader(WarehouseTables.of_settings(settings), list(zones))
    sites = {
        wid: DeltaService(settings, service_settings(), erp, wms, store, site=Warehouse(warehouse_id=wid, timezone=zone), rates_reader=reader)
        for wid, zone in zones.items()
    }
    velocity = pl.DataFrame(
        {
            "business_date": [dt.date(2026, 2, 9)] * 4,
            "warehouse_id": ["WH-01", "WH-01", "WH-02", "WH-02"],
            "sku_id": ["A", "B", "A", "C"],
            "expected_pick_lines_per_day": [1.0, 2.0, 30.0, 40.0],
        }
    )
    with WarehouseTables.of_settings(settings).session() as tables:
        tables.replace("sku_velocity", velocity, {"WH-01": [dt.date(2026, 2, 9)], "WH-02": [dt.date(2026, 2, 9)]})
    opened = []
    connect = tables_module.lake_connection
    monkeypatch.setattr(tables_module, "lake_connection", lambda *a, **k: opened.append(a) or connect(*a, **k))
    for wid, service in sites.items():
        own = velocity.filter(pl.col("warehouse_id") == wid).select("sku_id", "expected_pick_lines_per_day")
        assert service.refresh_rates().velocity.sort("sku_id").equals(own.sort("sku_id"))
    assert len(opened) == 1  # the second site found the first one's read
    monkeypatch.undo()

    # A table written before the network (no site column) is the default site's, never another's.
    nightly_writes(settings, 5.0)
    assert sites["WH-01"].refresh_rates().velocity["expected_pick_lines_per_day"].to_list() == [5.0] * 3
    assert sites["WH-02"].refresh_rates().velocity.is_empty()
    store.dispose()


def _nightly_writer(state: str, times: int, started, stop=None) -> None:
    """Rewrite WH-01's rates `times` times, or until `stop` is set (each version its own rate)."""
    settings = Settings(state_dir=state, table_store="lake", lake_path=f"{state}/lake", duckdb_path=f"{state}/unused.duckdb")
    skus = [f"SKU-{i:06d}" for i in range(5_000)]
    with WarehouseTables.of_settings(settings).session() as tables:
        started.set()
        for attempt in range(times):
            if stop is not None and stop.is_set():
                return
            velocity = pl.DataFrame(
                {
                    "business_date": [dt.date(2026, 2, 9)] * len(skus),
                    "warehouse_id": ["WH-01"] * len(skus),
                    "sku_id": skus,
                    "expected_pick_lines_per_day": [float(attempt + 1)] * len(skus),
                }
            )
            tables.replace("sku_velocity", velocity, {"WH-01": [dt.date(2026, 2, 9)]})


def test_the_rates_are_read_while_a_night_writes_them(tmp_path):
    """On the lake the service never waits for a run to finish writing: every read while another
    process replaces the rates gets one whole version of them (on the file it got 'busy')."""
    import multiprocessing
    import time

    from velocity_platform.deltas.service import RATE_TABLES, RatesReader

    settings = Settings(state_dir=tmp_path, table_store="lake", lake_path=str(tmp_path / "lake"), duckdb_path=str(tmp_path / "unused.duckdb"))
    _nightly_writer(str(tmp_path), 1, multiprocessing.Event())  # the first night's rates exist
    tables = WarehouseTables.of_settings(settings)
    reader = RatesReader(tables, ["WH-01"])
    spawn = multiprocessing.get_context("spawn")
    started, stop = spawn.Event(), spawn.Event()
    # The writer goes on rewriting until the reader has seen it write (bounded either way).
    writer = spawn.Process(target=_nightly_writer, args=(str(tmp_path), 500, started, stop))
    writer.start()
    assert started.wait(60)
    reads, versions = [], set()
    deadline = time.monotonic() + 120
    while len(versions) < 3 and writer.is_alive() and time.monotonic() < deadline:
        read = reader.read(tables.stamp(RATE_TABLES))
        assert not isinstance(read, Exception), read
        reads.append(read["WH-01"].velocity)
        versions.add(reads[-1]["expected_pick_lines_per_day"][0])
    stop.set()
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert {frame.height for frame in reads} == {5_000}  # whole versions only
    assert all(frame["expected_pick_lines_per_day"].n_unique() == 1 for frame in reads)  # never a mix of two
    # and read while the writes went on: the writer's versions were seen as they landed
    assert len(versions) >= 3, versions
