"""The real PostgreSQL on this machine, for tests marked `postgres`.

Each test run creates its own databases (named after the process and a random suffix) and drops
them at the end. With `CI` set, an unreachable server fails the test; elsewhere it skips with
the reason, so a laptop without PostgreSQL still runs the rest of the suite.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from benchmarks import real_parts
from benchmarks.real_parts import ADMIN_URL  # noqa: F401 (the tests import it from here)


def require_postgres() -> None:
    """Skip (or, under CI, fail) when the test server cannot be reached."""
    reason = real_parts.postgres_unreachable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI requires PostgreSQL: {reason}")
    if reason:
        pytest.skip(reason)


@contextmanager
def fresh_database(label: str) -> Iterator[sa.URL]:
    """A new, empty database for the duration of the block (benchmarks/real_parts.py), after the skip."""
    require_postgres()
    with real_parts.fresh_database(label) as url:
        yield url


def libpq_url(url: sa.URL) -> str:
    """The same database as a plain `postgresql://` URL (what Dagster's postgres_url takes)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
