"""Pick faces and their replenishment: how many units a location's face holds, and how often
it is refilled.

A face holds ``floor(capacity_ft3 / unit_cube_ft3)`` units of its SKU (a SKU without a measured
cube uses the declared default and is flagged ``cube_is_default``, so its face size is as good as
that default). Each time the face empties a replenisher brings stock from reserve: the expected
trips of a day are the units picked over the units the face holds (a lower bound: a WMS refills
at a minimum, a little before empty). A SKU whose face holds less than a day of its demand is
refilled more than once a day: flagged for the analyst (a larger or a second face).
"""

from __future__ import annotations

import polars as pl


def face_units_expr(capacity_ft3: pl.Expr, unit_cube_ft3: pl.Expr) -> pl.Expr:
    """Units a face holds; 0 where not one unit fits (null cube: the face is treated as holding one)."""
    return (capacity_ft3 / unit_cube_ft3).floor().fill_null(1.0).fill_nan(1.0).clip(lower_bound=0.0)


def faces(assignment: pl.DataFrame, locations: pl.DataFrame, sku_master: pl.DataFrame) -> pl.DataFrame:
    """sku_id, location_id, face_units, cube_is_default of every slotted SKU."""
    return (
        assignment.select("sku_id", "location_id")
        .join(locations.select("location_id", "capacity_ft3"), on="location_id", how="left")
        .join(sku_master.select("sku_id", "unit_cube_ft3", "cube_is_default"), on="sku_id", how="left")
        .select(
            "sku_id",
            "location_id",
            face_units_expr(pl.col("capacity_ft3"), pl.col("unit_cube_ft3")).alias("face_units"),
            pl.col("cube_is_default").fill_null(True),
        )
    )


def replenishment_trips(units: pl.DataFrame, faces_now: pl.DataFrame) -> pl.DataFrame:
    """sku_id, units, face_units, trips: a day's picked `units` (sku_id, units) over the faces
    (``faces``) they were picked from. A face that holds less than one unit is refilled for
    every unit: one trip per unit."""
    return units.join(faces_now.select("sku_id", "face_units"), on="sku_id", how="inner").with_columns(
        (pl.col("units") / pl.col("face_units").clip(lower_bound=1.0)).alias("trips")
    )


def faces_short_of_a_day(daily_units: pl.DataFrame, faces_now: pl.DataFrame) -> pl.DataFrame:
    """sku_id, units_per_day, face_units, cube_is_default of the SKUs whose face holds less than
    a day of their demand (`daily_units`: sku_id, units_per_day)."""
    return (
        daily_units.join(faces_now, on="sku_id", how="inner")
        .filter(pl.col("units_per_day") > pl.col("face_units"))
        .select("sku_id", "units_per_day", "face_units", "cube_is_default")
        .sort("units_per_day", descending=True)
    )
