"""The DLQ gate's figures and verdict, on frames (no Dagster)."""

import datetime as dt

import polars as pl

from velocity_platform.domain.gates import daily_dlq_figures, dlq_gate

DAY, NEXT = dt.date(2026, 3, 2), dt.date(2026, 3, 3)


def rejects(rows: list[tuple[dt.date, str, list[str]]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"business_date": pl.Date, "source_batch": pl.String, "fields": pl.List(pl.String)}, orient="row"
    )


def test_figures_are_per_date_and_name_the_pages_lost_whole():
    raw = pl.DataFrame({"business_date": [DAY] * 4 + [NEXT] * 2})
    figures = daily_dlq_figures(
        raw, rejects([(DAY, "erp:p1", ["sku_id"]), (NEXT, "erp:p7", ["page"]), (NEXT, "erp:p8", ["uom", "sku_id"])])
    ).to_dicts()
    assert [(f["business_date"], f["lines"], f["rejected"], f["dead_pages"]) for f in figures] == [
        (DAY, 4, 1, []),
        (NEXT, 2, 2, ["erp:p7"]),
    ]
    assert figures[0]["dlq_rate"] == 1 / 4


def test_a_day_within_the_limit_passes_and_one_over_it_fails_naming_the_field():
    within = {"business_date": DAY, "lines": 10_000, "rejected": 10, "dlq_rate": 0.001, "dead_pages": []}
    assert dlq_gate(within, 0.001, "sku_id").passed
    over = {**within, "rejected": 11, "dlq_rate": 0.0011}
    verdict = dlq_gate(over, 0.001, "sku_id")
    assert not verdict.passed
    assert "'sku_id'" in verdict.description and verdict.metadata["dead_letter_lines"] == 11


def test_a_page_lost_whole_fails_the_day_whatever_the_rate():
    figures = {"business_date": DAY, "lines": 10_000, "rejected": 1, "dlq_rate": 0.0001, "dead_pages": ["erp:p3"]}
    verdict = dlq_gate(figures, 0.001, "page")
    assert not verdict.passed
    assert "erp:p3" in verdict.description and verdict.metadata["pages_dead_lettered"] == 1
