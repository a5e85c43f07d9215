"""One tick of erp_delta_sensor over 50,000 newly committed ERP documents.

    .venv/bin/python -m benchmarks.delta_sensor_tick [--skus 20000] [--lines-per-day 150000] [--records 50000]

1. The ERP simulator runs as its own process (its rendering is the upstream's time, not ours),
   with 2% late arrivals and a simulated clock.
2. Two business dates are built through `late_arrival_refresh` (ERP pull to sku_velocity) on a
   real instance and DuckDB file, while the ERP's clock stands at 03:00 the next morning. Not timed.
3. The clock moves on 33 hours. The sensor then ticks from a watermark at 03:00, capped at
   `--records` documents: reading the pages (HTTP and parsing), looking the candidates up in
   DuckDB, classifying in polars. Timed three times from the same cursor; the median is reported
   together with what the tick found.
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

from benchmarks.harness import _free_port, _wait_healthy

TOKEN = "bench-erp-token"
FIRST = dt.date(2026, 6, 9)
BUILT = [FIRST, FIRST + dt.timedelta(days=1)]
BUILT_AT = dt.datetime.combine(BUILT[-1] + dt.timedelta(days=1), dt.time(2), tzinfo=dt.UTC)  # 03:00 BST
LOOK_AT = BUILT_AT + dt.timedelta(hours=33)


def start_erp(skus: int, lines_per_day: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    config = (
        f"ErpConfig(seed=42, skus={skus}, lines_per_day={lines_per_day}, start='{FIRST - dt.timedelta(days=30)}', "
        f"days=40, late_arrival_rate=0.02, now='{BUILT_AT.isoformat()}', token='{TOKEN}', max_limit=10000)"
    )
    code = (
        "from velocity_platform.simulators.erp import ErpConfig, create_erp_app;"
        "from velocity_platform.simulators.serve import run_foreground;"
        f"run_foreground(create_erp_app({config}), port={port})"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, [process])
    return process, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--lines-per-day", type=int, default=150_000)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="delta-tick-"))
    (work / "dagster_home").mkdir()
    (work / "dagster_home" / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    erp, url = start_erp(args.skus, args.lines_per_day)
    os.environ.update(
        {
            "DAGSTER_HOME": str(work / "dagster_home"),
            "VELOCITY_DUCKDB_PATH": str(work / "velocity.duckdb"),
            "VELOCITY_STORE_URL": f"sqlite:///{work / 'operational.sqlite'}",
            "VELOCITY_ERP_URL": url,
            "VELOCITY_ERP_TOKEN": TOKEN,
            "VELOCITY_WMS_TOKEN": "unused",
            "VELOCITY_FIRST_PARTITION_DATE": (FIRST - dt.timedelta(days=30)).isoformat(),
        }
    )
    import dagster as dg

    from velocity_platform.definitions import defs
    from velocity_platform.defs.ops.sensors import ONE_MICROSECOND, DeltaCursor, erp_delta_sensor, read_committed
    from velocity_platform.defs.resources import ErpResource, OperationsResource, build_resources
    from velocity_platform.domain.deltas import delta_lines
    from velocity_platform.settings import Settings

    try:
        with dg.DagsterInstance.get() as instance:
            refresh = defs().resolve_job_def("late_arrival_refresh")
            for day in BUILT:
                started = time.perf_counter()
                result = refresh.execute_in_process(
                    instance=instance,
                    partition_key=day.isoformat(),
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
                print(f"built {day} in {time.perf_counter() - started:.1f}s (success={result.success})", file=sys.stderr)
            httpx.post(
                f"{url}/v1/admin/clock", json={"now": LOOK_AT.isoformat()}, headers={"Authorization": f"Bearer {TOKEN}"}
            ).raise_for_status()
            cursor = DeltaCursor(BUILT_AT).serialize()
            resources = {**build_resources(Settings.from_env()), "operations": OperationsResource(delta_max_records=args.records)}
            timings, result = [], None
            for _ in range(3):
                context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                started = time.perf_counter()
                result = erp_delta_sensor(context)
                timings.append(time.perf_counter() - started)
            # The same window read alone (HTTP and parsing), for the split of the tick's time.
            reads = []
            for _ in range(3):
                started = time.perf_counter()
                erp_resource = ErpResource(base_url=url, token=TOKEN)
                committed = read_committed(erp_resource, BUILT_AT + ONE_MICROSECOND, dt.datetime.now(dt.UTC), args.records)
                reads.append(time.perf_counter() - started)
            late = [r for r in result.run_requests if r.job_name == "late_arrival_refresh"]
            watermark = DeltaCursor.parse(result.cursor).committed_through
            figures = {
                "records_cap": args.records,
                "skus": args.skus,
                "lines_per_day": args.lines_per_day,
                "tick_seconds": [round(t, 2) for t in timings],
                "tick_seconds_median": round(statistics.median(timings), 2),
                "read_seconds_median": round(statistics.median(reads), 2),
                "documents": committed.documents.height,
                "lines": delta_lines(committed.documents, "Europe/London").height,
                "late_partitions": {r.partition_key: int(r.tags["velocity/late_documents"]) for r in late},
                "sku_master_refresh": any(r.job_name == "sku_master_refresh" for r in result.run_requests),
                "spike_observations": len(result.asset_events),
                "window": [BUILT_AT.isoformat(), watermark.isoformat()],
            }
            print(json.dumps(figures, indent=2))
    finally:
        erp.terminate()
        erp.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
