"""The operational store, the same tests on a SQLite file and on the real PostgreSQL."""

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from velocity_platform.connectors.state import (
    ACKED,
    MIGRATIONS,
    PENDING,
    OperationalStore,
    wms_outbox,
)
from velocity_platform_tests.production.postgres import fresh_database

DAY = dt.date(2026, 2, 5)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'operational.sqlite'}"
        return
    with fresh_database("state") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def store(store_url) -> Iterator[OperationalStore]:
    store = OperationalStore(store_url)
    yield store
    store.dispose()


def directives(n: int, day: dt.date = DAY) -> list[dict]:
    return [
        {
            "directive_id": f"{day:%Y%m%d}-{i:04d}",
            "business_date": day,
            "sku_id": f"SKU-{i:04d}",
            "from_location": None,
            "to_location": f"AA-{i:03d}",
            "payload": "{}",
        }
        for i in range(n)
    ]


def test_a_new_store_is_at_the_latest_version_and_migrating_again_changes_nothing(store):
    latest = max(m.version for m in MIGRATIONS)
    assert store.schema_version() == latest
    assert store.migrate() == []
    with store.engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("wms_outbox")}
    assert versions == [m.version for m in MIGRATIONS]
    assert {"claimed_by", "claimed_until"} <= columns


def release_1_schema() -> sa.MetaData:
    """The store's tables as release 1 created them: no claim lease, no pusher in the push log."""
    md = sa.MetaData()
    sa.Table(
        "schema_migrations", md,
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "watermarks", md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "wms_outbox", md,
        sa.Column("directive_id", sa.String(64), primary_key=True),
        sa.Column("business_date", sa.Date, nullable=False, index=True),
        sa.Column("sku_id", sa.String(40), nullable=False),
        sa.Column("from_location", sa.String(40)),
        sa.Column("to_location", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("http_status", sa.Integer),
        sa.Column("ack_id", sa.String(100)),
        sa.Column("detail", sa.Text),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "push_log", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("directive_id", sa.String(64), nullable=False, index=True),
        sa.Column("http_status", sa.Integer),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    return md


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_rows(store_url):
    md = release_1_schema()
    engine = sa.create_engine(store_url)
    md.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(md.tables["schema_migrations"].insert().values(version=1, description="release 1", applied_at=now))
        conn.execute(
            md.tables["wms_outbox"].insert().values(
                directive_id="old-1", business_date=DAY, sku_id="SKU-0001", to_location="AA-001",
                payload="{}", status="pending", attempts=2, enqueued_at=now,
            )
        )
    engine.dispose()

    store = OperationalStore(store_url, migrate=False)
    assert store.schema_version() == 1
    assert store.migrate() == [2, 3, 4]
    assert store.migrate() == []
    # A release-1 directive was the one warehouse's: its site's view claims it, another's does not.
    assert store.for_site("WH-02").claim_pending(DAY, claimer="another-site") == []
    [row] = store.for_site("WH-01").claim_pending(DAY, claimer="after-upgrade")
    assert (row.directive_id, row.attempts, row.claimed_by, row.warehouse_id) == ("old-1", 2, "after-upgrade", "WH-01")
    assert row.origin is None  # a release-1 directive was the nightly run's
    store.record_outcome("old-1", ACKED, 201, "ACK-1", "applied", pusher="after-upgrade")
    assert [e.pusher for e in store.push_log_entries()] == ["after-upgrade"]
    store.dispose()


def test_processes_starting_at_once_migrate_the_store_once(store_url):
    # The code server, the daemon and every run worker open the store on start.
    starters = 6
    barrier = threading.Barrier(starters)
    errors: list[BaseException] = []
    applied: list[list[int]] = []

    def start() -> None:
        try:
            barrier.wait()
            store = OperationalStore(store_url, migrate=False)
            applied.append(store.migrate())
            store.dispose()
        except BaseException as exc:  # noqa: BLE001  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(v for versions in applied for v in versions) == [m.version for m in MIGRATIONS]


def test_enqueue_inserts_only_directives_not_already_in_the_outbox(store):
    assert store.enqueue(directives(5)) == 5
    assert store.enqueue(directives(8)) == 3
    assert [r.status for r in store.outbox(DAY)] == [PENDING] * 8


def test_a_claim_takes_at_most_its_limit_and_two_claims_never_overlap(store):
    store.enqueue(directives(10))
    first = store.claim_pending(DAY, 4, claimer="a")
    second = store.claim_pending(DAY, 4, claimer="b")
    third = store.claim_pending(DAY, 4, claimer="c")
    assert [len(first), len(second), len(third)] == [4, 4, 2]
    ids = [r.directive_id for r in first + second + third]
    assert sorted(ids) == sorted(set(ids)) == [d["directive_id"] for d in directives(10)]
    assert {r.claimed_by for r in second} == {"b"}
    assert store.claim_pending(DAY, 4, claimer="d") == []


def test_only_the_holder_may_send_and_a_lapsed_lease_is_taken_over(store):
    store.enqueue(directives(2))
    store.claim_pending(DAY, claimer="a", lease=dt.timedelta(minutes=5))
    assert store.hold(directives(1)[0]["directive_id"], "a")
    assert not store.hold(directives(1)[0]["directive_id"], "b")
    assert store.claim_pending(DAY, claimer="b") == []

    # "a" died: its lease lapses and "b" takes the rows; "a" may no longer send them.
    with store.engine.begin() as conn:
        conn.execute(wms_outbox.update().values(claimed_until=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    taken = store.claim_pending(DAY, claimer="b")
    assert [r.claimed_by for r in taken] == ["b", "b"]
    assert not store.hold(taken[0].directive_id, "a")
    assert store.hold(taken[0].directive_id, "b")


def test_a_settled_row_is_never_claimed_and_a_failed_send_is_released_for_the_next_pusher(store):
    store.enqueue(directives(3))
    acked, rejected, failed = store.claim_pending(DAY, claimer="a")
    store.record_outcome(acked.directive_id, ACKED, 201, "ACK-7", "applied", watermark=("wms:last", "2026-02-05"), pusher="a")
    store.record_outcome(rejected.directive_id, "rejected", 409, None, "occupied", pusher="a")
    store.record_failed_attempt(failed.directive_id, "WMS: connection dropped", pusher="a")

    [again] = store.claim_pending(DAY, claimer="b")
    assert again.directive_id == failed.directive_id and again.attempts == 1
    assert store.pending_count(DAY) == 1
    assert store.pending_count(DAY, exclude=[failed.directive_id]) == 0
    assert store.get_watermark("wms:last") == "2026-02-05"
    log = store.push_log_entries()
    assert [(e.directive_id, e.outcome, e.pusher) for e in log] == [
        (acked.directive_id, "acked", "a"),
        (rejected.directive_id, "rejected", "a"),
        (failed.directive_id, "error", "a"),
    ]
    assert [r.directive_id for r in store.acked_moves_from(DAY)] == [acked.directive_id]


def test_an_acknowledgement_is_not_recorded_without_its_log_row_and_watermark(store):
    store.enqueue(directives(1))
    [row] = store.claim_pending(DAY, claimer="a")
    with pytest.raises(sa.exc.StatementError):
        # A watermark value that cannot be stored makes the last statement of the transaction fail.
        store.record_outcome(row.directive_id, ACKED, 201, "ACK-1", "applied", watermark=("wms:last", object()), pusher="a")
    [after] = store.outbox(DAY)
    assert after.status == PENDING and after.ack_id is None
    assert store.push_log_count() == 0 and store.get_watermark("wms:last") is None


def test_many_claimers_at_once_split_the_rows_without_overlap(store_url):
    seed = OperationalStore(store_url)
    seed.enqueue(directives(240))
    seed.dispose()
    claimers = 6
    barrier = threading.Barrier(claimers)
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def claim_all(name: str) -> None:
        store = OperationalStore(store_url, migrate=False)
        try:
            barrier.wait()
            mine: list[str] = []
            while batch := store.claim_pending(DAY, 7, claimer=name):
                mine += [r.directive_id for r in batch]
            claimed[name] = mine
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=claim_all, args=(f"claimer-{i}",)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    every = [d for mine in claimed.values() for d in mine]
    assert len(every) == len(set(every)) == 240
