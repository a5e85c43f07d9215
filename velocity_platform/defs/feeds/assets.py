"""Feed validation at the edge: valid typed lines on one side, dead letters with reasons on the other."""


import datetime as dt

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from velocity_platform.defs.partitions import (
    BACKFILL_POLICY,
    DUCKDB_POOL,
    PARTITION_METADATA,
    business_days,
    partition_dates,
)
from velocity_platform.defs.resources import WarehouseResource
from velocity_platform.domain.validation import (
    ValidationResult,
    carry_dead_letter_history,
    validate_lines,
)

DLQ_RATE_CHECK = "dlq_rate_within_limit"
UNIQUE_KEY_CHECK = "txn_line_key_unique"
# Where the I/O manager keeps dead_letter_transactions (schema "warehouse", table named after the asset).
DEAD_LETTER_TABLE = ("warehouse", "dead_letter_transactions")


def previous_dead_letters(warehouse_tables: DuckDBResource, days: list[dt.date]) -> pl.DataFrame | None:
    """The dates' dead letters as the last materialization left them (None on a first run)."""
    with warehouse_tables.get_connection() as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [DEAD_LETTER_TABLE[0], DEAD_LETTER_TABLE[1]],
        ).fetchone()[0]
        if not exists:
            return None
        return con.execute(
            f"SELECT business_date, raw_payload, attempt_count, first_seen_at FROM {'.'.join(DEAD_LETTER_TABLE)} "
            "WHERE business_date BETWEEN ? AND ?",
            [days[0], days[-1]],
        ).pl()


def daily_dlq_rates(raw: pl.DataFrame, rejects: pl.DataFrame) -> pl.DataFrame:
    """Dead-lettered share of each business date's raw lines."""
    lines = raw.group_by("business_date").len("lines")
    rejected = rejects.group_by("business_date").len("rejected")
    return lines.join(rejected, on="business_date", how="left").select(
        "business_date", (pl.col("rejected").fill_null(0) / pl.col("lines")).alias("dlq_rate")
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
    warehouse_tables: DuckDBResource,
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
    # A page dead-lettered whole stands for lines the day is missing: planning on it would be
    # planning on a partial day, so the gate fails whatever the rate.
    dead_pages = result.rejects.filter(pl.col("fields").list.contains("page"))["source_batch"].to_list()
    # The limit holds for each date: a backfill range must not average a bad day away.
    daily = daily_dlq_rates(raw_transactions, result.rejects)
    over = daily.filter(pl.col("dlq_rate") > warehouse.dlq_rate_max)
    worst_rate = float(daily["dlq_rate"].max() or 0.0)
    gate_passed = over.is_empty() and not dead_pages
    if dead_pages:
        gate_description = (
            f"{len(dead_pages)} ERP page(s) were unreadable and dead-lettered whole ({', '.join(dead_pages[:5])}): "
            "the day is incomplete, so it stops before planning. Re-materialize once the ERP serves them."
        )
    elif not gate_passed:
        worst = over.sort("dlq_rate", descending=True).row(0, named=True)
        dates = f" on {over.height} of {daily.height} dates" if daily.height > 1 else ""
        gate_description = (
            f"{worst['dlq_rate']:.3%} of lines dead-lettered on {worst['business_date']}{dates} "
            f"(limit {warehouse.dlq_rate_max:.3%}); "
            f"see dead_letter_transactions, most rejects on field '{next(iter(reasons), '?')}'"
        )
    else:
        gate_description = None
    yield dg.AssetCheckResult(
        asset_key="validated_transactions",
        check_name=DLQ_RATE_CHECK,
        passed=gate_passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "dlq_rate": result.dlq_rate,
            "worst_daily_dlq_rate": worst_rate,
            "dates_over_limit": over.height,
            "limit": warehouse.dlq_rate_max,
            "dead_letter_lines": result.rejects.height,
            "lines": result.total,
            "top_field": next(iter(reasons), "none"),
            "pages_dead_lettered": len(dead_pages),
        },
        description=gate_description,
    )
    duplicates = result.valid.select(pl.struct("txn_id", "line_no").is_duplicated().sum()).item()
    yield dg.AssetCheckResult(
        asset_key="validated_transactions",
        check_name=UNIQUE_KEY_CHECK,
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicate_rows": duplicates},
    )
