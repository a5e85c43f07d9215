"""One way to handle a range of dates: figures merged by their declared rule, and a range's check
result that no good date can average a bad one away from."""

import datetime as dt

import dagster as dg

from velocity_platform.defs.daily import COUNTS, MAX, SUM, merge_figures, range_result
from velocity_platform.defs.partitions import DateVerdict, SiteDay

D1, D2, D3 = (SiteDay("WH-01", dt.date(2026, 3, d)) for d in (1, 2, 3))


def test_each_figure_merges_by_its_declared_rule_and_the_rest_are_the_latest_dates():
    days = [
        {"lines": 10, "dlq_rate": 0.002, "by_field": {"sku_id": 2}, "classified_as_of": "2026-03-01"},
        {"lines": 5, "dlq_rate": 0.0005, "by_field": {"sku_id": 1, "qty": 3}, "classified_as_of": "2026-03-02"},
    ]
    merged = merge_figures(days, {"lines": SUM, "dlq_rate": MAX, "by_field": COUNTS})
    assert merged["lines"] == 15
    assert merged["dlq_rate"] == 0.002
    assert merged["by_field"].data == {"sku_id": 3, "qty": 3}
    assert merged["classified_as_of"] == "2026-03-02"


def test_a_range_fails_when_one_date_fails_however_good_the_others():
    verdicts = {
        D1: DateVerdict(True, {"difference": 0}),
        D2: DateVerdict(False, {"difference": -4}, "received 96 lines but the ERP holds 100"),
        D3: DateVerdict(True, {"difference": 0}),
    }
    result = range_result("reconciles_with_erp", verdicts, {"difference": SUM})
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["difference"].value == -4
    assert result.metadata["dates_failing"].value == 1
    assert "1 of 3 site-days fail" in result.description and "WH-01: received 96 lines" in result.description


def test_a_network_fails_when_one_site_fails_and_the_alert_names_that_site():
    verdicts = {
        SiteDay("CHI", D1.business_date): DateVerdict(True, {"dlq_rate": 0.0001}),
        SiteDay("BER", D1.business_date): DateVerdict(False, {"dlq_rate": 0.02}, "dead letters over the limit"),
    }
    result = range_result("dlq_rate_within_limit", verdicts, {"dlq_rate": MAX})
    assert not result.passed
    assert result.metadata["warehouses_failing"].value == 1
    assert result.metadata["shown_for"].value == "BER 2026-03-01"
    assert "BER: dead letters over the limit" in result.description and "CHI" not in result.description


def test_a_range_whose_failing_dates_are_warnings_is_a_warning():
    verdicts = {
        D1: DateVerdict(False, {}, "pages dead-lettered", dg.AssetCheckSeverity.WARN),
        D2: DateVerdict(True, {}),
    }
    result = range_result("reconciles_with_erp", verdicts, {})
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN


def test_one_date_is_its_own_verdict():
    result = range_result("txn_line_key_unique", {D1: DateVerdict(True, {"duplicate_rows": 0})}, {"duplicate_rows": SUM})
    assert result.passed and "dates_failing" not in result.metadata and result.description is None
