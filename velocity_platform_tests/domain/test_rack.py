"""The rack beyond the floor plan: handling by level (the golden zone), pick faces and their
replenishment, and what a day's relocations realise on later orders under the routing."""

import datetime as dt

import polars as pl
import pytest

from velocity_platform.domain.faces import faces, faces_short_of_a_day, replenishment_trips
from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.shadow import walked_savings
from velocity_platform.domain.slotting import SlottingConfig, plan_directives, ranked_locations
from velocity_platform.domain.travel import Layout, layout_locations, order_travel


def test_the_golden_levels_cost_no_handling_and_the_floor_and_top_do():
    labor = LaborModel()
    assert labor.golden_levels(4) == [2, 3] and labor.golden_levels(1) == [1]
    assert [labor.handling_s(level, 4) for level in (1, 2, 3, 4)] == [2.2, 0.0, 0.0, 1.5]
    assert labor.handling_s(6, 6) == 1.5  # above the list's end: its last entry
    assert labor.handling_s(1, 1) == 0.0  # one level is a shelf at waist height
    slow_walker = LaborModel(walk_speed_m_s=0.5)
    handled = pl.DataFrame({"level": [1, 2, 4]}).select(slow_walker.handling_m_expr(pl.col("level"), 4))
    assert handled.to_series().to_list() == [1.1, 0.0, 0.75]  # seconds x m/s: metres of walking
    with pytest.raises(ValueError, match="handling seconds"):
        LaborModel(level_handling_s=(1.0, -0.5))


def test_a_four_level_aisle_ranks_its_golden_levels_first():
    locations = layout_locations(Layout(aisles=2, bays_per_side=2, levels=4))
    ranked = ranked_locations(locations, SlottingConfig(routing="s-shape")).sort("cost_rank")
    levels = ranked.join(locations.select("location_id", "level"), on="location_id", maintain_order="left")["level"]
    # S-shape walks an aisle end to end: within aisle 0, levels 2 and 3 first, then the top, then the floor.
    assert levels.head(8).sort().to_list() == [2, 2, 2, 2, 3, 3, 3, 3]
    assert set(levels.slice(8, 4).to_list()) == {4} and set(levels.slice(12, 4).to_list()) == {1}


LEVELS = layout_locations(Layout(aisles=2, bays_per_side=2, levels=4), capacity_ft3=40.0)
LABOR = LaborModel(walk_speed_m_s=1.0, move_minutes=10.0, payback_horizon_days=15.0)
MASTER = pl.DataFrame(
    {"sku_id": ["SKU-X"], "unit_cube_ft3": [0.1], "case_qty": [6], "cube_is_default": [False], "introduced_on": [None]},
    schema_overrides={"introduced_on": pl.Date},
)


def _velocity(rate: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku_id": ["SKU-X"],
            "pick_lines_30d": [int(rate * 30)],
            "history_days": [365],
            "expected_pick_lines_per_day": [rate],
            "pick_lines_per_day_recent": [rate],
            "pick_lines_per_day_prior": [rate],
        }
    )


def test_a_fast_mover_on_the_floor_goes_to_a_golden_level_when_the_handling_repays_the_move():
    config = SlottingConfig(routing="return", labor=LABOR)
    floor = LEVELS.filter((pl.col("aisle") == 0) & (pl.col("bay") == 0) & (pl.col("level") == 1))["location_id"][0]
    start = pl.DataFrame({"sku_id": ["SKU-X"], "location_id": [floor]})
    day = dt.date(2026, 3, 1)
    # Same bay, 2.2 s (2.2 m) less a line: 15 days x 18 lines x 2.2 m = 594 m < 600 m a relocation.
    assert plan_directives(day, _velocity(18.0), LEVELS, start, MASTER, config=config).is_empty()
    move = plan_directives(day, _velocity(19.0), LEVELS, start, MASTER, config=config).row(0, named=True)
    to = LEVELS.filter(pl.col("location_id") == move["to_location"]).row(0, named=True)
    assert (to["aisle"], to["bay"], to["level"] in (2, 3)) == (0, 0, True)
    assert move["expected_saving_m_per_day"] == pytest.approx(19.0 * 2.2)
    assert "golden level" in move["reason"]
    # With no handling cost by level there is nothing to gain.
    flat = SlottingConfig(routing="return", labor=LaborModel(1.0, 10.0, 15.0, level_handling_s=(0.0,)))
    assert plan_directives(day, _velocity(19.0), LEVELS, start, MASTER, config=flat).is_empty()


def test_a_face_holds_its_capacity_over_the_unit_cube_and_empties_units_over_face_times_a_day():
    locations = pl.DataFrame({"location_id": ["L1", "L2"], "capacity_ft3": [40.0, 4.0]})
    master = pl.DataFrame(
        {"sku_id": ["A", "B", "C"], "unit_cube_ft3": [0.1, 0.3, None], "cube_is_default": [False, True, None]}
    )
    assignment = pl.DataFrame({"sku_id": ["A", "B"], "location_id": ["L1", "L2"]})
    held = faces(assignment, locations, master).sort("sku_id")
    assert held["face_units"].to_list() == [400.0, 13.0]  # floor(4 / 0.3)
    trips = replenishment_trips(pl.DataFrame({"sku_id": ["A", "B", "C"], "units": [200.0, 26.0, 5.0]}), held).sort("sku_id")
    assert trips["trips"].to_list() == [0.5, 2.0]  # C has no face: not counted
    short = faces_short_of_a_day(pl.DataFrame({"sku_id": ["A", "B"], "units_per_day": [399.0, 14.0]}), held)
    assert short.select("sku_id", "cube_is_default").rows() == [("B", True)]
    assert LaborModel(replenish_minutes=6.0).replenish_hours(5) == 0.5


def test_each_days_relocations_are_credited_what_they_add_on_later_orders_and_the_days_add_up():
    layout = Layout(aisles=4, bays_per_side=3)
    locations = layout_locations(layout).with_columns(pl.lit(0.0).alias("handling_m"))
    at = {(a, b): locations.filter((pl.col("aisle") == a) & (pl.col("bay") == b) & (pl.col("side") == "L"))["location_id"][0] for a in range(4) for b in range(3)}
    d1, d2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    moves = pl.DataFrame(
        {
            "business_date": [d1, d1, d2],
            "sku_id": ["A", "B", "A"],  # A moves twice: 3 -> 2 on day 1, 2 -> 0 on day 2
            "from_location": [at[(3, 2)], at[(2, 1)], at[(2, 0)]],
            "to_location": [at[(2, 0)], at[(0, 1)], at[(0, 2)]],
        }
    )
    now = pl.DataFrame({"sku_id": ["A", "B", "C", "D"], "location_id": [at[(0, 2)], at[(0, 1)], at[(1, 0)], at[(3, 1)]]})
    lines = pl.DataFrame({"order_id": ["o1", "o1", "o1", "o2", "o3"], "sku_id": ["A", "B", "C", "A", "D"]})

    def walked(placement: dict[str, tuple[int, int]]) -> float:
        picks = lines.filter(pl.col("order_id") != "o3").with_columns(
            pl.col("sku_id").replace_strict({s: a for s, (a, _) in placement.items()}).cast(pl.Int32).alias("aisle"),
            pl.col("sku_id").replace_strict({s: b for s, (_, b) in placement.items()}).cast(pl.Int32).alias("bay"),
        )
        return float(order_travel(picks, layout, "s-shape")["travel_m"].sum())

    as_is = {"A": (0, 2), "B": (0, 1), "C": (1, 0)}
    day_two_undone = as_is | {"A": (2, 0)}
    both_undone = day_two_undone | {"A": (3, 2), "B": (2, 1)}
    saved = dict(walked_savings(lines, now, moves, locations, layout, "s-shape").iter_rows())
    assert saved[d2] == pytest.approx(walked(day_two_undone) - walked(as_is))
    assert saved[d1] == pytest.approx(walked(both_undone) - walked(day_two_undone))
    assert saved[d1] > 0 and saved[d2] > 0
    # A day's moves on the floor plan only: no relocations, nothing credited.
    assert walked_savings(lines, now, moves.clear(), locations, layout, "s-shape").is_empty()


def test_reachable_pricing_keeps_the_slow_movers_that_never_pay_to_move_where_they_are():
    from velocity_platform.domain.slotting import walk_costs_towards

    locations = layout_locations(Layout(aisles=4, bays_per_side=2))
    at = locations.select("location_id", "aisle", "bay", "side")
    back = at.filter(pl.col("aisle") >= 2).sort("aisle", "bay", "side")["location_id"].to_list()
    slow = [f"S{i}" for i in range(6)]
    assignment = pl.DataFrame({"sku_id": ["FAST", *slow], "location_id": back[:7]})
    velocity = pl.DataFrame({"sku_id": ["FAST", *slow], "expected_pick_lines_per_day": [5.0] + [0.01] * 6})
    orders = pl.DataFrame({"order_id": [f"o{i}" for i in range(6) for _ in (0, 1)], "sku_id": [s for i in range(6) for s in ("FAST", slow[i])]})
    costs = {
        price_on: walk_costs_towards(orders, velocity, locations, SlottingConfig(routing="s-shape", price_on=price_on), assignment)
        .join(at, on="location_id")
        .group_by("aisle")
        .agg(pl.col("marginal_m").mean())
        .sort("aisle")["marginal_m"]
        .to_list()
        for price_on in ("target", "reachable")
    }
    # On the target every SKU sits in aisles 0-1 and a pick in aisle 3 adds its walk; in reach,
    # the slow movers (0.01 lines a day never repay a move) keep aisles 2-3 walked, so the back
    # costs less and the front saves less.
    assert costs["reachable"][3] < costs["target"][3]
    assert costs["reachable"][3] - costs["reachable"][0] < costs["target"][3] - costs["target"][0]
    with pytest.raises(ValueError, match="price_on"):
        SlottingConfig(price_on="tomorrow")
