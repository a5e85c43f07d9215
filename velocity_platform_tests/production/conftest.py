"""The production stack of deploy/ as real processes: code server, webserver and daemon on PostgreSQL.

`production_stack` starts `deploy/prod.py up` (the command `make prod` runs) against two fresh
databases and the simulators on loopback, once per test session; `nightly_history` drives it
through the webserver's GraphQL API the way an operator would: a 3-day backfill, the nightly
schedule's tick for the day after, then a night whose ERP feed is so malformed that the
dead-letter gate fails. Both the end-to-end and the browser tests read it.
"""

import datetime as dt
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.serve import BackgroundServer, free_port
from velocity_platform.simulators.wms import WmsConfig, create_wms_app
from velocity_platform_tests.production.postgres import ADMIN_URL, fresh_database

PROJECT = Path(__file__).resolve().parents[2]
ERP_TOKEN, WMS_TOKEN = "erp-prod-test-token", "wms-prod-test-token"
# A small world: 300 SKUs, 2,500 lines a day, ERP history 2026-01-01 .. 2026-02-09.
WORLD = {"seed": 11, "skus": 300, "start": dt.date(2026, 1, 1), "days": 40}

BACKFILL_DATES = [dt.date(2026, 2, 5), dt.date(2026, 2, 6), dt.date(2026, 2, 7)]
TICK_AT = dt.datetime(2026, 2, 9, 2, 0, tzinfo=dt.UTC)  # 02:00 in London: builds 2026-02-08
TICK_DATE = dt.date(2026, 2, 8)
GOOD_DATES = [*BACKFILL_DATES, TICK_DATE]
FAILING_DATE = dt.date(2026, 2, 9)
DEADLINE_S = 420.0

TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed  # the browser tests screenshot a failing page
    return report


def load_prod() -> ModuleType:
    """deploy/prod.py as a module (it is a script, not part of the package)."""
    if "velocity_deploy_prod" in sys.modules:
        return sys.modules["velocity_deploy_prod"]
    spec = importlib.util.spec_from_file_location("velocity_deploy_prod", PROJECT / "deploy" / "prod.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Stack:
    ui: str
    root: Path
    log: Path
    launcher: subprocess.Popen
    erp_url: str
    wms_url: str
    malformed_erp_url: str
    store_url: str
    state_dir: Path
    env: dict[str, str]
    prod: ModuleType = field(repr=False)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return self.prod.graphql(self.ui, query, variables)

    def cli(self, *args: str) -> str:
        """Run deploy/prod.py as the README does and return what it printed."""
        result = subprocess.run(
            [sys.executable, str(PROJECT / "deploy" / "prod.py"), *args, "--url", self.ui],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def wms_stats(self) -> dict:
        return httpx.get(f"{self.wms_url}/v1/stats", headers={"Authorization": f"Bearer {WMS_TOKEN}"}).json()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _wait_for_line(stack_log: Path, launcher: subprocess.Popen, pattern: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if pattern in stack_log.read_text(errors="replace"):
            return
        if launcher.poll() is not None:
            raise AssertionError(f"deploy/prod.py up exited with {launcher.returncode}:\n{stack_log.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"deploy/prod.py up did not print {pattern!r} within {deadline_s:.0f}s:\n{stack_log.read_text()[-4000:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def production_stack(tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("production")
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    # The same world with 2% of the lines malformed: the night whose gate must fail.
    malformed_erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN, malformed_rate=0.02)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with ExitStack() as resources:
        dagster_db = resources.enter_context(fresh_database("dagster"))
        store_db = resources.enter_context(fresh_database("ops"))
        erp_server = resources.enter_context(BackgroundServer(create_erp_app(erp)))
        malformed_server = resources.enter_context(BackgroundServer(create_erp_app(malformed_erp)))
        wms_server = resources.enter_context(BackgroundServer(create_wms_app(wms)))
        ui_port, code_port = free_port(), free_port()
        env = {
            **os.environ,
            "VELOCITY_STATE_DIR": str(root),
            "VELOCITY_ERP_URL": erp_server.url,
            "VELOCITY_WMS_URL": wms_server.url,
            "VELOCITY_ERP_TOKEN": ERP_TOKEN,
            "VELOCITY_WMS_TOKEN": WMS_TOKEN,
            "VELOCITY_FIRST_PARTITION_DATE": "2026-01-01",
            "VELOCITY_UI_URL": f"http://127.0.0.1:{ui_port}",
        }
        log = root / "prod.log"
        with open(log, "w") as out:
            launcher = subprocess.Popen(
                [
                    sys.executable, str(PROJECT / "deploy" / "prod.py"), "up",
                    "--pg-url", ADMIN_URL,
                    "--dagster-db", dagster_db.database,
                    "--store-db", store_db.database,
                    "--home", str(root / "dagster_home"),
                    "--lake-path", str(root / "lake"),
                    "--code-server-port", str(code_port),
                    "--ui-port", str(ui_port),
                    "--deltas-metrics-port", str(free_port()),
                    # A real 02:00 tick during the test would add a run the assertions do not expect.
                    "--no-schedule",
                ],
                cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        stack = Stack(
            ui=f"http://127.0.0.1:{ui_port}",
            root=root,
            log=log,
            launcher=launcher,
            erp_url=erp_server.url,
            wms_url=wms_server.url,
            malformed_erp_url=malformed_server.url,
            store_url=store_db.render_as_string(hide_password=False),
            state_dir=root,
            env=env,
            prod=load_prod(),
        )
        try:
            _wait_for_line(log, launcher, "Ready: open", 240)
            yield stack
        finally:
            children = [int(pid) for pid in re.findall(r"\bpid (\d+)", log.read_text(errors="replace"))]
            if launcher.poll() is None:
                launcher.send_signal(signal.SIGTERM)
            try:
                code = launcher.wait(timeout=90)
            except subprocess.TimeoutExpired:
                code = None
            survivors = [pid for pid in children if _alive(pid)]
            for pid in survivors:  # processes this fixture started, by id
                os.killpg(pid, signal.SIGKILL)
            if code is None:
                os.killpg(launcher.pid, signal.SIGKILL)
            # Stopping is part of the contract of `make prod`: fail the session if it did not stop cleanly.
            assert code == 0 and not survivors, f"launcher exit {code}, still running {survivors}:\n{stack.log_tail()}"


RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status startTime endTime tags { key value } } } }"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 20) { runId status tags { key value } } }
  }
}"""


def wait_for_runs(stack: Stack, run_ids: list[str], deadline: float) -> dict[str, dict]:
    while True:
        runs = {rid: stack.graphql(RUN_STATUS, {"id": rid})["runOrError"] for rid in run_ids}
        if all(r.get("status") in TERMINAL_RUN for r in runs.values()):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not finished in time: { {k: v.get('status') for k, v in runs.items()} }\n{stack.log_tail()}")
        time.sleep(1)


def dates_of(tags: dict[str, str]) -> list[dt.date]:
    """The business dates a run built: its partition, every date of its range (a backfill run), or
    none (the backfill's run of the unpartitioned SKU master)."""
    def date(key: str) -> dt.date:  # "2026-02-05|WH-01"
        return dt.date.fromisoformat(key.split("|")[0])

    if "dagster/asset_partition_range_start" in tags:
        first = date(tags["dagster/asset_partition_range_start"])
        last = date(tags["dagster/asset_partition_range_end"])
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    return [date(tags["dagster/partition"])] if "dagster/partition" in tags else []


def wait_for_backfill(stack: Stack, backfill_id: str, deadline: float) -> dict:
    """The backfill once the daemon has requested all it will and every run of it has finished. An
    asset backfill launches its runs stage by stage (the SKU master, then each range's assets as
    their parents land), so how many there are is known only at the end."""
    while True:
        backfill = stack.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        runs = backfill.get("runs") or []
        if backfill.get("status") not in ("REQUESTED", "CANCELING") and all(r["status"] in TERMINAL_RUN for r in runs):
            return backfill
        if time.monotonic() > deadline:
            raise AssertionError(f"backfill {backfill_id} not finished in time: {backfill}\n{stack.log_tail()}")
        time.sleep(1)


@dataclass
class NightlyHistory:
    tick_run_id: str
    backfill_id: str
    backfill: dict
    runs: dict[str, dict]  # run id -> status, times, tags (tick, backfill and failing runs)
    runs_of_date: dict[dt.date, set[str]]  # the runs that built each good date (a backfill's are several)
    failing_run_id: str


@pytest.fixture(scope="session")
def nightly_history(production_stack: Stack) -> NightlyHistory:
    stack = production_stack
    deadline = time.monotonic() + DEADLINE_S
    backfill_out = stack.cli("backfill", "--from", BACKFILL_DATES[0].isoformat(), "--to", BACKFILL_DATES[-1].isoformat())
    backfill_id = re.search(r"^Backfill (\w+):", backfill_out, re.MULTILINE).group(1)
    # The tick's day reads the velocity of the days before it: it goes in once the backfill is done.
    backfill = wait_for_backfill(stack, backfill_id, deadline)
    [tick_line] = [line for line in stack.cli("tick", "--at", TICK_AT.isoformat()).splitlines() if line.startswith("Run ")]
    tick_run_id = tick_line.split()[1]
    # And last night: the same job against an ERP that serves 2% malformed lines.
    failing = FAILING_DATE.isoformat()
    failing_run_id = stack.prod.launch_run(
        stack.ui,
        {
            "dagster/partition": f"{failing}|WH-01",
            "dagster/partition/date": failing,
            "dagster/partition/warehouse": "WH-01",
            "velocity/trigger": "test-malformed-feed",
        },
        {"resources": {"erp": {"config": {"base_url": stack.malformed_erp_url, "token": {"env": "VELOCITY_ERP_TOKEN"}}}}},
    )
    runs = wait_for_runs(stack, [*(r["runId"] for r in backfill["runs"]), tick_run_id, failing_run_id], deadline)
    runs_of_date: dict[dt.date, set[str]] = {}
    for rid, run in runs.items():
        if rid != failing_run_id:
            for day in dates_of({t["key"]: t["value"] for t in run["tags"]}):
                runs_of_date.setdefault(day, set()).add(rid)
    return NightlyHistory(tick_run_id, backfill_id, backfill, runs, runs_of_date, failing_run_id)
