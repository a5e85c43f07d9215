"""`bench --scenario network` end to end on the demo world: 2 sites x 3 days, one backfill per site,
through dagster-webserver + dagster-daemon, the steps on 2 Celery workers (PostgreSQL, RabbitMQ,
the simulators, all real). No timings asserted.

Heavy (220 s on 2 cores): run only when asked, `VELOCITY_BENCH_TESTS=1`, because CI's whole run
is already near its 15-minute budget (13.6 min). When it runs it is a daemon module, kept on one
xdist worker by the module grouping in velocity_platform_tests/conftest.py.
"""

import json
import os

import pytest

from benchmarks.cli import SCENARIOS
from benchmarks.real_parts import BROKER_URL, broker_unreachable, postgres_unreachable

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("VELOCITY_BENCH_TESTS"),
        reason="220 s through the daemon and two Celery workers: VELOCITY_BENCH_TESTS=1 runs it (kept out of CI's 15-minute budget)",
    ),
]


@pytest.fixture
def real_parts_up():
    for reason in (postgres_unreachable(), broker_unreachable(BROKER_URL)):
        if reason and os.environ.get("CI"):
            pytest.fail(f"CI requires PostgreSQL and RabbitMQ: {reason}")
        if reason:
            pytest.skip(reason)


def test_a_network_backfill_runs_each_site_in_order_on_two_workers(tmp_path, real_parts_up):
    from benchmarks.network_backfill import run_network_backfill

    assert "network" in SCENARIOS
    path = tmp_path / "network.json"
    report = run_network_backfill(path, workers=2, warehouses=2, days=3, world="demo", work=tmp_path / "work", deadline_s=900)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert report["runs"] > 0 and report["runs_succeeded"] == report["runs"]
    # one backfill per site, its tag on every run: the sites ran side by side, each site's dates in order
    assert report["runs_with_their_site_tag"] == report["runs"]
    assert report["same_site_overlaps"] == 0
    assert all(report["sites_in_date_order"].values()) and len(report["sites_in_date_order"]) == 2
    # both workers ran steps
    assert len(report["steps_by_worker"]) == 2 and all(n > 0 for n in report["steps_by_worker"].values())
    assert report["duplicates"] == 0
    assert report["lost_lines"] == 0
    # Every directive planned was acknowledged. The first three days of the world plan none (a move
    # is confirmed on two disjoint windows of demand, which three days do not hold), so the
    # count is not asserted positive here; `bench --days` over a longer range is where they show.
    assert report["directives_acked"] == report["directives"]
    assert report["wms_applied"] == report["directives_acked"]
