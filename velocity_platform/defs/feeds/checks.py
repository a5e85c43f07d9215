"""Feed gates computed outside validate_feed: the ingestion success rate."""


import dagster as dg

from velocity_platform.defs.partitions import business_days, partition_dates, record_per_date, same_verdict_each_date
from velocity_platform.defs.resources import OperationsResource
from velocity_platform.domain.signals import ingestion_success_rate

INGESTION_SUCCESS_CHECK = "ingestion_success_rate"


def latest_metadata(context: dg.AssetCheckExecutionContext, asset: str) -> dict[str, object] | None:
    """Plain values of the partition's latest materialization metadata of `asset` (None if never built).

    For a backfill's range, the last date's: a ranged run records the range's figures on each date.
    """
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[context.partition_keys[-1]]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


@dg.asset_check(
    asset="validated_transactions",
    name=INGESTION_SUCCESS_CHECK,
    blocking=True,
    partitions_def=business_days,
    description="At least 99.95% of the lines the ERP holds for the date arrived as readable lines "
    "(lines in pages dead-lettered whole did not).",
)
def ingestion_success_rate_check(
    context: dg.AssetCheckExecutionContext, operations: OperationsResource
) -> dg.AssetCheckResult:
    dates = partition_dates(context)
    day = str(dates[0]) if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    # The pull's own figures, from raw_transactions' materialization: no table is read again.
    pull = latest_metadata(context, "raw_transactions")
    if pull is None or "erp_lines" not in pull:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"raw_transactions has no materialization with erp_lines for {day}; materialize the partition",
        )
    source_lines = int(pull["erp_lines"])
    received = int(pull.get("lines_received", pull.get("dagster/row_count", 0)))
    rate = ingestion_success_rate(received, source_lines)
    passed = rate >= operations.ingestion_success_min
    pages_dead = int(pull.get("pages_dead_lettered", 0))
    missing = max(source_lines - received, 0)
    result = dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "success_rate": dg.MetadataValue.float(rate),
            "minimum": dg.MetadataValue.float(operations.ingestion_success_min),
            "erp_lines": source_lines,
            "lines_received": received,
            "lines_missing": missing,
            "pages_dead_lettered": pages_dead,
        },
        description=None
        if passed
        else f"only {rate:.3%} of the {source_lines:,} lines the ERP holds for {day} arrived as readable lines "
        f"(minimum {operations.ingestion_success_min:.2%}): {missing:,} missing"
        + (f", in {pages_dead} page(s) dead-lettered whole" if pages_dead else "")
        + ". Re-materialize the partition once the ERP serves them; until then the day does not reach the WMS.",
    )
    # The pull's figures are the range's in a backfill run: its verdict stands for each date.
    record_per_date(context, "validated_transactions", INGESTION_SUCCESS_CHECK, same_verdict_each_date(dates, result), True)
    return result
