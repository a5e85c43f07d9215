"""The real PostgreSQL on this machine, for tests marked `postgres`.

Each test run creates its own databases (named after the process and a random suffix) and drops
them at the end. With `CI` set, an unreachable server fails the test; elsewhere it skips with
the reason, so a laptop without PostgreSQL still runs the rest of the suite.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

# The maintenance database of the server the tests may create databases on.
ADMIN_URL = os.environ.get("VELOCITY_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def require_postgres() -> None:
    """Skip (or, under CI, fail) when the test server cannot be reached."""
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = (
            f"PostgreSQL at {sa.make_url(ADMIN_URL).render_as_string(hide_password=True)} is unreachable "
            f"({str(exc.orig).strip().splitlines()[0]}); start it or set VELOCITY_TEST_PG_URL"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(reason)
    finally:
        engine.dispose()


@contextmanager
def fresh_database(label: str) -> Iterator[sa.URL]:
    """A new, empty database for the duration of the block; dropped (connections and all) after."""
    require_postgres()
    name = f"velocity_test_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.make_url(ADMIN_URL).set(database=name)
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def libpq_url(url: sa.URL) -> str:
    """The same database as a plain `postgresql://` URL (what Dagster's postgres_url takes)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
