from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from velocity_platform.simulators.catalog import day_bounds_utc

from .conftest import DAYS, START, erp_client, pull_all


def _ts(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_auth(erp):
    base = str(erp.base_url).rstrip("/")
    assert httpx.get(f"{base}/healthz").status_code == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic erp-dev-token"}):
        r = httpx.get(f"{base}/v1/transactions", headers=headers)
        assert r.status_code == 401
        assert "error" in r.json() and "erp-dev-token" not in r.text and "nope" not in r.text
    for path in ("/v1/skus", "/v1/transactions/count?business_date=2026-01-02", "/v1/stats"):
        assert httpx.get(f"{base}{path}").status_code == 401


def test_business_date_pull_is_complete_and_reconciles(erp):
    bd = "2026-01-07"
    pages = pull_all(erp, "/v1/transactions", business_date=bd, limit=97)
    docs = [d for p in pages for d in p]
    ids = [d["txn_id"] for d in docs]
    assert len(ids) == len(set(ids)), "every document exactly once"
    count = erp.get("/v1/transactions/count", params={"business_date": bd}).json()
    assert count == {"business_date": bd, "documents": len(docs), "lines": sum(len(d["lines"]) for d in docs)}
    assert all(d["txn_id"][3:11] == "20260107" for d in docs)
    # The same pull with explicit bounds and time_field=event_ts.
    lo, hi = day_bounds_utc(date(2026, 1, 7), "Europe/London")
    again = pull_all(erp, "/v1/transactions", since=_ts(lo), until=_ts(hi), time_field="event_ts", limit=1000)
    assert [d for p in again for d in p] == docs


def test_order_is_time_then_txn_id(erp):
    docs = [d for p in pull_all(erp, "/v1/transactions", business_date="2026-01-08", limit=500) for d in p]
    keys = [(d["event_ts"], d["txn_id"]) for d in docs if d["event_ts"].endswith("Z")]
    assert keys == sorted(keys)


def test_created_at_window_spans_days_without_gaps(erp):
    lo = day_bounds_utc(date(2026, 1, 10), "Europe/London")[0]
    since, until = lo - 3 * 3600, lo + 3 * 3600  # straddles midnight
    pages = pull_all(erp, "/v1/transactions", since=_ts(since), until=_ts(until), limit=50)
    docs = [d for p in pages for d in p]
    created = [d["created_at"] for d in docs]
    assert created == sorted(created)
    assert all(_ts(since) <= c < _ts(until) for c in created)
    assert {d["txn_id"][3:11] for d in docs} == {"20260109", "20260110"}
    # Same window in one page: identical content.
    one = erp.get("/v1/transactions", params={"since": _ts(since), "until": _ts(until), "limit": 10000}).json()
    assert one["next_cursor"] is None and one["records"] == docs


def test_whole_history_by_commit_time_matches_counts(erp):
    docs = [d for p in pull_all(erp, "/v1/transactions", limit=10000) for d in p]
    per_date = Counter(d["txn_id"][3:11] for d in docs)
    assert len(per_date) == DAYS
    for k in (0, 13, DAYS - 1):
        bd = START + timedelta(days=k)
        count = erp.get("/v1/transactions/count", params={"business_date": bd.isoformat()}).json()
        assert per_date[bd.strftime("%Y%m%d")] == count["documents"]
    outside = erp.get("/v1/transactions/count", params={"business_date": "2025-06-01"}).json()
    assert outside["documents"] == 0 and outside["lines"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "10001"},
        {"limit": "ten"},
        {"time_field": "posted_at"},
        {"since": "yesterday"},
        {"since": "2026-01-03T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
        {"business_date": "2026-13-01"},
        {"business_date": "2026-01-02", "since": "2026-01-02T00:00:00Z"},
        {"cursor": "not-a-cursor"},
        {"bogus": "1"},
    ],
)
def test_bad_params_are_400(erp, params):
    r = erp.get("/v1/transactions", params=params)
    assert r.status_code == 400 and r.json()["error"]


def test_cursor_is_bound_to_its_query(erp):
    first = erp.get("/v1/transactions", params={"business_date": "2026-01-05", "limit": 10}).json()
    r = erp.get("/v1/transactions", params={"business_date": "2026-01-06", "cursor": first["next_cursor"]})
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    assert erp.get("/v1/transactions/count").status_code == 400


def test_skus_paging(erp):
    rows = [r for p in pull_all(erp, "/v1/skus", limit=77) for r in p]
    assert len(rows) == 500 and len({r["sku_id"] for r in rows}) == 500
    assert set(rows[0]) == {
        "sku_id", "description", "category", "subcategory", "unit_cube_ft3", "unit_weight_lb",
        "case_qty", "pallet_qty", "case_cube_ft3", "uoms", "introduced_on",
    }


def test_stats_count_served_lines(erp):
    pull_all(erp, "/v1/transactions", business_date="2026-01-07", limit=500)
    stats = erp.get("/v1/stats").json()
    served = stats["served"]["2026-01-07"]
    count = erp.get("/v1/transactions/count", params={"business_date": "2026-01-07"}).json()
    assert served["lines"] >= count["lines"] and served["documents"] >= count["documents"]
    assert stats["requests"]["transactions"]["200"] > 0 and stats["requests"]["transactions"]["400"] > 0


def test_history_defaults_end_yesterday():
    with erp_client(start=None, days=5, lines_per_day=200) as erp:
        stats = erp.get("/v1/stats").json()
        yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
        assert stats["history"]["end"] == yesterday.isoformat()
        assert stats["history"]["start"] == (yesterday - timedelta(days=4)).isoformat()


def test_simulated_clock_hides_uncommitted_records():
    bd = date(2026, 1, 20)
    lo, hi = day_bounds_utc(bd, "Europe/London")
    with erp_client(now=datetime.fromtimestamp(lo + 12 * 3600, timezone.utc)) as erp:
        half = erp.get("/v1/transactions/count", params={"business_date": bd.isoformat()}).json()
        nothing = erp.get("/v1/transactions/count", params={"business_date": "2026-01-21"}).json()
        assert half["documents"] > 0 and nothing["documents"] == 0
        docs = [d for p in pull_all(erp, "/v1/transactions", business_date=bd.isoformat()) for d in p]
        assert len(docs) == half["documents"] and max(d["created_at"] for d in docs) <= _ts(lo + 12 * 3600)
        r = erp.post("/v1/admin/clock", json={"now": _ts(hi + 3600)})
        assert r.status_code == 200 and r.json()["simulated"] is True
        full = erp.get("/v1/transactions/count", params={"business_date": bd.isoformat()}).json()
        assert full["documents"] > half["documents"]
        assert erp.post("/v1/admin/clock", json={"now": "soon"}).status_code == 400
        assert erp.post("/v1/admin/clock", json={"now": None}).json()["simulated"] is False


def test_extend_to_clock_keeps_trading_after_the_history():
    now = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)
    with erp_client(days=5, now=now, extend_to_clock=True) as live, erp_client(days=5, now=now) as fixed:
        assert live.get("/v1/transactions/count", params={"business_date": "2026-01-08"}).json()["documents"] > 0
        assert fixed.get("/v1/transactions/count", params={"business_date": "2026-01-08"}).json()["documents"] == 0
        today = live.get("/v1/transactions/count", params={"business_date": "2026-01-10"}).json()["documents"]
        live.post("/v1/admin/clock", json={"now": "2026-01-10T18:00:00Z"})
        assert live.get("/v1/transactions/count", params={"business_date": "2026-01-10"}).json()["documents"] > today
