"""What the exception service did, as runless events on the external asset `exception_deltas`.

The service sums its batches over a short window (`VELOCITY_DELTAS_REPORT_INTERVAL_S`, 10 s by
default) and reports each window as one AssetMaterialization with its counts and latency
percentiles, plus one AssetObservation per spike, through `DagsterInstance.report_runless_asset_event`
on the instance of DAGSTER_HOME (the same storage the UI reads). At 500 documents a second a
batch is a few milliseconds of commits; one event per batch would be hundreds a second in the
event log, which the UI's asset page cannot show usefully. A failed report is logged and the
window's figures are kept for the next one: the service never stops for its reporting.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field

import dagster as dg
import numpy as np

ASSET_KEY = dg.AssetKey("exception_deltas")
log = logging.getLogger(__name__)


@dataclass
class ReportWindow:
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    batches: int = 0
    documents: int = 0
    lines: int = 0
    dead_lettered: int = 0
    first_slots: int = 0
    acked: int = 0
    rejected: int = 0
    late_lines: int = 0
    no_free_location: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    spikes: list[dict] = field(default_factory=list)
    read_through: dt.datetime | None = None
    settled_pending: int = 0
    warehouse_id: str | None = None  # the site the window is of (a network reports one window per site)

    def empty(self) -> bool:
        return not (self.batches or self.acked or self.rejected or self.spikes)

    def carry(self, unreported: ReportWindow) -> None:
        """Take in an earlier window the instance could not take: its counts added, its latencies
        and spikes kept, its start kept (this window now covers both)."""
        for name in ("batches", "documents", "lines", "dead_lettered", "first_slots", "acked", "rejected", "late_lines", "no_free_location"):
            setattr(self, name, getattr(self, name) + getattr(unreported, name))
        self.latencies_ms = unreported.latencies_ms + self.latencies_ms
        self.spikes = unreported.spikes + self.spikes
        self.started_at = min(self.started_at, unreported.started_at)

    def metadata(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        figures: dict = {
            **({"warehouse": self.warehouse_id} if self.warehouse_id else {}),
            "window_start": self.started_at.isoformat(timespec="seconds"),
            "window_end": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "batches": self.batches,
            "documents": self.documents,
            "lines": self.lines,
            "dead_lettered_lines": self.dead_lettered,
            "first_slots_planned": self.first_slots,
            "first_slots_acknowledged": self.acked,
            "first_slots_rejected": self.rejected,
            "late_lines_recorded": self.late_lines,
            "spikes_observed": len(self.spikes),
            "skus_without_free_location": self.no_free_location,
            "outbox_pending": self.settled_pending,
        }
        if lat is not None:
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            figures.update(
                latency_p50_ms=dg.MetadataValue.float(round(float(p50), 1)),
                latency_p95_ms=dg.MetadataValue.float(round(float(p95), 1)),
                latency_p99_ms=dg.MetadataValue.float(round(float(p99), 1)),
                latency_max_ms=dg.MetadataValue.float(round(float(lat.max()), 1)),
            )
        if self.read_through is not None:
            figures["erp_read_through"] = self.read_through.isoformat()
        return figures


class DagsterReporter:
    """Runless events on the Dagster instance of DAGSTER_HOME (none without it)."""

    def __init__(self) -> None:
        self._instance: dg.DagsterInstance | None = None
        self.enabled = bool(os.environ.get("DAGSTER_HOME"))

    def _get(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.get()
        return self._instance

    def warm_up(self) -> None:
        """Open the instance before the service is ready: its first opening (storage migrations
        included) takes seconds of CPU that must not land between an ERP commit and its ack."""
        if self.enabled:
            try:
                self._get()
            except Exception as exc:  # noqa: BLE001  # reporting must never stop the service
                log.warning("the Dagster instance could not be opened (%s); reports will be tried again", type(exc).__name__)

    def report(self, window: ReportWindow) -> bool:
        """Report one window; False when the instance could not take it (kept for the next try)."""
        if not self.enabled:
            return True
        try:
            instance = self._get()
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=ASSET_KEY,
                    description=(
                        f"{window.warehouse_id + ': ' if window.warehouse_id else ''}{window.first_slots} exception(s) slotted, "
                        f"{window.dead_lettered} line(s) dead-lettered"
                    ),
                    metadata=window.metadata(),
                )
            )
            for spike in window.spikes[:25]:
                instance.report_runless_asset_event(
                    dg.AssetObservation(
                        asset_key=ASSET_KEY,
                        description=(
                            f"demand spike: {spike['sku_id']} ordered {spike['units']:,.0f} eaches today, "
                            f"{spike['multiple_of_peak_day'] or 0:,.0f}x its largest day of the 90 before "
                            f"({spike['peak_day_units']:,.0f}); recorded only, nothing moves"
                        ),
                        metadata={
                            **({"warehouse": window.warehouse_id} if window.warehouse_id else {}),
                            **{k: v for k, v in spike.items() if v is not None},
                        },
                    )
                )
            return True
        except Exception as exc:  # noqa: BLE001  # reporting must never stop the service
            log.warning("could not report to the Dagster instance (%s); the figures wait for the next window", type(exc).__name__)
            return False

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None
