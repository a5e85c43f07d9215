"""`velocity-platform bench --scenario network`: a backfill of W warehouses x D business days
through dagster-webserver + dagster-daemon, its steps on N Celery workers.

    velocity-platform bench --scenario network --workers 2 --warehouses 4 --days 5 [--world demo] --json PATH

Made of real parts, as velocity_platform_tests/workers/cluster.py makes a Celery deployment:
Dagster storage and the operational store on fresh PostgreSQL databases (deploy/dagster.yaml),
RabbitMQ with a queue of its own, `VELOCITY_EXECUTOR=celery`, N `velocity-platform worker
--concurrency 1` subprocesses, the simulators as processes serving one network of W sites
(benchmarks/backfill_quarter.py's world: `demo` or scenario `M`, 20,000 SKUs and 300,000 lines a
day per site), the tables in one Delta lake every worker writes.

Why the bench writes its own dagster.yaml (deploy/dagster.yaml with two figures raised): the pool
`duckdb` (every asset is in it, granularity run) admits one run at a time, because a site's dates
must be built in order. That is what keeps one backfill's runs in order; it also keeps a second
worker idle. Here each site gets a backfill of its own whose runs carry `velocity/warehouse: site`
(a backfill's tags are copied onto its runs; checked below), so the existing limit of one run per
unique `velocity/warehouse` keeps each site's dates in order, and the pool is raised to W slots
(set in the instance before the daemon starts, as LocalDeployment.start does) and the backfill tag
limit from 2 to W, so W sites' runs can run at once. Checked afterwards: no two runs of one site
overlapped in time (`same_site_overlaps`, must be 0) and each site's runs went oldest date first.

Figures: wall clock from the first launch to the last run finished; runs and runs succeeded; the
steps each worker ran (from dagster-celery's engine events, velocity_platform/workers.py
step_workers); the sum of the `lake_commit_retries` materialization metadata; the outbox's
directives and those acknowledged; directives the WMS applied more than once (its /v1/stats
`applied_per_key`, as the worker tests check "applied once"); ERP lines minus raw_transactions
rows, summed over the site-days (`lost_lines`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml

from benchmarks import backfill_quarter as quarter
from benchmarks.deployment import PROJECT, LocalDeployment, wait_until
from benchmarks.harness import deployment_env, log, tables_in
from benchmarks.real_parts import BROKER_URL, Worker, broker_unreachable, delete_queue, fresh_database, postgres_unreachable, wait_for_workers

# A backfill's status once the daemon has nothing more to do for it.
FINISHED_BACKFILL = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


class Unavailable(RuntimeError):
    """A real part (PostgreSQL, RabbitMQ) cannot be reached."""


def site_ids(n: int) -> list[str]:
    return [f"WH-{i:02d}" for i in range(1, n + 1)]


def bench_dagster_yaml(warehouses: int) -> str:
    """deploy/dagster.yaml with room for one run of each site at once (see the module's docstring)."""
    config = yaml.safe_load((PROJECT / "deploy" / "dagster.yaml").read_text())
    runs = config["concurrency"]["runs"]
    runs["max_concurrent_runs"] = max(runs.get("max_concurrent_runs", 1), warehouses)
    for limit in runs["tag_concurrency_limits"]:
        if limit["key"] == "dagster/backfill":
            limit["limit"] = max(limit["limit"], warehouses)
    return yaml.safe_dump(config, sort_keys=False)


def order_by_site(records) -> dict:
    """Per site: runs that overlapped another run of the site, and whether its dates went oldest first."""
    by_site: dict[str, list] = {}
    for record in records:
        by_site.setdefault(record.dagster_run.tags.get("velocity/warehouse"), []).append(record)
    overlaps, in_order = 0, {}
    for site, runs in by_site.items():
        runs.sort(key=lambda r: r.start_time)
        overlaps += sum(b.start_time < a.end_time for a, b in zip(runs, runs[1:]))
        # An asset backfill runs a range in steps of the graph (roots, then the rest), each its
        # own run over the same dates: in order is each run's first date no earlier than the last's.
        firsts = [min(dates) for dates in (quarter.run_dates(r.dagster_run.tags) for r in runs) if dates]
        in_order[site] = firsts == sorted(firsts)
    return {"same_site_overlaps": overlaps, "sites_in_date_order": in_order}


def lake_commit_retries(instance, run_id: str) -> int:
    import dagster as dg

    total = 0
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        value = record.dagster_event.event_specific_data.materialization.metadata.get("lake_commit_retries")
        total += int(value.value) if value is not None else 0
    return total


def lost_lines(work: Path, erp_url: str, sites: list[str], dates: list[dt.date]) -> dict:
    """ERP lines minus raw_transactions rows, per site-day (only the site-days that differ) and summed."""
    headers = {"Authorization": f"Bearer {quarter.TOKENS['VELOCITY_ERP_TOKEN']}"}
    differ, total = {}, 0
    for site in sites:
        tables = tables_in(work, site)
        for day in dates:
            erp = httpx.get(
                f"{erp_url}/v1/transactions/count", params={"business_date": day.isoformat(), "warehouse_id": site}, headers=headers, timeout=300
            ).json()["lines"]
            raw = tables.read("raw_transactions", day, day).height
            if erp != raw:
                differ[f"{day}|{site}"] = erp - raw
            total += erp - raw
    return {"lost_lines": total, "lost_lines_by_site_day": differ}


def wms_duplicates(wms_url: str) -> dict:
    stats = httpx.get(f"{wms_url}/v1/stats", headers={"Authorization": f"Bearer {quarter.TOKENS['VELOCITY_WMS_TOKEN']}"}, timeout=60).json()
    applied = stats["applied_per_key"]
    return {"wms_applied": sum(applied.values()), "duplicates": sum(n - 1 for n in applied.values() if n > 1)}


def outbox_figures(store_url: str) -> dict:
    from velocity_platform.connectors.state import OperationalStore

    store = OperationalStore(store_url, migrate=False)
    try:
        rows = store.outbox()
    finally:
        store.dispose()
    return {"directives": len(rows), "directives_acked": sum(row.status == "acked" for row in rows)}


def run_network_backfill(
    json_path: Path | None = None,
    workers: int = 2,
    warehouses: int = 2,
    days: int = 3,
    world: str = "M",
    days_per_run: int | None = None,
    work: Path | None = None,
    deadline_s: float = 3 * 3600,
) -> dict:
    for reason in (postgres_unreachable(), broker_unreachable(BROKER_URL)):
        if reason:
            raise Unavailable(reason)
    quarter.use_world(world)
    sites = site_ids(warehouses)
    dates = [quarter.START + dt.timedelta(days=n) for n in range(days)]
    work = work or Path(tempfile.mkdtemp(prefix="bench-network-"))
    work.mkdir(parents=True, exist_ok=True)
    queue = f"velocity-bench-{uuid.uuid4().hex[:8]}"
    saved = dict(os.environ)
    log(f"network: {warehouses} site(s) x {days} day(s) of world {world} on {workers} worker(s) (work dir {work})")
    try:
        with ExitStack() as stack:
            dagster_db = stack.enter_context(fresh_database("bench_dagster"))
            store_db = stack.enter_context(fresh_database("bench_ops"))
            simulators, urls = quarter.start_simulators(work, sites)
            stack.callback(_stop, simulators)
            stack.callback(delete_queue, queue)
            extra = {
                "DAGSTER_PG_URL": dagster_db.render_as_string(hide_password=False),
                "VELOCITY_STORE_URL": store_db.render_as_string(hide_password=False),
                "VELOCITY_EXECUTOR": "celery",
                "VELOCITY_CELERY_BROKER_URL": BROKER_URL,
                "VELOCITY_CELERY_QUEUE": queue,
            }
            if days_per_run:
                extra["VELOCITY_BACKFILL_DAYS_PER_RUN"] = str(days_per_run)
            env = deployment_env(work, urls, quarter.TOKENS, bench_dagster_yaml(warehouses), **extra)
            os.environ.update(env)  # the instance this process reads is the deployment's

            pool = []
            for k in range(1, workers + 1):
                state = work / f"worker-{k}"
                state.mkdir()
                worker_env = {**env, "VELOCITY_STATE_DIR": str(state), "DAGSTER_HOME": str(state / "dagster_home")}
                pool.append(Worker(f"worker-{k}", queue, worker_env, state / "worker.log", concurrency=1).start())
                stack.callback(pool[-1].stop)
            deployment = stack.enter_context(LocalDeployment(env, work, pool_slots=warehouses))
            wait_for_workers(pool)
            return _measure(deployment, pool, sites, dates, work, urls, env, json_path, world, deadline_s)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _stop(processes) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


def _measure(deployment, pool, sites, dates, work, urls, env, json_path, world, deadline_s) -> dict:
    import dagster as dg

    from velocity_platform.connectors import dagster_webserver as webserver
    from velocity_platform.workers import step_workers

    webserver.add_warehouse_partitions(deployment.url, sites)
    launched = time.perf_counter()
    backfills = {
        site: webserver.launch_backfill(
            deployment.url,
            webserver.site_day_keys(dates, [site]),
            title=f"bench network {dates[0]} .. {dates[-1]} {site}",
            tags={"velocity/warehouse": site},
        )
        for site in sites
    }
    deployment.start_daemon()
    with dg.DagsterInstance.get() as instance:

        def runs_of_backfills():
            return [r for b in backfills.values() for r in instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": b}))]

        def finished():
            if not all(deployment.backfill_status(b) in FINISHED_BACKFILL for b in backfills.values()):
                return None
            records = runs_of_backfills()
            return records if records and all(r.dagster_run.is_finished for r in records) else None

        records = wait_until("the backfills to finish", finished, deadline_s=deadline_s, poll_s=2)
        wall = time.perf_counter() - launched
        steps = Counter()
        for record in records:
            for workers_of_step in step_workers(instance, record.dagster_run.run_id).values():
                steps[workers_of_step[-1]] += 1
        site_of_backfill = {b: s for s, b in backfills.items()}
        report = {
            "scenario": "network",
            "world": world,
            "skus_and_lines_per_day": list(quarter.WORLDS[world]),
            "workers": len(pool),
            "warehouses": len(sites),
            "days": len(dates),
            "dates": [dates[0].isoformat(), dates[-1].isoformat()],
            "days_per_run": int(env.get("VELOCITY_BACKFILL_DAYS_PER_RUN") or 0) or None,
            "wall_s": round(wall, 1),
            "runs": len(records),
            "runs_succeeded": sum(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records),
            "runs_with_their_site_tag": sum(
                r.dagster_run.tags.get("velocity/warehouse") == site_of_backfill[r.dagster_run.tags["dagster/backfill"]] for r in records
            ),
            "steps_by_worker": dict(sorted(steps.items())),
            "lake_commit_retries": sum(lake_commit_retries(instance, r.dagster_run.run_id) for r in records),
            **order_by_site(records),
        }
    report.update(outbox_figures(env["VELOCITY_STORE_URL"]))
    report.update(wms_duplicates(urls["VELOCITY_WMS_URL"]))
    report.update(lost_lines(work, urls["VELOCITY_ERP_URL"], sites, dates))
    report.update({"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]})
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2), file=sys.stdout, flush=True)
    return report
