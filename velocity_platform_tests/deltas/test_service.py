"""The exception service against live simulators: a new SKU ordered is slotted at once, in the
cheapest free location of its expected band, exactly once; every line is validated and rejects
are dead-lettered with their reasons; late lines and spikes are recorded and nothing moves for
them; while the WMS is down exceptions wait in the outbox and drain when it returns."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import httpx
import polars as pl
import pytest

from velocity_platform.connectors import delta_store
from velocity_platform.connectors.state import ACKED, PENDING
from velocity_platform.connectors.wms_pages import locations_from_pages, read_assignment_page, read_location_page
from velocity_platform.domain.slotting import DEFAULT_BANDS, directive_id, free_slots
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform.connectors.wms import WmsClient
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.deltas.helpers import ServiceThread, Upstreams, service_settings, wait_until
from velocity_platform.simulators.serve import free_port
from velocity_platform_tests.warehouse import tables_at

pytestmark = pytest.mark.integration

# A catalogue SKU with an expected rate of one line a day.
STEADY = "SKU-000001"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("deltas")
    with platform_environment(root, ErpConfig(**WORLD, token=ERP_TOKEN), WmsConfig(**WORLD, token=WMS_TOKEN)) as platform:
        # Expected pick rates, as the nightly sku_velocity would hold them: every catalogue SKU
        # at 1 line a day except a band of busy ones.
        rates = pl.DataFrame(
            {
                "business_date": [dt.date(2026, 2, 9)] * 300,
                "sku_id": [f"SKU-{i:06d}" for i in range(1, 301)],
                "expected_pick_lines_per_day": [1.0] * 100 + [50.0] * 200,
            }
        )
        # Ten days of demand before: the slow hundred sold 2 eaches a day, the busy ones 100 (each
        # SKU's range, against which the service judges a spike).
        days = [dt.date(2026, 1, 31) + dt.timedelta(days=d) for d in range(10)]
        demand = pl.DataFrame(
            {
                "business_date": [day for day in days for _ in range(300)],
                "sku_id": [f"SKU-{i:06d}" for _ in days for i in range(1, 301)],
                "units": [2.0 if i <= 100 else 100.0 for _ in days for i in range(1, 301)],
            }
        )
        # Tables without the site column: the one default site's, as before the network.
        with tables_at(root).session() as tables:
            tables.replace("sku_velocity", rates, None)
            tables.replace("daily_sku_demand", demand, None)
        upstreams = Upstreams(platform.erp_url, platform.wms_url, ERP_TOKEN, WMS_TOKEN)
        yield platform, upstreams
        upstreams.close()


@pytest.fixture(scope="module")
def running(world):
    platform, upstreams = world
    # Metrics on a free loopback port; a runless event every half second.
    with ServiceThread(service_settings(metrics_port=free_port(), report_interval_s=0.5)) as service:
        yield platform, upstreams, service


def wms_state(platform) -> pl.DataFrame:
    with WmsClient(platform.wms_url, WMS_TOKEN) as client:
        return locations_from_pages(client.locations(read_location_page), client.assignments(read_assignment_page))


def test_a_new_sku_ordered_is_slotted_at_once_in_the_cheapest_free_location_of_its_band(running):
    platform, upstreams, service = running
    before = wms_state(platform)
    upstreams.register_sku("NEW-BAND-1")
    document = upstreams.commit([("NEW-BAND-1", 2, "EA"), (STEADY, 1, "EA")])

    placed = wait_until(lambda: upstreams.assignment("NEW-BAND-1")["location_id"], "NEW-BAND-1 to be slotted")

    # One line today and no expected rate: it ranks behind the 200 SKUs expected at 50 lines a
    # day (the 100 at one line a day tie with it, and ties go its way): rank 201.
    band_locations = -(-before.height // DEFAULT_BANDS)
    free = free_slots(before.drop("sku_id"), before.filter(pl.col("sku_id").is_not_null()).select("sku_id", "location_id"))
    expected_band = 200 // band_locations
    assert expected_band > 0 and free.filter(pl.col("to_band") < expected_band).height  # a cheaper band had room
    cheapest = free.filter(pl.col("to_band") >= expected_band).sort("cost_rank")["to_location"][0]
    assert placed == cheapest
    assigned = upstreams.assignment("NEW-BAND-1")
    created = dt.datetime.fromisoformat(document["created_at"].replace("Z", "+00:00"))
    assert assigned["assigned_at_ms"] >= created.timestamp() * 1000 - 1

    key = directive_id(dt.datetime.now(service.service.tz).date(), "NEW-BAND-1", None, placed)
    wait_until(lambda: [r for r in service.store.outbox() if r.directive_id == key and r.status == ACKED], "the ack recorded")
    assert upstreams.wms_stats()["applied_per_key"][key] == 1


def test_the_same_sku_ordered_again_is_not_slotted_twice(running):
    _, upstreams, service = running
    upstreams.register_sku("NEW-TWICE-1")
    upstreams.commit([("NEW-TWICE-1", 1, "EA")])
    first = wait_until(lambda: upstreams.assignment("NEW-TWICE-1")["location_id"], "NEW-TWICE-1 to be slotted")
    last = upstreams.commit([("NEW-TWICE-1", 3, "EA")])
    watermark = dt.datetime.fromisoformat(last["created_at"].replace("Z", "+00:00"))
    wait_until(lambda: (delta_store.read_watermark(service.store) or watermark - dt.timedelta(1)) >= watermark, "the read")
    assert upstreams.assignment("NEW-TWICE-1")["location_id"] == first
    assert len([r for r in service.store.outbox() if r.sku_id == "NEW-TWICE-1"]) == 1


def test_every_line_is_validated_and_rejects_are_dead_lettered_with_their_reason(running):
    _, upstreams, service = running
    document = upstreams.commit([(STEADY, 1, "BX"), ("NOT-IN-MASTER-9", 1, "EA"), (STEADY, -4, "EA"), (STEADY, 1, "EA")])
    letters = wait_until(
        lambda: [d for d in delta_store.dead_letters(service.store) if d["txn_id"] == document["txn_id"]],
        "the dead letters of the document",
    )
    by_line = {d["line_no"]: d for d in letters}
    assert set(by_line) == {"1", "2", "3"}  # line 4 is valid
    assert by_line["1"]["fields"] == ["uom"] and "BX" in by_line["1"]["reasons"][0]
    assert by_line["2"]["fields"] == ["sku_id"] and "NOT-IN-MASTER-9" in by_line["2"]["reasons"][0]
    assert by_line["3"]["fields"] == ["quantity"]
    assert all(d["raw_payload"] and d["source_batch"].startswith("erp-delta:") for d in letters)
    # A rejected line is no exception: the unknown SKU was not slotted.
    assert upstreams.assignment("NOT-IN-MASTER-9")["location_id"] is None


def test_lines_for_an_earlier_business_date_are_recorded_for_the_rebuild_and_move_nothing(running):
    _, upstreams, service = running
    applied = upstreams.wms_stats()["applied"]
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    document = upstreams.commit([(STEADY, 1, "EA"), ("SKU-000002", 2, "CS")], event_ts=yesterday)
    # As the delta sensor reads them: (txn_id, txn_type, created_at, business_date, sku_id, quantity, uom).
    ever, now = dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    late = wait_until(
        lambda: [r for r in delta_store.late_lines_between(service.store, ever, now, 1000) if r[0] == document["txn_id"]],
        "the late lines",
    )
    assert {r[4:] for r in late} == {(STEADY, 1.0, "EA"), ("SKU-000002", 2.0, "CS")}
    assert {r[3] for r in late} == {yesterday.astimezone(service.service.tz).date()}
    assert upstreams.wms_stats()["applied"] == applied


def test_a_sku_ordered_far_beyond_its_own_range_is_observed_and_nothing_moves(running):
    platform, upstreams, service = running
    applied = upstreams.wms_stats()["applied"]
    steady = next(f"SKU-{i:06d}" for i in range(3, 100) if upstreams.assignment(f"SKU-{i:06d}")["location_id"])
    location = upstreams.assignment(steady)["location_id"]
    # Its largest day was 2 eaches: two orders of 300 today are 600 (at least 500, over 30 x 2).
    upstreams.commit([(steady, 300, "EA")])
    upstreams.commit([(steady, 300, "EA")])
    [spike] = wait_until(
        lambda: [o for o in delta_store.observations_after(service.store, 0, "spike") if o["sku_id"] == steady],
        "the spike observation",
    )
    assert spike["detail"]["units"] == 600.0 and spike["detail"]["peak_day_units"] == 2.0

    # The UI shows it as an observation on exception_deltas, with the figures behind it.
    def observed_in_dagster():
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_observations(dg.AssetKey("exception_deltas"), limit=100).records
        return [r.asset_observation for r in records if r.asset_observation.metadata["sku_id"].value == steady]

    [observation] = wait_until(observed_in_dagster, "the spike's observation on exception_deltas")
    assert observation.description.startswith(f"demand spike: {steady} ordered 600 eaches today, 300x")
    assert observation.metadata["multiple_of_peak_day"].value == 300.0
    assert upstreams.assignment(steady)["location_id"] == location
    assert upstreams.wms_stats()["applied"] == applied
    # A busy SKU (100 a day) ordered as much is inside its range: no spike.
    busy = next(f"SKU-{i:06d}" for i in range(299, 200, -1) if upstreams.assignment(f"SKU-{i:06d}")["location_id"])
    upstreams.commit([(busy, 600, "EA")])
    last = upstreams.committed[-1]
    watermark = dt.datetime.fromisoformat(last["created_at"].replace("Z", "+00:00"))
    wait_until(lambda: delta_store.read_watermark(service.store) >= watermark, "the read of the busy SKU's orders")
    assert not [o for o in delta_store.observations_after(service.store, 0, "spike") if o["sku_id"] == busy]


def test_while_the_wms_is_down_exceptions_wait_in_the_outbox_and_drain_when_it_returns(running):
    platform, upstreams, service = running
    simulator = platform.wms_app.state.simulator
    for n in range(5):
        upstreams.register_sku(f"NEW-DOWN-{n}")
    simulator.config.fault_rate_5xx = 1.0  # every WMS request fails: retries, then the breaker opens
    try:
        for n in range(5):
            upstreams.commit([(f"NEW-DOWN-{n}", 1, "EA")])
        waiting = wait_until(
            lambda: [r for r in service.store.outbox() if r.sku_id.startswith("NEW-DOWN-") and r.status == PENDING and r.attempts]
            if len([r for r in service.store.outbox() if r.sku_id.startswith("NEW-DOWN-")]) == 5 else None,
            "the five first slots to wait in the outbox after a failed send",
        )
        assert waiting
        first_commit = min(dt.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) for d in upstreams.committed[-5:])
        # Read past them, but not settled past the oldest of them.
        assert delta_store.read_watermark(service.store) >= first_commit
        assert delta_store.settled_watermark(service.store) < first_commit
        # The WMS answers nothing now; its own state says none was applied.
        assert all(simulator.assignment_of(f"NEW-DOWN-{n}")["records"][0]["location_id"] is None for n in range(5))
    finally:
        simulator.config.fault_rate_5xx = 0.0
    wait_until(
        lambda: all(r.status == ACKED for r in service.store.outbox() if r.sku_id.startswith("NEW-DOWN-")),
        "the outbox to drain",
    )
    stats = upstreams.wms_stats()["applied_per_key"]
    keys = [r.directive_id for r in service.store.outbox() if r.sku_id.startswith("NEW-DOWN-")]
    assert [stats[k] for k in keys] == [1] * 5
    last_commit = max(dt.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) for d in upstreams.committed[-5:])
    wait_until(lambda: delta_store.settled_watermark(service.store) >= last_commit, "the settled watermark to pass them")


def test_metrics_on_loopback_and_runless_events_on_exception_deltas(running):
    _, upstreams, service = running
    port = service.service.config.metrics_port
    upstreams.register_sku("NEW-METRICS-1")
    upstreams.commit([("NEW-METRICS-1", 1, "EA")])
    wait_until(lambda: upstreams.assignment("NEW-METRICS-1")["location_id"], "NEW-METRICS-1 to be slotted")

    def scraped() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        count = next(float(line.split()[1]) for line in text.splitlines() if line.startswith("delta_sync_latency_seconds_count"))
        return text if count >= 1 else None

    text = wait_until(scraped, "acknowledgements in the latency histogram")
    for name in (
        # Labelled by site: the one default site of a deployment that registered none.
        'delta_exception_stage_seconds_bucket{le="0.005",stage="read",warehouse="WH-01"}',
        'delta_exception_stage_seconds_count{stage="wms",warehouse="WH-01"}',
        "batch_processing_duration_seconds_bucket",
        "chunk_success_rate",
        "concurrency_utilization",
        "delta_dead_lettered_lines_total",
        "delta_erp_lag_seconds",
    ):
        assert name in text

    # Each window of batches is a runless materialization the UI shows on exception_deltas.
    def reported():
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetKey("exception_deltas"), limit=100).records
        return [r for r in records if r.asset_materialization.metadata["first_slots_acknowledged"].value >= 1]

    event = wait_until(reported, "a reported window with an acknowledged first slot")[0]
    metadata = event.asset_materialization.metadata
    assert event.run_id == ""
    assert 0 < metadata["latency_p50_ms"].value <= metadata["latency_p95_ms"].value <= metadata["latency_p99_ms"].value


def test_the_service_keeps_its_own_request_ceiling_not_the_nightly_runs(monkeypatch):
    """A 50 requests/s ceiling meant for the nightly pull put a 20 ms floor under every read of the
    service (docs/performance.md); its clients take VELOCITY_DELTAS_REQUESTS_PER_SECOND instead."""
    from velocity_platform.deltas.service import upstreams
    from velocity_platform.settings import DeltaServiceSettings, Settings

    monkeypatch.setenv("VELOCITY_HTTP_RATE_LIMIT_RPS", "50")
    monkeypatch.setenv("VELOCITY_HTTP_TIMEOUT_S", "7")
    erp, wms = upstreams(Settings.from_env(), DeltaServiceSettings.from_env(), "erp-token", "wms-token")
    assert erp.requests_per_second == wms.requests_per_second == 0.0
    assert erp.timeout_s == wms.timeout_s == 7.0  # the rest of the HTTP settings are the shared ones
    monkeypatch.setenv("VELOCITY_DELTAS_REQUESTS_PER_SECOND", "200")
    erp, _ = upstreams(Settings.from_env(), DeltaServiceSettings.from_env(), "erp-token", "wms-token")
    assert erp.requests_per_second == 200.0
