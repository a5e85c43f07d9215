"""The async clients of the exception service use the batch's policy objects and the same
per-upstream guard: one breaker and one rate limiter whether a request is sync or awaited."""

import asyncio
import datetime as dt

import pytest

from velocity_platform.connectors.erp import AsyncErpClient, ErpClient
from velocity_platform.connectors.erp_pages import read_erp_page
from velocity_platform.connectors.http import CircuitOpen, RetryPolicy, UpstreamError, UpstreamLimits, reset_guards
from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.serve import BackgroundServer

WORLD = {"seed": 5, "skus": 40, "start": dt.date(2025, 1, 1), "days": 2}
LIMITS = UpstreamLimits(requests_per_second=0, max_concurrent_requests=2, breaker_fail_max=3, breaker_reset_s=60)


@pytest.fixture
def failing_erp():
    reset_guards()
    app = create_erp_app(ErpConfig(**WORLD, token="t", fault_rate_5xx=1.0))
    with BackgroundServer(app) as server:
        yield server.url, app.state.simulator
    reset_guards()


def test_failures_seen_by_the_async_client_open_the_breaker_the_sync_client_obeys(failing_erp):
    url, simulator = failing_erp
    waits: list[float] = []

    async def record_wait(seconds: float) -> None:
        waits.append(seconds)

    retry = RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.02)
    client = AsyncErpClient(url, "t", retry=retry, limits=LIMITS)
    client._http._async_sleep = record_wait  # observe the backoff instead of spending it

    async def read() -> None:
        try:
            await client.committed_since(dt.datetime(2025, 1, 1, tzinfo=dt.UTC), read_erp_page)
        finally:
            await client.aclose()

    with pytest.raises(UpstreamError) as failed:
        asyncio.run(read())
    assert isinstance(failed.value, CircuitOpen)  # the third 5xx tripped it
    assert len(waits) == 2 and all(0 <= w <= 0.02 for w in waits)  # jittered backoff between the attempts
    def requests_seen() -> int:
        return sum(int(n) for endpoint in simulator.stats()["requests"].values() for n in endpoint.values())

    before = requests_seen()
    assert before == 3

    simulator.config.fault_rate_5xx = 0.0  # the ERP is well again, but the breaker is open for 60 s
    with ErpClient(url, "t", retry=retry, limits=LIMITS) as sync_client, pytest.raises(CircuitOpen):
        sync_client.count_lines(dt.date(2025, 1, 1))
    assert requests_seen() == before  # the ERP was not called
    assert client.guard is sync_client._http.guard
