"""Feed validation at the edge: valid typed lines on one side, dead letters with reasons on the other."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.daily import MAX, SUM, DailyIn, Day, daily_asset, summed_counts
from velocity_platform.defs.partitions import DateVerdict
from velocity_platform.defs.resources import WarehouseResource
from velocity_platform.defs.tables import WarehouseTables
from velocity_platform.domain.gates import daily_dlq_figures, dlq_gate
from velocity_platform.domain.validation import (
    ValidationResult,
    carry_dead_letter_history,
    validate_lines,
)

DLQ_RATE_CHECK = "dlq_rate_within_limit"
UNIQUE_KEY_CHECK = "txn_line_key_unique"


def previous_dead_letters(warehouse_tables: WarehouseTables, days: list[dt.date]) -> pl.DataFrame | None:
    """The dates' dead letters as the last materialization left them (None on a first run)."""
    with warehouse_tables.session() as tables:
        if not tables.exists("dead_letter_transactions"):
            return None
        return tables.read(
            "dead_letter_transactions", days[0], days[-1], columns=["business_date", "raw_payload", "attempt_count", "first_seen_at"]
        )


def _markdown_counts(counts: dict[str, int]) -> str:
    rows = "\n".join(f"| {field} | {n:,} |" for field, n in counts.items()) or "| (none) | 0 |"
    return f"| field | rejected lines |\n|---|---:|\n{rows}"


def _rejects_by_field(values: list) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(_markdown_counts(summed_counts(values)))


@daily_asset(
    group="feeds",
    outs={
        "validated_transactions": dg.AssetOut(description="Typed, de-duplicated ERP lines that passed every rule."),
        "dead_letter_transactions": dg.AssetOut(
            description="Every rejected line: raw payload, all reasons and fields, source batch, attempts, first/last seen.",
        ),
    },
    ins={"raw_transactions": DailyIn()},
    merge={"raw_lines": SUM, "dlq_rate": MAX, "rejected_before": SUM, "rejects_by_field": _rejects_by_field},
    check_specs=[
        dg.AssetCheckSpec(
            DLQ_RATE_CHECK,
            asset="validated_transactions",
            blocking=True,
            description="Dead-lettered lines are at most 0.1% of the day's lines, and no ERP page was unreadable.",
        ),
        dg.AssetCheckSpec(
            UNIQUE_KEY_CHECK,
            asset="validated_transactions",
            blocking=True,
            description="No (txn_id, line_no) appears twice among valid lines.",
        ),
    ],
    check_merge={
        # The limit holds for each date: a range shows its worst date's rate, never an average.
        DLQ_RATE_CHECK: {"dlq_rate": MAX, "dead_letter_lines": SUM, "lines": SUM, "pages_dead_lettered": SUM},
        UNIQUE_KEY_CHECK: {"duplicate_rows": SUM},
    },
)
def validate_feed(
    context: dg.AssetExecutionContext,
    day: dt.date,
    warehouse: WarehouseResource,
    warehouse_tables: WarehouseTables,
    raw_transactions: pl.DataFrame,
    sku_master: pl.DataFrame,
) -> Day:
    result = validate_lines(raw_transactions, sku_master, seen_at=dt.datetime.now(dt.UTC))
    # A line rejected again keeps its history: attempts so far and when it was first seen.
    rejects = carry_dead_letter_history(result.rejects, previous_dead_letters(warehouse_tables, [day]))
    result = ValidationResult(result.valid, rejects)
    reasons = result.reason_counts()
    # A page dead-lettered whole stands for lines the day is missing: planning on it would be
    # planning on a partial day, so the gate fails whatever the rate.
    top_field = next(iter(reasons), "none")
    figures = daily_dlq_figures(raw_transactions, result.rejects).filter(pl.col("business_date") == day).to_dicts()
    no_lines = {"business_date": day, "lines": 0, "rejected": 0, "dlq_rate": 0.0, "dead_pages": []}
    gate = dlq_gate(figures[0] if figures else no_lines, warehouse.dlq_rate_max, top_field)
    duplicates = result.valid.filter(pl.struct("txn_id", "line_no").is_duplicated()).height
    return Day(
        {"validated_transactions": result.valid, "dead_letter_transactions": result.rejects},
        {
            "validated_transactions": {"raw_lines": raw_transactions.height},
            "dead_letter_transactions": {
                "dlq_rate": result.dlq_rate,
                "rejected_before": result.rejects.filter(pl.col("attempt_count") > 1).height,
                "rejects_by_field": reasons,
            },
        },
        {
            DLQ_RATE_CHECK: DateVerdict(gate.passed, {**gate.metadata, "top_field": top_field}, gate.description),
            UNIQUE_KEY_CHECK: DateVerdict(duplicates == 0, {"duplicate_rows": duplicates}),
        },
    )
