"""Shared by the operations tests: the ERP's clock, table counts, what the instance holds."""

import datetime as dt

import dagster as dg
import httpx

from velocity_platform_tests.warehouse import open_tables
from velocity_platform_tests.conftest import ERP_TOKEN, Platform

DOWNSTREAM_OF_THE_GATES = ("sales_history", "daily_sku_demand", "sku_velocity", "slotting_directives", "wms_directive_acks")


def set_erp_clock(platform: Platform, now: dt.datetime) -> None:
    """Move the ERP simulator's clock (records committed after it are invisible), over its admin API."""
    response = httpx.post(
        f"{platform.erp_url}/v1/admin/clock",
        json={"now": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        headers={"Authorization": f"Bearer {ERP_TOKEN}"},
    )
    response.raise_for_status()


def erp_lines(platform: Platform, day: dt.date) -> int:
    response = httpx.get(
        f"{platform.erp_url}/v1/transactions/count",
        params={"business_date": day.isoformat()},
        headers={"Authorization": f"Bearer {ERP_TOKEN}"},
    )
    response.raise_for_status()
    return response.json()["lines"]


def raw_lines(platform: Platform, day: dt.date) -> int:
    with open_tables(platform.settings) as con:
        return con.execute("SELECT count(*) FROM warehouse.raw_transactions WHERE business_date = ?", [day]).fetchone()[0]


def materialized(instance: dg.DagsterInstance, asset: str) -> set[str]:
    return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


def materialized_in_run(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """Asset keys the run materialized (what a blocked gate must have kept from happening)."""
    keys = instance.get_asset_keys_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {key.to_user_string() for key in keys}


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    """`asset.check` -> its evaluation in the run (what the UI shows on the check's page)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {
        f"{e.asset_key.to_user_string()}.{e.check_name}": e
        for e in (r.event_log_entry.dagster_event.event_specific_data for r in records)
    }
