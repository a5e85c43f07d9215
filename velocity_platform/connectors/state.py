"""The operational store: watermarks, the WMS outbox and the push log, on SQLAlchemy Core.

The same code runs on a SQLite file (the embedded default) and on PostgreSQL (production).
The schema is versioned: `migrate()` applies the missing steps in order, each in its own
transaction, and is safe to call on every start, from several processes at once (migrators
take a lock first: an advisory lock on PostgreSQL, the write lock of BEGIN IMMEDIATE on SQLite).

The outbox is how a directive reaches the WMS exactly once: a directive is enqueued (insert if
absent, keyed by its deterministic id), stays `pending` until the WMS acknowledges it, and its
acknowledgement, its push-log row and any watermark it advances are written in one transaction.

Two pushers (two runs, two machines) may work on the same day at once, so a row is claimed
before it is sent: one conditional `UPDATE ... RETURNING` stamps a lease (`claimed_by`,
`claimed_until`) on pending rows whose lease is absent or expired. On PostgreSQL the candidate
rows are picked `FOR UPDATE SKIP LOCKED`, so a second claimer passes over rows the first is
taking; on SQLite the statement runs inside BEGIN IMMEDIATE, which admits one writer at a time.
Either way a row goes to one claimer. The lease is short and a living pusher renews it (a
heartbeat), so a pusher that dies leaves its rows to the next one within a lease; a pusher on the
same host whose process is gone leaves them at once (`holder_is_gone`, `take_over`).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
import tenacity
from sqlalchemy.dialects import postgresql, sqlite

from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID, Warehouse

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

wms_outbox = sa.Table(
    "wms_outbox",
    metadata,
    sa.Column("directive_id", sa.String(64), primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False, index=True),
    sa.Column("sku_id", sa.String(40), nullable=False),
    sa.Column("from_location", sa.String(40)),
    sa.Column("to_location", sa.String(40), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # pending | acked | rejected
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("http_status", sa.Integer),
    sa.Column("ack_id", sa.String(100)),
    sa.Column("detail", sa.Text),
    sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acked_at", sa.DateTime(timezone=True)),
    # Added by migration 2: who holds the row for a push, and until when.
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    # Added by migration 3: who planned the directive (null: the nightly run; 'deltas': the
    # exception service) and, for the service's, when the ERP committed the line that caused it.
    sa.Column("origin", sa.String(16)),
    sa.Column("source_committed_at", sa.DateTime(timezone=True)),
    # The site whose WMS the directive is for (added by migration 4; older rows: the default site).
    sa.Column("warehouse_id", sa.String(32), index=True),
)

push_log = sa.Table(
    "push_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("directive_id", sa.String(64), nullable=False, index=True),
    sa.Column("http_status", sa.Integer),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("pusher", sa.String(200)),  # added by migration 2
)


# --- the exception service's records (velocity-platform deltas; connectors/delta_store.py) -------

# Lines the service rejected, with everything needed to fix them at the source. Not the nightly
# dead_letter_transactions table: that one is an asset table in DuckDB (one writer, rebuilt per
# partition), while these must commit in the same transaction as the service's watermark.
delta_dead_letters = sa.Table(
    "delta_dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_date", sa.Date),  # null when the line's event_ts could not be read
    sa.Column("source_batch", sa.String(200), nullable=False),  # the ERP page it came in
    sa.Column("txn_id", sa.String(100)),
    sa.Column("line_no", sa.String(40)),
    sa.Column("sku_id", sa.String(100)),
    sa.Column("raw_payload", sa.Text, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list: each names the field, the value and the fix
    sa.Column("fields", sa.Text, nullable=False),  # JSON list of the fields at fault
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
)

# Lines for business dates before the warehouse's today, as the service read them: the delta
# sensor reads these (by seq) and asks for the rebuild of the built dates that do not hold them.
delta_late_lines = sa.Table(
    "delta_late_lines",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_date", sa.Date, nullable=False, index=True),
    sa.Column("txn_id", sa.String(100)),
    sa.Column("txn_type", sa.String(40)),
    sa.Column("sku_id", sa.String(100)),
    sa.Column("quantity", sa.Float),
    sa.Column("uom", sa.String(40)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

# What the service noticed and did not act on: 'spike' (a SKU ordered today far beyond its
# expected rate) and 'new_sku' (a SKU the nightly SKU master lacks). One per kind, SKU and day.
delta_observations = sa.Table(
    "delta_observations",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("sku_id", sa.String(100), nullable=False),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON: the figures
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("kind", "sku_id", "business_date", name="uq_delta_observation"),
)


# The network's registry: each site with its facts (domain/network.py: Warehouse).
warehouses = sa.Table(
    "warehouses",
    metadata,
    sa.Column("warehouse_id", sa.String(32), primary_key=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("aisles", sa.Integer, nullable=False),
    sa.Column("bays", sa.Integer, nullable=False),
    sa.Column("levels", sa.Integer, nullable=False),
    sa.Column("routing", sa.String(16), nullable=False),
    sa.Column("wms_url", sa.String(500)),
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _create_tables(*tables: sa.Table) -> Callable[[sa.Connection], None]:
    def apply(conn: sa.Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)

    return apply


def _add_columns(*columns: sa.Column) -> Callable[[sa.Connection], None]:
    # A store created after the column joined the table definition already has it (step 1 creates
    # tables as defined now), so a column is added only where it is missing.
    def apply(conn: sa.Connection) -> None:
        for column in columns:
            present = {c["name"] for c in sa.inspect(conn).get_columns(column.table.name)}
            if column.name not in present:
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {column.table.name} ADD COLUMN {ddl}"))

    return apply


# Append, never edit, once released: a store records the versions it has and runs the rest.
MIGRATIONS: list[Migration] = [
    Migration(1, "watermarks, WMS outbox and push log", _create_tables(watermarks, wms_outbox, push_log)),
    Migration(
        2,
        "outbox claim lease and the pusher of each push",
        _add_columns(wms_outbox.c.claimed_by, wms_outbox.c.claimed_until, push_log.c.pusher),
    ),
    Migration(
        3,
        "exception service: directive origin, its dead letters, late lines and observations",
        lambda conn: (
            _add_columns(wms_outbox.c.origin, wms_outbox.c.source_committed_at)(conn),
            _create_tables(delta_dead_letters, delta_late_lines, delta_observations)(conn),
        ),
    ),
    Migration(
        4,
        "a network of warehouses: the registry, and the site of each directive",
        lambda conn: (
            _add_columns(wms_outbox.c.warehouse_id)(conn),
            # Directives from before sites existed were the one warehouse's.
            conn.execute(wms_outbox.update().where(wms_outbox.c.warehouse_id.is_(None)).values(warehouse_id=DEFAULT_WAREHOUSE_ID)),
            _create_tables(warehouses)(conn),
        ),
    ),
]

PENDING, ACKED, REJECTED = "pending", "acked", "rejected"

# Short, since a living pusher renews its leases by heartbeat (connectors/outbox.py) and re-stamps
# each row's just before it posts it (`hold`): a dead pusher on another host costs a re-run this
# long at most (on this host none: its process is seen gone). It was 5 minutes, the re-run's wait.
DEFAULT_LEASE = dt.timedelta(seconds=60)

# Serialises migrators on PostgreSQL (pg_advisory_xact_lock takes any bigint; this one is ours).
_MIGRATION_LOCK_ID = 7_236_114_002


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_pusher_id(label: str = "pusher") -> str:
    """A claimer's name: unique per call, and telling an operator which host and process it was."""
    return f"{label}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(claimer: str) -> bool:
    """True when `claimer` (a name from new_pusher_id) ran on this host and its process no longer
    exists (or is a zombie), so its leases can be taken over without waiting them out. False for
    another host, a living process or a name not made by new_pusher_id: their leases are waited for."""
    _, at, place = claimer.rpartition("@")
    host, _, rest = place.partition(":")
    pid_text, _, _ = rest.partition(":")
    if not at or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # killed but not yet reaped by its parent: gone all the same
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Holder:
    """A pusher holding unexpired leases on pending rows of a date."""

    claimer: str
    until: dt.datetime  # the latest of its leases
    directives: int


def _still_held(directive_ids: Collection[str], claimer: str) -> sa.ColumnElement[bool]:
    """Rows among `directive_ids` that `claimer` claimed and that are not settled yet."""
    return sa.and_(
        wms_outbox.c.directive_id.in_(list(directive_ids)),
        wms_outbox.c.claimed_by == claimer,
        wms_outbox.c.status == PENDING,
    )


@dataclass(frozen=True)
class Outcome:
    """What the WMS answered for one directive, as the store settles it."""

    directive_id: str
    status: str  # ACKED | REJECTED
    http_status: int | None
    ack_id: str | None
    detail: str | None


@dataclass(frozen=True)
class OutboxRow:
    directive_id: str
    business_date: dt.date
    sku_id: str
    from_location: str | None
    to_location: str
    payload: str
    status: str
    attempts: int
    http_status: int | None
    ack_id: str | None
    detail: str | None
    acked_at: dt.datetime | None
    claimed_by: str | None = None
    claimed_until: dt.datetime | None = None
    origin: str | None = None  # None: the nightly run; 'deltas': the exception service
    source_committed_at: dt.datetime | None = None
    warehouse_id: str | None = None


@dataclass(frozen=True)
class PushLogEntry:
    directive_id: str
    http_status: int | None
    outcome: str
    detail: str | None
    at: dt.datetime
    pusher: str | None


def pending_outbox_row(directive: dict, enqueued_at: dt.datetime) -> dict:
    """The outbox row of a directive not sent yet (one shape for every producer of directives)."""
    return {
        "directive_id": directive["directive_id"],
        "business_date": directive["business_date"],
        "sku_id": directive["sku_id"],
        "from_location": directive.get("from_location"),
        "to_location": directive["to_location"],
        "payload": directive["payload"],
        "status": PENDING,
        "attempts": 0,
        "enqueued_at": enqueued_at,
        "warehouse_id": directive.get("warehouse_id") or DEFAULT_WAREHOUSE_ID,
    }


class OperationalStore:
    """The store, or one site's view of it (`for_site`): the outbox rows of that site only."""

    def __init__(self, url: str, migrate: bool = True):
        self.url = url
        self.warehouse_id: str | None = None
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        if migrate:
            self.migrate()

    def dispose(self) -> None:
        self.engine.dispose()

    def for_site(self, warehouse_id: str) -> "OperationalStore":
        """The same store (one engine) seeing one site's directives: what a site's night pushes,
        counts and rewinds never includes another site's."""
        view = copy.copy(self)
        view.warehouse_id = warehouse_id
        return view

    def _of_site(self, table: sa.Table = None) -> sa.ColumnElement[bool]:
        table = wms_outbox if table is None else table
        return sa.true() if self.warehouse_id is None else table.c.warehouse_id == self.warehouse_id

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction. On SQLite it takes the writer's lock up front (BEGIN IMMEDIATE), so
        what it reads cannot change before it writes and it never fails half-way on an upgrade."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    # --- schema ------------------------------------------------------------------------------

    def _lock_migrations(self, conn: sa.Connection) -> None:
        if self.dialect == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))

    def migrate(self) -> list[int]:
        """Apply missing migrations in order; returns the versions applied now."""
        applied_now: list[int] = []
        with self._write() as conn:
            self._lock_migrations(conn)
            schema_migrations.create(conn, checkfirst=True)
        for migration in MIGRATIONS:
            with self._write() as conn:
                self._lock_migrations(conn)
                done = conn.execute(
                    sa.select(schema_migrations.c.version).where(schema_migrations.c.version == migration.version)
                ).first()
                if done:
                    continue
                migration.apply(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        version=migration.version, description=migration.description, applied_at=_now()
                    )
                )
                applied_now.append(migration.version)
        return applied_now

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar() or 0

    def _insert_ignore(self, table: sa.Table, keys: list[str]):
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)

    # --- watermarks --------------------------------------------------------------------------

    def get_watermark(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(watermarks.c.value).where(watermarks.c.name == name)).scalar()

    def _set_watermark(self, conn: sa.Connection, name: str, value: str) -> None:
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        stmt = dialect.insert(watermarks).values(name=name, value=value, updated_at=_now())
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["name"], set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
            )
        )

    def set_watermark(self, name: str, value: str) -> None:
        with self._write() as conn:
            self._set_watermark(conn, name, value)

    # --- outbox ------------------------------------------------------------------------------

    def enqueue(self, directives: Iterable[dict]) -> int:
        """Insert directives not already in the outbox; returns how many were new."""
        now = _now()
        rows = [pending_outbox_row({"warehouse_id": self.warehouse_id, **d}, now) for d in directives]
        if not rows:
            return 0
        # RETURNING names exactly the rows this call inserted, however many enqueue at once.
        stmt = self._insert_ignore(wms_outbox, ["directive_id"]).returning(wms_outbox.c.directive_id)
        with self._write() as conn:
            return len(conn.execute(stmt, rows).all())

    def _claimable(self, business_date: dt.date, now: dt.datetime, exclude: Collection[str], table=wms_outbox):
        condition = sa.and_(
            table.c.business_date == business_date,
            self._of_site(table),
            table.c.status == PENDING,
            sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until < now),
        )
        if exclude:
            condition = sa.and_(condition, table.c.directive_id.not_in(list(exclude)))
        return condition

    def claim_pending(
        self,
        business_date: dt.date,
        limit: int | None = None,
        *,
        claimer: str | None = None,
        lease: dt.timedelta = DEFAULT_LEASE,
        exclude: Collection[str] = (),
    ) -> list[OutboxRow]:
        """Claim pending directives of a date for one pusher, in directive_id order.

        A row is claimable when it is pending and nobody holds an unexpired lease on it; the rows
        returned now carry `claimer`'s lease and no other claimer gets them until it expires or the
        row is settled. `exclude` leaves out rows this pusher has already tried in this pass.
        """
        now = _now()
        rows = self.claim(
            lambda table: self._claimable(business_date, now, exclude, table),
            lambda table: [table.c.directive_id],
            limit,
            claimer or new_pusher_id(),
            lease,
            now,
        )
        return sorted(rows, key=lambda r: r.directive_id)

    def claim(
        self,
        claimable: Callable[[sa.Table], sa.ColumnElement[bool]],
        order_by: Callable[[sa.Table], list],
        limit: int | None,
        claimer: str,
        lease: dt.timedelta,
        now: dt.datetime,
    ) -> list[OutboxRow]:
        """Put `claimer`'s lease on up to `limit` outbox rows that are `claimable` (a condition on
        the table or an alias of it), taken in `order_by` order, skipping rows another
        transaction has locked. Returns the rows as claimed (in no particular order)."""
        candidate = wms_outbox.alias("candidate")
        candidates = (
            sa.select(candidate.c.directive_id)
            .where(claimable(candidate))
            .order_by(*order_by(candidate))
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer (BEGIN IMMEDIATE)
        )
        if limit:
            candidates = candidates.limit(limit)
        # Picked once: PostgreSQL may re-run a locking subquery inside IN (...) for each row it
        # scans, and with SKIP LOCKED each re-run passes over the rows already taken and returns
        # more, so LIMIT would not hold. A MATERIALIZED CTE is evaluated exactly once.
        picked = candidates.cte("candidates").prefix_with("MATERIALIZED")
        stmt = (
            wms_outbox.update()
            # Re-checked on the row itself: on PostgreSQL a row settled or claimed since the
            # candidates' snapshot is re-read before it is updated.
            .where(wms_outbox.c.directive_id.in_(sa.select(picked.c.directive_id)), claimable(wms_outbox))
            .values(claimed_by=claimer, claimed_until=now + lease)
            .returning(*wms_outbox.c)
        )
        with self._write() as conn:
            return [OutboxRow(**_row(r)) for r in conn.execute(stmt)]

    def hold(self, directive_id: str, claimer: str, lease: dt.timedelta = DEFAULT_LEASE) -> bool:
        """Renew `claimer`'s lease on a pending row just before sending it.

        False when the row is settled or another pusher has taken it over (after this lease
        expired): the caller must not send it.
        """
        return bool(self.hold_many([directive_id], claimer, lease))

    def hold_many(self, directive_ids: Collection[str], claimer: str, lease: dt.timedelta = DEFAULT_LEASE) -> list[str]:
        """hold() for a batch sent in one request: the ids still held by `claimer`, now renewed."""
        if not directive_ids:
            return []
        with self._write() as conn:
            held = conn.execute(
                wms_outbox.update()
                .where(_still_held(directive_ids, claimer))
                .values(claimed_until=_now() + lease)
                .returning(wms_outbox.c.directive_id)
            )
            return sorted(r[0] for r in held)

    def renew(self, claimer: str, lease: dt.timedelta = DEFAULT_LEASE) -> int:
        """The heartbeat: extend every lease `claimer` still holds on a pending row (not the rows
        it released or settled); returns how many."""
        return self._lease_until(
            _now() + lease,
            wms_outbox.c.claimed_by == claimer,
            wms_outbox.c.status == PENDING,
            wms_outbox.c.claimed_until.is_not(None),
        )

    def _lease_until(self, until: dt.datetime | None, *where: sa.ColumnElement[bool]) -> int:
        """Set the lease end (None: released) of the rows `where` selects; returns how many."""
        with self._write() as conn:
            return conn.execute(wms_outbox.update().where(*where).values(claimed_until=until)).rowcount

    def holders(self, business_date: dt.date, exclude: Collection[str] = ()) -> list[Holder]:
        """Who holds unexpired leases on pending rows of a date (less `exclude`), and until when."""
        query = (
            sa.select(wms_outbox.c.claimed_by, sa.func.max(wms_outbox.c.claimed_until), sa.func.count())
            .where(
                wms_outbox.c.business_date == business_date,
                wms_outbox.c.status == PENDING,
                wms_outbox.c.claimed_until >= _now(),
                self._of_site(),
            )
            .group_by(wms_outbox.c.claimed_by)
            .order_by(wms_outbox.c.claimed_by)
        )
        if exclude:
            query = query.where(wms_outbox.c.directive_id.not_in(list(exclude)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Holder(claimer or "", until if until.tzinfo else until.replace(tzinfo=dt.UTC), count) for claimer, until, count in rows
        ]

    def take_over(self, business_date: dt.date, claimers: Collection[str]) -> int:
        """End the leases `claimers` hold on pending rows of a date (their pushers are gone), so
        the next claim takes the rows; returns how many."""
        if not claimers:
            return 0
        return self._lease_until(
            None,
            wms_outbox.c.business_date == business_date,
            wms_outbox.c.status == PENDING,
            wms_outbox.c.claimed_by.in_(list(claimers)),
            self._of_site(),
        )

    def release(self, directive_ids: Collection[str], claimer: str) -> int:
        """Give back rows `claimer` holds but will not send now, so the next pusher need not wait
        for the lease to lapse; returns how many were released."""
        if not directive_ids:
            return 0
        return self._lease_until(None, _still_held(directive_ids, claimer))

    def pending_count(self, business_date: dt.date, exclude: Collection[str] = ()) -> int:
        """Pending directives of a date, claimed or not (less `exclude`)."""
        query = sa.select(sa.func.count()).select_from(wms_outbox).where(
            wms_outbox.c.business_date == business_date, wms_outbox.c.status == PENDING, self._of_site()
        )
        if exclude:
            query = query.where(wms_outbox.c.directive_id.not_in(list(exclude)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def record_outcome(
        self,
        directive_id: str,
        status: str,
        http_status: int | None,
        ack_id: str | None,
        detail: str | None,
        watermark: tuple[str, str] | None = None,
        pusher: str | None = None,
    ) -> None:
        """Acknowledge or reject a directive, log it, and advance a watermark: one transaction."""
        self.record_outcomes([Outcome(directive_id, status, http_status, ack_id, detail)], watermark, pusher)

    def record_outcomes(
        self, outcomes: Sequence[Outcome], watermark: tuple[str, str] | None = None, pusher: str | None = None
    ) -> None:
        """record_outcome() for the answers of one batch request: all of them in one transaction."""
        if not outcomes:
            return
        with self._write() as conn:
            self._settle(conn, outcomes, pusher)
            if watermark:
                self._set_watermark(conn, *watermark)

    def _settle(self, conn: sa.Connection, outcomes: Sequence[Outcome], pusher: str | None) -> None:
        """Settle answered directives and log them, inside the caller's transaction."""
        now = _now()
        bind = sa.bindparam
        settle = (
            wms_outbox.update()
            .where(wms_outbox.c.directive_id == bind("id_"))
            .values(
                status=bind("status_"),
                attempts=wms_outbox.c.attempts + 1,
                http_status=bind("http_status_"),
                ack_id=bind("ack_id_"),
                detail=bind("detail_"),
                acked_at=bind("acked_at_"),
                claimed_until=None,
            )
        )
        conn.execute(
            settle,
            [
                {
                    "id_": o.directive_id,
                    "status_": o.status,
                    "http_status_": o.http_status,
                    "ack_id_": o.ack_id,
                    "detail_": o.detail,
                    "acked_at_": now if o.status == ACKED else None,
                }
                for o in outcomes
            ],
        )
        conn.execute(
            push_log.insert(),
            [
                {"directive_id": o.directive_id, "http_status": o.http_status, "outcome": o.status,
                 "detail": o.detail, "at": now, "pusher": pusher}
                for o in outcomes
            ],
        )

    def record_failed_attempt(self, directive_id: str, detail: str, pusher: str | None = None) -> None:
        """Count a send that did not get an answer; the row stays pending and its lease is released,
        so the next run (or another pusher) re-sends it with the same Idempotency-Key."""
        self.record_failed_attempts([directive_id], detail, pusher)

    def record_failed_attempts(self, directive_ids: Collection[str], detail: str, pusher: str | None = None) -> None:
        """record_failed_attempt() for every directive of a batch request that got no answer."""
        if not directive_ids:
            return
        now = _now()
        with self._write() as conn:
            conn.execute(
                wms_outbox.update()
                .where(wms_outbox.c.directive_id.in_(list(directive_ids)))
                .values(attempts=wms_outbox.c.attempts + 1, detail=detail, claimed_until=None)
            )
            conn.execute(
                push_log.insert(),
                [{"directive_id": i, "outcome": "error", "detail": detail, "at": now, "pusher": pusher} for i in directive_ids],
            )

    def outbox(self, business_date: dt.date | None = None) -> list[OutboxRow]:
        query = sa.select(wms_outbox).where(self._of_site()).order_by(wms_outbox.c.business_date, wms_outbox.c.directive_id)
        if business_date is not None:
            query = query.where(wms_outbox.c.business_date == business_date)
        with self.engine.connect() as conn:
            return [OutboxRow(**_row(r)) for r in conn.execute(query)]

    def acked_moves_from(self, business_date: dt.date) -> list[OutboxRow]:
        """Moves the WMS applied for `business_date` and later: what rewinds the live assignment."""
        query = (
            sa.select(wms_outbox)
            .where(wms_outbox.c.business_date >= business_date, wms_outbox.c.status == ACKED, self._of_site())
            .order_by(wms_outbox.c.business_date, wms_outbox.c.directive_id)
        )
        with self.engine.connect() as conn:
            return [OutboxRow(**_row(r)) for r in conn.execute(query)]

    # --- the network's registry --------------------------------------------------------------

    def register_warehouse(self, site: Warehouse) -> str:
        """Register a site, or update the facts of one registered already; says which."""
        now = _now()
        values = site.model_dump()
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        with self._write() as conn:
            known = conn.execute(sa.select(warehouses.c.warehouse_id).where(warehouses.c.warehouse_id == site.warehouse_id)).first()
            stmt = dialect.insert(warehouses).values(**values, registered_at=now, updated_at=now)
            conn.execute(stmt.on_conflict_do_update(index_elements=["warehouse_id"], set_={**values, "updated_at": now}))
        return "updated" if known else "registered"

    def registered_warehouses(self) -> list[Warehouse]:
        """Every registered site, by id."""
        columns = [c for c in warehouses.c if c.name in Warehouse.model_fields]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).order_by(warehouses.c.warehouse_id)).all()
        return [Warehouse(**r._mapping) for r in rows]

    def push_log_count(self, directive_ids: Sequence[str] | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(push_log)
        if directive_ids is not None:
            query = query.where(push_log.c.directive_id.in_(list(directive_ids)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def push_log_entries(self, directive_ids: Sequence[str] | None = None) -> list[PushLogEntry]:
        """Every send attempt, oldest first: which pusher sent what and what came back."""
        query = sa.select(
            push_log.c.directive_id,
            push_log.c.http_status,
            push_log.c.outcome,
            push_log.c.detail,
            push_log.c.at,
            push_log.c.pusher,
        ).order_by(push_log.c.id)
        if directive_ids is not None:
            query = query.where(push_log.c.directive_id.in_(list(directive_ids)))
        with self.engine.connect() as conn:
            return [PushLogEntry(**r._mapping) for r in conn.execute(query)]


def _row(row: sa.Row) -> dict:
    values = dict(row._mapping)
    values.pop("enqueued_at", None)
    return values


@tenacity.retry(
    retry=tenacity.retry_if_exception(lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e)),
    wait=tenacity.wait_random_exponential(multiplier=0.02, max=1.0),
    stop=tenacity.stop_after_delay(30),
    reraise=True,
)
def _use_wal(cursor: sqlite3.Cursor) -> None:
    # Switching a new file to WAL needs it to itself and SQLite answers "locked" at once, without
    # the busy timeout, when several processes open a new store together: so retry. WAL is kept in
    # the file, so later connections find it set and skip the switch.
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")


def _sqlite_connect(dbapi_connection, _record) -> None:
    # WAL lets a reader (the UI, a check) look while a push writes; busy_timeout waits on locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _use_wal(cursor)
    cursor.close()
    # SQLAlchemy emits BEGIN itself (below), so transactions, DDL included, are what they say.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def moves_sent_from(store: OperationalStore, business_date: dt.date) -> list[OutboxRow]:
    """Moves for `business_date` and later that the WMS has or may have applied: acked or pending.

    A pending move may already be applied (the WMS committed it and the answer was lost, or the
    pusher was killed before recording it). Rewinding it is right either way: it was planned from
    its from_location, where the SKU stood at the start of its day. Rejected moves never applied.

    The exception service's first slots are left out: they were put away during the day, outside
    any nightly plan, and a re-plan that undid them would plan a second first slot for a SKU the
    WMS already holds somewhere (and be refused). A re-plan sees them where they are.
    """
    query = (
        sa.select(wms_outbox)
        .where(
            wms_outbox.c.business_date >= business_date,
            wms_outbox.c.status.in_([ACKED, PENDING]),
            store._of_site(),
            sa.or_(wms_outbox.c.origin.is_(None), wms_outbox.c.origin != "deltas"),
        )
        .order_by(wms_outbox.c.business_date, wms_outbox.c.directive_id)
    )
    with store.engine.connect() as conn:
        return [OutboxRow(**_row(r)) for r in conn.execute(query)]
