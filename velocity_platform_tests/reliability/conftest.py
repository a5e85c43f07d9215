"""Faulty worlds and the one assertion every reliability test makes: nothing lost, nothing twice.

Each test starts both simulators with its faults on loopback, runs business dates through the
real Dagster job (`batch.run_range`), and then compares the tables with the ERP's ground truth
(the simulator object itself, which no fault touches) and the WMS's own record of what it
applied per Idempotency-Key. Each test adds a row to the proof table; set
VELOCITY_RELIABILITY_REPORT=path.md to have the table written there at the end of the session.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from velocity_platform.batch import DayOutcome, run_range
from velocity_platform.connectors.http import reset_guards
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import (
    ERP_TOKEN,
    WMS_TOKEN,
    Platform,
    platform_environment,
)
from velocity_platform_tests.warehouse import day_key, open_tables

WORLD = {"seed": 5, "skus": 300, "start": dt.date(2026, 1, 1), "days": 40}
# 2,000 lines a day: the default 0.05% malformed lines give about one dead letter a day (the DLQ
# path runs) and stay under the 0.1% gate.
LINES_PER_DAY = 2000
DATES = [dt.date(2026, 2, 3), dt.date(2026, 2, 4)]
# Small pages (about eight a day) so that per-request faults hit the pull many times; short
# timeouts and backoff so a test spends its time on work, not on waiting.
# One directive per request to the WMS's batch endpoint: a small world's few directives a day
# then make enough requests for every kind of fault to land on some of them.
WMS_SMALL_BATCHES = {"push_batch_size": 1}
FAST_HTTP = {
    "timeout_s": 1.0,
    "initial_backoff_s": 0.01,
    "max_backoff_s": 0.05,
    "max_retry_after_s": 0.1,
    "max_attempts": 10,
    "page_limit": 100,
}


@contextmanager
def faulty_world(root: Path, erp: dict | None = None, wms: dict | None = None) -> Iterator[Platform]:
    reset_guards()  # each world is a new upstream: no breaker state carried over
    erp_config = ErpConfig(**WORLD, lines_per_day=LINES_PER_DAY, token=ERP_TOKEN, retry_after_seconds=0, **(erp or {}))
    wms_config = WmsConfig(**WORLD, token=WMS_TOKEN, retry_after_seconds=0, **(wms or {}))
    with platform_environment(root, erp_config, wms_config) as platform:
        # Relocations priced at zero minutes: these tests prove every directive is delivered exactly
        # once and need enough of them a night; what a move must earn is tested in domain/.
        os.environ["VELOCITY_MOVE_MINUTES"] = "0"
        yield platform
    reset_guards()


def run(dates: list[dt.date], http: dict | None = None, warehouse: dict | None = None) -> list[DayOutcome]:
    """The nightly job for each date, with the tests' HTTP settings as resource config (run config
    replaces a resource's whole config, so the URL and the token's env var are given again)."""
    config: dict[str, dict] = {
        system: {
            "base_url": os.environ[f"VELOCITY_{system.upper()}_URL"],
            "token": {"env": f"VELOCITY_{system.upper()}_TOKEN"},
            **FAST_HTTP,
            **(WMS_SMALL_BATCHES if system == "wms" else {}),
            **(http or {}),
        }
        for system in ("erp", "wms")
    }
    if warehouse:
        config["warehouse"] = {"timezone": os.environ.get("VELOCITY_WAREHOUSE_TZ", "Europe/London"), **warehouse}
    return run_range(dates, resource_config=config)


INGESTION_ASSETS = ["raw_transactions", "validated_transactions", "dead_letter_transactions"]


def rebuild(dates: list[dt.date], assets: list[str]) -> list[bool]:
    """Re-materialize only `assets` for each date (e.g. ingestion after late arrivals), same settings."""
    from velocity_platform.batch import JOB_NAME, QUIET_CONSOLE
    from velocity_platform.definitions import defs

    config = {
        system: {"base_url": os.environ[f"VELOCITY_{system.upper()}_URL"], "token": {"env": f"VELOCITY_{system.upper()}_TOKEN"}, **FAST_HTTP,
                 **(WMS_SMALL_BATCHES if system == "wms" else {})}
        for system in ("erp", "wms")
    }
    job = defs().resolve_job_def(JOB_NAME)
    with dg.DagsterInstance.get() as instance:
        return [
            job.execute_in_process(
                instance=instance,
                partition_key=day_key(day),
                asset_selection=[dg.AssetKey(a) for a in assets],
                raise_on_error=False,
                run_config={**QUIET_CONSOLE, "resources": {k: {"config": v} for k, v in config.items()}},
            ).success
            for day in dates
        ]


# --- ground truth and the tables -------------------------------------------------------------


def erp_truth(platform: Platform, day: dt.date) -> Counter:
    """Lines per txn_id that the ERP holds (and shows at its clock) for the day: no fault applies."""
    sim = platform.erp_app.state.simulator
    batch = sim.day(day.toordinal()).batch
    visible = [int(i) for i in range(batch.n_docs) if batch.created_at[i] <= sim.now()]
    return Counter({doc["txn_id"]: len(doc["lines"]) for doc in batch.documents(visible)})


def table(platform: Platform, sql: str, params: list | None = None) -> list[tuple]:
    with open_tables(platform.settings) as con:
        return con.execute(sql, params or []).fetchall()


def has_table(platform: Platform, name: str) -> bool:
    return bool(
        table(
            platform,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'warehouse' AND table_name = ?",
            [name],
        )[0][0]
    )


def materialization_metadata(asset: str, key: str) -> int:
    """Sum of one integer metadata entry over every materialization of an asset on this instance."""
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        return sum(
            int(r.asset_materialization.metadata[key].value)
            for r in records
            if r.asset_materialization and key in r.asset_materialization.metadata
        )


@dataclass
class Proof:
    fault: str
    rate: str
    partitions: int
    lines: int
    faults_injected: int
    retries: int
    lost: int
    duplicates: int
    dead_lettered_pages_lines: int = 0


def check_exactly_once(
    platform: Platform,
    dates: list[dt.date],
    *,
    wms_expected: bool = True,
    lines_in_dead_pages: int = 0,
) -> Proof:
    """ERP lines == raw lines == validated + dead letters; no (txn_id, line_no) twice; the WMS
    applied each acknowledged directive exactly once. Returns the figures for the proof table."""
    lost = duplicates = lines = 0
    for day in dates:
        truth = erp_truth(platform, day)
        lines += sum(truth.values())
        received = Counter(
            dict(
                table(
                    platform,
                    "SELECT txn_id, count(*) FROM warehouse.raw_transactions "
                    "WHERE business_date = ? AND page_error IS NULL GROUP BY 1",
                    [day],
                )
            )
        )
        # Every ERP document's lines, each exactly once (a missing txn_id would show as lost).
        lost += sum((truth - received).values())
        duplicates += sum((received - truth).values())
        rows = table(platform, "SELECT count(*) FROM warehouse.raw_transactions WHERE business_date = ?", [day])[0][0]
        valid = table(platform, "SELECT count(*) FROM warehouse.validated_transactions WHERE business_date = ?", [day])[0][0]
        dead = (
            table(platform, "SELECT count(*) FROM warehouse.dead_letter_transactions WHERE business_date = ?", [day])[0][0]
            if has_table(platform, "dead_letter_transactions")
            else 0
        )
        assert rows == valid + dead, f"{day}: {rows} raw rows but {valid} valid + {dead} dead letters"
        twice = table(
            platform,
            "SELECT count(*) FROM (SELECT txn_id, line_no FROM warehouse.validated_transactions "
            "WHERE business_date = ? GROUP BY 1, 2 HAVING count(*) > 1)",
            [day],
        )[0][0]
        duplicates += twice
        no_reason = table(
            platform,
            "SELECT count(*) FROM warehouse.dead_letter_transactions WHERE business_date = ? AND len(reasons) = 0",
            [day],
        )[0][0] if dead else 0
        assert no_reason == 0
    assert lost == lines_in_dead_pages, f"{lost} ERP lines missing from raw_transactions"
    assert duplicates == 0, f"{duplicates} lines received twice"

    stats = platform.wms_stats()
    if wms_expected:
        planned = {r[0] for r in table(platform, "SELECT directive_id FROM warehouse.slotting_directives")}
        acked = {
            r[0] for r in table(platform, "SELECT directive_id FROM warehouse.wms_directive_acks WHERE status = 'acked'")
        }
        assert planned, "the world should need some moves"
        assert acked == planned
        applied = {k for k, n in stats["applied_per_key"].items() if n > 0}
        assert applied == planned
        assert set(stats["applied_per_key"].values()) <= {0, 1}, "a directive was applied twice"
    # Faults the simulators injected: per attempt (and per page boundary or broken page served),
    # plus the data faults of these dates (drifted and late documents).
    erp_stats = platform.erp_stats()
    data = [erp_stats["data_faults"].get(d.isoformat(), {}) for d in dates]
    injected = (
        sum(erp_stats["faults"].values())
        + sum(sum(d.get("drift", {}).values()) + d.get("late", 0) for d in data)
        + sum(stats["faults"].values())
    )
    # As the clients report them in asset metadata: the ERP pull, the SKU master and the WMS push.
    retries = sum(materialization_metadata(a, "http_retries") for a in ("raw_transactions", "sku_master", "wms_directive_acks"))
    return Proof("", "", len(dates), lines, injected, retries, lost - lines_in_dead_pages, duplicates, lines_in_dead_pages)


_PROOFS: list[Proof] = []


@pytest.fixture
def proof():
    """Record a test's figures for the proof table."""

    def record(result: Proof, fault: str, rate: str) -> Proof:
        result.fault, result.rate = fault, rate
        _PROOFS.append(result)
        return result

    return record


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("VELOCITY_RELIABILITY_REPORT")
    if not path or not _PROOFS:
        return
    header = (
        "| fault | rate | partitions | ERP lines | faults injected | retries made | lines lost | duplicates |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = "".join(
        f"| {p.fault} | {p.rate} | {p.partitions} | {p.lines:,} | {p.faults_injected:,} | {p.retries:,} | {p.lost} | {p.duplicates} |\n"
        for p in _PROOFS
    )
    Path(path).write_text(header + rows)
