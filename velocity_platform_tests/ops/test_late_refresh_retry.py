"""A late-arrival refresh that fails once and then succeeds: no late line is lost.

Built days receive late ERP documents; the delta sensor asks for one refresh per day. Each run
is executed on the instance with the tags the sensor daemon gives a sensor's run (its run key and
the sensor's name), and the first day's refresh fails (the ERP refuses a revoked token). The
next tick, with nothing new committed in the ERP, must ask for that day again under a new run key,
and the watermark of rebuilt lines must stay before that day's late lines until a refresh of it
succeeds.
"""

import datetime as dt
import os

import dagster as dg
import pytest

from velocity_platform.batch import business_dates
from velocity_platform.definitions import defs
from velocity_platform.defs.ops.sensors import DeltaCursor, erp_delta_sensor, first_watermark
from velocity_platform.defs.resources import OperationsResource, build_resources
from velocity_platform.settings import Settings
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.deltas.helpers import catch_up, follower
from velocity_platform_tests.ops.helpers import erp_lines, raw_lines, set_erp_clock
from velocity_platform.defs.partitions import site_day_of
from velocity_platform_tests.warehouse import day_key

pytestmark = pytest.mark.integration

BUILT = business_dates(dt.date(2026, 2, 5), dt.date(2026, 2, 7))
BUILT_AT = dt.datetime(2026, 2, 8, 3, 0, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 2, 9, 12, 0, tzinfo=dt.UTC)


FOLLOWER = {}  # the exception service following the ERP (the sensor reads what it records)


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    catch_up(FOLLOWER["service"])
    resources = {**build_resources(Settings.from_env()), "operations": OperationsResource()}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return erp_delta_sensor(context)


def refreshes(result: dg.SensorResult) -> list[dg.RunRequest]:
    return [r for r in result.run_requests or [] if r.job_name == "late_arrival_refresh"]


def launch(instance: dg.DagsterInstance, request: dg.RunRequest, erp_token: str = ERP_TOKEN) -> bool:
    """The run as the sensor daemon creates it (run key and sensor name among its tags), executed here."""
    tags = {**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": "erp_delta_sensor"}
    os.environ["VELOCITY_ERP_TOKEN"] = erp_token
    try:
        result = defs().resolve_job_def("late_arrival_refresh").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=tags, raise_on_error=False
        )
    finally:
        os.environ["VELOCITY_ERP_TOKEN"] = ERP_TOKEN
    return result.success


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    erp = ErpConfig(**WORLD, lines_per_day=2500, late_arrival_rate=0.05, now=BUILT_AT, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with platform_environment(tmp_path_factory.mktemp("late_retry"), erp, wms) as platform:
        with dg.DagsterInstance.get() as instance:
            refresh = defs().resolve_job_def("late_arrival_refresh")
            for day in BUILT:
                assert refresh.execute_in_process(instance=instance, partition_key=day_key(day)).success
            FOLLOWER["service"] = follower(first_watermark(BUILT, "Europe/London"))
            start = tick(instance, None)
            set_erp_clock(platform, LATER)

            asked = tick(instance, start.cursor)
            first, *others = refreshes(asked)
            failed_day = site_day_of(first.partition_key).business_date
            outcomes = {first.partition_key: launch(instance, first, erp_token="revoked-erp-token")}
            outcomes.update({r.partition_key: launch(instance, r) for r in others})

            # Nothing new in the ERP since: this tick is only about the refresh that failed.
            after_failure = tick(instance, asked.cursor)
            repeated = tick(instance, asked.cursor)
            lines_while_failed = (raw_lines(platform, failed_day), erp_lines(platform, failed_day))
            [again] = refreshes(after_failure)
            assert launch(instance, again)
            after_success = tick(instance, after_failure.cursor)
            yield {
                "platform": platform,
                "asked": asked,
                "first": first,
                "outcomes": outcomes,
                "after_failure": after_failure,
                "repeated": repeated,
                "again": again,
                "after_success": after_success,
                "failed_day": failed_day,
                "lines_while_failed": lines_while_failed,
            }


def test_the_failed_refresh_is_asked_for_again_under_a_new_run_key(rounds):
    first, again = rounds["first"], rounds["again"]
    assert rounds["outcomes"][first.partition_key] is False
    assert all(rounds["outcomes"][day] for day in rounds["outcomes"] if day != first.partition_key)
    # Only the failed day: the others succeeded, and the ERP committed nothing new.
    assert [r.partition_key for r in refreshes(rounds["after_failure"])] == [first.partition_key]
    assert again.run_key != first.run_key and again.run_key.startswith(first.run_key)
    assert again.tags["velocity/attempt"] == "2"
    # A tick repeated from the same cursor asks for the same new key, which the daemon dedupes.
    assert [r.run_key for r in refreshes(rounds["repeated"])] == [again.run_key]


def test_the_watermark_stays_before_the_lines_whose_rebuild_failed(rounds):
    asked = DeltaCursor.parse(rounds["asked"].cursor)
    failed = DeltaCursor.parse(rounds["after_failure"].cursor)
    [pending] = failed.pending
    assert (pending.warehouse_id, pending.business_date) == ("WH-01", rounds["failed_day"].isoformat())
    raw, erp = rounds["lines_while_failed"]
    assert raw < erp  # the late lines are not in the warehouse yet...
    assert failed.rebuilt_through < pending.first_committed  # ...and the watermark has not passed them
    # Reading the ERP goes on from where it was: the day that failed does not hold up the others.
    assert failed.committed_through == asked.committed_through
    assert asked.rebuilt_through < failed.committed_through


def test_once_the_retry_succeeds_the_day_is_whole_and_the_watermark_catches_up(rounds):
    platform, day = rounds["platform"], rounds["failed_day"]
    result = DeltaCursor.parse(rounds["after_success"].cursor)
    assert not refreshes(rounds["after_success"])
    assert result.pending == ()
    assert result.rebuilt_through == result.committed_through
    assert raw_lines(platform, day) == erp_lines(platform, day)
