"""The operational store: watermarks, the WMS outbox and the push log, on SQLAlchemy Core.

The same code runs on a SQLite file (the embedded default) and on PostgreSQL (production).
The schema is versioned: `migrate()` applies the missing steps in order, each in its own
transaction, and is safe to call on every start.

The outbox is how a directive reaches the WMS exactly once: a directive is enqueued (insert if
absent, keyed by its deterministic id), stays `pending` until the WMS acknowledges it, and its
acknowledgement, its push-log row and any watermark it advances are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

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
)

# Each step is (version, description, tables it creates). Append, never edit, once released.
MIGRATIONS: list[tuple[int, str, list[sa.Table]]] = [
    (1, "watermarks, WMS outbox and push log", [watermarks, wms_outbox, push_log]),
]

PENDING, ACKED, REJECTED = "pending", "acked", "rejected"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


class OperationalStore:
    def __init__(self, url: str, migrate: bool = True):
        self.url = url
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if migrate:
            self.migrate()

    def dispose(self) -> None:
        self.engine.dispose()

    # --- schema ------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply missing migrations in order; returns the versions applied now."""
        applied_now: list[int] = []
        schema_migrations.create(self.engine, checkfirst=True)
        for version, description, tables in MIGRATIONS:
            with self.engine.begin() as conn:
                done = conn.execute(
                    sa.select(schema_migrations.c.version).where(schema_migrations.c.version == version)
                ).first()
                if done:
                    continue
                for table in tables:
                    table.create(conn, checkfirst=True)
                conn.execute(
                    self._insert_ignore(schema_migrations, ["version"]).values(
                        version=version, description=description, applied_at=_now()
                    )
                )
                applied_now.append(version)
        return applied_now

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar() or 0

    def _insert_ignore(self, table: sa.Table, keys: list[str]):
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)

    # --- watermarks --------------------------------------------------------------------------

    def get_watermark(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(watermarks.c.value).where(watermarks.c.name == name)).scalar()

    def _set_watermark(self, conn: sa.Connection, name: str, value: str) -> None:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(watermarks).values(name=name, value=value, updated_at=_now())
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["name"], set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
            )
        )

    def set_watermark(self, name: str, value: str) -> None:
        with self.engine.begin() as conn:
            self._set_watermark(conn, name, value)

    # --- outbox ------------------------------------------------------------------------------

    def enqueue(self, directives: Iterable[dict]) -> int:
        """Insert directives not already in the outbox; returns how many were new."""
        rows = [
            {
                "directive_id": d["directive_id"],
                "business_date": d["business_date"],
                "sku_id": d["sku_id"],
                "from_location": d.get("from_location"),
                "to_location": d["to_location"],
                "payload": d["payload"],
                "status": PENDING,
                "attempts": 0,
                "enqueued_at": _now(),
            }
            for d in directives
        ]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(wms_outbox)).scalar_one()
            conn.execute(self._insert_ignore(wms_outbox, ["directive_id"]), rows)
            after = conn.execute(sa.select(sa.func.count()).select_from(wms_outbox)).scalar_one()
        return after - before

    def claim_pending(self, business_date: dt.date, limit: int | None = None) -> list[OutboxRow]:
        """Pending directives of a date. On PostgreSQL rows are locked with SKIP LOCKED."""
        query = (
            sa.select(wms_outbox)
            .where(wms_outbox.c.business_date == business_date, wms_outbox.c.status == PENDING)
            .order_by(wms_outbox.c.directive_id)
        )
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [OutboxRow(**_row(r)) for r in conn.execute(query)]

    def record_outcome(
        self,
        directive_id: str,
        status: str,
        http_status: int | None,
        ack_id: str | None,
        detail: str | None,
        watermark: tuple[str, str] | None = None,
    ) -> None:
        """Acknowledge or reject a directive, log it, and advance a watermark: one transaction."""
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                wms_outbox.update()
                .where(wms_outbox.c.directive_id == directive_id)
                .values(
                    status=status,
                    attempts=wms_outbox.c.attempts + 1,
                    http_status=http_status,
                    ack_id=ack_id,
                    detail=detail,
                    acked_at=now if status == ACKED else None,
                )
            )
            conn.execute(
                push_log.insert().values(
                    directive_id=directive_id, http_status=http_status, outcome=status, detail=detail, at=now
                )
            )
            if watermark:
                self._set_watermark(conn, *watermark)

    def record_failed_attempt(self, directive_id: str, detail: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                wms_outbox.update()
                .where(wms_outbox.c.directive_id == directive_id)
                .values(attempts=wms_outbox.c.attempts + 1, detail=detail)
            )
            conn.execute(
                push_log.insert().values(directive_id=directive_id, outcome="error", detail=detail, at=_now())
            )

    def outbox(self, business_date: dt.date | None = None) -> list[OutboxRow]:
        query = sa.select(wms_outbox).order_by(wms_outbox.c.business_date, wms_outbox.c.directive_id)
        if business_date is not None:
            query = query.where(wms_outbox.c.business_date == business_date)
        with self.engine.connect() as conn:
            return [OutboxRow(**_row(r)) for r in conn.execute(query)]

    def acked_moves_from(self, business_date: dt.date) -> list[OutboxRow]:
        """Moves the WMS applied for `business_date` and later: what rewinds the live assignment."""
        query = (
            sa.select(wms_outbox)
            .where(wms_outbox.c.business_date >= business_date, wms_outbox.c.status == ACKED)
            .order_by(wms_outbox.c.business_date, wms_outbox.c.directive_id)
        )
        with self.engine.connect() as conn:
            return [OutboxRow(**_row(r)) for r in conn.execute(query)]

    def push_log_count(self, directive_ids: Sequence[str] | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(push_log)
        if directive_ids is not None:
            query = query.where(push_log.c.directive_id.in_(list(directive_ids)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()


def _row(row: sa.Row) -> dict:
    values = dict(row._mapping)
    values.pop("enqueued_at", None)
    return values


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets a reader (the UI, a check) look while a push writes; busy_timeout waits on locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
