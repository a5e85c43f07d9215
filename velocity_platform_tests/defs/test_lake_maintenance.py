"""The weekly lake maintenance: old versions' files vacuumed, the latest rows intact."""

import datetime as dt
from pathlib import Path

import polars as pl

from velocity_platform.defs.lake.maintenance import lake_maintenance
from velocity_platform.defs.tables import WarehouseTables

DAY = dt.date(2026, 3, 2)


def _files(root: Path) -> int:
    return len(list(root.glob("**/*.parquet")))


def test_the_vacuum_removes_the_files_of_replaced_versions_and_keeps_the_rows(tmp_path):
    tables = WarehouseTables(database=str(tmp_path / "unused.duckdb"), lake_path=str(tmp_path / "lake"), lake_retain_days=0)
    with tables.session() as session:
        for n in (3, 4, 5):  # the same site-day replaced twice: two files only old versions read
            frame = pl.DataFrame({"warehouse_id": ["WH-01"] * n, "business_date": [DAY] * n, "units": list(range(n))})
            session.replace("sku_velocity", frame, {"WH-01": [DAY]})
    assert _files(tmp_path / "lake" / "sku_velocity") == 3
    result = lake_maintenance.execute_in_process(resources={"warehouse_tables": tables})
    assert result.success
    done = result.output_for_node("compact_and_vacuum_the_lake")
    assert done["sku_velocity"]["files_vacuumed"] == 2
    assert _files(tmp_path / "lake" / "sku_velocity") == 1
    with tables.session() as session:
        assert session.count("sku_velocity", DAY) == 5


def test_a_week_of_retention_keeps_the_versions_a_directive_batch_names(tmp_path):
    tables = WarehouseTables(database=str(tmp_path / "unused.duckdb"), lake_path=str(tmp_path / "lake"), lake_retain_days=7)
    with tables.session() as session:
        for n in (3, 4):
            frame = pl.DataFrame({"warehouse_id": ["WH-01"] * n, "business_date": [DAY] * n, "units": list(range(n))})
            session.replace("sku_velocity", frame, {"WH-01": [DAY]})
    assert lake_maintenance.execute_in_process(resources={"warehouse_tables": tables}).success
    # Version 0 (3 rows) is still readable: what a batch planned on it recorded stays answerable.
    from deltalake import DeltaTable

    assert DeltaTable(str(tmp_path / "lake" / "sku_velocity"), version=0).to_pyarrow_table().num_rows == 3


def test_on_the_duckdb_file_there_is_nothing_to_maintain(tmp_path):
    tables = WarehouseTables(database=str(tmp_path / "velocity.duckdb"))
    result = lake_maintenance.execute_in_process(resources={"warehouse_tables": tables})
    assert result.success and result.output_for_node("compact_and_vacuum_the_lake") == {}
