"""Feed validation at the edge: valid typed lines on one side, dead letters with reasons on the other."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import (
    BACKFILL_POLICY,
    DUCKDB_POOL,
    PARTITION_METADATA,
    business_days,
    partition_dates,
)
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


@dg.multi_asset(
    outs={
        "validated_transactions": dg.AssetOut(
            metadata=PARTITION_METADATA,
            kinds={"duckdb", "polars"},
            description="Typed, de-duplicated ERP lines that passed every rule.",
        ),
        "dead_letter_transactions": dg.AssetOut(
            metadata=PARTITION_METADATA,
            kinds={"duckdb", "polars"},
            description="Every rejected line: raw payload, all reasons and fields, source batch, attempts, first/last seen.",
        ),
    },
    partitions_def=business_days,
    backfill_policy=BACKFILL_POLICY,
    group_name="feeds",
    pool=DUCKDB_POOL,
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
)
def validate_feed(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    warehouse_tables: WarehouseTables,
    raw_transactions: pl.DataFrame,
    sku_master: pl.DataFrame,
):
    days = partition_dates(context)
    result = validate_lines(raw_transactions, sku_master, seen_at=dt.datetime.now(dt.UTC))
    # A line rejected again keeps its history: attempts so far and when it was first seen.
    rejects = carry_dead_letter_history(result.rejects, previous_dead_letters(warehouse_tables, days))
    result = ValidationResult(result.valid, rejects)
    reasons = result.reason_counts()
    yield dg.Output(
        result.valid,
        output_name="validated_transactions",
        metadata={"dagster/row_count": result.valid.height, "raw_lines": raw_transactions.height},
    )
    yield dg.Output(
        result.rejects,
        output_name="dead_letter_transactions",
        metadata={
            "dagster/row_count": result.rejects.height,
            "dlq_rate": result.dlq_rate,
            "rejected_before": result.rejects.filter(pl.col("attempt_count") > 1).height,
            "rejects_by_field": dg.MetadataValue.md(_markdown_counts(reasons)),
        },
    )
    # The limit holds for each date (a backfill range must not average a bad day away), and a
    # page dead-lettered whole stands for lines the day is missing: planning on it would be
    # planning on a partial day, so the gate fails whatever the rate.
    top_field = next(iter(reasons), "none")
    figures = {row["business_date"]: row for row in daily_dlq_figures(raw_transactions, result.rejects).iter_rows(named=True)}
    no_lines = {"lines": 0, "rejected": 0, "dlq_rate": 0.0, "dead_pages": []}
    verdicts = {
        day: dlq_gate(figures.get(day, {**no_lines, "business_date": day}), warehouse.dlq_rate_max, top_field)
        for day in days
    }
    failing = [(day, v) for day, v in verdicts.items() if not v.passed]
    dead_pages = sum(v.metadata["pages_dead_lettered"] for v in verdicts.values())
    gate_description = None
    if failing:
        gate_description = failing[0][1].description
        if len(verdicts) > 1:
            gate_description = f"{len(failing)} of {len(verdicts)} dates fail the gate; first {failing[0][0]}: {gate_description}"
    yield dg.AssetCheckResult(
        asset_key="validated_transactions",
        check_name=DLQ_RATE_CHECK,
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "dlq_rate": result.dlq_rate,
            "worst_daily_dlq_rate": max((v.metadata["dlq_rate"] for v in verdicts.values()), default=0.0),
            "dates_failing": len(failing),
            "limit": warehouse.dlq_rate_max,
            "dead_letter_lines": result.rejects.height,
            "lines": result.total,
            "top_field": top_field,
            "pages_dead_lettered": dead_pages,
        },
        description=gate_description,
    )
    duplicated = result.valid.filter(pl.struct("txn_id", "line_no").is_duplicated())
    duplicates = duplicated.height
    yield dg.AssetCheckResult(
        asset_key="validated_transactions",
        check_name=UNIQUE_KEY_CHECK,
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicate_rows": duplicates},
    )
