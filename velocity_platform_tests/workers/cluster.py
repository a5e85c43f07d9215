"""A Celery deployment made of real parts, for the tests of this folder.

`celery_deployment` gives a run orchestrator (this test process) on a PostgreSQL instance of its
own (deploy/dagster.yaml, fresh databases), the simulators on loopback, the real RabbitMQ with a
queue of its own, and `VELOCITY_EXECUTOR=celery`; `Worker` is one `velocity-platform worker` as a
subprocess, with its own state directory. `NightlyRun` executes the nightly job for one partition
in a process of its own, as a run worker would, while the test watches the event log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from benchmarks.deployment import wait_until
from benchmarks.real_parts import BIN, BROKER_URL, Worker, broker_unreachable, delete_queue, wait_for_workers  # noqa: F401 (the tests import them from here)
from velocity_platform.batch import JOB_NAME, ensure_warehouse_partitions
from velocity_platform.defs.partitions import SiteDay
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform.workers import CELERY_WORKER_KEY, step_workers  # noqa: F401 (the tests import them from here)
from velocity_platform_tests.conftest import ERP_TOKEN, PROJECT, WMS_TOKEN, WORLD, Platform, platform_environment
from velocity_platform_tests.production.postgres import fresh_database



def require_broker() -> None:
    """Skip (or, under CI, fail) when RabbitMQ cannot be reached, as the PostgreSQL tests do."""
    reason = broker_unreachable(BROKER_URL)
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI requires RabbitMQ: {reason}")
    if reason:
        pytest.skip(reason)


@dataclass
class Deployment:
    platform: Platform
    root: Path
    queue: str
    dagster_url: str
    store_url: str
    workers: list[Worker] = field(default_factory=list)

    def worker(self, name: str, env: dict[str, str] | None = None, prefix: list[str] | None = None) -> Worker:
        """A worker on this deployment's queue: the environment of this process (every host has the
        same) with its own state directory, `env` on top; `prefix` runs it inside something (a netns)."""
        state = self.root / f"worker-{name}"
        state.mkdir()
        worker_env = {**os.environ, "VELOCITY_STATE_DIR": str(state), "DAGSTER_HOME": str(state / "dagster_home"), **(env or {})}
        worker = Worker(name, self.queue, worker_env, state / "worker.log", prefix or [])
        self.workers.append(worker)
        return worker.start()


@contextmanager
def celery_deployment(root: Path, label: str) -> Iterator[Deployment]:
    require_broker()
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    queue = f"velocity-test-{label}-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        dagster_db = stack.enter_context(fresh_database(f"{label}_dagster"))
        store_db = stack.enter_context(fresh_database(f"{label}_ops"))
        platform = stack.enter_context(platform_environment(root, erp, wms))
        stack.callback(delete_queue, queue)
        home = Path(os.environ["DAGSTER_HOME"])
        shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        deployment = Deployment(
            platform, root, queue, dagster_db.render_as_string(hide_password=False), store_db.render_as_string(hide_password=False)
        )
        os.environ.update(
            {
                "DAGSTER_PG_URL": deployment.dagster_url,
                "VELOCITY_STORE_URL": deployment.store_url,
                "VELOCITY_EXECUTOR": "celery",
                "VELOCITY_CELERY_BROKER_URL": BROKER_URL,
                "VELOCITY_CELERY_QUEUE": queue,
                "VELOCITY_FIRST_PARTITION_DATE": WORLD["start"].isoformat(),
            }
        )
        with dg.DagsterInstance.get() as instance:
            ensure_warehouse_partitions(instance, ["WH-01"])
        try:
            yield deployment
        finally:
            for worker in deployment.workers:
                worker.stop()


class NightlyRun:
    """The nightly job for one partition, executed by `dagster job execute` in a process of its
    own (the orchestrator, as a run worker is) with the deployment's executor: its steps go to the
    workers. A process, not a thread of the test's: each deployment's definitions are loaded anew."""

    def __init__(self, site_day: SiteDay, log: Path, run_config: dict | None = None) -> None:
        self.site_day = site_day
        self.log = log
        self.run_config = run_config
        self.token = uuid.uuid4().hex
        self.process: subprocess.Popen | None = None
        self.run_id: str | None = None

    def start(self, deadline_s: float = 120.0) -> NightlyRun:
        tags = {
            "dagster/partition": str(self.site_day.key),
            "velocity/warehouse": self.site_day.warehouse_id,
            "velocity/test-run": self.token,
        }
        argv = [
            str(BIN / "dagster"), "job", "execute", "-m", "velocity_platform.definitions", "-a", "defs",
            "-j", JOB_NAME, "--tags", json.dumps(tags),
        ]
        if self.run_config:
            config = self.log.with_suffix(".run_config.json")  # JSON is YAML
            config.write_text(json.dumps(self.run_config))
            argv += ["--config", str(config)]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(argv, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        with dg.DagsterInstance.get() as instance:
            self.run_id = wait_until("the run created", lambda: self._created(instance), deadline_s)
        return self

    def _created(self, instance: dg.DagsterInstance) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"dagster job execute exited with {self.process.returncode}:\n{self.text()[-3000:]}")
        records = instance.get_run_records(dg.RunsFilter(tags={"velocity/test-run": self.token}))
        return records[0].dagster_run.run_id if records else None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, deadline_s: float) -> dg.DagsterRunStatus:
        try:
            self.process.wait(deadline_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"run {self.run_id} not finished within {deadline_s:.0f}s:\n{self.text()[-3000:]}") from None
        with dg.DagsterInstance.get() as instance:
            return instance.get_run_by_id(self.run_id).status


def step_waits(instance: dg.DagsterInstance, run_id: str) -> list[float]:
    """Seconds from a step's submission to the queue to a worker starting it, for every step."""
    submitted: dict[str, float] = {}
    waits = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if not (event and event.is_engine_event and record.step_key):
            continue
        if record.user_message.startswith("Submitting celery task"):
            submitted[record.step_key] = record.timestamp
        elif CELERY_WORKER_KEY in (event.engine_event_data.metadata or {}) and record.step_key in submitted:
            waits.append(record.timestamp - submitted.pop(record.step_key))
    return waits


def step_succeeded(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    return any(
        r.dagster_event and r.step_key == step_key and r.dagster_event.event_type_value == "STEP_SUCCESS"
        for r in instance.all_logs(run_id)
    )


def partition(day: dt.date) -> SiteDay:
    return SiteDay("WH-01", day)
