"""How different the simulated sites sell: A-class overlap (A = the SKUs carrying 80% of lines)
between three ERP sites of 2,000 shared SKUs, over 7 business days.

    .venv/bin/python -m benchmarks.network_mix
"""
import datetime as dt
import numpy as np
from velocity_platform.simulators.erp import ErpConfig, ErpSimulator
sim = ErpSimulator(ErpConfig(start=dt.date(2026, 1, 1), days=14, skus=2000, lines_per_day=4000,
                             warehouses="WH-01@America/Chicago,WH-02@Europe/Berlin,WH-03@Asia/Tokyo"))
n = len(sim.catalog)
a_sets = {}
for site in sim.sites:
    lines = np.zeros(n)
    for d in range(7):
        b = sim.day((dt.date(2026, 1, 3) + dt.timedelta(days=d)).toordinal(), site).batch
        lines += np.bincount(b.sku, minlength=n)
    order = np.argsort(-lines)
    cum = np.cumsum(lines[order]) / lines.sum()
    a_sets[site.warehouse_id] = set(order[: int(np.searchsorted(cum, 0.8)) + 1].tolist())  # A: 80% of lines
    own = lines[2000:].sum() / lines.sum()
    print(site.warehouse_id, "A SKUs", len(a_sets[site.warehouse_id]), f"own-SKU share of lines {own:.1%}")
ids = list(a_sets)
for i in range(len(ids)):
    for j in range(i + 1, len(ids)):
        x, y = a_sets[ids[i]], a_sets[ids[j]]
        print(ids[i], ids[j], f"A SKUs in common: {len(x & y)} ({len(x & y) / min(len(x), len(y)):.0%} of the smaller A set)")
