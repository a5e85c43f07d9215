"""The lake against the DuckDB file, side by side in one run.

1. Two sites' nights at the same time on one machine: two processes, each materializing its own
   site's night (scenario S by default). On the file the second waits for the first's lock (they
   take turns); on the lake both write at once. Reported: each process's time, the wall time of
   the pair, the pair's wall against the sum of the two (1.0 = in turns), every site reconciled.
2. One night of each scenario on each store (the timed run of `velocity-platform bench`), in
   alternation: the night's time, the table writes' share of it, peak RSS. With `--bucket`, a
   third store: the lake in a bucket of moto's S3 server on loopback (a Python server: an upper
   bound on what the object-store protocol costs, not a figure for MinIO or AWS).

    .venv/bin/python -m benchmarks.lake_vs_file [--pair-scenario S|none] [--scenarios M L] [--bucket] [--json PATH]

History is generated once per scenario and written to each store before its timed night, as the
`bench` harness does; nothing of it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from benchmarks.harness import (
    ERP_TOKEN,
    SCENARIOS,
    TIMEZONE,
    WMS_TOKEN,
    build_history,
    deployment_env,
    log,
    materialize_in_subprocess,
    simulators,
    write_history,
)
from velocity_platform.simulators.object_store import S3Server

STORES = ("duckdb-file", "lake")
BUCKET = "lake-bucket"  # the lake, in an S3 bucket (--bucket)


def store_env(work: Path, store: str, erp: str, wms: str) -> dict[str, str]:
    """A measured deployment (harness.deployment_env) on `store`."""
    return deployment_env(
        work,
        {"VELOCITY_ERP_URL": erp, "VELOCITY_WMS_URL": wms},
        {"VELOCITY_ERP_TOKEN": ERP_TOKEN, "VELOCITY_WMS_TOKEN": WMS_TOKEN},
        VELOCITY_TABLE_STORE=store,
        VELOCITY_WAREHOUSE_TZ=TIMEZONE,
        VELOCITY_FIRST_PARTITION_DATE="2025-01-01",
    )


def _written(env: dict[str, str], work: Path, history, sites: list[str]) -> None:
    # write_history reads the store and the instance from this process's environment.
    os.environ.update(env)
    for site in sites:
        write_history(history, work, site)


def two_sites_at_once(scenario_name: str) -> dict:
    scenario = SCENARIOS[scenario_name]
    sites = ["WH-01", "WH-02"]
    results = {}
    with simulators(scenario, sites) as (erp, wms):
        history = build_history(scenario, erp)
        for store in STORES:
            with tempfile.TemporaryDirectory(prefix=f"velocity-pair-{store}-") as tmp:
                work = Path(tmp)
                env = store_env(work, store, erp, wms)
                _written(env, work, history, sites)
                log(f"{store}: two nights of scenario {scenario_name} at the same time ({', '.join(sites)})")

                def night(site: str, env=env) -> dict:
                    began = time.perf_counter()
                    figures = materialize_in_subprocess(env, site)
                    return {"began_s": began, "elapsed_s": round(time.perf_counter() - began, 2), "figures": figures}

                started = time.perf_counter()
                with ThreadPoolExecutor(len(sites)) as pool:
                    done = dict(zip(sites, pool.map(night, sites), strict=True))
                wall = time.perf_counter() - started
                results[store] = {
                    "wall_s": round(wall, 2),
                    "elapsed_s": {site: d["elapsed_s"] for site, d in done.items()},
                    # 1.0: one after the other; 0.5: wholly at the same time
                    "wall_over_sum": round(wall / sum(d["elapsed_s"] for d in done.values()), 2),
                    "raw_lines": {site: d["figures"]["raw_lines"] for site, d in done.items()},
                    "checks_failed": {site: d["figures"]["checks_failed"] for site, d in done.items()},
                    "table_write_s": {site: round(sum(d["figures"]["table_write_s"].values()), 2) for site, d in done.items()},
                }
                log(f"  {store}: {results[store]}")
    return results


def _store_env(work: Path, store: str, erp: str, wms: str, s3: S3Server | None) -> dict[str, str]:
    if store != BUCKET:
        return store_env(work, store, erp, wms)
    assert s3 is not None
    return {**store_env(work, "lake", erp, wms), **s3.environment, "VELOCITY_LAKE_PATH": s3.new_lake()}


def one_night_each(scenario_names: list[str], bucket: bool = False) -> dict:
    results = {}
    stores = (*STORES, BUCKET) if bucket else STORES
    with tempfile.TemporaryDirectory(prefix="velocity-s3-") as s3_dir, (S3Server(Path(s3_dir) / "moto.log") if bucket else nullcontext()) as s3:
        for name in scenario_names:
            results[name] = _nights_of(name, stores, s3)
    return results


def _nights_of(name: str, stores: tuple[str, ...], s3: S3Server | None) -> dict:
    """One night of scenario `name` on each store, on the same generated history."""
    results = {}
    with simulators(SCENARIOS[name]) as (erp, wms):
        history = build_history(SCENARIOS[name], erp)
        for store in stores:
            with tempfile.TemporaryDirectory(prefix=f"velocity-night-{name}-{store}-") as tmp:
                work = Path(tmp)
                env = _store_env(work, store, erp, wms, s3)
                _written(env, work, history, ["WH-01"])
                figures = materialize_in_subprocess(env)
                writes = round(sum(figures["table_write_s"].values()), 2)
                results[store] = {
                    "total_s": figures["total_s"],
                    "table_write_s": writes,
                    "peak_rss_mb": figures["peak_rss_mb"],
                    "peak_rss_sampled": figures["peak_rss_sampled"],
                    "peak_rss_outside": figures["peak_rss_outside"],
                    "raw_lines": figures["raw_lines"],
                    "checks_failed": figures["checks_failed"],
                    # Where the time and the memory go, step by step (the lake's peak is one step's).
                    "steps": {
                        step: {"wall_s": timing["wall_s"], "peak_rss_mb": timing.get("peak_rss_mb")}
                        for step, timing in figures["steps"].items()
                    },
                }
                log(f"{name} on {store}: {figures['total_s']:.1f} s, table writes {writes:.1f} s, {figures['peak_rss_mb']:.0f} MB")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair-scenario", default="S", choices=[*sorted(SCENARIOS), "none"], help="none: skip the pair")
    parser.add_argument("--scenarios", nargs="*", default=["M", "L"], choices=sorted(SCENARIOS))
    parser.add_argument("--bucket", action="store_true", help="also on a lake in an S3 bucket (moto's server on loopback)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pair = {} if args.pair_scenario == "none" else two_sites_at_once(args.pair_scenario)
    report = {"two_sites_at_once": pair, "one_night": one_night_each(args.scenarios, bucket=args.bucket)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
