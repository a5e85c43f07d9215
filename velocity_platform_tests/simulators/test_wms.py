from __future__ import annotations

import re
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from velocity_platform.simulators.catalog import build_catalog
from velocity_platform.simulators.wms import WmsConfig, WmsSimulator

from .conftest import DAYS, START, pull_all, wms_client


def _directive(sku: str, frm: str | None, to: str, **extra) -> dict:
    return {
        "directive_id": extra.pop("directive_id", f"D-{uuid.uuid4().hex[:12]}"),
        "business_date": "2026-01-30",
        "sku_id": sku,
        "from_location": frm,
        "to_location": to,
        "reason": "C->A",
        "expected_saving_m_per_day": 12.5,
        **extra,
    }


def _state(wms: httpx.Client) -> tuple[dict[str, str], list[dict]]:
    pages = pull_all(wms, "/v1/slotting/assignments", limit=111)
    assignments = {r["sku_id"]: r["location_id"] for p in pages for r in p}
    locations = [r for p in pull_all(wms, "/v1/locations", limit=333) for r in p]
    return assignments, locations


def _free(assignments: dict[str, str], locations: list[dict], n: int = 1) -> list[str]:
    used = set(assignments.values())
    return [r["location_id"] for r in locations if r["location_id"] not in used][:n]


def test_layout(wms):
    _, locations = _state(wms)
    assert 1.25 * 500 <= len(locations) <= 1.45 * 500
    assert len({r["location_id"] for r in locations}) == len(locations)
    for r in locations:
        assert re.fullmatch(r"[A-Z]{2}-\d{3}", r["location_id"])
        pos = int(r["location_id"][3:])
        assert pos == 2 * (r["bay"] + 1) - (1 if r["side"] == "L" else 0)
        code = r["location_id"][:2]
        assert (ord(code[0]) - 65) * 26 + ord(code[1]) - 65 == r["aisle"]
        assert r["distance_m"] == pytest.approx(3.0 * r["aisle"] + r["bay"] + 0.5)
        assert r["level"] == 1 and r["capacity_ft3"] > 0
    zones = Counter(r["zone"] for r in locations)
    assert zones["A"] == pytest.approx(0.2 * len(locations), abs=1)
    assert zones["B"] == pytest.approx(0.3 * len(locations), abs=1)
    worst_a = max(r["distance_m"] for r in locations if r["zone"] == "A")
    best_c = min(r["distance_m"] for r in locations if r["zone"] == "C")
    assert worst_a <= best_c


def test_levels_and_explicit_dims():
    sim = WmsSimulator(WmsConfig(start=START, days=DAYS, skus=500, aisles=4, bays_per_side=40, levels=3))
    assert len(sim.location_rows) == 4 * 40 * 2 * 3
    assert sim.location_rows[0]["location_id"] == "AA-001-1"
    assert {r["level"] for r in sim.location_rows} == {1, 2, 3}


def test_initial_assignment_is_legacy_random_and_deterministic(wms):
    assignments, _ = _state(wms)
    cat = build_catalog(7, 500, START, DAYS)
    live = {cat.sku_ids[i] for i in range(len(cat)) if cat.introduced_on(i) <= START}
    assert set(assignments) == live, "SKUs introduced later start unslotted"
    assert len(set(assignments.values())) == len(assignments)
    other = WmsSimulator(WmsConfig(start=START, days=DAYS, skus=500))
    served = wms.get("/v1/slotting/assignments", params={"limit": 50}).json()["records"]
    assert other.assignments_page({"limit": "50"})["records"] == served


def test_auth_and_missing_key(wms):
    base = str(wms.base_url).rstrip("/")
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/v1/locations").status_code == 401
    headers = {"Authorization": "Bearer x", "Idempotency-Key": "k"}
    r = httpx.post(f"{base}/v1/slotting/directives", json={}, headers=headers)
    assert r.status_code == 401 and "wms-dev-token" not in r.text
    assert wms.post("/v1/slotting/directives", json=_directive("SKU-000001", None, "AA-001")).status_code == 400


def test_idempotent_apply_and_replay():
    with wms_client() as wms:
        assignments, locations = _state(wms)
        sku, frm = next(iter(assignments.items()))
        to = _free(assignments, locations)[0]
        body = _directive(sku, frm, to)
        key = body["directive_id"]
        first = wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": key})
        again = wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 201 and first.json()["status"] == "applied"
        assert again.status_code == 200 and again.json()["replayed"] is True
        assert again.json()["ack_id"] == first.json()["ack_id"]
        assert again.json()["applied_at"] == first.json()["applied_at"]
        after, _ = _state(wms)
        assert after[sku] == to
        stats = wms.get("/v1/stats").json()
        assert stats["applied_per_key"] == {key: 1}
        assert (stats["received"], stats["applied"], stats["replayed"]) == (2, 1, 1)
        assert stats["by_business_date"]["2026-01-30"]["applied"] == 1
        # The same key with a different move is refused, not applied.
        other = _directive(sku, to, _free(after, locations)[0], directive_id=key)
        assert wms.post("/v1/slotting/directives", json=other, headers={"Idempotency-Key": key}).status_code == 422


def test_concurrent_duplicates_apply_once():
    with wms_client() as wms:
        assignments, locations = _state(wms)
        sku, frm = next(iter(assignments.items()))
        body = _directive(sku, frm, _free(assignments, locations)[0])
        headers = {"Idempotency-Key": body["directive_id"], **wms.headers}
        url = str(wms.base_url).rstrip("/") + "/v1/slotting/directives"
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: httpx.post(url, json=body, headers=headers).status_code, range(16)))
        assert sorted(codes) == [200] * 15 + [201]
        assert wms.get("/v1/stats").json()["applied_per_key"] == {body["directive_id"]: 1}


def test_conflicts_and_invalid_bodies():
    with wms_client() as wms:
        assignments, locations = _state(wms)
        (s1, l1), (s2, l2) = list(assignments.items())[:2]
        free = _free(assignments, locations)[0]

        def post(body, key=None):
            return wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})

        assert post(_directive(s1, l2, free)).status_code == 409  # not at from_location
        assert post(_directive(s1, l1, l2)).status_code == 409  # to_location occupied
        assert post(_directive(s1, None, free)).status_code == 409  # it is slotted
        assert post(_directive(s1, l1, "ZZ-999")).status_code == 422  # unknown location
        assert post(_directive("sku-1", l1, free)).status_code == 422
        assert post({**_directive(s1, l1, free), "expected_saving_m_per_day": "lots"}).status_code == 422
        assert post([1, 2]).status_code == 422
        r = wms.post("/v1/slotting/directives", content=b"{nope", headers={"Idempotency-Key": "bad-json"})
        assert r.status_code == 422
        # A rejected key is not remembered: once the conflict is gone the same key applies.
        key = "retry-after-conflict"
        assert post(_directive(s1, l1, l2), key).status_code == 409
        assert post(_directive(s2, l2, free)).status_code == 201
        assert post(_directive(s1, l1, l2), key).status_code == 201
        stats = wms.get("/v1/stats").json()
        assert stats["rejected"] == 9 and stats["applied"] == 2
        assert stats["applied_per_key"]["bad-json"] == 0 and stats["applied_per_key"][key] == 1
        assert set(stats["applied_per_key"].values()) == {0, 1}


def test_a_batch_answers_each_directive_as_the_single_post_would():
    with wms_client() as wms:
        assignments, locations = _state(wms)
        (s1, l1), (s2, l2), (s3, l3) = list(assignments.items())[:3]
        free = _free(assignments, locations, 2)
        moves = [_directive(s1, l1, free[0]), _directive(s2, l2, l3), _directive(s3, l3, free[1])]
        items = [{"idempotency_key": m["directive_id"], "directive": m} for m in moves]

        def post(body, key="batch-1"):
            return wms.post("/v1/slotting/directives/batch", json=body, headers={"Idempotency-Key": key})

        first = post({"items": items})
        assert first.status_code == 200
        # In order: s2's target is still held by s3 when s2's item is applied.
        assert [r["http_status"] for r in first.json()["results"]] == [201, 409, 201]
        assert [r["idempotency_key"] for r in first.json()["results"]] == [m["directive_id"] for m in moves]
        again = post({"items": items}).json()["results"]  # the same request repeated: applied once
        assert [r["http_status"] for r in again] == [200, 201, 200] and again[0]["replayed"] is True
        after, _ = _state(wms)
        assert (after[s1], after[s2], after[s3]) == (free[0], l3, free[1])
        assert wms.get("/v1/stats").json()["applied_per_key"] == {m["directive_id"]: 1 for m in moves}
        assert post({"items": items}, key="").status_code == 400
        assert post({"directives": moves}).status_code == 422
        assert post({"items": [{"directive": moves[0]}]}).status_code == 422
        assert post({"items": items * 200}).status_code == 413


def test_unslotted_sku_can_be_slotted():
    with wms_client() as wms:
        assignments, locations = _state(wms)
        cat = build_catalog(7, 500, START, DAYS)
        new = next(s for s in cat.sku_ids.tolist() if s not in assignments)
        r = wms.post(
            "/v1/slotting/directives",
            json=_directive(new, None, _free(assignments, locations)[0]),
            headers={"Idempotency-Key": "slot-new"},
        )
        assert r.status_code == 201
        assert new in _state(wms)[0]


def test_a_restarted_wms_keeps_its_moves_and_answers(tmp_path):
    journal = str(tmp_path / "wms_state.jsonl")
    with wms_client(state_path=journal) as wms:
        assignments, locations = _state(wms)
        sku, frm = next(iter(assignments.items()))
        to = _free(assignments, locations)[0]
        body = _directive(sku, frm, to)
        first = wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": body["directive_id"]})
        assert first.status_code == 201
    with wms_client(state_path=journal) as wms:
        after, _ = _state(wms)
        assert after[sku] == to
        again = wms.post("/v1/slotting/directives", json=body, headers={"Idempotency-Key": body["directive_id"]})
        assert again.status_code == 200 and again.json()["ack_id"] == first.json()["ack_id"]
        nxt = _directive(sku, to, _free(after, locations)[0])
        assert wms.post("/v1/slotting/directives", json=nxt, headers={"Idempotency-Key": nxt["directive_id"]}).json()[
            "ack_id"
        ] != first.json()["ack_id"]
