"""The exception service's part of the operational store (`velocity-platform deltas`).

Two watermarks, both in the `watermarks` table, both on the ERP's commit time (`created_at`):

- `deltas:erp_read_through`: every document committed at or before it has been read, judged and
  recorded. It advances in the same transaction as what the documents produced: the outbox rows
  of the exceptions, the dead letters, the late lines and the observations. A crash before that
  commit leaves nothing behind and the documents are read again; after it, nothing is read twice.
- `deltas:erp_settled_through`: every exception caused by a document committed at or before it
  has been acknowledged by the WMS. It stays just before the commit time of the oldest exception
  still pending, and advances in the same transaction as the acknowledgement that settles it.
  While the WMS is down it stands still and the exceptions wait in the outbox.

The service's directives are ordinary outbox rows (`origin = 'deltas'`), delivered exactly once
with their idempotency key like the nightly run's; they are enqueued already claimed by the
service (one transaction before the POST instead of three). One service per store: on start it
takes over what an earlier instance of it held (that instance is gone).

A network: the service follows every registered site, and each site's records are its own. A
site's view of the store (`OperationalStore.for_site`) sees that site's outbox rows only, and its
watermarks are named after it (`watermark_names`): the default site (`DEFAULT_WAREHOUSE_ID`, and
an unscoped store) keeps the names above, so a deployment that grew from one warehouse reads on
from where it was; another site's are `deltas:erp_read_through:WH-02` and
`deltas:erp_settled_through:WH-02`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa

from velocity_platform.connectors.state import (
    PENDING,
    OperationalStore,
    Outcome,
    OutboxRow,
    _row,
    delta_dead_letters,
    pending_outbox_row,
    delta_late_lines,
    delta_observations,
    wms_outbox,
)
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID

ORIGIN = "deltas"
READ_WATERMARK = "deltas:erp_read_through"
SETTLED_WATERMARK = "deltas:erp_settled_through"
ONE_MICROSECOND = dt.timedelta(microseconds=1)
# A pusher of the service is named deltas@host:pid:uuid (state.new_pusher_id("deltas")).
PUSHER_PREFIX = "deltas@"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class DeltaBatch:
    """What one read of the ERP produced, recorded in one transaction with the read watermark."""

    read_through: dt.datetime
    directives: list[dict] = field(default_factory=list)  # directive_id, business_date, sku_id, from/to, payload, source_committed_at
    dead_letters: list[dict] = field(default_factory=list)  # delta_dead_letters columns (reasons/fields as lists)
    late_lines: list[dict] = field(default_factory=list)  # delta_late_lines columns
    observations: list[dict] = field(default_factory=list)  # kind, sku_id, business_date, detail (dict)


@dataclass(frozen=True)
class Recorded:
    directives: list[OutboxRow]  # the outbox rows this batch inserted, claimed by the recorder
    observations: list[dict]  # the observations new to the store (a spike is recorded once a day)


def watermark_names(warehouse_id: str | None) -> tuple[str, str]:
    """A site's (read, settled) watermark names: the default site's (or an unscoped store's) are
    the names of the one-warehouse service, so its watermarks carry on; another site's end in
    its id."""
    if warehouse_id is None or warehouse_id == DEFAULT_WAREHOUSE_ID:
        return READ_WATERMARK, SETTLED_WATERMARK
    return f"{READ_WATERMARK}:{warehouse_id}", f"{SETTLED_WATERMARK}:{warehouse_id}"


def read_watermark(store: OperationalStore) -> dt.datetime | None:
    raw = store.get_watermark(watermark_names(store.warehouse_id)[0])
    return dt.datetime.fromisoformat(raw) if raw else None


def settled_watermark(store: OperationalStore) -> dt.datetime | None:
    raw = store.get_watermark(watermark_names(store.warehouse_id)[1])
    return dt.datetime.fromisoformat(raw) if raw else None


def set_read_watermark(store: OperationalStore, value: dt.datetime) -> None:
    store.set_watermark(watermark_names(store.warehouse_id)[0], value.isoformat())


def _pending_deltas(store: OperationalStore, conn: sa.Connection) -> dt.datetime | None:
    """The commit time of the site's oldest exception not yet acknowledged (None when none waits):
    another site's outage does not hold this site's settled watermark back."""
    oldest = conn.execute(
        sa.select(sa.func.min(wms_outbox.c.source_committed_at)).where(
            wms_outbox.c.origin == ORIGIN, wms_outbox.c.status == PENDING, store._of_site()
        )
    ).scalar()
    if isinstance(oldest, str):  # SQLite hands back text for an aggregate
        oldest = dt.datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return oldest


def _advance_settled(store: OperationalStore, conn: sa.Connection, read_through: dt.datetime | None) -> None:
    read_name, settled_name = watermark_names(store.warehouse_id)
    if read_through is None:
        raw = conn.execute(sa.text("SELECT value FROM watermarks WHERE name = :n"), {"n": read_name}).scalar()
        if raw is None:
            return
        read_through = dt.datetime.fromisoformat(raw)
    oldest = _pending_deltas(store, conn)
    settled = read_through if oldest is None else min(read_through, oldest - ONE_MICROSECOND)
    store._set_watermark(conn, settled_name, settled.isoformat())


def record_batch(store: OperationalStore, batch: DeltaBatch, claimer: str, lease: dt.timedelta) -> Recorded:
    """Everything a read produced and the read watermark: one transaction.

    New directives are inserted pending and already claimed by `claimer` (it posts them next);
    a directive already in the outbox (the same move planned again after a crash) is left as it is.
    """
    now = _now()
    inserted: list[OutboxRow] = []
    observed: list[dict] = []
    with store._write() as conn:
        if batch.directives:
            stmt = store._insert_ignore(wms_outbox, ["directive_id"]).returning(*wms_outbox.c)
            rows = [
                {
                    # A site's view records its own site on the row (the outbox is shared).
                    **pending_outbox_row({"warehouse_id": store.warehouse_id, **d}, now),
                    "claimed_by": claimer,
                    "claimed_until": now + lease,
                    "origin": ORIGIN,
                    "source_committed_at": d["source_committed_at"],
                }
                for d in batch.directives
            ]
            inserted = [OutboxRow(**_row(r)) for r in conn.execute(stmt, rows)]
        if batch.dead_letters:
            conn.execute(
                delta_dead_letters.insert(),
                [
                    {**d, "reasons": orjson.dumps(d["reasons"]).decode(), "fields": orjson.dumps(d["fields"]).decode(), "seen_at": now}
                    for d in batch.dead_letters
                ],
            )
        if batch.late_lines:
            conn.execute(delta_late_lines.insert(), [{**line, "recorded_at": now} for line in batch.late_lines])
        if batch.observations:
            stmt = store._insert_ignore(delta_observations, ["kind", "sku_id", "business_date"]).returning(
                delta_observations.c.kind, delta_observations.c.sku_id, delta_observations.c.business_date
            )
            rows = [{**o, "detail": orjson.dumps(o["detail"]).decode(), "observed_at": now} for o in batch.observations]
            new = {(r.kind, r.sku_id, r.business_date) for r in conn.execute(stmt, rows)}
            observed = [o for o in batch.observations if (o["kind"], o["sku_id"], o["business_date"]) in new]
        store._set_watermark(conn, watermark_names(store.warehouse_id)[0], batch.read_through.isoformat())
        _advance_settled(store, conn, batch.read_through)
    return Recorded(sorted(inserted, key=lambda r: r.directive_id), observed)


def settle(store: OperationalStore, outcomes: Sequence[Outcome], pusher: str) -> None:
    """The WMS's answers, their push-log rows and the settled watermark: one transaction."""
    if not outcomes:
        return
    with store._write() as conn:
        store._settle(conn, outcomes, pusher)
        _advance_settled(store, conn, None)


def take_over_from_earlier_instances(store: OperationalStore, me: str) -> int:
    """Release the rows an earlier instance of the service held when it stopped (it is gone: one
    service per store), so they are claimed and re-sent now rather than after their lease. A
    site's view releases its own site's rows only: the other sites' pushers of this process hold
    theirs."""
    with store._write() as conn:
        result = conn.execute(
            wms_outbox.update()
            .where(
                wms_outbox.c.origin == ORIGIN,
                wms_outbox.c.status == PENDING,
                wms_outbox.c.claimed_by.like(f"{PUSHER_PREFIX}%"),
                wms_outbox.c.claimed_by != me,
                store._of_site(),
            )
            .values(claimed_until=None)
        )
        return result.rowcount


def claim_pending(store: OperationalStore, limit: int, claimer: str, lease: dt.timedelta) -> list[OutboxRow]:
    """Claim the service's pending directives nobody holds (oldest exception first)."""
    now = _now()

    def claimable(table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.origin == ORIGIN,
            table.c.status == PENDING,
            store._of_site(table),
            sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until < now),
        )

    rows = store.claim(claimable, lambda table: [table.c.source_committed_at, table.c.directive_id], limit, claimer, lease, now)
    return sorted(rows, key=lambda r: (r.source_committed_at or now, r.directive_id))


def pending_count(store: OperationalStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(wms_outbox)
            .where(wms_outbox.c.origin == ORIGIN, wms_outbox.c.status == PENDING, store._of_site())
        ).scalar_one()


def dead_letters(store: OperationalStore) -> list[dict]:
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(delta_dead_letters).order_by(delta_dead_letters.c.id))]
    for row in rows:
        row["reasons"], row["fields"] = orjson.loads(row["reasons"]), orjson.loads(row["fields"])
    return rows


def late_lines_between(store: OperationalStore, after: dt.datetime, through: dt.datetime, limit: int) -> list[tuple]:
    """Late lines with an ERP commit time in (after, through], oldest first, as DELTA_LINES_SCHEMA
    rows (txn_id, txn_type, created_at, business_date, sku_id, quantity, uom): what the delta sensor reads."""
    t = delta_late_lines.c
    query = (
        sa.select(t.txn_id, t.txn_type, t.created_at, t.business_date, t.sku_id, t.quantity, t.uom)
        .where(t.created_at > after, t.created_at <= through)
        .order_by(t.created_at, t.seq)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query)]
    # SQLite hands back naive datetimes: they were written in UTC.
    return [(r[0], r[1], r[2] if r[2] is None or r[2].tzinfo else r[2].replace(tzinfo=dt.UTC), *r[3:]) for r in rows]


def observations_after(store: OperationalStore, seq: int, kind: str | None = None) -> list[dict]:
    query = sa.select(delta_observations).where(delta_observations.c.seq > seq).order_by(delta_observations.c.seq)
    if kind:
        query = query.where(delta_observations.c.kind == kind)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        row["detail"] = orjson.loads(row["detail"])
    return rows
