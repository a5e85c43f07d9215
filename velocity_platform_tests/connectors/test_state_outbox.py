"""Pushing the outbox to the WMS simulator over loopback, with two pushers at once, on both stores."""

import datetime as dt
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import orjson
import pytest

from velocity_platform.connectors.http import RetryPolicy, UpstreamLimits, reset_guards
from velocity_platform.connectors.outbox import ACKED_WATERMARK, push_pending
from velocity_platform.connectors.state import OperationalStore, holder_is_gone, new_pusher_id
from velocity_platform.connectors.wms import WmsClient
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform.simulators.wms import WmsConfig, create_wms_app
from velocity_platform_tests.production.postgres import fresh_database

DAY = dt.date(2026, 2, 5)
WORLD = {"seed": 5, "skus": 300, "start": dt.date(2026, 1, 1), "days": 40}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'operational.sqlite'}"
        return
    with fresh_database("outbox") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def wms() -> Iterator[tuple[BackgroundServer, WmsConfig]]:
    config = WmsConfig(**WORLD, token="wms-outbox-token")
    with BackgroundServer(create_wms_app(config)) as server:
        yield server, config


def wms_client(wms, **kw) -> WmsClient:
    server, config = wms
    return WmsClient(server.url, config.token, **kw)


def planned_moves(wms, n: int) -> list[dict]:
    """n moves the WMS will accept in any order: distinct slotted SKUs, each to its own free location."""
    with wms_client(wms) as client:
        assignments, locations = client.assignments(), client.locations()
    occupied = {a["location_id"] for a in assignments}
    free = [loc["location_id"] for loc in locations if loc["location_id"] not in occupied]
    assert len(free) >= n, "the simulated layout should have room for the moves"
    moves = []
    for a, to in zip(assignments[:n], free[:n]):
        directive_id = hashlib.md5(f"{DAY}|{a['sku_id']}|{a['location_id']}|{to}".encode()).hexdigest()
        body = {
            "directive_id": directive_id,
            "business_date": DAY.isoformat(),
            "sku_id": a["sku_id"],
            "from_location": a["location_id"],
            "to_location": to,
            "reason": "test move",
            "expected_saving_m_per_day": 1.5,
        }
        moves.append({**body, "business_date": DAY, "payload": orjson.dumps(body).decode()})
    return moves


def wms_stats(wms) -> dict:
    server, config = wms
    return httpx.get(f"{server.url}/v1/stats", headers={"Authorization": f"Bearer {config.token}"}).json()


class MeetsTheOtherPusherFirst:
    """A WMS client that holds its first request until the other pusher has claimed a batch too.

    Without it one pusher can claim and send everything before the other's first claim lands (on
    SQLite the second waits on the write lock), and the test would prove nothing about two at once.
    """

    def __init__(self, client: WmsClient, both_hold_a_claim: threading.Barrier):
        self._client, self._barrier, self._met = client, both_hold_a_claim, False

    def push_directives(self, directives: list[dict]):
        if not self._met:
            self._barrier.wait(timeout=60)
            self._met = True
        return self._client.push_directives(directives)


def test_two_pushers_at_once_deliver_every_directive_exactly_once(store_url, wms):
    moves = planned_moves(wms, 80)
    ids = {m["directive_id"] for m in moves}
    OperationalStore(store_url).enqueue(moves)

    start, both_hold_a_claim = threading.Barrier(2), threading.Barrier(2)
    reports, errors = {}, []

    def pusher(name: str) -> None:
        # Each pusher has its own engine and HTTP client, as two runs on two machines would.
        store = OperationalStore(store_url)
        try:
            with wms_client(wms) as client:
                start.wait()
                meeting = MeetsTheOtherPusherFirst(client, both_hold_a_claim)
                reports[name] = push_pending(store, meeting, DAY, pusher=name, batch_size=4)
        except BaseException as exc:  # noqa: BLE001  # asserted below
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=pusher, args=(name,)) for name in ("pusher-a", "pusher-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []

    a, b = reports["pusher-a"], reports["pusher-b"]
    assert a.sent and b.sent, "both pushers should have taken a share"
    assert set(a.sent).isdisjoint(b.sent) and set(a.sent) | set(b.sent) == ids
    assert a.acked + b.acked == len(ids) and not (a.failures or b.failures or a.held_elsewhere or b.held_elsewhere)

    stats = wms_stats(wms)
    assert stats["received"] == len(ids)  # one POST per directive, none repeated
    assert stats["applied_per_key"] == {i: 1 for i in ids}

    store = OperationalStore(store_url)
    log = store.push_log_entries()
    assert Counter(e.directive_id for e in log) == Counter(ids)
    assert {e.directive_id for e in log if e.pusher == "pusher-a"} == set(a.sent)
    assert {r.status for r in store.outbox(DAY)} == {"acked"}
    assert store.get_watermark(ACKED_WATERMARK) == DAY.isoformat()


def test_a_failed_send_stays_pending_and_the_next_push_resends_it_under_the_same_key(store_url, wms):
    moves = planned_moves(wms, 3)
    store = OperationalStore(store_url)
    store.enqueue(moves)
    _, config = wms
    impatient = RetryPolicy(max_attempts=1, initial_wait_s=0.01)
    with WmsClient("http://127.0.0.1:9", config.token, timeout_s=2, retry=impatient) as nowhere:
        first = push_pending(store, nowhere, DAY, pusher="first")
    assert sorted(first.sent) == sorted(m["directive_id"] for m in moves)
    assert len(first.failures) == 3 and first.acked == 0
    assert all(m["directive_id"] in " ".join(first.failures) for m in moves)
    assert {(r.status, r.attempts, r.claimed_until) for r in store.outbox(DAY)} == {("pending", 1, None)}

    with wms_client(wms) as client:
        second = push_pending(store, client, DAY, pusher="second")
    assert second.acked == 3 and not second.failures
    assert wms_stats(wms)["applied_per_key"] == {m["directive_id"]: 1 for m in moves}


def test_rows_of_a_pusher_that_died_are_taken_over_when_its_lease_lapses(store_url, wms):
    moves = planned_moves(wms, 5)
    store = OperationalStore(store_url)
    store.enqueue(moves)
    # A pusher claimed everything and died before sending anything.
    held = store.claim_pending(DAY, claimer="dead-pusher", lease=dt.timedelta(seconds=1))
    assert len(held) == 5

    with wms_client(wms) as client:
        gave_up = push_pending(store, client, DAY, pusher="impatient", wait_for_others=dt.timedelta(0))
        assert gave_up.sent == [] and gave_up.held_elsewhere == 5
        # Waiting a little longer than the dead pusher's lease: the rows become claimable.
        took_over = push_pending(store, client, DAY, pusher="survivor", poll_s=0.05)
    assert sorted(took_over.sent) == sorted(m["directive_id"] for m in moves) and took_over.acked == 5
    assert {e.pusher for e in store.push_log_entries()} == {"survivor"}
    assert wms_stats(wms)["received"] == 5


def a_dead_process_id() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_pusher_gone_from_this_host_has_its_rows_taken_over_without_waiting_its_lease(store_url, wms):
    # A run killed mid-push (kill -9): its claims carry a long lease that nobody will renew.
    moves = planned_moves(wms, 5)
    store = OperationalStore(store_url)
    store.enqueue(moves)
    killed = f"run 1234@{socket.gethostname()}:{a_dead_process_id()}:0badf00d"
    assert holder_is_gone(killed)
    store.claim_pending(DAY, 3, claimer=killed, lease=dt.timedelta(minutes=5))
    said: list[str] = []
    with wms_client(wms) as client:
        rerun = push_pending(store, client, DAY, pusher="re-run", wait_for_others=dt.timedelta(0), say=said.append)
    assert rerun.held_elsewhere == 0 and rerun.acked == 5 and wms_stats(wms)["received"] == 5
    assert any(f"took over 3 directives of {DAY} at once" in line and killed in line for line in said), said


def test_one_sites_leases_are_neither_waited_for_nor_taken_over_by_another_site(store_url, wms):
    # Two sites' nights of the same date in one store: each sees and ends only its own claims.
    store = OperationalStore(store_url)
    chicago, berlin = store.for_site("CHI"), store.for_site("BER")
    moves = planned_moves(wms, 4)
    chicago.enqueue(moves[:2])
    berlin.enqueue(moves[2:])
    chicago.claim_pending(DAY, 2, claimer="chi-pusher", lease=dt.timedelta(minutes=5))
    berlin.claim_pending(DAY, 2, claimer="ber-pusher", lease=dt.timedelta(minutes=5))
    assert [h.claimer for h in chicago.holders(DAY)] == ["chi-pusher"]
    assert [h.claimer for h in berlin.holders(DAY)] == ["ber-pusher"]
    assert berlin.take_over(DAY, ["chi-pusher", "ber-pusher"]) == 2
    assert [h.claimer for h in chicago.holders(DAY)] == ["chi-pusher"] and berlin.holders(DAY) == []
    store.dispose()


def test_a_living_pusher_or_one_elsewhere_is_waited_for_and_the_wait_says_for_whom_and_until_when(store_url, wms):
    moves = planned_moves(wms, 4)
    store = OperationalStore(store_url)
    store.enqueue(moves)
    alive_here = f"run 1@{socket.gethostname()}:{os.getppid()}:0badf00d"
    elsewhere = f"run 2@another-host-{socket.gethostname()}:{a_dead_process_id()}:0badf00d"
    assert not holder_is_gone(alive_here) and not holder_is_gone(elsewhere) and not holder_is_gone("dead-pusher")
    store.claim_pending(DAY, 2, claimer=alive_here, lease=dt.timedelta(minutes=5))
    store.claim_pending(DAY, 2, claimer=elsewhere, lease=dt.timedelta(minutes=5))
    said: list[str] = []
    with wms_client(wms) as client:
        waited = push_pending(store, client, DAY, pusher="re-run", wait_for_others=dt.timedelta(seconds=0.2), poll_s=0.05, say=said.append)
    assert waited.sent == [] and waited.held_elsewhere == 4 and wms_stats(wms)["received"] == 0
    assert len(said) == 1, said  # said once, not at every poll
    until = max(h.until for h in store.holders(DAY))
    assert f"waiting for 4 directives of {DAY}" in said[0] and alive_here in said[0] and elsewhere in said[0]
    assert f"until {until:%H:%M:%S} UTC" in said[0] and "giving up at" in said[0]


class SlowWms:
    """A WMS whose first answer takes until the pusher's lease would have lapsed twice over; while
    it waits, another pusher tries to claim the day."""

    def __init__(self, client: WmsClient, store: OperationalStore, lease: dt.timedelta):
        self._client, self._store, self._lease = client, store, lease
        self.claimed_by_other: list | None = None

    def push_directives(self, directives: list[dict]):
        if self.claimed_by_other is None:
            first = min(h.until for h in self._store.holders(DAY))
            deadline = time.monotonic() + 30
            # Polling for a state, not sleeping for it: the heartbeat must move the lease on.
            while self._store.holders(DAY) and min(h.until for h in self._store.holders(DAY)) < first + 2 * self._lease:
                assert time.monotonic() < deadline, "the pusher's lease was never renewed while its request ran"
                time.sleep(0.02)
            self.claimed_by_other = self._store.claim_pending(DAY, claimer="other")
        return self._client.push_directives(directives)


def test_a_short_lease_is_renewed_by_heartbeat_while_a_slow_request_runs(store_url, wms):
    moves = planned_moves(wms, 3)
    store = OperationalStore(store_url)
    store.enqueue(moves)
    lease = dt.timedelta(seconds=0.3)
    with wms_client(wms) as client:
        slow = SlowWms(client, store, lease)
        report = push_pending(store, slow, DAY, pusher=new_pusher_id(), lease=lease)
    assert slow.claimed_by_other == [], "another pusher took rows whose pusher was alive"
    assert report.acked == 3 and wms_stats(wms)["received"] == 3


class OneByOne:
    """A WMS client that can only POST directives one at a time (no batch endpoint)."""

    def __init__(self, client: WmsClient) -> None:
        self.push_directive = client.push_directive


@pytest.mark.parametrize("requests", ["batch", "one-by-one"])
def test_an_open_wms_circuit_stops_the_push_and_the_rest_go_with_the_next_run_at_once(store_url, wms, requests):
    moves = planned_moves(wms, 6)
    store = OperationalStore(store_url)
    store.enqueue(moves)
    down = WmsConfig(**WORLD, token=wms[1].token, fault_rate_5xx=1.0)
    trips_fast = UpstreamLimits(breaker_fail_max=2, breaker_reset_s=60)
    quick = RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.02)
    try:
        with BackgroundServer(create_wms_app(down)) as broken, WmsClient(
            broken.url, down.token, retry=quick, limits=trips_fast
        ) as client:
            pusher = client if requests == "batch" else OneByOne(client)
            report = push_pending(store, pusher, DAY, pusher="during-outage", batch_size=6)
    finally:
        reset_guards()  # the breaker is per process: do not leave it open for other tests
    first, *rest = sorted(m["directive_id"] for m in moves)
    if requests == "batch":  # one request carried all six: all six were attempted, none settled
        assert sorted(report.sent) == [first, *rest] and report.unsent == [] and report.still_pending == 6
    else:
        assert report.sent == [first] and sorted(report.unsent) == rest and report.still_pending == 6
    assert "circuit breaker open" in report.failures[0]
    # Released, not left leased: the next run does not wait for the lease to lapse.
    assert {(r.status, r.claimed_until) for r in store.outbox(DAY)} == {("pending", None)}
    with wms_client(wms) as client:
        after = push_pending(store, client, DAY, pusher="next-run", wait_for_others=dt.timedelta(0))
    assert after.acked == 6 and wms_stats(wms)["applied_per_key"] == {m["directive_id"]: 1 for m in moves}
