"""Slotting: hysteresis, targets by class, budget, new SKUs, rewind, capacity; hand-built cases."""

import datetime as dt

import polars as pl

from velocity_platform.domain.contracts import SLOTTING_DIRECTIVES_SCHEMA
from velocity_platform.domain.slotting import (
    SlottingConfig,
    capacity_violations,
    directive_id,
    plan_directives,
    rewind_assignment,
)

D = dt.date(2026, 3, 10)
LOCATIONS = pl.DataFrame(
    {
        "location_id": ["AA-001", "AA-002", "AA-003", "AB-001", "AB-002", "AC-001", "AC-002", "AC-003"],
        "zone": ["A", "A", "A", "B", "B", "C", "C", "C"],
        "distance_m": [1.5, 2.5, 3.5, 4.5, 5.5, 7.5, 8.5, 9.5],
        "capacity_ft3": [40.0] * 8,
    }
)
MASTER = pl.DataFrame(
    {
        "sku_id": ["SKU-FAST", "SKU-SLOW", "SKU-MID", "SKU-BLIP", "SKU-NEW", "SKU-BIG"],
        "unit_cube_ft3": [0.1, 0.1, 0.1, 0.1, 0.1, 10.0],
        "case_qty": [12, 12, 12, 12, 12, 12],
    }
)


def velocity(classes: dict[str, str], lines: dict[str, int] | None = None) -> pl.DataFrame:
    lines = lines or {}
    return pl.DataFrame(
        {
            "sku_id": list(classes),
            "abc_class": list(classes.values()),
            "pick_lines_30d": [lines.get(s, 30) for s in classes],
        },
        schema={"sku_id": pl.String, "abc_class": pl.String, "pick_lines_30d": pl.Int64},
    )


def plan(today, yesterday, assignment, **kwargs):
    return plan_directives(D, today, yesterday, LOCATIONS, assignment, MASTER, **kwargs)


ASSIGNMENT = pl.DataFrame(
    {"sku_id": ["SKU-FAST", "SKU-SLOW", "SKU-MID", "SKU-BLIP"], "location_id": ["AC-001", "AA-001", "AB-001", "AC-002"]}
)


def test_only_class_changes_held_two_evaluations_move():
    today = velocity({"SKU-FAST": "A", "SKU-SLOW": "C", "SKU-MID": "B", "SKU-BLIP": "A"}, {"SKU-FAST": 300})
    yesterday = velocity({"SKU-FAST": "A", "SKU-SLOW": "C", "SKU-MID": "B", "SKU-BLIP": "C"})
    directives = plan(today, yesterday, ASSIGNMENT)
    assert directives.schema == pl.Schema(SLOTTING_DIRECTIVES_SCHEMA)
    moves = {r["sku_id"]: (r["from_location"], r["to_location"]) for r in directives.iter_rows(named=True)}
    # BLIP turned A only today: no move. MID is B in zone B: nothing to do.
    assert moves == {"SKU-FAST": ("AC-001", "AA-002"), "SKU-SLOW": ("AA-001", "AC-003")}
    fast = directives.filter(pl.col("sku_id") == "SKU-FAST").row(0, named=True)
    # 300 lines / 30 days x 2 (round trip) x (7.5 - 2.5) m
    assert fast["expected_saving_m_per_day"] == 100.0
    assert fast["priority"] == 1  # promotions before demotions
    assert fast["directive_id"] == directive_id(D, "SKU-FAST", "AC-001", "AA-002")


def test_budget_keeps_the_largest_savings():
    today = velocity({"SKU-FAST": "A", "SKU-MID": "A"}, {"SKU-FAST": 300, "SKU-MID": 60})
    assignment = pl.DataFrame({"sku_id": ["SKU-FAST", "SKU-MID"], "location_id": ["AC-001", "AC-002"]})
    directives = plan(today, today, assignment, config=SlottingConfig(move_budget=1))
    assert directives["sku_id"].to_list() == ["SKU-FAST"]


def test_a_new_sku_that_sells_gets_a_slot_the_first_day():
    today = velocity({"SKU-NEW": "B"})
    directives = plan(today, velocity({}), ASSIGNMENT)
    row = directives.row(0, named=True)
    assert (row["sku_id"], row["from_location"], row["to_location"]) == ("SKU-NEW", None, "AB-002")
    assert row["reason"].startswith("new SKU")


def test_recently_moved_skus_are_left_alone():
    today = velocity({"SKU-FAST": "A"})
    recently = pl.DataFrame({"sku_id": ["SKU-FAST"]})
    assert plan(today, today, ASSIGNMENT, recently_moved=recently).is_empty()


def test_a_case_that_does_not_fit_is_not_moved():
    today = velocity({"SKU-BIG": "A"})
    assignment = pl.DataFrame({"sku_id": ["SKU-BIG"], "location_id": ["AC-001"]})
    assert plan(today, today, assignment).is_empty()  # 120 ft3 case, 40 ft3 faces


def test_rewind_restores_the_assignment_before_a_days_moves():
    current = pl.DataFrame({"sku_id": ["SKU-FAST", "SKU-SLOW", "SKU-NEW"], "location_id": ["AA-002", "AC-003", "AB-002"]})
    applied = pl.DataFrame(
        {
            "business_date": [D, D, D + dt.timedelta(days=1), D],
            "sku_id": ["SKU-FAST", "SKU-SLOW", "SKU-FAST", "SKU-NEW"],
            "from_location": ["AC-001", "AA-001", "AA-002", None],
            "to_location": ["AA-002", "AC-003", "AA-003", "AB-002"],
        }
    )
    # FAST moved twice since D; it goes back to where its first move started. NEW had no slot.
    current = current.with_columns(pl.when(pl.col("sku_id") == "SKU-FAST").then(pl.lit("AA-003")).otherwise(pl.col("location_id")).alias("location_id"))
    start = rewind_assignment(current, applied).sort("sku_id")
    assert start.rows() == [("SKU-FAST", "AC-001"), ("SKU-SLOW", "AA-001")]


def test_replanning_a_day_from_its_rewound_start_gives_the_same_directives():
    today = velocity({"SKU-FAST": "A", "SKU-SLOW": "C"}, {"SKU-FAST": 300})
    first = plan(today, today, ASSIGNMENT)
    moved = ASSIGNMENT.join(first.select("sku_id", "to_location"), on="sku_id", how="left").select(
        "sku_id", pl.coalesce("to_location", "location_id").alias("location_id")
    )
    applied = first.select("business_date", "sku_id", "from_location", "to_location")
    again = plan(today, today, rewind_assignment(moved, applied))
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
