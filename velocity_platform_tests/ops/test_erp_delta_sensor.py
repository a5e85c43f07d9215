"""The ERP delta sensor against a live ERP simulator with late arrivals and a simulated clock.

Three business dates are built while the ERP's clock stands at 03:00 the next morning. Then the
clock moves on, and documents the ERP commits late for those dates become visible. The exception
service follows the ERP and records the lines of earlier business dates (it owns the ERP's
watermark); before each tick it catches up, as the resident service would have. The sensor must
ask for exactly the dates whose count grew, with run keys that a repeated tick reproduces, and
pick up where its cursor left off after a restart.
"""

import datetime as dt
import json

import dagster as dg
import duckdb
import pytest

from velocity_platform.batch import business_dates
from velocity_platform.definitions import defs
from velocity_platform.defs.ops.sensors import DeltaCursor, erp_delta_sensor, first_watermark
from velocity_platform.defs.resources import OperationsResource, build_resources
from velocity_platform.settings import Settings
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.deltas.helpers import Upstreams, catch_up, follower
from velocity_platform_tests.ops.helpers import erp_lines, raw_lines, set_erp_clock
from velocity_platform.defs.partitions import site_day_of
from velocity_platform_tests.warehouse import day_key

pytestmark = pytest.mark.integration

BUILT = business_dates(dt.date(2026, 2, 5), dt.date(2026, 2, 7))
BUILT_AT = dt.datetime(2026, 2, 8, 3, 0, tzinfo=dt.UTC)  # 03:00 in London: the nightly runs are over
SECOND_LOOK = dt.datetime(2026, 2, 9, 12, 0, tzinfo=dt.UTC)
AFTER_RESTART = dt.datetime(2026, 2, 10, 12, 0, tzinfo=dt.UTC)


FOLLOWER = {}  # the exception service of the module's world (it follows the ERP; the sensor reads its records)


def tick(instance: dg.DagsterInstance, cursor: str | None, **operations) -> dg.SensorResult:
    """One evaluation after the service caught up, with the code location's resources (as the daemon would give them)."""
    catch_up(FOLLOWER["service"])
    resources = {**build_resources(Settings.from_env()), "operations": OperationsResource(**operations)}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return erp_delta_sensor(context)


def late_requests(result: dg.SensorResult) -> dict[str, str]:
    """{business date: run key} of the late-arrival refreshes asked for (of the default site)."""
    return {
        site_day_of(r.partition_key).business_date.isoformat(): r.run_key
        for r in result.run_requests or []
        if r.job_name == "late_arrival_refresh"
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    erp = ErpConfig(**WORLD, lines_per_day=2500, late_arrival_rate=0.05, now=BUILT_AT, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with platform_environment(tmp_path_factory.mktemp("delta"), erp, wms) as platform:
        refresh = defs().resolve_job_def("late_arrival_refresh")
        with dg.DagsterInstance.get() as instance:
            for day in BUILT:
                assert refresh.execute_in_process(instance=instance, partition_key=day_key(day)).success
            # The service started where a new sensor starts: midnight after the newest built day.
            FOLLOWER["service"] = follower(first_watermark(BUILT, "Europe/London"))
            yield platform, instance
            FOLLOWER["service"].store.dispose()


@pytest.fixture(scope="module")
def first_tick(world):
    _, instance = world
    return tick(instance, None)


def test_a_first_tick_starts_after_the_newest_built_day_and_finds_nothing_late(world, first_tick):
    platform, _ = world
    # Everything committed up to 03:00 was in the nightly pulls.
    assert all(erp_lines(platform, day) == raw_lines(platform, day) for day in BUILT)
    assert late_requests(first_tick) == {}
    watermark = DeltaCursor.parse(first_tick.cursor).committed_through
    assert dt.datetime(2026, 2, 8, 0, 0, tzinfo=dt.UTC) <= watermark <= BUILT_AT


@pytest.fixture(scope="module")
def second_tick(world, first_tick):
    platform, instance = world
    set_erp_clock(platform, SECOND_LOOK)
    grown = {day.isoformat() for day in BUILT if erp_lines(platform, day) > raw_lines(platform, day)}
    return tick(instance, first_tick.cursor), tick(instance, first_tick.cursor), grown


def test_late_arrivals_request_exactly_the_built_days_whose_erp_count_grew(second_tick):
    result, _, grown = second_tick
    assert grown, "the world should commit late documents for the built days within 33 hours"
    requests = late_requests(result)
    assert set(requests) == grown
    assert all(key.startswith(f"late-arrivals:WH-01:{day}:") for day, key in requests.items())
    # One run per partition, and nothing asked for a day that is not built (2026-02-08 has data).
    assert len(requests) == len([r for r in result.run_requests if r.job_name == "late_arrival_refresh"])


def test_a_tick_repeated_from_the_same_cursor_asks_for_the_same_runs(second_tick):
    result, again, _ = second_tick
    assert [(r.job_name, r.partition_key, r.run_key) for r in again.run_requests] == [
        (r.job_name, r.partition_key, r.run_key) for r in result.run_requests
    ]
    assert again.cursor == result.cursor


def test_a_requested_run_brings_its_day_back_in_line_with_the_erp(world, second_tick):
    platform, instance = world
    result, _, grown = second_tick
    request = next(r for r in result.run_requests if r.job_name == "late_arrival_refresh")
    job = defs().resolve_job_def("late_arrival_refresh")
    assert job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags).success
    for day in map(dt.date.fromisoformat, grown):
        in_line = raw_lines(platform, day) == erp_lines(platform, day)
        assert in_line == (day_key(day) == request.partition_key)  # the others wait for their own runs


def test_the_next_tick_from_the_advanced_cursor_asks_for_nothing(world, second_tick):
    _, instance = world
    result, _, _ = second_tick
    repeated = tick(instance, result.cursor)
    assert not repeated.run_requests
    assert not repeated.asset_events
    assert repeated.cursor == result.cursor


def test_after_a_restart_the_cursor_resumes_with_new_skus(world, second_tick):
    platform, _ = world
    result, _, _ = second_tick
    stored = json.loads(result.cursor)  # what the daemon keeps in its storage across a restart
    counts_before = {day: erp_lines(platform, day) for day in BUILT}
    # Three products registered in the ERP after the service read its SKU master, and ordered.
    upstreams = Upstreams(platform.erp_url, platform.wms_url, ERP_TOKEN, WMS_TOKEN)
    for sku in ("NEW-SENSOR-1", "NEW-SENSOR-2", "NEW-SENSOR-3"):
        upstreams.register_sku(sku)
    upstreams.commit([("NEW-SENSOR-1", 1, "EA"), ("NEW-SENSOR-2", 1, "EA"), ("NEW-SENSOR-3", 2, "EA")])
    upstreams.close()
    set_erp_clock(platform, AFTER_RESTART)
    grown = {day.isoformat() for day in BUILT if erp_lines(platform, day) > counts_before[day]}

    with dg.DagsterInstance.get() as restarted:
        resumed = tick(restarted, json.dumps(stored))

    requests = late_requests(resumed)
    assert set(requests) == grown
    assert not set(requests.values()) & set(late_requests(result).values())
    [master] = [r for r in resumed.run_requests if r.job_name == "sku_master_refresh"]
    assert master.tags["velocity/new_skus"] == "3" and master.run_key.startswith("sku-master:")
    assert DeltaCursor.parse(resumed.cursor).committed_through > DeltaCursor.parse(result.cursor).committed_through
    assert DeltaCursor.parse(resumed.cursor).observed_through > 0
    # Spikes are the service's to record (on exception_deltas): the sensor reports no events.
    assert not resumed.asset_events
    assert {r.job_name for r in resumed.run_requests} <= {"late_arrival_refresh", "sku_master_refresh"}
    # The same new SKUs are not asked for again by the next tick.
    with dg.DagsterInstance.get() as restarted:
        again = tick(restarted, resumed.cursor)
    assert not [r for r in again.run_requests or [] if r.job_name == "sku_master_refresh"]
