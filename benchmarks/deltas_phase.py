"""One fixed-rate phase of `velocity-platform bench --scenario deltas` on its own (the full
scenario runs five phases, minutes on a shared machine):

    .venv/bin/python -m benchmarks.deltas_phase 50 1500   # rate per second, documents
"""

import sys

from benchmarks.deltas import run_phase

rate, documents = float(sys.argv[1]), int(sys.argv[2])
r = run_phase(f"{rate:g}/s", rate, documents, "none", soak_sample_s=10.0)
print(
    f"{rate:g}/s: p50 {r.p50_ms} p95 {r.p95_ms} p99 {r.p99_ms} ms, lost {r.lost}, twice {r.duplicates}, "
    f"CPU {r.cpu_s} s ({r.cpu_share_of_core:.0%} of a core), {r.batches} reads of {r.batch_mean_ms} ms, stages {r.stages_ms}"
)
