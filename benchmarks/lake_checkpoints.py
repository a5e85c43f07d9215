"""What a table's log costs a reader in a bucket: Delta's default checkpoint interval against the lake's.

    .venv/bin/python -m benchmarks.lake_checkpoints [--commits 45 90] [--skus 20000] [--json PATH]

On moto's S3 server on loopback (the tests' bucket), two tables get the same commits -- one
site-day of `--skus` rows each, as a night writes `daily_sku_demand` -- one with Delta's default
checkpoint interval (100), one with the lake's (`CHECKPOINT_EVERY_COMMITS`). After each count of
commits it times, best of three, what every reader does first: opening the table (delta-rs replays
the log from the last checkpoint) and DuckDB's `delta_scan` over the last 90 dates (the velocity
window). Both tables hold the same rows; only their logs differ.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from velocity_platform.defs.tables import CHECKPOINT_EVERY_COMMITS, lake_connection, storage_options, table_uri
from velocity_platform.simulators.object_store import S3Server

FIRST = dt.date(2026, 1, 1)


def _day(skus: int, day: dt.date) -> pl.DataFrame:
    return pl.DataFrame(
        {"sku_id": [f"SKU-{i:06d}" for i in range(skus)], "units": [float(i % 7) for i in range(skus)]}
    ).with_columns(pl.lit(day).alias("business_date"), pl.lit("WH-01").alias("warehouse_id"))


def _commit(uri: str, options: dict, frame: pl.DataFrame, day: dt.date, interval: int) -> None:
    frame.write_delta(
        uri,
        mode="overwrite",
        storage_options=options,
        delta_write_options={
            "partition_by": ["warehouse_id", "business_date"],
            "predicate": f"warehouse_id = 'WH-01' AND business_date = '{day}'",
            "schema_mode": "merge",
            "configuration": {"delta.checkpointInterval": str(interval)},
        },
    )


def _read_costs(lake: str, uri: str, options: dict, last: dt.date) -> dict:
    best_open, best_scan = float("inf"), float("inf")
    for _ in range(3):
        started = time.perf_counter()
        version = DeltaTable(uri, storage_options=options).version()
        best_open = min(best_open, time.perf_counter() - started)
        with lake_connection(lake) as con:
            started = time.perf_counter()
            rows = con.execute(
                f"SELECT count(*) FROM delta_scan('{uri}') WHERE business_date BETWEEN ? AND ?",
                [last - dt.timedelta(days=89), last],
            ).fetchone()[0]
            best_scan = min(best_scan, time.perf_counter() - started)
    return {"version": version, "rows": rows, "open_s": round(best_open, 3), "scan_90_days_s": round(best_scan, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, nargs="+", default=[45, 90])
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    intervals = {"delta_default": 100, "lake": CHECKPOINT_EVERY_COMMITS}
    results = []
    with S3Server(Path(tempfile.mkdtemp(prefix="lake-checkpoints-")) / "moto.log") as s3:
        os.environ.update(s3.environment)
        lake = s3.new_lake()
        options = storage_options(lake)
        uris = {name: table_uri(lake, f"daily_sku_demand_{name}") for name in intervals}
        written = 0
        for target in sorted(args.commits):
            started = time.perf_counter()
            for n in range(written, target):
                day = FIRST + dt.timedelta(days=n)
                frame = _day(args.skus, day)
                for name, interval in intervals.items():
                    _commit(uris[name], options, frame, day, interval)
            print(f"{target} commits on each table ({time.perf_counter() - started:.1f} s)", flush=True)
            written = target
            last = FIRST + dt.timedelta(days=target - 1)
            for name, interval in intervals.items():
                row = {"commits": target, "table": name, "checkpoint_interval": interval, **_read_costs(lake, uris[name], options, last)}
                print(f"  {name:13} every {interval:3} commits: open {row['open_s']:.3f} s, 90-day scan {row['scan_90_days_s']:.3f} s, {row['rows']:,} rows")
                results.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"skus": args.skus, "results": results}, indent=2))


if __name__ == "__main__":
    main()
