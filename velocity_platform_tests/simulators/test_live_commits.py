"""The simulators driven live: the ERP commits documents and registers SKUs, the WMS answers one
SKU's assignment with when it applied it."""

import datetime as dt
import threading

import httpx
import pytest

from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform.simulators.wms import WmsConfig, create_wms_app

WORLD = {"seed": 3, "skus": 50, "start": dt.date(2025, 1, 1), "days": 3}
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture(scope="module")
def erp():
    with BackgroundServer(create_erp_app(ErpConfig(**WORLD, token="t"))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as client:
            yield client


def document(txn_id: str, sku: str = "SKU-0001") -> dict:
    return {
        "txn_id": txn_id,
        "txn_type": "ORDER",
        "customer_id": "C-1",
        "event_ts": "2026-12-01T10:00:00+00:00",
        "lines": [{"line_no": 1, "sku_id": sku, "quantity": 2, "uom": "EA"}],
    }


def test_a_committed_document_gets_its_created_at_and_is_served_at_once(erp):
    before = dt.datetime.now(dt.UTC)
    committed = [erp.post("/v1/transactions", json=document(f"LIVE-{n}")).json() for n in range(3)]
    stamps = [dt.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) for d in committed]
    assert before <= stamps[0] < stamps[1] < stamps[2]  # to the microsecond, strictly increasing
    page = erp.get("/v1/transactions", params={"since": stamps[1].isoformat(), "time_field": "created_at"}).json()
    assert [d["txn_id"] for d in page["records"]] == ["LIVE-1", "LIVE-2"]
    assert page["records"][0]["lines"] == document("x")["lines"]
    assert erp.post("/v1/transactions", json=document("LIVE-1")).status_code == 409
    assert erp.post("/v1/transactions", json={"txn_id": "X"}).status_code == 400  # no lines


def test_the_generated_history_comes_first_then_the_live_commits(erp):
    erp.post("/v1/transactions", json=document("LIVE-AFTER-HISTORY"))
    records, cursor = [], None
    while True:
        params = {"since": "2024-12-31T00:00:00Z", "time_field": "created_at", "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = erp.get("/v1/transactions", params=params).json()
        records += page["records"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    live = [r["txn_id"] for r in records if r["txn_id"].startswith("LIVE")]
    assert live[-1] == "LIVE-AFTER-HISTORY" and len(records) > len(live)
    assert all(not r["txn_id"].startswith("LIVE") for r in records[: len(records) - len(live)])


def test_a_long_poll_is_answered_when_a_document_is_committed(erp):
    since = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=1)
    answered = {}

    def poll():
        answered["page"] = erp.get(
            "/v1/transactions", params={"since": since.isoformat(), "time_field": "created_at", "wait_s": 20}
        ).json()

    waiting = threading.Thread(target=poll)
    waiting.start()
    committed = erp.post("/v1/transactions", json=document("LIVE-POLLED")).json()
    waiting.join(20)
    assert not waiting.is_alive()  # answered by the commit, not by the 20 s timeout
    assert committed["txn_id"] in [d["txn_id"] for d in answered["page"]["records"]]


def test_registered_skus_join_the_master_and_can_be_looked_up_by_id(erp):
    assert erp.post("/v1/skus", json={"sku_id": "NEW-SIM-1", "case_qty": 6}).status_code == 201
    assert erp.post("/v1/skus", json=[{"sku_id": "NEW-SIM-2"}, {"sku_id": "NEW-SIM-3"}]).status_code == 201
    assert erp.post("/v1/skus", json={"sku_id": "NEW-SIM-1"}).status_code == 409
    found = erp.get("/v1/skus", params={"ids": "NEW-SIM-1,SKU-000002,NOPE-1"}).json()["records"]
    assert {r["sku_id"]: r["case_qty"] for r in found}["NEW-SIM-1"] == 6
    assert {r["sku_id"] for r in found} == {"NEW-SIM-1", "SKU-000002"}
    listed, cursor = [], None
    while True:
        page = erp.get("/v1/skus", params={"limit": 20, **({"cursor": cursor} if cursor else {})}).json()
        listed += [r["sku_id"] for r in page["records"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert listed[-3:] == ["NEW-SIM-1", "NEW-SIM-2", "NEW-SIM-3"] and len(set(listed)) == len(listed)


def test_the_wms_takes_a_new_product_through_its_item_interface_and_says_when_it_applied_its_slot():
    with BackgroundServer(create_wms_app(WmsConfig(**WORLD, token="t"))) as server, httpx.Client(
        base_url=server.url, headers=AUTH
    ) as wms:
        assert wms.get("/v1/slotting/assignments", params={"sku_id": "NEW-WMS-1"}).json()["records"][0]["location_id"] is None
        taken = {r["location_id"] for r in wms.get("/v1/slotting/assignments", params={"limit": 1000}).json()["records"]}
        free = next(r["location_id"] for r in wms.get("/v1/locations", params={"limit": 1000}).json()["records"] if r["location_id"] not in taken)
        directive = {
            "directive_id": "d-new-1", "business_date": "2026-12-01", "sku_id": "NEW-WMS-1", "from_location": None,
            "to_location": free, "reason": "first slot", "expected_saving_m_per_day": 0.0,
        }
        # Unknown to the WMS's item master: refused, and not stored under its key.
        assert wms.post("/v1/slotting/directives", json=directive, headers={"Idempotency-Key": "d-new-1"}).status_code == 422
        assert wms.post("/v1/items", json=[{"sku_id": "NEW-WMS-1"}]).json() == {"added": 1, "known": 0}
        before = dt.datetime.now(dt.UTC).timestamp() * 1000
        assert wms.post("/v1/slotting/directives", json=directive, headers={"Idempotency-Key": "d-new-1"}).status_code == 201
        [record] = wms.get("/v1/slotting/assignments", params={"sku_id": "NEW-WMS-1"}).json()["records"]
        assert record["location_id"] == free
        assert before - 1 <= record["assigned_at_ms"] <= dt.datetime.now(dt.UTC).timestamp() * 1000 + 1
        assert wms.post("/v1/items", json={"sku_id": "bad id"}).status_code == 422
