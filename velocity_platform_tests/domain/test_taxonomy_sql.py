"""The window totals read from the warehouse table in a real DuckDB file give the sku_velocity table
that a frame in memory gives (the asset reads the table; evaluate and the benchmark classify frames)."""

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pytest

from velocity_platform.domain.contracts import DAILY_SKU_DEMAND_SCHEMA, SKU_MASTER_SCHEMA, conform
from velocity_platform.domain.taxonomy import classify_skus, classify_window_totals, demand_per_sku_sql

START = dt.date(2026, 1, 1)


def world(seed: int, skus: int = 300, days: int = 130) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"SKU-{i:05d}" for i in range(skus)]
    rows = 6_000
    demand = pl.DataFrame(
        {
            "business_date": [START + dt.timedelta(days=int(d)) for d in rng.integers(0, days, rows)],
            "sku_id": [ids[i] if i < skus else None for i in rng.integers(0, skus + 3, rows)],  # a few null SKUs
            "units": rng.integers(0, 40, rows).astype(float),
            "pick_lines": rng.integers(0, 9, rows),
            "orders": rng.integers(0, 7, rows),
            "returns_units": 0.0,
            "adjustment_units": 0.0,
            "cube_ft3": 0.0,
        }
    ).unique(["business_date", "sku_id"])
    master = pl.DataFrame(
        {
            "sku_id": ids,
            "unit_cube_ft3": rng.uniform(0.01, 2.0, skus),
            "introduced_on": [START + dt.timedelta(days=int(d)) for d in rng.integers(-30, days, skus)],
        }
    ).with_columns(
        pl.lit("d").alias("description"), pl.lit("c").alias("category"), pl.lit("s").alias("subcategory"),
        pl.lit(1.0).alias("unit_weight_lb"), pl.lit(6).alias("case_qty"), pl.lit(48).alias("pallet_qty"),
        pl.lit(["EA"]).alias("uoms"), pl.lit(False).alias("cube_is_default"),
    )
    return conform(demand, DAILY_SKU_DEMAND_SCHEMA), conform(master, SKU_MASTER_SCHEMA)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("offset", [20, 95, 129])  # short history, a full window, days beyond it
def test_totals_from_the_warehouse_table_classify_exactly_like_a_frame_in_memory(tmp_path, seed, offset):
    demand, master = world(seed)
    day = START + dt.timedelta(days=offset)
    expected = classify_skus(demand, master, day, history_start=START)
    with duckdb.connect(str(tmp_path / "velocity.duckdb")) as con:
        con.execute("CREATE SCHEMA warehouse")
        con.execute("CREATE TABLE warehouse.daily_sku_demand AS SELECT * FROM demand")
        totals = con.execute(demand_per_sku_sql("warehouse.daily_sku_demand", day)).pl()
    got = classify_window_totals(totals, master, day, START)
    assert expected.height > 0 and set(expected["abc_class"]) >= {"A", "C"}
    assert got.sort("sku_id").equals(expected.sort("sku_id"))
