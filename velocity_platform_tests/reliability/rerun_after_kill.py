"""A re-run after `kill -9` mid-push against a normal run (issue 22, defect 5). A measurement, not a
test (pytest does not collect it); here rather than in benchmarks/ because it drives the
reliability tests' worlds, which benchmarks/ may not import.

    .venv/bin/python -m velocity_platform_tests.reliability.rerun_after_kill

Two identical fresh worlds (the reliability tests' simulators on loopback). In the first, the
`velocity-platform run` of the tests' two dates runs uninterrupted: its wall time is the normal
time. In the second, the same run is killed with SIGKILL at the moment a directive is applied by
the WMS but its answer not recorded (as velocity_platform_tests/reliability/test_crash.py does),
then run again: the re-run's wall time, against the normal one. Before the fix the re-run waited
out the dead pusher's 5-minute lease (about 288 s against 5-8 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from tempfile import TemporaryDirectory

from velocity_platform.connectors.state import OperationalStore
from velocity_platform_tests.reliability.conftest import faulty_world
from velocity_platform_tests.reliability.test_crash import kill_when, start_cli_run


def timed_run(log: Path) -> float:
    started = time.perf_counter()
    process = start_cli_run(log)
    assert process.wait(900) == 0, log.read_text()[-2000:]
    return time.perf_counter() - started


def main() -> None:
    with TemporaryDirectory() as tmp:
        root = Path(tmp)
        with faulty_world(root / "normal") as platform:
            normal = timed_run(root / "normal.log")
            total = len(platform.wms_stats()["applied_per_key"])
        with faulty_world(root / "killed", wms={"fault_rate_commit_then_drop": 0.1}) as platform:
            store = OperationalStore(platform.settings.store_url)
            simulator = platform.wms_app.state.simulator

            def applied_but_not_acked() -> bool:
                stats = simulator.stats()
                if stats["applied"] < total // 3:
                    return False
                simulator.config.fault_rate_commit_then_drop = 1.0
                acked = {r.directive_id for r in store.outbox() if r.status == "acked"}
                return bool(set(stats["applied_per_key"]) - acked)

            log = root / "killed.log"
            kill_when(start_cli_run(log), applied_but_not_acked, "a directive applied but not yet acknowledged")
            simulator.config.fault_rate_commit_then_drop = 0.0
            held = sum(1 for r in store.outbox() if r.status == "pending" and r.claimed_until is not None)
            rerun = timed_run(root / "rerun.log")
            said = [line for line in (root / "rerun.log").read_text().splitlines() if "took over" in line or "waiting for" in line]
            applied = platform.wms_stats()["applied_per_key"]
            store.dispose()
    print(f"normal run: {normal:.1f} s; re-run after kill -9 mid-push: {rerun:.1f} s ({rerun / normal:.2f}x)")
    print(f"pending rows still leased by the killed run: {held}; applied once each: {set(applied.values()) == {1}}")
    for line in said:
        print(f"  re-run said: {line.strip()[:300]}")


if __name__ == "__main__":
    main()
