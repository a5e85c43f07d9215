"""dagster-webserver and dagster-daemon on a temporary DAGSTER_HOME: a 4-day backfill through GraphQL.

The deployment is the one `make dev` runs (the repository's workspace.yaml and dagster.yaml), the
backfill is launched the way the UI's "Launch backfill" launches it, and the assertions read
the instance: every partition of every asset materialized, every check evaluated in every run,
the days built in ranges of consecutive dates (the backfill policy, here three dates a run and the one left over), one
run at a time, and the freshness of the nightly outputs evaluated.
"""

import datetime as dt
import os

import dagster as dg
import pytest

from benchmarks.deployment import LocalDeployment, wait_until
from velocity_platform.batch import RANGE_END_TAG, RANGE_START_TAG, business_dates
from velocity_platform.definitions import defs
from velocity_platform.defs.ops.freshness import NIGHTLY_OUTPUTS
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.warehouse import day_key_str

pytestmark = [pytest.mark.integration, pytest.mark.slow(minutes=2.5)]

DATES = business_dates(dt.date(2026, 2, 1), dt.date(2026, 2, 4))
DAYS_PER_RUN = 3
BACKFILL_PASS_S = 3  # the daemon's pass between a backfill's stages: Dagster's 30 s is most of a test's time
RANGES = [(DATES[i], DATES[min(i + DAYS_PER_RUN, len(DATES)) - 1]) for i in range(0, len(DATES), DAYS_PER_RUN)]


def dates_of(run: dg.DagsterRun) -> tuple[str, str]:
    """The first and last business date a run built (a range, or a single partition), of WH-01."""
    tags = run.tags
    first, last = (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) if RANGE_START_TAG in tags else (tags["dagster/partition"],) * 2
    assert first.endswith("|WH-01") and last.endswith("|WH-01"), (first, last)
    return first.split("|")[0], last.split("|")[0]

INSTIGATORS = """
{ repositoryOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "velocity_platform"}) {
    ... on Repository { schedules { name scheduleState { status } } sensors { name sensorState { status } } } } }"""


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    # No malformed lines: this test is about operating the graph, and a quiet Sunday must not trip the DLQ gate.
    erp = ErpConfig(**WORLD, lines_per_day=1200, malformed_rate=0.0, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with platform_environment(root, erp, wms):
        # Fewer moves a day and no client-side request ceiling: the runs' own work is not what is tested here.
        env = {
            **os.environ,
            "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
            "VELOCITY_MOVE_BUDGET": "40",
            "VELOCITY_HTTP_RATE_LIMIT_RPS": "0",
            "VELOCITY_BACKFILL_DAYS_PER_RUN": str(DAYS_PER_RUN),
        }
        with LocalDeployment(env, root, backfill_pass_s=BACKFILL_PASS_S) as deployment:
            backfill_id = deployment.launch_backfill(DATES)
            deployment.start_daemon()
            with dg.DagsterInstance.get() as instance:

                def finished_runs():
                    # An asset backfill: the SKU master once, then the site-days in ranges; it is
                    # done when the daemon says so and every run it launched has finished.
                    runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                    done = deployment.backfill_status(backfill_id) not in ("REQUESTED", "CANCELING")
                    return done and runs and all(r.dagster_run.is_finished for r in runs) and runs

                # A bound against a hang, not a time asserted: 98 s alone, over 420 s inside the
                # suite on a loaded 2-core machine (11 runs, each a process that waits for CPU).
                every_run = wait_until("the 4-day backfill to finish", finished_runs, deadline_s=900, poll_s=2)
                runs = [r for r in every_run if RANGE_START_TAG in r.dagster_run.tags or "dagster/partition" in r.dagster_run.tags]
                freshness = wait_until(
                    "freshness evaluated for the nightly outputs",
                    lambda: (records := instance.get_freshness_state_records([dg.AssetKey(k) for k in NIGHTLY_OUTPUTS]))
                    and all(r.freshness_state.value == "PASS" for r in records.values())
                    and len(records) == len(NIGHTLY_OUTPUTS)
                    and records,
                    deadline_s=60,
                )
                instigators = deployment.graphql(INSTIGATORS)["repositoryOrError"]
                yield instance, backfill_id, runs, freshness, instigators, deployment.backfill_status(backfill_id)


def test_the_backfill_materializes_every_partition_of_every_asset(backfilled):
    instance, _, runs, _, _, status = backfilled
    # The backfill's own status is settled by the daemon's next 30-second pass; its runs are what count.
    assert status == "COMPLETED_SUCCESS"
    assert {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    graph = defs().resolve_job_def("nightly_slotting_batch").asset_layer.asset_graph
    # not exception_deltas (the exception service reports it), nor the network roll-up (automation)
    for key in graph.executable_asset_keys:
        node = graph.get(key)
        if node.partitions_def is None:
            assert instance.get_latest_materialization_event(key) is not None, key
        else:
            assert {day_key_str(d) for d in DATES} <= set(instance.get_materialized_partitions(key)), key


def test_every_check_is_evaluated_over_the_backfill(backfilled):
    # An asset backfill runs each range of site-days asset by asset as its upstream lands, so a
    # check runs in the run of its asset: together the runs evaluate every check of the job.
    instance, _, runs, _, _, _ = backfilled
    job = defs().resolve_job_def("nightly_slotting_batch")
    expected = {key.to_user_string() for key in job.asset_layer.asset_graph.asset_check_keys}
    assert len(expected) >= 10
    evaluated = set()
    for record in runs:
        events = instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        evaluated |= {
            f"{e.asset_key.to_user_string()}:{e.check_name}"
            for e in (r.event_log_entry.dagster_event.event_specific_data for r in events)
        }
    assert evaluated == expected


def test_the_days_are_built_in_ranges_one_run_at_a_time(backfilled):
    _, _, runs, _, _, _ = backfilled
    by_start = sorted(runs, key=lambda r: r.start_time)
    policy = [(a.isoformat(), b.isoformat()) for a, b in RANGES]
    # The first pass requests the roots of every range at once: their runs are the policy's ranges.
    roots = [r for r in by_start if dg.AssetKey("raw_transactions") in (r.dagster_run.asset_selection or ())]
    assert sorted(dates_of(r.dagster_run) for r in roots) == policy
    # A later stage is requested as its upstream lands, so a pass may take part of a range (the
    # first date of a stage that reads the day before, say): never more than one range, never across two.
    for record in by_start:
        first, last = dates_of(record.dagster_run)
        assert any(a <= first <= last <= b for a, b in policy), (first, last)
    for earlier, later in zip(by_start, by_start[1:]):
        assert later.start_time >= earlier.end_time  # the duckdb pool admits one run at a time


def test_the_schedule_and_sensors_run_by_default_and_freshness_is_live(backfilled):
    _, _, _, freshness, instigators, _ = backfilled
    assert {s["name"]: s["scheduleState"]["status"] for s in instigators["schedules"]} == {
        "nightly_slotting_schedule": "RUNNING",
        "lake_maintenance_schedule": "RUNNING",
    }
    assert {s["name"]: s["sensorState"]["status"] for s in instigators["sensors"]} == {
        "erp_delta_sensor": "RUNNING",
        "failure_alert_sensor": "RUNNING",
        "warehouse_registry_sensor": "RUNNING",
        "network_rollup_automation": "RUNNING",
        "site_freshness_sensor": "RUNNING",
    }
    assert {k.to_user_string() for k in freshness} == set(NIGHTLY_OUTPUTS)
