"""The network's day: every site's figures of a business date side by side, and the total.

Partitioned by date alone: one row per site of the date (its lines, dead letters, directives,
net labor), updated as each site's night lands (eager automation), so a network manager reads one
partition a day instead of forty.
"""

import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import DUCKDB_POOL, EVERY_SITE_OF_THE_DATE, network_days
from velocity_platform.defs.slotting.assets import recorded_net_labor
from velocity_platform.defs.slotting.plots import markdown_image, net_labor_by_site
from velocity_platform.defs.tables import WarehouseTables

ROLLUP_SCHEMA = {
    "business_date": pl.Date,
    "warehouse_id": pl.String,
    "raw_lines": pl.Int64,
    "dead_letter_lines": pl.Int64,
    "dlq_rate": pl.Float64,
    "directives": pl.Int64,
    "directives_acked": pl.Int64,
    "net_labor_h": pl.Float64,
}
UPSTREAM = ("raw_transactions", "dead_letter_transactions", "wms_directive_acks", "slotting_shadow_report")


def _lines_by_site(tables, table: str, day: dt.date, where: str = "") -> pl.DataFrame:
    if not tables.exists(table):
        return pl.DataFrame(schema={"warehouse_id": pl.String, "n": pl.Int64})
    return tables.query(
        table,
        lambda name: f"SELECT warehouse_id, count(*)::BIGINT AS n FROM {name} WHERE business_date = DATE '{day.isoformat()}' {where} GROUP BY ALL",
    )


def net_labor_of_date(instance: dg.DagsterInstance, day: dt.date) -> pl.DataFrame:
    """Each site's net labor hours of the date, from its shadow report's latest materialization."""
    by_site = {sd.warehouse_id: h for sd, h in recorded_net_labor(instance).items() if sd.business_date == day}
    return pl.DataFrame({"warehouse_id": list(by_site), "net_labor_h": list(by_site.values())}, schema={"warehouse_id": pl.String, "net_labor_h": pl.Float64})


@dg.asset(
    group_name="network",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
    partitions_def=network_days,
    deps=[dg.AssetDep(name, partition_mapping=EVERY_SITE_OF_THE_DATE) for name in UPSTREAM],
    automation_condition=dg.AutomationCondition.eager(),
    metadata={"partition_expr": "business_date"},
    description="Per business date, every warehouse's lines, dead letters, directives and net labor hours, and the "
    "network's total: the day of the whole network on one page.",
)
def network_daily_rollup(context: dg.AssetExecutionContext, warehouse_tables: WarehouseTables) -> pl.DataFrame:
    day = dt.date.fromisoformat(context.partition_key)
    with warehouse_tables.session() as tables:
        raw = _lines_by_site(tables, "raw_transactions", day).rename({"n": "raw_lines"})
        dead = _lines_by_site(tables, "dead_letter_transactions", day).rename({"n": "dead_letter_lines"})
        directives = _lines_by_site(tables, "wms_directive_acks", day).rename({"n": "directives"})
        acked = _lines_by_site(tables, "wms_directive_acks", day, "AND status = 'acked'").rename({"n": "directives_acked"})
    net = net_labor_of_date(context.instance, day)
    sites = pl.concat([f.select("warehouse_id") for f in (raw, dead, directives, net)]).unique()
    rollup = (
        sites.join(raw, on="warehouse_id", how="left")
        .join(dead, on="warehouse_id", how="left")
        .join(directives, on="warehouse_id", how="left")
        .join(acked, on="warehouse_id", how="left")
        .join(net, on="warehouse_id", how="left")
        .with_columns(pl.col("raw_lines", "dead_letter_lines", "directives", "directives_acked").fill_null(0))
        .with_columns(
            pl.lit(day).alias("business_date"),
            pl.when(pl.col("raw_lines") > 0).then(pl.col("dead_letter_lines") / pl.col("raw_lines")).otherwise(0.0).alias("dlq_rate"),
        )
        .select(list(ROLLUP_SCHEMA))
        .cast(ROLLUP_SCHEMA)
        .sort("warehouse_id")
    )
    raw_total = int(rollup["raw_lines"].sum())
    context.add_output_metadata(
        {
            "net_labor_h": round(float(rollup["net_labor_h"].fill_null(0).sum()), 2),
            "warehouses": rollup.height,
            "directives": int(rollup["directives"].sum()),
            "directives_acked": int(rollup["directives_acked"].sum()),
            "dlq_rate": dg.MetadataValue.float(int(rollup["dead_letter_lines"].sum()) / raw_total if raw_total else 0.0),
            "net_labor_by_site_plot": dg.MetadataValue.md(markdown_image(net_labor_by_site(rollup), "net labor hours per warehouse")),
            "by_warehouse": dg.MetadataValue.md(_markdown(rollup)),
            "dagster/row_count": rollup.height,
        }
    )
    return rollup


def _markdown(rollup: pl.DataFrame) -> str:
    rows = "\n".join(
        f"| {r['warehouse_id']} | {r['raw_lines']:,} | {r['dlq_rate']:.3%} | {r['directives']:,} | {r['directives_acked']:,} | "
        + (f"{r['net_labor_h']:.2f}" if r["net_labor_h"] is not None else "not built")
        + " |"
        for r in rollup.iter_rows(named=True)
    )
    return "| warehouse | raw lines | DLQ rate | directives | acked | net labor h |\n|---|---:|---:|---:|---:|---:|\n" + rows
