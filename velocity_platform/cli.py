"""`velocity-platform`: run the simulators, the batch for a range of dates, and the demo."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
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


def _erp_config(args: argparse.Namespace):
    from velocity_platform.simulators.erp import ErpConfig

    return ErpConfig(
        seed=args.seed,
        skus=args.skus,
        lines_per_day=args.lines_per_day,
        start=args.start,
        days=args.days,
        timezone=os.environ.get("VELOCITY_WAREHOUSE_TZ", "Europe/London"),
        token=os.environ.get("VELOCITY_ERP_TOKEN", DEV_ERP_TOKEN),
        **_fault_config(args, "erp"),
    )


def _wms_config(args: argparse.Namespace):
    from velocity_platform.simulators.wms import WmsConfig

    return WmsConfig(
        seed=args.seed,
        skus=args.skus,
        start=args.start,
        days=args.days,
        token=os.environ.get("VELOCITY_WMS_TOKEN", DEV_WMS_TOKEN),
        state_path=getattr(args, "wms_state", None),
        **_fault_config(args, "wms"),
    )


# --- commands ------------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from velocity_platform.simulators.erp import create_erp_app
    from velocity_platform.simulators.serve import run_foreground
    from velocity_platform.simulators.wms import create_wms_app

    try:
        if args.system == "erp":
            app, port = create_erp_app(_erp_config(args)), args.port or 8710
        else:
            app, port = create_wms_app(_wms_config(args)), args.port or 8720
    except ValueError as exc:  # an impossible rate or clock: say which, without a traceback
        print(f"velocity-platform simulate {args.system}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.system.upper()} simulator on http://{args.host}:{port} (Ctrl-C to stop)", file=sys.stderr)
    run_foreground(app, host=args.host, port=port)
    return 0


def _erp_lines_for(dates: list[dt.date]) -> int:
    from velocity_platform.connectors.erp import ErpClient
    from velocity_platform.settings import Settings

    settings = Settings.from_env()
    with ErpClient(settings.erp_url, os.environ.get("VELOCITY_ERP_TOKEN")) as client:
        return sum(client.count_lines(day) for day in dates)


def _run_and_report(dates: list[dt.date], summary_path: Path | None, source_lines: int | None = None) -> dict:
    from velocity_platform.batch import ensure_dagster_home, format_summary, print_progress, run_range, summarize
    from velocity_platform.settings import Settings

    home = ensure_dagster_home()
    settings = Settings.from_env()
    Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    print(
        f"Materializing {len(dates)} business date(s) {dates[0]} .. {dates[-1]} on the instance at {home}",
        file=sys.stderr,
    )
    outcomes = run_range(dates, progress=print_progress)
    summary = summarize(dates, outcomes, _erp_lines_for(dates) if source_lines is None else source_lines, settings)
    print(format_summary(summary))
    if summary_path:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Summary written to {summary_path}", file=sys.stderr)
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    from velocity_platform.batch import business_dates

    if args.source == "file":
        return _run_file_source(args)
    if args.erp_url:
        os.environ["VELOCITY_ERP_URL"] = args.erp_url
    if args.wms_url:
        os.environ["VELOCITY_WMS_URL"] = args.wms_url
    summary = _run_and_report(business_dates(args.date_from, args.date_to), args.summary)
    return 0 if summary["partitions_succeeded"] == len(summary["partitions"]) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from velocity_platform.batch import business_dates
    from velocity_platform.settings import Settings
    from velocity_platform.simulators.erp import create_erp_app
    from velocity_platform.simulators.serve import BackgroundServer
    from velocity_platform.simulators.wms import create_wms_app

    os.environ.setdefault("VELOCITY_ERP_TOKEN", DEV_ERP_TOKEN)
    os.environ.setdefault("VELOCITY_WMS_TOKEN", DEV_WMS_TOKEN)
    settings = Settings.from_env()
    # A demo starts from a clean warehouse: the tables, the outbox and the WMS's own state.
    args.wms_state = str(Path(settings.duckdb_path).parent / "wms_state.jsonl")
    for leftover in (Path(settings.duckdb_path), Path(args.wms_state), _sqlite_file(settings.store_url)):
        if leftover and leftover.exists():
            leftover.unlink()
    started = time.perf_counter()
    last = _yesterday()
    dates = business_dates(last - dt.timedelta(days=args.days - 1), last)
    args.start, args.days = None, max(120, args.days + 90)
    with BackgroundServer(create_erp_app(_erp_config(args))) as erp, BackgroundServer(
        create_wms_app(_wms_config(args))
    ) as wms:
        os.environ["VELOCITY_ERP_URL"], os.environ["VELOCITY_WMS_URL"] = erp.url, wms.url
        print(f"ERP simulator at {erp.url}, WMS simulator at {wms.url}", file=sys.stderr)
        summary = _run_and_report(dates, args.summary)
    print(
        f"\nDemo finished in {time.perf_counter() - started:.0f}s. To explore the same data in the Dagster UI:\n"
        "  make dev     # then open http://127.0.0.1:3000 (Assets, partitions, checks, backfills)",
    )
    ok = summary["partitions_succeeded"] == len(dates) and summary["raw_lines"] == (
        summary["validated_lines"] + summary["dead_letter_lines"]
    )
    return 0 if ok else 1


def _run_file_source(args: argparse.Namespace) -> int:
    """`run --source file`: the same graph, with raw_transactions and sku_master read from an export.

    The partitions definition is built when the definitions are imported, from
    VELOCITY_FIRST_PARTITION_DATE; a file's history can lie years before the configured first
    date, so the first date is moved back to --from before anything imports the definitions.
    Without --wms-url a WMS simulator serves the export's SKUs on loopback (40 x 50 x 1 unless
    told otherwise), keeping its moves in a journal beside the DuckDB file across runs.
    """
    from velocity_platform.batch import business_dates
    from velocity_platform.connectors.files import FileSourceError, preset, read_export
    from velocity_platform.settings import Settings
    from velocity_platform.simulators.serve import BackgroundServer
    from velocity_platform.simulators.wms import WmsConfig, create_wms_app

    settings = Settings.from_env()
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
    os.environ.update(
        {
            "VELOCITY_SOURCE": "file",
            "VELOCITY_FILE_PATH": str(export.path),
            "VELOCITY_FILE_PRESET": args.preset,
        }
    )
    if args.default_cube is not None:
        os.environ["VELOCITY_DEFAULT_UNIT_CUBE_FT3"] = str(args.default_cube)
    if args.routing:
        os.environ["VELOCITY_ROUTING"] = args.routing
    if args.date_from < settings.first_partition_date:
        os.environ["VELOCITY_FIRST_PARTITION_DATE"] = args.date_from.isoformat()
        print(f"First partition date set to {args.date_from} for this run (configured: {settings.first_partition_date})", file=sys.stderr)
    # The ERP resource is still configured (only its token is read); nothing calls the ERP.
    os.environ.setdefault("VELOCITY_ERP_TOKEN", "unused-with-a-file-source")
    dates = business_dates(args.date_from, args.date_to)
    raw_lines = sum(export.line_counts(day)["raw_lines"] for day in dates)

    def run() -> dict:
        summary = _run_and_report(dates, args.summary, source_lines=raw_lines)
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
        os.environ["VELOCITY_WMS_URL"] = args.wms_url
        summary = run()
    else:
        os.environ.setdefault("VELOCITY_WMS_TOKEN", DEV_WMS_TOKEN)
        master = export.sku_master()
        catalog = list(zip(master["sku_id"].to_list(), [d.isoformat() for d in master["introduced_on"]], strict=True))
        Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
        wms = WmsConfig(
            seed=args.seed,
            start=export.first_date,  # the warehouse as the export finds it, the same on every run
            aisles=args.aisles,
            bays_per_side=args.bays,
            levels=args.levels,
            token=os.environ["VELOCITY_WMS_TOKEN"],
            state_path=str(Path(settings.duckdb_path).parent / "wms_file_state.jsonl"),
            sku_catalog=catalog,
        )
        with BackgroundServer(create_wms_app(wms)) as server:
            os.environ["VELOCITY_WMS_URL"] = server.url
            print(f"WMS simulator for {len(catalog):,} SKUs at {server.url}", file=sys.stderr)
            summary = run()
    return 0 if summary["partitions_succeeded"] == len(summary["partitions"]) else 1


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
    from velocity_platform.domain.travel import Layout
    from velocity_platform.evaluate import EvaluationSettings, evaluate

    try:  # --source file is the only source evaluate replays: history comes from an export
        mapping = preset(args.preset, args.default_cube)
        export = read_export(args.path, mapping, warehouse_tz=os.environ.get("VELOCITY_WAREHOUSE_TZ") or None)
        settings = EvaluationSettings(
            first=args.date_from,
            last=args.date_to,
            layout=Layout(args.aisles, args.bays, args.levels),
            routing=args.routing,
            move_budget=args.moves_per_day,
            start_assignment=args.start_assignment,
            seed=args.seed,
            history_from=args.history_from,
        )
        print(
            f"Replaying {args.date_from} .. {args.date_to} from {export.path.name} "
            f"({export.total_lines:,} lines, {export.first_date} .. {export.last_date}) on "
            f"{args.aisles} aisles x {args.bays} bays x {args.levels} levels, {args.routing}, "
            f"moves/day {'unlimited' if args.moves_per_day is None else args.moves_per_day}",
            file=sys.stderr,
        )
        result = evaluate(export, settings)
    except (FileSourceError, ValueError) as exc:
        print(f"velocity-platform evaluate: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    lines = s["file_lines"]
    print(
        f"File lines {s['history_from']} .. {s['evaluated_to']}: {sum(lines.values()):,} = "
        f"{lines['validated']:,} validated + {lines['excluded_non_inventory']:,} excluded (non-inventory) + "
        f"{lines['dead_lettered']:,} dead-lettered\n"
        f"Orders {s['orders']:,}, pick lines {s['pick_lines']:,} over {s['days']} days\n"
        f"Travel per order: baseline {s['baseline_m_per_order']:,.1f} m, platform {s['platform_m_per_order']:,.1f} m "
        f"-> {s['travel_reduction_pct']:.2f}% less ({s['routing']})\n"
        f"Moves {s['moves']:,} ({s['new_skus_slotted']:,} new SKUs slotted, {s['relocations']:,} relocations) "
        f"in {s['seconds']}s"
    )
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(s, indent=2) + "\n")
        print(f"Summary written to {args.summary}", file=sys.stderr)
    return 0


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


# --- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="velocity-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="run the ERP or WMS simulator in the foreground")
    simulate.add_argument("system", choices=["erp", "wms"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=None, help="default 8710 (erp) / 8720 (wms)")
    simulate.add_argument("--wms-state", default=None, help="WMS only: file that keeps applied moves across restarts")
    _add_world_options(simulate)
    _add_fault_options(simulate)
    simulate.set_defaults(func=cmd_simulate)

    run = commands.add_parser("run", help="materialize the whole graph for a range of business dates")
    run.add_argument("--from", dest="date_from", type=_date, required=True)
    run.add_argument("--to", dest="date_to", type=_date, required=True)
    run.add_argument("--erp-url", default=None)
    run.add_argument("--wms-url", default=None)
    run.add_argument("--summary", type=Path, default=None, help="write the KPI summary as JSON here")
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
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--seed", type=int, default=7)
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
    evaluate.add_argument("--moves-per-day", type=_budget, default=200, help="move budget, or 'unlimited' (default 200)")
    evaluate.add_argument("--start-assignment", default="random", help="'random' or a CSV/Parquet of sku_id, location_id")
    evaluate.add_argument("--seed", type=int, default=7, help="seed of the random start and putaway (default 7)")
    evaluate.add_argument("--default-cube", type=float, default=None, help="unit cube (ft3) for SKUs without one")
    evaluate.add_argument("--summary", type=Path, default=None, help="write the summary as JSON here")
    evaluate.set_defaults(func=cmd_evaluate)
    add_installed_commands(commands)
    return parser


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
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
