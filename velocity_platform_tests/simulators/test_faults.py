"""Every fault kind is observable over real HTTP, and transient ones are per attempt."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

import httpx
import orjson
import pytest

from velocity_platform.simulators.catalog import day_bounds_utc

from .conftest import erp_client, pull_all, wms_client

BD = "2026-01-07"


def _ts(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_429_with_retry_after():
    with erp_client(fault_rate_429=1.0, retry_after_seconds=0) as erp:
        r = erp.get("/v1/transactions", params={"business_date": BD})
        assert r.status_code == 429 and r.headers["Retry-After"] == "0"
        assert erp.get("/v1/stats").json()["faults"]["429"] == 1


def test_5xx():
    with erp_client(fault_rate_5xx=1.0) as erp:
        codes = {erp.get("/v1/skus").status_code for _ in range(12)}
        assert codes <= {500, 502, 503} and len(codes) > 1


def test_transient_faults_are_per_attempt_so_retries_succeed():
    with erp_client(fault_rate_429=0.3, fault_rate_5xx=0.3, retry_after_seconds=0) as erp:
        codes = []
        for _ in range(40):
            codes.append(erp.get("/v1/transactions/count", params={"business_date": BD}).status_code)
        assert 200 in codes and 429 in codes and any(c >= 500 for c in codes)
        good = {orjson.dumps(erp.get("/v1/transactions/count", params={"business_date": BD}).json()) for _ in range(10)}
        assert len({g for g in good if b"error" not in g}) == 1, "successful answers agree"


def test_transient_fault_sequence_is_deterministic_per_seed():
    def codes(seed):
        with erp_client(seed=seed, fault_rate_429=0.5, retry_after_seconds=0) as erp:
            return [erp.get("/v1/skus", params={"limit": 1}).status_code for _ in range(20)]

    assert codes(3) == codes(3)
    assert codes(3) != codes(4)


def test_slow_response_exceeds_client_timeout():
    with erp_client(fault_rate_slow=1.0, slow_seconds=0.6) as erp:
        with pytest.raises(httpx.ReadTimeout):
            erp.get("/v1/transactions/count", params={"business_date": BD}, timeout=0.1)


def test_dropped_connection_mid_body():
    with erp_client(fault_rate_drop=1.0) as erp:
        with pytest.raises(httpx.RemoteProtocolError):
            erp.get("/v1/transactions", params={"business_date": BD})
        assert erp.get("/v1/stats").json()["faults"]["drop"] == 1


def test_bad_json_page():
    with erp_client(fault_rate_bad_json=1.0) as erp:
        r = erp.get("/v1/transactions", params={"business_date": BD})
        assert r.status_code == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(r.content)


def test_duplicates_across_page_boundaries_are_stable():
    with erp_client(fault_rate_duplicate=0.5) as erp:
        def pull():
            return [[d["txn_id"] for d in p] for p in pull_all(erp, "/v1/transactions", business_date=BD, limit=50)]

        pages = pull()
        assert pull() == pages, "a data fault: every pull sees the same repeats"
        repeats = sum(len(set(a) & set(b)) for a, b in zip(pages, pages[1:]))
        assert repeats > 0
        ids = [i for p in pages for i in p]
        count = erp.get("/v1/transactions/count", params={"business_date": BD}).json()
        assert len(set(ids)) == count["documents"] < len(ids)
        assert erp.get("/v1/stats").json()["faults"]["duplicate_page"] > 0


def test_late_arrivals_become_visible_as_the_clock_passes_them():
    bd = date(2026, 1, 7)
    lo, hi = day_bounds_utc(bd, "Europe/London")
    with erp_client(late_arrival_rate=0.1, now=datetime.fromtimestamp(hi + 3600, timezone.utc)) as erp:
        early = erp.get("/v1/transactions/count", params={"business_date": BD}).json()
        # The delta sensor's view: commits in the last hour are only the day's stragglers.
        erp.post("/v1/admin/clock", json={"now": _ts(hi + 4 * 86_400)})
        full = erp.get("/v1/transactions/count", params={"business_date": BD}).json()
        assert full["documents"] > early["documents"]
        late = (full["documents"] - early["documents"]) / full["documents"]
        assert 0.05 < late < 0.15
        docs = [d for p in pull_all(erp, "/v1/transactions", business_date=BD) for d in p]
        assert len(docs) == full["documents"]
        assert any(d["created_at"] >= _ts(hi + 86_400) for d in docs), "committed days later"
        # A created_at delta window days later still contains this business date's late records.
        window = pull_all(erp, "/v1/transactions", since=_ts(hi + 2 * 86_400), until=_ts(hi + 3 * 86_400))
        assert any(d["txn_id"][3:11] == "20260107" for p in window for d in p)
        assert erp.get("/v1/stats").json()["data_faults"][BD]["late"] > 0


def test_schema_drift_is_stable_and_counted():
    with erp_client(fault_rate_drift=0.2) as erp:
        docs = [d for p in pull_all(erp, "/v1/transactions", business_date=BD) for d in p]
        lines = [ln for d in docs for ln in d["lines"]]
        assert any("sku" in ln and "sku_id" not in ln for ln in lines)
        assert any("qty" in ln for ln in lines)
        assert any(isinstance(ln.get("quantity"), str) for ln in lines)
        assert any(isinstance(ln.get("line_no"), str) for ln in lines)
        assert any("channel" in d for d in docs) and any("customer_id" not in d for d in docs)
        count = erp.get("/v1/transactions/count", params={"business_date": BD}).json()
        assert count["lines"] == len(lines)
        again = [d for p in pull_all(erp, "/v1/transactions", business_date=BD) for d in p]
        assert again == docs
        kinds = erp.get("/v1/stats").json()["data_faults"][BD]["drift"]
        assert sum(kinds.values()) > 0


def test_wms_429_and_5xx_do_not_apply():
    with wms_client(fault_rate_429=0.5, fault_rate_5xx=0.5, retry_after_seconds=0) as wms:
        codes = Counter(wms.get("/v1/locations", params={"limit": 1}).status_code for _ in range(20))
        assert codes[429] > 0 and sum(codes[c] for c in (500, 502, 503)) > 0
        r = wms.post(
            "/v1/slotting/directives",
            json={"directive_id": "x"},
            headers={"Idempotency-Key": "x"},
        )
        assert r.status_code in (429, 500, 502, 503)
        assert wms.get("/v1/stats").status_code == 200
        assert wms.get("/v1/stats").json()["applied"] == 0


def test_wms_commit_then_drop_then_replay():
    with wms_client(fault_rate_commit_then_drop=1.0) as wms:
        sim = wms.app.state.simulator
        a = wms.get("/v1/slotting/assignments", params={"limit": 1}).json()["records"][0]
        free = next(loc for i, loc in enumerate(sim.location_ids) if sim.sku_of_loc[i] < 0)
        body = {
            "directive_id": "D-lost",
            "business_date": "2026-01-30",
            "sku_id": a["sku_id"],
            "from_location": a["location_id"],
            "to_location": free,
            "reason": "C->A",
            "expected_saving_m_per_day": 3.0,
        }
        with pytest.raises(httpx.RemoteProtocolError):
            wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": "D-lost"})
        stats = wms.get("/v1/stats").json()
        assert stats["applied_per_key"] == {"D-lost": 1} and stats["faults"]["commit_then_drop"] == 1
        sim.config.fault_rate_commit_then_drop = 0.0  # the network heals; the outbox retries
        r = wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": "D-lost"})
        assert r.status_code == 200 and r.json()["replayed"] is True and r.json()["status"] == "applied"
        assert wms.get("/v1/stats").json()["applied_per_key"] == {"D-lost": 1}


def test_config_rejects_impossible_rates():
    from velocity_platform.simulators.erp import ErpConfig

    with pytest.raises(ValueError):
        ErpConfig(fault_rate_429=0.7, fault_rate_5xx=0.7)
    with pytest.raises(ValueError):
        ErpConfig(late_arrival_rate=1.5)
    cfg = ErpConfig(seed="3", fault_rate_429="0.1", start="2026-01-01", now="2026-02-01T00:00:00Z")
    assert cfg.seed == 3 and cfg.fault_rate_429 == 0.1 and cfg.start == date(2026, 1, 1)
    assert cfg.now == datetime(2026, 2, 1, tzinfo=timezone.utc) and timedelta(0) == cfg.now.utcoffset()
