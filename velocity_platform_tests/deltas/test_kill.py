"""`kill -9` of `velocity-platform deltas` while orders flow, then a restart: nothing lost, nothing
sent twice.

Orders keep being committed while the service runs, is killed (SIGKILL: no clean-up of any
kind) in the middle of its pushes, and is started again. Until the kill the WMS drops every answer
after committing the move, so the directives it applied have their acknowledgement lost, which is
the case where the restarted service's resend must be a replay. In the end every new SKU ordered has exactly one first
slot applied by the WMS, every key was applied once, and the outbox holds each exception once,
acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from velocity_platform.connectors import delta_store
from velocity_platform.connectors.state import ACKED, OperationalStore
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.deltas.helpers import FAST_HTTP_ENV, Upstreams, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

NEW_SKUS = 60
COMMAND = [str(Path(sys.executable).parent / "velocity-platform"), "deltas"]


def start_service(env: dict) -> subprocess.Popen:
    process = subprocess.Popen(COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:  # the ready line says it follows the ERP
        if "deltas: ready" in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process
    raise AssertionError(f"velocity-platform deltas exited with {process.wait()} before its ready line")


def test_a_service_killed_mid_push_and_restarted_loses_nothing_and_sends_nothing_twice(tmp_path):
    wms_config = WmsConfig(**WORLD, token=WMS_TOKEN, fault_rate_commit_then_drop=1.0)
    with platform_environment(tmp_path, ErpConfig(**WORLD, token=ERP_TOKEN), wms_config) as platform:
        env = {
            **os.environ,
            **FAST_HTTP_ENV,
            "VELOCITY_DELTAS_METRICS_PORT": "0",
            "VELOCITY_DELTAS_LONG_POLL_S": "1",
            "VELOCITY_DELTAS_REPORT_INTERVAL_S": "3600",
            "VELOCITY_STATE_DIR": str(tmp_path),
        }
        env.pop("DAGSTER_HOME")  # no runless events: the reporting is tested elsewhere
        upstreams = Upstreams(platform.erp_url, platform.wms_url, ERP_TOKEN, WMS_TOKEN)
        skus = [f"NEW-KILL-{n:03d}" for n in range(NEW_SKUS)]
        for sku in skus:
            upstreams.register_sku(sku)

        service = start_service(env)
        half = NEW_SKUS // 2
        committing = threading.Thread(
            target=lambda: [upstreams.commit([(sku, 1, "EA"), ("SKU-000001", 2, "EA")]) for sku in skus[:half]]
        )
        committing.start()
        # Killed once the WMS has applied some of them and before it has applied them all.
        wait_until(lambda: platform.wms_app.state.simulator.stats()["applied"] >= 5, "the first first slots applied")
        service.send_signal(signal.SIGKILL)
        service.wait()
        at_kill = platform.wms_app.state.simulator.stats()
        killed_at = at_kill["applied"]
        # The WMS answers again: what the restarted service resends of the applied ones is replayed.
        platform.wms_app.state.simulator.config.fault_rate_commit_then_drop = 0.0
        committing.join()
        for sku in skus[half:]:  # committed while the service is down: they wait in the ERP
            upstreams.commit([(sku, 1, "EA")])
        assert killed_at < NEW_SKUS

        service = start_service(env)
        try:
            wait_until(
                lambda: all(platform.wms_app.state.simulator.assignment_of(s)["records"][0]["location_id"] for s in skus),
                "every new SKU to be slotted after the restart",
            )
            store = OperationalStore(platform.settings.store_url)
            wait_until(lambda: delta_store.pending_count(store) == 0, "the outbox to settle")
        finally:
            service.send_signal(signal.SIGTERM)
            assert service.wait(30) == 0  # a clean stop

        stats = platform.wms_app.state.simulator.stats()
        rows = [r for r in store.outbox() if r.origin == delta_store.ORIGIN]
        assert sorted(r.sku_id for r in rows) == skus  # each exception once in the outbox
        assert {r.status for r in rows} == {ACKED}
        assert {k: v for k, v in stats["applied_per_key"].items() if v != 1} == {}  # nothing applied twice
        assert sorted(stats["applied_per_key"]) == sorted(r.directive_id for r in rows)
        assert stats["rejected"] == 0  # no second directive for a SKU already slotted
        # Every directive applied before the kill lost its answer: each was resent, and replayed.
        assert stats["replayed"] - at_kill["replayed"] >= killed_at
        # Every line was read once: no dead letters, and the watermark is at the last commit.
        assert delta_store.dead_letters(store) == []
        last = max(d["created_at"] for d in upstreams.committed)
        assert delta_store.read_watermark(store).isoformat().replace("+00:00", "Z") == last
        store.dispose()
        upstreams.close()
