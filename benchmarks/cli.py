"""`velocity-platform bench`: the benchmarks' own command, added to the product's command line.

The product does not import its tools: pyproject.toml declares this module's `add_bench_command`
under the entry-point group `velocity_platform.commands`, and velocity_platform/cli.py adds
every command of that group it finds installed. This module stays light (no polars, no
Dagster): it is imported by every `velocity-platform` invocation; a scenario's runner imports
what it needs when it runs.

A scenario is a name, one line of help and what runs it: adding one (say `deltas`) is one
entry in SCENARIOS.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchScenario:
    help: str
    # Runs the scenario; writes its figures as JSON to the path when one is given.
    run: Callable[[Path | None, argparse.Namespace], object]


def _business_day(name: str) -> Callable[[Path | None, argparse.Namespace], object]:
    def run(json_path: Path | None, args: argparse.Namespace) -> object:
        from benchmarks.harness import run_benchmark

        return run_benchmark(name, json_path, compare=not args.no_compare)

    return run


def _deltas(json_path: Path | None, args: argparse.Namespace) -> object:
    from benchmarks.deltas import run_deltas_benchmark

    return run_deltas_benchmark(json_path, duration_s=args.duration, burst=args.burst, soak_s=args.soak)


def _network(json_path: Path | None, args: argparse.Namespace) -> object:
    from benchmarks.network_backfill import run_network_backfill

    return run_network_backfill(
        json_path, workers=args.workers, warehouses=args.warehouses, days=args.days, world=args.world, days_per_run=args.days_per_run
    )


SCENARIOS: dict[str, BenchScenario] = {
    "S": BenchScenario("one business day, 5,000 SKUs, 50,000 lines, through Dagster", _business_day("S")),
    "M": BenchScenario("one business day, 20,000 SKUs, 300,000 lines, through Dagster", _business_day("M")),
    "L": BenchScenario("one business day, 100,000 SKUs, 1,000,000 lines, through Dagster", _business_day("L")),
    "deltas": BenchScenario(
        "the exception service: ERP commit to WMS acknowledgement at 50, 500 and 2,000 documents/s, a burst, "
        "and 500/s with 5%% transport faults",
        _deltas,
    ),
    "network": BenchScenario(
        "a backfill of W warehouses x D days (world M or demo) through dagster-daemon, its steps on N Celery workers "
        "(PostgreSQL and RabbitMQ on this machine)",
        _network,
    ),
}


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    """Add `bench` to the product's subcommands (the `velocity_platform.commands` entry point)."""
    listing = "; ".join(f"{name}: {scenario.help}" for name, scenario in SCENARIOS.items())
    bench = commands.add_parser(
        "bench", help="measure a scenario (S, M, L: one business day through Dagster; deltas: the exception service; network: a backfill on Celery workers)"
    )
    bench.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), default=["S"], help=listing)
    bench.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    bench.add_argument("--no-compare", action="store_true", help="skip the per-record, floor and parse comparisons")
    deltas = bench.add_argument_group("--scenario deltas")
    deltas.add_argument("--duration", type=float, default=60.0, help="seconds of each fixed-rate phase (default 60)")
    deltas.add_argument("--burst", type=int, default=5000, help="documents committed at once in the burst (default 5,000)")
    deltas.add_argument("--soak", type=float, default=None, help="instead: one 500/s phase of this many seconds (RSS sampled)")
    network = bench.add_argument_group("--scenario network")
    network.add_argument("--workers", type=int, default=2, help="Celery workers, each one step at a time (default 2)")
    network.add_argument("--warehouses", type=int, default=2, help="sites, each its own backfill (default 2)")
    network.add_argument("--days", type=int, default=3, help="business dates from 2026-01-01 (default 3)")
    network.add_argument("--world", choices=["M", "demo"], default="M", help="M: 20,000 SKUs, 300,000 lines a day; demo: 2,000 and 4,000")
    network.add_argument("--days-per-run", type=int, default=None, help="dates a backfill run builds together (default: the setting's)")
    bench.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    for name in args.scenario:
        json_path = args.json
        if json_path and len(args.scenario) > 1:
            json_path = json_path.with_name(f"{json_path.stem}-{name}{json_path.suffix}")
        SCENARIOS[name].run(json_path, args)
    return 0
