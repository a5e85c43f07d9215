"""Each site's night at 02:00 in its own time zone; the nightly outputs declare freshness."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from velocity_platform.connectors.state import OperationalStore
from velocity_platform.definitions import defs
from velocity_platform.defs.ops.freshness import NIGHTLY_OUTPUTS, nightly_freshness_policy
from velocity_platform.defs.ops.jobs import SCHEDULE_TICK_MINUTES
from velocity_platform.defs.partitions import WAREHOUSES_PARTITIONS, SiteDay
from velocity_platform.defs.resources import WarehouseResource
from velocity_platform.domain.network import Warehouse, nightly_runs_due

LONDON = ZoneInfo("Europe/London")
CHICAGO = Warehouse(warehouse_id="CHI", timezone="America/Chicago")
BERLIN = Warehouse(warehouse_id="BER", timezone="Europe/Berlin")


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return defs()


def test_the_schedule_runs_the_whole_graph_of_each_site(definitions):
    schedule = definitions.resolve_schedule_def("nightly_slotting_schedule")
    assert schedule.cron_schedule == f"*/{SCHEDULE_TICK_MINUTES} * * * *"
    assert schedule.job_name == "nightly_slotting_batch"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job_assets = definitions.resolve_job_def("nightly_slotting_batch").asset_layer.executable_asset_keys
    assert {k.to_user_string() for k in job_assets} >= {"raw_transactions", "slotting_directives", "wms_directive_acks"}


def runs_on(day: dt.date, *sites: Warehouse) -> list[tuple[str, str, str]]:
    """(site, business date, UTC start) of every night due over one UTC day."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) - dt.timedelta(microseconds=1)
    due = nightly_runs_due(sites, start, start + dt.timedelta(days=1), 2)
    return [(r.warehouse_id, r.business_date.isoformat(), r.starts_at.strftime("%H:%M")) for r in due]


def test_two_sites_seven_hours_apart_each_build_the_day_that_ended_there():
    assert runs_on(dt.date(2026, 1, 15), CHICAGO, BERLIN) == [("BER", "2026-01-14", "01:00"), ("CHI", "2026-01-14", "08:00")]


@pytest.mark.parametrize(
    ("utc_day", "expected"),
    [
        # Chicago springs forward on 8 March: 02:00 does not exist, the night starts at 03:00 CDT (08:00 UTC).
        (dt.date(2026, 3, 8), [("BER", "2026-03-07", "01:00"), ("CHI", "2026-03-07", "08:00")]),
        # The weeks the two zones' changes differ: six hours apart.
        (dt.date(2026, 3, 9), [("BER", "2026-03-08", "01:00"), ("CHI", "2026-03-08", "07:00")]),
        # Berlin springs forward on 29 March (02:00 CET does not exist: 01:00 UTC, 03:00 CEST).
        (dt.date(2026, 3, 29), [("BER", "2026-03-28", "01:00"), ("CHI", "2026-03-28", "07:00")]),
        (dt.date(2026, 3, 30), [("BER", "2026-03-29", "00:00"), ("CHI", "2026-03-29", "07:00")]),
        # Berlin falls back on 25 October: 02:00 happens twice, the night runs once, at the first.
        (dt.date(2026, 10, 25), [("BER", "2026-10-24", "00:00"), ("CHI", "2026-10-24", "07:00")]),
        (dt.date(2026, 10, 26), [("BER", "2026-10-25", "01:00"), ("CHI", "2026-10-25", "07:00")]),
        # Chicago falls back on 1 November at 02:00 CDT, to 01:00 CST: 02:00 CST comes once, at 08:00 UTC.
        (dt.date(2026, 11, 1), [("BER", "2026-10-31", "01:00"), ("CHI", "2026-10-31", "08:00")]),
        (dt.date(2026, 11, 2), [("BER", "2026-11-01", "01:00"), ("CHI", "2026-11-01", "08:00")]),
    ],
)
def test_each_local_night_runs_once_around_daylight_saving(utc_day, expected):
    assert runs_on(utc_day, CHICAGO, BERLIN) == expected


def test_a_year_of_ticks_asks_for_every_night_of_each_site_exactly_once():
    tick, end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    asked: dict[str, list[dt.date]] = {"CHI": [], "BER": []}
    step = dt.timedelta(minutes=SCHEDULE_TICK_MINUTES)
    while tick < end:
        for run in nightly_runs_due([CHICAGO, BERLIN], tick, tick + step, 2):
            assert run.starts_at.astimezone(ZoneInfo(next(s.timezone for s in (CHICAGO, BERLIN) if s.warehouse_id == run.warehouse_id))).hour in (2, 3)
            asked[run.warehouse_id].append(run.business_date)
        tick += step
    for days in asked.values():
        assert len(days) == len(set(days)) == 365
        assert days == sorted(days)


def test_the_schedule_asks_for_each_registered_site_at_its_two_oclock(definitions, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = OperationalStore(store_url)
    for site in (CHICAGO, BERLIN):
        store.register_warehouse(site)
    schedule = definitions.resolve_schedule_def("nightly_slotting_schedule")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(WAREHOUSES_PARTITIONS, ["CHI", "BER"])

        def tick(at: dt.datetime) -> list[dg.RunRequest]:
            # Entered and left: a context left open keeps its instance as the process's current one.
            with dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=at,
                resources={"warehouse": WarehouseResource(store_url=store_url)},
                repository_def=definitions.get_repository_def(),
            ) as context:
                return list(schedule.evaluate_tick(context).run_requests or [])

        [berlin] = tick(dt.datetime(2026, 1, 15, 1, 0, tzinfo=dt.UTC))  # 02:00 in Berlin
        assert berlin.partition_key == SiteDay("BER", dt.date(2026, 1, 14)).key
        assert berlin.tags["velocity/warehouse"] == "BER" and berlin.run_key == "nightly:BER 2026-01-14"
        assert tick(dt.datetime(2026, 1, 15, 1, 15, tzinfo=dt.UTC)) == []
        [chicago] = tick(dt.datetime(2026, 1, 15, 8, 0, tzinfo=dt.UTC))  # 02:00 in Chicago, seven hours later
        assert chicago.partition_key == SiteDay("CHI", dt.date(2026, 1, 14)).key


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
