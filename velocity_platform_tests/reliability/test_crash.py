"""SIGKILL in the middle of ingestion or of the WMS push, then a re-run: the same tables and the
same WMS state as a run that was never interrupted, on an identical fresh world."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from velocity_platform.connectors.state import OperationalStore
from velocity_platform_tests.conftest import PROJECT
from velocity_platform_tests.warehouse import warehouse_tables as read_tables

from .conftest import DATES, faulty_world, run

pytestmark = [pytest.mark.reliability, pytest.mark.slow(minutes=1.5)]

# Columns that say when or how often something happened, not what: a re-run after a crash sees a
# dead letter a second time and may get a replayed (200) instead of a first (201) acknowledgement.
WHEN = {"first_seen_at", "last_seen_at", "attempt_count", "acked_at", "http_status", "attempts", "detail"}


def warehouse_tables(settings) -> dict[str, pl.DataFrame]:
    return read_tables(settings, WHEN)


def wms_state(platform) -> tuple[list[int], dict[str, int]]:
    sim = platform.wms_app.state.simulator
    return sim.loc_of_sku.tolist(), platform.wms_stats()["applied_per_key"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    with faulty_world(tmp_path_factory.mktemp("reference")) as platform:
        outcomes = run(DATES)
        assert all(o.success for o in outcomes), [o.error for o in outcomes]
        return warehouse_tables(platform.settings), wms_state(platform)


def start_cli_run(log_path) -> subprocess.Popen:
    # The command a user runs; a low request ceiling stretches the pull and the push so that
    # "the middle" lasts long enough to be caught from outside.
    env = {
        **os.environ,
        "VELOCITY_HTTP_RATE_LIMIT_RPS": "25",
        "VELOCITY_HTTP_PAGE_LIMIT": "100",
        "VELOCITY_WMS_PUSH_BATCH_SIZE": "1",
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "velocity_platform.cli", "run", "--from", DATES[0].isoformat(), "--to", DATES[-1].isoformat()],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def kill_when(process: subprocess.Popen, condition, what: str, deadline_s: float = 120.0) -> None:
    """Poll an observable state until it says "in the middle", then SIGKILL the run."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)  # polling interval, not synchronisation: the condition decides
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL


def rerun(log_path) -> None:
    process = start_cli_run(log_path)
    assert process.wait(300) == 0, log_path.read_text()[-3000:]


def assert_same_as_uninterrupted(platform, uninterrupted) -> None:
    tables, (locations, applied) = uninterrupted
    after = warehouse_tables(platform.settings)
    assert sorted(after) == sorted(tables)
    for name, frame in tables.items():
        assert after[name].equals(frame), f"table {name} differs from the uninterrupted run"
    now_locations, now_applied = wms_state(platform)
    assert np.array_equal(now_locations, locations), "the WMS slotting differs"
    assert now_applied == applied and set(now_applied.values()) == {1}


def test_sigkill_mid_ingestion_then_rerun(tmp_path, uninterrupted):
    with faulty_world(tmp_path / "world") as platform:
        log = tmp_path / "run.log"
        process = start_cli_run(log)
        served = lambda: platform.erp_stats()["requests"].get("transactions", {}).get("200", 0)
        kill_when(process, lambda: served() >= 3, "some ERP pages served")
        assert platform.wms_stats()["received"] == 0, "killed before anything reached the WMS"
        rerun(log)
        assert_same_as_uninterrupted(platform, uninterrupted)


def test_sigkill_mid_push_then_rerun_resends_only_pending(tmp_path, uninterrupted):
    _, (_, applied_reference) = uninterrupted
    # Some answers are lost after the WMS committed: while the pusher backs off to retry, the WMS
    # has applied a directive the outbox still holds as pending. That is the moment to kill it.
    # Once a third is applied every answer is lost, so that moment lasts through the pusher's
    # retries instead of the few milliseconds of one random backoff (a fast machine missed it).
    with faulty_world(tmp_path / "world", wms={"fault_rate_commit_then_drop": 0.1}) as platform:
        log = tmp_path / "run.log"
        store = OperationalStore(platform.settings.store_url)
        total = len(applied_reference)
        simulator = platform.wms_app.state.simulator

        def applied_but_not_acked() -> set[str]:
            stats = simulator.stats()
            if stats["applied"] < total // 3:
                return set()
            simulator.config.fault_rate_commit_then_drop = 1.0
            acked = {r.directive_id for r in store.outbox() if r.status == "acked"}
            return set(stats["applied_per_key"]) - acked

        process = start_cli_run(log)
        kill_when(process, lambda: bool(applied_but_not_acked()), "a directive applied but not yet acknowledged")
        applied_at_kill = set(platform.wms_stats()["applied_per_key"])
        assert 0 < len(applied_at_kill) < total
        outbox = store.outbox()
        pending = {r.directive_id for r in outbox if r.status == "pending"}
        acked = {r.directive_id for r in outbox if r.status == "acked"}
        # Usually one directive is applied but unacknowledged at the kill; the pusher may still
        # record its (replayed) answer between our look and the SIGKILL landing, hence <=.
        assert acked <= applied_at_kill and applied_at_kill - acked <= pending, "acknowledged only what was applied"
        simulator.config.fault_rate_commit_then_drop = 0.0  # the network heals
        received_before = platform.wms_stats()["received"]
        leases_end = max((h.until for d in DATES for h in store.holders(d)), default=None)
        # No waiting out the killed pusher's lease: it ran on this host and its process is gone, so
        # the re-run takes its claims at once (and says so) -- unless the re-run reached the push
        # after the lease had lapsed anyway (a slow machine), when they are simply claimed.
        rerun(log)
        text = log.read_text()
        assert "held by another pusher" not in text  # never waited for the dead one
        if leases_end is not None and dt.datetime.now(dt.UTC) < leases_end:
            assert "whose process is gone from this host" in text
        # The re-run sent the pending directives (same keys: the applied one is answered as a replay),
        # those of a date not yet planned at the kill once each, and nothing for acknowledged ones.
        planned_after_kill = {r.directive_id for r in store.outbox()} - {r.directive_id for r in outbox}
        assert platform.wms_stats()["received"] - received_before == len(pending) + len(planned_after_kill)
        assert platform.wms_stats()["replayed"] >= len(applied_at_kill - acked)
        assert_same_as_uninterrupted(platform, uninterrupted)
        store.dispose()
