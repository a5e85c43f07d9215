"""A window of the exception service's figures that the Dagster instance could not take is
reported with the next one: nothing counted is lost, and the window says when it began."""

import datetime as dt

from velocity_platform.deltas.report import ReportWindow

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def test_an_unreported_window_is_carried_into_the_next():
    unreported = ReportWindow(started_at=T0, batches=3, documents=30, lines=61, dead_lettered=1, first_slots=2,
                              acked=2, late_lines=4, no_free_location=1, latencies_ms=[20.0, 30.0],
                              spikes=[{"sku_id": "SKU-1"}])
    window = ReportWindow(started_at=T0 + dt.timedelta(seconds=10), batches=1, documents=5, lines=9, acked=1,
                          rejected=1, latencies_ms=[25.0])
    window.carry(unreported)
    assert (window.batches, window.documents, window.lines, window.dead_lettered) == (4, 35, 70, 1)
    assert (window.first_slots, window.acked, window.rejected, window.late_lines, window.no_free_location) == (2, 3, 1, 4, 1)
    assert window.latencies_ms == [20.0, 30.0, 25.0] and window.spikes == [{"sku_id": "SKU-1"}]
    assert window.started_at == T0
    figures = window.metadata()
    assert figures["window_start"] == "2026-12-01T10:00:00+00:00" and figures["skus_without_free_location"] == 1
