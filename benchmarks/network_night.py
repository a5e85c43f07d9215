"""One night of a network on one machine: 1, 3 and 10 warehouses of a scenario (default M:
20,000 SKUs, 300,000 lines a day per site), each site's night through Dagster in a fresh process
(time and peak RSS per site), then the network roll-up. What a network costs before its nights
are spread over machines.

    .venv/bin/python -m benchmarks.network_night [--scenario M] [--sites 1 3 10] [--json PATH]

The simulators serve the largest network once (each site its own demand mix and layout); each
network size gets a fresh DuckDB file and Dagster instance holding that many sites. History is
not timed: 89 days of daily demand are generated once, for the first site's mix, and written as
every site's (the timed night reads each site's own ERP day; only the velocity window's history
is shared), so a size's tables hold as many rows per site as a real network's would.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.harness import (
    BUSINESS_DATE,
    ERP_TOKEN,
    SCENARIOS,
    TIMEZONE,
    WMS_TOKEN,
    build_history,
    deployment_env,
    log,
    materialize_in_subprocess,
    simulators,
    tables_mb,
    write_history,
)


def site_ids(n: int) -> list[str]:
    return [f"WH-{i:02d}" for i in range(1, n + 1)]


def night_of(history, sizes: list[int], erp: str, wms: str) -> list[dict]:
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"velocity-network-{n}-") as tmp:
            work = Path(tmp)
            env = deployment_env(
                work,
                {"VELOCITY_ERP_URL": erp, "VELOCITY_WMS_URL": wms},
                {"VELOCITY_ERP_TOKEN": ERP_TOKEN, "VELOCITY_WMS_TOKEN": WMS_TOKEN},
                VELOCITY_WAREHOUSE_TZ=TIMEZONE,
                VELOCITY_FIRST_PARTITION_DATE=BUSINESS_DATE.replace(day=1).isoformat(),
            )
            os.environ.update(env)
            for site in site_ids(n):
                write_history(history, work, site)
            per_site = {}
            started = time.perf_counter()
            for k, site in enumerate(site_ids(n), start=1):
                run = materialize_in_subprocess(env, site)
                per_site[site] = {
                    "total_s": run["total_s"],
                    "peak_rss_mb": run["peak_rss_mb"],
                    "raw_lines": run["raw_lines"],
                    "checks_failed": run["checks_failed"],
                }
                log(f"  {n} site(s): [{k}/{n}] {site} {run['total_s']:.1f}s, peak RSS {run['peak_rss_mb']:,.0f} MB, {run['raw_lines']:,} lines")
            nights_s = time.perf_counter() - started
            rollup_s = _rollup(env) if n > 1 else None
            times = [s["total_s"] for s in per_site.values()]
            results.append(
                {
                    "sites": n,
                    "nights_wall_s": round(nights_s, 1),
                    "per_site_s": {"min": min(times), "median": sorted(times)[len(times) // 2], "max": max(times)},
                    "peak_rss_mb_max": max(s["peak_rss_mb"] for s in per_site.values()),
                    "rollup_s": rollup_s,
                    "tables_mb": tables_mb(work),
                    "per_site": per_site,
                }
            )
    return results


def _rollup(env: dict[str, str]) -> float:
    """The network roll-up of the night, in a fresh process as the nights were."""
    import subprocess
    import sys

    code = (
        "import time, dagster as dg; from velocity_platform.definitions import defs; "
        "from velocity_platform.batch import ROLLUP_JOB_NAME, QUIET_CONSOLE; "
        "job = defs().resolve_job_def(ROLLUP_JOB_NAME); t = time.perf_counter()\n"
        "with dg.DagsterInstance.get() as i:\n"
        f"    r = job.execute_in_process(instance=i, partition_key='{BUSINESS_DATE.isoformat()}', run_config=QUIET_CONSOLE)\n"
        "print(round(time.perf_counter() - t, 3) if r.success else -1)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.network_night", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="M")
    parser.add_argument("--sites", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    largest = max(args.sites)
    log(f"Network night: scenario {scenario.name} ({scenario.skus:,} SKUs, {scenario.lines_per_day:,} lines a day a site), sites {args.sites}")
    with simulators(scenario, site_ids(largest)) as (erp, wms):
        log("Preparing 89 days of history (not timed)...")
        history = build_history(scenario, erp)
        for site in site_ids(largest):  # the ERP generates each site's day before the clock starts
            httpx.get(
                f"{erp}/v1/transactions/count",
                params={"business_date": BUSINESS_DATE.isoformat(), "warehouse_id": site},
                headers={"Authorization": f"Bearer {ERP_TOKEN}"},
                timeout=300,
            )
        results = night_of(history, args.sites, erp, wms)
    report = {"scenario": scenario.name, "skus": scenario.skus, "lines_per_day_per_site": scenario.lines_per_day, "business_date": BUSINESS_DATE.isoformat(), "networks": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'sites':>5} {'nights s':>9} {'per site s (min/median/max)':>28} {'peak RSS MB':>12} {'roll-up s':>10} {'DuckDB MB':>10}")
    for r in results:
        t = r["per_site_s"]
        print(
            f"{r['sites']:>5} {r['nights_wall_s']:>9.1f} {t['min']:>10.1f} / {t['median']:>5.1f} / {t['max']:>5.1f}   "
            f"{r['peak_rss_mb_max']:>12,.0f} {r['rollup_s'] if r['rollup_s'] is not None else '-':>10} {r['tables_mb']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
