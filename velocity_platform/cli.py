"""`velocity-platform`: run the simulators, the batch for a range of dates, and the demo."""

from __future__ import annotations

import argparse
import datetime as dt
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
    )


# --- commands ------------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from velocity_platform.simulators.erp import create_erp_app
    from velocity_platform.simulators.serve import run_foreground
    from velocity_platform.simulators.wms import create_wms_app

    if args.system == "erp":
        app, port = create_erp_app(_erp_config(args)), args.port or 8710
    else:
        app, port = create_wms_app(_wms_config(args)), args.port or 8720
    print(f"{args.system.upper()} simulator on http://{args.host}:{port} (Ctrl-C to stop)", file=sys.stderr)
    run_foreground(app, host=args.host, port=port)
    return 0


def _erp_lines_for(dates: list[dt.date]) -> int:
    from velocity_platform.connectors.erp import ErpClient
    from velocity_platform.settings import Settings

    settings = Settings.from_env()
    with ErpClient(settings.erp_url, os.environ.get("VELOCITY_ERP_TOKEN")) as client:
        return sum(client.count_lines(day) for day in dates)


def _run_and_report(dates: list[dt.date], summary_path: Path | None) -> dict:
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
    summary = summarize(dates, outcomes, _erp_lines_for(dates), settings)
    print(format_summary(summary))
    if summary_path:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Summary written to {summary_path}", file=sys.stderr)
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    from velocity_platform.batch import business_dates

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


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from benchmarks.harness import run_benchmark
    except ImportError:
        print("benchmarks/ is not importable: run from a source checkout installed with `make install`", file=sys.stderr)
        return 2
    for scenario in args.scenario:
        json_path = args.json
        if json_path and len(args.scenario) > 1:
            json_path = json_path.with_name(f"{json_path.stem}-{scenario}{json_path.suffix}")
        run_benchmark(scenario, json_path, compare=not args.no_compare)
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
    simulate.set_defaults(func=cmd_simulate)

    run = commands.add_parser("run", help="materialize the whole graph for a range of business dates")
    run.add_argument("--from", dest="date_from", type=_date, required=True)
    run.add_argument("--to", dest="date_to", type=_date, required=True)
    run.add_argument("--erp-url", default=None)
    run.add_argument("--wms-url", default=None)
    run.add_argument("--summary", type=Path, default=None, help="write the KPI summary as JSON here")
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser("demo", help="simulators + the last N business days + a KPI summary")
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--skus", type=int, default=2000)
    demo.add_argument("--lines-per-day", type=int, default=4000)
    demo.add_argument("--summary", type=Path, default=None)
    demo.set_defaults(func=cmd_demo)

    bench = commands.add_parser("bench", help="measure one business day of a scenario (S, M, L) through Dagster")
    bench.add_argument("--scenario", nargs="+", choices=["S", "M", "L"], default=["S"])
    bench.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    bench.add_argument("--no-compare", action="store_true", help="skip the per-record, floor and parse comparisons")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
