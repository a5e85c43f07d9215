"""Backpressure: while the WMS does not answer, the exception service stops reading the ERP once
its queue of directives is full, so memory stays bounded and the ERP keeps what is not read yet;
when the WMS answers again everything is delivered, each directive once."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from velocity_platform.connectors import delta_store
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.deltas.helpers import FAST_HTTP, ServiceThread, Upstreams, service_settings, wait_until
from velocity_platform.simulators.serve import free_port

pytestmark = pytest.mark.integration

# How long the test watches the read watermark stand still while the intake is blocked.
OBSERVED_S = 1.0


def committed_at(document: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(document["created_at"].replace("Z", "+00:00"))


def gauge(port: int, name: str, warehouse: str = "WH-01") -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    sample = f'{name}{{warehouse="{warehouse}"}} '  # every metric is labelled by site
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(sample))


def test_a_wms_that_stops_answering_stops_the_reading_and_nothing_is_lost(tmp_path):
    with platform_environment(tmp_path, ErpConfig(**WORLD, token=ERP_TOKEN), WmsConfig(**WORLD, token=WMS_TOKEN)) as platform:
        upstreams = Upstreams(platform.erp_url, platform.wms_url, ERP_TOKEN, WMS_TOKEN)
        wms = platform.wms_app.state.simulator
        new = [f"NEW-BP-{i}" for i in range(4)]
        for sku in new:
            upstreams.register_sku(sku)
        port = free_port()
        # One request in flight and one batch queued at most; a client that waits for the WMS
        # longer than this test holds it.
        config = service_settings(metrics_port=port, queue_batches=1, push_concurrency=1)
        with ServiceThread(config, http={**FAST_HTTP, "timeout_s": 120.0}) as service:
            wms.hold_directives()
            try:
                # The first new SKU's first slot is posted and held by the WMS.
                upstreams.commit([(new[0], 1, "EA")])
                wait_until(lambda: upstreams.wms_stats()["held_requests"] == 1, "the first slot to wait at the WMS")
                # The second waits in the queue, which is then full; the third is read and
                # recorded, and the intake waits to queue it: a put waiting on a full queue.
                second = upstreams.commit([(new[1], 1, "EA")])
                wait_until(lambda: delta_store.read_watermark(service.store) >= committed_at(second), "the second read")
                third = upstreams.commit([(new[2], 1, "EA")])
                wait_until(lambda: delta_store.read_watermark(service.store) >= committed_at(third), "the third read")
                wait_until(lambda: gauge(port, "delta_queue_batches") == 2.0, "the intake to wait on the full queue")
                # The fourth is committed while the intake waits: it stays in the ERP, unread.
                fourth = upstreams.commit([(new[3], 1, "EA")])
                watched_until = time.monotonic() + OBSERVED_S
                while time.monotonic() < watched_until:
                    assert delta_store.read_watermark(service.store) < committed_at(fourth), "read past a full queue"
                    time.sleep(0.05)  # an observation window for a negative, not synchronisation
                assert upstreams.wms_stats()["applied"] == 0
            finally:
                wms.answer_directives()
            # The WMS answers again: reading resumes and every first slot lands, once.
            for sku in new:
                wait_until(lambda sku=sku: upstreams.assignment(sku)["location_id"], f"{sku} to be slotted")
            wait_until(lambda: delta_store.read_watermark(service.store) >= committed_at(fourth), "the fourth read")
            applied = upstreams.wms_stats()["applied_per_key"]
            keys = [r.directive_id for r in service.store.outbox() if r.sku_id in new]
            assert len(keys) == 4 and [applied[k] for k in keys] == [1] * 4
        upstreams.close()
