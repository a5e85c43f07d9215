"""The run summary says "reconciled" only when every ERP line is counted in exactly one place."""

from velocity_platform.batch import format_summary, reconciliation


def summary(erp_lines: int, raw_rows: int, validated: int, dead: int, unreadable_rows: int) -> dict:
    return {
        "partitions": ["2026-12-02", "2026-12-05"],
        "partitions_succeeded": 4,
        "site_days": 4,
        "erp_lines": erp_lines,
        "raw_lines": raw_rows,
        "validated_lines": validated,
        "dead_letter_lines": dead,
        "dlq_rate": dead / raw_rows,
        **reconciliation(erp_lines, raw_rows, validated, dead, unreadable_rows),
        "skus_classified": 0,
        "abc_counts": {},
        "xyz_counts": {},
        "directives": 0,
        "directives_acked": 0,
        "checks_passed": 0,
        "checks_failed": 0,
        "failed_checks": [],
    }


def test_lines_in_unreadable_pages_are_not_reconciled_but_said_where_they_are():
    # 12,094 lines read + 2 rows standing for unreadable pages; raw rows = validated + dead letters.
    s = summary(16_673, 12_096, 11_900, 196, 2)
    assert (s["reconciled"], s["unreadable_lines"], s["raw_lines_received"]) == (False, 4_579, 12_094)
    text = format_summary(s)
    assert "NOT RECONCILED" in text
    assert "4,579 ERP lines in 2 unreadable page(s)/document(s), dead-lettered" in text


def test_a_gap_without_unreadable_pages_is_counted_nowhere():
    s = summary(1_000, 990, 980, 10, 0)
    assert (s["reconciled"], s["unreadable_lines"]) == (False, 0)
    assert "10 ERP lines not received and counted nowhere" in format_summary(s)


def test_raw_rows_neither_validated_nor_dead_lettered_are_named():
    assert reconciliation(1_000, 1_000, 900, 90, 0)["not_reconciled"] == ["10 raw rows neither validated nor dead-lettered"]


def test_every_line_in_one_place_is_reconciled():
    s = summary(1_000, 1_000, 990, 10, 0)
    assert (s["reconciled"], s["not_reconciled"]) == (True, [])
    assert "NOT RECONCILED" not in format_summary(s) and "reconciled" in format_summary(s)
