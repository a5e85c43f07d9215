"""Feed validation at the edge: valid typed lines on one side, dead letters with reasons on the other."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import DUCKDB_POOL, PARTITION_METADATA, business_days
from velocity_platform.defs.resources import WarehouseResource
from velocity_platform.domain.validation import validate_lines

DLQ_RATE_CHECK = "dlq_rate_within_limit"
UNIQUE_KEY_CHECK = "txn_line_key_unique"


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
    group_name="feeds",
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            DLQ_RATE_CHECK,
            asset="validated_transactions",
            blocking=True,
            description="Dead-lettered lines are at most 0.1% of the day's lines.",
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
    raw_transactions: pl.DataFrame,
    sku_master: pl.DataFrame,
):
    result = validate_lines(raw_transactions, sku_master, seen_at=dt.datetime.now(dt.UTC))
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
            "rejects_by_field": dg.MetadataValue.md(_markdown_counts(reasons)),
        },
    )
    yield dg.AssetCheckResult(
        asset_key="validated_transactions",
        check_name=DLQ_RATE_CHECK,
        passed=result.dlq_rate <= warehouse.dlq_rate_max,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "dlq_rate": result.dlq_rate,
            "limit": warehouse.dlq_rate_max,
            "dead_letter_lines": result.rejects.height,
            "lines": result.total,
            "top_field": next(iter(reasons), "none"),
        },
        description=None
        if result.dlq_rate <= warehouse.dlq_rate_max
        else f"{result.dlq_rate:.3%} of lines dead-lettered (limit {warehouse.dlq_rate_max:.3%}); "
        f"see dead_letter_transactions, most rejects on field '{next(iter(reasons), '?')}'",
    )
    duplicates = result.valid.select(pl.struct("txn_id", "line_no").is_duplicated().sum()).item()
    yield dg.AssetCheckResult(
        asset_key="validated_transactions",
        check_name=UNIQUE_KEY_CHECK,
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicate_rows": duplicates},
    )
