"""Driving the exception service against live simulators: commits, waiting for conditions, the service in a thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from velocity_platform.connectors.state import OperationalStore
from velocity_platform.defs.resources import ErpResource, WmsResource
from velocity_platform.deltas.service import DeltaService
from velocity_platform.settings import DeltaServiceSettings, Settings

# Short client budgets: a failing WMS opens its breaker after three attempts and is tried again
# half a second later, so the tests see an outage and its end in a second or two.
FAST_HTTP = {
    "timeout_s": 5.0,
    "max_attempts": 3,
    "initial_backoff_s": 0.01,
    "max_backoff_s": 0.05,
    "breaker_fail_max": 3,
    "breaker_reset_s": 0.5,
    "requests_per_second": 0,
}
FAST_HTTP_ENV = {
    "VELOCITY_HTTP_TIMEOUT_S": "5",
    "VELOCITY_HTTP_MAX_ATTEMPTS": "3",
    "VELOCITY_HTTP_BACKOFF_S": "0.01",
    "VELOCITY_HTTP_MAX_BACKOFF_S": "0.05",
    "VELOCITY_HTTP_BREAKER_FAIL_MAX": "3",
    "VELOCITY_HTTP_BREAKER_RESET_S": "0.5",
}


def service_settings(**overrides) -> DeltaServiceSettings:
    values = {
        "metrics_port": 0,
        "long_poll_s": 2.0,
        "min_interval_s": 0.005,
        "max_interval_s": 0.2,
        "max_pages": 20,
        "queue_batches": 4,
        "push_concurrency": 2,
        "requests_per_second": 0.0,
        "report_interval_s": 3600.0,
        "reference_refresh_s": 3600.0,
        "spike_multiple": 30.0,
        "spike_min_units": 500.0,
        "spike_min_days_sold": 5,
        "start": None,
    }
    return DeltaServiceSettings(**{**values, **overrides})


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> object:
    """Poll `condition` until it returns something truthy; fail naming `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Upstreams:
    """HTTP clients of the two simulators, as a user (or the ERP's own users) would drive them."""

    erp_url: str
    wms_url: str
    erp_token: str
    wms_token: str
    _counter: int = 0
    committed: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.erp = httpx.Client(base_url=self.erp_url, headers={"Authorization": f"Bearer {self.erp_token}"}, timeout=10)
        self.wms = httpx.Client(base_url=self.wms_url, headers={"Authorization": f"Bearer {self.wms_token}"}, timeout=10)

    def register_sku(self, sku_id: str, **fields) -> None:
        """A new product: in the ERP's SKU master and, through the item interface, the WMS's."""
        self.erp.post("/v1/skus", json={"sku_id": sku_id, **fields}).raise_for_status()
        self.wms.post("/v1/items", json={"sku_id": sku_id}).raise_for_status()

    def commit(self, lines: list[tuple], *, event_ts: dt.datetime | None = None, txn_type: str = "ORDER") -> dict:
        """Commit one order document of (sku_id, quantity, uom) lines; returns it with created_at."""
        self._counter += 1
        document = {
            "txn_id": f"SO-LIVE-{self._counter:06d}-{time.monotonic_ns() % 10**6}",
            "txn_type": txn_type,
            "customer_id": "C-0001",
            "event_ts": (event_ts or dt.datetime.now(dt.UTC)).isoformat(),
            "lines": [
                {"line_no": n, "sku_id": sku, "quantity": quantity, "uom": uom}
                for n, (sku, quantity, uom) in enumerate(lines, start=1)
            ],
        }
        answer = self.erp.post("/v1/transactions", json=document)
        answer.raise_for_status()
        self.committed.append(answer.json())
        return answer.json()

    def assignment(self, sku_id: str) -> dict:
        return self.wms.get("/v1/slotting/assignments", params={"sku_id": sku_id}).json()["records"][0]

    def wms_stats(self) -> dict:
        return self.wms.get("/v1/stats").json()

    def close(self) -> None:
        self.erp.close()
        self.wms.close()


class ServiceThread:
    """A DeltaService on its own event loop in a thread (the command runs the same `run`)."""

    def __init__(self, config: DeltaServiceSettings, http: dict | None = None):
        settings = Settings.from_env()
        import os

        http = http or FAST_HTTP
        self.store = OperationalStore(settings.store_url)
        self.service = DeltaService(
            settings,
            config,
            ErpResource(base_url=settings.erp_url, token=os.environ["VELOCITY_ERP_TOKEN"], **http),
            WmsResource(base_url=settings.wms_url, token=os.environ["VELOCITY_WMS_TOKEN"], **http),
            self.store,
        )
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await self.service.run(self._stop, lambda _: self.ready.set())

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001  # surfaced by stop()
            self.error = exc
            self.ready.set()

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        assert self.ready.wait(60), "the service did not get ready"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.store.dispose()
        if self.error:
            raise self.error


def follower(start: dt.datetime, **overrides) -> DeltaService:
    """A DeltaService that is only asked to catch up (`catch_up`): the ERP follower the delta
    sensor's records come from, without its pushers."""
    import os

    settings = Settings.from_env()
    return DeltaService(
        settings,
        service_settings(start=start, **overrides),
        ErpResource(base_url=settings.erp_url, token=os.environ["VELOCITY_ERP_TOKEN"], **FAST_HTTP),
        WmsResource(base_url=settings.wms_url, token=os.environ["VELOCITY_WMS_TOKEN"], **FAST_HTTP),
        OperationalStore(settings.store_url),
    )


def catch_up(service: DeltaService) -> int:
    return asyncio.run(service.catch_up())
