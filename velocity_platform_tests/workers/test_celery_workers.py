"""Runs on Celery workers: the nightly job of one partition spread over two `velocity-platform
worker` processes (RabbitMQ, PostgreSQL, the simulators, all real), and a worker killed with
kill -9 in the middle of the WMS push."""

import datetime as dt
import os
import statistics
import subprocess
import time

import dagster as dg
import pytest

from velocity_platform.connectors.state import OperationalStore
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform_tests.workers.cluster import (
    BIN,
    NightlyRun,
    celery_deployment,
    partition,
    step_succeeded,
    step_waits,
    step_workers,
    wait_for_workers,
)
from benchmarks.deployment import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.integration, pytest.mark.slow(minutes=0.8)]

RUN_DEADLINE_S = 240.0
PUSH_STEP = "wms_directive_acks"


@pytest.fixture
def deployment(tmp_path):
    """Each test its own instance, store, simulators and queue: a night's directives depend on what
    the WMS was sent before."""
    with celery_deployment(tmp_path, "celery") as deployment:
        yield deployment


def _acked(store_url: str, day: dt.date) -> list:
    store = OperationalStore(store_url, migrate=False)
    try:
        return [row for row in store.outbox(day) if row.status == "acked"]
    finally:
        store.dispose()


def test_a_night_runs_on_two_workers_and_reconciles(deployment):
    day = dt.date(2026, 2, 5)
    a, b = deployment.worker("north"), deployment.worker("south")
    wait_for_workers([a, b])
    run = NightlyRun(partition(day), deployment.root / "run.log").start()
    assert run.wait(RUN_DEADLINE_S) == dg.DagsterRunStatus.SUCCESS

    with dg.DagsterInstance.get() as instance:
        taken = step_workers(instance, run.run_id)
        waits = step_waits(instance, run.run_id)
        checks = [
            e.event_log_entry.dagster_event.asset_check_evaluation_data
            for e in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        ]
    print(f"steps by worker: { {n: sum(ws == [n] for ws in taken.values()) for n in (a.node, b.node)} }; "
          f"wait before a step: median {statistics.median(waits):.2f}s, max {max(waits):.2f}s over {len(waits)} steps")
    # Every step ran once, on one of the two, and both took steps.
    assert all(len(ws) == 1 for ws in taken.values()), taken
    assert {ws[0] for ws in taken.values()} == {a.node, b.node}
    assert {"raw_transactions", "sku_velocity", "slotting_directives", PUSH_STEP} <= set(taken)
    # The night reconciles: every line of the ERP's count arrived, every gate passed, and every
    # directive the night planned is acknowledged by the WMS, once.
    by_name = {c.check_name: c for c in checks}
    assert by_name["reconciles_with_erp"].passed and by_name["dlq_rate_within_limit"].passed
    assert by_name["every_directive_acknowledged"].passed
    acked = _acked(deployment.store_url, day)
    stats = deployment.platform.wms_stats()
    assert acked and stats["by_business_date"][day.isoformat()]["applied"] == len(acked)
    assert set(stats["applied_per_key"].values()) == {1}

    # The worker said what it serves, the broker's password masked (Celery's banner masks it too).
    assert f"Celery worker {a.node}: steps of velocity_platform from queue {deployment.queue!r}" in a.text()
    assert "guest:***@127.0.0.1" in a.text() and ":guest@" not in a.text()
    # SIGTERM is a clean stop: each worker exits 0, nothing running.
    assert [a.stop(), b.stop()] == [0, 0]
    print(f"{len(acked)} directives acknowledged")


def test_a_worker_killed_mid_push_leaves_the_step_to_the_other_and_the_wms_applies_each_directive_once(deployment):
    day = dt.date(2026, 2, 5)
    # One directive per request, three requests a second: the push lasts seconds, so the kill lands inside it.
    slow_push = {"VELOCITY_WMS_PUSH_BATCH_SIZE": "1", "VELOCITY_HTTP_RATE_LIMIT_RPS": "3"}
    a, b = deployment.worker("east", slow_push), deployment.worker("west", slow_push)
    wait_for_workers([a, b])
    wms = deployment.platform.wms_stats
    received_before = wms()["received"]
    run = NightlyRun(partition(day), deployment.root / "run.log").start()

    with dg.DagsterInstance.get() as instance:
        # The push is under way: its worker is known and the WMS has received part of the night.
        pushing = wait_until(
            "the WMS push under way on a worker",
            lambda: wms()["received"] > received_before and step_workers(instance, run.run_id).get(PUSH_STEP),
            RUN_DEADLINE_S,
            poll_s=0.1,
        )
        [victim] = [w for w in (a, b) if w.node == pushing[0]]
        survivor = b if victim is a else a
        victim.kill_9()
        killed_at = time.monotonic()
        received_at_kill = wms()["received"] - received_before
        assert not step_succeeded(instance, run.run_id, PUSH_STEP)

        assert run.wait(RUN_DEADLINE_S) == dg.DagsterRunStatus.SUCCESS
        recovered_s = time.monotonic() - killed_at
        taken = step_workers(instance, run.run_id)

    acked = _acked(deployment.store_url, day)
    stats = wms()
    site = stats["by_business_date"][day.isoformat()]
    print(f"killed {victim.node} after the WMS received {received_at_kill} of {len(acked)} directives; "
          f"the push went on on {taken[PUSH_STEP][-1]}, run done {recovered_s:.1f}s after the kill; WMS {site}")
    # The step was taken up again by the other worker, and finished there.
    assert taken[PUSH_STEP] == [victim.node, survivor.node]
    assert 0 < received_at_kill < len(acked)
    # Each directive applied once: a directive posted again (the one in flight at the kill) is the
    # same Idempotency-Key, answered by the WMS as a replay.
    assert site["applied"] == len(acked) == len({row.directive_id for row in acked})
    assert set(stats["applied_per_key"].values()) == {1}
    # The partition's acks table is whole: one row per directive, written once by the survivor.
    tables = WarehouseTables.of_settings(deployment.platform.settings)
    assert tables.read(PUSH_STEP, day, day).height == len(acked)
    assert survivor.stop() == 0


def test_a_worker_without_its_broker_is_one_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VELOCITY_CELERY_BROKER_URL"} | {"VELOCITY_STATE_DIR": str(tmp_path)}
    result = subprocess.run([str(BIN / "velocity-platform"), "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "velocity-platform worker: VELOCITY_CELERY_BROKER_URL is not set: export the RabbitMQ broker the runs use, "
        "e.g. VELOCITY_CELERY_BROKER_URL=amqp://USER:PASSWORD@HOST:5672//"
    ]
