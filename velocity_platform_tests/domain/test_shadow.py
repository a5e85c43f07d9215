"""Shadow replay: the same orders walked on two assignments, and applying a day's directives."""

import numpy as np
import polars as pl
import pytest

from velocity_platform.domain.shadow import (
    apply_directives,
    compare,
    picks_on,
    putaway,
    random_assignment,
    sample_orders,
)
from velocity_platform.domain.travel import Layout, layout_locations, order_travel

LAYOUT = Layout(aisles=4, bays_per_side=5)  # aisle length 5 m
LOCATIONS = layout_locations(LAYOUT)


def assignment(pairs: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({"sku_id": list(pairs), "location_id": list(pairs.values())})


def test_compare_walks_each_order_on_both_assignments():
    lines = pl.DataFrame({"order_id": ["o1", "o1", "o2"], "sku_id": ["S1", "S2", "S2"]})
    # before: S1 at aisle 3 bay 0 (AD-001), S2 at aisle 1 bay 4 (AB-009); after: both in aisle 0
    before = assignment({"S1": "AD-001", "S2": "AB-009"})
    after = assignment({"S1": "AA-001", "S2": "AA-003"})
    result = compare(lines, before, after, LOCATIONS, LAYOUT, "return")
    got = {r["order_id"]: r for r in result.per_order.iter_rows(named=True)}
    # return routing, o1 before: cross-aisle 2 * 9 m + aisle 1 in to 4.5 m and back + aisle 3 to 0.5 m and back
    assert got["o1"]["before_m"] == pytest.approx(18 + 9 + 1)
    # after: aisle 0 only, deepest pick bay 1 at 1.5 m
    assert got["o1"]["after_m"] == pytest.approx(3.0)
    assert got["o2"]["before_m"] == pytest.approx(2 * 3 + 9) and got["o2"]["after_m"] == pytest.approx(3.0)
    assert (result.orders, result.pick_lines) == (2, 3)
    assert result.reduction_pct == pytest.approx(100 * (1 - 6 / 43))


@pytest.mark.parametrize("routing", ["s-shape", "return", "largest-gap"])
def test_orders_untouched_by_a_move_keep_their_travel_and_the_rest_are_walked_again(routing):
    rng = np.random.default_rng(3)
    skus = [f"S{i}" for i in range(30)]
    before = pl.DataFrame({"sku_id": skus, "location_id": LOCATIONS["location_id"].sample(30, seed=1).to_list()})
    free = LOCATIONS.join(before, on="location_id", how="anti")["location_id"].head(4).to_list()
    moves = pl.DataFrame({"sku_id": ["S0", "S1", "S2", "S3"], "to_location": free})
    after = apply_directives(before, moves)
    lines = pl.DataFrame(
        {"order_id": [f"o{i}" for i in rng.integers(0, 60, 400)], "sku_id": [skus[i] for i in rng.integers(0, 30, 400)]}
    )
    result = compare(lines, before, after, LOCATIONS, LAYOUT, routing).per_order.sort("order_id")

    def walk_all(assignment: pl.DataFrame) -> pl.Series:  # every order walked, the direct way
        return order_travel(picks_on(lines, assignment, LOCATIONS), LAYOUT, routing).sort("order_id")["travel_m"]

    assert result["before_m"].to_list() == walk_all(before).to_list()
    assert result["after_m"].to_list() == walk_all(after).to_list()
    touched = lines.filter(pl.col("sku_id").is_in(["S0", "S1", "S2", "S3"]))["order_id"].unique()
    assert 0 < touched.len() < result.height  # some orders were spared the second walk


def test_a_pick_without_a_location_is_an_error_not_a_silent_drop():
    with pytest.raises(ValueError, match="1 pick lines have no location"):
        picks_on(pl.DataFrame({"order_id": ["o"], "sku_id": ["GONE"]}), assignment({"S1": "AA-001"}), LOCATIONS)


def test_apply_directives_moves_and_adds():
    start = assignment({"S1": "AA-001", "S2": "AB-001"})
    directives = pl.DataFrame(
        {"sku_id": ["S2", "S3"], "from_location": ["AB-001", None], "to_location": ["AA-002", "AC-001"]}
    )
    after = apply_directives(start, directives).sort("sku_id")
    assert after.rows() == [("S1", "AA-001"), ("S2", "AA-002"), ("S3", "AC-001")]
    assert apply_directives(start, directives.clear()).equals(start)


def test_random_assignment_and_putaway_use_distinct_free_locations():
    skus = pl.Series(["S3", "S1", "S2", "S1"])
    start = random_assignment(skus, LOCATIONS, seed=5)
    assert start["sku_id"].to_list() == ["S1", "S2", "S3"]
    assert start["location_id"].is_unique().all()
    assert start.equals(random_assignment(skus, LOCATIONS, seed=5))
    arrivals = putaway(pl.Series(["N1", "N2"]), start, LOCATIONS, np.random.default_rng(1))
    assert not set(arrivals["location_id"]) & set(start["location_id"])
    assert arrivals["location_id"].is_unique().all()
    with pytest.raises(ValueError, match="only 0 locations are free"):
        full = random_assignment(pl.Series([f"S{i}" for i in range(LAYOUT.n_locations)]), LOCATIONS, seed=1)
        putaway(pl.Series(["LATE"]), full, LOCATIONS, np.random.default_rng(1))
    with pytest.raises(ValueError, match="need a location but the layout has 40"):
        random_assignment(pl.Series([f"S{i}" for i in range(41)]), LOCATIONS, seed=1)


def test_a_sample_keeps_whole_orders_about_as_many_as_asked_and_the_same_ones_every_time():
    rng = np.random.default_rng(5)
    orders = [f"O{i:06d}" for i in range(40_000)]
    lines = pl.DataFrame({"order_id": [orders[i] for i in rng.integers(0, 40_000, 120_000)], "sku_id": "S1"})
    present = lines["order_id"].n_unique()
    sample = sample_orders(lines, 5_000)
    kept = sample["order_id"].unique()
    assert 4_500 <= kept.len() <= 5_500  # a hash threshold: about, not exactly
    # whole orders: every line of a kept order, none of another
    assert sample.height == lines.filter(pl.col("order_id").is_in(kept.implode())).height
    assert sample_orders(lines, 5_000, present).equals(sample)  # the same draw, told the count
    # a later day's window (half the orders gone, new ones in) keeps the overlap's draw
    later = pl.concat([lines.filter(pl.col("order_id") >= "O020000"), lines.with_columns(pl.col("order_id") + "-new")])
    again = set(sample_orders(later, 5_000, present)["order_id"].unique().to_list())
    overlap = {o for o in kept.to_list() if o >= "O020000"}
    assert overlap <= again
    assert sample_orders(lines, present).equals(lines)  # no more orders than asked: all of them
