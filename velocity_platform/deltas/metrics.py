"""The exception service's Prometheus metrics, served on loopback (`/metrics`).

One registry and one endpoint for the process, whatever the number of sites it follows: every
metric carries a `warehouse` label (the site's id, `WH-01` for the default site), so a site's
figures are `delta_sync_latency_seconds_count{warehouse="WH-02"}` and the network's are their
sum (`sum without (warehouse) (...)`). A site's part of the service takes its figures through
`DeltaMetrics.site`, which binds the label once.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

SITE_LABEL = "warehouse"

# Tens of milliseconds is the goal, 500 ms the seed's budget; the long tail is a WMS outage.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class DeltaMetrics:
    """One registry per service (tests start several in a process); each metric labelled by site."""

    NAMES = (
        "sync_latency", "exception_stages", "batch_duration", "chunk_success_rate", "concurrency_utilization",
        "dead_lettered", "lines", "documents", "exceptions", "acks", "erp_lag", "queue_batches", "outbox_pending",
        "read_errors",
    )

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sync_latency = Histogram(
            "delta_sync_latency_seconds",
            "ERP commit of the line that caused an exception to the WMS acknowledgement of its directive",
            [SITE_LABEL],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.exception_stages = Histogram(
            "delta_exception_stage_seconds",
            "Where an exception's time goes: read (ERP commit to the service asking for it: the read in "
            "progress), erp (the ERP's answer), record (judged and recorded), queue (recorded to posted to "
            "the WMS), wms (posted to answered)",
            [SITE_LABEL, "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "batch_processing_duration_seconds",
            "One read of the ERP judged and recorded: parsing, validation, exceptions, the store transaction",
            [SITE_LABEL],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.chunk_success_rate = Gauge(
            "chunk_success_rate", "Share of the directives of the last WMS request that were acknowledged", [SITE_LABEL], registry=r
        )
        self.concurrency_utilization = Gauge(
            "concurrency_utilization", "WMS requests in flight over the service's concurrency bound", [SITE_LABEL], registry=r
        )
        self.dead_lettered = Counter("delta_dead_lettered_lines", "Lines rejected into delta_dead_letters", [SITE_LABEL], registry=r)
        self.lines = Counter("delta_lines", "Order lines read from the ERP", [SITE_LABEL], registry=r)
        self.documents = Counter("delta_documents", "Order documents read from the ERP", [SITE_LABEL], registry=r)
        self.exceptions = Counter(
            "delta_exceptions", "What the service acted on or recorded", [SITE_LABEL, "kind"], registry=r
        )  # first_slot, spike, late_line, new_sku, no_free_location
        self.acks = Counter("delta_wms_answers", "WMS answers to the service's directives", [SITE_LABEL, "status"], registry=r)
        self.erp_lag = Gauge(
            "delta_erp_lag_seconds",
            "Age of the oldest document the last ERP read returned (0: the read came back empty, caught up)",
            [SITE_LABEL],
            registry=r,
        )
        self.queue_batches = Gauge("delta_queue_batches", "Batches of exceptions waiting for a WMS pusher", [SITE_LABEL], registry=r)
        self.outbox_pending = Gauge("delta_outbox_pending", "The service's directives not yet acknowledged", [SITE_LABEL], registry=r)
        self.read_errors = Counter("delta_erp_read_errors", "ERP reads that failed after the client's retries", [SITE_LABEL], registry=r)

    def site(self, warehouse_id: str) -> "SiteMetrics":
        return SiteMetrics(self, warehouse_id)

    def serve(self, port: int) -> tuple[WSGIServer, threading.Thread] | None:
        """Serve /metrics on 127.0.0.1:port (never another interface); None when port is 0."""
        if not port:
            return None
        return start_http_server(port, addr="127.0.0.1", registry=self.registry)


class _SiteLabelled:
    """A metric with more labels than the site: `.labels(value)` with the site already given."""

    def __init__(self, metric: MetricWrapperBase, warehouse_id: str) -> None:
        self._metric, self._site = metric, warehouse_id

    def labels(self, *values: str):
        return self._metric.labels(self._site, *values)


class SiteMetrics:
    """One site's figures in the process's registry: the same attributes as DeltaMetrics, each
    already labelled with the site (a metric with another label takes that one in `.labels`)."""

    def __init__(self, metrics: DeltaMetrics, warehouse_id: str) -> None:
        self.warehouse_id = warehouse_id
        for name in DeltaMetrics.NAMES:
            metric: MetricWrapperBase = getattr(metrics, name)
            more = len(metric._labelnames) > 1
            setattr(self, name, _SiteLabelled(metric, warehouse_id) if more else metric.labels(warehouse_id))
