"""Run the platform as a service on one machine, and operate it through the webserver's GraphQL API.

    deploy/prod.py up        PostgreSQL databases and the store's migrations, then the gRPC code
                             server, dagster-webserver, dagster-daemon and the exception service
                             `velocity-platform deltas` (and, with --simulators, the ERP and WMS
                             simulators); waits until each is ready, starts the nightly schedule,
                             and stops them all on Ctrl-C / SIGTERM.
    deploy/prod.py backfill  a backfill of the nightly job over a range of business dates
    deploy/prod.py tick      evaluate the nightly schedule at a time and launch what it asks for
                             (a missed night, or a rehearsal of tonight's)
    deploy/prod.py status    daemons, the schedule, recent runs and backfills

`up` derives both databases from one server URL (VELOCITY_PG_URL): Dagster's storage in
`--dagster-db`, the operational store in `--store-db`. To put them on different servers, start the
three processes by hand with DAGSTER_PG_URL and VELOCITY_STORE_URL set (README, "Running in
production"). No credential is printed: URLs are shown with the password masked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from velocity_platform.connectors.dagster_webserver import (
    LOCATION,
    SCHEDULE,
    GraphQLError,
    daemon_health,
    graphql,
    add_warehouse_partitions,
    launch_backfill,
    launch_run,
    site_day_keys,
    schedule_dry_run,
    start_schedule,
    status,
)

DEPLOY = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"
# The GraphQL calls live in the product (velocity_platform/connectors/dagster_webserver.py); these
# names stay importable from here for the scripts and tests that drive a running stack.
__all__ = ["GraphQLError", "graphql", "launch_backfill", "launch_run", "schedule_tick", "main"]


def say(line: str) -> None:
    print(line, flush=True)


def schedule_tick(url: str, at: dt.datetime) -> list[str]:
    """Evaluate the nightly schedule as of `at` and launch its run requests; returns the run ids."""
    evaluation = schedule_dry_run(url, at)
    if not evaluation["runRequests"]:
        raise GraphQLError(f"the schedule asked for no run at {at.isoformat()}: {evaluation['skipReason']}")
    run_ids = []
    for request in evaluation["runRequests"]:
        tags = {t["key"]: t["value"] for t in request["tags"]}
        # Without `dagster/schedule_name`: that tag marks the runs the daemon launches on time,
        # which the batch-window check holds to 02:00 + 4 h; a replayed tick is late by design.
        tags.pop("dagster/schedule_name", None)
        tags.update({"velocity/trigger": "tick", "velocity/schedule_tick": f"{SCHEDULE}@{at.isoformat()}"})
        run_ids.append(launch_run(url, tags))
    return run_ids


# --- processes --------------------------------------------------------------------------------


def wait_until(what: str, ready: Callable[[], bool], deadline_s: float, alive: Callable[[], None]) -> float:
    """Poll `ready` until it holds; `alive` raises when the process we wait for has died."""
    started = time.monotonic()
    while True:
        alive()
        try:
            if ready():
                return time.monotonic() - started
        except (httpx.HTTPError, GraphQLError, OSError):
            pass
        if time.monotonic() - started > deadline_s:
            raise SystemExit(f"{what} was not ready after {deadline_s:.0f}s; see its output above")
        time.sleep(0.5)


@dataclass
class Child:
    name: str
    process: subprocess.Popen

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit(f"{self.name} exited with code {self.process.returncode}; see its output above")


def spawn(name: str, argv: list[str], env: dict[str, str]) -> Child:
    # Each child leads its own process group: Ctrl-C reaches only this launcher, which then stops
    # the children in order, and stopping the code server's group also stops its run workers.
    return Child(name, subprocess.Popen(argv, env=env, start_new_session=True))


def stop(children: list[Child], grace_s: float = 20.0) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in reversed(children):
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def grpc_ready(host: str, port: int) -> bool:
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient  # what `dagster api grpc-health-check` uses

    try:
        return DagsterGrpcClient(host=host, port=port).ping("ready")["echo"] == "ready"
    except DagsterUserCodeUnreachableError:
        return False  # still loading the definitions


def prepare_instance(home: Path) -> str:
    """Create Dagster's tables and the DuckDB pool's limit before any process starts.

    Dagster creates a pool's limit row lazily, in the first dequeue pass that meets a run using
    the pool, and that same pass does not yet count the pool: every run queued at that moment
    would start at once, several DuckDB writers together. Created here, the limit holds from
    the first run on.
    """
    from dagster import DagsterInstance

    from velocity_platform.defs.partitions import DUCKDB_POOL

    with DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)
        limit = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count
        storage = type(instance.run_storage).__name__
    return f"{storage}; pool {DUCKDB_POOL!r} admits {limit} run at a time"


def ensure_database(server_url, name: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists:
                return "exists"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            return "created"
    finally:
        engine.dispose()


def prepare_databases(args: argparse.Namespace) -> tuple[str, str]:
    """Both databases on the server (created when absent) and the store's migrations applied;
    returns the URLs of Dagster's storage and of the operational store."""
    import sqlalchemy as sa

    server = sa.make_url(args.pg_url)
    dagster_url = server.set(database=args.dagster_db).render_as_string(hide_password=False)
    store_url = server.set(database=args.store_db).render_as_string(hide_password=False)
    say(f"PostgreSQL         {server.render_as_string(hide_password=True)}")
    for name in (args.dagster_db, args.store_db):
        say(f"  database {name:<18} {ensure_database(server, name)}")

    from velocity_platform.connectors.state import OperationalStore

    store = OperationalStore(store_url, migrate=False)
    applied = store.migrate()
    say(f"Operational store  schema version {store.schema_version()} (applied now: {', '.join(map(str, applied)) or 'none'})")
    store.dispose()
    return dagster_url, store_url


def prepare_dagster_home(args: argparse.Namespace, dagster_url: str) -> tuple[Path, Path]:
    """DAGSTER_HOME with deploy/dagster.yaml, the DuckDB file's folder, and Dagster's tables and pool;
    returns the home and the DuckDB path."""
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    duckdb_path = Path(args.duckdb_path).resolve()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    Path(args.lake_path).resolve().mkdir(parents=True, exist_ok=True)
    say(f"DAGSTER_HOME       {home} (deploy/dagster.yaml)")
    if os.environ.get("VELOCITY_TABLE_STORE", "lake") == "lake":
        say(f"Tables             the lake at {Path(args.lake_path).resolve()}")
    else:
        say(f"Tables             the DuckDB file {duckdb_path}")
    os.environ["DAGSTER_PG_URL"] = dagster_url  # for the instance opened here; children get it in env
    say(f"Dagster storage    {prepare_instance(home)}")
    return home, duckdb_path


def start_simulators(args: argparse.Namespace, env: dict[str, str], duckdb_path: Path, children: list[Child]) -> None:
    """The ERP and WMS simulators (no real ones here); their URLs go into `env` for the others."""
    env.setdefault("VELOCITY_ERP_TOKEN", "erp-dev-token")
    env.setdefault("VELOCITY_WMS_TOKEN", "wms-dev-token")
    for system, port in (("erp", args.erp_port), ("wms", args.wms_port)):
        argv = [str(BIN / "velocity-platform"), "simulate", system, "--port", str(port)]
        if system == "wms":
            argv += ["--wms-state", str(duckdb_path.parent / "wms_state.jsonl")]
        child = spawn(f"{system.upper()} simulator", argv, env)
        children.append(child)
        env[f"VELOCITY_{system.upper()}_URL"] = f"http://127.0.0.1:{port}"
        took = wait_until(child.name, lambda p=port: httpx.get(f"http://127.0.0.1:{p}/healthz").status_code == 200, 60, child.check_alive)
        say(f"{child.name:<18} http://127.0.0.1:{port}  pid {child.process.pid}  ready in {took:.1f}s")


def start_code_server(args: argparse.Namespace, env: dict[str, str], children: list[Child]) -> None:
    code_server = spawn(
        "Code server",
        [
            str(BIN / "dagster"), "api", "grpc",
            "--module-name", "velocity_platform.definitions", "--attribute", "defs",
            "--location-name", LOCATION,
            "--host", args.code_server_host, "--port", str(args.code_server_port),
            "--log-level", "warning",
        ],
        env,
    )
    children.append(code_server)
    took = wait_until("code server", lambda: grpc_ready(args.code_server_host, args.code_server_port), 180, code_server.check_alive)
    say(f"Code server        {args.code_server_host}:{args.code_server_port}  pid {code_server.process.pid}  ready in {took:.1f}s")


def start_webserver(args: argparse.Namespace, env: dict[str, str], children: list[Child], ui: str) -> None:
    workspace = str(DEPLOY / "workspace.yaml")
    webserver = spawn(
        "Webserver",
        [str(BIN / "dagster-webserver"), "-w", workspace, "-h", args.ui_host, "-p", str(args.ui_port), "--log-level", "warning"],
        env,
    )
    children.append(webserver)
    took = wait_until("webserver", lambda: httpx.get(f"{ui}/server_info").status_code == 200, 180, webserver.check_alive)
    say(f"Webserver          {ui}  pid {webserver.process.pid}  ready in {took:.1f}s")


def start_daemon(env: dict[str, str], children: list[Child], ui: str) -> None:
    """The daemon, ready once every required daemon has a heartbeat of its own (not an earlier one's)."""
    daemon_started = time.time()
    workspace = str(DEPLOY / "workspace.yaml")
    daemon = spawn("Daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace, "--log-level", "warning"], env)
    children.append(daemon)
    took = wait_until("daemon", lambda: (h := daemon_health(ui, daemon_started)) and all(h.values()), 180, daemon.check_alive)
    say(f"Daemon             pid {daemon.process.pid}  ready in {took:.1f}s  heartbeats: {', '.join(sorted(daemon_health(ui)))}")


def start_deltas(args: argparse.Namespace, env: dict[str, str], children: list[Child]) -> None:
    """The resident exception service, ready once it serves its metrics (it reads the SKU master,
    the WMS's locations and its watermark first); it stops cleanly on SIGTERM."""
    port = args.deltas_metrics_port
    # One polars thread unless the environment says otherwise: a read's frames are a few lines,
    # and the pool's hand-offs cost the service 9% of its CPU at 50 documents/s (docs/deltas.md).
    service_env = {"POLARS_MAX_THREADS": "1", **env, "VELOCITY_DELTAS_METRICS_PORT": str(port)}
    deltas = spawn("Exception service", [str(BIN / "velocity-platform"), "deltas"], service_env)
    children.append(deltas)

    def serving() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    took = wait_until("exception service", serving, 180, deltas.check_alive)
    say(f"Exception service  http://127.0.0.1:{port}/metrics  pid {deltas.process.pid}  ready in {took:.1f}s")


def supervise(children: list[Child]) -> None:
    """Until a signal arrives or a child dies (then SystemExit names it)."""
    while True:
        for child in children:
            child.check_alive()
        time.sleep(1)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (Ctrl-C) end the launcher once, as a KeyboardInterrupt; a second one
    while stopping does not interrupt the orderly stop."""
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def cmd_up(args: argparse.Namespace) -> int:
    dagster_url, store_url = prepare_databases(args)
    home, duckdb_path = prepare_dagster_home(args, dagster_url)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_url,
        "VELOCITY_STORE_URL": store_url,
        "VELOCITY_DUCKDB_PATH": str(duckdb_path),
        "VELOCITY_LAKE_PATH": str(Path(args.lake_path).resolve()),
        "VELOCITY_CODE_SERVER_HOST": args.code_server_host,
        "VELOCITY_CODE_SERVER_PORT": str(args.code_server_port),
    }
    children: list[Child] = []
    stop_on_signals()
    ui = f"http://{args.ui_host}:{args.ui_port}"
    try:
        if args.simulators:
            start_simulators(args, env, duckdb_path, children)
        start_code_server(args, env, children)
        start_webserver(args, env, children, ui)
        start_daemon(env, children, ui)
        if not args.no_deltas:
            start_deltas(args, env, children)
        if not args.no_schedule:
            say(f"Schedule           {SCHEDULE} {start_schedule(ui)}")
        say(f"Ready: open {ui}. Ctrl-C stops all {len(children)} processes.")
        supervise(children)
    except KeyboardInterrupt:
        say("Stopping ...")
        return 0
    except SystemExit as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:
        # Whatever ended the launcher (a signal, a child that died, an error of its own), no child
        # outlives it.
        stop(children)
        say("Stopped.")


# --- operations -----------------------------------------------------------------------------------


def _dates(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise SystemExit(f"--to {last} is before --from {first}")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def cmd_backfill(args: argparse.Namespace) -> int:
    from velocity_platform.batch import network_sites

    dates = _dates(args.date_from, args.date_to)
    sites = network_sites(None, args.warehouse)
    add_warehouse_partitions(args.url, sites)
    partitions = site_day_keys(dates, sites)
    backfill_id = launch_backfill(args.url, partitions, tags={"velocity/trigger": "backfill"})
    say(f"Backfill {backfill_id}: {len(dates)} business dates {dates[0]} .. {dates[-1]} x {len(sites)} warehouse(s) {', '.join(sites)}")
    say(f"  {args.url}/runs/b/{backfill_id}")
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    at = dt.datetime.fromisoformat(args.at)
    if at.tzinfo is None:
        raise SystemExit("--at needs an offset, e.g. 2026-02-06T02:00:00+00:00")
    for run_id in schedule_tick(args.url, at):
        say(f"Run {run_id} launched by {SCHEDULE} as of {at.isoformat()}")
        say(f"  {args.url}/runs/{run_id}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    data = status(args.url)
    daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    say("Daemons   " + ", ".join(f"{d['daemonType']} {'ok' if d['healthy'] else 'DOWN'}" for d in daemons if d["required"]))
    schedule = data["scheduleOrError"]
    if schedule["__typename"] == "Schedule":
        ticks = schedule["futureTicks"]["results"]
        nxt = dt.datetime.fromtimestamp(ticks[0]["timestamp"], dt.UTC).isoformat() if ticks else "none"
        say(f"Schedule  {SCHEDULE} {schedule['scheduleState']['status']}, next tick {nxt} ({schedule['executionTimezone']})")
    for backfill in data["partitionBackfillsOrError"].get("results", []):
        say(f"Backfill  {backfill['id']}  {backfill['status']:<18} {backfill['numPartitions']} partitions  {backfill['title'] or ''}")
    for run in data["runsOrError"].get("results", []):
        tags = {t["key"]: t["value"] for t in run["tags"]}
        say(f"Run       {run['runId'][:8]}  {run['status']:<9} {tags.get('dagster/partition', '-'):<18}  {tags.get('velocity/trigger', tags.get('dagster/backfill', ''))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy/prod.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the code server, webserver and daemon on PostgreSQL")
    up.add_argument("--pg-url", default=os.environ.get("VELOCITY_PG_URL") or DEFAULT_PG_URL, help="PostgreSQL server (env VELOCITY_PG_URL)")
    up.add_argument("--dagster-db", default="velocity_dagster")
    up.add_argument("--store-db", default="velocity_ops")
    up.add_argument("--home", default=".velocity/prod/dagster_home", help="DAGSTER_HOME to create")
    up.add_argument("--lake-path", default=".velocity/prod/lake", help="The lake: a folder every worker reaches (env VELOCITY_LAKE_PATH in the children)")
    up.add_argument("--duckdb-path", default=".velocity/prod/velocity.duckdb", help="The tables' file with VELOCITY_TABLE_STORE=duckdb-file")
    up.add_argument("--code-server-host", default="127.0.0.1")
    up.add_argument("--code-server-port", type=int, default=4266)
    up.add_argument("--ui-host", default="127.0.0.1")
    up.add_argument("--ui-port", type=int, default=3000)
    up.add_argument("--simulators", action="store_true", help="also run the ERP and WMS simulators (no real ones here)")
    up.add_argument("--erp-port", type=int, default=8710)
    up.add_argument("--wms-port", type=int, default=8720)
    up.add_argument("--no-schedule", action="store_true", help="leave the nightly schedule as it is")
    up.add_argument(
        "--deltas-metrics-port",
        type=int,
        default=int(os.environ.get("VELOCITY_DELTAS_METRICS_PORT") or 9464),
        help="the exception service's /metrics on 127.0.0.1 (env VELOCITY_DELTAS_METRICS_PORT)",
    )
    up.add_argument("--no-deltas", action="store_true", help="do not run the exception service (velocity-platform deltas)")
    up.set_defaults(func=cmd_up)

    url = {"default": os.environ.get("VELOCITY_UI_URL", "http://127.0.0.1:3000"), "help": "the webserver (env VELOCITY_UI_URL)"}
    backfill = commands.add_parser("backfill", help="backfill the nightly job over business dates")
    backfill.add_argument("--from", dest="date_from", type=dt.date.fromisoformat, required=True)
    backfill.add_argument("--to", dest="date_to", type=dt.date.fromisoformat, required=True)
    backfill.add_argument("--warehouse", action="append", default=None, help="a site to backfill (repeatable; default: every registered one)")
    backfill.add_argument("--url", **url)
    backfill.set_defaults(func=cmd_backfill)

    tick = commands.add_parser("tick", help="launch what the nightly schedule asks for at a given time")
    tick.add_argument("--at", required=True, help="ISO time with offset, e.g. 2026-02-06T02:00:00+00:00")
    tick.add_argument("--url", **url)
    tick.set_defaults(func=cmd_tick)

    status = commands.add_parser("status", help="daemons, schedule, recent backfills and runs")
    status.add_argument("--url", **url)
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (GraphQLError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
