"""Slotting: ranking, hysteresis, budget, new SKUs, demotions that make room, rewind, capacity.

The tests of ranking and matching price relocations at zero minutes, so that every move that
saves walking pays; test_slotting_economics.py holds the labor model to its promises.

Hand-built cases on a 3-aisle x 2-bay layout under return routing, where a location's cost is
the one-line tour 2x + 2y: aisle 0 bay 0 costs 1 m, bay 1 3 m; aisle 1 bay 0 7 m, bay 1 9 m;
aisle 2 bay 0 13 m, bay 1 15 m. With two locations per band the bands are, cheapest first:
band 0 = AA-001/AA-002, band 1 = AA-003/AA-004, band 2 = AB-001/AB-002, band 3 = AB-003/AB-004,
band 4 = AC-001/AC-002, band 5 = AC-003/AC-004.
"""

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity_platform.domain.contracts import SLOTTING_DIRECTIVES_SCHEMA
from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.slotting import (
    SlottingConfig,
    capacity_violations,
    directive_id,
    first_fit,
    plan_directives,
    rewind_assignment,
)
from velocity_platform.domain.travel import Layout, layout_locations

D = dt.date(2026, 3, 10)
LOCATIONS = layout_locations(Layout(aisles=3, bays_per_side=2), capacity_ft3=40.0)
FREE_MOVES = LaborModel(move_minutes=0.0)
CONFIG = SlottingConfig(routing="return", band_locations=2, labor=FREE_MOVES)
SKUS = ["SKU-FAST", "SKU-BLIP", "SKU-MID", "SKU-F1", "SKU-F2", "SKU-SLOW", "SKU-SLW2", "SKU-NEW", "SKU-BIG"]
MASTER = pl.DataFrame(
    {
        "sku_id": SKUS,
        "unit_cube_ft3": [0.1] * 8 + [10.0],
        "case_qty": [12] * 9,
        "cube_is_default": [False] * 9,
    }
)


def velocity(lines: dict[str, int], prior: dict[str, int] | None = None) -> pl.DataFrame:
    """sku_velocity rows with the columns slotting reads: `lines` pick lines over 30 days set the
    level and the recent window's rate, `prior` (default the same) the prior window's."""
    prior = lines if prior is None else prior
    rate = lambda table: [table.get(k, 0) / 30 for k in lines]  # noqa: E731
    return pl.DataFrame(
        {
            "sku_id": list(lines),
            "abc_class": ["A"] * len(lines),
            "pick_lines_30d": list(lines.values()),
            "coi": [None] * len(lines),
            "history_days": [365] * len(lines),
            "expected_pick_lines_per_day": rate(lines),
            "pick_lines_per_day_recent": rate(lines),
            "pick_lines_per_day_prior": rate(prior),
        },
        schema={
            "sku_id": pl.String,
            "abc_class": pl.String,
            "pick_lines_30d": pl.Int64,
            "coi": pl.Float64,
            "history_days": pl.Int32,
            "expected_pick_lines_per_day": pl.Float64,
            "pick_lines_per_day_recent": pl.Float64,
            "pick_lines_per_day_prior": pl.Float64,
        },
    )


def assign(**where: str) -> pl.DataFrame:
    return pl.DataFrame({"sku_id": [f"SKU-{k}" for k in where], "location_id": list(where.values())})


def held_in_place(skus: list[str], day: dt.date = D - dt.timedelta(days=1)) -> pl.DataFrame:
    """Relocations of `skus` on `day` (from one location to another of the same rank: level)."""
    return pl.DataFrame(
        {"business_date": [day] * len(skus), "sku_id": skus, "from_location": ["AA-001"] * len(skus), "to_location": ["AA-001"] * len(skus)},
        schema={"business_date": pl.Date, "sku_id": pl.String, "from_location": pl.String, "to_location": pl.String},
    )


def plan(today, yesterday, assignment, config=CONFIG, day=D, recently_moved=None):
    """Today's lines set the level and the recent window, yesterday's the prior window."""
    table = velocity(dict(zip(today["sku_id"], today["pick_lines_30d"])), dict(zip(yesterday["sku_id"], yesterday["pick_lines_30d"])))
    recent = held_in_place(recently_moved["sku_id"].to_list(), day - dt.timedelta(days=1)) if recently_moved is not None else None
    return plan_directives(day, table, LOCATIONS, assignment, MASTER, recent_moves=recent, config=config)


def moves(directives: pl.DataFrame) -> dict[str, tuple]:
    return {r["sku_id"]: (r["from_location"], r["to_location"]) for r in directives.iter_rows(named=True)}


TODAY = velocity({"SKU-FAST": 300, "SKU-BLIP": 200, "SKU-MID": 30, "SKU-F1": 20, "SKU-F2": 10, "SKU-SLOW": 0})
# BLIP sold once yesterday: ranked 5th of 6 (band 2), the band it sits in.
YESTERDAY = velocity({"SKU-FAST": 300, "SKU-MID": 30, "SKU-F1": 20, "SKU-F2": 10, "SKU-BLIP": 1, "SKU-SLOW": 0})
START = assign(FAST="AC-001", BLIP="AB-001", MID="AA-003", F1="AA-004", F2="AB-002", SLOW="AA-001")


def test_only_moves_whose_band_held_on_two_evaluations_are_planned():
    directives = plan(TODAY, YESTERDAY, START)
    assert directives.schema == pl.Schema(SLOTTING_DIRECTIVES_SCHEMA)
    # FAST ranks 1st on both days (band 0) and sits in band 4: it takes the free AA-002.
    # BLIP ranks 2nd today (band 0) but 5th yesterday (band 2, where it is): it stays.
    # SLOW (band 2 by rank) sits in band 0, but nobody is waiting for its place: it stays.
    assert moves(directives) == {"SKU-FAST": ("AC-001", "AA-002")}
    fast = directives.row(0, named=True)
    # 300 lines / 30 days x (13 m - 1 m)
    assert fast["expected_saving_m_per_day"] == 120.0
    assert (fast["velocity_rank"], fast["to_cost_rank"], fast["priority"]) == (1, 2, 1)
    assert fast["directive_id"] == directive_id(D, "SKU-FAST", "AC-001", "AA-002")
    assert fast["reason"].startswith("10.0 pick lines/day expected, belongs in band 0 on both confirmation windows")


def test_full_best_bands_are_made_room_in_by_demoting_slow_movers():
    start = assign(FAST="AB-001", SLOW="AA-001", SLW2="AA-002", MID="AA-003", F1="AA-004")
    lines = {"SKU-FAST": 300, "SKU-MID": 30, "SKU-F1": 20, "SKU-SLOW": 0, "SKU-SLW2": 0}
    directives = plan(velocity(lines), velocity(lines), start)
    # Ranks FAST 1, MID 2, F1 3, SLOW 4, SLW2 5 -> bands 0, 0, 1, 1, 2. Bands 0 and 1 are full,
    # so FAST (band 2) and MID (band 1) wait. SLOW and SLW2 sit in band 0 but belong further
    # out: each moves to the cheapest free location of its own band or beyond (AB-002 in band
    # 2, AB-003 in band 3), freeing AA-001 for FAST and AA-002 for MID the next day.
    assert moves(directives) == {"SKU-SLOW": ("AA-001", "AB-002"), "SKU-SLW2": ("AA-002", "AB-003")}
    slow, slw2 = directives.rows(named=True)
    assert slow["expected_saving_m_per_day"] == slw2["expected_saving_m_per_day"] == 0.0  # they never sell
    assert slow["enables_saving_m_per_day"] == 60.0  # FAST: 10 lines/day x (7 - 1) m
    assert slw2["enables_saving_m_per_day"] == 2.0  # MID: 1 line/day x (3 - 1) m
    assert "make room for SKU-FAST" in slow["reason"] and slow["priority"] == 1
    after = start.filter(~pl.col("sku_id").is_in(["SKU-SLOW", "SKU-SLW2"])).vstack(assign(SLOW="AB-002", SLW2="AB-003"))
    recently = pl.DataFrame({"sku_id": ["SKU-SLOW", "SKU-SLW2"]})
    tomorrow = plan(velocity(lines), velocity(lines), after, day=D + dt.timedelta(days=1), recently_moved=recently)
    assert moves(tomorrow) == {"SKU-FAST": ("AB-001", "AA-001"), "SKU-MID": ("AA-003", "AA-002")}


def test_budget_keeps_the_largest_savings():
    today = velocity({"SKU-FAST": 300, "SKU-MID": 60})
    start = assign(FAST="AC-001", MID="AC-002")
    directives = plan(today, today, start, config=SlottingConfig(routing="return", band_locations=2, move_budget=1, labor=FREE_MOVES))
    assert directives["sku_id"].to_list() == ["SKU-FAST"]
    unlimited = plan(today, today, start, config=SlottingConfig(routing="return", band_locations=2, move_budget=None, labor=FREE_MOVES))
    assert moves(unlimited) == {"SKU-FAST": ("AC-001", "AA-001"), "SKU-MID": ("AC-002", "AA-002")}


def test_a_new_sku_that_sells_gets_a_slot_the_first_day():
    today = velocity({"SKU-FAST": 300, "SKU-MID": 30, "SKU-NEW": 15})
    start = assign(FAST="AA-001", MID="AA-002")
    directives = plan(today, velocity({}), start)  # no history yesterday: no hysteresis for a first slot
    row = directives.row(0, named=True)
    # NEW ranks 3rd: band 1, whose cheapest free location is AA-003.
    assert (row["sku_id"], row["from_location"], row["to_location"]) == ("SKU-NEW", None, "AA-003")
    assert row["reason"].startswith("new SKU slotted (putaway, no relocation): 0.5 pick lines/day expected, band 1")
    assert (row["relocations"], row["payback_days"]) == (0, 0.0)


def test_recently_moved_skus_are_left_alone():
    recently = pl.DataFrame({"sku_id": ["SKU-FAST"]})
    assert plan(TODAY, YESTERDAY, START, recently_moved=recently).is_empty()


def test_a_case_that_does_not_fit_is_not_moved():
    today = velocity({"SKU-BIG": 300})
    assert plan(today, today, assign(BIG="AC-001")).is_empty()  # 120 ft3 case, 40 ft3 faces


def test_s_shape_ranks_aisles_nearest_the_depot_first():
    today = velocity({"SKU-FAST": 300})
    directives = plan(today, today, assign(FAST="AC-004"), config=SlottingConfig(routing="s-shape", labor=FREE_MOVES))
    # s-shape: every location of an aisle costs 2x + L (L = 2 m): aisle 2 is 14 m, aisle 0 2 m.
    assert moves(directives) == {"SKU-FAST": ("AC-004", "AA-001")}
    assert directives["expected_saving_m_per_day"].to_list() == [10.0 * 12.0]


def test_rewind_restores_the_assignment_before_a_days_moves():
    current = pl.DataFrame({"sku_id": ["SKU-FAST", "SKU-SLOW", "SKU-NEW"], "location_id": ["AA-003", "AC-003", "AB-002"]})
    applied = pl.DataFrame(
        {
            "business_date": [D, D, D + dt.timedelta(days=1), D],
            "sku_id": ["SKU-FAST", "SKU-SLOW", "SKU-FAST", "SKU-NEW"],
            "from_location": ["AC-001", "AA-001", "AA-002", None],
            "to_location": ["AA-002", "AC-003", "AA-003", "AB-002"],
        }
    )
    # FAST moved twice since D; it goes back to where its first move started. NEW had no slot.
    start = rewind_assignment(current, applied).sort("sku_id")
    assert start.rows() == [("SKU-FAST", "AC-001"), ("SKU-SLOW", "AA-001")]


def test_replanning_a_day_from_its_rewound_start_gives_the_same_directives():
    first = plan(TODAY, YESTERDAY, START)
    moved = START.join(first.select("sku_id", "to_location"), on="sku_id", how="left").select(
        "sku_id", pl.coalesce("to_location", "location_id").alias("location_id")
    )
    applied = first.select("business_date", "sku_id", "from_location", "to_location")
    again = plan(TODAY, YESTERDAY, rewind_assignment(moved, applied))
    assert not first.is_empty()
    assert again["directive_id"].to_list() == first["directive_id"].to_list()


def test_capacity_violations_name_each_problem():
    directives = pl.DataFrame(
        {
            "directive_id": ["d1", "d2", "d3", "d4"],
            "sku_id": ["SKU-FAST", "SKU-MID", "SKU-BIG", "SKU-SLOW"],
            "to_location": ["AA-001", "AA-002", "AA-003", "AA-002"],
        }
    )
    assignment = pl.DataFrame({"sku_id": ["SKU-X"], "location_id": ["AA-001"]})
    problems = dict(capacity_violations(directives, LOCATIONS, assignment, MASTER).select("directive_id", "problem").iter_rows())
    assert problems == {
        "d1": "to_location is occupied at the start of the day",
        "d2": "to_location is the target of more than one directive",
        "d3": "a full case does not fit the location's capacity",
        "d4": "to_location is the target of more than one directive",
    }


def test_first_fit_is_the_sequential_greedy():
    slots = pl.DataFrame({"cost_rank": [2, 3, 5, 8, 9]})
    seekers = pl.DataFrame({"sku_id": ["a", "b", "c", "d", "e", "f"], "min_rank": [1, 1, 4, 4, 9, 9]})
    placed = first_fit(seekers, slots)
    # a takes 2, b 3, c the first >= 4 (5), d the next (8), e 9, f finds nothing left
    assert placed["slot_index"].to_list() == [0, 1, 2, 3, 4, None]


# --- any day's plan is a set of moves the WMS can apply in any order ----------------------------

BIG_LAYOUT = layout_locations(Layout(aisles=6, bays_per_side=5, levels=2), capacity_ft3=40.0)  # 120 locations


@st.composite
def warehouses(draw):
    n_skus = draw(st.integers(5, 110))
    skus = [f"SKU-{i:04d}" for i in range(n_skus)]
    slotted = draw(st.lists(st.sampled_from(skus), unique=True, max_size=n_skus))
    places = draw(st.permutations(BIG_LAYOUT["location_id"].to_list()))[: len(slotted)]
    today = [draw(st.integers(0, 400)) for _ in skus]
    yesterday = [max(0, t + draw(st.integers(-50, 50))) for t in today]
    # a relocation needs a slot: only slotted SKUs can have been moved recently
    moved = draw(st.lists(st.sampled_from(slotted), unique=True, max_size=10)) if slotted else []
    budget = draw(st.sampled_from([None, 0, 3, 20]))
    routing = draw(st.sampled_from(["s-shape", "return", "largest-gap"]))
    return skus, dict(zip(slotted, places)), today, yesterday, moved, budget, routing


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(warehouses())
def test_a_plan_never_conflicts_with_itself_or_the_start_of_the_day(case):
    skus, where, today, yesterday, moved, budget, routing = case
    master = pl.DataFrame(
        {"sku_id": skus, "unit_cube_ft3": [0.1] * len(skus), "case_qty": [6] * len(skus), "cube_is_default": [True] * len(skus)}
    )
    assignment = pl.DataFrame({"sku_id": list(where), "location_id": list(where.values())}, schema={"sku_id": pl.String, "location_id": pl.String})
    directives = plan_directives(
        D,
        velocity(dict(zip(skus, today)), dict(zip(skus, yesterday))),
        BIG_LAYOUT,
        assignment,
        master,
        recent_moves=held_in_place(moved),
        config=SlottingConfig(move_budget=budget, routing=routing),
    )
    assert capacity_violations(directives, BIG_LAYOUT, assignment, master).is_empty()
    assert directives["sku_id"].is_unique().all()
    assert not set(directives["sku_id"]) & set(moved)
    if budget is not None:
        assert directives.height <= budget
    # every move starts where the SKU is; a first slot only for a SKU without one that sells
    for row in directives.iter_rows(named=True):
        assert row["from_location"] == where.get(row["sku_id"])
        if row["from_location"] is None:
            assert today[skus.index(row["sku_id"])] > 0
    # new slots first, then by the value the plan ranks on
    new = directives["from_location"].is_null().to_list()
    assert new == sorted(new, reverse=True)
    assert directives["priority"].to_list() == list(range(1, directives.height + 1))
