"""Both simulators on loopback, three consecutive partitions through a real Dagster instance."""

import datetime as dt

import pytest

from velocity_platform.batch import business_dates, run_range, summarize
from velocity_platform.connectors.erp import ErpClient
from velocity_platform_tests.warehouse import open_tables

pytestmark = pytest.mark.integration

DATES = business_dates(dt.date(2026, 2, 5), dt.date(2026, 2, 7))


def table_counts(settings) -> dict[str, dict[dt.date, int]]:
    with open_tables(settings) as con:
        counts = {}
        for table in (
            "raw_transactions",
            "validated_transactions",
            "dead_letter_transactions",
            "sales_history",
            "daily_sku_demand",
            "sku_velocity",
            "slotting_directives",
            "wms_directive_acks",
        ):
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'warehouse' AND table_name = ?",
                [table],
            ).fetchone()[0]
            # An empty output writes no table (e.g. a day without a single dead letter).
            rows = con.execute(f"SELECT business_date, count(*) FROM warehouse.{table} GROUP BY 1").fetchall() if exists else []
            counts[table] = dict(rows)
        return counts


@pytest.fixture(scope="module")
def three_days(small_platform):
    outcomes = run_range(DATES)
    return small_platform, outcomes


def test_every_partition_succeeds_and_every_check_passes(three_days):
    _, outcomes = three_days
    assert [o.success for o in outcomes] == [True, True, True], [o.error for o in outcomes]
    assert all(not o.checks_failed for o in outcomes), [o.checks_failed for o in outcomes]
    assert all(o.checks_passed >= 5 for o in outcomes)


def test_every_erp_line_is_counted_exactly_once(three_days):
    platform, _ = three_days
    counts = table_counts(platform.settings)
    with ErpClient(platform.erp_url, "erp-test-token") as erp:
        for day in DATES:
            erp_lines = erp.count_lines(day)
            raw = counts["raw_transactions"][day]
            assert raw == erp_lines
            assert raw == counts["validated_transactions"][day] + counts["dead_letter_transactions"].get(day, 0)
    with open_tables(platform.settings) as con:
        duplicates = con.execute(
            "SELECT count(*) FROM (SELECT txn_id, line_no FROM warehouse.validated_transactions GROUP BY 1, 2 HAVING count(*) > 1)"
        ).fetchone()[0]
        dead_letters_without_reason = con.execute(
            "SELECT count(*) FROM warehouse.dead_letter_transactions WHERE len(reasons) = 0"
        ).fetchone()[0]
    assert duplicates == 0 and dead_letters_without_reason == 0


def test_the_wms_received_each_directive_once(three_days):
    platform, _ = three_days
    with open_tables(platform.settings) as con:
        acked = {r[0] for r in con.execute("SELECT directive_id FROM warehouse.wms_directive_acks WHERE status = 'acked'").fetchall()}
        planned = {r[0] for r in con.execute("SELECT directive_id FROM warehouse.slotting_directives").fetchall()}
    stats = platform.wms_stats()
    assert planned, "the small world should need some moves within three days"
    assert acked == planned
    assert set(stats["applied_per_key"]) == planned
    assert set(stats["applied_per_key"].values()) == {1}


def test_rematerializing_a_partition_changes_no_count_and_sends_nothing(three_days):
    platform, _ = three_days
    before_counts = table_counts(platform.settings)
    before_wms = platform.wms_stats()
    with open_tables(platform.settings) as con:
        ids_before = sorted(r[0] for r in con.execute(
            "SELECT directive_id FROM warehouse.slotting_directives WHERE business_date = ?", [DATES[1]]
        ).fetchall())
    [again] = run_range([DATES[1]])
    assert again.success and not again.checks_failed
    assert table_counts(platform.settings) == before_counts
    after_wms = platform.wms_stats()
    assert after_wms["applied_per_key"] == before_wms["applied_per_key"]
    assert after_wms["received"] == before_wms["received"]
    with open_tables(platform.settings) as con:
        ids_after = sorted(r[0] for r in con.execute(
            "SELECT directive_id FROM warehouse.slotting_directives WHERE business_date = ?", [DATES[1]]
        ).fetchall())
    assert ids_after == ids_before


def test_summary_reconciles(three_days):
    platform, outcomes = three_days
    with ErpClient(platform.erp_url, "erp-test-token") as erp:
        erp_lines = sum(erp.count_lines(d) for d in DATES)
    summary = summarize(DATES, outcomes, erp_lines, platform.settings)
    assert summary["erp_lines"] == summary["raw_lines"] == summary["validated_lines"] + summary["dead_letter_lines"]
    assert summary["skus_classified"] == sum(summary["abc_counts"].values()) > 0
    # three days of history are not the eight weeks XYZ needs: every SKU is shown apart, none as Z
    assert summary["xyz_counts"] == {"not yet classified": summary["skus_classified"]}
    assert summary["directives"] == summary["directives_acked"]
    assert summary["checks_failed"] == 0


def test_the_dead_letter_path_ran(three_days):
    platform, _ = three_days
    counts = table_counts(platform.settings)
    assert sum(counts["dead_letter_transactions"].values()) > 0
