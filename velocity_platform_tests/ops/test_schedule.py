"""The 02:00 schedule builds the business date that just ended; the nightly outputs declare freshness."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from velocity_platform.definitions import defs
from velocity_platform.defs.ops.freshness import NIGHTLY_OUTPUTS, nightly_freshness_policy

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return defs()


def tick_at(definitions: dg.Definitions, local: dt.datetime) -> list[dg.RunRequest]:
    schedule = definitions.resolve_schedule_def("nightly_slotting_schedule")
    result = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=local))
    return list(result.run_requests or [])


def test_the_schedule_runs_the_whole_graph_at_two_in_the_warehouse_time_zone(definitions):
    schedule = definitions.resolve_schedule_def("nightly_slotting_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/London"
    assert schedule.job_name == "nightly_slotting_batch"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job_assets = definitions.resolve_job_def("nightly_slotting_batch").asset_layer.executable_asset_keys
    assert {k.to_user_string() for k in job_assets} >= {"raw_transactions", "slotting_directives", "wms_directive_acks"}


@pytest.mark.parametrize(
    ("tick", "business_date"),
    [
        (dt.datetime(2026, 3, 2, 2, 0, tzinfo=LONDON), "2026-03-01"),  # a Monday builds Sunday
        (dt.datetime(2026, 3, 29, 2, 0, tzinfo=LONDON), "2026-03-28"),  # the night the clocks go forward
        (dt.datetime(2026, 10, 25, 2, 0, tzinfo=LONDON), "2026-10-24"),  # the night they go back
        (dt.datetime(2027, 1, 1, 2, 0, tzinfo=LONDON), "2026-12-31"),  # across the year
    ],
)
def test_each_tick_asks_for_the_previous_business_date(definitions, tick, business_date):
    [request] = tick_at(definitions, tick)
    assert request.partition_key == business_date


def test_the_ticks_fall_at_two_local_also_across_daylight_saving(definitions):
    schedule = definitions.resolve_schedule_def("nightly_slotting_schedule")
    start = dt.datetime(2026, 3, 27, 12, 0, tzinfo=LONDON)
    # The daemon's own tick iterator (internal to dagster, hence imported here only).
    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(start.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    local = [next(ticks).astimezone(LONDON) for _ in range(4)]
    assert [(t.date().isoformat(), t.hour, t.minute) for t in local] == [
        ("2026-03-28", 2, 0),
        ("2026-03-29", 2, 0),
        ("2026-03-30", 2, 0),
        ("2026-03-31", 2, 0),
    ]
    # 02:00 is 02:00 GMT before the change and 01:00 UTC after it.
    assert [t.astimezone(dt.UTC).hour for t in local[:2]] == [2, 1]


def test_the_nightly_outputs_must_land_between_two_and_six(definitions):
    graph = definitions.resolve_asset_graph()
    expected = nightly_freshness_policy("Europe/London", 4)
    assert expected.deadline_cron == "0 6 * * *" and expected.lower_bound_delta == dt.timedelta(hours=4)
    for key in graph.get_all_asset_keys():
        policy = graph.get(key).freshness_policy
        if key.to_user_string() in NIGHTLY_OUTPUTS:
            assert policy == expected, key
        else:
            assert policy is None, key
    with pytest.raises(ValueError, match="between 0 and 24"):
        nightly_freshness_policy("Europe/London", 24)
