"""The ERP pull's speed at a few page limits: one business date, the simulator on loopback.

    .venv/bin/python benchmarks/erp_page_limit.py [--days 30 --seed 7]

Prints, per limit, the pages of the day and the pull's wall time (median of {args.repeat}), with the nightly
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
    # The day's size: the demo's world by default; --skus 100000 --lines-per-day 1000000 is scenario L's.
    parser.add_argument("--skus", type=int, default=ErpConfig.skus)
    parser.add_argument("--lines-per-day", type=int, default=ErpConfig.lines_per_day)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--page-limit-max", type=int, default=None, help="let pages grow to this (default: fixed at the limit)")
    args = parser.parse_args()
    cfg = ErpConfig(days=args.days, seed=args.seed, skus=args.skus, lines_per_day=args.lines_per_day)
    day = cfg.start + dt.timedelta(days=args.days - 2) if cfg.start else dt.date.today() - dt.timedelta(days=2)
    with BackgroundServer(create_erp_app(cfg)) as server:
        for limit in [int(x) for x in args.limits.split(",")]:
            times, pages, docs = [], 0, 0
            for _ in range(args.repeat):
                with ErpClient(server.url, cfg.token, page_limit=limit, page_limit_max=args.page_limit_max or limit) as client:
                    started = time.perf_counter()
                    received = [
                        ReceivedPage(p.source_batch, p.body, p.parsed, p.error, p.fetches, p.cursor, p.limit)
                        for p in client.transaction_pages(day, "Europe/London", reader=read_erp_page)
                    ]
                    ingested = raw_lines_from_received(received, day)
                    times.append(time.perf_counter() - started)
                pages, docs = ingested.pages, ingested.documents
            grows = f" growing to {args.page_limit_max}" if args.page_limit_max else ""
            print(f"limit {limit:>5}{grows}: {pages:>3} page(s) of {docs} documents, {ingested.lines_received} lines: "
                  f"{statistics.median(times) * 1000:7.1f} ms (median of {args.repeat})")


if __name__ == "__main__":
    main()
