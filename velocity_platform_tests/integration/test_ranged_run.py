"""A backfill run over a range of dates ends exactly where the same dates one run each end."""

import datetime as dt

import dagster as dg
import pytest

from velocity_platform.batch import business_dates, run_range, run_together
from velocity_platform.defs.partitions import SiteDay
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.warehouse import warehouse_tables

pytestmark = pytest.mark.integration

DATES = business_dates(dt.date(2026, 2, 3), dt.date(2026, 2, 7))
# What says when or how often something happened, not what: differs between any two runs.
WHEN = {"first_seen_at", "last_seen_at", "acked_at", "ack_id", "http_status", "attempts", "detail"}


def build(root, together: bool):
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with platform_environment(root, erp, wms) as platform:
        if together:
            outcomes = [run_together(DATES)]
        else:
            outcomes = run_range(DATES)
        assert all(o.success for o in outcomes), [o.error for o in outcomes]
        assert not any(o.checks_failed for o in outcomes), [o.checks_failed for o in outcomes]
        if together:
            checks_by_date = evaluated_per_date()
            # Every check shows a verdict on every date of the range, not "skipped".
            assert checks_by_date and all(
                statuses == {str(SiteDay(DEFAULT_WAREHOUSE_ID, d).key): "SUCCEEDED" for d in DATES} for statuses in checks_by_date.values()
            ), checks_by_date
        sim = platform.wms_app.state.simulator
        return warehouse_tables(platform.settings, WHEN), sim.loc_of_sku.tolist(), platform.wms_stats()["applied_per_key"]


def evaluated_per_date() -> dict[str, dict[str, str]]:
    """Check -> date -> status of its execution on that partition."""
    from velocity_platform.definitions import defs

    graph = defs().resolve_job_def("nightly_slotting_batch").asset_layer.asset_graph
    # The checks declared per partition; the gates inside an asset record one result per run.
    checks = [key for key in graph.asset_check_keys if graph.get_check_spec(key).partitions_def is not None]
    assert len(checks) >= 5
    with dg.DagsterInstance.get() as instance:
        return {
            key.to_user_string(): {
                r.partition: r.status.value
                for r in instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
                if r.partition is not None
            }
            for key in checks
        }


def test_one_run_over_the_range_matches_one_run_per_date(tmp_path_factory):
    day_by_day = build(tmp_path_factory.mktemp("day-by-day"), together=False)
    together = build(tmp_path_factory.mktemp("together"), together=True)
    by_day_tables, by_day_slotting, by_day_applied = day_by_day
    tables_together, slotting_together, applied_together = together
    assert by_day_tables["slotting_directives"].height > 0, "the world should need moves in five days"
    assert set(tables_together) == set(by_day_tables)
    for name, frame in by_day_tables.items():
        assert tables_together[name].equals(frame), name
    # The WMS ends with the same slotting, each directive applied once.
    assert slotting_together == by_day_slotting
    assert applied_together == by_day_applied and set(applied_together.values()) == {1}
