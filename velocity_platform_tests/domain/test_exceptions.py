"""The exception service's domain: a new SKU's expected band, its first slot, spikes."""

import datetime as dt

import polars as pl

from velocity_platform.domain.exceptions import expected_bands, first_slot_directives
from velocity_platform.domain.slotting import SlottingConfig, directive_id, free_slots

DAY = dt.date(2026, 3, 2)
NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


def layout(n: int = 40) -> pl.DataFrame:
    """One aisle of n bays on one side: cost grows with the bay."""
    return pl.DataFrame(
        {
            "location_id": [f"AA-{i:03d}" for i in range(1, n + 1)],
            "zone": ["A"] * n,
            "aisle": [0] * n,
            "bay": list(range(n)),
            "side": ["L"] * n,
            "level": [1] * n,
            "capacity_ft3": [40.0] * n,
        }
    )


def unslotted(*skus: str, lines: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {"sku_id": list(skus), "pick_lines": [lines] * len(skus), "first_committed_at": [NOW] * len(skus)},
        schema={"sku_id": pl.String, "pick_lines": pl.UInt32, "first_committed_at": pl.Datetime("us", "UTC")},
    )


VELOCITY = pl.DataFrame({"sku_id": [f"S{i}" for i in range(12)], "expected_pick_lines_per_day": [float(12 - i) for i in range(12)]})


def test_the_expected_band_is_where_the_rate_ranks_among_the_skus_with_one():
    ranked = expected_bands(
        pl.DataFrame({"sku_id": ["S3", "N1", "N2"], "observed_rate": [1, 1, 20]}), VELOCITY, band_locations=4
    )
    by_sku = {r["sku_id"]: r for r in ranked.iter_rows(named=True)}
    # S3 keeps its own expected rate (9 a day): three SKUs are busier, so rank 4, band 0.
    assert (by_sku["S3"]["rate"], by_sku["S3"]["velocity_rank"], by_sku["S3"]["target_band"]) == (9.0, 4, 0)
    # A SKU without a rate is ranked by today's lines: 1 line ties with S11 (1.0) and goes first.
    assert (by_sku["N1"]["velocity_rank"], by_sku["N1"]["target_band"], by_sku["N1"]["min_rank"]) == (11, 2, 9)
    assert by_sku["N2"]["velocity_rank"] == 1
    assert ranked["sku_id"].to_list() == ["N2", "S3", "N1"]  # busiest first: the order first_slot takes


def test_a_first_slot_is_the_cheapest_free_location_of_the_band_or_beyond():
    locations = layout()  # 40 locations in twenty bands of 2
    occupied = pl.DataFrame({"sku_id": ["S0", "S1"], "location_id": ["AA-001", "AA-011"]})
    free = free_slots(locations, occupied, SlottingConfig(band_locations=2))
    directives, left = first_slot_directives(DAY, unslotted("N1"), VELOCITY, free, band_locations=2)
    [d] = directives.iter_rows(named=True)
    # Rank 11: band 5, which starts at cost rank 11; AA-011 is taken, AA-012 is the cheapest left in it.
    assert (d["to_location"], d["target_band"], d["to_band"]) == ("AA-012", 5, 5)
    assert d["directive_id"] == directive_id(DAY, "N1", None, "AA-012")
    assert d["from_location"] is None and d["first_committed_at"] == NOW
    assert left.height == free.height - 1 and "AA-012" not in left["to_location"].to_list()


def test_when_the_band_and_beyond_are_full_the_cheapest_free_location_anywhere():
    locations = layout(12)  # bands of one location
    occupied = pl.DataFrame({"sku_id": [f"S{i}" for i in range(8, 12)], "location_id": [f"AA-{i:03d}" for i in range(9, 13)]})
    free = free_slots(locations, occupied)
    directives, _ = first_slot_directives(DAY, unslotted("N1"), VELOCITY, free, band_locations=1)
    assert directives["to_location"].to_list() == ["AA-001"]


def test_no_unslotted_sku_plans_nothing_and_leaves_the_free_slots():
    free = free_slots(layout(), pl.DataFrame(schema={"sku_id": pl.String, "location_id": pl.String}))
    directives, left = first_slot_directives(DAY, unslotted().clear(), VELOCITY, free, band_locations=4)
    assert directives.is_empty() and left.equals(free)
