"""The direction of imports (docs/architecture.md, "Layout"), read from the source itself."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(folder: str) -> dict[str, set[str]]:
    """Every module imported anywhere under `folder` (at any depth, lazily or not), per file."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path} imports {name}"
        for path, names in imported_modules(folder).items()
        for name in sorted(names)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("velocity_platform", ("benchmarks", "velocity_platform_tests")),
        ("benchmarks", ("velocity_platform_tests",)),
        ("deploy", ("benchmarks", "velocity_platform_tests")),
        ("velocity_platform/domain", ("dagster", "httpx", "velocity_platform.connectors", "velocity_platform.defs")),
        ("velocity_platform/connectors", ("dagster", "velocity_platform.defs")),
        ("velocity_platform/simulators", ("velocity_platform.domain", "velocity_platform.connectors", "velocity_platform.defs")),
    ],
)
def test_imports_go_one_way(folder, forbidden):
    assert offenders(folder, forbidden) == []


def test_the_bench_command_comes_from_the_benchmarks_entry_point():
    from benchmarks.cli import SCENARIOS, run_bench
    from benchmarks.harness import SCENARIOS as MEASURED
    from velocity_platform.cli import build_parser

    args = build_parser().parse_args(["bench", "--scenario", "M", "L", "--no-compare"])
    assert args.func is run_bench and args.scenario == ["M", "L"]
    # deltas and network have their own runners (benchmarks/deltas.py, benchmarks/network_backfill.py)
    assert set(SCENARIOS) - {"deltas", "network"} <= set(MEASURED)
    args = build_parser().parse_args(["bench", "--scenario", "network", "--workers", "2", "--warehouses", "4", "--days", "5"])
    assert args.scenario == ["network"] and (args.workers, args.warehouses, args.days) == (2, 4, 5)
    args = build_parser().parse_args(["bench", "--scenario", "deltas", "--duration", "5", "--json", "x.json"])
    assert args.scenario == ["deltas"] and args.duration == 5.0
