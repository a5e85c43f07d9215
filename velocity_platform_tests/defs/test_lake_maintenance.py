"""The weekly lake maintenance: old versions' files vacuumed, the latest rows intact."""

import datetime as dt
import json
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from velocity_platform.defs.lake.maintenance import lake_maintenance
from velocity_platform.defs.tables import CHECKPOINT_EVERY_COMMITS, WarehouseTables, table_properties

DAY = dt.date(2026, 3, 2)


def _files(root: Path) -> int:
    """The table's data files (not its log's checkpoints)."""
    return sum(1 for f in root.glob("**/*.parquet") if "_delta_log" not in f.parts)


def _rows(n: int) -> pl.DataFrame:
    return pl.DataFrame({"warehouse_id": ["WH-01"] * n, "business_date": [DAY] * n, "units": list(range(n))})


def _replace(tables: WarehouseTables, table: str, sizes) -> None:
    with tables.session() as session:
        for n in sizes:  # the same site-day replaced: each write one commit
            session.replace(table, _rows(n), {"WH-01": [DAY]})


def _last_checkpoint(root: Path) -> int | None:
    marker = root / "_delta_log" / "_last_checkpoint"
    return json.loads(marker.read_text())["version"] if marker.exists() else None


def test_the_vacuum_removes_the_files_of_replaced_versions_and_keeps_the_rows(tmp_path):
    tables = WarehouseTables(database=str(tmp_path / "unused.duckdb"), lake_path=str(tmp_path / "lake"), lake_retain_days=0)
    _replace(tables, "sku_velocity", (3, 4, 5))  # replaced twice: two files only old versions read
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
    _replace(tables, "sku_velocity", (3, 4))
    assert lake_maintenance.execute_in_process(resources={"warehouse_tables": tables}).success
    # Version 0 (3 rows) is still readable: what a batch planned on it recorded stays answerable.
    assert DeltaTable(str(tmp_path / "lake" / "sku_velocity"), version=0).to_pyarrow_table().num_rows == 3


def test_on_the_duckdb_file_there_is_nothing_to_maintain(tmp_path):
    tables = WarehouseTables(database=str(tmp_path / "velocity.duckdb"))
    result = lake_maintenance.execute_in_process(resources={"warehouse_tables": tables})
    assert result.success and result.output_for_node("compact_and_vacuum_the_lake") == {}


def test_on_a_bucket_the_tables_are_listed_and_vacuumed_the_same_way(s3_lake):
    from pyarrow import fs

    from velocity_platform.connectors.object_store import S3Lake

    tables = WarehouseTables(database="/nonexistent/unused.duckdb", lake_path=s3_lake, lake_retain_days=0)
    for table in ("sku_velocity", "daily_sku_demand"):
        _replace(tables, table, (3, 4, 5))
    bucket = S3Lake(s3_lake)
    store = bucket.filesystem()

    def parquet_files(table: str) -> int:
        found = store.get_file_info(fs.FileSelector(f"{bucket.bucket}/{bucket.prefix}/{table}", recursive=True))
        return sum(1 for f in found if f.path.endswith(".parquet") and "/_delta_log/" not in f.path)  # data, not checkpoints

    assert bucket.table_folders() == ["daily_sku_demand", "sku_velocity"]
    assert parquet_files("sku_velocity") == 3
    result = lake_maintenance.execute_in_process(resources={"warehouse_tables": tables})
    assert result.success
    done = result.output_for_node("compact_and_vacuum_the_lake")
    assert sorted(done) == ["daily_sku_demand", "sku_velocity"]
    assert [parquet_files(t) for t in ("sku_velocity", "daily_sku_demand")] == [1, 1]
    with tables.session() as session:
        assert session.count("sku_velocity", DAY) == 5 and session.count("daily_sku_demand", DAY) == 5


def test_every_tenth_commit_checkpoints_the_log_and_a_reader_starts_from_it(tmp_path):
    tables = WarehouseTables(database=str(tmp_path / "unused.duckdb"), lake_path=str(tmp_path / "lake"), lake_retain_days=7)
    table = tmp_path / "lake" / "sku_velocity"
    _replace(tables, "sku_velocity", [3] * (CHECKPOINT_EVERY_COMMITS - 1))
    assert _last_checkpoint(table) is None  # nine commits: nothing to fold yet
    _replace(tables, "sku_velocity", [3] * (CHECKPOINT_EVERY_COMMITS + 2))
    # Commits 10 and 20 (versions 9 and 19) wrote checkpoints: a reader replays versions 20 and 21 only.
    assert _last_checkpoint(table) == 2 * CHECKPOINT_EVERY_COMMITS - 1
    assert DeltaTable(str(table)).metadata().configuration == table_properties(7)
    # The older versions stay readable within the retention: their log entries are kept.
    assert DeltaTable(str(table), version=0).to_pyarrow_table().num_rows == 3
    with tables.session() as session:
        assert session.count("sku_velocity", DAY) == 3


def test_a_table_made_before_the_properties_gets_them_and_a_checkpoint_from_the_maintenance(tmp_path):
    table = tmp_path / "lake" / "sku_velocity"
    for n in (3, 4):  # written as the lake's tables were before they had properties
        _rows(n).write_delta(str(table), mode="overwrite", delta_write_options={"partition_by": ["warehouse_id", "business_date"]})
    assert DeltaTable(str(table)).metadata().configuration == {}
    tables = WarehouseTables(database=str(tmp_path / "unused.duckdb"), lake_path=str(tmp_path / "lake"), lake_retain_days=14)
    result = lake_maintenance.execute_in_process(resources={"warehouse_tables": tables})
    assert result.success
    assert result.output_for_node("compact_and_vacuum_the_lake")["sku_velocity"]["properties_set"] == table_properties(14)
    delta = DeltaTable(str(table))
    assert delta.metadata().configuration == table_properties(14)
    assert _last_checkpoint(table) == delta.version()
    assert delta.to_pyarrow_table().num_rows == 4
    # Run again with nothing changed: no property to set.
    again = lake_maintenance.execute_in_process(resources={"warehouse_tables": tables})
    assert again.output_for_node("compact_and_vacuum_the_lake")["sku_velocity"]["properties_set"] == {}
