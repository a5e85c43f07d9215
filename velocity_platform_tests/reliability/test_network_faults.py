"""Two sites in two time zones on one ERP and one WMS: exactly once per site under the transport
faults, and a data fault in one site's feed stops that site's push only."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from velocity_platform.connectors.state import ACKED, OperationalStore
from velocity_platform.domain.network import Warehouse
from velocity_platform_tests.reliability.conftest import DATES, faulty_world, run, table

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow(minutes=1)]

SITES = [
    Warehouse(warehouse_id="WH-01", timezone="Europe/London", aisles=10, bays=20, levels=1),
    Warehouse(warehouse_id="WH-02", timezone="America/Chicago", aisles=8, bays=25, levels=1),
]
NETWORK_ERP = {"warehouses": ",".join(f"{s.warehouse_id}@{s.timezone}" for s in SITES)}
NETWORK_WMS = {"warehouses": ",".join(f"{s.warehouse_id}@{s.aisles}x{s.bays}x{s.levels}" for s in SITES)}


def register_sites(platform) -> OperationalStore:
    store = OperationalStore(platform.settings.store_url)
    for site in SITES:
        store.register_warehouse(site)
    return store


def erp_truth_of_site(platform, site_id: str, day: dt.date) -> Counter:
    """Lines per txn_id that the ERP holds for one site's day (no fault applies to this view)."""
    sim = platform.erp_app.state.simulator
    [site] = [s for s in sim.sites if s.warehouse_id == site_id]
    batch = sim.day(day.toordinal(), site).batch
    return Counter({doc["txn_id"]: len(doc["lines"]) for doc in batch.documents(list(range(batch.n_docs)))})


def raw_of_site(platform, site_id: str, day: dt.date) -> Counter:
    rows = table(
        platform,
        "SELECT txn_id, count(*) FROM warehouse.raw_transactions WHERE warehouse_id = ? AND business_date = ? GROUP BY 1",
        [site_id, day],
    )
    return Counter(dict(rows))


def test_each_site_gets_every_line_once_and_each_directive_once_under_transport_faults(tmp_path):
    erp = {**NETWORK_ERP, "fault_rate_429": 0.15, "fault_rate_5xx": 0.15, "fault_rate_drop": 0.1}
    wms = {**NETWORK_WMS, "fault_rate_429": 0.15, "fault_rate_5xx": 0.15, "fault_rate_commit_then_drop": 0.15}
    with faulty_world(tmp_path, erp=erp, wms=wms) as platform:
        store = register_sites(platform)
        outcomes = run(DATES)
        assert {(o.warehouse_id, o.business_date) for o in outcomes} == {(s.warehouse_id, d) for s in SITES for d in DATES}
        assert all(o.success and not o.checks_failed for o in outcomes), [(o.warehouse_id, o.error, o.checks_failed) for o in outcomes]
        for site in SITES:
            for day in DATES:
                # Every line of the site's documents, each once: none lost, none twice, none of the other site's.
                assert raw_of_site(platform, site.warehouse_id, day) == erp_truth_of_site(platform, site.warehouse_id, day)
        stats = platform.wms_stats()
        rows = store.outbox()
        assert rows and {r.status for r in rows} == {ACKED}
        assert {r.warehouse_id for r in rows} == {s.warehouse_id for s in SITES}
        # Each directive applied once, at its own site (the WMS keys its count by site/key).
        assert sorted(stats["applied_per_key"]) == sorted(f"{r.warehouse_id}/{r.directive_id}" for r in rows)
        assert set(stats["applied_per_key"].values()) == {1}
        for site in SITES:
            assert stats["warehouses"][site.warehouse_id]["applied"] == sum(r.warehouse_id == site.warehouse_id for r in rows)
        assert stats["rejected"] == 0  # none addressed to a location of the other site
        assert {"429", "5xx", "commit_then_drop"} <= set(stats["faults"])
        assert stats["replayed"] >= stats["faults"]["commit_then_drop"] > 0
        store.dispose()


def test_a_data_fault_in_one_sites_feed_stops_that_sites_push_only(tmp_path):
    erp = {**NETWORK_ERP, "malformed_rate_by_site": {"WH-02": 0.02}}
    with faulty_world(tmp_path, erp=erp, wms=NETWORK_WMS) as platform:
        store = register_sites(platform)
        outcomes = run(DATES)
        by_site = {s.warehouse_id: [o for o in outcomes if o.warehouse_id == s.warehouse_id] for s in SITES}
        assert all(o.success and not o.checks_failed for o in by_site["WH-01"]), [(o.error, o.checks_failed) for o in by_site["WH-01"]]
        for o in by_site["WH-02"]:
            assert not o.success and "validated_transactions.dlq_rate_within_limit" in o.checks_failed, (o.error, o.checks_failed)
        stats = platform.wms_stats()
        assert stats["warehouses"]["WH-01"]["applied"] > 0
        assert stats["warehouses"]["WH-02"]["applied"] == 0 and stats["warehouses"]["WH-02"]["received"] == 0
        assert {r.warehouse_id for r in store.outbox()} == {"WH-01"}
        # The stopped site's lines are all there, the malformed ones dead-lettered with their reason.
        dead = table(
            platform,
            "SELECT count(*), count(*) FILTER (WHERE len(reasons) > 0) FROM warehouse.dead_letter_transactions WHERE warehouse_id = 'WH-02'",
        )[0]
        assert dead[0] > 0 and dead[0] == dead[1]
        store.dispose()
