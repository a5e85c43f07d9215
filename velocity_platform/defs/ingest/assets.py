"""Ingestion: the ERP's order lines for a business date, and the SKU master."""

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import polars as pl

from velocity_platform.connectors.erp_pages import (
    IngestedDay,
    ReceivedPage,
    raw_lines_from_received,
    read_erp_page,
    read_sku_page,
    sku_master_from_pages,
)
from velocity_platform.connectors.http import UpstreamError
from velocity_platform.defs.ops.retries import retry_or_fail
from velocity_platform.defs.daily import BY_DATE, COUNTS, SUM, Day, daily_asset
from velocity_platform.defs.partitions import DUCKDB_POOL, DateVerdict, SiteDay
from velocity_platform.defs.resources import (
    ErpResource,
    OperationsResource,
    TransactionSourceResource,
    WarehouseResource,
)
from velocity_platform.domain.history import with_provenance

RECONCILIATION_CHECK = "reconciles_with_erp"


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    description="The ERP's SKU master: hierarchy, unit cube and weight, case and pallet quantities, units of measure.",
)
def sku_master(
    context: dg.AssetExecutionContext,
    erp: ErpResource,
    transaction_source: TransactionSourceResource,
    warehouse: WarehouseResource,
    operations: OperationsResource,
) -> pl.DataFrame:
    if transaction_source.is_file:  # a file-drop export instead of the ERP: see the end of this module
        return sku_master_from_file(context, transaction_source, warehouse.timezone)
    with erp.client() as client:
        try:
            master = sku_master_from_pages(client.skus(reader=read_sku_page))
        except UpstreamError as exc:
            # An ERP outage in the nightly run is retried later inside its batch window (defs/ops/retries.py).
            failure = dg.Failure(description=f"could not read the SKU master: {exc}")
            retry_or_fail(context, operations, exc, failure)
    context.add_output_metadata(
        {
            "dagster/row_count": master.height,
            "http_requests": client.stats.requests,
            "http_retries": client.stats.retries,
            "categories": master["category"].n_unique(),
            "new_in_last_30_days": master.filter(
                pl.col("introduced_on") >= pl.col("introduced_on").max() - pl.duration(days=30)
            ).height,
        }
    )
    return master


@dataclass(frozen=True)
class SourcePull:
    """One business date as a source delivered it, and what the source says it holds."""

    ingested: IngestedDay
    source_lines: int  # lines the source holds for the date (the reconciliation target)
    metadata: dict  # how the pull went: requests, retries, ...


def pull_from_erp(
    context: dg.AssetExecutionContext,
    day: dt.date,
    erp: ErpResource,
    timezone: str,
    operations: OperationsResource,
    warehouse_id: str | None = None,
) -> SourcePull:
    """Count the ERP's lines for the day, then page through its documents.

    Each page is read inside the client's retry loop (a truncated page is fetched again); a page
    that never becomes readable comes back with its error and is dead-lettered whole.
    """
    with erp.client() as client:
        try:
            erp_lines = client.count_lines(day, warehouse_id=warehouse_id)
            pages = [
                ReceivedPage(page.source_batch, page.body, page.parsed, page.error, page.fetches, page.cursor, page.limit)
                for page in client.transaction_pages(day, timezone, reader=read_erp_page, warehouse_id=warehouse_id)
            ]
        except UpstreamError as exc:
            # Nothing is stored: the partition keeps its previous rows (if any) until a run succeeds.
            # An ERP outage in the nightly run is retried later inside its batch window (defs/ops/retries.py).
            failure = dg.Failure(
                description=f"ERP pull for {day} failed, nothing stored: {exc}",
                metadata={"http_requests": client.stats.requests, "http_retries": client.stats.retries},
            )
            retry_or_fail(context, operations, exc, failure)
        stats = client.stats
    return SourcePull(
        raw_lines_from_received(pages, day),
        erp_lines,
        {
            "http_requests": stats.requests,
            "http_retries": stats.retries,
            "retried_failures": dg.MetadataValue.json(dict(stats.reasons)),
        },
    )


# How a range's pull figures add up (any other figure is the latest date's).
PULL_MERGE = {
    "erp_lines": SUM,
    "lines_received": SUM,
    "documents": SUM,
    "pages": SUM,
    "pages_dead_lettered": SUM,
    "repeated_documents_dropped": SUM,
    "documents_not_fitting_contract": SUM,
    "unexpected_fields": COUNTS,
    "http_requests": SUM,
    "http_retries": SUM,
    "retried_failures": COUNTS,
    "file_lines": SUM,
    "excluded_non_inventory_lines": SUM,
    "excluded_by_code": COUNTS,
    "pull_by_date": BY_DATE,
}
RECONCILIATION_MERGE = {
    "erp_lines": SUM,
    "raw_lines": SUM,
    "difference": SUM,
    "pages_dead_lettered": SUM,
    "unreadable_documents": SUM,
    "unreadable_lines": SUM,
}


@daily_asset(
    group="ingest",
    merge=PULL_MERGE,
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILIATION_CHECK,
            asset="raw_transactions",
            blocking=True,
            description="Lines received equal the lines the ERP says it holds for the date.",
        )
    ],
    check_merge={RECONCILIATION_CHECK: RECONCILIATION_MERGE},
    description="ERP order lines for the business date, flattened from the order documents, as received.",
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    day: dt.date,
    erp: ErpResource,
    warehouse: WarehouseResource,
    transaction_source: TransactionSourceResource,
    operations: OperationsResource,
) -> Day:
    if transaction_source.is_file:  # a file-drop export instead of the ERP: see the end of this module
        pull = pull_from_file(day, transaction_source, warehouse.timezone, warehouse.warehouse_id)
    else:
        pull = pull_from_erp(context, day, erp, warehouse.timezone, operations, warehouse.warehouse_id)
    ingested = pull.ingested
    figures = {
        "erp_lines": pull.source_lines,
        "lines_received": ingested.lines_received,
        "documents": ingested.documents,
        "pages": ingested.pages,
        "pages_dead_lettered": len(ingested.dead_lettered_pages),
        "repeated_documents_dropped": ingested.repeated_documents,
        "documents_not_fitting_contract": ingested.misfit_documents,
        "unexpected_fields": ingested.unexpected_fields,
        **pull.metadata,
        # Each site-day's own counts, kept apart in a range's metadata: the ingestion gate judges each.
        "pull_by_date": dg.MetadataValue.json(
            {
                pull_key(warehouse.warehouse_id, day): {
                    "erp_lines": pull.source_lines,
                    "lines_received": ingested.lines_received,
                    "pages_dead_lettered": len(ingested.dead_lettered_pages),
                }
            }
        ),
    }
    return Day(with_provenance(ingested.lines), figures, {RECONCILIATION_CHECK: reconciles(day, pull)})


def pull_key(warehouse_id: str, day: dt.date) -> str:
    """The key of a site-day's own figures in `pull_by_date` ("WH-01 2026-01-05")."""
    return str(SiteDay(warehouse_id, day))


def reconciles(day: dt.date, pull: SourcePull) -> DateVerdict:
    """Lines received == lines the source holds, for one date.

    When whole pages were dead-lettered the missing lines are in them: the check still fails, but
    as a warning, so the rest of the day (and the page's dead letter) lands. Any other gap blocks.
    """
    received, source_lines = pull.ingested.lines_received, pull.source_lines
    unreadable = pull.ingested.dead_lettered_pages
    dead_pages = [b for b in unreadable if not b.endswith(":document")]
    explained = bool(unreadable) and received < source_lines
    # Only single documents unreadable alone: every other line arrived, and theirs are dead-lettered
    # with them (counted by the DLQ gate), so the date reconciles; a page lost whole does not.
    by_documents = explained and not dead_pages
    if received == source_lines:
        description = None
    elif by_documents:
        description = (
            f"received {received:,} of the {source_lines:,} lines the ERP holds for {day}; the other "
            f"{source_lines - received:,} are in {len(unreadable)} document(s) unreadable alone, dead-lettered "
            f"with their raw bytes ({', '.join(unreadable[:5])})."
        )
    elif explained:
        description = (
            f"received {received:,} of the {source_lines:,} lines the ERP holds for {day}; the other "
            f"{source_lines - received:,} are in {len(dead_pages)} unreadable page(s) dead-lettered whole "
            f"({', '.join(dead_pages[:5])}) and {len(unreadable) - len(dead_pages)} unreadable document(s). Re-materialize the partition when the ERP serves them intact."
        )
    else:
        description = f"received {received:,} lines but the ERP holds {source_lines:,} for {day}; re-run the partition"
    return DateVerdict(
        passed=received == source_lines or by_documents,
        metadata={
            "erp_lines": source_lines,
            "raw_lines": received,
            "difference": received - source_lines,
            "pages_dead_lettered": len(dead_pages),
            "unreadable_documents": len(unreadable) - len(dead_pages),
            "unreadable_lines": source_lines - received if explained else 0,
        },
        description=description,
        severity=dg.AssetCheckSeverity.WARN if explained else dg.AssetCheckSeverity.ERROR,
    )


# --- the file-drop source (VELOCITY_SOURCE=file): the same assets, read from an ERP export ------


def pull_from_file(day: dt.date, source: TransactionSourceResource, timezone: str, warehouse_id: str) -> SourcePull:
    """The export's lines for the day and site (a network preset maps each line to its site; a
    one-warehouse export is the site's whole). Non-inventory lines (postage, fees, manual lines)
    are counted here and go no further; every other line is a raw line for validation to judge."""
    whole = source.export(timezone)
    if whole.warehouses and warehouse_id not in whole.warehouses:
        raise dg.Failure(
            f"{warehouse_id}: the {source.file_preset} preset maps {whole.path.name}'s lines to {', '.join(whole.warehouses)}, "
            f"none to {warehouse_id}; run those sites (run --warehouse ID, or register them with `velocity-platform warehouses add`)"
        )
    export = whole.of_site(warehouse_id)
    lines = export.raw_lines(day)
    counts = export.line_counts(day)
    excluded = export.excluded_counts(day)
    ingested = IngestedDay(lines, pages=1, documents=lines["txn_id"].n_unique(), repeated_documents=0)
    return SourcePull(
        ingested,
        counts["raw_lines"],
        {
            "source": f"file {export.path.name} ({source.file_preset})",
            "file_lines": counts["file_lines"],
            "excluded_non_inventory_lines": counts["excluded_lines"],
            "excluded_by_code": dg.MetadataValue.json(excluded),
        },
    )


def sku_master_from_file(
    context: dg.AssetExecutionContext, source: TransactionSourceResource, timezone: str
) -> pl.DataFrame:
    export = source.export(timezone)
    master = export.sku_master()
    context.add_output_metadata(
        {
            "dagster/row_count": master.height,
            "source": f"file {export.path.name} ({source.file_preset})",
            "cube_is_default": master.filter(pl.col("cube_is_default")).height,
            "default_unit_cube_ft3": source.default_unit_cube_ft3,
            "first_business_date": str(export.first_date),
            "last_business_date": str(export.last_date),
        }
    )
    return master
