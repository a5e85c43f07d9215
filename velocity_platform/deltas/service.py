"""The resident exception service: ERP commits to WMS acknowledgements in tens of milliseconds.

One asyncio loop, three kinds of task:

- **intake** (one): follows the ERP's commits from the store's read watermark (long polling
  where the ERP offers it, otherwise polling that backs off while the ERP is idle), validates
  every line with the batch's rules, judges the exceptions (`domain/exceptions.py`) and records
  everything a read produced with the watermark in one transaction (`connectors/delta_store.py`).
  The directives go on a bounded queue.
- **pushers** (`push_concurrency` of them): take directives off the queue and post them to the
  WMS in one batch request each, then settle the answers (and the settled watermark) in one
  transaction. When the queue is full the intake waits on it, so a slow WMS slows reading:
  memory stays bounded by the queue, and the ERP keeps what is not read yet.
- **drainer** (one): re-sends what is pending in the outbox (the WMS was down, its circuit
  open, or a previous instance died mid-push), with a growing pause while the WMS keeps failing.

Plus the reporter (runless events on `exception_deltas`) and the metrics server (loopback).

A network (docs/deltas.md, "Many warehouses"): one process and one loop follow every registered
site, each with a `DeltaService` of its own -- its reference picture, expected rates, time zone,
watermarks, units of the day, outbox view and pushers, its ERP filter and its WMS -- so a slow or
failing site never holds another back. The sites share the metrics registry (labelled by
`warehouse`), the /metrics endpoint, the reporter and the store's engine. With no site registered
there is one, the deployment's default site, run exactly as the one-warehouse service was.
The domain work (polars on a few hundred lines) and the store transactions run in a worker
thread, so the loop keeps serving the WMS requests in flight meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

import duckdb
import orjson
import polars as pl
from deltalake.exceptions import DeltaError

from velocity_platform.connectors import delta_store
from velocity_platform.connectors.erp import AsyncErpClient
from velocity_platform.connectors.erp_pages import (
    ReceivedPage,
    raw_lines_from_received,
    read_erp_page,
    read_sku_page,
    sku_master_from_pages,
)
from velocity_platform.connectors.http import UpstreamError
from velocity_platform.connectors.state import ACKED, REJECTED, OperationalStore, Outcome, OutboxRow, new_pusher_id
from velocity_platform.connectors.wms import AsyncWmsClient, directive_body
from velocity_platform.connectors.wms_pages import locations_from_pages, read_assignment_page, read_location_page
from velocity_platform.defs.resources import ErpResource, WmsResource
from velocity_platform.defs.tables import WAREHOUSE_COLUMN, WarehouseTables
from velocity_platform.deltas.metrics import DeltaMetrics, SiteMetrics
from velocity_platform.deltas.report import DagsterReporter, ReportWindow
from velocity_platform.domain import exceptions
from velocity_platform.domain.contracts import SKU_ID_PATTERN
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID, Warehouse, with_site_directive_ids
from velocity_platform.domain.deltas import SPIKES_SCHEMA, SpikePolicy, ordered_eaches, outside_range, spike_baseline_sql
from velocity_platform.domain.slotting import DEFAULT_BANDS, SlottingConfig, free_slots
from velocity_platform.domain.validation import parse_quantity, parse_utc_timestamp, validate_lines
from velocity_platform.settings import DeltaServiceSettings, Settings

log = logging.getLogger("velocity_platform.deltas")
ONE_MICROSECOND = delta_store.ONE_MICROSECOND
LEASE = dt.timedelta(minutes=5)


@dataclass
class Reference:
    """What the service knows of the warehouse between refreshes."""

    sku_master: pl.DataFrame  # SKU_MASTER_SCHEMA
    locations: pl.DataFrame  # the WMS location master
    slotted: pl.Series  # sku_id of every SKU with a location (or a first slot on its way)
    free: pl.DataFrame  # free locations as slotting.first_slot takes them
    band_locations: int


SPIKE_BASELINE_SCHEMA = {"sku_id": pl.String, "peak_day_units": pl.Float64, "days_sold": pl.Int64}
# The tables the rates are read from: a write of either is a nightly materialization.
RATE_TABLES = ["sku_velocity", "daily_sku_demand"]
# What changes when they are written (WarehouseTables.stamp: their Delta logs, or the DuckDB file).
FileStamp = tuple


@dataclass(frozen=True)
class Rates:
    """The nightly tables' expected pick rates and each SKU's range of daily demand, as read at
    one state of the tables. Replaced whole (one attribute assignment), never changed, so a
    judgement in the worker thread sees one version from start to end."""

    velocity: pl.DataFrame  # sku_id, expected_pick_lines_per_day (latest sku_velocity; may be empty)
    spike_baseline: pl.DataFrame  # sku_id, peak_day_units, days_sold over the 90 days before (may be empty)
    read_at: FileStamp | None = None  # None: never read

    @classmethod
    def none(cls) -> Rates:
        return cls(pl.DataFrame(schema=exceptions.EXPECTED_RATES_SCHEMA), pl.DataFrame(schema=SPIKE_BASELINE_SCHEMA))


class RatesReader:
    """The expected rates of every site of the process from one read of the DuckDB file per state
    of it (the nightly run writes every site's rows; the sites look at the file's stamp each
    before its reads, so the second one finds the first's read). Each site's rates come from its
    own rows only (a session scoped to the site). A table without the site column was written
    before the network, by the one default site: it is that site's, and no other site's."""

    def __init__(self, tables: WarehouseTables, sites: list[str]) -> None:
        self.tables, self.sites = tables, list(sites)
        self._lock = threading.Lock()  # the sites' reads run in worker threads
        self._last: tuple[FileStamp, dict[str, Rates]] | None = None

    def read(self, stamp: FileStamp) -> dict[str, Rates] | Exception | None:
        """Each site's rates at `stamp`; None: no file yet; the error when the file is busy (not
        kept: the next look reads again)."""
        if all(part is None for part in stamp):
            return None
        with self._lock:
            if self._last is not None and self._last[0] == stamp:
                return self._last[1]
            fresh = Rates.none()
            read: dict[str, Rates] = {}
            try:
                with self.tables.session(read_only=True) as whole:
                    for site in self.sites:
                        tables = whole.scoped(site)

                        def of_site(table: str) -> bool:
                            columns = tables.columns(table)
                            return bool(columns) and (WAREHOUSE_COLUMN in columns or site == DEFAULT_WAREHOUSE_ID)

                        velocity = tables.query("sku_velocity", exceptions.expected_rates_sql) if of_site("sku_velocity") else fresh.velocity
                        baseline = (
                            tables.query("daily_sku_demand", spike_baseline_sql) if of_site("daily_sku_demand") else fresh.spike_baseline
                        )
                        read[site] = Rates(velocity, baseline, stamp)
            except (duckdb.Error, OSError, DeltaError) as exc:
                return exc
            self._last = (stamp, read)
            return read


@dataclass
class Judged:
    """One read of the ERP, judged: what goes into the store in one transaction, and the figures."""

    batch: delta_store.DeltaBatch
    documents: int
    lines: int
    dead_lettered: int
    directives: pl.DataFrame
    free_left: pl.DataFrame
    units_today: pl.DataFrame
    today: dt.date
    no_free_location: list[str]
    spikes: list[dict]
    oldest_commit: dt.datetime | None


@dataclass
class FollowPolicy:
    """How the intake follows the ERP (docs/deltas.md, "Following the ERP").

    With long polling (`long_poll_s` > 0) every read asks the ERP to hold an empty answer up to
    `long_poll_s`: while commits flow each read returns at once with what accumulated during the
    previous round (batches grow with the volume, no pause); when idle the ERP answers the moment
    something is committed. Without it, a read that found nothing is followed by a pause that
    starts at `min_interval_s` and doubles up to `max_interval_s`; any document resets it.
    """

    long_poll_s: float
    min_interval_s: float
    max_interval_s: float
    pause_s: float = 0.0

    def after_read(self, documents: int) -> float:
        """The pause before the next read."""
        if documents or self.long_poll_s > 0:
            self.pause_s = 0.0
        else:
            self.pause_s = self.min_interval_s if self.pause_s == 0 else min(self.max_interval_s, self.pause_s * 2)
        return self.pause_s

    def after_error(self) -> float:
        self.pause_s = min(self.max_interval_s * 5, max(self.min_interval_s, self.pause_s * 2) if self.pause_s else 0.1)
        return self.pause_s


@dataclass
class DeltaService:
    settings: Settings
    config: DeltaServiceSettings
    erp: ErpResource
    wms: WmsResource
    store: OperationalStore
    metrics: DeltaMetrics = field(default_factory=DeltaMetrics)
    reporter: DagsterReporter = field(default_factory=DagsterReporter)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    # The registered site this part of the service follows; None: the deployment's one default
    # site, on the settings' time zone and routing, asking the ERP and the WMS for no site (as
    # the one-warehouse service did).
    site: Warehouse | None = None
    # Shared by the sites of a process: one read of the tables per nightly write for all of them.
    rates_reader: RatesReader | None = None

    def __post_init__(self) -> None:
        self.warehouse_id = self.site.warehouse_id if self.site else DEFAULT_WAREHOUSE_ID
        # What the ERP and the WMS are asked for: a registered site's own documents and locations.
        self.site_filter = self.site.warehouse_id if self.site else None
        self.timezone = self.site.timezone if self.site else self.settings.timezone
        self.routing = self.site.routing if self.site else self.settings.slotting.routing
        if self.site is not None:
            self.store = self.store.for_site(self.warehouse_id)
            # What `WmsResource.for_site` gives, from the registered facts in hand (whatever store
            # the resource was told of): the site's WMS URL, else the deployment's; its site filter.
            self.wms = self.wms.model_copy(
                update={"warehouse_id": self.warehouse_id, "base_url": self.site.wms_url or self.wms.base_url}
            )
        self.m: SiteMetrics = self.metrics.site(self.warehouse_id)  # this site's figures, labelled once
        self.tz = ZoneInfo(self.timezone)
        if self.rates_reader is None:
            self.rates_reader = RatesReader(WarehouseTables.of_settings(self.settings), [self.warehouse_id])
        self.pusher = new_pusher_id("deltas")
        self.queue: asyncio.Queue[list[OutboxRow]] = asyncio.Queue(maxsize=self.config.queue_batches)
        self.window = ReportWindow(warehouse_id=self.warehouse_id)
        self.policy = FollowPolicy(self.config.long_poll_s, self.config.min_interval_s, self.config.max_interval_s)
        self.reference: Reference | None = None
        self.rates = Rates.none()
        self._rates_said: str | None = None  # the last thing logged about the rates: each said once
        self.read_through: dt.datetime | None = None
        self.units_today = pl.DataFrame(schema={"sku_id": pl.String, "units": pl.Float64})
        self.spike_policy = SpikePolicy(self.config.spike_multiple, self.config.spike_min_units, self.config.spike_min_days_sold)
        self.counted_on: dt.date | None = None
        self.in_flight = 0
        self.recorded_at: dict[str, dt.datetime] = {}  # directive_id -> when its read was recorded (until posted)
        self.refresh_due = 0.0
        self.wms_failing = asyncio.Event()
        self.rejected_since_refresh = 0
        self._lookup = None  # a sync ERP client for SKU lookups from the worker thread (same guard)

    def _close_lookup(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    # --- reference data ------------------------------------------------------------------------

    def load_reference(self) -> Reference:
        """SKU master, locations, assignment (with the outbox's pending moves) and expected rates."""
        with self.erp.client() as erp:
            master = sku_master_from_pages(erp.skus(reader=read_sku_page))
        with self.wms.client() as wms:
            locations = locations_from_pages(
                wms.locations(read_location_page, warehouse_id=self.site_filter),
                wms.assignments(read_assignment_page, warehouse_id=self.site_filter),
            )
        assignment = locations.filter(pl.col("sku_id").is_not_null()).select("sku_id", "location_id")
        # A pending move may be applied already, or will be: its SKU is slotted and its target taken.
        pending = [r for r in self.store.outbox() if r.status == "pending"]
        if pending:
            moves = pl.DataFrame(
                {"sku_id": [r.sku_id for r in pending], "location_id": [r.to_location for r in pending]},
                schema={"sku_id": pl.String, "location_id": pl.String},
            )
            left = {r.from_location for r in pending if r.from_location}
            assignment = pl.concat(
                [assignment.filter(~pl.col("sku_id").is_in(moves["sku_id"].implode()) & ~pl.col("location_id").is_in(list(left))), moves]
            )
        config = SlottingConfig(routing=self.routing)
        band_locations = max(1, -(-locations.height // DEFAULT_BANDS))
        return Reference(
            sku_master=master,
            locations=locations,
            slotted=assignment["sku_id"].unique(),
            free=free_slots(locations.drop("sku_id"), assignment, config),
            band_locations=band_locations,
        )

    def rates_changed(self) -> bool:
        """Whether the warehouse tables were written since the rates were read (a nightly
        materialization, or the first one): only then are they read again."""
        return self.rates_reader.tables.stamp(RATE_TABLES) != self.rates.read_at

    def refresh_rates(self) -> Rates:
        """Read the expected pick rates (the newest sku_velocity date) and each SKU's range of daily
        demand (the spike baseline: the 90 days up to the newest daily_sku_demand date) if the
        tables changed since the last read, and swap them in. Empty before the first nightly run;
        the previous ones while the file is busy (a nightly run writing it: read again once it is
        written). Each state (no tables yet, busy, read) is logged once, not at every look."""
        stamp = self.rates_reader.tables.stamp(RATE_TABLES)
        if stamp == self.rates.read_at:
            return self.rates
        return self.take_rates(stamp, self.rates_reader.read(stamp))

    def take_rates(self, stamp: FileStamp, read: dict[str, Rates] | Exception | None) -> Rates:
        """Swap in this site's part of one read of the tables (`RatesReader.read`) and say what it was."""
        path = self.rates_reader.tables.location
        site = self.warehouse_id
        if read is None:
            self.rates = replace(Rates.none(), read_at=stamp)
            self._say_once(f"{site}: no warehouse tables in {path} yet: no expected pick rates or demand ranges until the first nightly run")
            return self.rates
        if isinstance(read, Exception):
            kept = self.rates.velocity.height
            self._say_once(
                f"{site}: expected pick rates and demand ranges not read ({type(read).__name__}: the tables are being written?); "
                f"{kept} rates kept until it is written"
            )
            return self.rates
        self.rates = read.get(site) or replace(Rates.none(), read_at=stamp)
        velocity, baseline = self.rates.velocity, self.rates.spike_baseline
        if velocity.is_empty() and baseline.is_empty():
            self._say_once(f"{site}: {path} has no sku_velocity or daily_sku_demand of the site yet: no expected rates until its first nightly run")
        else:
            self._rates_said = None
            log.info("%s: expected pick rates of %d SKUs and demand ranges of %d read from %s", site, velocity.height, baseline.height, path)
        return self.rates

    def _say_once(self, message: str) -> None:
        if message != self._rates_said:
            self._rates_said = message
            log.info(message)

    async def refresh_reference(self) -> None:
        self.reference = await asyncio.to_thread(self.load_reference)
        await asyncio.to_thread(self.refresh_rates)
        self.refresh_due = time.monotonic() + self.config.reference_refresh_s
        self.rejected_since_refresh = 0

    # --- judging a read ------------------------------------------------------------------------

    def _raw_lines(self, pages: list) -> pl.DataFrame:
        received = [ReceivedPage(p.source_batch, p.body, p.parsed, p.error, p.fetches) for p in pages]
        today = self.clock().astimezone(self.tz).date()
        raw = raw_lines_from_received(received, today).lines
        # Each line's business date is its event time's date in the warehouse (null if unreadable).
        return raw.with_columns(
            pl.coalesce(
                parse_utc_timestamp("event_ts").dt.convert_time_zone(self.timezone).dt.date(),
                pl.when(pl.col("page_error").is_not_null()).then(pl.lit(today)),
            ).alias("business_date")
        )

    def unknown_skus(self, raw: pl.DataFrame) -> list[str]:
        """Well-formed SKU ids on the lines that the service's SKU master lacks."""
        assert self.reference is not None
        ids = raw.select(pl.col("sku_id").str.strip_chars()).unique()
        return (
            ids.filter(pl.col("sku_id").str.contains(SKU_ID_PATTERN))
            .join(self.reference.sku_master.select("sku_id"), on="sku_id", how="anti")["sku_id"]
            .sort()
            .to_list()
        )

    def judge(self, raw: pl.DataFrame, capped: bool, new_skus: pl.DataFrame, documents: int) -> Judged | None:
        """Validate, find the exceptions, and build the batch to record. None when the read holds
        nothing with a readable commit time to advance the watermark on."""
        ref, rates = self.reference, self.rates  # one version of each for the whole judgement
        assert ref is not None
        now = self.clock()
        today = now.astimezone(self.tz).date()
        committed = raw.with_columns(parse_utc_timestamp("created_at").alias("_committed"))
        newest = committed["_committed"].max()
        if newest is None:
            return None
        read_through = newest
        if capped:
            # More pages wait: the documents of the newest commit time may straddle the cut, so
            # they are left for the next read, which starts exactly at that time.
            earlier = committed.filter(pl.col("_committed") < newest)
            if earlier.height:
                committed, read_through = earlier, newest - ONE_MICROSECOND
        oldest = committed["_committed"].min()
        raw = committed.drop("_committed")
        master = ref.sku_master if new_skus.is_empty() else pl.concat([ref.sku_master, new_skus], how="vertical_relaxed")
        result = validate_lines(raw, master, seen_at=now)
        valid, rejects = result.valid, result.rejects

        if self.counted_on != today:
            self.units_today, self.counted_on = self.units_today.clear(), today
        picks = exceptions.pick_lines(valid)
        # The day's running total of eaches per SKU, judged against each SKU's own range.
        eaches = ordered_eaches(valid.filter(pl.col("business_date") == today), master)
        units_today = pl.concat([self.units_today, eaches]).group_by("sku_id").agg(pl.col("units").sum())
        unslotted = picks.filter(~pl.col("sku_id").is_in(ref.slotted.implode()))
        directives, free_left = exceptions.first_slot_directives(today, unslotted, rates.velocity, ref.free, ref.band_locations)
        # Ids unique across the network (the default site's as they always were): the outbox is shared.
        directives = with_site_directive_ids(directives, self.warehouse_id)
        no_slot = (
            unslotted.join(directives.select("sku_id"), on="sku_id", how="anti")["sku_id"].to_list() if unslotted.height else []
        )
        spiking = (
            outside_range(units_today.filter(pl.col("sku_id").is_in(eaches["sku_id"].implode())), rates.spike_baseline, self.spike_policy)
            if rates.spike_baseline.height and eaches.height
            else pl.DataFrame(schema=SPIKES_SCHEMA)
        )
        late = exceptions.before(raw.filter(pl.col("page_error").is_null() & pl.col("business_date").is_not_null()), today)

        batch = delta_store.DeltaBatch(read_through=read_through)
        batch.directives = [
            {
                "directive_id": d["directive_id"],
                "business_date": d["business_date"],
                "warehouse_id": self.warehouse_id,
                "sku_id": d["sku_id"],
                "from_location": None,
                "to_location": d["to_location"],
                "source_committed_at": d["first_committed_at"],
                # A registered site's directive names it: a network WMS routes by it (and refuses
                # one naming none); the default site's payload stays as the one-site WMS took it.
                "payload": directive_body(
                    {**d, "warehouse_id": self.site_filter, "from_location": None, "expected_saving_m_per_day": 0.0},
                    priority=0,
                    expected_pick_lines_per_day=d["expected_pick_lines_per_day"],
                    origin=delta_store.ORIGIN,
                ),
            }
            for d in directives.iter_rows(named=True)
        ]
        batch.dead_letters = [] if rejects.is_empty() else rejects.select(
            "business_date", "source_batch", "txn_id", "line_no", "sku_id", "raw_payload", "reasons", "fields"
        ).with_columns(pl.col("source_batch").fill_null("erp-delta")).to_dicts()
        batch.late_lines = [] if late.is_empty() else late.select(
            "business_date",
            "txn_id",
            pl.col("txn_type").str.strip_chars().str.to_uppercase(),
            pl.col("sku_id").str.strip_chars(),
            parse_quantity("quantity").alias("quantity"),
            pl.col("uom").str.strip_chars().str.to_uppercase(),
            parse_utc_timestamp("created_at").alias("created_at"),
        ).to_dicts()
        spikes = [
            {
                "kind": "spike",
                "sku_id": spike["sku_id"],
                "business_date": today,
                "detail": {**spike, "business_date": today.isoformat()},
            }
            for spike in spiking.iter_rows(named=True)
        ]
        batch.observations = spikes + [
            {"kind": "new_sku", "sku_id": sku, "business_date": today, "detail": {"sku_id": sku}}
            for sku in new_skus["sku_id"].to_list()
        ] + [
            {"kind": "no_free_location", "sku_id": sku, "business_date": today, "detail": {"sku_id": sku}}
            for sku in no_slot
        ]
        return Judged(
            batch, documents, raw.height, rejects.height, directives, free_left, units_today, today, no_slot,
            [s["detail"] for s in spikes], oldest,
        )

    def record(self, judged: Judged, new_skus: pl.DataFrame) -> delta_store.Recorded:
        """Write the batch, then (only once it is committed) move the service's own picture on."""
        recorded = delta_store.record_batch(self.store, judged.batch, self.pusher, LEASE)
        ref = self.reference
        assert ref is not None
        ref.free = judged.free_left
        ref.slotted = pl.concat([ref.slotted, judged.directives["sku_id"]]).unique()
        if not new_skus.is_empty():
            ref.sku_master = pl.concat([ref.sku_master, new_skus], how="vertical_relaxed")
        self.units_today = judged.units_today
        self.read_through = judged.batch.read_through
        return recorded

    # --- the tasks -------------------------------------------------------------------------------

    async def intake(self, erp: AsyncErpClient) -> None:
        while True:
            if time.monotonic() >= self.refresh_due or self.rejected_since_refresh:
                try:
                    await self.refresh_reference()
                except Exception as exc:  # noqa: BLE001  # the previous picture stays; tried again next round
                    log.warning("%s: re-reading locations, assignments and rates failed (%s); the previous ones stay", self.warehouse_id, exc)
                    self.refresh_due = time.monotonic() + self.config.min_interval_s * 100
            if self.rates_changed():  # a stat of the file: the read itself only after a nightly write
                await asyncio.to_thread(self.refresh_rates)
            try:
                documents = await self.read_round(erp, self.policy.long_poll_s)
            except UpstreamError as exc:
                self.m.read_errors.inc()
                pause = self.policy.after_error()
                log.warning(
                    "%s: reading the ERP failed (%s); reading again in %.1f s from the same watermark", self.warehouse_id, exc, pause
                )
                await asyncio.sleep(pause)
                continue
            except Exception:  # a bug or the store gone: logged, and read again from the same watermark
                log.exception("%s: a read of the ERP could not be judged or recorded; reading it again", self.warehouse_id)
                await asyncio.sleep(self.policy.after_error())
                continue
            pause = self.policy.after_read(documents)
            if pause:
                await asyncio.sleep(pause)

    async def read_round(self, erp: AsyncErpClient, wait_s: float) -> int:
        """One read of the ERP from the watermark: judged, recorded, its directives queued.
        Returns the documents read (0: caught up)."""
        assert self.read_through is not None and self.reference is not None
        asked_at = self.clock()
        pages = await erp.committed_since(
            self.read_through + ONE_MICROSECOND,
            read_erp_page,
            wait_s=wait_s,
            max_pages=self.config.max_pages,
            warehouse_id=self.site_filter,
        )
        received_at = self.clock()
        documents = sum(p.parsed.documents.height for p in pages if p.parsed is not None)
        if not documents and not any(p.error is not None for p in pages):
            self.m.erp_lag.set(0)
            return 0
        started = time.perf_counter()
        # One hop to a worker thread for the whole read: parsing, the SKU lookup, judging, recording.
        outcome = await asyncio.to_thread(self.process, pages, documents)
        if outcome is None:
            log.error(
                "%s: %d document(s) read and none has a readable created_at: the watermark cannot advance", self.warehouse_id, documents
            )
            await asyncio.sleep(self.config.max_interval_s)
            return 0
        judged, recorded = outcome
        self.m.batch_duration.observe(time.perf_counter() - started)
        self._count(judged, recorded)
        self._stages_read_and_recorded(recorded.directives, asked_at, received_at, self.clock())
        if recorded.directives:
            self.m.queue_batches.set(self.queue.qsize() + 1)
            await self.queue.put(recorded.directives)  # waits while the WMS is behind: backpressure
        return max(documents, 1)

    def _stages_read_and_recorded(
        self, rows: list[OutboxRow], asked_at: dt.datetime, received_at: dt.datetime, recorded_at: dt.datetime
    ) -> None:
        """The first stages of each exception of a read: `read` (committed before the service asked:
        waiting for the read in progress to end), `erp` (the ERP's answer, from the later of the
        request and the commit) and `record`; `queue` and `wms` follow in `push`."""
        stages = self.m.exception_stages
        for row in rows:
            if row.source_committed_at is not None:
                committed = _utc(row.source_committed_at)
                stages.labels("read").observe(max(0.0, (asked_at - committed).total_seconds()))
                stages.labels("erp").observe(max(0.0, (received_at - max(asked_at, committed)).total_seconds()))
            stages.labels("record").observe((recorded_at - received_at).total_seconds())
            self.recorded_at[row.directive_id] = recorded_at

    def process(self, pages: list, documents: int) -> tuple[Judged, delta_store.Recorded] | None:
        """A read, in the worker thread: raw lines, the products the ERP registered since the SKU
        master was read (looked up by id, with the sync client on the same guard), the judgement
        and the transaction that records it."""
        assert self.reference is not None
        raw = self._raw_lines(pages)
        unknown = self.unknown_skus(raw)
        new_skus = pl.DataFrame(schema=self.reference.sku_master.schema)
        if unknown:
            try:
                if self._lookup is None:
                    self._lookup = self.erp.client()
                new_skus = sku_master_from_pages([self._lookup.skus_by_id(unknown, read_sku_page)])
            except UpstreamError as exc:
                # Their lines are dead-lettered as unknown SKUs, with the reason; the read goes on.
                log.warning("%s: looking up %d new SKU(s) in the ERP failed (%s)", self.warehouse_id, len(unknown), exc)
        judged = self.judge(raw, len(pages) >= self.config.max_pages, new_skus, documents)
        if judged is None:
            return None
        return judged, self.record(judged, new_skus)

    async def catch_up(self) -> int:
        """Read (and record) everything the ERP has committed since the watermark, without
        pushing: what the delta sensor's tests and a one-off catch-up need. Returns documents read.
        Directives recorded stay pending in the outbox for the next running service."""
        if self.reference is None:
            await self.start()
        erp = self.erp.async_client()
        read = 0
        try:
            while True:
                documents = await self.read_round(erp, 0.0)
                while not self.queue.empty():
                    for row in self.queue.get_nowait():  # not pushed here: they wait in the outbox
                        self.recorded_at.pop(row.directive_id, None)
                if not documents:
                    return read
                read += documents
        finally:
            await erp.aclose()
            self._close_lookup()

    def _count(self, judged: Judged, recorded: delta_store.Recorded) -> None:
        m, w = self.m, self.window
        m.documents.inc(judged.documents)
        m.lines.inc(judged.lines)
        m.dead_lettered.inc(judged.dead_lettered)
        m.exceptions.labels("first_slot").inc(len(recorded.directives))
        m.exceptions.labels("late_line").inc(len(judged.batch.late_lines))
        new_obs = {(o["kind"], o["sku_id"]) for o in recorded.observations}
        for kind in ("spike", "new_sku", "no_free_location"):
            m.exceptions.labels(kind).inc(sum(1 for k, _ in new_obs if k == kind))
        if judged.oldest_commit is not None:
            m.erp_lag.set(max(0.0, (self.clock() - judged.oldest_commit).total_seconds()))
        w.batches += 1
        w.documents += judged.documents
        w.lines += judged.lines
        w.dead_lettered += judged.dead_lettered
        w.first_slots += len(recorded.directives)
        w.late_lines += len(judged.batch.late_lines)
        w.no_free_location += len(judged.no_free_location)
        w.spikes.extend(s for s in judged.spikes if ("spike", s["sku_id"]) in new_obs)
        w.read_through = judged.batch.read_through
        if judged.no_free_location:
            log.warning(
                "%s: no free location left for %d new SKU(s), e.g. %s",
                self.warehouse_id, len(judged.no_free_location), judged.no_free_location[0],
            )

    async def pusher_task(self, wms: AsyncWmsClient) -> None:
        while True:
            rows = await self.queue.get()
            while len(rows) < self.settings.wms_push_batch_size and not self.queue.empty():
                rows += self.queue.get_nowait()  # what waits goes in the same request
            self.m.queue_batches.set(self.queue.qsize())
            await self.push(wms, rows)

    async def push(self, wms: AsyncWmsClient, rows: list[OutboxRow]) -> bool:
        """Post rows in one request and settle the answers; False when the WMS gave no answer
        (the rows stay pending, released for the drainer)."""
        self.in_flight += 1
        self.m.concurrency_utilization.set(self.in_flight / self.config.push_concurrency)
        sent_at = self.clock()
        stages = self.m.exception_stages
        for row in rows:
            queued_at = self.recorded_at.pop(row.directive_id, None)
            if queued_at is not None:  # a re-send of the drainer has no queue stage of its own
                stages.labels("queue").observe(max(0.0, (sent_at - queued_at).total_seconds()))
        try:
            outcomes = await wms.push_directives([orjson.loads(r.payload) for r in rows])
        except UpstreamError as exc:
            ids = [r.directive_id for r in rows]
            await asyncio.to_thread(self.store.record_failed_attempts, ids, str(exc), self.pusher)
            self.wms_failing.set()
            log.warning("%s: %d directive(s) wait in the outbox: %s", self.warehouse_id, len(ids), exc)
            return False
        finally:
            self.in_flight -= 1
            self.m.concurrency_utilization.set(self.in_flight / self.config.push_concurrency)
        answered = self.clock()
        for _ in rows:
            stages.labels("wms").observe((answered - sent_at).total_seconds())
        settled = [
            Outcome(o.directive_id, REJECTED if o.status == "rejected" else ACKED, o.http_status, o.ack_id, o.detail)
            for o in outcomes
        ]
        await asyncio.to_thread(delta_store.settle, self.store, settled, self.pusher)
        committed = {r.directive_id: r.source_committed_at for r in rows}
        acked = 0
        for outcome in settled:
            self.m.acks.labels(outcome.status).inc()
            if outcome.status == ACKED:
                acked += 1
                source = committed.get(outcome.directive_id)
                if source is not None:
                    latency = (answered - _utc(source)).total_seconds()
                    self.m.sync_latency.observe(latency)
                    self.window.latencies_ms.append(latency * 1000)
            else:
                log.warning("%s: the WMS refused first slot %s: %s", self.warehouse_id, outcome.directive_id, outcome.detail)
        self.window.acked += acked
        self.window.rejected += len(settled) - acked
        if len(settled) > acked:
            self.rejected_since_refresh += len(settled) - acked  # the picture of the WMS is stale: re-read it
        self.m.chunk_success_rate.set(acked / len(settled) if settled else 1.0)
        return True

    async def drainer(self, wms: AsyncWmsClient) -> None:
        """Re-send what waits in the outbox; while the WMS fails, once per breaker cool-down."""
        pause = 0.5
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wms_failing.wait(), timeout=pause)
            self.wms_failing.clear()
            rows = await asyncio.to_thread(delta_store.claim_pending, self.store, self.settings.wms_push_batch_size, self.pusher, LEASE)
            pending = await asyncio.to_thread(delta_store.pending_count, self.store)
            self.m.outbox_pending.set(pending)
            self.window.settled_pending = pending
            if not rows:
                pause = 5.0
                continue
            delivered = await self.push(wms, rows)
            # While the WMS fails, try again when its breaker lets a trial request through.
            pause = 0.05 if delivered else max(0.2, self.wms.breaker_reset_s)
            if not delivered:
                self.wms_failing.clear()

    async def flush_report(self) -> None:
        window, self.window = self.window, ReportWindow(warehouse_id=self.warehouse_id)
        if window.empty():
            return
        if not await asyncio.to_thread(self.reporter.report, window):
            self.window.carry(window)  # kept: reported with the next window

    # --- start and stop --------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the reference data and the watermark; take over an earlier instance's rows."""
        await self.refresh_reference()
        await asyncio.to_thread(self.reporter.warm_up)
        await asyncio.to_thread(delta_store.take_over_from_earlier_instances, self.store, self.pusher)
        watermark = await asyncio.to_thread(delta_store.read_watermark, self.store)
        if watermark is None:
            watermark = self.config.start or self.clock()
            await asyncio.to_thread(delta_store.set_read_watermark, self.store, watermark)
        self.read_through = watermark

    def launch(self, erp: AsyncErpClient, wms: AsyncWmsClient) -> tuple[list[asyncio.Task], list[asyncio.Task]]:
        """The site's tasks on the running loop: (intake and drainer, pushers)."""
        site = self.warehouse_id
        tasks = [
            asyncio.create_task(self.intake(erp), name=f"{site}:intake"),
            asyncio.create_task(self.drainer(wms), name=f"{site}:drainer"),
        ]
        pushers = [asyncio.create_task(self.pusher_task(wms), name=f"{site}:pusher-{i}") for i in range(self.config.push_concurrency)]
        return tasks, pushers

    async def run(self, stop: asyncio.Event, ready: Callable[[str], None] = lambda _: None) -> None:
        """Serve this one site until `stop` is set (`run_sites` with one site)."""
        await run_sites([self], stop, ready)


async def run_sites(sites: list[DeltaService], stop: asyncio.Event, ready: Callable[[str], None] = lambda _: None) -> None:
    """Serve every site on this loop until `stop` is set; then stop reading, let the requests in
    flight finish (a few seconds at most), flush the reports and close. What is still queued stays
    pending in the outbox and goes with the next start. The sites share the first one's metrics
    registry and endpoint, the reporter and the report interval."""
    first = sites[0]
    # Started one after the other: a site that cannot start (its WMS unreachable) stops the
    # command before it says it is ready, naming the site, rather than a network half served.
    for site in sites:
        try:
            await site.start()
        except Exception as exc:
            log.error("%s: the exception service could not start (%s)", site.warehouse_id, type(exc).__name__)
            raise
    server = first.metrics.serve(first.config.metrics_port)
    clients = [(site.erp.async_client(), site.wms.async_client()) for site in sites]
    tasks: list[asyncio.Task] = []
    pushers: list[asyncio.Task] = []
    for site, (erp, wms) in zip(sites, clients, strict=True):
        site_tasks, site_pushers = site.launch(erp, wms)
        tasks += site_tasks
        pushers += site_pushers

    async def reporting() -> None:
        # One reporter for the process: each site's window in turn (the instance is not shared across threads at once).
        while True:
            await asyncio.sleep(first.config.report_interval_s)
            for site in sites:
                await site.flush_report()

    tasks.append(asyncio.create_task(reporting(), name="report"))
    port = f"http://127.0.0.1:{first.config.metrics_port}/metrics" if server else "off"
    following = ", ".join(f"{site.warehouse_id} from {site.read_through.isoformat()}" for site in sites)
    ready(
        f"velocity-platform deltas: ready, following {len(sites)} warehouse(s): {', '.join(s.warehouse_id for s in sites)} "
        f"at the ERP {first.settings.erp_url} ({following}; metrics: {port})"
    )
    try:
        stopping = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([stopping, *tasks, *pushers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is not None and task.get_name() != "stop":
                raise task.exception()
    finally:
        for task in tasks:
            task.cancel()
        # Pushers mid-request finish it (their answers are settled); idle ones are cancelled.
        deadline = time.monotonic() + 5
        while any(site.in_flight for site in sites) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in pushers:
            task.cancel()
        await asyncio.gather(*tasks, *pushers, return_exceptions=True)
        for site, (erp, wms) in zip(sites, clients, strict=True):
            await site.flush_report()
            await erp.aclose()
            await wms.aclose()
            site._close_lookup()
        for reporter in {id(site.reporter): site.reporter for site in sites}.values():
            reporter.close()
        if server is not None:
            server[0].shutdown()
            server[0].server_close()


def _utc(moment: dt.datetime) -> dt.datetime:
    """A store hands back naive UTC times (SQLite); the clock's are aware."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


__all__ = ["DeltaService", "FollowPolicy", "RatesReader", "network_services", "run_sites", "serve_forever"]


def upstreams(settings: Settings, config: DeltaServiceSettings, erp_token: str, wms_token: str) -> tuple[ErpResource, WmsResource]:
    """The service's ERP and WMS: the shared HTTP settings, with the service's own request ceiling."""
    http = {**settings.http.model_dump(), "requests_per_second": config.requests_per_second}
    return (
        ErpResource(base_url=settings.erp_url, token=erp_token, **http),
        # The store's registry gives a registered site its own WMS URL (`WmsResource.for_site`).
        WmsResource(base_url=settings.wms_url, token=wms_token, store_url=settings.store_url, **http),
    )


def network_services(
    settings: Settings,
    config: DeltaServiceSettings,
    erp: ErpResource,
    wms: WmsResource,
    store: OperationalStore,
    metrics: DeltaMetrics | None = None,
    reporter: DagsterReporter | None = None,
) -> list[DeltaService]:
    """One DeltaService per registered site, sharing the metrics, the reporter and one reader of
    the rates; none registered: the one default site, exactly as the one-warehouse service."""
    metrics, reporter = metrics or DeltaMetrics(), reporter or DagsterReporter()
    registered: list[Warehouse | None] = list(store.registered_warehouses()) or [None]
    ids = [site.warehouse_id if site else DEFAULT_WAREHOUSE_ID for site in registered]
    rates = RatesReader(WarehouseTables.of_settings(settings), ids)
    return [
        DeltaService(settings, config, erp, wms, store, metrics=metrics, reporter=reporter, site=site, rates_reader=rates)
        for site in registered
    ]


def serve_forever(ready: Callable[[str], None] = lambda line: print(line, flush=True)) -> int:
    """`velocity-platform deltas`: run the service until SIGTERM or Ctrl-C, then stop cleanly."""
    import os
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "pyrate_limiter", "alembic"):  # one line per request would drown the service's own
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings, config = Settings.from_env(), DeltaServiceSettings.from_env()
    erp, wms = upstreams(settings, config, os.environ["VELOCITY_ERP_TOKEN"].strip(), os.environ["VELOCITY_WMS_TOKEN"].strip())
    store = OperationalStore(settings.store_url)
    sites = network_services(settings, config, erp, wms, store)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_sites(sites, stop, ready)

    try:
        asyncio.run(main())
    finally:
        pending = delta_store.pending_count(store)
        store.dispose()
    read_through = "; ".join(
        f"{site.warehouse_id} read through {site.read_through.isoformat() if site.read_through else '-'}" for site in sites
    )
    ready(f"velocity-platform deltas: stopped ({read_through}; {pending} first slot(s) pending in the outbox)")
    return 0
