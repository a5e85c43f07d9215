"""The simulators as a network of warehouses: per-site documents, days, demand, layouts and keys."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime

import httpx
import pytest

from velocity_platform.simulators.catalog import day_bounds_utc

from .conftest import erp_client, pull_all, wms_client

SITES = "WH-01@America/Chicago,WH-02@Europe/Berlin"
DAY = date(2026, 1, 5)
SMALL = {"skus": 400, "lines_per_day": 900, "days": 10}


@pytest.fixture(scope="module")
def net_erp():
    with erp_client(warehouses=SITES, **SMALL) as client:
        yield client


def _docs(erp: httpx.Client, **params) -> list[dict]:
    return [d for page in pull_all(erp, "/v1/transactions", limit=97, **params) for d in page]


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def test_one_site_by_default_with_todays_ids(erp):
    docs = _docs(erp, business_date="2026-01-07")
    assert {d["warehouse_id"] for d in docs} == {"WH-01"}
    assert all(not d["txn_id"].startswith("WH-") for d in docs)
    # Naming the one site changes nothing.
    assert _docs(erp, business_date="2026-01-07", warehouse_id="WH-01") == docs


def test_the_filter_splits_the_network_and_pages_stay_within_a_site(net_erp):
    everything = _docs(net_erp, business_date=DAY.isoformat())
    by_site = {w: _docs(net_erp, business_date=DAY.isoformat(), warehouse_id=w) for w in ("WH-01", "WH-02")}
    for site, docs in by_site.items():
        assert docs and {d["warehouse_id"] for d in docs} == {site}
        assert len({d["txn_id"] for d in docs}) == len(docs)  # cursor paging neither repeats nor skips
        count = net_erp.get("/v1/transactions/count", params={"business_date": DAY.isoformat(), "warehouse_id": site})
        assert count.json()["lines"] == sum(len(d["lines"]) for d in docs)
    assert sorted(d["txn_id"] for d in everything) == sorted(d["txn_id"] for docs in by_site.values() for d in docs)
    served = net_erp.get("/v1/stats").json()["warehouses"]
    # Every page read here was counted for its site (the unfiltered read once more).
    for site, docs in by_site.items():
        assert served[site]["documents"] == 2 * len(docs)


def test_a_business_date_is_the_sites_local_day(net_erp):
    for site, zone in (("WH-01", "America/Chicago"), ("WH-02", "Europe/Berlin")):
        lo, hi = day_bounds_utc(DAY, zone)
        times = [_epoch(d["event_ts"]) for d in _docs(net_erp, business_date=DAY.isoformat(), warehouse_id=site)]
        assert lo <= min(times) and max(times) < hi
        # Chicago's day starts seven hours after Berlin's: its first orders are outside Berlin's day.
    chicago = [_epoch(d["event_ts"]) for d in _docs(net_erp, business_date=DAY.isoformat(), warehouse_id="WH-01")]
    assert max(chicago) >= day_bounds_utc(DAY, "Europe/Berlin")[1]


def test_an_unknown_site_is_a_404_naming_the_sites(net_erp):
    for path, params in (
        ("/v1/transactions", {"business_date": DAY.isoformat(), "warehouse_id": "WH-09"}),
        ("/v1/transactions/count", {"business_date": DAY.isoformat(), "warehouse_id": "WH-09"}),
    ):
        resp = net_erp.get(path, params=params)
        assert resp.status_code == 404
        assert "WH-09" in resp.json()["error"] and "WH-01, WH-02" in resp.json()["error"]


def test_a_cursor_belongs_to_its_site(net_erp):
    first = net_erp.get("/v1/transactions", params={"business_date": DAY.isoformat(), "warehouse_id": "WH-01", "limit": 5}).json()
    other = net_erp.get(
        "/v1/transactions",
        params={"business_date": DAY.isoformat(), "warehouse_id": "WH-02", "cursor": first["next_cursor"]},
    )
    assert other.status_code == 400


def test_sites_sell_a_different_mix(net_erp):
    lines: dict[str, Counter] = {}
    for site in ("WH-01", "WH-02"):
        docs = [d for day in ("2026-01-03", "2026-01-04", "2026-01-05") for d in _docs(net_erp, business_date=day, warehouse_id=site)]
        lines[site] = Counter(ln["sku_id"] for d in docs if d["txn_type"] == "ORDER" for ln in d["lines"])
    top = {site: {sku for sku, _ in c.most_common(40)} for site, c in lines.items()}
    # Same weights would make the two fast-mover lists nearly equal; reweighted, most differ.
    assert len(top["WH-01"] & top["WH-02"]) < 20
    # Each site sells SKUs of its own that the other never does.
    only = {site: set(c) - set(lines[other]) for site, c, other in (("WH-01", lines["WH-01"], "WH-02"), ("WH-02", lines["WH-02"], "WH-01"))}
    assert any(s.startswith("WH-01-") for s in only["WH-01"]) and not any(s.startswith("WH-02-") for s in lines["WH-01"])
    assert any(s.startswith("WH-02-") for s in only["WH-02"]) and not any(s.startswith("WH-01-") for s in lines["WH-02"])


def test_bad_sites_are_refused_in_one_line():
    from velocity_platform.simulators.erp import ErpConfig
    from velocity_platform.simulators.wms import WmsConfig

    for bad in ("WH-01,WH-01", "WH|01", "WH-01@Mars/Base"):
        with pytest.raises(ValueError, match="WH"):
            ErpConfig(warehouses=bad)
    with pytest.raises(ValueError, match="AISLESxBAYSxLEVELS"):
        WmsConfig(warehouses="WH-01@12x40")


# --- WMS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net_wms():
    with wms_client(warehouses="WH-01@8x12x2,WH-02@6x30x1", skus=300, days=10) as client:
        yield client


def _site_state(wms: httpx.Client, site: str) -> tuple[dict[str, str], list[str]]:
    assigned = {r["sku_id"]: r["location_id"] for p in pull_all(wms, "/v1/slotting/assignments", limit=77, warehouse_id=site) for r in p}
    locations = [r["location_id"] for p in pull_all(wms, "/v1/locations", limit=77, warehouse_id=site) for r in p]
    return assigned, locations


def _move(sku: str, frm: str, to: str, site: str | None, directive_id: str) -> dict:
    body = {"directive_id": directive_id, "business_date": "2026-01-09", "sku_id": sku, "from_location": frm,
            "to_location": to, "reason": "C->A", "expected_saving_m_per_day": 3.0}
    return body if site is None else {**body, "warehouse_id": site}


def test_default_wms_keeps_todays_ids_and_knows_its_one_site(wms):
    ids = [r["location_id"] for r in wms.get("/v1/locations", params={"limit": 50, "warehouse_id": "WH-01"}).json()["records"]]
    assert ids and all("/" not in i for i in ids)
    assert wms.get("/v1/locations", params={"warehouse_id": "WH-02"}).status_code == 404


def test_each_site_has_its_own_layout_and_ids(net_wms):
    one, two = _site_state(net_wms, "WH-01"), _site_state(net_wms, "WH-02")
    assert len(one[1]) == 8 * 12 * 2 * 2 and len(two[1]) == 6 * 30 * 2 * 1
    assert all(i.startswith("WH-01/") for i in one[1]) and all(i.startswith("WH-02/") for i in two[1])
    assert set(one[0].values()) <= set(one[1]) and set(two[0].values()) <= set(two[1])
    every = [r["location_id"] for p in pull_all(net_wms, "/v1/locations", limit=100) for r in p]
    assert sorted(every) == sorted(one[1] + two[1])


def test_a_directive_onto_another_sites_location_is_refused_naming_both(net_wms):
    assigned, _ = _site_state(net_wms, "WH-01")
    _, elsewhere = _site_state(net_wms, "WH-02")
    sku, at = next(iter(assigned.items()))
    resp = net_wms.post("/v1/slotting/directives", json=_move(sku, at, elsewhere[0], "WH-01", "X-1"), headers={"Idempotency-Key": "x-1"})
    assert resp.status_code == 422
    detail = " ".join(resp.json()["details"])
    assert "WH-02" in detail and "WH-01" in detail
    assert _site_state(net_wms, "WH-01")[0][sku] == at  # nothing moved
    nameless = net_wms.post("/v1/slotting/directives", json=_move(sku, at, elsewhere[0], None, "X-2"), headers={"Idempotency-Key": "x-2"})
    assert nameless.status_code == 422 and "warehouse_id" in nameless.text


def test_idempotency_keys_are_per_site_and_stats_count_per_site(net_wms):
    before = net_wms.get("/v1/stats").json()["warehouses"]
    for site in ("WH-01", "WH-02"):
        assigned, locations = _site_state(net_wms, site)
        sku, at = next(iter(assigned.items()))
        free = next(loc for loc in locations if loc not in set(assigned.values()))
        body = _move(sku, at, free, site, f"D-{site}")
        # The same key at both sites: each site applies its own directive under it, once.
        first = net_wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": "night-1"})
        again = net_wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": "night-1"})
        assert (first.status_code, again.status_code) == (201, 200) and again.json()["replayed"] is True
        assert _site_state(net_wms, site)[0][sku] == free
    stats = net_wms.get("/v1/stats").json()
    for site in ("WH-01", "WH-02"):
        assert stats["warehouses"][site]["applied"] == before[site]["applied"] + 1
        assert stats["warehouses"][site]["replayed"] == before[site]["replayed"] + 1
        assert stats["applied_per_key"][f"{site}/night-1"] == 1
    assert stats["applied"] == sum(f["applied"] for f in stats["warehouses"].values())
