"""Location masters built from a layout, and locations ranked by cost on a WMS master."""

import polars as pl
import pytest

from velocity_platform.domain.contracts import WMS_LOCATIONS_SCHEMA
from velocity_platform.domain.travel import ROUTINGS, Layout, layout_locations, location_costs, rank_locations


def test_layout_locations_follow_the_geometry_and_the_simulators_ids():
    layout = Layout(aisles=3, bays_per_side=4, levels=2)
    master = layout_locations(layout, capacity_ft3=25.0)
    assert master.columns == list(WMS_LOCATIONS_SCHEMA)
    assert master.height == layout.n_locations == 48
    assert master["location_id"].is_unique().all()
    row = master.filter(pl.col("location_id") == "AC-008-2").row(0, named=True)
    # aisle 2, bay 3 on the right (positions: bay k left 2k+1, right 2k+2), level 2:
    # one-way distance 3.0 * 2 + 3.5 = 9.5 m
    assert (row["aisle"], row["bay"], row["side"], row["level"], row["distance_m"]) == (2, 3, "R", 2, 9.5)
    assert Layout.from_locations(master) == layout
    # zones: the nearest 20% are A, the next 30% B, by one-way distance
    zones = dict(master.group_by("zone").len().iter_rows())
    assert zones == {"A": round(0.2 * 48), "B": round(0.5 * 48) - round(0.2 * 48), "C": 48 - round(0.5 * 48)}
    assert master.filter(pl.col("zone") == "A")["distance_m"].max() <= master.filter(pl.col("zone") == "C")["distance_m"].min()
    wide = layout_locations(Layout(aisles=30, bays_per_side=60))
    assert wide.filter((pl.col("aisle") == 27) & (pl.col("bay") == 59) & (pl.col("side") == "L"))["location_id"].to_list() == ["BB-119"]


@pytest.mark.parametrize("routing", ROUTINGS)
def test_ranking_a_master_with_gaps_keeps_the_grid_order(routing):
    layout = Layout(aisles=4, bays_per_side=3)
    master = layout_locations(layout)
    # a WMS master need not hold every grid position: drop aisle 1 bay 0 and shuffle the rest
    gappy = master.filter(~((pl.col("aisle") == 1) & (pl.col("bay") == 0))).sample(fraction=1.0, shuffle=True, seed=3)
    ranked = rank_locations(gappy, routing)
    assert ranked["cost_rank"].to_list() == list(range(1, gappy.height + 1))
    grid = location_costs(layout, routing).join(master, on=["aisle", "bay", "side", "level"])
    expected = grid.filter(pl.col("location_id").is_in(gappy["location_id"].to_list())).sort("cost_rank")["location_id"]
    assert ranked["location_id"].to_list() == expected.to_list()
    assert ranked["cost_m"].is_sorted()
