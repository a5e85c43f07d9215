"""The real parts of a Celery deployment on this machine, for benchmarks and tests alike:
fresh PostgreSQL databases, the RabbitMQ broker, and `velocity-platform worker` subprocesses.

Moved here from velocity_platform_tests (workers/cluster.py, production/postgres.py) so that a
benchmark can build the same deployment; the tests import them from here and add their skips.
Nothing here imports pytest: an unreachable server is a reason string, the caller decides.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from benchmarks.deployment import PROJECT, wait_until

# The maintenance database of the server databases may be created on.
ADMIN_URL = os.environ.get("VELOCITY_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
BROKER_URL = os.environ.get("VELOCITY_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BIN = Path(sys.prefix) / "bin"


def _admin_engine() -> sa.Engine:
    return sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def postgres_unreachable() -> str | None:
    """Why the PostgreSQL server at ADMIN_URL cannot be used, or None when it can."""
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.OperationalError as exc:
        return (
            f"PostgreSQL at {sa.make_url(ADMIN_URL).render_as_string(hide_password=True)} is unreachable "
            f"({str(exc.orig).strip().splitlines()[0]}); start it or set VELOCITY_TEST_PG_URL"
        )
    finally:
        engine.dispose()


@contextmanager
def fresh_database(label: str) -> Iterator[sa.URL]:
    """A new, empty database for the duration of the block; dropped (connections and all) after."""
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


def broker_unreachable(url: str = BROKER_URL) -> str | None:
    """Why RabbitMQ at `url` cannot be used, or None when it can."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
        return None
    except Exception as exc:  # kombu raises the transport's own errors
        return f"RabbitMQ at {Connection(url).as_uri()} is unreachable ({exc}); start it or set VELOCITY_TEST_BROKER_URL"


def delete_queue(queue: str, url: str = BROKER_URL) -> None:
    """A queue gone from the broker (a durable queue outlives its workers)."""
    from kombu import Connection

    with Connection(url, connect_timeout=5) as connection:
        connection.default_channel.queue_delete(queue)


class Worker:
    """One `velocity-platform worker` subprocess on `queue`; `prefix` runs it inside something (a netns)."""

    def __init__(
        self, name: str, queue: str, env: dict[str, str], log: Path, prefix: list[str] | None = None, concurrency: int | None = None
    ) -> None:
        self.name, self.queue, self.env, self.log, self.prefix = name, queue, env, log, prefix or []
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    @property
    def node(self) -> str:
        return self.log.read_text(errors="replace").split("Celery worker ", 1)[1].split(":", 1)[0]

    def start(self) -> Worker:
        argv = [*self.prefix, str(BIN / "velocity-platform"), "worker", "--queue", self.queue, "--name", self.name]
        if self.concurrency is not None:
            argv += ["--concurrency", str(self.concurrency)]
        with open(self.log, "wb") as out:
            # A session of its own: stop() reaches the pool processes too.
            self.process = subprocess.Popen(
                argv, cwd=PROJECT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.process.returncode}:\n{self.text()[-3000:]}")
        return " ready." in self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_9(self) -> None:
        """kill -9 of the worker process (its pool processes die with it)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM, as a service manager stops it; its exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            return None


def wait_for_workers(workers: list[Worker], deadline_s: float = 90.0) -> None:
    wait_until("the workers ready", lambda: all(w.ready() for w in workers), deadline_s)
