"""`velocity-platform bench --scenario deltas`: ERP commit to WMS acknowledgement, measured.

Every phase starts the ERP simulator, the WMS simulator and `velocity-platform deltas` as separate
processes on loopback (a fresh store each time), commits order documents to the ERP at a fixed
rate (open loop: document i leaves at t0 + i / rate, whatever the answers do), with 1-3 lines a
document and 5% of the lines for a new product registered in the SKU master beforehand and never
slotted, then waits until the outbox is empty and reads the WMS's assignments:

- latency of each exception: the WMS's `assigned_at` (when it applied the first slot, in ms)
  minus the ERP's `created_at` of the document that ordered it; p50 / p95 / p99;
- lost: exception SKUs without a location once the service has drained (deadline 60 s);
- duplicates: keys the WMS applied more than once, plus directives it refused (a second first
  slot for a SKU already slotted would be refused);
- the service's CPU (seconds, and share of one core over the phase) and its peak RSS (VmHWM).

Phases: 50, 500 and 2,000 documents a second for `--duration` seconds each (60 by default), a
burst (`--burst` documents at once, 5,000 by default), and 500 a second again with 5% transport
faults (ERP: 2.5% 5xx, 2.5% dropped connections; WMS: 2.5% 5xx, 2.5% commits whose answer is
lost). `--soak SECONDS` runs one long 500/s phase instead (RSS sampled every 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import table_paths
from velocity_platform.simulators.serve import free_port

ERP_TOKEN, WMS_TOKEN = "bench-erp-token", "bench-wms-token"
SEED, SKUS = 7, 2000
# History far in the past: everything the service reads is what the bench commits.
HISTORY_START, HISTORY_DAYS = dt.date(2024, 1, 1), 30
# 40 aisles x 60 bays x 2 sides x 6 levels = 28,800 locations: room for every first slot of a phase.
LAYOUT = {"aisles": 40, "bays_per_side": 60, "levels": 6}
EXCEPTION_SHARE = 0.05
DRAIN_DEADLINE_S = 60.0
SENDERS = 128  # documents in flight to the ERP at most


@dataclass
class PhaseResult:
    name: str
    rate_per_s: float  # documents per second asked for (0 for the burst)
    achieved_per_s: float  # documents per second the ERP accepted
    documents: int
    lines: int
    exceptions: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lost: int
    duplicates: int
    cpu_s: float
    cpu_share_of_core: float
    peak_rss_mb: float
    faults: str = "none"
    batches: int = 0  # ERP reads that returned documents (the service's batch_processing_duration_seconds count)
    batch_mean_ms: float | None = None  # their mean processing time: parse, lookup, validation, judging, the store transaction
    # What shared the cores with the service: both simulators and this load driver, in cores
    # (CPU seconds over the phase's seconds); with 2 cores, service + others near 2 is a full machine.
    others_cores: float | None = None
    erp_simulator_cores: float | None = None  # the ERP simulator's share of that (one process, one event loop)
    # Where the exceptions' time went (the service's delta_exception_stage_seconds): per stage,
    # the mean and the 95th percentile (read from the histogram's buckets, so a bucket bound) in ms.
    stages_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    rss_samples_mb: list[float] = field(default_factory=list)


# --- processes ---------------------------------------------------------------------------------


def serve_simulator(system: str, port: int, faults: dict) -> None:
    """Entry point of a simulator process (python -m benchmarks.deltas serve erp|wms PORT FAULTS)."""
    from velocity_platform.simulators.erp import ErpConfig, create_erp_app
    from velocity_platform.simulators.serve import run_foreground
    from velocity_platform.simulators.wms import WmsConfig, create_wms_app

    world = {"seed": SEED, "skus": SKUS, "start": HISTORY_START, "days": HISTORY_DAYS}
    if system == "erp":
        app = create_erp_app(ErpConfig(**world, token=ERP_TOKEN, **faults))
    else:
        app = create_wms_app(WmsConfig(**world, **LAYOUT, token=WMS_TOKEN, **faults))
    run_foreground(app, port=port)


def wait_http(url: str, token: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


class Stack:
    """ERP, WMS and the service as processes; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, root: Path, erp_faults: dict, wms_faults: dict):
        self.root = root
        self.erp_port, self.wms_port = free_port(), free_port()
        self.erp_faults, self.wms_faults = erp_faults, wms_faults
        self.processes: list[subprocess.Popen] = []
        self.service: subprocess.Popen | None = None
        self.metrics_port = free_port()

    def batch_figures(self) -> tuple[int, float | None]:
        """(batches, mean processing ms) from the service's own histogram, summed over its sites."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "batch_processing_duration_seconds":
                for sample in family.samples:
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
        count = int(values.get("batch_processing_duration_seconds_count", 0))
        total = values.get("batch_processing_duration_seconds_sum", 0.0)
        return count, round(total / count * 1000, 1) if count else None

    def stage_figures(self) -> dict[str, dict[str, float | None]]:
        """Per stage of an exception: mean and p95 ms from the service's stage histogram (the
        p95 is the upper bound of the bucket it falls in)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        buckets: dict[str, list[tuple[float, float]]] = {}
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "delta_exception_stage_seconds":
                continue
            for sample in family.samples:
                stage = sample.labels["stage"]
                if sample.name.endswith("_bucket"):
                    buckets.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_sum"):
                    sums[stage] = sample.value
                elif sample.name.endswith("_count"):
                    counts[stage] = sample.value
        figures = {}
        for stage in ("read", "erp", "record", "queue", "wms"):
            count = counts.get(stage, 0)
            if not count:
                continue
            p95 = next((le for le, cumulative in sorted(buckets[stage]) if cumulative >= 0.95 * count), None)
            figures[stage] = {"mean": round(sums[stage] / count * 1000, 1), "p95": None if p95 is None else p95 * 1000}
        return figures

    def __enter__(self) -> Stack:
        for system, port, faults in (("erp", self.erp_port, self.erp_faults), ("wms", self.wms_port, self.wms_faults)):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.deltas", "serve", system, str(port), json.dumps(faults)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_http(f"{self.erp_url}/healthz", ERP_TOKEN)
        wait_http(f"{self.wms_url}/healthz", WMS_TOKEN)
        return self

    @property
    def erp_url(self) -> str:
        return f"http://127.0.0.1:{self.erp_port}"

    @property
    def wms_url(self) -> str:
        return f"http://127.0.0.1:{self.wms_port}"

    def start_service(self) -> None:
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "VELOCITY_ERP_URL": self.erp_url,
            "VELOCITY_WMS_URL": self.wms_url,
            "VELOCITY_ERP_TOKEN": ERP_TOKEN,
            "VELOCITY_WMS_TOKEN": WMS_TOKEN,
            "VELOCITY_STORE_URL": f"sqlite:///{self.root / 'operational.sqlite'}",
            **table_paths(self.root),
            "VELOCITY_STATE_DIR": str(self.root),
            "DAGSTER_HOME": str(home),
            "VELOCITY_DELTAS_METRICS_PORT": str(self.metrics_port),
        }
        self.service = subprocess.Popen(
            [str(Path(sys.executable).parent / "velocity-platform"), "deltas"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(self.root / "service.log", "w"),  # noqa: SIM115  # closed with the process
            text=True,
        )
        for line in self.service.stdout:
            if "deltas: ready" in line:
                threading.Thread(target=self.service.stdout.read, daemon=True).start()
                return
        raise RuntimeError(f"velocity-platform deltas exited ({self.service.wait()}); see {self.root / 'service.log'}")

    def __exit__(self, *exc: object) -> None:
        for process in ([self.service] if self.service else []) + self.processes:
            process.send_signal(signal.SIGTERM)
        for process in ([self.service] if self.service else []) + self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field_name: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    documents: list[dict]  # the documents to commit, in order
    exception_skus: list[str]


def plan_load(documents: int, rng: random.Random, slotted: list[str], prefix: str) -> Load:
    planned, exceptions = [], []
    for n in range(documents):
        lines = []
        for line_no in range(1, rng.randint(1, 3) + 1):
            if rng.random() < EXCEPTION_SHARE:
                sku = f"{prefix}{len(exceptions):06d}"
                exceptions.append(sku)
            else:
                sku = rng.choice(slotted)
            lines.append({"line_no": line_no, "sku_id": sku, "quantity": rng.randint(1, 4), "uom": "EA"})
        planned.append({"txn_id": f"SO-BENCH-{prefix}{n:07d}", "txn_type": "ORDER", "customer_id": "C-0001", "lines": lines})
    return Load(planned, exceptions)


async def register(erp: httpx.AsyncClient, wms_url: str, skus: list[str]) -> None:
    """Register the new products in the ERP's SKU master and the WMS's item master, a thousand
    per request (not timed: the products exist before they are ordered)."""
    async with httpx.AsyncClient(base_url=wms_url, headers={"Authorization": f"Bearer {WMS_TOKEN}"}, timeout=60) as wms:
        for start in range(0, len(skus), 1000):
            records = [{"sku_id": sku} for sku in skus[start : start + 1000]]
            (await erp.post("/v1/skus", json=records)).raise_for_status()
            (await wms.post("/v1/items", json=records)).raise_for_status()


async def commit(
    erp: httpx.AsyncClient, load: Load, rate: float | None, duration_s: float | None = None
) -> tuple[dict[str, str], float, int]:
    """Commit the documents (at `rate` a second, or all at once when None) for at most
    `duration_s` (plus the requests in flight then); returns the created_at of each exception
    SKU's document, the seconds it took and how many documents were committed."""
    created: dict[str, str] = {}
    exception_of = {}
    for document in load.documents:
        for line in document["lines"]:
            if line["sku_id"].startswith("NEW"):
                exception_of.setdefault(document["txn_id"], []).append(line["sku_id"])
    started = time.perf_counter()
    deadline = started + duration_s if duration_s else None
    committed = [0]
    next_index = [0]

    async def sender() -> None:
        # A bounded pool of senders takes the documents in order, each leaving at its due time:
        # an open-loop schedule without a coroutine (and a timer) per document.
        while next_index[0] < len(load.documents):
            index = next_index[0]
            next_index[0] += 1
            if rate:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if deadline is not None and time.perf_counter() > deadline:
                return  # the phase's time is up: a machine that cannot take the rate commits fewer
            document = {**load.documents[index], "event_ts": dt.datetime.now(dt.UTC).isoformat()}
            for attempt in range(5):
                try:
                    answer = await erp.post("/v1/transactions", json=document)
                    break
                except httpx.TransportError:
                    if attempt == 4:
                        raise
            answer.raise_for_status()
            committed[0] += 1
            for sku in exception_of.get(document["txn_id"], []):
                created[sku] = answer.json()["created_at"]

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return created, time.perf_counter() - started, committed[0]


def ms(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


# --- a phase -------------------------------------------------------------------------------------


def run_phase(name: str, rate: float | None, documents: int, faults: str, soak_sample_s: float | None = None) -> PhaseResult:
    erp_faults, wms_faults = {}, {}
    if faults != "none":
        erp_faults = {"fault_rate_5xx": 0.025, "fault_rate_drop": 0.025}
        wms_faults = {"fault_rate_5xx": 0.025, "fault_rate_commit_then_drop": 0.025}
    rng = random.Random(hash(name) & 0xFFFF)
    with tempfile.TemporaryDirectory(prefix="bench-deltas-") as tmp, Stack(Path(tmp), erp_faults, wms_faults) as stack:
        wms = httpx.Client(base_url=stack.wms_url, headers={"Authorization": f"Bearer {WMS_TOKEN}"}, timeout=60)
        slotted = [r["sku_id"] for r in wms.get("/v1/slotting/assignments", params={"limit": 10000}).json()["records"]]
        load = plan_load(documents, rng, slotted, "NEW-")
        print(f"  {name}: {documents:,} documents, {len(load.exception_skus):,} exceptions; registering the new SKUs", file=sys.stderr)

        async def drive() -> tuple[dict[str, str], float, int]:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
            async with httpx.AsyncClient(
                base_url=stack.erp_url, headers={"Authorization": f"Bearer {ERP_TOKEN}"}, timeout=60, limits=limits
            ) as erp:
                await register(erp, stack.wms_url, load.exception_skus)
                stack.start_service()
                pid = stack.service.pid
                cpu_before[0] = cpu_seconds(pid)
                others_before[0] = others_cpu()
                return await commit(erp, load, rate, duration_s=documents / rate if rate else None)

        cpu_before, others_before = [0.0], [{}]

        def others_cpu() -> dict[str, float]:
            """CPU seconds so far of the ERP simulator, the WMS simulator and this driver."""
            driver = resource.getrusage(resource.RUSAGE_SELF)
            erp, wms_process = (cpu_seconds(p.pid) for p in stack.processes)
            return {"erp": erp, "wms": wms_process, "driver": driver.ru_utime + driver.ru_stime}
        samples: list[float] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(soak_sample_s or 10.0):
                if stack.service is not None and stack.service.poll() is None:
                    samples.append(round(rss_mb(stack.service.pid, "VmRSS"), 1))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        created, seconds, committed = asyncio.run(drive())
        print(f"  {name}: {committed:,} documents committed in {seconds:.1f} s ({committed / seconds:,.0f}/s); draining", file=sys.stderr)
        wanted = set(created)  # the exceptions of the documents committed
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        assigned: dict[str, dict] = {}
        while time.monotonic() < deadline:
            records = []
            cursor = None
            while True:
                params = {"limit": 10000, **({"cursor": cursor} if cursor else {})}
                page = wms.get("/v1/slotting/assignments", params=params).json()
                records += page["records"]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assigned = {r["sku_id"]: r for r in records if r["sku_id"] in wanted}
            if len(assigned) == len(wanted):
                break
            time.sleep(0.5)
        stop_sampling.set()
        batches, batch_mean_ms = stack.batch_figures()
        stages = stack.stage_figures()
        pid = stack.service.pid
        cpu = cpu_seconds(pid) - cpu_before[0]
        others = {name: used - others_before[0][name] for name, used in others_cpu().items()}
        peak = rss_mb(pid)
        stats = wms.get("/v1/stats").json()
        wms.close()
    latencies = np.array([ms(assigned[s]["assigned_at"]) - ms(created[s]) for s in assigned])
    duplicates = sum(1 for v in stats["applied_per_key"].values() if v > 1) + stats["rejected"]
    pct = np.percentile(latencies, [50, 95, 99]) if len(latencies) else [None, None, None]
    return PhaseResult(
        name=name,
        rate_per_s=rate or 0.0,
        achieved_per_s=round(committed / seconds, 1),
        documents=committed,
        lines=sum(len(d["lines"]) for d in load.documents[:committed]),
        exceptions=len(wanted),
        p50_ms=None if pct[0] is None else round(float(pct[0]), 1),
        p95_ms=None if pct[1] is None else round(float(pct[1]), 1),
        p99_ms=None if pct[2] is None else round(float(pct[2]), 1),
        max_ms=round(float(latencies.max()), 1) if len(latencies) else None,
        lost=len(wanted) - len(assigned),
        duplicates=duplicates,
        cpu_s=round(cpu, 1),
        cpu_share_of_core=round(cpu / seconds, 2),
        peak_rss_mb=round(peak, 1),
        faults=faults,
        batches=batches,
        batch_mean_ms=batch_mean_ms,
        rss_samples_mb=samples,
        stages_ms=stages,
        others_cores=round(sum(others.values()) / seconds, 2),  # same measure as cpu_share_of_core
        erp_simulator_cores=round(others["erp"] / seconds, 2),
    )


def run_deltas_benchmark(json_path: Path | None, duration_s: float = 60.0, burst: int = 5000, soak_s: float | None = None) -> list[PhaseResult]:
    started = time.perf_counter()
    load_before = os.getloadavg()
    if soak_s:
        phases = [("soak 500/s", 500.0, int(500 * soak_s), "none")]
    else:
        phases = [
            ("50/s", 50.0, int(50 * duration_s), "none"),
            ("500/s", 500.0, int(500 * duration_s), "none"),
            ("2000/s", 2000.0, int(2000 * duration_s), "none"),
            ("burst", None, burst, "none"),
            ("500/s with 5% transport faults", 500.0, int(500 * duration_s), "5% (ERP 5xx+drops, WMS 5xx+lost answers)"),
        ]
    results = []
    for name, rate, documents, faults in phases:
        result = run_phase(name, rate, documents, faults, soak_sample_s=10.0)
        results.append(result)
        print(
            f"{name:>32}: {result.achieved_per_s:>7,.0f} docs/s  {result.exceptions:>6,} exceptions  "
            f"p50 {result.p50_ms} ms  p95 {result.p95_ms} ms  p99 {result.p99_ms} ms  lost {result.lost}  "
            f"twice {result.duplicates}  CPU {result.cpu_s} s ({result.cpu_share_of_core:.0%} of a core)  "
            f"peak RSS {result.peak_rss_mb} MB  {result.batches} batches, {result.batch_mean_ms} ms each  "
            f"simulators + driver {result.others_cores} cores (ERP {result.erp_simulator_cores})\n{'':>34}stages, mean / p95 ms: "
            + "  ".join(f"{k} {v['mean']} / {v['p95']}" for k, v in result.stages_ms.items()),
            file=sys.stderr,
        )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(
                {
                    "scenario": "deltas",
                    "load_average_before": [round(x, 1) for x in load_before],
                    "load_average_after": [round(x, 1) for x in os.getloadavg()],
                    "cpus": os.cpu_count(),
                    "seconds": round(time.perf_counter() - started, 1),
                    "rates": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["serve"])
    parser.add_argument("system", choices=["erp", "wms"])
    parser.add_argument("port", type=int)
    parser.add_argument("faults", default="{}")
    args = parser.parse_args()
    serve_simulator(args.system, args.port, json.loads(args.faults))
