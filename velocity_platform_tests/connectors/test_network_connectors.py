"""The connectors ask for one warehouse: over real HTTP to the network simulators, and the file preset."""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson
import polars as pl
import pytest

from velocity_platform.connectors.erp import AsyncErpClient, ErpClient
from velocity_platform.connectors.erp_pages import ReceivedPage, raw_lines_from_received, read_erp_page
from velocity_platform.connectors.files import FILE_LINE_SCHEMA, preset, read_export
from velocity_platform.connectors.http import RetryPolicy, reset_guards
from velocity_platform.connectors.wms import WmsClient, directive_body
from velocity_platform.connectors.wms_pages import read_assignment_page, read_location_page
from velocity_platform.domain.history import with_provenance
from velocity_platform_tests.simulators.conftest import erp_client, wms_client

DAY = dt.date(2026, 1, 6)
FAST = RetryPolicy(max_attempts=6, initial_wait_s=0.001, max_wait_s=0.01, max_retry_after_s=0.01)
SITES = {"WH-01": "America/Chicago", "WH-02": "Europe/Berlin"}


@pytest.fixture(autouse=True)
def fresh_guards():
    reset_guards()
    yield
    reset_guards()


@pytest.fixture(scope="module")
def net_erp():
    # Transient faults on: the filter must survive the retries and keep its cursor paging.
    with erp_client(
        warehouses=",".join(f"{w}@{tz}" for w, tz in SITES.items()),
        skus=400, lines_per_day=900, days=10, fault_rate_5xx=0.1, fault_rate_bad_json=0.05,
    ) as client:
        yield client


def _erp(sim_client) -> ErpClient:
    return ErpClient(str(sim_client.base_url), sim_client.app.state.simulator.config.token, retry=FAST, page_limit=113)


def test_a_pull_for_one_warehouse_reads_that_warehouses_day(net_erp):
    client = _erp(net_erp)
    for site, zone in SITES.items():
        pages = [ReceivedPage(p.source_batch, p.body, p.parsed, p.error, p.fetches)
                 for p in client.transaction_pages(DAY, zone, read_erp_page, warehouse_id=site)]
        day = raw_lines_from_received(pages, DAY)
        assert pages and all(p.source_batch.startswith(f"erp:{site}:{DAY.isoformat()}:page-") for p in pages)
        assert day.lines["warehouse_id"].unique().to_list() == [site]
        assert day.lines.height == client.count_lines(DAY, warehouse_id=site)  # the site's lines reconcile
    assert client.count_lines(DAY) == sum(client.count_lines(DAY, warehouse_id=w) for w in SITES)


def test_raw_lines_without_a_warehouse_still_conform():
    lines = pl.DataFrame({c: [] for c in FILE_LINE_SCHEMA if c != "warehouse_id"}, schema={c: t for c, t in FILE_LINE_SCHEMA.items() if c != "warehouse_id"})
    assert with_provenance(lines).schema["warehouse_id"] == pl.String


def test_committed_since_for_one_warehouse_skips_the_others_commits(net_erp):
    sim = net_erp.app.state.simulator
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    for site, n in (("WH-01", 2), ("WH-02", 3)):
        for i in range(n):
            sim.commit({"txn_id": f"LIVE-{site}-{i}", "txn_type": "ORDER", "warehouse_id": site,
                        "lines": [{"line_no": 1, "sku_id": "SKU-000001", "quantity": 1, "uom": "EA"}]})
    client = AsyncErpClient(str(net_erp.base_url), sim.config.token, retry=FAST, page_limit=2)

    async def read(site: str) -> list[str]:
        pages = await client.committed_since(since, read_erp_page, warehouse_id=site)
        return [t for p in pages if p.parsed for t in p.parsed.documents["txn_id"].to_list()]

    async def both() -> tuple[list[str], list[str]]:
        try:
            return await read("WH-01"), await read("WH-02")
        finally:
            await client.aclose()

    one, two = asyncio.run(both())
    assert one == ["LIVE-WH-01-0", "LIVE-WH-01-1"]
    assert two == ["LIVE-WH-02-0", "LIVE-WH-02-1", "LIVE-WH-02-2"]


def test_wms_reads_and_pushes_per_warehouse():
    with wms_client(warehouses="WH-01@6x20x1,WH-02@4x20x2", skus=200, days=10) as raw:
        client = WmsClient(str(raw.base_url), raw.app.state.simulator.config.token, retry=FAST, page_limit=50)
        locations = pl.concat(client.locations(read_location_page, warehouse_id="WH-02"))
        assignments = pl.concat(client.assignments(read_assignment_page, warehouse_id="WH-02"))
        assert locations.height == 4 * 20 * 2 * 2 and locations["location_id"].str.starts_with("WH-02/").all()
        assert assignments["location_id"].is_in(locations["location_id"].implode()).all()
        sku, at = assignments.row(0)[:2]
        free = locations.filter(~pl.col("location_id").is_in(assignments["location_id"].implode()))["location_id"][0]
        move = {"directive_id": "D-WH-02-1", "business_date": DAY, "sku_id": sku, "from_location": at, "to_location": free,
                "reason": "C->A", "expected_saving_m_per_day": 2.0, "warehouse_id": "WH-02"}
        body = orjson.loads(directive_body(move))
        assert body["warehouse_id"] == "WH-02"
        assert "warehouse_id" not in orjson.loads(directive_body({**move, "warehouse_id": None}))
        assert client.push_directive(body).status == "applied"
        assert client.push_directive(body).status == "replayed"
        stats = raw.get("/v1/stats").json()["warehouses"]
        assert (stats["WH-01"]["applied"], stats["WH-02"]["applied"]) == (0, 1)


def test_online_retail_network_maps_country_to_two_warehouses(tmp_path):
    rows = [
        ("536365", "85123A", "HEART", "6.0", "2011-06-01 08:26:00", "2.55", "17850.0", "United Kingdom"),
        ("536366", "22139", "TEA SET", "2.0", "2011-06-01 09:00:00", "4.95", "12583.0", "France"),
        ("536367", "22139", "TEA SET", "1.0", "2011-06-01 10:00:00", "4.95", "12431.0", "Australia"),
        ("536368", "22139", "TEA SET", "1.0", "2011-06-01 11:00:00", "4.95", "", ""),
    ]
    path = tmp_path / "retail.csv"
    pl.DataFrame(rows, schema=["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"],
                 orient="row").write_csv(path)
    network = read_export(path, preset("online-retail-network")).raw_lines(dt.date(2011, 6, 1))
    assert dict(zip(network["txn_id"], network["warehouse_id"])) == {"536365": "UK", "536366": "EU", "536367": "EU", "536368": "EU"}
    one = read_export(path, preset("online-retail")).raw_lines(dt.date(2011, 6, 1))
    assert one["warehouse_id"].null_count() == one.height == network.height  # the one-warehouse preset names none
