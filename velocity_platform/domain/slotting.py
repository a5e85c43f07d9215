"""Slotting directives: which SKUs move where today, and only moves that pay for their labor.

SKUs are ranked by their expected pick rate (``pick_rate``: pick lines per day that a one-off
spike does not move) and locations by their travel cost under the warehouse's routing
(``travel.rank_locations``); the ideal is the SKU of rank r in the location of cost rank r.
Locations are grouped into bands of equal size: three by default, fast, medium and slow zones.

A SKU is relocated only when three things hold:

* **Confirmed on two disjoint windows.** Ranked on its rate over D-3..D and, separately, over
  D-7..D-4, both ranks put it in a better (or both in a worse) band than the one it sits in; it
  moves no further than the nearer of the two. A spike lies in one window only, so it never
  moves stock; a sustained change confirms within a week.
* **It pays for its labor** (``labor.LaborModel``). A pick line in a location costs what it adds
  to a real order's tour (``travel.marginal_location_costs``, measured on recent orders as they
  would be walked on the slotting the plan is heading to), so a move saves ``rate x (cost
  before - cost after)`` metres a day. A relocation is planned only when that saving over the
  payback horizon exceeds the relocation's time, at the lower of the two windows' rates. A
  demotion (which frees a good location for a waiting promotion) counts what the promotion it
  makes room for saves, less its own loss and both relocations.
* **It does not undo a recent move.** A SKU relocated inside the hysteresis window is left
  alone, and one relocated inside the reversal guard (30 days) never moves back the other way.

A move goes to a location that is free at the start of the day, so the day's directives never
depend on each other's order (the WMS may apply them in any order). A new SKU that sells but has
no slot gets the cheapest free location of its band or beyond the day it appears: a putaway that
happens anyway, so it costs no relocation. New slots come first, then moves by net value; the
move budget is a cap, not a target -- on a quiet day nothing pays and nothing moves.

A SKU with no confirmable rate yet (on sale for less than two windows) is never relocated: its
first slot follows its expected rate, and it moves only once both windows agree.

``plan_day_after_day`` is the one planning loop: the ``slotting_directives`` asset over a range
of dates and ``velocity-platform evaluate`` both run it, each day on the slotting the previous
day's moves leave. The assignment a day is planned against is the one at the start of that day,
so re-running a past partition plans the same moves and the same deterministic directive ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import polars as pl

from velocity_platform.domain.contracts import SLOTTING_DIRECTIVES_SCHEMA, conform, empty_frame
from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.pick_rate import PickRateConfig
from velocity_platform.domain.policies import HYSTERESIS_DAYS
from velocity_platform.domain.shadow import apply_directives, sample_orders
from velocity_platform.domain.travel import ROUTINGS, Layout, Routing, marginal_location_costs, rank_locations

# Three bands of equal size -- fast, medium and slow zones, class-based storage: a SKU moves
# when its zone changes, not when its rank wobbles. On the Online Retail replay net labor rose
# from 9.4% with twenty bands to 12.6% with three (docs/slotting.md, "Bands"); the textbook
# result is the same (Hausman, Schwarz & Graves 1976: two to four classes keep most of full
# turnover-based storage's travel saving at a fraction of its relocations).
DEFAULT_BANDS = 3
# Orders the walking cost of a location is measured on, at most (a deterministic sample of the
# recent ones).
WALK_COST_ORDERS = 200
PROBE_BAYS = 5  # depths per aisle the extra line is walked at; the rest interpolated
# Rounds of "which moves pay" the reachable slotting is projected by (docs/slotting.md): on the
# replay one round still priced largest-gap moves at twice what they realised, two at 1.06x.
REACHABLE_ROUNDS = 2
PRICINGS = ("target", "reachable")
WALK_COST_MAX_LINES = 2_000_000  # lines walked to measure them, at most (about a second)
# Thrash is a relocation undone (the SKU moved back the other way) within this many days.
REVERSAL_GUARD_DAYS = 30


@dataclass(frozen=True)
class SlottingConfig:
    move_budget: int | None = 200  # a cap, not a target; None: no cap
    hysteresis_days: int = HYSTERESIS_DAYS  # a SKU relocated this recently is left alone
    routing: Routing = "s-shape"
    band_locations: int | None = None  # locations per band; None: the pick face in DEFAULT_BANDS bands
    labor: LaborModel = LaborModel()
    reversal_guard_days: int = REVERSAL_GUARD_DAYS  # a relocation is never undone inside this many days
    pick_rate: PickRateConfig = PickRateConfig()
    # What a location's walking cost is measured on: the target slotting, or the one the moves
    # that pay reach ("reachable"; see walk_costs_towards).
    price_on: str = "target"

    def __post_init__(self) -> None:
        if self.price_on not in PRICINGS:
            raise ValueError(f"price_on must be one of {PRICINGS}, got {self.price_on!r}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if self.move_budget is not None and self.move_budget < 0:
            raise ValueError(f"move_budget must be >= 0 or None (no cap), got {self.move_budget}")
        if self.band_locations is not None and self.band_locations < 1:
            raise ValueError(f"band_locations must be >= 1, got {self.band_locations}")


def _directive_key(business_date: pl.Expr, sku_id: pl.Expr, from_location: pl.Expr, to_location: pl.Expr) -> pl.Expr:
    return pl.concat_str(business_date, sku_id, from_location.fill_null("-"), to_location, separator="|")


def _md5(values: pl.Series) -> pl.Series:
    return pl.Series([hashlib.md5(v.encode(), usedforsecurity=False).hexdigest() for v in values], dtype=pl.String)


def directive_id_expr(business_date: dt.date) -> pl.Expr:
    """Deterministic idempotency key: the same move planned for the same day has the same id."""
    key = _directive_key(pl.lit(business_date.isoformat()), pl.col("sku_id"), pl.col("from_location"), pl.col("to_location"))
    return key.map_batches(_md5, return_dtype=pl.String)


def directive_id(business_date: dt.date, sku_id: str, from_location: str | None, to_location: str) -> str:
    """The id `directive_id_expr` gives one move."""
    frame = pl.DataFrame(
        {"sku_id": [sku_id], "from_location": [from_location], "to_location": [to_location]},
        schema={"sku_id": pl.String, "from_location": pl.String, "to_location": pl.String},
    )
    return frame.select(directive_id_expr(business_date)).item()


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
    """location_id, zone, capacity_ft3, cost_m, cost_rank (1 = cheapest), band (0 = best) and
    handling_m (a pick line's extra handling on the location's level, in metres of walking)."""
    ranked = rank_locations(locations, config.routing)
    levels = int(ranked["level"].max())
    ranked = ranked.with_columns(config.labor.handling_m_expr(pl.col("level"), levels).alias("handling_m"))
    if levels > 1:
        # A pick off the floor or the top level costs its handling too: the golden levels of an
        # aisle rank first, and a location's cost is its walk plus its handling.
        ranked = (
            ranked.with_columns(pl.col("cost_m") + pl.col("handling_m"))
            .sort("cost_m", "cost_rank")
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("cost_rank"))
        )
    per_band = config.band_locations or _default_band(ranked)
    return ranked.select(
        "location_id",
        "zone",
        "capacity_ft3",
        "cost_m",
        "cost_rank",
        ((pl.col("cost_rank") - 1) // per_band).cast(pl.Int64).alias("band"),
        "handling_m",
    )


def _default_band(locations: pl.DataFrame) -> int:
    return max(1, math.ceil(locations.height / DEFAULT_BANDS))


def velocity_ranks(
    velocity: pl.DataFrame, sku_master: pl.DataFrame, population: pl.DataFrame, band_locations: int, rate: str
) -> pl.DataFrame:
    """sku_id, velocity_rank (1 = busiest) and target_band of `population` ranked by `rate`
    (pick lines per day); among equals, the lower COI first where the unit cube is known (a
    default cube says nothing about the item), then sku_id. A SKU without a rate ranks last."""
    real_cube = sku_master.select("sku_id", (~pl.col("cube_is_default").fill_null(False)).alias("_real_cube"))
    coi = pl.col("coi") if "coi" in velocity.columns else pl.lit(None, pl.Float64)
    ranked = (
        population.select("sku_id").unique()
        .join(velocity.select("sku_id", rate, *(["coi"] if "coi" in velocity.columns else [])), on="sku_id", how="left")
        .join(real_cube, on="sku_id", how="left")
        .select("sku_id", pl.col(rate).alias("_rate"), pl.when(pl.col("_real_cube").fill_null(False)).then(coi).alias("_coi"))
        .sort(["_rate", "_coi", "sku_id"], descending=[True, False, False], nulls_last=True)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("velocity_rank"))
    )
    return ranked.select(
        "sku_id", "velocity_rank", ((pl.col("velocity_rank") - 1) // band_locations).alias("target_band")
    )


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
        fitted = first_fit(seekers, indexed)
        # Joined with the fitted slots only: a hash join against every free slot (tens of
        # thousands) costs a millisecond per call, which the exception service pays per read.
        taken = indexed.filter(pl.col("slot_index").is_in(fitted["slot_index"].drop_nulls().implode()))
        placed = fitted.join(taken, on="slot_index", how="inner")
        if max_band is not None:
            placed = placed.filter(pl.col("to_band") < pl.col(max_band))
        if placed.is_empty():
            break
        placed_all.append(placed.drop("slot_index"))
        seekers = seekers.filter(~pl.col("sku_id").is_in(placed["sku_id"].implode()))
        slots = _without(slots, placed)
    if not placed_all:
        return seekers.clear().join(slots.clear(), how="cross")
    return pl.concat(placed_all)


def first_slot(seekers: pl.DataFrame, free: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The first slot of SKUs that have none: the cheapest free location of the SKU's expected
    band or beyond, and any free location when its band and those beyond are full.

    `seekers` (sku_id, min_rank = the first cost rank of the SKU's expected band, and the
    columns they carry along) in turn order, busiest first; `free` the free slots (``_slots``
    of the ranked locations). Returns (the placed seekers with their slot's columns, the free
    slots left). A putaway that happens anyway: the nightly planner's new-SKU step and the
    exception service (`velocity-platform deltas`) both place a new SKU with this function.
    """
    in_band = _fit_within(seekers, free, None)
    free = _without(free, in_band)
    leftover = seekers.filter(~pl.col("sku_id").is_in(in_band["sku_id"].implode())).with_columns(
        pl.lit(1, pl.Int64).alias("min_rank")
    )
    if leftover.is_empty():  # every seeker found a slot in its band or beyond (the usual case)
        return in_band, free
    if "velocity_rank" in leftover.columns:
        leftover = leftover.sort(["min_rank", "velocity_rank"])
    anywhere = _fit_within(leftover, free, None)
    free = _without(free, anywhere)
    return pl.concat([in_band, anywhere], how="diagonal_relaxed"), free


def _without(slots: pl.DataFrame, placed: pl.DataFrame) -> pl.DataFrame:
    """The slots not taken by `placed` (in their order): a filter on the few taken, not an anti
    join that hashes every free slot."""
    return slots.filter(~pl.col("to_location").is_in(placed["to_location"].implode()))


def free_slots(locations: pl.DataFrame, assignment: pl.DataFrame, config: SlottingConfig = SlottingConfig()) -> pl.DataFrame:
    """The free locations (no SKU in `assignment`) ranked and banded as `first_slot` takes them."""
    ranked = ranked_locations(locations, config)
    return _slots(ranked.join(assignment.select("location_id"), on="location_id", how="anti"))


def band_first_rank(band: pl.Expr, locations: pl.DataFrame, config: SlottingConfig = SlottingConfig()) -> pl.Expr:
    """The first cost rank of a band (`min_rank` for `first_slot`)."""
    per_band = config.band_locations or _default_band(locations)
    return (band * per_band + 1).cast(pl.Int64)


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
    velocity: pl.DataFrame,
    locations: pl.DataFrame,
    assignment: pl.DataFrame,
    sku_master: pl.DataFrame,
    recent_moves: pl.DataFrame | None = None,
    walk_costs: pl.DataFrame | None = None,
    config: SlottingConfig = SlottingConfig(),
) -> pl.DataFrame:
    """Directives for `business_date` (SLOTTING_DIRECTIVES_SCHEMA): new slots first, then the
    moves that pay for their labor by net value, within the move budget.

    `velocity` is sku_velocity at D with the pick-rate columns (``pick_rate.PICK_RATE_COLUMNS``);
    `locations` the WMS location master (location_id, zone, aisle, bay, side, level,
    capacity_ft3); `assignment` (sku_id, location_id) the slotting at the start of the day;
    `recent_moves` (business_date, sku_id, from_location, to_location) the relocations of the
    last ``reversal_guard_days``; `walk_costs` (location_id, marginal_m) what a pick line costs
    in each location (``walk_costs_towards``); without it, the tour of a one-line order.
    """
    labor = config.labor
    ranked_locs = ranked_locations(locations, config)
    if walk_costs is not None:
        ranked_locs = ranked_locs.join(walk_costs.select("location_id", "marginal_m"), on="location_id", how="left").with_columns(
            pl.coalesce(pl.col("marginal_m") + pl.col("handling_m"), "cost_m").alias("cost_m")
        ).drop("marginal_m")
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
        [slotted.select("sku_id"), velocity.filter(pl.col("expected_pick_lines_per_day") > 0).select("sku_id")]
    ).unique()
    expected = velocity_ranks(velocity, sku_master, population, per_band, "expected_pick_lines_per_day")
    recent = velocity_ranks(velocity, sku_master, population, per_band, "pick_lines_per_day_recent").select(
        "sku_id", pl.col("target_band").alias("band_recent")
    )
    prior = velocity_ranks(velocity, sku_master, population, per_band, "pick_lines_per_day_prior").select(
        "sku_id", pl.col("target_band").alias("band_prior")
    )
    cases = sku_master.select(
        "sku_id", (pl.col("unit_cube_ft3").fill_null(0.0) * pl.col("case_qty").fill_null(1).clip(1)).alias("case_cube_ft3")
    )
    rates = velocity.select(
        "sku_id",
        "pick_lines_30d",
        pl.col("expected_pick_lines_per_day").alias("rate"),
        # The rate a move is priced at: the lowest of the level and the two windows for a
        # promotion (a SKU picked for a promotion because its recent days ran high tends to
        # fall back), the highest for a demotion's loss.
        pl.min_horizontal("expected_pick_lines_per_day", "pick_lines_per_day_recent", "pick_lines_per_day_prior").alias("rate_up"),
        pl.max_horizontal("expected_pick_lines_per_day", "pick_lines_per_day_recent", "pick_lines_per_day_prior").alias("rate_down"),
        pl.col("pick_lines_per_day_prior").is_not_null().alias("confirmable"),
    )
    skus = (
        expected.join(slotted, on="sku_id", how="left")
        .join(recent, on="sku_id", how="left")
        .join(prior, on="sku_id", how="left")
        .join(rates, on="sku_id", how="left")
        .join(cases, on="sku_id", how="left")
        .with_columns(pl.col("rate", "pick_lines_30d").fill_null(0))
    )
    frozen, no_promotion, no_demotion = _recent_move_guards(business_date, recent_moves, ranked_locs, config)

    free = _slots(ranked_locs.join(assignment.select("location_id"), on="location_id", how="anti"))
    # Hysteresis: the 28-day level and both windows put the SKU on the same side of the band it
    # sits in; it moves no further than the least extreme of the three targets.
    level_band, recent_band, prior_band, here = pl.col("target_band"), pl.col("band_recent"), pl.col("band_prior"), pl.col("from_band")
    confirmable = pl.col("confirmable").fill_null(False)
    better_all = confirmable & (level_band < here) & (recent_band < here) & (prior_band < here)
    worse_all = confirmable & (level_band > here) & (recent_band > here) & (prior_band > here)
    skus = skus.with_columns(
        pl.when(better_all)
        .then(pl.max_horizontal(level_band, recent_band, prior_band))
        .when(worse_all)
        .then(pl.min_horizontal(level_band, recent_band, prior_band))
        .otherwise(level_band)
        .alias("target_band"),
        better_all.alias("_up"),
        worse_all.alias("_down"),
    ).with_columns((pl.col("target_band") * per_band + 1).alias("min_rank"))
    by_rank = ["min_rank", "velocity_rank"]

    # 1. New SKUs: a slot the first day they sell, in their band or beyond (any slot if none).
    new = skus.filter(pl.col("from_location").is_null() & (pl.col("rate") > 0)).sort(by_rank)
    first_slots, free = first_slot(new, free)
    average_free_cost = free["to_cost_m"].mean() if free.height else None
    new_moves = first_slots.with_columns(
        (pl.col("rate") * (pl.lit(average_free_cost, pl.Float64) - pl.col("to_cost_m"))).fill_null(0.0).alias("saving"),
        pl.lit(0.0).alias("enables"),
        pl.lit(0, pl.Int32).alias("relocations"),
        pl.lit("new").alias("kind"),
    )

    # 2. Promotions into free locations of a better band, when the saving repays the move.
    movable = skus.filter(pl.col("from_location").is_not_null()).join(frozen, on="sku_id", how="anti")
    promoters = movable.filter(pl.col("_up")).join(no_promotion, on="sku_id", how="anti").sort(by_rank)
    fitted = _fit_within(promoters, free, "from_band").with_columns(
        (pl.col("rate_up") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("saving"),
        pl.lit(0.0).alias("enables"),
        pl.lit(1, pl.Int32).alias("relocations"),
        pl.lit("promotion").alias("kind"),
    )
    promotions = fitted.filter(labor.net_value_m(pl.col("saving"), pl.col("relocations")) > 0)
    free = free.join(promotions.select("to_location"), on="to_location", how="anti")

    # 3. Demotions that make room for a promotion still waiting: pair each waiting promoter with
    #    the cheapest location of its band or beyond held by a SKU that belongs further out.
    waiting = promoters.join(promotions.select("sku_id"), on="sku_id", how="anti")
    demoters = movable.filter(pl.col("_down")).join(no_demotion, on="sku_id", how="anti")
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
        (pl.col("rate_up") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("enables"),
    )
    paired = demoters.join(pairs, on="sku_id", how="inner").sort(by_rank)
    # A demoted SKU goes to a free location of its own band or beyond, never parked half-way
    # (a parked SKU would have to move again).
    demoted = _fit_within(paired, free, None)
    free = free.join(demoted.select("to_location"), on="to_location", how="anti")
    # The pair's value: what the promotion saves, less the demoted SKU's own loss, both moves.
    demotions = demoted.with_columns(
        (pl.col("rate_down") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("saving"),
        pl.lit(2, pl.Int32).alias("relocations"),
        pl.lit("demotion").alias("kind"),
    )
    demotions = demotions.filter(labor.net_value_m(pl.col("saving") + pl.col("enables"), pl.col("relocations")) > 0)

    # 4. To the golden levels: a SKU in its band but on the floor or the top level takes a free
    #    location of its band or better on a golden level when the handling (and walk) it saves
    #    repays the move. Only a multi-level layout has such locations.
    off_level = ranked_locs.filter(pl.col("handling_m") > 0).select(pl.col("location_id").alias("from_location"))
    if off_level.height:
        handled = movable.filter(~pl.col("_up") & ~pl.col("_down") & pl.col("confirmable").fill_null(False))
        handled = handled.join(off_level, on="from_location", how="semi").join(
            pl.concat([promotions.select("sku_id"), demotions.select("sku_id")]), on="sku_id", how="anti"
        )
        golden_free = free.join(
            ranked_locs.filter(pl.col("handling_m") == 0).select(pl.col("location_id").alias("to_location")), on="to_location", how="semi"
        )
        leveled = _fit_within(handled.sort(by_rank), golden_free, None).filter(pl.col("to_band") <= pl.col("from_band")).with_columns(
            (pl.col("rate_up") * (pl.col("from_cost_m") - pl.col("to_cost_m"))).alias("saving"),
            pl.lit(0.0).alias("enables"),
            pl.lit(1, pl.Int32).alias("relocations"),
            pl.lit("level").alias("kind"),
        )
        levelings = leveled.filter(labor.net_value_m(pl.col("saving"), pl.col("relocations")) > 0)
    else:
        levelings = None

    moves = pl.concat([new_moves, promotions, demotions, *([levelings] if levelings is not None else [])], how="diagonal_relaxed")
    if moves.is_empty():
        return empty_frame(SLOTTING_DIRECTIVES_SCHEMA)
    pair_saving = pl.col("saving") + pl.col("enables")
    value = labor.net_value_m(pair_saving, pl.col("relocations"))
    ordered = moves.filter(pl.col("capacity_ft3") >= pl.col("case_cube_ft3").fill_null(0.0)).sort(
        [(pl.col("kind") == "new"), value, pl.col("sku_id")], descending=[True, True, False]
    )
    if config.move_budget is not None:
        ordered = ordered.head(config.move_budget)
    directives = ordered.with_columns(labor.payback_days(pair_saving, pl.col("relocations")).alias("_payback")).with_columns(
        _reason().alias("reason"),
        pl.col("saving").alias("expected_saving_m_per_day"),
        pl.lit(business_date).alias("business_date"),
        directive_id_expr(business_date).alias("directive_id"),
        pl.int_range(1, pl.len() + 1).cast(pl.Int32).alias("priority"),
        pl.col("cost_rank").alias("to_cost_rank"),
        pl.col("enables").alias("enables_saving_m_per_day"),
        pl.col("rate").alias("expected_pick_lines_per_day"),
        pl.col("_payback").alias("payback_days"),
        labor.walk_hours(value).alias("net_saving_h"),
        # One relocation per SKU moved; the demotion's pair counts both in its value only.
        pl.min_horizontal(pl.col("relocations"), 1).cast(pl.Int32).alias("relocations"),
    )
    return conform(directives, SLOTTING_DIRECTIVES_SCHEMA)


def _recent_move_guards(
    business_date: dt.date, recent_moves: pl.DataFrame | None, ranked_locs: pl.DataFrame, config: SlottingConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(SKUs moved or first slotted inside the hysteresis window, SKUs whose last relocation inside the
    reversal guard was a demotion -- they may not be promoted back -- and those whose last was a
    promotion -- they may not be demoted back)."""
    empty = pl.DataFrame(schema={"sku_id": pl.String})
    if recent_moves is None or recent_moves.is_empty():
        return empty, empty, empty
    directions = relocation_directions(recent_moves, ranked_locs).filter(
        pl.col("business_date") >= business_date - dt.timedelta(days=config.reversal_guard_days)
    )
    # Any move inside the hysteresis window freezes the SKU, a new SKU's first slot included.
    frozen = recent_moves.filter(pl.col("business_date") >= business_date - dt.timedelta(days=config.hysteresis_days))
    last = directions.sort("business_date").group_by("sku_id").last()
    return (
        frozen.select("sku_id").unique(),
        last.filter(pl.col("direction") > 0).select("sku_id"),
        last.filter(pl.col("direction") < 0).select("sku_id"),
    )


def relocation_directions(moves: pl.DataFrame, ranked_locs: pl.DataFrame) -> pl.DataFrame:
    """The relocations among `moves` (from_location not null) with ``direction``: -1 towards
    the cheaper locations (a promotion), +1 away from them (a demotion), 0 level."""
    rank = ranked_locs.select("location_id", "cost_rank")
    return (
        moves.filter(pl.col("from_location").is_not_null())
        .join(rank.rename({"location_id": "from_location", "cost_rank": "_from"}), on="from_location", how="left")
        .join(rank.rename({"location_id": "to_location", "cost_rank": "_to"}), on="to_location", how="left")
        .with_columns((pl.col("_to") - pl.col("_from")).sign().fill_null(0).cast(pl.Int8).alias("direction"))
        .drop("_from", "_to")
    )


def _relocation_sequence(moves: pl.DataFrame, locations: pl.DataFrame, routing: Routing) -> pl.DataFrame:
    return relocation_directions(moves, rank_locations(locations, routing)).sort("sku_id", "business_date")


def reversed_relocations(moves: pl.DataFrame, locations: pl.DataFrame, routing: Routing, within_days: int = REVERSAL_GUARD_DAYS) -> pl.DataFrame:
    """The relocations of `moves` (business_date, sku_id, from_location, to_location) that the
    same SKU's next relocation, inside `within_days`, takes back the other way: thrash."""
    following = pl.col("business_date").shift(-1).over("sku_id")
    undone = (pl.col("direction").shift(-1).over("sku_id") * pl.col("direction") < 0) & (
        (following - pl.col("business_date")).dt.total_days() <= within_days
    )
    return _relocation_sequence(moves, locations, routing).filter(undone).drop("direction")


def reversing_relocations(moves: pl.DataFrame, locations: pl.DataFrame, routing: Routing, within_days: int = REVERSAL_GUARD_DAYS) -> pl.DataFrame:
    """The relocations of `moves` that take back the same SKU's previous relocation, made
    within `within_days` before: the directives a thrash signal names."""
    previous = pl.col("business_date").shift(1).over("sku_id")
    undoes = (pl.col("direction").shift(1).over("sku_id") * pl.col("direction") < 0) & (
        (pl.col("business_date") - previous).dt.total_days() <= within_days
    )
    return _relocation_sequence(moves, locations, routing).filter(undoes).drop("direction")


def _reason() -> pl.Expr:
    rate = pl.col("rate").round(2).cast(pl.String) + pl.lit(" pick lines/day expected")
    band = pl.lit("band ") + pl.col("target_band").cast(pl.String)
    moved = pl.lit("; band ") + pl.col("from_band").cast(pl.String) + pl.lit(" -> ") + pl.col("to_band").cast(pl.String)
    payback = pl.lit(", pays back in ") + pl.col("_payback").round(1).cast(pl.String) + pl.lit(" days")
    return (
        pl.when(pl.col("kind") == "new")
        .then(pl.lit("new SKU slotted (putaway, no relocation): ") + rate + pl.lit(", ") + band + pl.lit(" -> slot in band ") + pl.col("to_band").cast(pl.String))
        .when(pl.col("kind") == "level")
        .then(rate + pl.lit(", to a golden level of band ") + pl.col("to_band").cast(pl.String) + pl.lit(" (less handling per pick)") + payback)
        .when(pl.col("kind") == "promotion")
        .then(rate + pl.lit(", belongs in ") + band + pl.lit(" on both confirmation windows") + moved + payback)
        .otherwise(rate + pl.lit(", belongs in ") + band + moved + pl.lit(" to make room for ") + pl.col("makes_room_for") + payback)
    )


# --- the planning loop --------------------------------------------------------------------------

MOVE_SCHEMA = {"business_date": pl.Date, "sku_id": pl.String, "from_location": pl.String, "to_location": pl.String}


def walk_costs_towards(
    recent_orders: pl.DataFrame,
    velocity: pl.DataFrame,
    locations: pl.DataFrame,
    config: SlottingConfig,
    assignment: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """location_id, marginal_m: what one pick line in each location adds to a tour, measured on
    a sample of `recent_orders` (order_id, sku_id) walked on the slotting the plan is heading to
    (SKUs by expected pick rate in locations by cost rank).

    Measured on the target rather than today's slotting because the value of a move is what it
    saves once the fast movers are together: from a random start every aisle is visited by most
    orders, so no single move looks worth anything until the rest are made. (The mean of today's
    and the target's cost priced moves no better on the replay: docs/slotting.md.)

    With ``price_on="reachable"`` (and today's `assignment`) the slotting measured on is the one
    the moves that pay lead to instead: a SKU in its band stays where it is, a SKU whose move pays
    at the costs of the round before takes its band's cheapest free location, the rest stay
    (``REACHABLE_ROUNDS`` rounds from the all-in-band projection). The full target overstates a
    move: slow movers that never pay to move keep the back aisles visited. The
    replay measures what each pricing realises (docs/slotting.md, "Priced against realised").
    """
    ranked = ranked_locations(locations, config).sort("cost_rank")
    located = locations.select("location_id", pl.col("aisle").cast(pl.Int32), pl.col("bay").cast(pl.Int32))
    per_band = config.band_locations or _default_band(ranked)
    layout = Layout.from_locations(locations)
    reachable = assignment is not None and config.price_on == "reachable"
    heading_to = _projected_by_band(velocity, ranked, assignment, per_band) if reachable else _zip_by_rank(velocity, ranked)
    costs = _walk_costs_on(recent_orders, heading_to, located, layout, config)
    for _ in range(REACHABLE_ROUNDS if reachable else 0):
        # Only the SKUs whose move pays at these costs get to their band; the costs are
        # measured again on that slotting.
        band_cost = (
            located.join(costs, on=["aisle", "bay"])
            .join(ranked.select("location_id", "band"), on="location_id")
            .group_by("band")
            .agg(pl.col("marginal_m").mean().alias("_cost"))
        )

        def stays(candidates: pl.DataFrame, band_cost: pl.DataFrame = band_cost) -> pl.DataFrame:
            priced = candidates.join(band_cost, on="band").join(
                band_cost.rename({"band": "target_band", "_cost": "_target_cost"}), on="target_band"
            )
            gain = pl.col("expected_pick_lines_per_day") * (pl.col("_cost") - pl.col("_target_cost")).abs()
            return priced.filter(gain * config.labor.payback_horizon_days <= config.labor.move_cost_m)

        heading_to = _projected_by_band(velocity, ranked, assignment, per_band, stays)
        costs = _walk_costs_on(recent_orders, heading_to, located, layout, config)
    return located.join(costs, on=["aisle", "bay"], how="left").select("location_id", "marginal_m")


def _walk_costs_on(
    recent_orders: pl.DataFrame, heading_to: pl.DataFrame, located: pl.DataFrame, layout: Layout, config: SlottingConfig
) -> pl.DataFrame:
    picks = (
        sample_orders(recent_orders.select("order_id", "sku_id"), WALK_COST_ORDERS)
        .join(heading_to, on="sku_id", how="inner")
        .join(located, on="location_id", how="inner")
    )
    # Every sampled line is walked once per probe: on a very large block, fewer orders.
    walked_lines = picks.height * layout.aisles * PROBE_BAYS
    if walked_lines > WALK_COST_MAX_LINES:
        orders = picks["order_id"].n_unique()
        picks = sample_orders(picks, max(20, int(orders * WALK_COST_MAX_LINES / walked_lines)), orders)
    return marginal_location_costs(picks, layout, config.routing, PROBE_BAYS)


def _projected_by_band(
    velocity: pl.DataFrame,
    ranked_locs: pl.DataFrame,
    assignment: pl.DataFrame,
    per_band: int,
    worth_moving: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """sku_id, location_id: the slotting the bands head to from `assignment`. A SKU already in
    the band its expected rate gives it stays where it is; the others take, busiest first, the
    cheapest location of their band or beyond not held by a SKU that stays -- as the promotions
    and demotions place them. Within a band the SKUs sit where they happen to be, as they will."""
    busiest = (
        velocity.filter(pl.col("expected_pick_lines_per_day") > 0)
        .sort(["expected_pick_lines_per_day", "sku_id"], descending=[True, False])
        .head(ranked_locs.height)
        .select("sku_id")
        .with_columns(((pl.int_range(pl.len(), dtype=pl.Int64)) // per_band).alias("target_band"))
    )
    here = assignment.select("sku_id", "location_id").join(ranked_locs.select("location_id", "band"), on="location_id")
    placed = busiest.join(here, on="sku_id", how="left")
    stay = placed.filter(pl.col("band") == pl.col("target_band")).select("sku_id", "location_id")
    if worth_moving is not None:
        # Only the SKUs whose move would pay head to their band; the others stay where they are.
        placed = placed.join(velocity.select("sku_id", "expected_pick_lines_per_day"), on="sku_id", how="left")
        keep = worth_moving(placed.filter(pl.col("band").is_not_null() & (pl.col("band") != pl.col("target_band"))))
        stay = pl.concat([stay, keep.select("sku_id", "location_id")])
    movers = placed.join(stay, on="sku_id", how="anti").select(
        "sku_id", (pl.col("target_band") * per_band + 1).alias("min_rank")
    )
    slots = ranked_locs.join(stay, on="location_id", how="anti").sort("cost_rank")
    fitted = first_fit(movers, slots).filter(pl.col("slot_index").is_not_null())
    moved = fitted.select("sku_id", slots["location_id"].gather(fitted["slot_index"]).alias("location_id"))
    return pl.concat([stay, moved])


def _zip_by_rank(velocity: pl.DataFrame, ranked_locs: pl.DataFrame) -> pl.DataFrame:
    busiest = (
        velocity.filter(pl.col("expected_pick_lines_per_day") > 0)
        .sort(["expected_pick_lines_per_day", "sku_id"], descending=[True, False])
        .head(ranked_locs.height)
        .select("sku_id")
    )
    return busiest.with_columns(ranked_locs["location_id"].head(busiest.height).alias("location_id"))


@dataclass(frozen=True)
class DayPlan:
    business_date: dt.date
    assignment: pl.DataFrame  # the slotting at the start of the day (sku_id, location_id)
    directives: pl.DataFrame  # SLOTTING_DIRECTIVES_SCHEMA


def plan_day_after_day(
    days: Sequence[dt.date],
    velocity_on: Callable[[dt.date], pl.DataFrame],
    locations: pl.DataFrame,
    start: pl.DataFrame,
    sku_master: pl.DataFrame,
    earlier_moves: pl.DataFrame | None = None,
    recent_orders_on: Callable[[dt.date], pl.DataFrame] | None = None,
    config: SlottingConfig = SlottingConfig(),
    walk_costs_every_days: int = 1,
) -> Iterator[DayPlan]:
    """The one planning loop: each day of `days` (in order) planned on the slotting the previous
    day's moves leave, starting from `start`.

    `velocity_on(day)` is sku_velocity at that day with the pick-rate columns;
    `recent_orders_on(day)` the order lines (order_id, sku_id) of the weeks up to it, to measure
    what a pick line costs where (every `walk_costs_every_days` days: the asset measures every
    day, so a range plans exactly as one run per date; a long replay may measure weekly; without
    orders the one-line tour prices a location); `earlier_moves` (MOVE_SCHEMA) the relocations before the first day,
    for the hysteresis window and the reversal guard. A SKU the master introduces after a day is
    unknown on that day.
    """
    assignment = start.select("sku_id", "location_id")
    moves = (earlier_moves if earlier_moves is not None else pl.DataFrame(schema=MOVE_SCHEMA)).select(list(MOVE_SCHEMA)).cast(MOVE_SCHEMA)
    walk_costs, measured_on = None, None
    for day in days:
        velocity = velocity_on(day)
        if recent_orders_on is not None and (measured_on is None or (day - measured_on).days >= walk_costs_every_days):
            orders = recent_orders_on(day)
            if orders.height:
                walk_costs, measured_on = walk_costs_towards(orders, velocity, locations, config, assignment), day
        known = sku_master.filter(pl.col("introduced_on").is_null() | (pl.col("introduced_on") <= day))
        guard_from = day - dt.timedelta(days=config.reversal_guard_days)
        directives = plan_directives(
            day,
            velocity,
            locations,
            assignment,
            known,
            recent_moves=moves.filter(pl.col("business_date") >= guard_from),
            walk_costs=walk_costs,
            config=config,
        )
        yield DayPlan(day, assignment, directives)
        assignment = apply_directives(assignment, directives)
        moves = pl.concat([moves.filter(pl.col("business_date") >= guard_from), directives.select(list(MOVE_SCHEMA))])


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
