"""Reading the warehouse tables back for comparisons between two ways of building the same dates."""

from pathlib import Path

import polars as pl

from velocity_platform.defs.tables import WarehouseTables


def tables_at(state_dir: Path) -> WarehouseTables:
    """The warehouse tables a command keeps under its state directory by default (the lake)."""
    return WarehouseTables(database=str(state_dir / "velocity.duckdb"), lake_path=str(state_dir / "lake"))


def open_tables(settings=None, *, state_dir: Path | None = None):
    """A read-only DuckDB connection on every warehouse table (schema `warehouse`), wherever the
    settings keep them, or where a command left them under its state directory."""
    return (WarehouseTables.of_settings(settings) if settings is not None else tables_at(state_dir)).every_table()


def warehouse_tables(settings, ignore: set[str]) -> dict[str, pl.DataFrame]:
    """Every warehouse table, rows sorted on all columns, without the columns in `ignore`.

    Two columns say how a run went rather than what it built: the raw lines' arrival_seq is
    numbered across a run's dates (so it becomes the line's rank within its date), and
    wms_locations' occupant is read live at the start of each run (so it is dropped; compare the
    WMS's own slotting instead).
    """
    with open_tables(settings) as con:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'warehouse' ORDER BY 1"
        ).fetchall()]
        frames = {}
        for name in names:
            frame = con.execute(f'SELECT * FROM warehouse."{name}"').pl()
            frame = frame.select([c for c in frame.columns if c not in ignore])
            if name == "wms_locations":
                frame = frame.drop("sku_id")
            if "arrival_seq" in frame.columns:
                frame = frame.with_columns(pl.col("arrival_seq").rank("ordinal").over("business_date"))
            frames[name] = frame.sort(frame.columns, nulls_last=True)
        return frames


def day_key(day, warehouse_id: str = "WH-01"):
    """The partition key of a business date of a site (the default site unless told)."""
    from velocity_platform.defs.partitions import SiteDay

    return SiteDay(warehouse_id, day).key


def day_key_str(day, warehouse_id: str = "WH-01") -> str:
    """The same key as the instance stores it ("2026-02-05|WH-01")."""
    return str(day_key(day, warehouse_id))
