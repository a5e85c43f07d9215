"""A 90-day backfill of the demo data set, launched as the UI launches it, timed end to end.

    .venv/bin/python -m benchmarks.backfill_quarter [--world demo|M] [--days 90] [--backfill-pass-s S] [--cli]

1. The ERP and WMS simulators run as their own processes with the demo's world (seed 7, 2,000
   SKUs, 4,000 lines a day; history from 2026-01-01).
2. dagster-webserver and dagster-daemon start on a fresh DAGSTER_HOME (the repository's
   dagster.yaml) and workspace.yaml, exactly as `make dev` runs them.
3. A backfill of nightly_slotting_batch over the first `--days` business dates is launched
   through the GraphQL API; the clock runs from the launch until the last run has finished.
4. Checked afterwards: every run succeeded (so no DuckDB lock error stopped one), the runs
   never overlapped, they built the ranges the backfill policy cuts, and the last day's
   sku_velocity read exactly its 90 days (units_90d equals the sum of daily_sku_demand over
   D-89..D for every SKU). `--backfill-pass-s 3` runs the daemon's backfill passes every 3 s
   instead of Dagster's 30 (benchmarks/daemon.py): the difference is what the passes cost.

With --cli, the same range also goes through `velocity-platform run` (the same job, day by day,
in one process) on another fresh home, for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl

from benchmarks.deployment import PROJECT, LocalDeployment, wait_until
from benchmarks.harness import deployment_env, tables_in
from velocity_platform.defs.partitions import site_day_of
from velocity_platform.simulators.serve import free_port
from velocity_platform.settings import Settings

START = dt.date(2026, 1, 1)
# The demo's world, or the benchmark scenario M (20,000 SKUs, 300,000 lines a day).
WORLDS = {"demo": (2_000, 4_000), "M": (20_000, 300_000)}
WORLD = ["--seed", "7", "--skus", "2000", "--lines-per-day", "4000", "--start", START.isoformat(), "--days", "120"]


def use_world(name: str) -> None:
    skus, lines = WORLDS[name]
    WORLD[3], WORLD[5] = str(skus), str(lines)
TOKENS = {"VELOCITY_ERP_TOKEN": "erp-dev-token", "VELOCITY_WMS_TOKEN": "wms-dev-token"}
EXE = str(Path(sys.executable).with_name("velocity-platform"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_simulators(work: Path, warehouses: list[str] | None = None) -> tuple[list[subprocess.Popen], dict[str, str]]:
    """The ERP and WMS of WORLD as processes; with `warehouses`, a network of those sites."""
    env = {**os.environ, **TOKENS}
    world = [*WORLD, "--warehouses", ",".join(warehouses)] if warehouses else WORLD
    ports = {"erp": free_port(), "wms": free_port()}
    processes = [
        subprocess.Popen([EXE, "simulate", "erp", "--port", str(ports["erp"]), *world], env=env),
        subprocess.Popen(
            [EXE, "simulate", "wms", "--port", str(ports["wms"]), "--wms-state", str(work / "wms_state.jsonl"), *world],
            env=env,
        ),
    ]
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def healthy() -> bool:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a simulator exited during start-up")
        try:
            return all(httpx.get(f"{u}/healthz", timeout=1).status_code == 200 for u in urls.values())
        except httpx.TransportError:
            return False

    wait_until("the simulators to answer", healthy, 60)
    return processes, {"VELOCITY_ERP_URL": urls["erp"], "VELOCITY_WMS_URL": urls["wms"]}


def platform_env(work: Path, urls: dict[str, str]) -> dict[str, str]:
    return deployment_env(work, urls, TOKENS)


def velocity_reads_its_window(work: Path, day: dt.date) -> dict:
    """The last day's units_90d against the daily demand of D-89..D, SKU by SKU."""
    first = day - dt.timedelta(days=89)
    with tables_in(work).session(read_only=True) as tables:
        window_sum = tables.read("daily_sku_demand", first, day, columns=["sku_id", "units"]).group_by("sku_id").agg(pl.col("units").sum())
        velocity = tables.read("sku_velocity", day, columns=["sku_id", "units_90d"])
        days = tables.dates_held("daily_sku_demand", first, day)
    compared_frame = velocity.join(window_sum, on="sku_id", how="left").with_columns(pl.col("units").fill_null(0))
    compared = compared_frame.height
    mismatched = compared_frame.filter((pl.col("units_90d") - pl.col("units")).abs() > 1e-6).height
    return {"skus_compared": compared, "skus_mismatched": mismatched, "days_of_demand_in_window": days}


def through_the_ui(dates: list[dt.date], work: Path, urls: dict[str, str], backfill_pass_s: int | None = None) -> dict:
    """The backfill as the UI's asset graph launches it: an asset backfill, which the daemon
    submits in stages (the SKU master; then each range's assets as their upstream lands, one
    30-second pass after it), one run at a time under the duckdb pool."""
    env = platform_env(work, urls)
    os.environ.update(env)  # the instance this process reads is the deployment's
    import dagster as dg

    with LocalDeployment(env, work, backfill_pass_s=backfill_pass_s) as deployment:
        launched, launched_at = time.perf_counter(), time.time()
        backfill_id = deployment.launch_backfill(dates)
        deployment.start_daemon()
        with dg.DagsterInstance.get() as instance:

            days_per_run = Settings.from_env().backfill_days_per_run  # the deployment's, from its environment
            reported: set[int] = set()

            def finished():
                # Done when the daemon has requested all it will and every run it launched has finished.
                runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                done = [r for r in runs if r.dagster_run.is_finished]
                if done and len(done) not in reported:
                    reported.add(len(done))
                    log(f"  {len(done)}/{len(runs)} runs finished after {time.perf_counter() - launched:.0f}s")
                settled = deployment.backfill_status(backfill_id) not in ("REQUESTED", "CANCELING")
                return settled and runs and len(done) == len(runs) and runs

            runs = wait_until("the backfill to finish", finished, deadline_s=3 * 3600, poll_s=2)
            wall = time.perf_counter() - launched
            runs = sorted(runs, key=lambda r: r.start_time)
            executions = [r.end_time - r.start_time for r in runs]
            gaps = [b.start_time - a.end_time for a, b in zip(runs, runs[1:])]
            ranges = sorted({(d[0], d[-1]) for r in runs if (d := run_dates(r.dagster_run.tags))})
            policy = [(dates[i], dates[min(i + days_per_run, len(dates)) - 1]) for i in range(0, len(dates), days_per_run)]
            return {
                "path": "UI backfill (GraphQL launchPartitionBackfill of the nightly assets, dagster-daemon)",
                "backfill_pass_s": backfill_pass_s or 30,
                "partitions": len(dates),
                "runs": len(runs),
                "days_per_run": days_per_run,
                "ranges_as_the_policy_cuts_them": ranges == policy,
                "wall_seconds": round(wall, 1),
                "seconds_in_runs": round(sum(executions), 1),
                "succeeded": sum(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs),
                "overlapping_runs": sum(g < 0 for g in gaps),
                "run_seconds_median": round(statistics.median(executions), 2),
                "between_runs_seconds_median": round(statistics.median(gaps), 2) if gaps else 0.0,
                "first_run_started_after_seconds": round(runs[0].start_time - launched_at, 1),
                "velocity_window": velocity_reads_its_window(work, dates[-1]),
            }


def run_dates(tags) -> list[dt.date]:
    """The business dates a run built: its partition, or every date of its range (site-day keys,
    "2026-01-05|WH-01"); none for a run without partitions (the SKU master's)."""
    if "dagster/asset_partition_range_start" in tags:
        first = site_day_of(tags["dagster/asset_partition_range_start"]).business_date
        last = site_day_of(tags["dagster/asset_partition_range_end"]).business_date
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    if "dagster/partition" in tags:
        return [site_day_of(tags["dagster/partition"]).business_date]
    return []


def through_the_cli(dates: list[dt.date], work: Path, urls: dict[str, str]) -> dict:
    env = platform_env(work, urls)
    started = time.perf_counter()
    done = subprocess.run(
        [EXE, "run", "--from", dates[0].isoformat(), "--to", dates[-1].isoformat(), "--summary", str(work / "summary.json")],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    summary = json.loads((work / "summary.json").read_text())
    return {
        "path": "velocity-platform run (same job, day by day, one process)",
        "partitions": len(dates),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "exit_code": done.returncode,
        "succeeded": summary["partitions_succeeded"],
        "velocity_window": velocity_reads_its_window(work, dates[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--cli", action="store_true", help="also time `velocity-platform run` over the same range")
    parser.add_argument("--world", choices=sorted(WORLDS), default="demo", help="demo (2k SKUs) or scenario M")
    parser.add_argument(
        "--backfill-pass-s", type=int, default=None,
        help="the daemon's pass over a backfill (default: Dagster's fixed 30 s; benchmarks/daemon.py), to see what the passes cost",
    )
    args = parser.parse_args(argv)
    use_world(args.world)
    dates = [START + dt.timedelta(days=i) for i in range(args.days)]
    root = Path(tempfile.mkdtemp(prefix="backfill-quarter-"))
    results = []
    for path, run in (("ui", through_the_ui), ("cli", through_the_cli)):
        if path == "cli" and not args.cli:
            continue
        work = root / path
        work.mkdir()
        simulators, urls = start_simulators(work)
        try:
            log(f"{path}: {len(dates)} business dates {dates[0]} .. {dates[-1]} (work dir {work})")
            results.append(through_the_ui(dates, work, urls, args.backfill_pass_s) if path == "ui" else run(dates, work, urls))
        finally:
            for process in simulators:
                process.terminate()
            for process in simulators:
                process.wait(30)
    print(json.dumps({"world": args.world, "skus_and_lines_per_day": WORLDS[args.world], "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
