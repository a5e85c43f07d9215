"""Travel model: hand-computed tours, an independent step-by-step walker, and random storage.

The walker below builds each routing's route as an explicit list of waypoints (depot, every pick,
the cross-aisle corners it turns at, depot) and sums |dx| + |dy| leg by leg, refusing any leg that
does not run along an aisle centre-line or a cross-aisle. It shares nothing with travel.py's
closed-form, vectorised formulas, so agreement on random orders checks both the formulas and the
claim that the route they measure is a legal walk that reaches every pick.
"""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity_platform.domain.contracts import WMS_LOCATIONS_SCHEMA
from velocity_platform.domain.travel import (
    ROUTINGS,
    Layout,
    expected_aisles_visited,
    locate,
    location_costs,
    order_travel,
)

# --- an independent walker --------------------------------------------------------------------


class Walker:
    """A picker walking waypoint to waypoint along centre-lines and cross-aisles."""

    def __init__(self, layout: Layout) -> None:
        self.pitch = layout.aisle_pitch_m
        self.bay_pitch = layout.bay_pitch_m
        self.length = layout.bays_per_side * layout.bay_pitch_m
        self.x, self.y = 0.0, 0.0
        self.distance = 0.0
        self.picked: list[tuple[int, int]] = []

    def _move(self, x: float, y: float) -> None:
        if x == self.x:  # along an aisle centre-line
            assert 0.0 <= y <= self.length and 0.0 <= self.y <= self.length
            self.distance += abs(y - self.y)
        elif y == self.y and y in (0.0, self.length):  # along the front or back cross-aisle
            self.distance += abs(x - self.x)
        else:
            raise AssertionError(f"illegal leg ({self.x}, {self.y}) -> ({x}, {y})")
        self.x, self.y = x, y

    def front(self, aisle: int) -> None:
        self._move(aisle * self.pitch, 0.0)

    def back(self, aisle: int) -> None:
        self._move(aisle * self.pitch, self.length)

    def pick(self, aisle: int, bay: int) -> None:
        self._move(aisle * self.pitch, (bay + 0.5) * self.bay_pitch)
        self.picked.append((aisle, bay))

    def home(self) -> float:
        self._move(0.0, 0.0)
        return self.distance


def _by_aisle(picks: list[tuple[int, int]]) -> dict[int, list[int]]:
    """Distinct bays per aisle, front to back."""
    aisles: dict[int, list[int]] = {}
    for aisle, bay in sorted(set(picks)):
        aisles.setdefault(aisle, []).append(bay)
    return aisles


def walk_return(layout: Layout, picks: list[tuple[int, int]]) -> Walker:
    w = Walker(layout)
    for aisle, bays in _by_aisle(picks).items():
        w.front(aisle)
        for bay in bays:
            w.pick(aisle, bay)
        w.front(aisle)
    w.home()
    return w


def walk_s_shape(layout: Layout, picks: list[tuple[int, int]]) -> Walker:
    w = Walker(layout)
    aisles = _by_aisle(picks)
    visited = list(aisles)
    at_front = True
    for i, aisle in enumerate(visited):
        bays = aisles[aisle]
        odd_last = i == len(visited) - 1 and len(visited) % 2 == 1
        if odd_last:  # entered and left from the front
            assert at_front
            w.front(aisle)
            for bay in bays:
                w.pick(aisle, bay)
            w.front(aisle)
        elif at_front:  # traverse front -> back
            w.front(aisle)
            for bay in bays:
                w.pick(aisle, bay)
            w.back(aisle)
            at_front = False
        else:  # traverse back -> front
            w.back(aisle)
            for bay in reversed(bays):
                w.pick(aisle, bay)
            w.front(aisle)
            at_front = True
    assert at_front
    w.home()
    return w


def _split_at_largest_gap(layout: Layout, bays: list[int]) -> tuple[list[int], list[int]]:
    """(bays fetched from the front, bays fetched from the back) around the largest gap."""
    stops = [0.0] + [(b + 0.5) * layout.bay_pitch_m for b in bays] + [layout.aisle_length_m]
    gaps = [stops[i + 1] - stops[i] for i in range(len(stops) - 1)]
    j = gaps.index(max(gaps))  # the gap between stops[j] and stops[j + 1]
    return bays[:j], bays[j:]


def walk_largest_gap(layout: Layout, picks: list[tuple[int, int]]) -> Walker:
    aisles = _by_aisle(picks)
    visited = list(aisles)
    if len(visited) == 1:
        return walk_return(layout, picks)
    w = Walker(layout)
    first, *middle, last = visited
    # out: traverse the first aisle front -> back
    w.front(first)
    for bay in aisles[first]:
        w.pick(first, bay)
    w.back(first)
    # along the back: the part of each middle aisle behind its largest gap, from the back
    for aisle in middle:
        _, from_back = _split_at_largest_gap(layout, aisles[aisle])
        w.back(aisle)
        for bay in reversed(from_back):
            w.pick(aisle, bay)
        w.back(aisle)
    # traverse the last aisle back -> front
    w.back(last)
    for bay in reversed(aisles[last]):
        w.pick(last, bay)
    w.front(last)
    # home along the front: the part of each middle aisle before its largest gap, from the front
    for aisle in reversed(middle):
        from_front, _ = _split_at_largest_gap(layout, aisles[aisle])
        w.front(aisle)
        for bay in from_front:
            w.pick(aisle, bay)
        w.front(aisle)
    w.home()
    return w


WALKERS = {"return": walk_return, "s-shape": walk_s_shape, "largest-gap": walk_largest_gap}


def walked(layout: Layout, routing: str, picks: list[tuple[int, int]]) -> float:
    w = WALKERS[routing](layout, picks)
    assert sorted(w.picked) == sorted(set(picks)), "the route must reach every pick exactly once"
    assert (w.x, w.y) == (0.0, 0.0)
    return w.distance


# --- helpers ----------------------------------------------------------------------------------


def picks_frame(orders: dict[int, list[tuple[int, int]]]) -> pl.DataFrame:
    rows = [(oid, a, b) for oid, lines in orders.items() for a, b in lines]
    return pl.DataFrame(
        rows, schema={"order_id": pl.Int64, "aisle": pl.Int32, "bay": pl.Int32}, orient="row"
    )


def travel_of(layout: Layout, routing: str, orders: dict[int, list[tuple[int, int]]]) -> dict:
    out = order_travel(picks_frame(orders), layout, routing)
    return {r["order_id"]: r for r in out.iter_rows(named=True)}


def random_orders(
    rng: random.Random, layout: Layout, n_orders: int, max_lines: int
) -> dict[int, list[tuple[int, int]]]:
    orders = {}
    for oid in range(n_orders):
        # sometimes concentrate the order in a few aisles, so that aisles hold several picks
        pool = rng.sample(range(layout.aisles), k=rng.randint(1, layout.aisles))
        n = rng.randint(1, max_lines)
        orders[oid] = [
            (rng.choice(pool), rng.randrange(layout.bays_per_side)) for _ in range(n)
        ]
    return orders


def wms_master(layout: Layout) -> pl.DataFrame:
    rows = [
        (f"A{a:02d}-{b:03d}-{s}-{lv}", "PICK", a, b, s, lv, 10.0, 0.0, None)
        for a in range(layout.aisles)
        for b in range(layout.bays_per_side)
        for s in ("L", "R")
        for lv in range(1, layout.levels + 1)
    ]
    return pl.DataFrame(rows, schema=WMS_LOCATIONS_SCHEMA, orient="row")


# --- hand-computed tours ----------------------------------------------------------------------

LAYOUT = Layout(aisles=10, bays_per_side=10, levels=3)  # L = 10 m


@pytest.mark.parametrize("routing", ROUTINGS)
def test_single_pick_is_an_in_and_out_trip_under_every_routing(routing: str) -> None:
    got = travel_of(LAYOUT, routing, {1: [(0, 0)], 2: [(2, 9)], 3: [(2, 9), (2, 3), (2, 9)]})
    assert got[1]["travel_m"] == pytest.approx(2 * 0.5)
    assert got[2]["travel_m"] == pytest.approx(2 * (6.0 + 9.5))
    assert got[3]["travel_m"] == pytest.approx(2 * (6.0 + 9.5))
    assert (got[3]["aisles_visited"], got[3]["pick_lines"]) == (1, 3)


def test_return_goes_to_the_deepest_pick_of_each_aisle() -> None:
    got = travel_of(LAYOUT, "return", {1: [(1, 2), (1, 7), (4, 0)]})
    # cross-aisle 2 * 12 m; aisle 1: 2 * 7.5; aisle 4: 2 * 0.5
    assert got[1]["travel_m"] == pytest.approx(24.0 + 15.0 + 1.0)


def test_s_shape_traverses_every_visited_aisle_when_their_number_is_even() -> None:
    got = travel_of(LAYOUT, "s-shape", {1: [(1, 0), (3, 0)], 2: [(1, 9), (3, 9), (3, 2)]})
    # 2 * 9 m of cross-aisle + two full 10 m aisles, whatever the depths
    assert got[1]["travel_m"] == pytest.approx(18.0 + 20.0)
    assert got[2]["travel_m"] == pytest.approx(18.0 + 20.0)


def test_s_shape_odd_number_of_aisles_returns_from_the_last_one() -> None:
    got = travel_of(
        LAYOUT,
        "s-shape",
        {
            1: [(0, 1), (2, 8), (4, 2)],  # aisles 0 and 2 traversed, aisle 4 in to 2.5 m and back
            2: [(0, 1), (2, 8), (4, 9)],  # ... in to 9.5 m and back
            3: [(4, 2), (0, 9), (2, 0)],  # same aisles, line order is irrelevant
            4: [(7, 5)],  # one aisle: a return trip
        },
    )
    assert got[1]["travel_m"] == pytest.approx(24.0 + 2 * 10.0 + 2 * 2.5)
    assert got[2]["travel_m"] == pytest.approx(24.0 + 2 * 10.0 + 2 * 9.5)
    assert got[3]["travel_m"] == pytest.approx(24.0 + 2 * 10.0 + 2 * 2.5)
    assert got[4]["travel_m"] == pytest.approx(42.0 + 2 * 5.5)
    assert [got[i]["aisles_visited"] for i in (1, 2, 3, 4)] == [3, 3, 3, 1]


def test_largest_gap_skips_the_largest_gap_of_each_middle_aisle() -> None:
    layout = Layout(aisles=6, bays_per_side=10)
    got = travel_of(
        layout,
        "largest-gap",
        {
            1: [
                (0, 5),  # first aisle: traversed, 10 m
                (1, 1),  # middle: picks at 1.5 and 8.5 -> largest gap 7 m between them,
                (1, 8),  # 1.5 m in from the front and out, 1.5 m in from the back: 2 * 3
                (2, 0),  # middle: one pick at 0.5 -> gap to the back (9.5) -> 2 * 0.5 from front
                (3, 9),  # middle: one pick at 9.5 -> gap from the front (9.5) -> 2 * 0.5 from back
                (4, 2),  # middle: 2.5, 3.5, 6.5 -> gaps 2.5, 1, 3, 3.5(back) -> 2 * (10 - 3.5)
                (4, 3),
                (4, 6),
                (5, 9),  # last aisle: traversed, 10 m
            ],
            2: [(1, 4), (3, 4)],  # two aisles: both traversed
            3: [(3, 4), (3, 9)],  # one aisle: in to the deepest pick and back
        },
    )
    assert got[1]["travel_m"] == pytest.approx(2 * 15.0 + 10 + 6 + 1 + 1 + 13 + 10)
    assert got[2]["travel_m"] == pytest.approx(2 * 9.0 + 20.0)
    assert got[3]["travel_m"] == pytest.approx(2 * 9.0 + 2 * 9.5)
    assert got[1]["aisles_visited"] == 6 and got[1]["pick_lines"] == 9


def test_pitches_scale_the_geometry() -> None:
    layout = Layout(aisles=4, bays_per_side=8, aisle_pitch_m=4.0, bay_pitch_m=1.5)  # L = 12 m
    orders = {1: [(3, 7)], 2: [(1, 0), (3, 7)]}
    assert travel_of(layout, "return", orders)[1]["travel_m"] == pytest.approx(24.0 + 2 * 11.25)
    assert travel_of(layout, "s-shape", orders)[2]["travel_m"] == pytest.approx(24.0 + 24.0)


# --- the vectorised formulas against the walker ------------------------------------------------

LAYOUTS = [
    Layout(aisles=1, bays_per_side=5),
    Layout(aisles=8, bays_per_side=12, levels=2),
    Layout(aisles=15, bays_per_side=30, levels=4),
    Layout(aisles=6, bays_per_side=7, aisle_pitch_m=2.7, bay_pitch_m=1.3),
]


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"{lay.aisles}x{lay.bays_per_side}")
def test_matches_a_step_by_step_walk_on_random_orders(layout: Layout, routing: str) -> None:
    rng = random.Random(f"{routing}-{layout}")
    orders = random_orders(rng, layout, n_orders=300, max_lines=25)
    got = travel_of(layout, routing, orders)
    assert set(got) == set(orders)
    for oid, lines in orders.items():
        assert got[oid]["travel_m"] == pytest.approx(walked(layout, routing, lines), abs=1e-9)
        assert got[oid]["aisles_visited"] == len({a for a, _ in lines})
        assert got[oid]["pick_lines"] == len(lines)


@st.composite
def layouts_and_orders(draw):
    layout = Layout(
        aisles=draw(st.integers(1, 9)),
        bays_per_side=draw(st.integers(1, 12)),
        levels=draw(st.integers(1, 3)),
        aisle_pitch_m=draw(st.sampled_from([3.0, 2.5, 4.2])),
        bay_pitch_m=draw(st.sampled_from([1.0, 0.9, 1.25])),
    )
    line = st.tuples(st.integers(0, layout.aisles - 1), st.integers(0, layout.bays_per_side - 1))
    orders = draw(st.lists(st.lists(line, min_size=1, max_size=12), min_size=1, max_size=8))
    return layout, dict(enumerate(orders))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts_and_orders())
def test_matches_the_walk_for_any_layout_and_orders(case) -> None:
    layout, orders = case
    for routing in ROUTINGS:
        got = travel_of(layout, routing, orders)
        for oid, lines in orders.items():
            assert got[oid]["travel_m"] == pytest.approx(walked(layout, routing, lines), abs=1e-9)


def test_string_order_ids_and_extra_columns_are_fine() -> None:
    picks = pl.DataFrame(
        {
            "order_id": ["b", "a", "b"],
            "aisle": [1, 0, 1],
            "bay": [3, 0, 3],
            "side": ["L", "R", "R"],
            "level": [1, 2, 3],
        }
    )
    out = order_travel(picks, LAYOUT, "return")
    assert out["order_id"].to_list() == ["a", "b"]
    assert out["travel_m"].to_list() == pytest.approx([1.0, 6.0 + 7.0])
    assert out["pick_lines"].to_list() == [1, 2]


def test_no_picks_gives_no_orders() -> None:
    empty = pl.DataFrame(schema={"order_id": pl.String, "aisle": pl.Int32, "bay": pl.Int32})
    for routing in ROUTINGS:
        out = order_travel(empty, LAYOUT, routing)
        assert out.height == 0
        assert out.columns == ["order_id", "travel_m", "aisles_visited", "pick_lines"]


def test_bad_input_is_refused() -> None:
    ok = pl.DataFrame({"order_id": [1], "aisle": [0], "bay": [0]})
    with pytest.raises(ValueError, match="unknown routing"):
        order_travel(ok, LAYOUT, "z-pick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside the layout"):
        order_travel(ok.with_columns(aisle=pl.lit(10)), LAYOUT, "return")
    with pytest.raises(ValueError, match="outside the layout"):
        order_travel(ok.with_columns(bay=pl.lit(-1)), LAYOUT, "return")
    with pytest.raises(ValueError, match="null"):
        order_travel(ok.with_columns(bay=pl.lit(None, pl.Int64)), LAYOUT, "return")
    with pytest.raises(ValueError, match="locate"):
        order_travel(pl.DataFrame({"order_id": [1], "location_id": ["x"]}), LAYOUT, "return")
    with pytest.raises(ValueError):
        Layout(aisles=0, bays_per_side=3)
    with pytest.raises(ValueError):
        Layout(aisles=2, bays_per_side=3, aisle_pitch_m=-1.0)


# --- the location master ----------------------------------------------------------------------


def test_layout_from_the_wms_master_and_locate() -> None:
    layout = Layout(aisles=4, bays_per_side=6, levels=2)
    master = wms_master(layout)
    assert Layout.from_locations(master) == layout
    picks = pl.DataFrame(
        {"order_id": [7, 7, 8], "location_id": ["A03-005-R-2", "A01-000-L-1", "A00-002-L-2"]}
    )
    located = locate(picks, master)
    assert located.columns == ["order_id", "location_id", "aisle", "bay", "side", "level"]
    assert located.select("aisle", "bay").rows() == [(3, 5), (1, 0), (0, 2)]
    got = {r["order_id"]: r["travel_m"] for r in order_travel(located, layout, "s-shape").rows(
        named=True
    )}
    assert got == pytest.approx({7: 18.0 + 2 * 6.0, 8: 2 * 2.5})
    with pytest.raises(ValueError, match="not in the master"):
        locate(pl.DataFrame({"order_id": [1], "location_id": ["nowhere"]}), master)
    with pytest.raises(ValueError, match="out of range"):
        Layout.from_locations(master.with_columns(level=pl.lit(0, pl.Int32)))


@pytest.mark.parametrize("routing", ROUTINGS)
def test_location_costs_rank_every_location_once(routing: str) -> None:
    layout = Layout(aisles=5, bays_per_side=8, levels=2)
    costs = location_costs(layout, routing)
    assert costs.columns == ["aisle", "bay", "side", "level", "cost_rank", "cost_m"]
    assert costs.height == layout.n_locations
    assert costs["cost_rank"].to_list() == list(range(1, layout.n_locations + 1))
    assert costs.select("aisle", "bay", "side", "level").n_unique() == layout.n_locations
    assert costs["cost_m"].is_sorted()  # the rank never puts a dearer location first
    assert costs.row(0, named=True)["aisle"] == 0 and costs.row(0, named=True)["bay"] == 0


@pytest.mark.parametrize("routing", ["return", "largest-gap"])
def test_location_cost_is_the_one_line_order_tour(routing: str) -> None:
    layout = Layout(aisles=5, bays_per_side=8, levels=2)
    costs = location_costs(layout, routing).with_columns(order_id=pl.col("cost_rank"))
    tours = order_travel(costs, layout, routing)
    joined = costs.join(tours, on="order_id")
    assert joined["travel_m"].to_list() == pytest.approx(joined["cost_m"].to_list())
    # across-aisle style: the front of aisle 1 (2*3 + 2*0.5 = 7) beats the back of aisle 0 (15)
    rank = {(r["aisle"], r["bay"]): r["cost_rank"] for r in costs.iter_rows(named=True)}
    assert rank[(1, 0)] < rank[(0, 7)]


def test_s_shape_costs_fill_aisles_nearest_the_depot_first() -> None:
    layout = Layout(aisles=5, bays_per_side=8, levels=2)
    costs = location_costs(layout, "s-shape")
    assert costs["aisle"].is_sorted()
    assert costs.filter(pl.col("aisle") == 0)["bay"].is_sorted()
    assert costs.group_by("aisle").agg(pl.col("cost_m").n_unique())["cost_m"].to_list() == [1] * 5
    assert costs["cost_m"].min() == pytest.approx(layout.aisle_length_m)


# --- random storage: aisles visited -----------------------------------------------------------


def test_expected_aisles_visited_matches_exhaustive_enumeration() -> None:
    aisles, bays, levels = 3, 2, 1  # 12 locations, 4 per aisle
    per_aisle = 2 * bays * levels
    locations = range(aisles * per_aisle)
    for n in range(0, len(locations) + 1):
        combos = list(itertools.combinations(locations, n))
        exact = Fraction(sum(len({loc // per_aisle for loc in c}) for c in combos), len(combos))
        assert expected_aisles_visited(aisles, bays, levels, n) == pytest.approx(float(exact))
    with pytest.raises(ValueError):
        expected_aisles_visited(aisles, bays, levels, len(locations) + 1)


@pytest.mark.parametrize("picks_per_order", [1, 3, 12, 40])
def test_mean_aisles_visited_under_random_storage(picks_per_order: int) -> None:
    layout = Layout(aisles=10, bays_per_side=15, levels=2)  # 600 locations, 60 per aisle
    n_orders = 20_000
    rng = np.random.default_rng(20240611 + picks_per_order)
    # n distinct locations per order, uniformly without replacement
    loc = np.argpartition(rng.random((n_orders, layout.n_locations)), picks_per_order, axis=1)[
        :, :picks_per_order
    ]
    per_aisle = layout.locations_per_aisle
    picks = pl.DataFrame(
        {
            "order_id": np.repeat(np.arange(n_orders), picks_per_order),
            "aisle": (loc // per_aisle).ravel(),
            "bay": ((loc % per_aisle) // (2 * layout.levels)).ravel(),
        }
    )
    visited = order_travel(picks, layout, "return")["aisles_visited"].to_numpy()
    assert len(visited) == n_orders
    expected = expected_aisles_visited(
        layout.aisles, layout.bays_per_side, layout.levels, picks_per_order
    )
    standard_error = visited.std(ddof=1) / math.sqrt(n_orders)
    assert abs(visited.mean() - expected) <= max(4 * standard_error, 1e-9)
