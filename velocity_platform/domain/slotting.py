"""Slotting directives: which SKUs move where today.

SKUs are ranked by pick frequency (pick lines over 30 days; COI breaks ties where the cube is
real, not a default) and locations by their travel cost under the warehouse's routing
(``travel.rank_locations``); the ideal is the SKU of rank r in the location of cost rank r. To
keep moves worth their labour the locations are grouped into bands of equal size (twenty bands
by default) and a SKU only moves when its target band -- the band of the location its
rank points at -- has held on two consecutive evaluations (hysteresis) and differs from the band
it sits in, and it has not moved inside the hysteresis window (no thrash).

A move goes to a location that is free at the start of the day, so the day's directives never
depend on each other's order (the WMS may apply them in any order):

* new SKUs that sell but have no slot get the cheapest free location of their band or beyond,
  the first day they appear;
* promotions take the cheapest free location of their target band or beyond that is in a
  better band than the one they leave;
* demotions move a slow mover out of a band it does not belong in, to the cheapest free
  location of its own band or beyond -- only when that frees a location a waiting promotion
  can take the next day; their priority is the saving of that pair.

Every directive carries its expected saving in metres per day: pick lines per day x the
difference in location cost (the tour of a one-line order from each, ``travel.location_costs``).
New slots come first, then moves by expected saving (a demotion counts the promotion it makes
room for), within the daily move budget.

The assignment a day is planned against is the one at the start of that day, so re-running a
past partition plans the same moves and produces the same deterministic directive ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

import polars as pl

from velocity_platform.domain.contracts import SLOTTING_DIRECTIVES_SCHEMA, conform, empty_frame
from velocity_platform.domain.travel import ROUTINGS, Routing, rank_locations

WINDOW_DAYS = 30  # pick_lines_30d is the frequency the ranking and the savings read
# Twenty bands of equal size (5% of the locations each, two aisles of a 40-aisle block): finer
# bands chase noise in the ranks with moves that save little; coarser ones leave fast movers far
# out. Measured on the Online Retail replay (docs/slotting.md).
DEFAULT_BANDS = 20


@dataclass(frozen=True)
class SlottingConfig:
    move_budget: int | None = 200  # None: no cap
    hysteresis_days: int = 2  # a target band must hold this many consecutive evaluations
    routing: Routing = "s-shape"
    band_locations: int | None = None  # locations per band; None: the pick face in DEFAULT_BANDS bands
    min_saving_m_per_day: float = 0.0  # a move must be expected to save more than this

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if self.move_budget is not None and self.move_budget < 0:
            raise ValueError(f"move_budget must be >= 0 or None (no cap), got {self.move_budget}")
        if self.band_locations is not None and self.band_locations < 1:
            raise ValueError(f"band_locations must be >= 1, got {self.band_locations}")


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


# --- ranking ------------------------------------------------------------------------------------


def ranked_locations(locations: pl.DataFrame, config: SlottingConfig) -> pl.DataFrame:
    """location_id, zone, capacity_ft3, cost_m, cost_rank (1 = cheapest) and band (0 = best)."""
    ranked = rank_locations(locations, config.routing)
    per_band = config.band_locations or _default_band(ranked)
    return ranked.select(
        "location_id",
        "zone",
        "capacity_ft3",
        "cost_m",
        "cost_rank",
        ((pl.col("cost_rank") - 1) // per_band).cast(pl.Int64).alias("band"),
    )


def _default_band(locations: pl.DataFrame) -> int:
    return max(1, math.ceil(locations.height / DEFAULT_BANDS))


def velocity_ranks(
    velocity: pl.DataFrame, sku_master: pl.DataFrame, population: pl.DataFrame, band_locations: int
) -> pl.DataFrame:
    """sku_id, pick_lines_30d, velocity_rank (1 = busiest) and target_band for `population`.

    Busiest first by pick lines per day over the 30-day window (over the days on sale, for a SKU
    younger than the window); among equals, the lower COI first where the unit cube is known (a
    default cube says nothing about the item), then sku_id. With one SKU per location,
    frequency alone decides who is nearest: COI only orders ties.
    """
    real_cube = sku_master.select("sku_id", (~pl.col("cube_is_default").fill_null(False)).alias("_real_cube"))
    # A SKU on sale for fewer days than the window is judged on the days it has been on sale.
    days_on_sale = (
        pl.col("history_days").fill_null(WINDOW_DAYS).clip(1, WINDOW_DAYS)
        if "history_days" in velocity.columns
        else pl.lit(WINDOW_DAYS)
    )
    coi = pl.col("coi") if "coi" in velocity.columns else pl.lit(None, pl.Float64)
    ranked = (
        velocity.join(population.select("sku_id").unique(), on="sku_id", how="semi")
        .join(real_cube, on="sku_id", how="left")
        .select(
            "sku_id",
            "pick_lines_30d",
            "abc_class",
            (pl.col("pick_lines_30d") / days_on_sale).alias("lines_per_day"),
            pl.when(pl.col("_real_cube").fill_null(False)).then(coi).alias("_coi"),
        )
        .sort(["lines_per_day", "_coi", "sku_id"], descending=[True, False, False], nulls_last=True)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("velocity_rank"))
    )
    return ranked.with_columns(((pl.col("velocity_rank") - 1) // band_locations).alias("target_band")).drop("_coi")


# --- matching -----------------------------------------------------------------------------------


def first_fit(seekers: pl.DataFrame, slots: pl.DataFrame) -> pl.DataFrame:
    """Greedy cheapest-fit: each seeker in turn takes the cheapest slot not yet taken whose
    cost_rank is at least its `min_rank`; null when none is left.

    `seekers` must be in turn order with non-decreasing `min_rank`; `slots` has `cost_rank`.
    Because both sides are sorted, the seeker i takes slot p_i = max(q_i, p_(i-1) + 1), where
    q_i is the first slot with cost_rank >= min_rank_i; that is p_i = i + cummax(q_i - i), one
    vectorised pass. Returns the seekers with `slot_index` (into `slots` sorted by cost_rank).
    """
    ordered = slots["cost_rank"].sort()
    first = ordered.search_sorted(seekers["min_rank"], side="left").cast(pl.Int64)
    i = pl.int_range(pl.len(), dtype=pl.Int64)
    placed = seekers.with_columns(first.alias("_q")).with_columns(
        (i + (pl.col("_q") - i).cum_max()).alias("slot_index")
    )
    return placed.with_columns(
        pl.when(pl.col("slot_index") < ordered.len()).then(pl.col("slot_index")).alias("slot_index")
    ).drop("_q")


def _fit_within(seekers: pl.DataFrame, slots: pl.DataFrame, max_band: str | None, rounds: int = 8) -> pl.DataFrame:
    """`first_fit` in rounds, for seekers that must also land in a band below their `max_band`
    column (a promotion must land in a better band than it leaves).

    Each round fits the seekers still waiting to the slots still free and keeps the fits that
    satisfy the bound; a seeker whose cheapest acceptable slot already breaks it gives up. The
    rounds end when nothing more fits. Returns the placed seekers with their slot's columns.
    """
    slots = slots.sort("cost_rank")
    placed_all: list[pl.DataFrame] = []
    for _ in range(rounds):
        if seekers.is_empty() or slots.is_empty():
            break
        indexed = slots.with_row_index("slot_index").with_columns(pl.col("slot_index").cast(pl.Int64))
        if max_band is not None:
            # Seekers whose cheapest acceptable slot is already in a band not below the bound.
            cheapest = indexed["cost_rank"].search_sorted(seekers["min_rank"], side="left")
            cheapest_band = indexed["to_band"].append(pl.Series([None], dtype=indexed["to_band"].dtype)).gather(cheapest)
            seekers = seekers.filter((cheapest_band < seekers[max_band]).fill_null(False))
            if seekers.is_empty():
                break
        placed = first_fit(seekers, indexed).join(indexed, on="slot_index", how="inner")
        if max_band is not None:
            placed = placed.filter(pl.col("to_band") < pl.col(max_band))
        if placed.is_empty():
            break
        placed_all.append(placed.drop("slot_index"))
        seekers = seekers.join(placed.select("sku_id"), on="sku_id", how="anti")
        slots = slots.join(placed.select("to_location"), on="to_location", how="anti")
    if not placed_all:
        return seekers.clear().join(slots.clear(), how="cross")
    return pl.concat(placed_all)


def _slots(locations: pl.DataFrame) -> pl.DataFrame:
    return locations.select(
        pl.col("location_id").alias("to_location"),
        pl.col("zone").alias("to_zone"),
        "cost_rank",
        pl.col("cost_m").alias("to_cost_m"),
        pl.col("band").alias("to_band"),
        "capacity_ft3",
    )


# --- the plan -----------------------------------------------------------------------------------


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
    """Directives for `business_date` (SLOTTING_DIRECTIVES_SCHEMA), new slots first, then by
    expected saving, within the move budget.

    `locations` is the WMS location master (location_id, zone, aisle, bay, side, level,
    capacity_ft3); `assignment` (sku_id, location_id) the slotting at the start of the day;
    the velocity frames are sku_velocity at D and D-1; `recently_moved` (sku_id) the SKUs moved
    inside the hysteresis window.
    """
    ranked_locs = ranked_locations(locations, config)
    per_band = config.band_locations or _default_band(locations)
    slotted = assignment.select("sku_id", "location_id").join(
        ranked_locs.select(
            "location_id",
            pl.col("zone").alias("from_zone"),
            pl.col("cost_m").alias("from_cost_m"),
            pl.col("cost_rank").alias("from_rank"),
            pl.col("band").alias("from_band"),
        ),
        on="location_id",
        how="inner",
    ).rename({"location_id": "from_location"})
    # Who holds or needs a location: the slotted SKUs and the unslotted ones that sell.
    population = pl.concat(
        [
            slotted.select("sku_id"),
            velocity_today.filter(pl.col("pick_lines_30d") > 0).select("sku_id"),
        ]
    ).unique()
    today = velocity_ranks(velocity_today, sku_master, population, per_band)
    yesterday = velocity_ranks(velocity_yesterday, sku_master, population, per_band).select(
        "sku_id", pl.col("target_band").alias("band_yesterday")
    )
    cases = sku_master.select(
        "sku_id", (pl.col("unit_cube_ft3").fill_null(0.0) * pl.col("case_qty").fill_null(1).clip(1)).alias("case_cube_ft3")
    )
    skus = (
        today.join(slotted, on="sku_id", how="left")
        .join(yesterday, on="sku_id", how="left")
        .join(cases, on="sku_id", how="left")
    )
    if recently_moved is not None and not recently_moved.is_empty():
        skus = skus.join(recently_moved.select("sku_id").unique(), on="sku_id", how="anti")

    free = _slots(ranked_locs.join(assignment.select("location_id"), on="location_id", how="anti"))
    # Hysteresis: a SKU moves only when both evaluations put it on the same side of the band it
    # sits in, and then no further than the nearer of the two targets.
    today_band, yesterday_band = pl.col("target_band"), pl.col("band_yesterday")
    better_both = (today_band < pl.col("from_band")) & (yesterday_band < pl.col("from_band"))
    worse_both = (today_band > pl.col("from_band")) & (yesterday_band > pl.col("from_band"))
    skus = skus.with_columns(
        pl.when(better_both)
        .then(pl.max_horizontal(today_band, yesterday_band))
        .when(worse_both)
        .then(pl.min_horizontal(today_band, yesterday_band))
        .otherwise(today_band)
        .alias("target_band")
    ).with_columns((pl.col("target_band") * per_band + 1).alias("min_rank"))
    held = better_both | worse_both
    by_rank = ["min_rank", "velocity_rank"]

    # 1. New SKUs: a slot the first day they sell, in their band or beyond (any slot if none).
    new = skus.filter(pl.col("from_location").is_null() & (pl.col("pick_lines_30d") > 0)).sort(by_rank)
    new_slots = _fit_within(new, free, None)
    leftover = (
        new.join(new_slots.select("sku_id"), on="sku_id", how="anti")
        .with_columns(pl.lit(1, pl.Int64).alias("min_rank"))
        .sort(by_rank)
    )
    free = free.join(new_slots.select("to_location"), on="to_location", how="anti")
    late_slots = _fit_within(leftover, free, None)
    free = free.join(late_slots.select("to_location"), on="to_location", how="anti")
    average_free_cost = free["to_cost_m"].mean() if free.height else None
    new_moves = pl.concat([new_slots, late_slots], how="diagonal_relaxed").with_columns(
        (pl.col("lines_per_day") * (pl.lit(average_free_cost, pl.Float64) - pl.col("to_cost_m"))).fill_null(0.0).alias("saving"),
        pl.lit(0.0).alias("enables"),
        pl.lit("new").alias("kind"),
    )

    # 2. Promotions into free locations of a better band.
    movable = skus.filter(pl.col("from_location").is_not_null() & held)
    promoters = movable.filter(pl.col("target_band") < pl.col("from_band")).sort(by_rank)
    promotions = _fit_within(promoters, free, "from_band")
    free = free.join(promotions.select("to_location"), on="to_location", how="anti")
    promotions = promotions.with_columns(
        (pl.col("lines_per_day") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("saving"),
        pl.lit(0.0).alias("enables"),
        pl.lit("promotion").alias("kind"),
    )

    # 3. Demotions that make room for a promotion still waiting: pair each waiting promoter with
    #    the cheapest location of its band or beyond held by a SKU that belongs further out.
    waiting = promoters.join(promotions.select("sku_id"), on="sku_id", how="anti")
    demoters = movable.filter(pl.col("target_band") > pl.col("from_band"))
    held_by_demoters = demoters.select(
        pl.col("sku_id").alias("demoter"),
        pl.col("from_location").alias("to_location"),
        pl.col("from_zone").alias("to_zone"),
        pl.col("from_rank").alias("cost_rank"),
        pl.col("from_cost_m").alias("to_cost_m"),
        pl.col("from_band").alias("to_band"),
    )
    pairs = _fit_within(waiting, held_by_demoters, "from_band").select(
        pl.col("demoter").alias("sku_id"),
        pl.col("sku_id").alias("makes_room_for"),
        (pl.col("lines_per_day") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("enables"),
    )
    paired = demoters.join(pairs, on="sku_id", how="inner").sort(by_rank)
    in_band = _fit_within(paired, free, None)
    free = free.join(in_band.select("to_location"), on="to_location", how="anti")
    # No room in its own band: parked in the nearest free location beyond the band it leaves.
    unplaced = paired.join(in_band.select("sku_id"), on="sku_id", how="anti").with_columns(
        ((pl.col("from_band") + 1) * per_band + 1).alias("park_rank")
    )
    beyond = _fit_within(
        unplaced.sort("park_rank", "velocity_rank").with_columns(pl.col("park_rank").alias("min_rank")).drop("park_rank"),
        free,
        None,
    ).with_columns((pl.col("target_band") * per_band + 1).alias("min_rank"))
    # A demotion parked beyond its band for want of room moves on to its band later, so what it
    # costs for good is the difference to its own band, not to the parking place.
    band_cost = ranked_locs.select(pl.col("cost_rank").alias("min_rank"), pl.col("cost_m").alias("band_cost_m"))
    demotions = (
        pl.concat([in_band, beyond], how="diagonal_relaxed")
        .join(band_cost, on="min_rank", how="left")
        .with_columns(
            (pl.col("lines_per_day") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("saving"),
            (pl.col("lines_per_day") * (pl.col("from_cost_m") - pl.col("band_cost_m").fill_null(pl.col("to_cost_m")))).alias(
                "settled"
            ),
            pl.lit("demotion").alias("kind"),
        )
    )

    moves = pl.concat([new_moves, promotions, demotions], how="diagonal_relaxed")
    if moves.is_empty():
        return empty_frame(SLOTTING_DIRECTIVES_SCHEMA)
    value = pl.when(pl.col("kind") == "demotion").then(pl.col("settled")).otherwise(pl.col("saving")) + pl.col("enables")
    ordered = (
        moves.filter(pl.col("capacity_ft3") >= pl.col("case_cube_ft3").fill_null(0.0))
        .filter((pl.col("kind") == "new") | (value > config.min_saving_m_per_day))
        .sort(
            [(pl.col("kind") == "new"), value, pl.col("sku_id")],
            descending=[True, True, False],
        )
    )
    if config.move_budget is not None:
        ordered = ordered.head(config.move_budget)
    directives = ordered.with_columns(
        _reason(per_band).alias("reason"),
        pl.col("saving").alias("expected_saving_m_per_day"),
        pl.lit(business_date).alias("business_date"),
        directive_id_expr(business_date).alias("directive_id"),
        pl.int_range(1, pl.len() + 1).cast(pl.Int32).alias("priority"),
        pl.col("cost_rank").alias("to_cost_rank"),
        pl.col("enables").alias("enables_saving_m_per_day"),
    )
    return conform(directives, SLOTTING_DIRECTIVES_SCHEMA)


def _reason(per_band: int) -> pl.Expr:
    rank = pl.lit("rank ") + pl.col("velocity_rank").cast(pl.String) + pl.lit(" by pick lines (")
    rank = rank + pl.col("pick_lines_30d").cast(pl.String) + pl.lit(" in 30 days)")
    band = pl.lit("band ") + pl.col("target_band").cast(pl.String)
    moved = pl.lit("; band ") + pl.col("from_band").cast(pl.String) + pl.lit(" -> ") + pl.col("to_band").cast(pl.String)
    return (
        pl.when(pl.col("kind") == "new")
        .then(pl.lit("new SKU slotted: ") + rank + pl.lit(", ") + band + pl.lit(" -> slot in band ") + pl.col("to_band").cast(pl.String))
        .when(pl.col("kind") == "promotion")
        .then(rank + pl.lit(" belongs in ") + band + pl.lit(", held on two evaluations") + moved)
        .otherwise(
            rank + pl.lit(" belongs in ") + band + moved + pl.lit(" to make room for ") + pl.col("makes_room_for")
        )
    )


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
