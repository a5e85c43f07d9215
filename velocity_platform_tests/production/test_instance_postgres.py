"""A Dagster instance on deploy/dagster.yaml (PostgreSQL storage) materializes a partition; another
instance object, as the webserver or the daemon would hold, sees the run and its checks."""

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus

from velocity_platform.batch import run_range
from velocity_platform.connectors.state import OperationalStore
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import (
    ERP_TOKEN,
    PROJECT,
    WMS_TOKEN,
    WORLD,
    platform_environment,
)
from velocity_platform_tests.production.postgres import fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

DAY = dt.date(2026, 2, 5)


def test_a_partition_materialized_on_postgres_is_seen_by_a_second_instance(tmp_path):
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with (
        fresh_database("instance") as dagster_db,
        fresh_database("instance_ops") as store_db,
        platform_environment(tmp_path, erp, wms),
    ):
            home = Path(os.environ["DAGSTER_HOME"])
            shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
            store_url = store_db.render_as_string(hide_password=False)
            os.environ["DAGSTER_PG_URL"] = dagster_db.render_as_string(hide_password=False)
            os.environ["VELOCITY_STORE_URL"] = store_url

            [outcome] = run_range([DAY])
            assert outcome.success and not outcome.checks_failed, outcome.error

            with DagsterInstance.from_config(str(home)) as second:
                assert type(second.run_storage).__name__ == "PostgresRunStorage"
                [record] = second.get_run_records()
                run = record.dagster_run
                assert run.status == DagsterRunStatus.SUCCESS
                assert run.tags["dagster/partition"] == f"{DAY.isoformat()}|WH-01"
                velocity = second.get_latest_materialization_event(AssetKey("sku_velocity"))
                assert velocity.run_id == run.run_id
                assert velocity.dagster_event.partition == f"{DAY.isoformat()}|WH-01"

                check_runs = {}
                for check in ("reconciles_with_erp", "dlq_rate_within_limit", "txn_line_key_unique"):
                    asset = "raw_transactions" if check == "reconciles_with_erp" else "validated_transactions"
                    [execution] = second.event_log_storage.get_asset_check_execution_history(
                        AssetCheckKey(AssetKey(asset), check), limit=5
                    )
                    check_runs[check] = (execution.run_id, execution.status.value)
                assert set(check_runs.values()) == {(run.run_id, "SUCCEEDED")}

            # The run's operational writes went to PostgreSQL too.
            store = OperationalStore(store_url, migrate=False)
            try:
                assert store.dialect == "postgresql" and store.outbox(DAY)
                assert {r.status for r in store.outbox(DAY)} == {"acked"}
            finally:
                store.dispose()
