"""One business day of a scenario, through Dagster, measured against the alternatives.

    velocity-platform bench --scenario S|M|L [--json PATH]      (or: make bench)

1. The ERP and WMS simulators start as their own processes on free loopback ports (what they
   spend is the upstream's time, not ours).
2. History for the 90-day windows is prepared first and not timed: 89 days of daily demand
   straight from the synthetic generator (aggregated, never as raw lines), and the previous
   day's velocity, written as the I/O manager would and reported to the Dagster instance.
3. The business day D is materialized in a fresh process (so peak RSS is the platform's), the
   whole graph in one run on a real instance and DuckDB file. Stage times come from the run's
   event log: compute, input loading and output storing per step; the rest is Dagster's share.
4. On the same rows: the parse ceiling (orjson over the same response bytes), the per-record
   way (pydantic per line and dict aggregation, same rules), and the engine floor (the same
   domain computations over the frames already in memory, no Dagster and no I/O manager).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import polars as pl

from velocity_platform.connectors.erp_pages import raw_lines_from_pages, read_sku_page, sku_master_from_pages
from velocity_platform.domain.contracts import DAILY_SKU_DEMAND_SCHEMA, OrderLineRecord, conform
from velocity_platform.domain.history import daily_demand, to_sales_history
from velocity_platform.domain.pick_rate import with_pick_rates
from velocity_platform.domain.slotting import SlottingConfig, plan_directives, walk_costs_towards
from velocity_platform.domain.taxonomy import classify_skus, classify_window_totals, demand_per_sku_sql
from velocity_platform.domain.validation import validate_lines


@dataclass(frozen=True)
class Scenario:
    name: str
    skus: int
    lines_per_day: int


SCENARIOS = {
    "smoke": Scenario("smoke", 500, 5_000),  # the test suite's run of the harness, not a benchmark
    "S": Scenario("S", 5_000, 50_000),
    "M": Scenario("M", 20_000, 300_000),
    "L": Scenario("L", 100_000, 1_000_000),
}
SEED = 42
BUSINESS_DATE = dt.date(2026, 6, 10)  # a Wednesday: a full weekday
HISTORY_DAYS = 89
TIMEZONE = "Europe/London"
ERP_TOKEN, WMS_TOKEN = "bench-erp-token", "bench-wms-token"

STAGES = {
    "sku_master": "reference data (SKU master)",
    "wms_locations": "reference data (WMS locations)",
    "raw_transactions": "ERP pull",
    "validate_feed": "validation",
    "sales_history": "history mapping",
    "daily_sku_demand": "daily demand",
    "sku_velocity": "velocity",
    "slotting_directives": "directives",
    "wms_directive_acks": "WMS push",
    "slotting_shadow_report": "shadow report",
}
COMPUTE_STAGES = ("validate_feed", "sales_history", "daily_sku_demand", "sku_velocity", "slotting_directives")


def table_paths(work: Path) -> dict[str, str]:
    """Where a measured deployment keeps its tables: both stores under its folder, the one used
    chosen by VELOCITY_TABLE_STORE as everywhere (the lake unless told)."""
    return {"VELOCITY_LAKE_PATH": str(work / "lake"), "VELOCITY_DUCKDB_PATH": str(work / "velocity.duckdb")}


def deployment_env(
    work: Path, urls: dict[str, str], tokens: dict[str, str], dagster_yaml: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a measured deployment: this process's, the simulators' URLs and tokens,
    a fresh DAGSTER_HOME under `work` holding `dagster_yaml` (the repository's dagster.yaml unless
    given), the tables under `work` (table_paths), an SQLite operational store there, `extra` on top."""
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    project = Path(__file__).resolve().parents[1]
    (home / "dagster.yaml").write_text(dagster_yaml if dagster_yaml is not None else (project / "dagster.yaml").read_text())
    return {
        **os.environ,
        **tokens,
        **urls,
        "DAGSTER_HOME": str(home),
        **table_paths(work),
        "VELOCITY_STORE_URL": f"sqlite:///{work / 'operational.sqlite'}",
        **extra,
    }


def tables_in(work: Path, warehouse_id: str | None = None):
    """The warehouse tables of a measured deployment (see table_paths)."""
    from velocity_platform.connectors.object_store import is_remote
    from velocity_platform.defs.tables import WarehouseTables

    lake = os.environ.get("VELOCITY_TABLE_STORE", "lake") == "lake"
    paths = table_paths(work)
    # A deployment measured on a bucket (lake_vs_file --bucket) names it; a folder lake is under `work`.
    bucket = os.environ.get("VELOCITY_LAKE_PATH", "")
    lake_path = bucket if is_remote(bucket) else paths["VELOCITY_LAKE_PATH"]
    return WarehouseTables(database=paths["VELOCITY_DUCKDB_PATH"], lake_path=lake_path if lake else None, warehouse_id=warehouse_id)


def tables_mb(work: Path) -> float:
    """The size of a measured deployment's tables on disk, whichever store holds them."""
    paths = [Path(p) for p in table_paths(work).values()]
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return round(sum(f.stat().st_size for f in files) / 1e6, 1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- simulators as processes ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def simulators(scenario: Scenario, warehouses: list[str] | None = None):
    """The ERP and WMS simulators as processes; with `warehouses`, one network of those sites
    (same time zone, each its own demand and layout)."""
    start = BUSINESS_DATE - dt.timedelta(days=HISTORY_DAYS + 10)
    common = ["--seed", str(SEED), "--skus", str(scenario.skus), "--start", start.isoformat(), "--days", "101"]
    if warehouses:
        common += ["--warehouses", ",".join(warehouses)]
    exe = str(Path(sys.executable).with_name("velocity-platform"))
    env = {**os.environ, "VELOCITY_ERP_TOKEN": ERP_TOKEN, "VELOCITY_WMS_TOKEN": WMS_TOKEN}
    erp_port, wms_port = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [exe, "simulate", "erp", "--port", str(erp_port), "--lines-per-day", str(scenario.lines_per_day), *common],
            env=env,
        ),
        subprocess.Popen([exe, "simulate", "wms", "--port", str(wms_port), *common], env=env),
    ]
    urls = (f"http://127.0.0.1:{erp_port}", f"http://127.0.0.1:{wms_port}")
    try:
        for url in urls:
            _wait_healthy(url, procs)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _wait_healthy(url: str, procs: list[subprocess.Popen], deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a simulator exited during start-up")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a process we do not control; not a test
    raise RuntimeError(f"simulator at {url} did not become healthy in {deadline_s}s")


# --- history preparation (not timed) -----------------------------------------------------------


@dataclass(frozen=True)
class History:
    """D-89..D-1 daily demand and D-1 velocity of one site, ready to be written for any site."""

    days: list[dt.date]
    demand: pl.DataFrame
    velocity: pl.DataFrame
    master: pl.DataFrame


def build_history(scenario: Scenario, erp_url: str) -> History:
    from velocity_platform.connectors.erp import ErpClient
    from velocity_platform.simulators.catalog import UOMS, build_catalog, generate_day

    start = BUSINESS_DATE - dt.timedelta(days=HISTORY_DAYS + 10)
    catalog = build_catalog(SEED, scenario.skus, start, 101)
    days = [BUSINESS_DATE - dt.timedelta(days=k) for k in range(HISTORY_DAYS, 0, -1)]
    frames = []
    for index, day in enumerate(days, start=1):
        batch = generate_day(SEED, catalog, day, scenario.lines_per_day, TIMEZONE, malformed_rate=0.0)
        frames.append(_daily_demand_from_batch(batch, catalog, UOMS))
        if index % 15 == 0 or index == len(days):
            log(f"  history: {index}/{len(days)} days prepared")
    history = pl.concat(frames)
    with ErpClient(erp_url, ERP_TOKEN, timeout_s=60, page_limit=10_000) as client:
        master = sku_master_from_pages(client.skus(reader=read_sku_page))
    velocity = classify_skus(history, master, days[-1], history_start=days[0])
    return History(days, history, velocity, master)


def write_history(history: History, work: Path, warehouse_id: str = "WH-01") -> None:
    """Write the history as the I/O manager would, as `warehouse_id`'s, and report it."""
    from dagster import AssetKey, AssetMaterialization, DagsterInstance

    from velocity_platform.batch import ensure_warehouse_partitions
    from velocity_platform.defs.partitions import SiteDay

    site = pl.lit(warehouse_id).alias("warehouse_id")
    with tables_in(work).session() as tables:
        for table, frame in (("daily_sku_demand", history.demand), ("sku_velocity", history.velocity)):
            tables.replace(table, frame.with_columns(site), {warehouse_id: sorted(set(frame["business_date"].to_list()))})
    with DagsterInstance.get() as instance:
        ensure_warehouse_partitions(instance, [warehouse_id])
        for day in history.days:
            instance.report_runless_asset_event(
                AssetMaterialization(AssetKey("daily_sku_demand"), partition=str(SiteDay(warehouse_id, day).key))
            )
        instance.report_runless_asset_event(
            AssetMaterialization(AssetKey("sku_velocity"), partition=str(SiteDay(warehouse_id, history.days[-1]).key))
        )


def prepare_history(scenario: Scenario, erp_url: str, work: Path, warehouse_id: str = "WH-01") -> pl.DataFrame:
    """Write D-89..D-1 daily demand and D-1 velocity as the I/O manager would; report them."""
    history = build_history(scenario, erp_url)
    write_history(history, work, warehouse_id)
    return history.master


def _daily_demand_from_batch(batch, catalog, uoms) -> pl.DataFrame:
    doc_of_line = np.repeat(np.arange(batch.n_docs), np.diff(batch.line_start))
    lines = pl.DataFrame(
        {
            "txn_type": np.array(["ORDER", "RETURN", "ADJUSTMENT"])[batch.txn_type[doc_of_line]],
            "txn_id": doc_of_line,
            "sku_id": catalog.sku_ids[batch.sku],
            "quantity": batch.quantity.astype(np.float64),
            "uom": np.array(uoms)[batch.uom],
            "case_qty": catalog.case_qty[batch.sku],
            "pallet_qty": catalog.pallet_qty[batch.sku],
            "unit_cube_ft3": catalog.unit_cube_ft3[batch.sku],
        }
    )
    eaches = pl.col("quantity") * pl.when(pl.col("uom") == "CS").then(pl.col("case_qty")).when(
        pl.col("uom") == "PL"
    ).then(pl.col("pallet_qty")).otherwise(1)
    history = lines.with_columns(
        eaches.alias("quantity_eaches"), pl.lit(batch.business_date).alias("business_date"),
        pl.col("txn_id").cast(pl.String),
    )
    return conform(daily_demand(history), DAILY_SKU_DEMAND_SCHEMA)


# --- the timed run, in its own process ------------------------------------------------------------


def materialize_in_subprocess(env: dict[str, str], warehouse_id: str = "WH-01") -> dict:
    """The timed run (benchmarks.run_partition) in a process of its own, its figures, and its
    memory as seen from outside (`peak_rss_outside`): this process reads the child's RSS every
    5 ms, which no lock inside the child can hold up (the child's own sampler is a Python thread,
    blind while a call holds the GIL), and names the step whose window holds the peak."""
    from benchmarks.run_partition import RssSampler

    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run_partition", BUSINESS_DATE.isoformat(), warehouse_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    outside = RssSampler(pid=process.pid)
    outside.start()
    stdout, stderr = process.communicate()
    outside.stop()
    if process.returncode != 0:
        raise RuntimeError(f"the timed run failed:\n{stderr[-3000:]}")
    figures = json.loads(stdout.strip().splitlines()[-1])
    figures["peak_rss_outside"] = outside.where_peak({step: tuple(window) for step, window in figures["step_windows"].items()})
    return figures


# --- comparisons on the same rows ----------------------------------------------------------------


def fetch_pages(erp_url: str) -> list[tuple[str, bytes]]:
    from velocity_platform.connectors.erp import ErpClient

    with ErpClient(erp_url, ERP_TOKEN, timeout_s=120, page_limit=10_000) as client:
        return [(p.source_batch, p.body) for p in client.transaction_pages(BUSINESS_DATE, TIMEZONE)]


def parse_ceiling(pages: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    for _, body in pages:
        orjson.loads(body)
    return time.perf_counter() - started


def per_record_way(pages: list[tuple[str, bytes]], master: pl.DataFrame) -> tuple[float, int]:
    """The common way: pydantic per line collecting errors, then dict aggregation."""
    allowed = dict(zip(master["sku_id"].to_list(), master["uoms"].to_list(), strict=True))
    case = dict(zip(master["sku_id"].to_list(), master["case_qty"].to_list(), strict=True))
    pallet = dict(zip(master["sku_id"].to_list(), master["pallet_qty"].to_list(), strict=True))
    documents = [doc for _, body in pages for doc in orjson.loads(body)["records"]]
    started = time.perf_counter()
    valid, errors, seen = [], [], set()
    for doc in documents:
        header = {k: doc.get(k) for k in ("txn_id", "txn_type", "customer_id", "event_ts", "created_at")}
        for line in doc.get("lines") or [None]:
            record = {**header, **(line or {})}
            record = {k: (None if v is None else str(v)) for k, v in record.items()}
            try:
                parsed = OrderLineRecord.model_validate({k: v for k, v in record.items() if v is not None})
            except ValueError as exc:
                errors.append((record, str(exc)))
                continue
            if parsed.sku_id not in allowed or parsed.uom not in allowed[parsed.sku_id]:
                errors.append((record, "sku or uom"))
                continue
            key = (parsed.txn_id, parsed.line_no)
            if key in seen:
                errors.append((record, "duplicate"))
                continue
            seen.add(key)
            valid.append(parsed)
    demand: dict[str, dict[str, float]] = {}
    for line in valid:
        if line.txn_type != "ORDER":
            continue
        factor = case[line.sku_id] if line.uom == "CS" else pallet[line.sku_id] if line.uom == "PL" else 1
        row = demand.setdefault(line.sku_id, {"units": 0.0, "pick_lines": 0})
        row["units"] += line.quantity * factor
        row["pick_lines"] += 1
    return time.perf_counter() - started, len(valid) + len(errors)


def engine_floor(pages: list[tuple[str, bytes]], master: pl.DataFrame, work: Path) -> tuple[float, float]:
    """The same domain computations over frames already in memory: (validation only, all)."""
    import duckdb

    raw = raw_lines_from_pages(pages, BUSINESS_DATE).lines

    from velocity_platform.defs.wms.assets import latest_snapshot

    with tables_in(work).session(read_only=True, warehouse_id="WH-01") as tables:
        history = tables.read("daily_sku_demand", dt.date.min, BUSINESS_DATE - dt.timedelta(days=1))
        locations = latest_snapshot(tables.read("wms_locations"))
    seen = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    result = validate_lines(raw, master, seen)
    validation_s = time.perf_counter() - started
    sales = to_sales_history(result.valid, master)
    demand = daily_demand(sales)
    # The window sums as the platform does them, in DuckDB, here over the frames in memory.
    window = duckdb.connect()
    window.register("daily_sku_demand", pl.concat([history, demand]))
    totals = window.execute(demand_per_sku_sql("daily_sku_demand", BUSINESS_DATE)).pl()
    velocity = with_pick_rates(
        classify_window_totals(totals, master, BUSINESS_DATE, history["business_date"].min()),
        pl.concat([history.select("business_date", "sku_id", "pick_lines"), demand.select("business_date", "sku_id", "pick_lines")]),
        BUSINESS_DATE,
    )
    assignment = locations.filter(pl.col("sku_id").is_not_null()).select("sku_id", "location_id")
    orders = sales.filter(pl.col("txn_type") == "ORDER").select(pl.col("txn_id").alias("order_id"), "sku_id")
    walk_costs = walk_costs_towards(orders, velocity, locations, SlottingConfig())
    plan_directives(BUSINESS_DATE, velocity, locations, assignment, master, walk_costs=walk_costs)
    return validation_s, time.perf_counter() - started


# --- the whole benchmark ------------------------------------------------------------------------------


def run_benchmark(name: str, json_path: Path | None = None, compare: bool = True) -> dict:
    scenario = SCENARIOS[name]
    log(f"Scenario {name}: {scenario.skus:,} SKUs, {scenario.lines_per_day:,} order lines a day, day {BUSINESS_DATE}")
    with tempfile.TemporaryDirectory(prefix=f"velocity-bench-{name}-") as tmp, simulators(scenario) as (erp, wms):
        work = Path(tmp)
        env = deployment_env(
            work,
            {"VELOCITY_ERP_URL": erp, "VELOCITY_WMS_URL": wms},
            {"VELOCITY_ERP_TOKEN": ERP_TOKEN, "VELOCITY_WMS_TOKEN": WMS_TOKEN},
            VELOCITY_WAREHOUSE_TZ=TIMEZONE,
            VELOCITY_FIRST_PARTITION_DATE=(BUSINESS_DATE - dt.timedelta(days=120)).isoformat(),
        )
        os.environ.update(env)
        log("Preparing 89 days of history as daily demand (not timed)...")
        master = prepare_history(scenario, erp, work)
        httpx.get(f"{erp}/v1/transactions/count", params={"business_date": BUSINESS_DATE.isoformat()},
                  headers={"Authorization": f"Bearer {ERP_TOKEN}"}, timeout=120)  # the ERP generates the day
        log("Materializing the day through Dagster (timed, fresh process)...")
        run = materialize_in_subprocess(env)
        steps = run.pop("steps")
        report = {
            "scenario": name,
            "skus": scenario.skus,
            "lines_per_day": scenario.lines_per_day,
            "business_date": BUSINESS_DATE.isoformat(),
            **run,
            # stage -> seconds of wall time, plus Dagster's own share of the total
            "stages": {
                **{STAGES[k]: v["wall_s"] for k, v in steps.items() if k in STAGES},
                "asset checks": round(sum(v["wall_s"] for k, v in steps.items() if k not in STAGES), 3),
                "Dagster own share": run["dagster_overhead_s"],
            },
            "step_detail": steps,
        }
        if compare:
            log("Comparisons on the same rows...")
            pages = fetch_pages(erp)
            ceiling = parse_ceiling(pages)
            per_record_s, records = per_record_way(pages, master)
            validation_floor_s, floor_s = engine_floor(pages, master, work)
            stage = steps
            platform_compute = sum(stage[s]["compute_s"] for s in COMPUTE_STAGES)
            report["comparisons"] = {
                "parse_ceiling_s": round(ceiling, 3),
                "per_record_validation_and_aggregation_s": round(per_record_s, 3),
                "per_record_lines": records,
                "engine_floor_s": round(floor_s, 3),
                "engine_floor_validation_s": round(validation_floor_s, 3),
            }
            report["ratios"] = {
                "validation_vs_per_record": round(per_record_s / stage["validate_feed"]["compute_s"], 2),
                "compute_vs_floor": round(platform_compute / floor_s, 2),
                # Ingestion: the pull over HTTP, the parse and the flattening, up to the frame
                # handed to Dagster; and the same with the DuckDB write of the raw table.
                "ingest_vs_parse": round(stage["raw_transactions"]["compute_s"] / ceiling, 2),
                "ingest_with_store_vs_parse": round(stage["raw_transactions"]["wall_s"] / ceiling, 2),
            }
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return report


def format_report(report: dict) -> str:
    lines = [
        f"Scenario {report['scenario']}: {report['skus']:,} SKUs, {report['lines_per_day']:,} lines/day, "
        f"{report['raw_lines']:,} raw lines on {report['business_date']}",
        f"{'stage':<34}{'wall s':>8}{'compute s':>11}{'load s':>8}{'store s':>9}{'peak RSS MB':>13}",
    ]
    for key, label in STAGES.items():
        s = report["step_detail"].get(key)
        if s:
            lines.append(
                f"{label:<34}{s['wall_s']:>8.2f}{s['compute_s']:>11.2f}{s['load_s']:>8.2f}{s['store_s']:>9.2f}"
                f"{s.get('peak_rss_mb', 0):>13,.0f}"
            )
    lines += [
        f"{'asset checks':<34}{report['stages']['asset checks']:>8.2f}",
        f"{'Dagster own share':<34}{report['dagster_overhead_s']:>8.2f}",
        f"{'total':<34}{report['total_s']:>8.2f}   {report['rows_per_second']:,.0f} lines/s   "
        f"peak RSS {report['peak_rss_mb']:,.0f} MB ({report.get('rss_before_run_mb', 0):,.0f} MB before the run)",
    ]
    if "ratios" in report:
        r, c = report["ratios"], report["comparisons"]
        lines += [
            f"validation vs per-record pydantic loop: {r['validation_vs_per_record']:.1f}x faster "
            f"({c['per_record_validation_and_aggregation_s']:.2f}s)",
            f"compute vs engine floor: {r['compute_vs_floor']:.2f}x ({c['engine_floor_s']:.2f}s)",
            f"ingestion vs orjson parse ceiling: {r['ingest_vs_parse']:.2f}x ({c['parse_ceiling_s']:.2f}s), "
            f"{r['ingest_with_store_vs_parse']:.2f}x with the DuckDB write",
        ]
    return "\n".join(lines)
