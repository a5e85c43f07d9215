"""An ERP outage at 02:00, through dagster-webserver and dagster-daemon: the night heals itself.

The deployment is the one `make dev` runs (workspace.yaml, the repository's dagster.yaml with its
run retries), with a batch window of fifteen minutes and retry delays of seconds so that a night fits
in a test. Each night is the run the 02:00 schedule asks for, launched with the tags the schedule
daemon gives it; its scheduled time is the wall clock, because the window is measured on it.

- The ERP is stopped (connection refused) before the night starts and stays down for longer
  than the HTTP client's retry budget, twice over; then it comes back on its port. The night
  completes with no one touching it, and the WMS applies each directive once, none sent twice.
- A night whose run worker is killed (SIGKILL) while its ERP pull waits to retry is failed by
  the code server and re-executed from failure by the daemon's run retries: the steps that had
  succeeded are not run again, and the failed run pages nobody.
- A night whose ERP never comes back stops retrying when its window has passed, and the
  failure alert goes out once, saying the window was missed.
"""

import datetime as dt
import os
import signal
import time
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from velocity_platform.definitions import defs
from velocity_platform.defs.ops.retries import SCHEDULED_AT_TAG, WINDOW_MISSED
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform_tests.warehouse import day_key, day_key_str, open_tables
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, Platform, platform_environment
from benchmarks.deployment import LocalDeployment, wait_until
from velocity_platform.connectors.dagster_webserver import JOB, LOCATION, REPOSITORY
from velocity_platform_tests.ops.test_alerts import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow(minutes=4)]

LONDON = ZoneInfo("Europe/London")
WINDOW_HOURS = 0.25  # fifteen minutes: room for a night on a busy machine
HEALED, CRASHED, MISSED = dt.date(2026, 2, 5), dt.date(2026, 2, 6), dt.date(2026, 2, 7)

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


class Erp:
    """Takes the ERP simulator down (its port refuses connections) and brings it back on the same port."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.server: BackgroundServer = platform.erp_server

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = BackgroundServer(self.platform.erp_app, port=self.server.port).start()


def launch_night(deployment: LocalDeployment, day: dt.date, scheduled_at: dt.datetime) -> str:
    """The run the 02:00 schedule asks for on the morning after `day`, as the schedule daemon launches it."""
    definitions = defs()
    schedule = definitions.resolve_schedule_def("nightly_slotting_schedule")
    tick = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), tzinfo=LONDON)
    # The schedule reads only the sites it may ask for from the instance: a test one that holds them
    # (an ephemeral instance has no reference for the context to hand out).
    with dg.instance_for_test(set_dagster_home=False) as sites:
        sites.add_dynamic_partitions("warehouses", ["WH-01"])
        with dg.build_schedule_context(
            instance=sites,
            scheduled_execution_time=tick,
            resources={"warehouse": definitions.resources["warehouse"]},
            repository_def=definitions.get_repository_def(),
        ) as context:
            [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == day_key(day)
    tags = {
        **request.tags,
        "dagster/partition": str(request.partition_key),
        "dagster/partition/date": day.isoformat(),
        "dagster/partition/warehouse": "WH-01",
        "dagster/schedule_name": schedule.name,
        SCHEDULED_AT_TAG: scheduled_at.astimezone(dt.UTC).isoformat(),
    }
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": JOB},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    result = deployment.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def retries_of(instance: dg.DagsterInstance, run_id: str, step: str) -> list[float]:
    """Seconds each retry of `step` in the run was asked to wait, in order."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
    return [
        r.event_log_entry.dagster_event.event_specific_data.seconds_to_wait
        for r in records
        if r.event_log_entry.dagster_event.step_key == step
    ]


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's process id, from the engine event it logs when it starts."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        metadata = record.event_log_entry.dagster_event.event_specific_data.metadata
        if "pid" in metadata:
            return int(metadata["pid"].value)
    return None


def materialized_in(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    keys = instance.get_asset_keys_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {key.to_user_string() for key in keys}


def step_succeeded(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    """The step's STEP_SUCCESS is in the run's log: a re-execution from failure will not run it again
    (its materialization alone is not enough: a kill between the two re-runs the step)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    return any(record.event_log_entry.step_key == step_key for record in records)


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def sensor_state(instance: dg.DagsterInstance, name: str):
    from dagster._core.scheduler.instigation import InstigatorType  # the daemon's own record of a sensor

    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.instigator_name == name]
    return states[0] if states else None


def alert_ticks(instance: dg.DagsterInstance) -> int:
    state = sensor_state(instance, "failure_alert_sensor")
    return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000)) if state else 0


def failure_pages(receiver: Receiver) -> list[dict]:
    """The failure alert sensor's pages. The site freshness sensor also pages here, once, that the
    real calendar's last night never landed in this deployment; that page has its own tests."""
    return [m for m in receiver.messages if m["kind"] != "night_late"]


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("retries")
    # No malformed lines: a quiet day must not trip the DLQ gate; this test is about the outage.
    erp = ErpConfig(**WORLD, lines_per_day=1200, malformed_rate=0.0, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    receiver = Receiver()
    with BackgroundServer(receiver.app()) as hook, platform_environment(root, erp, wms) as platform:
        erp_switch = Erp(platform)
        env = {
            **os.environ,
            "VELOCITY_BATCH_WINDOW_HOURS": str(WINDOW_HOURS),
            "VELOCITY_RETRY_FIRST_DELAY_SECONDS": "3",
            "VELOCITY_RETRY_MAX_DELAY_SECONDS": "12",
            # The client's own budget: three attempts within a second, and a breaker that cools in 2 s.
            "VELOCITY_HTTP_MAX_ATTEMPTS": "3",
            "VELOCITY_HTTP_BACKOFF_S": "0.05",
            "VELOCITY_HTTP_MAX_BACKOFF_S": "0.2",
            "VELOCITY_HTTP_BREAKER_RESET_S": "2",
            "VELOCITY_HTTP_RATE_LIMIT_RPS": "0",
            "VELOCITY_MOVE_BUDGET": "40",
            "VELOCITY_ALERT_WEBHOOK_URL": f"{hook.url}/hook",
        }
        try:
            with LocalDeployment(env, root) as deployment:
                deployment.start_daemon()
                with dg.DagsterInstance.get() as instance:
                    # The alert sensor's first tick marks where it starts watching: before either night.
                    wait_until(
                        "the alert sensor's first tick",
                        lambda: (s := sensor_state(instance, "failure_alert_sensor")) and s.instigator_data
                        and s.instigator_data.cursor,
                        deadline_s=120,
                    )

                    # Night one: the ERP is down at the start and stays down past two retries of the pull.
                    erp_switch.down()
                    down_at = time.monotonic()
                    healed = launch_night(deployment, HEALED, dt.datetime.now(dt.UTC))
                    wait_until(
                        "the ERP pull of the first night retried twice",
                        lambda: len(retries_of(instance, healed, "raw_transactions")) >= 2,
                        deadline_s=240,
                    )
                    erp_switch.up()
                    outage_s = time.monotonic() - down_at
                    healed_run = wait_until("the first night to finish", lambda: finished(instance, healed), deadline_s=300)
                    healed_after_s = time.monotonic() - down_at

                    # Night two: its run worker dies while the ERP pull waits out an outage.
                    erp_switch.down()
                    crashed = launch_night(deployment, CRASHED, dt.datetime.now(dt.UTC))
                    wait_until(
                        "the second night's ERP pull waiting to retry, its WMS locations step done",
                        lambda: retries_of(instance, crashed, "raw_transactions")
                        and step_succeeded(instance, crashed, "wms_locations"),
                        deadline_s=240,
                    )
                    os.kill(worker_pid(instance, crashed), signal.SIGKILL)
                    wait_until("the killed run marked failed", lambda: finished(instance, crashed), deadline_s=60)
                    erp_switch.up()
                    group = wait_until(
                        "the daemon's retry of the killed run to finish",
                        lambda: len(runs := instance.get_run_group(crashed)[1]) == 2 and all(r.is_finished for r in runs) and runs,
                        deadline_s=300,
                    )

                    # Night three: it starts 45 s before the end of its window and the ERP never answers.
                    erp_switch.down()
                    started_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=WINDOW_HOURS) + dt.timedelta(seconds=45)
                    missed = launch_night(deployment, MISSED, started_at)
                    missed_run = wait_until("the second night to fail", lambda: finished(instance, missed), deadline_s=240)
                    wait_until("the alert for the missed window", lambda: failure_pages(receiver), deadline_s=120)
                    # The sensor keeps ticking over the failed night: two more ticks, and no second message.
                    ticks = alert_ticks(instance)
                    wait_until("two more ticks of the alert sensor", lambda: alert_ticks(instance) >= ticks + 2, deadline_s=150)
                    erp_switch.up()

                    yield {
                        "platform": platform,
                        "instance": instance,
                        "healed": healed_run,
                        "missed": missed_run,
                        "crashed": sorted(group, key=lambda r: r.run_id != crashed),
                        "messages": failure_pages(receiver),
                        "outage_s": outage_s,
                        "healed_after_s": healed_after_s,
                        "started_at": started_at,
                    }
        finally:
            erp_switch.server.stop()


def test_the_night_completes_after_the_erp_comes_back_with_no_one_touching_it(nights):
    instance, run = nights["instance"], nights["healed"]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # One run: the pull waited the outage out inside the run, it was not relaunched.
    assert len(instance.get_run_group(run.run_id)[1]) == 1
    for asset in ("raw_transactions", "sku_velocity", "slotting_directives", "wms_directive_acks"):
        assert day_key_str(HEALED) in instance.get_materialized_partitions(dg.AssetKey(asset)), asset
    print(f"\nERP down {nights['outage_s']:.1f} s; the night succeeded {nights['healed_after_s']:.1f} s after the ERP went down")


def test_the_waits_between_retries_grow(nights):
    waits = retries_of(nights["instance"], nights["healed"].run_id, "raw_transactions")
    assert len(waits) >= 2
    # Doubling from 3 s with +-20% jitter: the second wait is longer than the first whatever the jitter.
    assert 3 * 0.8 <= waits[0] <= 3 * 1.2 and waits[1] > waits[0]
    print(f"retry waits of raw_transactions: {[round(w, 1) for w in waits]}")


def test_each_directive_is_applied_once_and_none_is_sent_twice(nights):
    platform = nights["platform"]
    nights_built = [HEALED, CRASHED]
    with open_tables(platform.settings) as con:
        planned = {r[0] for r in con.execute(
            "SELECT directive_id FROM warehouse.slotting_directives WHERE business_date IN (?, ?)", nights_built
        ).fetchall()}
        acked = {r[0] for r in con.execute(
            "SELECT directive_id FROM warehouse.wms_directive_acks WHERE business_date IN (?, ?) AND status = 'acked'",
            nights_built,
        ).fetchall()}
    assert planned and acked == planned
    stats = platform.wms_stats()
    applied = {key for key, n in stats["applied_per_key"].items() if n}
    assert applied == planned
    assert set(stats["applied_per_key"].values()) <= {0, 1}
    assert stats["replayed"] == 0  # no Idempotency-Key came twice


def test_a_killed_run_worker_is_re_executed_from_failure_by_the_daemon(nights):
    instance = nights["instance"]
    killed, retry = nights["crashed"]
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.parent_run_id == killed.run_id and retry.tags["dagster/retry_number"] == "1"
    # From failure: what the killed run had finished is not run again; the rest is.
    assert "wms_locations" in materialized_in(instance, killed.run_id)
    assert "wms_locations" not in materialized_in(instance, retry.run_id)
    assert {"raw_transactions", "slotting_directives", "wms_directive_acks"} <= materialized_in(instance, retry.run_id)
    # The retry keeps the night's scheduled time, so its window is the night's, not a new one.
    assert retry.tags[SCHEDULED_AT_TAG] == killed.tags[SCHEDULED_AT_TAG]


def test_a_night_whose_erp_never_returns_stops_at_the_end_of_its_window(nights):
    instance, run = nights["instance"], nights["missed"]
    assert run.status == dg.DagsterRunStatus.FAILURE
    # It kept retrying until the window's end, then stopped: no run retry after the step gave up.
    assert len(instance.get_run_group(run.run_id)[1]) == 1
    record = instance.get_run_record_by_id(run.run_id)
    deadline = nights["started_at"] + dt.timedelta(hours=WINDOW_HOURS)
    assert record.end_time >= deadline.timestamp()
    # However many retries fitted in (a busy machine starts the run late), none was set for after the window.
    retries = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
    for r in retries:
        due = r.timestamp + r.event_log_entry.dagster_event.event_specific_data.seconds_to_wait
        assert due <= deadline.timestamp() + 1, r.event_log_entry.dagster_event.step_key
    failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    messages = {r.event_log_entry.dagster_event.step_key: r.event_log_entry.dagster_event.step_failure_data.error.message for r in failures}
    assert WINDOW_MISSED in messages["raw_transactions"]


def test_the_missed_window_is_paged_once_and_the_outage_not_per_attempt(nights):
    messages = nights["messages"]
    assert len(messages) == 1
    [message] = messages
    assert message["kind"] == "batch_window_missed" and message["business_date"] == MISSED.isoformat() and message["warehouse"] == "WH-01"
    assert message["run_id"] == nights["missed"].run_id
    assert f"missed its {WINDOW_HOURS:g}-hour batch window" in message["description"]
