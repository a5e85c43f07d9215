"""The ERP delta sensor: what the ERP committed between nightly runs, and what to do about it.

Each tick reads the documents the ERP committed since the sensor's watermark (`created_at`, the
ERP's commit time) and sorts them with `domain/deltas.py`:

- late arrivals for partitions already built: one `late_arrival_refresh` run per partition,
  keyed by the partition and a digest of the late txn_ids, so a repeated tick asks nothing twice;
- SKUs the SKU master does not know: one `sku_master_refresh` run;
- demand spikes: observations on `sku_velocity` with the figures, for the UI. Never a run:
  stock moves only on class changes that held two nights, so a spike cannot cause thrash.

The watermark lives in the sensor's cursor and is returned together with the tick's run
requests, so it only advances with them. A tick that fails (ERP down, a page that stays
unreadable) leaves the watermark where it was and the next tick reads the same records again.

A late line counts as handled only once its day's refresh run has succeeded. The cursor keeps
each requested refresh as pending, and every tick looks its run up on the instance (by its run
key): a success clears it; a failed or canceled run is asked for again under a new run key (run
keys dedupe, so the old one would be ignored), and again after that, until one succeeds. The
watermark of rebuilt lines, `rebuilt_through`, stays just before the first late line of the
oldest pending refresh: it never passes a line whose rebuild failed, while reading goes on from
`committed_through`, so one day that keeps failing does not hold up the others.
"""

import datetime as dt
import json
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from velocity_platform.connectors.erp_pages import parse_erp_page
from velocity_platform.defs.ops.jobs import late_arrival_refresh, sku_master_refresh
from velocity_platform.defs.resources import ErpResource, OperationsResource, WarehouseResource
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.domain.deltas import (
    SpikePolicy,
    candidate_keys,
    delta_lines,
    demand_spikes,
    digest,
    late_arrivals,
    latest_commit,
    spike_baseline_sql,
    unknown_skus,
)
from velocity_platform.domain.validation import parse_utc_timestamp

ONE_MICROSECOND = dt.timedelta(microseconds=1)
SENSOR_NAME = "erp_delta_sensor"
RUN_KEY_TAG, SENSOR_NAME_TAG = "dagster/run_key", "dagster/sensor_name"  # set by the daemon on a sensor's runs
MAX_SPIKE_OBSERVATIONS = 25  # the largest spikes of a tick; the tick's log line counts them all


class DeltaReadError(RuntimeError):
    """The tick could not read what the ERP committed; the watermark stays where it was."""


@dataclass(frozen=True)
class PendingRefresh:
    """A late_arrival_refresh asked for and not yet known to have succeeded."""

    business_date: str
    run_key: str
    fingerprint: str  # of the late txn_ids that asked for it; each new attempt keeps it in its run key
    documents: int
    first_committed: dt.datetime  # the earliest late line it rebuilds
    attempt: int = 0  # 0 for the first request, then one more per failed run

    def as_json(self) -> dict:
        return {**self.__dict__, "first_committed": self.first_committed.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> "PendingRefresh":
        return cls(**{**data, "first_committed": dt.datetime.fromisoformat(data["first_committed"])})

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(
            job_name=late_arrival_refresh.name,
            partition_key=self.business_date,
            run_key=self.run_key,
            tags={
                "velocity/trigger": "late_arrivals",
                "velocity/late_documents": str(self.documents),
                "velocity/attempt": str(self.attempt + 1),
            },
        )

    def again(self) -> "PendingRefresh":
        """The same refresh asked for once more, under a run key the daemon has not seen."""
        attempt = self.attempt + 1
        key = f"late-arrivals:{self.business_date}:{self.fingerprint}:retry-{attempt}"
        return PendingRefresh(self.business_date, key, self.fingerprint, self.documents, self.first_committed, attempt)


@dataclass(frozen=True)
class DeltaCursor:
    """Every ERP document committed at or before `committed_through` has been classified; the
    late lines among them are rebuilt, except those of the `pending` refreshes."""

    committed_through: dt.datetime
    pending: tuple[PendingRefresh, ...] = ()

    @property
    def rebuilt_through(self) -> dt.datetime:
        """Every late line committed at or before this is in the warehouse (its refresh succeeded)."""
        first = min((p.first_committed for p in self.pending), default=None)
        return self.committed_through if first is None else min(self.committed_through, first - ONE_MICROSECOND)

    def serialize(self) -> str:
        data: dict = {"committed_through": self.committed_through.isoformat()}
        if self.pending:
            data["pending"] = [p.as_json() for p in self.pending]
        return json.dumps(data)

    @classmethod
    def parse(cls, raw: str) -> "DeltaCursor":
        try:
            data = json.loads(raw)
            moment = dt.datetime.fromisoformat(data["committed_through"])
            pending = tuple(PendingRefresh.from_json(p) for p in data.get("pending", []))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"erp_delta_sensor cursor {raw[:100]!r} is not a watermark like "
                '{"committed_through": "2026-03-01T02:00:00+00:00"}; reset the cursor in the UI to start afresh'
            ) from exc
        if moment.tzinfo is None:
            raise ValueError(f"erp_delta_sensor cursor {raw[:100]!r} has no time zone; reset the cursor in the UI")
        return cls(moment, pending)


def refresh_outcome(instance: dg.DagsterInstance, refresh: PendingRefresh) -> str:
    """'succeeded', 'failed' (failed or canceled) or 'waiting' (not launched yet, queued, running)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={RUN_KEY_TAG: refresh.run_key, SENSOR_NAME_TAG: SENSOR_NAME}), limit=1
    )
    if not runs or not runs[0].is_finished:
        return "waiting"
    return "succeeded" if runs[0].is_success else "failed"


def follow_up(
    instance: dg.DagsterInstance, pending: tuple[PendingRefresh, ...], superseded: set[str]
) -> tuple[list[PendingRefresh], list[PendingRefresh]]:
    """(refreshes still pending, the failed ones asked for again among them). A day with a new
    refresh in this tick drops its older one: the new run re-pulls the whole day."""
    still, again = [], []
    for refresh in pending:
        if refresh.business_date in superseded:
            continue
        outcome = refresh_outcome(instance, refresh)
        if outcome == "succeeded":
            continue
        if outcome == "failed":
            refresh = refresh.again()
            again.append(refresh)
        still.append(refresh)
    return still, again


@dataclass(frozen=True)
class CommittedDocuments:
    documents: pl.DataFrame  # one row per document, every leaf text (as read from ERP pages)
    pages: int
    committed_through: dt.datetime | None  # the new watermark; None when nothing was read


def built_dates(instance: dg.DagsterInstance) -> list[dt.date]:
    return sorted(dt.date.fromisoformat(k) for k in instance.get_materialized_partitions(dg.AssetKey("raw_transactions")))


def first_watermark(built: list[dt.date], timezone: str) -> dt.datetime:
    """Where a sensor without a cursor starts: midnight after the newest built day (or the newest partition).

    Records committed after that midnight may belong to a built day (its nightly pull ran at
    02:00); the partition's own txn_ids say whether they are late, so starting early is safe.
    """
    # The newest partition: the business date that ended last in the warehouse's zone.
    newest = built[-1] if built else dt.datetime.now(ZoneInfo(timezone)).date() - dt.timedelta(days=1)
    midnight = dt.datetime.combine(newest + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(timezone))
    return midnight.astimezone(dt.UTC) - ONE_MICROSECOND


def read_committed(
    erp: ErpResource, since: dt.datetime, until: dt.datetime, max_records: int
) -> CommittedDocuments:
    """Documents committed in [since, until), at most about `max_records` of them.

    Pages come in commit-time order. When the cap stops the read, the documents sharing the last
    commit time may straddle the page boundary, so they are left for the next tick, which starts
    exactly at that time.
    """
    frames: list[pl.DataFrame] = []
    read = 0
    capped = False
    with erp.client() as client:
        for page in client.changed_pages(since, until, reader=parse_erp_page):
            if page.error:
                raise DeltaReadError(
                    f"ERP page {page.source_batch} of the documents committed since {since.isoformat()} "
                    f"stayed unreadable ({page.error}); the watermark stays and the next tick reads it again"
                )
            frames.append(page.parsed)
            read += page.parsed.height
            if read >= max_records:
                capped = True
                break
    if not frames or read == 0:
        return CommittedDocuments(pl.DataFrame(), len(frames), None)
    documents = pl.concat(frames, how="vertical")
    newest = latest_commit(documents)
    if newest is None:
        raise DeltaReadError(
            f"none of the {read:,} documents committed since {since.isoformat()} has a readable created_at; "
            "the ERP's commit times are what the watermark follows, so the tick cannot go on"
        )
    if capped:
        earlier = documents.filter(parse_utc_timestamp("created_at") < newest)
        if earlier.height:
            return CommittedDocuments(earlier, len(frames), newest - ONE_MICROSECOND)
    return CommittedDocuments(documents, len(frames), newest)


def read_tables(
    warehouse_tables: WarehouseTables,
    candidates: pl.DataFrame,
    baseline_day: dt.date | None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(txn_ids the built partitions hold among the candidates, SKU master, each SKU's peak day of 90)."""
    held = pl.DataFrame(schema={"business_date": pl.Date, "txn_id": pl.String})
    master = pl.DataFrame(schema={"sku_id": pl.String, "case_qty": pl.Int32, "pallet_qty": pl.Int32})
    baseline = pl.DataFrame(schema={"sku_id": pl.String, "peak_day_units": pl.Float64, "days_sold": pl.Int64})
    with warehouse_tables.session() as tables:
        if candidates.height and tables.exists("raw_transactions"):
            first, last = candidates["business_date"].min(), candidates["business_date"].max()
            held = tables.read(
                "raw_transactions", first, last, columns=["business_date", "txn_id"], matching=candidates.select("business_date", "txn_id")
            ).unique()
        if tables.exists("sku_master"):
            master = tables.read("sku_master", columns=["sku_id", "case_qty", "pallet_qty"])
        if baseline_day is not None and tables.exists("daily_sku_demand"):
            baseline = tables.query("daily_sku_demand", lambda name: spike_baseline_sql(name, baseline_day))
    return held, master, baseline


def spike_observation(row: dict, baseline_day: dt.date, since: dt.datetime, through: dt.datetime) -> dg.AssetObservation:
    multiple = row["multiple_of_peak_day"]
    return dg.AssetObservation(
        asset_key="sku_velocity",
        partition=baseline_day.isoformat(),
        description=f"demand spike: {row['sku_id']} ordered {row['units']:,.0f} eaches since the last tick, "
        + (f"{multiple:,.1f}x its largest day of the 90 before" if multiple is not None else "after 90 days of none")
        + "; recorded only, no move is made for a spike",
        metadata={
            "sku_id": row["sku_id"],
            "units_since_last_tick": dg.MetadataValue.float(row["units"]),
            "peak_day_units_90d": dg.MetadataValue.float(row["peak_day_units"]),
            "multiple_of_peak_day": dg.MetadataValue.float(multiple) if multiple is not None else "no peak day",
            "committed_from": since.isoformat(timespec="seconds"),
            "committed_through": through.isoformat(timespec="seconds"),
            "baseline_date": baseline_day.isoformat(),
        },
    )


@dg.sensor(
    name=SENSOR_NAME,
    jobs=[late_arrival_refresh, sku_master_refresh],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads what the ERP committed since the last tick: re-pulls built days that received late "
    "records, refreshes the SKU master for new SKUs, records demand spikes on sku_velocity.",
)
def erp_delta_sensor(
    context: dg.SensorEvaluationContext,
    erp: ErpResource,
    warehouse: WarehouseResource,
    warehouse_tables: WarehouseTables,
    operations: OperationsResource,
) -> dg.SensorResult:
    started = time.perf_counter()
    built = built_dates(context.instance)
    cursor = DeltaCursor.parse(context.cursor) if context.cursor else DeltaCursor(first_watermark(built, warehouse.timezone))
    since = cursor.committed_through + ONE_MICROSECOND
    until = dt.datetime.now(dt.UTC)
    committed = read_committed(erp, since, until, operations.delta_max_records)
    if committed.committed_through is None:
        pending, again = follow_up(context.instance, cursor.pending, superseded=set())
        after = DeltaCursor(cursor.committed_through, tuple(pending))
        if again:
            context.log.warning(f"late_arrival_refresh failed for {[p.business_date for p in again]}: asked for again")
            return dg.SensorResult(run_requests=[p.run_request() for p in again], cursor=after.serialize())
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"nothing committed in the ERP since {cursor.committed_through.isoformat()}"
                + (f"; {len(pending)} late-arrival refresh(es) pending" if pending else "")
            ),
            cursor=after.serialize(),
        )

    lines = delta_lines(committed.documents, warehouse.timezone)
    velocity_days = context.instance.get_materialized_partitions(dg.AssetKey("sku_velocity"))
    baseline_day = max((dt.date.fromisoformat(k) for k in velocity_days), default=None)
    held, master, baseline = read_tables(warehouse_tables, candidate_keys(lines, built), baseline_day)

    late = late_arrivals(lines, built, held)
    new_skus = unknown_skus(lines, master)
    spikes = (
        demand_spikes(
            lines,
            master,
            baseline,
            SpikePolicy(operations.spike_multiple, operations.spike_min_units, operations.spike_min_days_sold),
        )
        if baseline_day is not None
        else pl.DataFrame()
    )

    earlier = {p.business_date: p for p in cursor.pending}
    requested = []
    for row in late.iter_rows(named=True):
        day = row["business_date"].isoformat()
        first = row["first_committed_at"] or since  # no readable commit time: as early as this tick reads
        if day in earlier:  # an older refresh of the day still pending: the new run covers its lines too
            first = min(first, earlier[day].first_committed)
        requested.append(
            PendingRefresh(day, f"late-arrivals:{day}:{row['fingerprint']}", row["fingerprint"], row["documents"], first)
        )
    pending, again = follow_up(context.instance, cursor.pending, superseded={p.business_date for p in requested})
    run_requests = [p.run_request() for p in requested + again]
    if new_skus:
        run_requests.append(
            dg.RunRequest(
                job_name=sku_master_refresh.name,
                run_key=f"sku-master:{digest(new_skus)}",
                tags={"velocity/trigger": "new_skus", "velocity/new_skus": str(len(new_skus))},
            )
        )
    observations = [
        spike_observation(row, baseline_day, since, committed.committed_through)
        for row in spikes.head(MAX_SPIKE_OBSERVATIONS).iter_rows(named=True)
    ]
    after = DeltaCursor(committed.committed_through, tuple(pending + requested))
    context.log.info(
        f"{committed.documents.height:,} documents ({lines.height:,} lines, {committed.pages} pages) committed "
        f"{since.isoformat(timespec='seconds')} .. {committed.committed_through.isoformat(timespec='seconds')} "
        f"classified in {time.perf_counter() - started:.2f}s: late arrivals for {late.height} built day(s) "
        f"{[d.isoformat() for d in late['business_date']]}, {len(new_skus)} new SKU(s), {spikes.height} spike(s); "
        f"failed refreshes asked for again: {[p.business_date for p in again]}; "
        f"late lines rebuilt through {after.rebuilt_through.isoformat(timespec='seconds')}"
    )
    return dg.SensorResult(run_requests=run_requests, asset_events=observations, cursor=after.serialize())
