"""The ERP delta sensor: late lines for built dates get their dates rebuilt.

**One owner of the ERP's watermark.** The resident exception service (`velocity-platform
deltas`) follows the ERP's commits; the sensor does not read the ERP. The service records every
line it reads whose business date is before the warehouse's today in the operational store
(`delta_late_lines`), in the same transaction as its read watermark, and every product it
learnt from the ERP since its SKU master was read (`delta_observations`, kind `new_sku`). Each
tick of this sensor reads those records since its own cursor -- never further than the
service's read watermark, so it never sees half of a read -- and sorts them with
`domain/deltas.py`:

- late arrivals for partitions already built: one `late_arrival_refresh` run per partition,
  keyed by the partition and a digest of the late txn_ids, so a repeated tick asks nothing twice;
- new SKUs the warehouse's SKU master does not hold: one `sku_master_refresh` run.

Demand spikes are the service's (it judges every line as it arrives, against the expected rate,
and records them on `exception_deltas`); the sensor no longer reads the lines a spike is made of.

The cursor is returned together with the tick's run requests, so it only advances with them. A
tick that fails leaves it where it was and the next tick reads the same records again.

A late line counts as handled only once its day's refresh run has succeeded. The cursor keeps
each requested refresh as pending, and every tick looks its run up on the instance (by its run
key): a success clears it; a failed or canceled run is asked for again under a new run key (run
keys dedupe, so the old one would be ignored), and again after that, until one succeeds. The
watermark of rebuilt lines, `rebuilt_through`, stays just before the first late line of the
oldest pending refresh: it never passes a line whose rebuild failed, while reading goes on from
`committed_through`, so one day that keeps failing does not hold up the others.
"""

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from velocity_platform.connectors import delta_store
from velocity_platform.connectors.state import OperationalStore
from velocity_platform.defs.ops.jobs import late_arrival_refresh, sku_master_refresh
from velocity_platform.defs.partitions import SiteDay, site_day_of
from velocity_platform.defs.resources import OperationalStoreResource, OperationsResource, WarehouseResource
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.domain.deltas import (
    DELTA_LINES_SCHEMA,
    candidate_keys,
    digest,
    late_arrivals,
    unknown_skus,
)
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID

ONE_MICROSECOND = dt.timedelta(microseconds=1)
SENSOR_NAME = "erp_delta_sensor"
RUN_KEY_TAG, SENSOR_NAME_TAG = "dagster/run_key", "dagster/sensor_name"  # set by the daemon on a sensor's runs


@dataclass(frozen=True)
class PendingRefresh:
    """A late_arrival_refresh asked for and not yet known to have succeeded."""

    business_date: str
    run_key: str
    fingerprint: str  # of the late txn_ids that asked for it; each new attempt keeps it in its run key
    documents: int
    first_committed: dt.datetime  # the earliest late line it rebuilds
    attempt: int = 0  # 0 for the first request, then one more per failed run
    warehouse_id: str = DEFAULT_WAREHOUSE_ID  # the site whose day it rebuilds

    @property
    def partition(self) -> str:
        """The day as one key ("WH-01 2026-01-05"): what one refresh run stands for."""
        return str(SiteDay(self.warehouse_id, dt.date.fromisoformat(self.business_date)))

    def as_json(self) -> dict:
        return {**self.__dict__, "first_committed": self.first_committed.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> "PendingRefresh":
        return cls(**{**data, "first_committed": dt.datetime.fromisoformat(data["first_committed"])})

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(
            job_name=late_arrival_refresh.name,
            partition_key=SiteDay(self.warehouse_id, dt.date.fromisoformat(self.business_date)).key,
            run_key=self.run_key,
            tags={
                "velocity/trigger": "late_arrivals",
                "velocity/warehouse": self.warehouse_id,
                "velocity/late_documents": str(self.documents),
                "velocity/attempt": str(self.attempt + 1),
            },
        )

    def again(self) -> "PendingRefresh":
        """The same refresh asked for once more, under a run key the daemon has not seen."""
        attempt = self.attempt + 1
        key = f"{self.run_key.split(':retry-')[0]}:retry-{attempt}"
        return PendingRefresh(
            self.business_date, key, self.fingerprint, self.documents, self.first_committed, attempt, self.warehouse_id
        )


@dataclass(frozen=True)
class DeltaCursor:
    """Every ERP document committed at or before `committed_through` has been classified; the
    late lines among them are rebuilt, except those of the `pending` refreshes."""

    committed_through: dt.datetime
    pending: tuple[PendingRefresh, ...] = ()
    observed_through: int = 0  # the service's observations (new SKUs) read, by their sequence number

    @property
    def rebuilt_through(self) -> dt.datetime:
        """Every late line committed at or before this is in the warehouse (its refresh succeeded)."""
        first = min((p.first_committed for p in self.pending), default=None)
        return self.committed_through if first is None else min(self.committed_through, first - ONE_MICROSECOND)

    def serialize(self) -> str:
        data: dict = {"committed_through": self.committed_through.isoformat()}
        if self.pending:
            data["pending"] = [p.as_json() for p in self.pending]
        if self.observed_through:
            data["observed_through"] = self.observed_through
        return json.dumps(data)

    @classmethod
    def parse(cls, raw: str) -> "DeltaCursor":
        try:
            data = json.loads(raw)
            moment = dt.datetime.fromisoformat(data["committed_through"])
            pending = tuple(PendingRefresh.from_json(p) for p in data.get("pending", []))
            observed = int(data.get("observed_through", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"erp_delta_sensor cursor {raw[:100]!r} is not a watermark like "
                '{"committed_through": "2026-03-01T02:00:00+00:00"}; reset the cursor in the UI to start afresh'
            ) from exc
        if moment.tzinfo is None:
            raise ValueError(f"erp_delta_sensor cursor {raw[:100]!r} has no time zone; reset the cursor in the UI")
        return cls(moment, pending, observed)


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
        if refresh.partition in superseded:
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
class RecordedLines:
    lines: pl.DataFrame  # DELTA_LINES_SCHEMA: the late lines the service recorded
    committed_through: dt.datetime | None  # the new watermark; None when nothing new was recorded


def built_site_days(instance: dg.DagsterInstance) -> dict[str, list[dt.date]]:
    """Each site's built business dates (raw_transactions materialized), oldest first."""
    sites: dict[str, list[dt.date]] = {}
    for site_day in sorted(site_day_of(k) for k in instance.get_materialized_partitions(dg.AssetKey("raw_transactions"))):
        sites.setdefault(site_day.warehouse_id, []).append(site_day.business_date)
    return sites


def built_dates(instance: dg.DagsterInstance) -> list[dt.date]:
    """The business dates built for any site, oldest first."""
    return sorted({day for days in built_site_days(instance).values() for day in days})


def first_watermark(built: list[dt.date], timezone: str) -> dt.datetime:
    """Where a sensor without a cursor starts: midnight after the newest built day (or the newest partition).

    Records committed after that midnight may belong to a built day (its nightly pull ran at
    02:00); the partition's own txn_ids say whether they are late, so starting early is safe.
    """
    # The newest partition: the business date that ended last in the warehouse's zone.
    newest = built[-1] if built else dt.datetime.now(ZoneInfo(timezone)).date() - dt.timedelta(days=1)
    midnight = dt.datetime.combine(newest + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(timezone))
    return midnight.astimezone(dt.UTC) - ONE_MICROSECOND


def read_recorded(store: OperationalStore, since: dt.datetime, max_records: int) -> RecordedLines:
    """Late lines the exception service recorded with an ERP commit time after `since`, up to
    the service's read watermark (everything committed up to it is recorded), at most about
    `max_records` of them. When the cap stops the read, the lines of the last commit time are left
    for the next tick, which starts exactly at that time."""
    since = since.astimezone(dt.UTC)
    service_read = delta_store.read_watermark(store)
    if service_read is None or service_read <= since:
        return RecordedLines(pl.DataFrame(schema=DELTA_LINES_SCHEMA), None)
    rows = delta_store.late_lines_between(store, since, service_read, max_records + 1)
    lines = pl.DataFrame(rows, schema={**DELTA_LINES_SCHEMA}, orient="row") if rows else pl.DataFrame(schema=DELTA_LINES_SCHEMA)
    through = service_read
    if len(rows) > max_records:
        newest = lines["created_at"].max()
        lines, through = lines.filter(pl.col("created_at") < newest), newest - ONE_MICROSECOND
    return RecordedLines(lines, through)


def read_tables(warehouse_tables: WarehouseTables, candidates: pl.DataFrame, warehouse_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(txn_ids the site's built partitions hold among the candidates, the SKU master)."""
    held = pl.DataFrame(schema={"business_date": pl.Date, "txn_id": pl.String})
    master = pl.DataFrame(schema={"sku_id": pl.String, "case_qty": pl.Int32, "pallet_qty": pl.Int32})
    with warehouse_tables.session(warehouse_id=warehouse_id) as tables:
        if candidates.height and tables.exists("raw_transactions"):
            first, last = candidates["business_date"].min(), candidates["business_date"].max()
            held = tables.read(
                "raw_transactions", first, last, columns=["business_date", "txn_id"], matching=candidates.select("business_date", "txn_id")
            ).unique()
        if tables.exists("sku_master"):
            master = tables.read("sku_master", columns=["sku_id", "case_qty", "pallet_qty"])
    return held, master


@dg.sensor(
    name=SENSOR_NAME,
    jobs=[late_arrival_refresh, sku_master_refresh],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the late lines and new SKUs the exception service (velocity-platform deltas) recorded "
    "since the last tick: re-pulls built days that received late records, refreshes the SKU master for new SKUs.",
)
def erp_delta_sensor(
    context: dg.SensorEvaluationContext,
    state_store: OperationalStoreResource,
    warehouse: WarehouseResource,
    warehouse_tables: WarehouseTables,
    operations: OperationsResource,
) -> dg.SensorResult:
    started = time.perf_counter()
    built_by_site = built_site_days(context.instance)
    built = sorted({day for days in built_by_site.values() for day in days})
    cursor = DeltaCursor.parse(context.cursor) if context.cursor else DeltaCursor(first_watermark(built, warehouse.timezone))
    store = state_store.store()
    recorded = read_recorded(store, cursor.committed_through, operations.delta_max_records)
    observed = delta_store.observations_after(store, cursor.observed_through, "new_sku")
    observed_through = max((o["seq"] for o in observed), default=cursor.observed_through)
    if recorded.committed_through is None and not observed:
        pending, again = follow_up(context.instance, cursor.pending, superseded=set())
        after = DeltaCursor(cursor.committed_through, tuple(pending), observed_through)
        if again:
            context.log.warning(f"late_arrival_refresh failed for {[p.partition for p in again]}: asked for again")
            return dg.SensorResult(run_requests=[p.run_request() for p in again], cursor=after.serialize())
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"the exception service recorded nothing new since {cursor.committed_through.isoformat()}"
                + (f"; {len(pending)} late-arrival refresh(es) pending" if pending else "")
            ),
            cursor=after.serialize(),
        )

    lines = recorded.lines
    committed_through = recorded.committed_through or cursor.committed_through
    earlier = {p.partition: p for p in cursor.pending}
    requested, late_days, master = [], [], None
    # Each site's late lines against that site's built days (a line without a site is the default one's).
    site_of_line = pl.col("warehouse_id").fill_null(DEFAULT_WAREHOUSE_ID) if "warehouse_id" in lines.columns else pl.lit(DEFAULT_WAREHOUSE_ID)
    for (site,), site_lines in lines.with_columns(site_of_line.alias("warehouse_id")).group_by("warehouse_id"):
        site_built = built_by_site.get(site, [])
        held, master = read_tables(warehouse_tables, candidate_keys(site_lines, site_built), site)
        late = late_arrivals(site_lines, site_built, held)
        for row in late.iter_rows(named=True):
            day = row["business_date"].isoformat()
            refresh = PendingRefresh(
                day, f"late-arrivals:{site}:{day}:{row['fingerprint']}", row["fingerprint"], row["documents"],
                row["first_committed_at"] or cursor.committed_through + ONE_MICROSECOND, 0, site,
            )
            if refresh.partition in earlier:  # an older refresh of the day still pending: the new run covers its lines too
                refresh = dataclasses.replace(refresh, first_committed=min(refresh.first_committed, earlier[refresh.partition].first_committed))
            requested.append(refresh)
            late_days.append(refresh.partition)
    if master is None:
        _, master = read_tables(warehouse_tables, pl.DataFrame(schema={"business_date": pl.Date, "txn_id": pl.String}), DEFAULT_WAREHOUSE_ID)
    new_skus = unknown_skus(pl.DataFrame({"sku_id": [o["sku_id"] for o in observed]}, schema={"sku_id": pl.String}), master)
    pending, again = follow_up(context.instance, cursor.pending, superseded={p.partition for p in requested})
    run_requests = [p.run_request() for p in requested + again]
    if new_skus:
        run_requests.append(
            dg.RunRequest(
                job_name=sku_master_refresh.name,
                run_key=f"sku-master:{digest(new_skus)}",
                tags={"velocity/trigger": "new_skus", "velocity/new_skus": str(len(new_skus))},
            )
        )
    after = DeltaCursor(committed_through, tuple(pending + requested), observed_through)
    context.log.info(
        f"{lines.height:,} late line(s) recorded by the exception service, committed "
        f"{cursor.committed_through.isoformat(timespec='seconds')} .. {committed_through.isoformat(timespec='seconds')}, "
        f"classified in {time.perf_counter() - started:.2f}s: late arrivals for {len(late_days)} built day(s) "
        f"{late_days}, {len(new_skus)} new SKU(s); "
        f"failed refreshes asked for again: {[p.partition for p in again]}; "
        f"late lines rebuilt through {after.rebuilt_through.isoformat(timespec='seconds')}"
    )
    return dg.SensorResult(run_requests=run_requests, cursor=after.serialize())
