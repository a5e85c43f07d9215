"""`velocity-platform`: run the simulators, the batch for a range of dates, and the demo."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import importlib.metadata
import json
import os
import shutil
import sys
import time
from pathlib import Path

DEV_ERP_TOKEN = "erp-dev-token"
DEV_WMS_TOKEN = "wms-dev-token"


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-03-01") from None


def _yesterday() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _add_world_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic world (default 7)")
    parser.add_argument("--skus", type=int, default=2000, help="number of SKUs (default 2000)")
    parser.add_argument("--lines-per-day", type=int, default=4000, help="order lines on an average day (default 4000)")
    parser.add_argument("--start", type=_date, default=None, help="first day of ERP history (default: ends yesterday)")
    parser.add_argument("--days", type=int, default=120, help="days of ERP history (default 120)")


# `simulate` fault flags: (flag, ErpConfig field, WmsConfig field, help). Each is a seeded rate.
FAULT_FLAGS = [
    ("--fault-rate-429", "fault_rate_429", "fault_rate_429", "share of requests answered 429 with Retry-After"),
    ("--fault-rate-5xx", "fault_rate_5xx", "fault_rate_5xx", "share of requests answered 500/502/503"),
    ("--fault-rate-slow", "fault_rate_slow", None, "ERP: share of answers delayed by --slow-seconds"),
    ("--fault-rate-drop", "fault_rate_drop", None, "ERP: share of answers whose connection drops mid-body"),
    ("--fault-rate-bad-json", "fault_rate_bad_json", None, "ERP: share of pages truncated (invalid JSON)"),
    ("--fault-rate-corrupt-page", "fault_rate_corrupt_page", None, "ERP: share of pages broken on every fetch"),
    ("--fault-rate-duplicate", "fault_rate_duplicate", None, "ERP: share of page boundaries that repeat documents"),
    ("--fault-rate-late", "late_arrival_rate", None, "ERP: share of documents committed 1-3 days late"),
    ("--fault-rate-drift", "fault_rate_drift", None, "ERP: share of documents with schema drift"),
    ("--fault-rate-malformed", "malformed_rate", None, "ERP: share of malformed lines (default 0.0005)"),
    ("--fault-rate-commit-then-drop", None, "fault_rate_commit_then_drop", "WMS: share of POSTs applied, then the answer lost"),
]


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    faults = parser.add_argument_group("faults (seeded rates in [0, 1]; the transient ones per request attempt)")
    for flag, _, _, help_text in FAULT_FLAGS:
        faults.add_argument(flag, type=float, default=None, help=help_text)
    faults.add_argument("--retry-after-seconds", type=int, default=None, help="Retry-After sent with a 429 (default 1)")
    faults.add_argument("--slow-seconds", type=float, default=None, help="ERP: delay of a slow answer (default 5)")
    faults.add_argument("--now", default=None, help="ERP: simulated clock (ISO-8601); later commits are invisible")


def _fault_config(args: argparse.Namespace, system: str) -> dict:
    """The fault flags given on the command line, as config fields of `system`'s simulator."""
    config = {}
    for flag, erp_field, wms_field, _ in FAULT_FLAGS:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
        target = erp_field if system == "erp" else wms_field
        if value is not None and target:
            config[target] = value
    extra = ("retry_after_seconds", "slow_seconds", "now") if system == "erp" else ("retry_after_seconds",)
    config.update({name: getattr(args, name) for name in extra if getattr(args, name, None) is not None})
    return config


def _erp_config(args: argparse.Namespace, settings):
    from velocity_platform.simulators.erp import ErpConfig

    return ErpConfig(
        seed=args.seed,
        skus=args.skus,
        lines_per_day=args.lines_per_day,
        start=args.start,
        days=args.days,
        timezone=settings.timezone,
        token=os.environ.get("VELOCITY_ERP_TOKEN") or DEV_ERP_TOKEN,
        **_fault_config(args, "erp"),
        **({"warehouses": args.warehouses} if getattr(args, "warehouses", None) else {}),
    )


def _wms_config(args: argparse.Namespace):
    from velocity_platform.simulators.wms import WmsConfig

    return WmsConfig(
        seed=args.seed,
        skus=args.skus,
        start=args.start,
        days=args.days,
        token=os.environ.get("VELOCITY_WMS_TOKEN") or DEV_WMS_TOKEN,
        state_path=getattr(args, "wms_state", None),
        **_fault_config(args, "wms"),
        **({"warehouses": args.warehouses} if getattr(args, "warehouses", None) else {}),
    )


# --- configuration mistakes: one clear line and exit 2, never a traceback -------------------------


class ConfigurationError(Exception):
    """A mistake in how a command is set up (a variable, a URL, a directory, dates): `main` prints
    it as one line naming what to change and exits 2."""


# Where each upstream is named on the command line and in the environment.
UPSTREAMS = {
    "ERP": ("VELOCITY_ERP_URL", "--erp-url", "VELOCITY_ERP_TOKEN", DEV_ERP_TOKEN),
    "WMS": ("VELOCITY_WMS_URL", "--wms-url", "VELOCITY_WMS_TOKEN", DEV_WMS_TOKEN),
}
# A request that answers at all proves the upstream is there: the count of one date (ERP) and
# one assignment (WMS), each an endpoint the nightly run reads anyway.
PROBES = {"ERP": "/v1/transactions/count?business_date={first}", "WMS": "/v1/slotting/assignments?limit=1"}
PROBE_ATTEMPTS = 3
PROBE_TIMEOUT_S = 3.0


def _settings():
    """The settings of the environment, read once per command; the command's flags then change them
    (`Settings.replace`), and the runs get them from here, never through the environment."""
    from velocity_platform.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise ConfigurationError(f"a VELOCITY_* setting is not valid ({exc}); fix or unset it") from None


def _changed(settings, **changes):
    """The settings with a command's flags in them; a flag's impossible value is one line."""
    from velocity_platform.settings import SettingsError

    try:
        return settings.replace(**changes)
    except SettingsError as exc:
        raise ConfigurationError(str(exc)) from None


def _dagster_yaml_template() -> Path:
    """The instance template: ./dagster.yaml in a checkout, else the one beside the package."""
    here = Path.cwd() / "dagster.yaml"
    return here if here.exists() else Path(__file__).resolve().parents[1] / "dagster.yaml"


def _check_dates(first: dt.date, last: dt.date, settings, *, partitioned_from_settings: bool = True) -> None:
    """The range is in order, and every date is a business date the partitions hold."""
    from zoneinfo import ZoneInfo

    if last < first:
        raise ConfigurationError(f"--to {last} is before --from {first}; give the earlier date with --from")
    if partitioned_from_settings and first < settings.first_partition_date:
        raise ConfigurationError(
            f"--from {first} is before the first business date {settings.first_partition_date}; "
            f"set VELOCITY_FIRST_PARTITION_DATE={first} (or an earlier date) to build it"
        )
    today = dt.datetime.now(ZoneInfo(settings.timezone)).date()
    if last >= today:
        raise ConfigurationError(
            f"--to {last} has not ended yet in {settings.timezone}; the last business date that can be built is "
            f"{today - dt.timedelta(days=1)}"
        )


def _check_state_writable(settings) -> None:
    """Dagster's home, the tables' and the store's directories exist and take a file."""
    import tempfile

    from velocity_platform.connectors.object_store import is_remote

    directories = {settings.dagster_home: "DAGSTER_HOME"}
    if settings.table_store != "lake":
        directories[Path(settings.duckdb_path).parent] = "VELOCITY_DUCKDB_PATH"
    elif not is_remote(settings.lake_path):  # a bucket is checked by its first write
        directories[Path(settings.lake_path)] = "VELOCITY_LAKE_PATH"
    store = _sqlite_file(settings.store_url)
    if store:
        directories.setdefault(store.parent, "VELOCITY_STORE_URL")
    for directory, variable in directories.items():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigurationError(
                f"the state directory {directory} is not writable ({reason}); set VELOCITY_STATE_DIR "
                f"(or {variable}) to a directory you can write"
            ) from None


def _check_tokens(systems: list[str]) -> None:
    """The bearer token of each upstream the run talks to is set (its value is never shown)."""
    missing = [(name, UPSTREAMS[name]) for name in systems if not os.environ.get(UPSTREAMS[name][2], "").strip()]
    if not missing:
        return
    names = " and ".join(variable for _, (_, _, variable, _) in missing)
    how = "; ".join(f"export {variable}=<the {name}'s token>" for name, (_, _, variable, _) in missing)
    dev = ", ".join(f"{dev_token}" for _, (_, _, _, dev_token) in missing)
    raise ConfigurationError(
        f"{names} {'is' if len(missing) == 1 else 'are'} not set: {how} (the local simulators of `make dev` take {dev})"
    )


def _check_reachable(name: str, url: str, first: dt.date) -> None:
    """One request the run would make anyway, a few times: an answer of any kind but a refused
    token means the upstream is there; no answer at all is a wrong URL or an upstream that is down."""
    import httpx

    url_variable, flag, token_variable, _ = UPSTREAMS[name]
    target = url.rstrip("/") + PROBES[name].format(first=first)
    headers = {"Authorization": f"Bearer {os.environ.get(token_variable, '').strip()}"}
    started, reason = time.perf_counter(), ""
    for attempt in range(PROBE_ATTEMPTS):
        try:
            response = httpx.get(target, headers=headers, timeout=PROBE_TIMEOUT_S)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise ConfigurationError(f"{url_variable} / {flag} {url!r} is not an http(s) URL") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            if attempt + 1 < PROBE_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
            continue
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"the {name} at {url} refused {token_variable} (HTTP {response.status_code} on GET {PROBES[name].split('?')[0]}); "
                f"set it to the {name}'s token"
            )
        return
    raise ConfigurationError(
        f"the {name} at {url} cannot be reached: GET {target} failed {PROBE_ATTEMPTS} times over "
        f"{time.perf_counter() - started:.1f}s ({reason}); start the {name} or set {url_variable} / {flag} to where it runs"
    )


def _configuration_mistake(exc: BaseException) -> str | None:
    """What a user can fix, said in one line; None for anything else (a bug keeps its traceback)."""
    import re

    from velocity_platform.connectors.files import FileSourceError

    if isinstance(exc, ConfigurationError | FileSourceError):
        return str(exc)
    kind = type(exc).__name__
    text = str(exc)
    if kind in ("DagsterInvalidConfigError", "PostProcessingError"):  # an unset dg.EnvVar, found late
        unset = sorted(set(re.findall(r"environment variable \W?(VELOCITY_[A-Z_]+)", text)))
        if unset:
            return f"{' and '.join(unset)} not set; export {unset[0]}=<value> and run again"
    if kind == "IOException" and "lock" in text.lower():  # duckdb: another process holds the file
        return (
            "the DuckDB file is in use by another process (`make dev`, a daemon or another run); stop it "
            "or set VELOCITY_DUCKDB_PATH to another file"
        )
    if isinstance(exc, PermissionError):
        return f"cannot write {exc.filename} ({exc.strerror}); set VELOCITY_STATE_DIR to a directory you can write"
    return None


# --- commands ------------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from velocity_platform.simulators.erp import create_erp_app
    from velocity_platform.simulators.serve import run_foreground
    from velocity_platform.simulators.wms import create_wms_app

    try:
        if args.system == "erp":
            app, port = create_erp_app(_erp_config(args, _settings())), args.port or 8710
        else:
            app, port = create_wms_app(_wms_config(args)), args.port or 8720
    except ValueError as exc:  # an impossible rate or clock: say which, without a traceback
        print(f"velocity-platform simulate {args.system}: {exc}", file=sys.stderr)
        return 2
    _check_port_free(args.host, port)
    print(f"{args.system.upper()} simulator on http://{args.host}:{port} (Ctrl-C to stop)", file=sys.stderr)
    run_foreground(app, host=args.host, port=port)
    return 0


def cmd_deltas(args: argparse.Namespace) -> int:
    """The resident exception service (docs/deltas.md)."""
    from velocity_platform.settings import DeltaServiceSettings

    settings = _settings()
    try:
        config = DeltaServiceSettings.from_env()
    except ValueError as exc:
        raise ConfigurationError(f"a VELOCITY_DELTAS_* setting is not valid ({exc}); fix or unset it") from None
    _check_tokens(["ERP", "WMS"])
    _check_state_writable(settings)
    today = dt.date.today()
    _check_reachable("ERP", settings.erp_url, today)
    _check_reachable("WMS", settings.wms_url, today)
    if config.metrics_port:
        try:
            _check_port_free("127.0.0.1", config.metrics_port)
        except ConfigurationError:
            raise ConfigurationError(
                f"cannot serve /metrics on 127.0.0.1:{config.metrics_port}: another process has the port; set "
                "VELOCITY_DELTAS_METRICS_PORT to a free one (0: no metrics)"
            ) from None
    from velocity_platform.deltas.service import serve_forever

    return serve_forever()


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker for this code: takes the steps of runs on VELOCITY_EXECUTOR=celery from the queue."""
    import socket

    from velocity_platform.settings import CELERY_BROKER_ENV
    from velocity_platform.workers import masked

    settings = _settings()
    broker = os.environ.get(CELERY_BROKER_ENV, "").strip()
    if not broker:
        raise ConfigurationError(
            f"{CELERY_BROKER_ENV} is not set: export the RabbitMQ broker the runs use, e.g. "
            f"{CELERY_BROKER_ENV}=amqp://USER:PASSWORD@HOST:5672//"
        )
    _check_state_writable(settings)
    queue = args.queue or settings.celery_queue
    # The process id keeps two unnamed workers of one host apart (the exec keeps it).
    name = args.name or f"velocity-{os.getpid()}"
    node = name if "@" in name else f"{name}@{socket.gethostname()}"
    print(
        f"Celery worker {node}: steps of velocity_platform from queue {queue!r}, {args.concurrency} at a time; "
        f"broker {masked(broker)}, lake {settings.lake_path}",
        flush=True,
    )
    # Celery in this process (exec): SIGTERM reaches it directly and is its warm shutdown (the steps
    # running finish and are acknowledged, then it exits 0). Not `dagster-celery worker start`: it
    # writes the broker URL, password included, into a file under DAGSTER_HOME.
    argv = [
        sys.executable, "-m", "celery", "-A", "velocity_platform.worker_app", "worker",
        "--queues", queue, "--concurrency", str(args.concurrency), "--hostname", node,
        "--prefetch-multiplier", "1", "--loglevel", args.loglevel, "--without-gossip", "--without-mingle",
    ]
    os.execv(sys.executable, argv)
    return 0  # not reached: the process is now the worker


def _check_port_free(host: str, port: int) -> None:
    """uvicorn would log a bind error and exit 1; say which port and what to do instead."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({os.strerror(exc.errno) if exc.errno else exc}); another process has it: "
            "stop it or choose --port"
        ) from None


def _erp_lines_for(dates: list[dt.date], settings, sites: list[str]) -> dict[str, int]:
    """The ERP's count of lines of the dates, per site."""
    from velocity_platform.connectors.erp import ErpClient
    from velocity_platform.settings import ERP_TOKEN_ENV

    with ErpClient(settings.erp_url, settings.token(ERP_TOKEN_ENV) or os.environ.get(ERP_TOKEN_ENV)) as client:
        return {site: sum(client.count_lines(day, warehouse_id=site) for day in dates) for site in sites}


def _run_and_report(
    dates: list[dt.date], summary_path: Path | None, settings, source_lines: int | None = None, warehouses: list[str] | None = None
) -> dict:
    from velocity_platform.batch import ensure_dagster_home, format_summary, network_sites, print_progress, run_range, summarize

    home = ensure_dagster_home(settings, _dagster_yaml_template())
    Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    print(
        f"Materializing {len(dates)} business date(s) {dates[0]} .. {dates[-1]} on the instance at {home}",
        file=sys.stderr,
    )
    sites = network_sites(settings, warehouses)
    outcomes = run_range(dates, progress=print_progress, settings=settings, warehouses=sites)
    lines = _erp_lines_for(dates, settings, sites) if source_lines is None else source_lines
    summary = summarize(dates, outcomes, lines, settings)
    print(format_summary(summary))
    if summary_path:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Summary written to {summary_path}", file=sys.stderr)
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    from velocity_platform.batch import all_succeeded, business_dates

    if args.source == "file":
        return _run_file_source(args)
    # Everything a run needs is checked before Dagster starts, so a mistake is one line, not a
    # failed run: the dates, the state directory, the tokens, then the upstreams themselves.
    settings = _settings()
    flags = {"erp_url": args.erp_url, "wms_url": args.wms_url}
    settings = _changed(settings, **{name: value for name, value in flags.items() if value})
    _check_dates(args.date_from, args.date_to, settings)
    _check_state_writable(settings)
    _check_tokens(["ERP", "WMS"])
    _check_reachable("ERP", settings.erp_url, args.date_from)
    _check_reachable("WMS", settings.wms_url, args.date_from)
    summary = _run_and_report(business_dates(args.date_from, args.date_to), args.summary, settings, warehouses=args.warehouse)
    return 0 if all_succeeded(summary) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from velocity_platform.batch import all_succeeded, business_dates
    from velocity_platform.simulators.erp import create_erp_app
    from velocity_platform.simulators.serve import BackgroundServer
    from velocity_platform.simulators.wms import create_wms_app

    if args.days < 1 or args.history_days < 0:
        raise ConfigurationError(f"--days must be 1 or more and --history-days 0 or more (got {args.days}, {args.history_days})")
    settings = _settings()
    # The demo starts its own simulators, so a token variable that is not set is their development token.
    unset = {variable: token for _, _, variable, token in UPSTREAMS.values() if not os.environ.get(variable, "").strip()}
    settings = settings.with_stand_in_tokens(**unset)
    _check_state_writable(settings)
    # A demo starts from a clean warehouse: the tables, the outbox and the WMS's own state.
    args.wms_state = str(Path(settings.duckdb_path).parent / "wms_state.jsonl")
    for leftover in (Path(settings.duckdb_path), Path(args.wms_state), _sqlite_file(settings.store_url)):
        if leftover and leftover.exists():
            leftover.unlink()
    _remove_lake_tables(settings.lake_path)
    started = time.perf_counter()
    last = _yesterday()
    nights = business_dates(last - dt.timedelta(days=args.days - 1), last)
    # The history a velocity window reads (90 days), built before the nights are run one by one.
    history = business_dates(nights[0] - dt.timedelta(days=args.history_days), nights[0] - dt.timedelta(days=1)) if args.history_days else []
    args.start, args.days = None, max(120, len(nights) + len(history) + 1)
    sites = demo_sites(args.network_size, settings.timezone)
    if len(sites) > 1:
        _register_demo_sites(sites, settings)
    erp_config, wms_config = _erp_config(args, settings), _wms_config(args)
    if len(sites) > 1:  # one ERP and one WMS serving every site, each its own mix and layout
        erp_config = dataclasses.replace(erp_config, warehouses=",".join(f"{s.warehouse_id}@{s.timezone}" for s in sites))
        wms_config = dataclasses.replace(
            wms_config, warehouses=",".join(f"{s.warehouse_id}@{s.aisles}x{s.bays}x{s.levels}" for s in sites)
        )
    with BackgroundServer(create_erp_app(erp_config)) as erp, BackgroundServer(create_wms_app(wms_config)) as wms:
        settings = _changed(settings, erp_url=erp.url, wms_url=wms.url)
        print(f"ERP simulator at {erp.url}, WMS simulator at {wms.url}, {len(sites)} warehouse(s)", file=sys.stderr)
        ids = [site.warehouse_id for site in sites]
        history_ok = all([_build_history(history, settings, site) for site in ids]) if history else True
        summary = _run_and_report(nights, args.summary, settings, warehouses=ids)
    print(
        f"\nDemo finished in {time.perf_counter() - started:.0f}s. To explore the same data in the Dagster UI:\n"
        "  make dev     # then open http://127.0.0.1:3000 (Assets, partitions, checks, backfills)",
    )
    ok = history_ok and all_succeeded(summary) and summary["reconciled"]
    return 0 if ok else 1


# The demo's network: a site per zone and layout, the first on the settings' zone.
DEMO_ZONES = ("America/Chicago", "Europe/Berlin", "America/New_York", "Europe/Madrid", "America/Denver",
              "Europe/Warsaw", "America/Toronto", "Europe/Dublin", "America/Mexico_City")
DEMO_LAYOUTS = ((40, 50, 1, "s-shape"), (30, 40, 2, "return"), (50, 40, 1, "largest-gap"), (36, 45, 2, "s-shape"))


def demo_sites(n: int, timezone: str) -> list:
    from velocity_platform.domain.network import Warehouse

    if not 1 <= n <= len(DEMO_ZONES) + 1:
        raise ConfigurationError(f"--warehouses must be between 1 and {len(DEMO_ZONES) + 1} (got {n})")
    zones = [timezone, *DEMO_ZONES]
    return [
        Warehouse(
            warehouse_id=f"WH-{i + 1:02d}", timezone=zones[i], aisles=DEMO_LAYOUTS[i % 4][0], bays=DEMO_LAYOUTS[i % 4][1],
            levels=DEMO_LAYOUTS[i % 4][2], routing=DEMO_LAYOUTS[i % 4][3],
        )
        for i in range(n)
    ]


def _register_demo_sites(sites: list, settings) -> None:
    from velocity_platform.connectors.state import OperationalStore

    store = OperationalStore(settings.store_url)
    for site in sites:
        store.register_warehouse(site)
    store.dispose()


def _build_history(dates: list[dt.date], settings, warehouse_id: str | None = None) -> bool:
    """The days before the nights, in one run over the range (as a UI backfill runs a range), up
    to daily_sku_demand: what the nights' 30/60/90-day windows and 12 XYZ weeks read. One run,
    not one per day; the nights then classify and slot on full windows."""
    from velocity_platform.batch import DEMAND_ASSETS, ensure_dagster_home, failed_and_warned, run_together

    home = ensure_dagster_home(settings, _dagster_yaml_template())
    print(
        f"Building {len(dates)} days of history {dates[0]} .. {dates[-1]} (ERP pull to daily_sku_demand) "
        f"in one run on the instance at {home}",
        file=sys.stderr,
        flush=True,
    )
    outcome = run_together(dates, assets=DEMAND_ASSETS, settings=settings, warehouse_id=warehouse_id)
    line = f"[history] {dates[0]} .. {dates[-1]} {outcome.warehouse_id}  {outcome.mark}  {outcome.seconds:5.1f}s  checks {outcome.checks_passed} passed"
    line += failed_and_warned(sorted(set(outcome.checks_failed)), outcome.checks_warned)
    if outcome.error:
        line += f"\n           {outcome.error.splitlines()[0][:200]}"
    print(line, file=sys.stderr, flush=True)
    return outcome.success


def _run_file_source(args: argparse.Namespace) -> int:
    """`run --source file`: the same graph, with raw_transactions and sku_master read from an export.

    A file's history can lie years before the configured first date
    (VELOCITY_FIRST_PARTITION_DATE), so the run's settings move it back to --from.
    Without --wms-url a WMS simulator serves the export's SKUs on loopback (40 x 50 x 1 unless
    told otherwise), keeping its moves in a journal beside the DuckDB file across runs.
    """
    from velocity_platform.batch import all_succeeded, business_dates
    from velocity_platform.connectors.files import FileSourceError, preset, read_export
    from velocity_platform.settings import ERP_TOKEN_ENV, WMS_TOKEN_ENV
    from velocity_platform.simulators.serve import BackgroundServer
    from velocity_platform.simulators.wms import WmsConfig, create_wms_app

    settings = _settings()
    _check_dates(args.date_from, args.date_to, settings, partitioned_from_settings=False)
    _check_state_writable(settings)
    if args.wms_url:
        settings = _changed(settings, wms_url=args.wms_url)
        _check_tokens(["WMS"])
        _check_reachable("WMS", args.wms_url, args.date_from)
    try:
        export = read_export(args.path, preset(args.preset, args.default_cube), warehouse_tz=settings.timezone)
    except (FileSourceError, ValueError) as exc:
        print(f"velocity-platform run: {exc}", file=sys.stderr)
        return 2
    if export.first_date is None or not export.first_date <= args.date_from <= args.date_to <= export.last_date:
        print(
            f"velocity-platform run: {args.date_from} .. {args.date_to} is not inside the export's "
            f"{export.first_date} .. {export.last_date}",
            file=sys.stderr,
        )
        return 2
    source = {"source": "file", "file_path": str(export.path), "file_preset": args.preset}
    if args.default_cube is not None:
        source["default_unit_cube_ft3"] = args.default_cube
    changes = {"order_source": _changed(settings.order_source, **source)}
    if args.routing:
        changes["slotting"] = _changed(settings.slotting, routing=args.routing)
    if args.date_from < settings.first_partition_date:
        changes["first_partition_date"] = args.date_from
        print(f"First partition date set to {args.date_from} for this run (configured: {settings.first_partition_date})", file=sys.stderr)
    settings = _changed(settings, **changes)
    # The ERP resource is still configured (only its token is read); nothing calls the ERP.
    if not os.environ.get(ERP_TOKEN_ENV, "").strip():
        settings = settings.with_stand_in_tokens(**{ERP_TOKEN_ENV: "unused-with-a-file-source"})
    dates = business_dates(args.date_from, args.date_to)
    # A network preset maps each line to its site: every site the export holds (or those asked
    # for) is run, each from its own lines; a one-warehouse export is the default site's.
    try:
        sites = _evaluated_sites(export, args.warehouse, args.preset)
    except ValueError as exc:
        print(f"velocity-platform run: {exc}", file=sys.stderr)
        return 2
    warehouses = None if sites == [None] else sites
    raw_lines: int | dict[str, int] = sum(export.line_counts(day)["raw_lines"] for day in dates)
    if warehouses:
        raw_lines = {site: sum(export.of_site(site).line_counts(day)["raw_lines"] for day in dates) for site in warehouses}

    def run(settings) -> dict:
        summary = _run_and_report(dates, args.summary, settings, source_lines=raw_lines, warehouses=warehouses)
        file_lines = sum(export.line_counts(day)["file_lines"] for day in dates)
        excluded = {}
        for day in dates:
            for code, n in export.excluded_counts(day).items():
                excluded[code] = excluded.get(code, 0) + n
        print(
            f"File lines          {file_lines:>12,}   = {summary['validated_lines']:,} validated + "
            f"{sum(excluded.values()):,} excluded (non-inventory) + {summary['dead_letter_lines']:,} dead-lettered"
            f"\n  excluded by code  {excluded}"
        )
        return summary

    if args.wms_url:
        summary = run(settings)
    else:
        # The run starts its own WMS simulator, so it uses the simulator's development token.
        settings = settings.with_stand_in_tokens(**{WMS_TOKEN_ENV: DEV_WMS_TOKEN})
        master = export.sku_master()
        catalog = list(zip(master["sku_id"].to_list(), [d.isoformat() for d in master["introduced_on"]], strict=True))
        Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
        wms = WmsConfig(
            seed=args.seed,
            start=export.first_date,  # the warehouse as the export finds it, the same on every run
            aisles=args.aisles,
            bays_per_side=args.bays,
            levels=args.levels,
            token=DEV_WMS_TOKEN,
            state_path=str(Path(settings.duckdb_path).parent / "wms_file_state.jsonl"),
            sku_catalog=catalog,
        )
        if warehouses:
            catalogs = {}
            for site in warehouses:
                site_master = export.of_site(site).sku_master()
                catalogs[site] = list(zip(site_master["sku_id"].to_list(), [d.isoformat() for d in site_master["introduced_on"]], strict=True))
            wms = dataclasses.replace(
                wms, warehouses=",".join(f"{site}@{args.aisles}x{args.bays}x{args.levels}" for site in warehouses), site_catalogs=catalogs
            )
        with BackgroundServer(create_wms_app(wms)) as server:
            print(f"WMS simulator for {len(catalog):,} SKUs at {server.url}{f' ({len(warehouses)} sites)' if warehouses else ''}", file=sys.stderr)
            summary = run(_changed(settings, wms_url=server.url))
    return 0 if all_succeeded(summary) else 1


def _default_data_file() -> Path:
    """The shared Online Retail export beside the checkout, where the preset expects it."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "online_retail.csv.gz"


def _budget(value: str) -> int | None:
    if value.lower() in ("unlimited", "none"):
        return None
    try:
        budget = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of moves or 'unlimited'") from None
    if budget < 0:
        raise argparse.ArgumentTypeError("--moves-per-day must be >= 0")
    return budget


def cmd_evaluate(args: argparse.Namespace) -> int:
    from velocity_platform.connectors.files import FileSourceError, preset, read_export
    from velocity_platform.evaluate import evaluate, network_summary, write_directives

    try:  # --source file is the only source evaluate replays: history comes from an export
        mapping = preset(args.preset, args.default_cube)
        settings = _settings()
        # The warehouse's zone when one is configured, else the export's own (the preset's).
        zone = settings.timezone if "timezone" in settings.model_fields_set else None
        export = read_export(args.path, mapping, warehouse_tz=zone)
        sites = _evaluated_sites(export, args.warehouse, args.preset)
        results = {}
        for site in sites:
            replay = _replay_settings(args, settings, site)
            print(
                f"Replaying {args.date_from} .. {args.date_to} from {export.path.name} "
                f"({export.total_lines:,} lines, {export.first_date} .. {export.last_date})"
                f"{f' for {site}' if site else ''} on "
                f"{replay.layout.aisles} aisles x {replay.layout.bays_per_side} bays x {replay.layout.levels} levels, {replay.routing}, "
                f"moves/day {'unlimited' if args.moves_per_day is None else args.moves_per_day}",
                file=sys.stderr,
            )
            results[site] = evaluate(export.of_site(site), replay)
    except (FileSourceError, ValueError) as exc:
        print(f"velocity-platform evaluate: {exc}", file=sys.stderr)
        return 2
    if sites == [None]:
        summary = results[None].summary
    else:
        for site, result in results.items():
            print(f"--- {site}")
            _print_evaluation(result.summary)
        summary = network_summary({site: result.summary for site, result in results.items()})
        print(f"--- network ({len(sites)} sites: {', '.join(sites)})")
    _print_evaluation(summary)
    if args.directives:
        for site, result in results.items():
            path = args.directives if site is None else args.directives.with_name(f"{args.directives.stem}.{site}{args.directives.suffix}")
            written = write_directives(result, path)
            print(f"{written:,} directives written to {path}", file=sys.stderr)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Summary written to {args.summary}", file=sys.stderr)
    return 0


def _evaluated_sites(export, asked: list[str] | None, preset_name: str) -> list[str | None]:
    """The sites a replay covers: one (None) for a one-warehouse export, else those asked for
    (each must be one of the export's) or every site the export's lines belong to."""
    found = export.warehouses
    if not found:
        if asked:
            raise ValueError(f"--warehouse: the {preset_name} preset maps the export to one warehouse; drop --warehouse or use a network preset")
        return [None]
    unknown = [site for site in asked or [] if site not in found]
    if unknown:
        raise ValueError(f"--warehouse {', '.join(unknown)}: the export's lines belong to {', '.join(found)}")
    return list(dict.fromkeys(asked)) if asked else found


def _replay_settings(args: argparse.Namespace, settings, site: str | None):
    """The replay of one site: its registered layout and routing when it is registered, else the
    command's flags."""
    from velocity_platform.domain.labor import LaborModel
    from velocity_platform.domain.travel import Layout
    from velocity_platform.evaluate import EvaluationSettings

    facts = _registered_sites(settings.store_url).get(site) if site else None
    layout = Layout(facts.aisles, facts.bays, facts.levels) if facts else Layout(args.aisles, args.bays, args.levels)
    return EvaluationSettings(
        first=args.date_from,
        last=args.date_to,
        layout=layout,
        routing=facts.routing if facts else args.routing,
        move_budget=args.moves_per_day,
        start_assignment=args.start_assignment,
        seed=args.seed,
        history_from=args.history_from,
        price_on=args.price_on or settings.slotting.price_on,
        labor=LaborModel(
            args.walk_speed, args.move_minutes, args.payback_days, args.replenish_minutes, settings.slotting.level_handling_s
        ),
    )


@functools.cache
def _registered_sites(store_url: str) -> dict:
    """The registry's warehouses by id; none where no store exists yet (a replay creates no state)."""
    from velocity_platform.connectors.state import OperationalStore

    sqlite_file = _sqlite_file(store_url)
    if sqlite_file is not None and not sqlite_file.exists():
        return {}
    store = OperationalStore(store_url)
    try:
        return {w.warehouse_id: w for w in store.registered_warehouses()}
    finally:
        store.dispose()


def _print_evaluation(s: dict) -> None:
    lines = s["file_lines"]
    print(
        f"File lines {s['history_from']} .. {s['evaluated_to']}: {sum(lines.values()):,} = "
        f"{lines['validated']:,} validated + {lines['excluded_non_inventory']:,} excluded (non-inventory) + "
        f"{lines['dead_lettered']:,} dead-lettered\n"
        f"Orders {s['orders']:,}, pick lines {s['pick_lines']:,} over {s['days']} days\n"
        f"Net labor saved: {s['net_labor_saving_hours']:,.1f} h = {s['net_labor_saving_pct']:.2f}% of the baseline's "
        f"{s['baseline_travel_hours']:,.1f} walking hours\n"
        f"  walking saved {s['travel_saved_hours']:,.1f} h at {s['walk_speed_m_s']} m/s, relocations "
        f"{s['relocation_hours']:,.1f} h ({s['relocations']:,} x {s['move_minutes']:g} min)\n"
        f"  handling {s['handling_hours']:,.1f} h (baseline {s['baseline_handling_hours']:,.1f} h), replenishment "
        f"{s['replenishment_hours']:,.1f} h ({s['replenishments']:,} trips; baseline {s['baseline_replenishment_hours']:,.1f} h), "
        f"golden-zone pick share {s['golden_zone_pick_share']}, A-class {s['golden_zone_a_pick_share']}\n"
        f"  relocations priced at {s['priced_saving_hours']:,.1f} h, realised {s['realised_saving_hours']:,.1f} h "
        f"(pricing on the {s['price_on']} slotting)\n"
        f"Travel per order: baseline {s['baseline_m_per_order']:,.1f} m, platform {s['platform_m_per_order']:,.1f} m "
        f"-> {s['travel_reduction_pct']:.2f}% less ({s['routing']})\n"
        f"Moves {s['moves']:,} ({s['new_skus_slotted']:,} new SKUs slotted, {s['relocations']:,} relocations, "
        f"{s['relocations_reversed_30d']:,} = {s['relocations_reversed_30d_pct']:.2f}% undone within 30 days) "
        f"in {s['seconds']}s"
    )


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


# --- parser ----------------------------------------------------------------------------------------


def _positive(kind: type):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if number < 0:
            raise argparse.ArgumentTypeError(f"{value!r} must not be negative")
        return number

    return parse


def _at_least_one(value: str) -> int:
    number = _positive(int)(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return number


def _add_labor_options(parser: argparse.ArgumentParser) -> None:
    from velocity_platform.settings import SlottingSettings, SettingsError

    try:  # defaults: the environment's, else the labor model's own
        labor = SlottingSettings.from_env().labor
    except SettingsError as exc:
        raise SystemExit(f"velocity-platform: a VELOCITY_* setting is not valid ({exc}); fix or unset it") from None
    group = parser.add_argument_group("labor model (docs/slotting.md)")
    group.add_argument("--walk-speed", type=_positive(float), default=labor.walk_speed_m_s, help=f"picker walking speed, m/s (default {labor.walk_speed_m_s:g}; VELOCITY_WALK_SPEED_M_S)")
    group.add_argument("--move-minutes", type=_positive(float), default=labor.move_minutes, help=f"labor of one relocation, minutes (default {labor.move_minutes:g}; VELOCITY_MOVE_MINUTES)")
    group.add_argument(
        "--payback-days",
        type=_positive(float),
        default=labor.payback_horizon_days,
        help=f"days of saving a relocation may count on (default {labor.payback_horizon_days:g}; VELOCITY_PAYBACK_HORIZON_DAYS)",
    )
    group.add_argument(
        "--replenish-minutes",
        type=_positive(float),
        default=labor.replenish_minutes,
        help=f"labor of one replenishment trip, minutes (default {labor.replenish_minutes:g}; VELOCITY_REPLENISH_MINUTES); "
        "handling seconds by level come from VELOCITY_LEVEL_HANDLING_S",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said in one line (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="velocity-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="run the ERP or WMS simulator in the foreground")
    simulate.add_argument("system", choices=["erp", "wms"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=None, help="default 8710 (erp) / 8720 (wms)")
    simulate.add_argument("--wms-state", default=None, help="WMS only: file that keeps applied moves across restarts")
    simulate.add_argument(
        "--warehouses",
        default=None,
        help="sites served: erp ID[@TZ],... (zone default: the settings' time zone); wms ID[@AxBxL],... "
        "(aisles x bays x levels; default layout otherwise). Default: one site, WH-01, as ever",
    )
    _add_world_options(simulate)
    _add_fault_options(simulate)
    simulate.set_defaults(func=cmd_simulate)

    run = commands.add_parser("run", help="materialize the whole graph for a range of business dates")
    run.add_argument("--from", dest="date_from", type=_date, required=True)
    run.add_argument("--to", dest="date_to", type=_date, required=True)
    run.add_argument("--erp-url", default=None)
    run.add_argument("--wms-url", default=None)
    run.add_argument("--summary", type=Path, default=None, help="write the KPI summary as JSON here")
    run.add_argument("--warehouse", action="append", default=None, metavar="ID", help="a site to run (repeatable; default: every registered one)")
    file_source = run.add_argument_group("file-drop source (--source file)")
    file_source.add_argument("--source", choices=["erp", "file"], default="erp", help="erp (HTTP API, default) or file")
    file_source.add_argument("--path", type=Path, default=_default_data_file(), help="the export (CSV/Parquet, .gz)")
    file_source.add_argument("--preset", default="online-retail", help="column mapping: online-retail or erp-lines")
    file_source.add_argument("--default-cube", type=float, default=None, help="unit cube (ft3) for SKUs without one")
    file_source.add_argument("--routing", choices=["s-shape", "return", "largest-gap"], default=None)
    file_source.add_argument("--aisles", type=int, default=40, help="layout of the WMS simulator (no --wms-url)")
    file_source.add_argument("--bays", type=int, default=50, help="bays per side of an aisle")
    file_source.add_argument("--levels", type=int, default=1)
    file_source.add_argument("--seed", type=int, default=7, help="seed of the simulator's legacy slotting")
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser("demo", help="simulators + the last N business days + a KPI summary")
    demo.add_argument("--days", type=int, default=14, help="nights run one by one at the end (default 14)")
    demo.add_argument(
        "--history-days", type=int, default=90, help="days built before them in one run (default 90; 0: none)"
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--warehouses", dest="network_size", type=int, default=1, metavar="N", help="simulated sites, each its own layout and time zone (default 1)")
    demo.add_argument("--skus", type=int, default=2000)
    demo.add_argument("--lines-per-day", type=int, default=4000)
    demo.add_argument("--summary", type=Path, default=None)
    demo.set_defaults(func=cmd_demo)

    evaluate = commands.add_parser(
        "evaluate", help="replay order history day by day: platform slotting vs a baseline that never re-slots"
    )
    evaluate.add_argument("--source", choices=["file"], default="file")
    evaluate.add_argument("--path", type=Path, default=_default_data_file(), help="the export (CSV/Parquet, .gz)")
    evaluate.add_argument("--preset", default="online-retail", help="column mapping (default online-retail)")
    evaluate.add_argument("--from", dest="date_from", type=_date, required=True, help="first day evaluated")
    evaluate.add_argument("--to", dest="date_to", type=_date, required=True, help="last day evaluated")
    evaluate.add_argument("--history-from", type=_date, default=None, help="first day of history (default: the file's)")
    evaluate.add_argument("--aisles", type=int, default=40)
    evaluate.add_argument("--bays", type=int, default=50, help="bays per side of an aisle (default 50)")
    evaluate.add_argument("--levels", type=int, default=1)
    evaluate.add_argument("--routing", choices=["s-shape", "return", "largest-gap"], default="s-shape")
    evaluate.add_argument(
        "--price-on",
        choices=["target", "reachable"],
        default=None,
        help="what a move's walking saving is measured on (default VELOCITY_PRICE_ON, else target; docs/slotting.md)",
    )
    evaluate.add_argument("--moves-per-day", type=_budget, default=200, help="move budget, or 'unlimited' (default 200)")
    evaluate.add_argument(
        "--start-assignment",
        default="random",
        help="'random', 'static-turnover' (SKUs ranked by pick lines over the six months before --from, fastest to "
        "the cheapest location) or a CSV/Parquet of sku_id, location_id",
    )
    evaluate.add_argument("--seed", type=int, default=7, help="seed of the random start and putaway (default 7)")
    evaluate.add_argument("--default-cube", type=float, default=None, help="unit cube (ft3) for SKUs without one")
    evaluate.add_argument(
        "--warehouse", action="append", default=None, metavar="ID",
        help="a site of a network preset's export to replay (repeatable; default: every site its lines belong to)",
    )
    evaluate.add_argument("--summary", type=Path, default=None, help="write the summary as JSON here")
    evaluate.add_argument("--directives", type=Path, default=None, help="write every directive applied here (.csv or .parquet)")
    _add_labor_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    deltas = commands.add_parser(
        "deltas",
        help="the resident exception service: follows the ERP's commits and slots new SKUs in the WMS at once "
        "(settings: VELOCITY_DELTAS_*; docs/deltas.md)",
    )
    deltas.set_defaults(func=cmd_deltas)

    worker = commands.add_parser(
        "worker",
        help="a Celery worker for this code: runs the steps of runs on VELOCITY_EXECUTOR=celery "
        "(needs VELOCITY_CELERY_BROKER_URL; docs/operations.md)",
    )
    worker.add_argument("--queue", default=None, help="the Celery queue to take steps from (default: VELOCITY_CELERY_QUEUE)")
    worker.add_argument("--concurrency", type=_at_least_one, default=1, help="steps at once (default 1)")
    worker.add_argument("--name", default=None, help="the worker's name, shown on each step it runs (default velocity-PID@host)")
    worker.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Celery's log level")
    worker.set_defaults(func=cmd_worker)

    warehouses = commands.add_parser("warehouses", help="the network's registry: add a warehouse, list them")
    registry = warehouses.add_subparsers(dest="action", required=True, metavar="add|list")
    add = registry.add_parser("add", help="register a warehouse (or update its facts); it becomes a partition at once")
    add.add_argument("warehouse_id", metavar="ID", help="letters, digits, '-' or '_' (e.g. WH-02, CHI)")
    add.add_argument("--timezone", required=True, help="IANA time zone of the site (its night runs at 02:00 there)")
    add.add_argument("--aisles", type=int, required=True)
    add.add_argument("--bays", type=int, required=True, help="bays per side of an aisle")
    add.add_argument("--levels", type=int, required=True)
    add.add_argument("--routing", choices=ROUTING_CHOICES, required=True)
    add.add_argument("--wms-url", default=None, help="the site's own WMS (default: the deployment's VELOCITY_WMS_URL)")
    listing = registry.add_parser("list", help="the registered warehouses")
    listing.add_argument("--json", action="store_true", help="as JSON, one object per site")
    warehouses.set_defaults(func=cmd_warehouses)

    tables = commands.add_parser("tables", help="the warehouse tables' store: copy a DuckDB file's tables into the lake")
    store_actions = tables.add_subparsers(dest="action", required=True, metavar="import-duckdb")
    imported = store_actions.add_parser(
        "import-duckdb", help="copy every table of a DuckDB file (VELOCITY_DUCKDB_PATH by default) into the lake (VELOCITY_LAKE_PATH)"
    )
    imported.add_argument("--path", type=Path, default=None, help="the DuckDB file (default: VELOCITY_DUCKDB_PATH)")
    tables.set_defaults(func=cmd_tables)
    add_installed_commands(commands)
    return parser


ROUTING_CHOICES = ["s-shape", "return", "largest-gap"]


def _remove_lake_tables(lake_path: str) -> None:
    """Only the lake's tables (folders with a Delta log), never whatever else the folder or bucket holds."""
    from velocity_platform.connectors.object_store import S3Lake, is_remote

    if is_remote(lake_path):
        S3Lake(lake_path).remove_tables()
        return
    for table in Path(lake_path).glob("*/_delta_log"):
        shutil.rmtree(table.parent)


def cmd_tables(args: argparse.Namespace) -> int:
    """`tables import-duckdb`: a deployment of the DuckDB file moves to the lake with its history."""
    from velocity_platform.defs.tables import WarehouseTables, import_duckdb_file

    settings = _settings()
    path = args.path or Path(settings.duckdb_path)
    if not path.is_file():
        raise ConfigurationError(f"no DuckDB file at {path}; give --path or set VELOCITY_DUCKDB_PATH")
    lake = WarehouseTables(database=str(path), lake_path=settings.lake_path)
    started = time.perf_counter()
    copied = import_duckdb_file(str(path), lake, progress=lambda line: print(line, file=sys.stderr))
    print(f"{sum(copied.values()):,} rows of {len(copied)} tables copied from {path} into {lake.location} in {time.perf_counter() - started:.1f} s")
    if settings.table_store != "lake":
        print("VELOCITY_TABLE_STORE is duckdb-file: unset it (the lake is the default) for the platform to use the lake")
    return 0


def cmd_warehouses(args: argparse.Namespace) -> int:
    """`warehouses add` and `warehouses list`: the registry in the operational store."""
    from pydantic import ValidationError

    from velocity_platform.connectors.state import OperationalStore
    from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID, Warehouse

    settings = _settings()
    _check_state_writable(settings)
    store = OperationalStore(settings.store_url)
    if args.action == "list":
        sites = store.registered_warehouses()
        if args.json:
            print(json.dumps([site.model_dump() for site in sites], indent=2))
        elif not sites:
            print(f"No warehouse registered: the platform runs one, {DEFAULT_WAREHOUSE_ID}, on the settings (time zone {settings.timezone}).")
        else:
            print(f"{'warehouse':<12} {'time zone':<22} {'layout':<12} {'locations':>9}  {'routing':<12} WMS")
            for site in sites:
                layout = f"{site.aisles}x{site.bays}x{site.levels}"
                print(
                    f"{site.warehouse_id:<12} {site.timezone:<22} {layout:<12} {site.locations:>9,}  {site.routing:<12} "
                    f"{site.wms_url or 'the deployment WMS'}"
                )
        return 0
    try:
        site = Warehouse(
            warehouse_id=args.warehouse_id,
            timezone=args.timezone,
            aisles=args.aisles,
            bays=args.bays,
            levels=args.levels,
            routing=args.routing,
            wms_url=args.wms_url,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        where = "ID" if field == "warehouse_id" else f"--{field.replace('_', '-')}"
        reason = error["msg"].removeprefix("Value error, ")
        raise ConfigurationError(f"warehouse {args.warehouse_id!r} refused: {where}: {reason}") from None
    outcome = store.register_warehouse(site)
    added = _add_warehouse_partition(settings, site.warehouse_id)
    print(
        f"{site.warehouse_id} {outcome}: {site.timezone}, {site.aisles}x{site.bays}x{site.levels} "
        f"({site.locations:,} locations), {site.routing}" + ("" if added else "; the registry sensor adds its partition")
    )
    return 0


def _add_warehouse_partition(settings, warehouse_id: str) -> bool:
    """The site as a warehouse partition on the instance at DAGSTER_HOME (False when there is none
    yet: the registry sensor adds it on its first tick)."""
    from velocity_platform.batch import ensure_warehouse_partitions, ensure_dagster_home

    if not (settings.dagster_home / "dagster.yaml").exists() and not _dagster_yaml_template().exists():
        return False
    from dagster import DagsterInstance

    ensure_dagster_home(settings, _dagster_yaml_template())
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        ensure_warehouse_partitions(instance, [warehouse_id])
    return True


# Packages installed beside the product add commands of their own through this entry-point group
# (the benchmarks add `bench`): the product never imports its tools.
COMMAND_ENTRY_POINTS = "velocity_platform.commands"


def add_installed_commands(commands: argparse._SubParsersAction) -> None:
    """Let each entry point of COMMAND_ENTRY_POINTS add its subcommand(s) to `commands`."""
    for entry_point in importlib.metadata.entry_points(group=COMMAND_ENTRY_POINTS):
        try:
            add_commands = entry_point.load()
        except ImportError as exc:  # installed metadata, but the package is gone: the other commands still work
            print(f"command {entry_point.name!r} unavailable ({exc}); reinstall with `make install`", file=sys.stderr)
            continue
        add_commands(commands)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"velocity-platform {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the edge where a user's mistakes become one line (others propagate)
        message = _configuration_mistake(exc)
        if message is None:
            raise
        print(f"velocity-platform {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
