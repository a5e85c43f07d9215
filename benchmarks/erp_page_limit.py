"""The ERP pull's speed at a few page limits: one business date, the simulator on loopback.

    .venv/bin/python benchmarks/erp_page_limit.py [--days 30 --seed 7]

Prints, per limit, the pages of the day and the pull's wall time (median of 5), with the nightly
run's own request ceiling (50/s) and retry policy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.erp_pages import ReceivedPage, raw_lines_from_received, read_erp_page
from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.serve import BackgroundServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limits", default="25,50,100,250,500,5000")
    args = parser.parse_args()
    cfg = ErpConfig(days=args.days, seed=args.seed)
    day = cfg.start + dt.timedelta(days=args.days - 2) if cfg.start else dt.date.today() - dt.timedelta(days=2)
    with BackgroundServer(create_erp_app(cfg)) as server:
        for limit in [int(x) for x in args.limits.split(",")]:
            times, pages, docs = [], 0, 0
            for _ in range(5):
                with ErpClient(server.url, cfg.token, page_limit=limit) as client:
                    started = time.perf_counter()
                    received = [
                        ReceivedPage(p.source_batch, p.body, p.parsed, p.error, p.fetches, p.cursor, p.limit)
                        for p in client.transaction_pages(day, "Europe/London", reader=read_erp_page)
                    ]
                    ingested = raw_lines_from_received(received, day)
                    times.append(time.perf_counter() - started)
                pages, docs = ingested.pages, ingested.documents
            print(f"limit {limit:>5}: {pages:>3} page(s) of {docs} documents, {ingested.lines_received} lines: "
                  f"{statistics.median(times) * 1000:7.1f} ms (median of 5)")


if __name__ == "__main__":
    main()
