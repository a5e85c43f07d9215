"""A local deployment for benchmarks and tests: dagster-webserver and dagster-daemon as subprocesses.

Both read the repository's workspace.yaml and the DAGSTER_HOME of the environment they are
given (a temporary one with the repository's dagster.yaml), exactly as `make dev` runs them.
Everything is driven through the webserver's GraphQL API, as the UI drives it
(velocity_platform/connectors/dagster_webserver.py, the same calls deploy/prod.py makes).
"""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import httpx

from velocity_platform.connectors import dagster_webserver as webserver
from velocity_platform.defs.partitions import DUCKDB_POOL
from velocity_platform.simulators.serve import free_port

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.prefix) / "bin"


def wait_until(what: str, ready: Callable[[], object], deadline_s: float, poll_s: float = 0.5) -> object:
    """Poll `ready` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {deadline_s:.0f}s")
        time.sleep(poll_s)


class LocalDeployment:
    def __init__(self, env: dict[str, str], logs: Path, pool_slots: int = 1, backfill_pass_s: int | None = None) -> None:
        self.env = env
        self.pool_slots = pool_slots  # runs the duckdb pool admits at once
        self.backfill_pass_s = backfill_pass_s  # None: Dagster's own 30 s (benchmarks/daemon.py)
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workspace = str(PROJECT / "workspace.yaml")
        self._processes: list[subprocess.Popen] = []

    def _spawn(self, name: str, argv: list[str]) -> None:
        # A session of its own, so stopping it also stops the code servers and run workers it spawned.
        with open(self.logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                argv, cwd=PROJECT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._processes.append(process)

    def start(self, deadline_s: float = 180.0) -> "LocalDeployment":
        """The webserver, once it has loaded the code location (the daemon comes with start_daemon)."""
        # As `make dev` does: the pool exists before the daemon's first pass, which would otherwise
        # take it as unlimited and start the first queued runs together.
        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            instance.event_log_storage.set_concurrency_slots(DUCKDB_POOL, self.pool_slots)
        self._spawn("webserver", [str(BIN / "dagster-webserver"), "-w", self.workspace, "-h", "127.0.0.1", "-p", str(self.port)])
        wait_until("the code location loaded in the webserver", self._location_loaded, deadline_s)
        return self

    def start_daemon(self) -> None:
        """The daemon: schedules, sensors, the run queue, backfills, freshness.

        Its backfill loop runs every 30 s (or every `backfill_pass_s`) and first on start, so a
        backfill launched before the daemon starts is picked up at once.
        """
        daemon = [str(BIN / "dagster-daemon")]
        if self.backfill_pass_s is not None:
            daemon = [sys.executable, "-m", "benchmarks.daemon", str(self.backfill_pass_s)]
        self._spawn("daemon", [*daemon, "run", "-w", self.workspace])

    def _location_loaded(self) -> bool:
        for process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}; see {self.logs}")
        try:
            return webserver.location_loaded(self.url)
        except (httpx.HTTPError, KeyError):
            return False

    def stop(self, grace_s: float = 30.0) -> None:
        for process in self._processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def __enter__(self) -> "LocalDeployment":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return webserver.graphql(self.url, query, variables)

    def launch_backfill(self, dates: list[dt.date], warehouses: tuple[str, ...] = ("WH-01",)) -> str:
        """A backfill of the nightly job over `dates` x `warehouses`, as the UI's "Launch backfill"
        makes it (the sites are warehouse partitions first, as the registry sensor makes them)."""
        webserver.add_warehouse_partitions(self.url, list(warehouses))
        keys = webserver.site_day_keys(dates, list(warehouses))
        return webserver.launch_backfill(self.url, keys, title=f"{dates[0]} .. {dates[-1]} x {', '.join(warehouses)}")

    def backfill_status(self, backfill_id: str) -> str:
        return webserver.backfill_status(self.url, backfill_id)
