"""The timed part of a benchmark: one partition of the nightly job, in a fresh process.

Prints one JSON line: total wall time, per-step wall/compute/load/store seconds read from the
run's event log, Dagster's own share (the wall time not spent in our code or the I/O manager),
lines per second and the peak RSS of this process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict

from benchmarks.memory import own_peak_rss_mb

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 1e6


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_MB


class RssSampler(threading.Thread):
    """Resident memory of a process (this one, or a child `pid`) every few milliseconds, so each
    step's peak can be named."""

    def __init__(self, interval_s: float = 0.005, pid: int | str = "self") -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.path = f"/proc/{pid}/statm"
        self.samples: list[tuple[float, float]] = []  # (unix time, RSS MB)
        self._done = threading.Event()

    def run(self) -> None:
        try:
            with open(self.path) as statm:
                while not self._done.is_set():
                    statm.seek(0)
                    self.samples.append((time.time(), int(statm.read().split()[1]) * _PAGE_MB))
                    self._done.wait(self.interval_s)
        except (OSError, IndexError, ValueError):  # a child that has gone: its samples are taken
            return

    def stop(self) -> None:
        self._done.set()
        self.join()

    def where_peak(self, windows: dict[str, tuple[float, float]]) -> dict:
        """The highest sample and the step whose window holds it ("between steps" if none)."""
        if not self.samples:
            return {"mb": 0.0, "during": None}
        at, mb = max(self.samples, key=lambda sample: sample[1])
        during = next((step for step, (start, end) in windows.items() if start <= at <= end), "between steps")
        return {"mb": round(mb, 1), "during": during}

    def peak_between(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)


def step_timings(
    instance, run_id: str, rss: RssSampler | None = None, windows: dict[str, tuple[float, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Per step: wall (start..success), load (start..last input loaded), store (output..handled)."""
    marks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        marks[entry.step_key][event.event_type_value].append(entry.timestamp)
    timings = {}
    for step, m in marks.items():
        start, end = m["STEP_START"][0], m["STEP_SUCCESS"][0] if m["STEP_SUCCESS"] else max(max(v) for v in m.values())
        loaded = max(m["LOADED_INPUT"], default=start)
        first_output = min(m["STEP_OUTPUT"], default=end)
        handled = max(m["HANDLED_OUTPUT"], default=first_output)
        timings[step] = {
            "wall_s": round(end - start, 3),
            "load_s": round(loaded - start, 3),
            "compute_s": round(first_output - loaded, 3),
            "store_s": round(max(0.0, handled - first_output), 3),
        }
        if windows is not None:
            windows[step] = (start, end)
        if rss is not None:
            timings[step]["peak_rss_mb"] = round(rss.peak_between(start, end), 1)
    return timings


def main(business_date: str, warehouse_id: str = "WH-01") -> int:
    import datetime as dt

    from dagster import DagsterInstance

    from velocity_platform.batch import JOB_NAME, ensure_warehouse_partitions
    from velocity_platform.defs.partitions import SiteDay
    from velocity_platform.definitions import defs

    job = defs().resolve_job_def(JOB_NAME)
    partition_key = SiteDay(warehouse_id, dt.date.fromisoformat(business_date)).key
    rss = RssSampler()
    with DagsterInstance.get() as instance:
        ensure_warehouse_partitions(instance, [warehouse_id])
        rss.start()
        rss_before_run = current_rss_mb()
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=partition_key, raise_on_error=False)
        total = time.perf_counter() - started
        rss.stop()
        if not result.success:
            print(f"run failed: {[e.message for e in result.all_events if e.is_failure]}", file=sys.stderr)
            return 1
        stages_at: dict[str, tuple[float, float]] = {}
        stages = step_timings(instance, result.run_id, rss, stages_at)
        raw_lines = next(
            e.event_specific_data.materialization.metadata["dagster/row_count"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "raw_transactions"
        )
        # The table write alone, as the I/O manager timed it (the rest of "store" is Dagster's events).
        table_writes = {
            e.asset_key.to_user_string(): e.event_specific_data.materialization.metadata["table_write_s"].value
            for e in result.get_asset_materialization_events()
            if "table_write_s" in e.event_specific_data.materialization.metadata
        }
    ours = sum(s["load_s"] + s["compute_s"] + s["store_s"] for s in stages.values())
    print(
        json.dumps(
            {
                "total_s": round(total, 3),
                "steps": stages,
                "dagster_overhead_s": round(total - ours, 3),
                "raw_lines": raw_lines,
                "rows_per_second": round(raw_lines / total, 1),
                # The kernel's high-water mark of this process (benchmarks/memory.py: not ru_maxrss).
                "peak_rss_mb": round(own_peak_rss_mb(), 1),
                # The sampled peak of the run and where it fell: a step's name, or "between steps".
                "peak_rss_sampled": rss.where_peak(stages_at),
                # Each step's window (unix times), for a sampler outside this process to place its peak.
                "step_windows": {step: [round(a, 4), round(b, 4)] for step, (a, b) in stages_at.items()},
                "rss_before_run_mb": round(rss_before_run, 1),
                "table_write_s": table_writes,
                "checks_failed": [
                    f"{e.asset_key.to_user_string()}.{e.check_name}"
                    for e in result.get_asset_check_evaluations()
                    if not e.passed
                ],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
