"""Feed gates computed outside validate_feed: the ingestion success rate."""


import datetime as dt

import dagster as dg

from velocity_platform.defs.daily import MIN, SUM, daily_check
from velocity_platform.defs.ingest.assets import pull_key
from velocity_platform.defs.partitions import DateVerdict, SiteDay
from velocity_platform.defs.resources import OperationsResource
from velocity_platform.domain.signals import ingestion_success_rate

INGESTION_SUCCESS_CHECK = "ingestion_success_rate"


def latest_metadata(context: dg.AssetCheckExecutionContext, asset: str, site_day: SiteDay) -> dict[str, object] | None:
    """Plain values of the site-day's latest materialization metadata of `asset` (None if never built).

    A ranged run records the range's figures on each site-day (figures that must stay per
    site-day are keyed by it, like raw_transactions' `pull_by_date`).
    """
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[site_day.key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


# A range's result: the worst date's rate, the lines added up.
INGESTION_MERGE = {"success_rate": MIN, "erp_lines": SUM, "lines_received": SUM, "lines_missing": SUM, "pages_dead_lettered": SUM}


@daily_check(
    asset="validated_transactions",
    name=INGESTION_SUCCESS_CHECK,
    blocking=True,
    merge=INGESTION_MERGE,
    description="At least 99.95% of the lines the ERP holds for the date arrived as readable lines "
    "(lines in pages dead-lettered whole did not).",
)
def ingestion_success_rate_check(
    context: dg.AssetCheckExecutionContext, days: list[dt.date], warehouse_id: str, operations: OperationsResource
) -> dict[dt.date, DateVerdict]:
    # The pull's own figures, from raw_transactions' materialization: no table is read again.
    pull = latest_metadata(context, "raw_transactions", SiteDay(warehouse_id, days[-1])) or {}
    by_date = pull.get("pull_by_date") or {}
    return {
        day: _ingestion_verdict(day, by_date.get(pull_key(warehouse_id, day)), operations.ingestion_success_min) for day in days
    }


def _ingestion_verdict(day: dt.date, figures: dict | None, minimum: float) -> DateVerdict:
    """One date: the share of the lines the ERP holds that arrived readable, against the minimum."""
    if figures is None:
        return DateVerdict(
            False,
            description=f"raw_transactions has no pull figures for {day}; materialize the partition",
        )
    source_lines, received = int(figures["erp_lines"]), int(figures["lines_received"])
    pages_dead = int(figures.get("pages_dead_lettered", 0))
    rate = ingestion_success_rate(received, source_lines)
    missing = max(source_lines - received, 0)
    passed = rate >= minimum
    return DateVerdict(
        passed,
        {
            "success_rate": dg.MetadataValue.float(rate),
            "minimum": dg.MetadataValue.float(minimum),
            "erp_lines": source_lines,
            "lines_received": received,
            "lines_missing": missing,
            "pages_dead_lettered": pages_dead,
        },
        None
        if passed
        else f"only {rate:.3%} of the {source_lines:,} lines the ERP holds for {day} arrived as readable lines "
        f"(minimum {minimum:.2%}): {missing:,} missing"
        + (f", in {pages_dead} page(s) dead-lettered whole" if pages_dead else "")
        + ". Re-materialize the partition once the ERP serves them; until then the day does not reach the WMS.",
    )
