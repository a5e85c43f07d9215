"""Ingestion: the ERP's order lines for a business date, and the SKU master."""


import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import DUCKDB_POOL, PARTITION_METADATA, business_days, partition_date
from velocity_platform.defs.resources import ErpResource, WarehouseResource
from velocity_platform.domain.history import raw_lines_from_pages, sku_master_from_records

RECONCILIATION_CHECK = "reconciles_with_erp"


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    description="The ERP's SKU master: hierarchy, unit cube and weight, case and pallet quantities, units of measure.",
)
def sku_master(context: dg.AssetExecutionContext, erp: ErpResource) -> pl.DataFrame:
    with erp.client() as client:
        master = sku_master_from_records(client.skus())
    context.add_output_metadata(
        {
            "dagster/row_count": master.height,
            "categories": master["category"].n_unique(),
            "new_in_last_30_days": master.filter(
                pl.col("introduced_on") >= pl.col("introduced_on").max() - pl.duration(days=30)
            ).height,
        }
    )
    return master


@dg.asset(
    partitions_def=business_days,
    metadata=PARTITION_METADATA,
    group_name="ingest",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILIATION_CHECK,
            asset="raw_transactions",
            blocking=True,
            description="Lines received equal the lines the ERP says it holds for the date.",
        )
    ],
    description="ERP order lines for the business date, flattened from the order documents, as received.",
)
def raw_transactions(context: dg.AssetExecutionContext, erp: ErpResource, warehouse: WarehouseResource):
    day = partition_date(context)
    with erp.client() as client:
        erp_lines = client.count_lines(day)
        pages = [(page.source_batch, page.body) for page in client.transaction_pages(day, warehouse.timezone)]
        http = client.stats.as_metadata()
    ingested = raw_lines_from_pages(pages, day)
    lines = ingested.lines
    yield dg.Output(
        lines,
        metadata={
            "dagster/row_count": lines.height,
            "erp_lines": erp_lines,
            "documents": ingested.documents,
            "pages": ingested.pages,
            "repeated_documents_dropped": ingested.repeated_documents,
            "http_requests": http["requests"],
            "http_retries": http["retries"],
        },
    )
    yield dg.AssetCheckResult(
        check_name=RECONCILIATION_CHECK,
        passed=lines.height == erp_lines,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"erp_lines": erp_lines, "raw_lines": lines.height, "difference": lines.height - erp_lines},
        description=None
        if lines.height == erp_lines
        else f"received {lines.height:,} lines but the ERP holds {erp_lines:,} for {day}; re-run the partition",
    )
