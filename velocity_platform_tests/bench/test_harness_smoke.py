"""The benchmark harness end to end on a tiny world, so `make bench` keeps working (no timings asserted)."""

import json
import os

import pytest

from benchmarks.harness import STAGES, run_benchmark

pytestmark = pytest.mark.integration


@pytest.fixture
def restored_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_the_harness_measures_a_day_and_writes_its_json(tmp_path, restored_environment):
    path = tmp_path / "bench.json"
    report = run_benchmark("smoke", path, compare=True)
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(report))
    assert written["raw_lines"] > 0 and written["total_s"] > 0 and written["peak_rss_mb"] > 0
    # every stage of the graph timed, from the run's own event log
    assert set(STAGES.values()) <= set(written["stages"])
    assert written["stages"]["WMS push"] > 0 and isinstance(written["checks_failed"], list)
    comparisons = written["comparisons"]
    # the same rows went through every way of doing it
    assert comparisons["per_record_lines"] == written["raw_lines"]
    assert set(written["ratios"]) >= {"validation_vs_per_record", "compute_vs_floor", "ingest_vs_parse"}
    assert all(value > 0 for value in written["ratios"].values())
