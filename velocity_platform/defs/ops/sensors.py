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
"""

import datetime as dt
import json
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from velocity_platform.connectors.erp_pages import parse_erp_page
from velocity_platform.defs.ops.jobs import late_arrival_refresh, sku_master_refresh
from velocity_platform.defs.partitions import business_days
from velocity_platform.defs.resources import ErpResource, OperationsResource, WarehouseResource
from velocity_platform.domain.deltas import (
    SpikePolicy,
    candidate_keys,
    delta_lines,
    demand_spikes,
    digest,
    late_arrivals,
    latest_commit,
    unknown_skus,
)
from velocity_platform.domain.validation import parse_utc_timestamp

ONE_MICROSECOND = dt.timedelta(microseconds=1)
MAX_SPIKE_OBSERVATIONS = 25  # the largest spikes of a tick; the tick's log line counts them all


class DeltaReadError(RuntimeError):
    """The tick could not read what the ERP committed; the watermark stays where it was."""


@dataclass(frozen=True)
class DeltaCursor:
    """Every ERP document committed at or before `committed_through` has been classified."""

    committed_through: dt.datetime

    def serialize(self) -> str:
        return json.dumps({"committed_through": self.committed_through.isoformat()})

    @classmethod
    def parse(cls, raw: str) -> "DeltaCursor":
        try:
            moment = dt.datetime.fromisoformat(json.loads(raw)["committed_through"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"erp_delta_sensor cursor {raw[:100]!r} is not a watermark like "
                '{"committed_through": "2026-03-01T02:00:00+00:00"}; reset the cursor in the UI to start afresh'
            ) from exc
        if moment.tzinfo is None:
            raise ValueError(f"erp_delta_sensor cursor {raw[:100]!r} has no time zone; reset the cursor in the UI")
        return cls(moment)


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
    newest = built[-1] if built else dt.date.fromisoformat(business_days.get_last_partition_key())
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
    warehouse_tables: DuckDBResource,
    candidates: pl.DataFrame,
    baseline_day: dt.date | None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(txn_ids the built partitions hold among the candidates, SKU master, 30-day baseline)."""
    held = pl.DataFrame(schema={"business_date": pl.Date, "txn_id": pl.String})
    master = pl.DataFrame(schema={"sku_id": pl.String, "case_qty": pl.Int32, "pallet_qty": pl.Int32})
    baseline = pl.DataFrame(schema={"sku_id": pl.String, "units_30d": pl.Float64, "history_days": pl.Int32})
    with warehouse_tables.get_connection() as con:
        tables = {row[0] for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'warehouse'"
        ).fetchall()}
        if "raw_transactions" in tables and candidates.height:
            con.register("candidates", candidates.to_arrow())
            first, last = candidates["business_date"].min(), candidates["business_date"].max()
            held = con.execute(
                """SELECT DISTINCT r.business_date, r.txn_id FROM warehouse.raw_transactions r
                   JOIN candidates c ON r.business_date = c.business_date AND r.txn_id = c.txn_id
                   WHERE r.business_date BETWEEN ? AND ?""",
                [first, last],
            ).pl()
        if "sku_master" in tables:
            master = con.execute("SELECT sku_id, case_qty, pallet_qty FROM warehouse.sku_master").pl()
        if "sku_velocity" in tables and baseline_day is not None:
            baseline = con.execute(
                "SELECT sku_id, units_30d, history_days FROM warehouse.sku_velocity WHERE business_date = ?", [baseline_day]
            ).pl()
    return held, master, baseline


def spike_observation(row: dict, baseline_day: dt.date, since: dt.datetime, through: dt.datetime) -> dg.AssetObservation:
    multiple = row["multiple_of_daily_rate"]
    return dg.AssetObservation(
        asset_key="sku_velocity",
        partition=baseline_day.isoformat(),
        description=f"demand spike: {row['sku_id']} ordered {row['units']:,.0f} eaches since the last tick, "
        + (f"{multiple:,.1f}x its 30-day daily rate" if multiple is not None else "with no demand in the 30 days before")
        + "; recorded only, no move is made for a spike",
        metadata={
            "sku_id": row["sku_id"],
            "units_since_last_tick": dg.MetadataValue.float(row["units"]),
            "daily_rate_30d": dg.MetadataValue.float(row["daily_rate_30d"]),
            "multiple_of_daily_rate": dg.MetadataValue.float(multiple) if multiple is not None else "no 30-day demand",
            "committed_from": since.isoformat(timespec="seconds"),
            "committed_through": through.isoformat(timespec="seconds"),
            "baseline_date": baseline_day.isoformat(),
        },
    )


@dg.sensor(
    name="erp_delta_sensor",
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
    warehouse_tables: DuckDBResource,
    operations: OperationsResource,
) -> dg.SensorResult:
    started = time.perf_counter()
    built = built_dates(context.instance)
    cursor = DeltaCursor.parse(context.cursor) if context.cursor else DeltaCursor(first_watermark(built, warehouse.timezone))
    since = cursor.committed_through + ONE_MICROSECOND
    until = dt.datetime.now(dt.UTC)
    committed = read_committed(erp, since, until, operations.delta_max_records)
    if committed.committed_through is None:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"nothing committed in the ERP since {cursor.committed_through.isoformat()}"),
            cursor=cursor.serialize(),
        )

    lines = delta_lines(committed.documents, warehouse.timezone)
    velocity_days = context.instance.get_materialized_partitions(dg.AssetKey("sku_velocity"))
    baseline_day = max((dt.date.fromisoformat(k) for k in velocity_days), default=None)
    held, master, baseline = read_tables(warehouse_tables, candidate_keys(lines, built), baseline_day)

    late = late_arrivals(lines, built, held)
    new_skus = unknown_skus(lines, master)
    spikes = (
        demand_spikes(lines, master, baseline, SpikePolicy(operations.spike_multiple, operations.spike_min_units))
        if baseline_day is not None
        else pl.DataFrame()
    )

    run_requests = [
        dg.RunRequest(
            job_name=late_arrival_refresh.name,
            partition_key=row["business_date"].isoformat(),
            run_key=f"late-arrivals:{row['business_date']}:{row['fingerprint']}",
            tags={"velocity/trigger": "late_arrivals", "velocity/late_documents": str(row["documents"])},
        )
        for row in late.iter_rows(named=True)
    ]
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
    context.log.info(
        f"{committed.documents.height:,} documents ({lines.height:,} lines, {committed.pages} pages) committed "
        f"{since.isoformat(timespec='seconds')} .. {committed.committed_through.isoformat(timespec='seconds')} "
        f"classified in {time.perf_counter() - started:.2f}s: late arrivals for {late.height} built day(s) "
        f"{[d.isoformat() for d in late['business_date']]}, {len(new_skus)} new SKU(s), {spikes.height} spike(s)"
    )
    return dg.SensorResult(
        run_requests=run_requests,
        asset_events=observations,
        cursor=DeltaCursor(committed.committed_through).serialize(),
    )
