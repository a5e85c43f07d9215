"""The guarded HTTP client against the simulators over loopback: retries, limits, breaker, caps."""

import datetime as dt
import threading
import time

import httpx
import pytest

from velocity_platform.connectors.erp import ErpClient, next_cursor
from velocity_platform.connectors.http import (
    CircuitOpen,
    ResponseTooLarge,
    RetryPolicy,
    UpstreamClient,
    UpstreamError,
    UpstreamLimits,
    reset_guards,
)
from velocity_platform.connectors.wms import WmsClient
from velocity_platform_tests.simulators.conftest import erp_client, wms_client

DAY = dt.date(2026, 1, 7)
FAST = RetryPolicy(max_attempts=4, initial_wait_s=0.001, max_wait_s=0.01, max_retry_after_s=30.0)


@pytest.fixture(autouse=True)
def fresh_guards():
    reset_guards()
    yield
    reset_guards()


def erp(sim_client, **kwargs) -> ErpClient:
    return ErpClient(str(sim_client.base_url), sim_client.app.state.simulator.config.token, **{"retry": FAST, **kwargs})


def sim(sim_client):
    return sim_client.app.state.simulator


def test_retry_after_is_honoured_and_bounded_attempts_end_in_a_clear_error():
    waits: list[float] = []
    with erp_client(fault_rate_429=1.0, retry_after_seconds=7) as raw:
        client = erp(raw)
        client._http._sleep = waits.append  # observe the waits instead of spending them
        with pytest.raises(UpstreamError) as failed:
            client.count_lines(DAY)
        assert failed.value.status == 429 and "still failing after 4 attempts" in str(failed.value)
        assert waits == [7.0, 7.0, 7.0]  # the upstream's Retry-After, not our backoff
        assert client.stats.requests == 4 and client.stats.reasons == {"HTTP 429": 3}
        # A Retry-After beyond what we accept is capped.
        capped: list[float] = []
        client = erp(raw, retry=RetryPolicy(max_attempts=2, max_retry_after_s=2.5))
        client._http._sleep = capped.append
        with pytest.raises(UpstreamError):
            client.count_lines(DAY)
        assert capped == [2.5]


def test_backoff_is_exponential_with_jitter_and_capped():
    waits: list[float] = []
    with erp_client(fault_rate_5xx=1.0) as raw:
        client = erp(raw, retry=RetryPolicy(max_attempts=8, initial_wait_s=0.1, max_wait_s=1.0))
        client._http._sleep = waits.append
        with pytest.raises(UpstreamError):
            client.count_lines(DAY)
    assert len(waits) == 7 and all(0 <= w <= 1.0 for w in waits)
    # Full jitter: each wait is random in [0, 0.1 * 2^n], so they are not one fixed schedule.
    assert len(set(waits)) > 1


def test_final_answers_are_not_retried():
    with erp_client() as raw:
        client = erp(raw)
        with pytest.raises(UpstreamError) as bad:
            client._get("/v1/transactions/count", {"business_date": "not-a-date"})
        assert bad.value.status == 400 and client.stats.requests == 1 and client.stats.retries == 0
        assert "business_date must be YYYY-MM-DD" in str(bad.value)


def test_a_post_without_an_idempotency_key_is_not_retried_after_it_may_have_landed():
    with wms_client(fault_rate_commit_then_drop=1.0) as raw:
        client = UpstreamClient("WMS", str(raw.base_url), sim(raw).config.token, retry=FAST)
        with pytest.raises(UpstreamError, match="not retried"):
            client.request("POST", "/v1/slotting/directives", content=b"{}", headers={"Idempotency-Key": "k"})
        assert client.stats.requests == 1
        # Declared idempotent (it carries a key), the same POST is retried up to the budget.
        with pytest.raises(UpstreamError, match="still failing after 4 attempt"):
            client.request(
                "POST", "/v1/slotting/directives", content=b"{}", headers={"Idempotency-Key": "k"}, idempotent=True
            )
        assert client.stats.requests == 1 + 4


def test_the_breaker_opens_fails_fast_and_closes_after_the_cool_down():
    limits = UpstreamLimits(breaker_fail_max=3, breaker_reset_s=0.3)
    with erp_client(fault_rate_5xx=1.0) as raw:
        client = erp(raw, limits=limits, retry=RetryPolicy(max_attempts=2, initial_wait_s=0.001, max_wait_s=0.001))
        with pytest.raises(UpstreamError):
            client.count_lines(DAY)  # two failed attempts
        with pytest.raises(CircuitOpen, match="circuit breaker open after 3 consecutive failed requests"):
            client.count_lines(DAY)  # the third trips it
        served = sum(int(n) for n in sim(raw).stats()["requests"]["transactions_count"].values())
        with pytest.raises(CircuitOpen, match="not calling ERP until"):
            client.count_lines(DAY)
        assert sum(int(n) for n in sim(raw).stats()["requests"]["transactions_count"].values()) == served, "failed fast"
        # Another client of the same upstream shares the breaker (the next asset fails fast too).
        with pytest.raises(CircuitOpen):
            erp(raw, limits=limits).skus()
        sim(raw).config.fault_rate_5xx = 0.0  # the ERP recovers
        deadline = time.monotonic() + 10
        while True:  # poll until the cool-down has passed and the trial request closes the breaker
            try:
                assert client.count_lines(DAY) > 0
                break
            except CircuitOpen:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert client._http.guard.breaker.current_state == "closed"


def test_the_request_ceiling_and_the_concurrency_bound_hold_across_clients():
    limits = UpstreamLimits(requests_per_second=4, max_concurrent_requests=2)
    with erp_client(fault_rate_slow=1.0, slow_seconds=0.15) as raw:
        errors: list[BaseException] = []

        def pull():
            try:
                with erp(raw, limits=limits) as client:
                    for _ in range(3):
                        client.count_lines(DAY)
            except BaseException as exc:  # noqa: BLE001  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=pull) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        load = sim(raw).stats()["load"]
        assert load["peak_in_flight"] <= 2
        # Without the ceiling these 12 slow requests two at a time come at ~13 a second; with it at
        # most 4 start per second (one more allowed for loopback scheduling jitter at the window's edge).
        assert load["peak_per_second"] <= 4 + 1
        assert sum(int(n) for n in sim(raw).stats()["requests"]["transactions_count"].values()) == 12


def test_a_response_over_the_cap_is_refused_without_reading_it_all():
    with erp_client() as raw:
        client = erp(raw, max_response_bytes=10_000, page_limit=500)
        with pytest.raises(ResponseTooLarge, match="more than 10,000 bytes"):
            list(client.transaction_pages(DAY, "Europe/London"))
        assert client.stats.retries == 0


def test_requests_never_leave_the_configured_origin():
    with erp_client() as raw:
        client = erp(raw)
        with pytest.raises(UpstreamError, match="another origin"):
            client._http.request("GET", "http://127.0.0.2:9/v1/skus")
        assert client._http._http.follow_redirects is False


def test_a_redirect_is_an_error_that_names_the_fix():
    from velocity_platform.connectors.http import HttpAnswer

    with erp_client() as raw:
        client = erp(raw)
        answer = HttpAnswer(302, httpx.Headers({"Location": "https://elsewhere.example/"}), b"", "/v1/skus")
        with pytest.raises(UpstreamError, match="redirects are not followed") as redirected:
            client._http.raise_for_final_status(answer, "GET /v1/skus")
        assert "elsewhere" not in str(redirected.value)


def test_next_cursor_tells_a_last_page_from_a_truncated_one():
    assert next_cursor(b'{"records":[],"next_cursor":null}') == (True, None)
    assert next_cursor(b'{"records":[{"a":1}],"next_cursor":"abc"}') == (True, "abc")
    assert next_cursor(b'{"records":[{"a":1}],"next_cu') == (False, None)
    assert next_cursor(b'{"records":[{"a":1}],"next_cursor":"ab') == (False, None)
    assert next_cursor(b'{"next_cursor":"x","records":[]}') == (True, "x")


def test_a_page_truncated_on_every_fetch_fails_the_pull_instead_of_ending_it_early():
    with erp_client(fault_rate_bad_json=1.0) as raw:
        client = erp(raw)
        with pytest.raises(UpstreamError, match="carries no cursor to continue from"):
            list(client.transaction_pages(DAY, "Europe/London"))


def test_the_wms_client_acknowledges_a_replay_after_a_lost_answer():
    with wms_client(fault_rate_commit_then_drop=0.5) as raw:
        a = raw.get("/v1/slotting/assignments", params={"limit": 1}).json()["records"][0]
        s = sim(raw)
        free = next(loc for i, loc in enumerate(s.location_ids) if s.sku_of_loc[i] < 0)
        client = WmsClient(str(raw.base_url), s.config.token, retry=FAST)
        outcome = client.push_directive(
            {
                "directive_id": "D-1",
                "business_date": "2026-01-30",
                "sku_id": a["sku_id"],
                "from_location": a["location_id"],
                "to_location": free,
                "reason": "C->A",
                "expected_saving_m_per_day": 1.0,
            }
        )
        assert outcome.status in ("applied", "replayed") and outcome.ack_id
        assert s.stats()["applied_per_key"] == {"D-1": 1}
