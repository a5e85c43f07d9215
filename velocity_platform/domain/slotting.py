"""Slotting directives: which SKUs move where today.

A SKU's velocity class says which zone of the pick face it belongs in (A closest to the depot).
A move is proposed only when the SKU's new class has held on two consecutive evaluation dates
(hysteresis, so a one-day spike never moves stock), the SKU has not moved inside the hysteresis
window (no thrash), and a free location of the target zone can hold a full case. New SKUs that
sell but have no slot get one the first day they appear. Moves are ranked by the travel they
are expected to save per day and capped by the daily move budget; demotions, which free the
prime locations that promotions need, use whatever budget promotions leave.

The assignment a day is planned against is the one at the start of that day, so re-running a
past partition plans the same moves and produces the same deterministic directive ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

import polars as pl

from velocity_platform.domain.contracts import SLOTTING_DIRECTIVES_SCHEMA, conform, empty_frame

ZONE_RANK = {"A": 0, "B": 1, "C": 2}


@dataclass(frozen=True)
class SlottingConfig:
    move_budget: int = 200
    hysteresis_days: int = 2  # a class must hold this many consecutive evaluations
    class_to_zone: dict[str, str] = field(default_factory=lambda: {"A": "A", "B": "B", "C": "C"})
    round_trip: bool = True  # a pick walks to the face and back


def directive_id(business_date: dt.date, sku_id: str, from_location: str | None, to_location: str) -> str:
    """Deterministic idempotency key: the same move planned for the same day has the same id."""
    raw = f"{business_date.isoformat()}|{sku_id}|{from_location or '-'}|{to_location}"
    return hashlib.md5(raw.encode(), usedforsecurity=False).hexdigest()


def directive_id_expr(business_date: dt.date) -> pl.Expr:
    raw = pl.concat_str(
        pl.lit(business_date.isoformat()),
        pl.col("sku_id"),
        pl.col("from_location").fill_null("-"),
        pl.col("to_location"),
        separator="|",
    )
    return raw.map_batches(
        lambda s: pl.Series([hashlib.md5(v.encode(), usedforsecurity=False).hexdigest() for v in s]),
        return_dtype=pl.String,
    )


def held_classes(today: pl.DataFrame, yesterday: pl.DataFrame) -> pl.DataFrame:
    """SKUs whose ABC class is the same on both evaluation dates: sku_id, held_class."""
    return today.select("sku_id", "abc_class", "pick_lines_30d").join(
        yesterday.select("sku_id", pl.col("abc_class").alias("previous_class")), on="sku_id", how="inner"
    ).filter(pl.col("abc_class") == pl.col("previous_class")).select(
        "sku_id", pl.col("abc_class").alias("held_class"), "pick_lines_30d"
    )


def rewind_assignment(current: pl.DataFrame, applied_since: pl.DataFrame) -> pl.DataFrame:
    """The assignment at the start of a past day: undo the moves applied on that day and after.

    `current` is sku_id, location_id now; `applied_since` is business_date, sku_id,
    from_location, to_location of moves the WMS applied on or after that day. A SKU that
    moved several times goes back to where its earliest such move started.
    """
    first_moves = applied_since.sort("business_date").group_by("sku_id", maintain_order=True).first()
    untouched = current.select("sku_id", "location_id").join(first_moves, on="sku_id", how="anti")
    before_moves = first_moves.select("sku_id", pl.col("from_location").alias("location_id"))
    # A null from_location was a new SKU's first slot: before that move it had none.
    return pl.concat([untouched, before_moves.filter(pl.col("location_id").is_not_null())])


def _trip_factor(config: SlottingConfig) -> float:
    return 2.0 if config.round_trip else 1.0


def plan_directives(
    business_date: dt.date,
    velocity_today: pl.DataFrame,
    velocity_yesterday: pl.DataFrame,
    locations: pl.DataFrame,
    assignment: pl.DataFrame,
    sku_master: pl.DataFrame,
    recently_moved: pl.DataFrame | None = None,
    config: SlottingConfig = SlottingConfig(),
) -> pl.DataFrame:
    """Directives for `business_date` (SLOTTING_DIRECTIVES_SCHEMA), best saving first."""
    zone_of_class = pl.col("held_class").replace_strict(config.class_to_zone, default=None)
    slotted = assignment.join(
        locations.select("location_id", "zone", "distance_m"), on="location_id", how="left"
    ).select("sku_id", pl.col("location_id").alias("from_location"), pl.col("zone").alias("from_zone"),
             pl.col("distance_m").alias("from_distance_m"))

    held = held_classes(velocity_today, velocity_yesterday)
    # New SKUs that sell today but have no slot: they need a home whatever their history.
    unslotted_sellers = (
        velocity_today.filter(pl.col("pick_lines_30d") > 0)
        .join(assignment.select("sku_id"), on="sku_id", how="anti")
        .join(held.select("sku_id"), on="sku_id", how="anti")
        .select("sku_id", pl.col("abc_class").alias("held_class"), "pick_lines_30d")
    )
    wanted = (
        pl.concat([held, unslotted_sellers], how="vertical_relaxed")
        .with_columns(zone_of_class.alias("to_zone"))
        .join(slotted, on="sku_id", how="left")
        .filter(pl.col("from_zone").is_null() | (pl.col("from_zone") != pl.col("to_zone")))
        .join(sku_master.select("sku_id", "unit_cube_ft3", "case_qty"), on="sku_id", how="left")
        .with_columns(
            (pl.col("unit_cube_ft3").fill_null(0.0) * pl.col("case_qty").fill_null(1).clip(1))
            .alias("case_cube_ft3")
        )
    )
    if recently_moved is not None and not recently_moved.is_empty():
        wanted = wanted.join(recently_moved.select("sku_id").unique(), on="sku_id", how="anti")
    if wanted.is_empty():
        return empty_frame(SLOTTING_DIRECTIVES_SCHEMA)

    occupied = assignment.select("location_id").unique()
    free = (
        locations.join(occupied, on="location_id", how="anti")
        .select(pl.col("location_id").alias("to_location"), pl.col("zone").alias("to_zone"), pl.col("distance_m").alias("to_distance_m"),
                "capacity_ft3")
        .sort("to_distance_m", "to_location")
        .with_columns(pl.int_range(pl.len()).over("to_zone").alias("slot_rank"))
    )
    # Within each target zone, the busiest SKUs take the closest free locations.
    ranked = wanted.sort("pick_lines_30d", "sku_id", descending=[True, False]).with_columns(
        pl.int_range(pl.len()).over("to_zone").alias("slot_rank")
    )
    trips_per_day = pl.col("pick_lines_30d") / 30.0 * _trip_factor(config)
    paired = (
        ranked.join(free, on=["to_zone", "slot_rank"], how="inner")
        .filter(pl.col("capacity_ft3") >= pl.col("case_cube_ft3"))
        .with_columns(
            (trips_per_day * (pl.col("from_distance_m") - pl.col("to_distance_m")))
            .fill_null(0.0)
            .alias("expected_saving_m_per_day"),
            (pl.col("from_zone").is_null()).alias("is_new_slot"),
            (
                pl.col("to_zone").replace_strict(ZONE_RANK, default=9)
                < pl.col("from_zone").replace_strict(ZONE_RANK, default=9)
            ).alias("is_promotion"),
        )
    )
    # New slots first (an unslotted SKU cannot be picked), then promotions by saving, then
    # demotions, the ones holding the closest locations first.
    ordered = paired.sort(
        pl.col("is_new_slot"),
        pl.col("is_promotion"),
        pl.col("expected_saving_m_per_day"),
        pl.col("from_distance_m"),
        pl.col("sku_id"),
        descending=[True, True, True, False, False],
        nulls_last=True,
    ).head(config.move_budget)
    directives = ordered.with_columns(
        pl.when(pl.col("is_new_slot"))
        .then(pl.lit("new SKU slotted in zone ") + pl.col("to_zone"))
        .otherwise(
            pl.lit("class ") + pl.col("held_class") + pl.lit(" held 2 days; zone ")
            + pl.col("from_zone") + pl.lit(" -> ") + pl.col("to_zone")
        )
        .alias("reason"),
        pl.lit(business_date).alias("business_date"),
        directive_id_expr(business_date).alias("directive_id"),
        pl.int_range(1, pl.len() + 1).cast(pl.Int32).alias("priority"),
    )
    return conform(directives, SLOTTING_DIRECTIVES_SCHEMA)


def capacity_violations(
    directives: pl.DataFrame, locations: pl.DataFrame, assignment: pl.DataFrame, sku_master: pl.DataFrame
) -> pl.DataFrame:
    """Directives that would overfill a location: target occupied, targeted twice, or too small.

    Returns directive_id, to_location, problem; empty when every move fits.
    """
    occupied = assignment.select(pl.col("location_id").alias("to_location"), pl.lit(True).alias("occupied"))
    checked = (
        directives.select("directive_id", "sku_id", "to_location")
        .join(occupied, on="to_location", how="left")
        .join(locations.select(pl.col("location_id").alias("to_location"), "capacity_ft3"), on="to_location", how="left")
        .join(sku_master.select("sku_id", "unit_cube_ft3", "case_qty"), on="sku_id", how="left")
        .with_columns(
            (pl.col("unit_cube_ft3").fill_null(0.0) * pl.col("case_qty").fill_null(1).clip(1)).alias("case_cube_ft3"),
            pl.len().over("to_location").alias("times_targeted"),
        )
    )
    problem = (
        pl.when(pl.col("capacity_ft3").is_null())
        .then(pl.lit("to_location is not in the location master"))
        .when(pl.col("occupied").fill_null(False))
        .then(pl.lit("to_location is occupied at the start of the day"))
        .when(pl.col("times_targeted") > 1)
        .then(pl.lit("to_location is the target of more than one directive"))
        .when(pl.col("case_cube_ft3") > pl.col("capacity_ft3"))
        .then(pl.lit("a full case does not fit the location's capacity"))
    )
    return checked.with_columns(problem.alias("problem")).filter(pl.col("problem").is_not_null()).select(
        "directive_id", "to_location", "problem"
    )
