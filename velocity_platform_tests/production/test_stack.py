"""End to end on the production stack: the schedule's tick and a backfill through GraphQL, on PostgreSQL."""

import itertools

import pytest

from velocity_platform.connectors.dagster_webserver import nightly_assets
from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.state import OperationalStore
from velocity_platform_tests.production.conftest import (
    BACKFILL_DATES,
    ERP_TOKEN,
    FAILING_DATE,
    GOOD_DATES,
    TICK_DATE,
)
from velocity_platform_tests.warehouse import open_tables

pytestmark = [pytest.mark.postgres, pytest.mark.production, pytest.mark.integration, pytest.mark.slow(minutes=3)]

ASSET_NODES = """
{
  assetNodes {
    assetKey { path }
    isPartitioned
    isMaterializable
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}"""

MATERIALIZATIONS = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(limit: 200) { partition runId } } }
}"""

CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 50) {
    runId status partition evaluation { description success }
  }
}"""


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


@pytest.fixture(scope="module")
def asset_nodes(production_stack) -> list[dict]:
    # The nightly job's assets: exception_deltas is external (the exception service reports it),
    # and the network roll-up is built by automation once every site of a date is in.
    nightly = {tuple(path) for path, _ in nightly_assets(production_stack.ui)}
    return [n for n in production_stack.graphql(ASSET_NODES)["assetNodes"] if tuple(n["assetKey"]["path"]) in nightly]


def test_the_tick_and_the_backfill_each_built_their_business_dates_in_order(production_stack, nightly_history):
    history = nightly_history
    assert history.backfill["status"] == "COMPLETED_SUCCESS"
    assert sorted(history.runs_of_date) == GOOD_DATES
    assert {history.runs[rid]["status"] for d in GOOD_DATES for rid in history.runs_of_date[d]} == {"SUCCESS"}
    tick = tags_of(history.runs[history.tick_run_id])
    assert tick["dagster/partition"] == f"{TICK_DATE.isoformat()}|WH-01"
    assert tick["velocity/schedule_tick"].startswith("nightly_slotting_schedule@")
    assert history.runs_of_date[TICK_DATE] == {history.tick_run_id}
    backfill_runs = [r["runId"] for r in history.backfill["runs"]]
    for day in BACKFILL_DATES:
        assert history.runs_of_date[day] <= set(backfill_runs), day
        assert {tags_of(history.runs[rid])["dagster/backfill"] for rid in history.runs_of_date[day]} == {history.backfill_id}
    # The backfill's dates are ranges (up to 30 dates a run), not a run per date: each range run
    # covers all three, and the SKU master is built once, by a run of its own.
    ranged = [rid for rid in backfill_runs if "dagster/asset_partition_range_start" in tags_of(history.runs[rid])]
    assert ranged and all(rid in history.runs_of_date[d] for rid in ranged for d in BACKFILL_DATES)
    assert len(backfill_runs) - len(ranged) == 1
    # One run at a time (the duckdb pool at run granularity): no two of them overlap.
    in_order = sorted(history.runs.values(), key=lambda r: r["startTime"])
    assert len(in_order) == len(backfill_runs) + 2  # the backfill's runs, the tick's date, the failing night
    for earlier, later in itertools.pairwise(in_order):
        assert earlier["endTime"] <= later["startTime"]


def test_every_asset_is_materialized_for_every_date_by_that_dates_run(production_stack, nightly_history, asset_nodes):
    for node in asset_nodes:
        key = node["assetKey"]
        materializations = production_stack.graphql(MATERIALIZATIONS, {"key": key})["assetOrError"]["assetMaterializations"]
        if not node["isPartitioned"]:
            assert materializations, f"{key['path']} was never materialized"
            continue
        by_partition: dict[str, list[str]] = {}
        for m in materializations:
            by_partition.setdefault(m["partition"], []).append(m["runId"])
        for day in GOOD_DATES:
            # Exactly once, by one of the runs of that date.
            [run_id] = by_partition.get(f"{day.isoformat()}|WH-01", [None])
            assert run_id in nightly_history.runs_of_date[day], (key["path"], day)


def test_every_check_passed_on_every_date(production_stack, nightly_history, asset_nodes):
    checked = 0
    for node in asset_nodes:
        for check in (node["assetChecksOrError"] or {}).get("checks", []):
            executions = production_stack.graphql(CHECK_EXECUTIONS, {"key": node["assetKey"], "check": check["name"]})
            by_run = {e["runId"]: e for e in executions["assetCheckExecutions"]}
            for day in GOOD_DATES:
                [execution] = [by_run[rid] for rid in nightly_history.runs_of_date[day] if rid in by_run] or [None]
                assert execution and execution["status"] == "SUCCEEDED", (node["assetKey"]["path"], check["name"], day, execution)
                checked += 1
    assert checked >= 5 * len(GOOD_DATES)


def test_the_warehouse_tables_reconcile_with_the_erp(production_stack, nightly_history):
    with open_tables(state_dir=production_stack.state_dir) as con:
        raw = dict(con.execute("SELECT business_date, count(*) FROM warehouse.raw_transactions GROUP BY 1").fetchall())
        valid = dict(con.execute("SELECT business_date, count(*) FROM warehouse.validated_transactions GROUP BY 1").fetchall())
        dead = dict(con.execute("SELECT business_date, count(*) FROM warehouse.dead_letter_transactions GROUP BY 1").fetchall())
        velocity_dates = {r[0] for r in con.execute("SELECT DISTINCT business_date FROM warehouse.sku_velocity").fetchall()}
    with ErpClient(production_stack.erp_url, ERP_TOKEN) as erp:
        for day in GOOD_DATES:
            assert raw[day] == erp.count_lines(day) == valid[day] + dead.get(day, 0)
    assert velocity_dates == set(GOOD_DATES)


def test_each_directive_reached_the_wms_once_sent_by_the_run_of_its_date(production_stack, nightly_history):
    store = OperationalStore(production_stack.store_url, migrate=False)
    try:
        outbox = store.outbox()
        log = store.push_log_entries()
    finally:
        store.dispose()
    assert outbox, "four days of the small world should need some moves"
    assert {r.status for r in outbox} == {"acked"}
    assert {r.business_date for r in outbox} <= set(GOOD_DATES)
    date_of = {r.directive_id: r.business_date for r in outbox}
    assert sorted(e.directive_id for e in log) == sorted(date_of)  # one push each
    for entry in log:
        assert any(rid in entry.pusher for rid in nightly_history.runs_of_date[date_of[entry.directive_id]])
    stats = production_stack.wms_stats()
    assert stats["applied_per_key"] == {d: 1 for d in date_of}


def test_a_night_that_fails_its_dead_letter_gate_stops_before_the_wms(production_stack, nightly_history):
    run = nightly_history.runs[nightly_history.failing_run_id]
    assert run["status"] == "FAILURE"
    executions = production_stack.graphql(
        CHECK_EXECUTIONS, {"key": {"path": ["validated_transactions"]}, "check": "dlq_rate_within_limit"}
    )["assetCheckExecutions"]
    [failed] = [e for e in executions if e["runId"] == nightly_history.failing_run_id]
    assert failed["status"] == "FAILED" and failed["evaluation"]["success"] is False
    assert "dead-lettered" in failed["evaluation"]["description"]
    for downstream in ("sku_velocity", "slotting_directives", "wms_directive_acks"):
        materializations = production_stack.graphql(MATERIALIZATIONS, {"key": {"path": [downstream]}})
        partitions = {m["partition"] for m in materializations["assetOrError"]["assetMaterializations"]}
        assert f"{FAILING_DATE.isoformat()}|WH-01" not in partitions, downstream
    assert FAILING_DATE.isoformat() not in production_stack.wms_stats()["by_business_date"]
    with open_tables(state_dir=production_stack.state_dir) as con:
        dead = con.execute(
            "SELECT count(*) FROM warehouse.dead_letter_transactions WHERE business_date = ?", [FAILING_DATE]
        ).fetchone()[0]
    assert dead > 0, "the rejected lines of the failed night are kept with their reasons"
