"""Peak memory of the file-drop source on bad inputs (issue 22, defect 3), each read in a fresh process.

    .venv/bin/python -m benchmarks.bad_input_memory [--bomb-gib 8] [--json out.json]

Writes each input into a temporary directory (streamed: a gzip bomb is a few MB on disk), then
runs `read_export` on it with the default limits (VELOCITY_FILE_MAX_*) in a child process and
prints the outcome (lines read and dead-lettered, or the one-line refusal) and the child's own
peak RSS (VmHWM, benchmarks/memory.py). The goal is <= 2 GiB on every input.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import polars as pl

ONLINE_RETAIL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "online_retail.csv.gz"
HEADER = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
LINE = b"536365,85123A,WHITE HANGING HEART,6,2011-06-01 08:26:00,2.55,17850.0,United Kingdom\n"

CHILD = r"""
import json, sys
from benchmarks.memory import own_peak_rss_mb
from velocity_platform.connectors.files import FileSourceError, preset, read_export
try:
    export = read_export(sys.argv[1], preset("online-retail"))
    outcome = f"read: {export.total_lines:,} lines, {export.unparsed_lines.height:,} dead-lettered as unreadable"
except FileSourceError as exc:
    outcome = f"refused: {exc}"
print(json.dumps({"outcome": outcome, "peak_rss_mb": round(own_peak_rss_mb())}))
"""


def gzip_stream(path: Path, head: bytes, repeated: bytes, total_bytes: int) -> None:
    block = repeated * max(1, (1 << 20) // len(repeated))
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(packer.compress(head))
        for _ in range(total_bytes // len(block) + 1):
            out.write(packer.compress(block))
        out.write(packer.flush())


def online_retail_lines() -> bytes:
    with gzip.open(ONLINE_RETAIL, "rb") as handle:
        return handle.read()


def write_inputs(root: Path, bomb_gib: float) -> dict[str, Path]:
    inputs = {}
    real = online_retail_lines()
    inputs["Online Retail export as it is (reference)"] = ONLINE_RETAIL.resolve()

    bomb = root / "bomb.csv.gz"
    gzip_stream(bomb, HEADER, LINE, int(bomb_gib * 2**30))
    inputs[f"gzip bomb: {bomb.stat().st_size / 1e6:.0f} MB inflating to {bomb_gib:g} GiB of valid lines"] = bomb

    long_line = root / "long-line.csv.gz"
    gzip_stream(long_line, HEADER + b"536365,85123A,", b"x" * 65536, 2 * 2**30)
    inputs["one line of 2 GiB without a newline (gzip)"] = long_line

    field = root / "huge-field.csv"
    body = real.split(b"\n", 1)[1]
    with open(field, "wb") as out:
        out.write(real.split(b"\n", 1)[0] + b"\n")
        out.write(b"536366,22139," + b"A" * (100 * 2**20) + b",2,2011-06-01 09:00:00,4.95,,France\n")
        out.write(body)
    inputs["a field of 100 MiB on one line, then the whole Online Retail export"] = field

    wide = root / "wide.csv"
    wide.write_bytes(HEADER.rstrip(b"\n") + b"".join(b",c%d" % i for i in range(1_000_000)) + b"\n" + LINE)
    inputs["a header of a million columns"] = wide

    typed = root / "typed.parquet"
    frame = pl.read_csv(real, infer_schema_length=10_000, schema_overrides={"InvoiceNo": pl.String, "StockCode": pl.String})
    frame.with_columns(
        pl.col("InvoiceDate").str.to_datetime("%Y-%m-%d %H:%M:%S"),  # a typed time, not text
        pl.col("Quantity").cast(pl.Float64),
        pl.lit([1, 2]).alias("tags"),  # an unmapped nested column
    ).write_parquet(typed)
    inputs["Parquet of the export with typed columns (datetime, float) and a list column"] = typed
    return inputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bomb-gib", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_inputs(Path(tmp), args.bomb_gib).items():
            started = time.perf_counter()
            child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=False)
            if child.returncode:
                result = {"outcome": f"crashed ({child.returncode}): {child.stderr.strip().splitlines()[-1:]}", "peak_rss_mb": None}
            else:
                result = json.loads(child.stdout.strip().splitlines()[-1])
            result |= {"input": name, "seconds": round(time.perf_counter() - started, 1)}
            results.append(result)
            print(f"{name}\n    peak RSS {result['peak_rss_mb']} MB, {result['seconds']} s; {result['outcome']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
