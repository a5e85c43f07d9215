"""Slotting economics: a relocation is planned only when the walking it saves repays its labor,
at a pick rate a one-off spike cannot move, and a sustained change still moves stock in days.

A 6-aisle x 5-bay block under return routing (a location costs its one-line tour, 2x + 2y + 1 m
here), 10 minutes a relocation at 1.0 m/s (600 m of walking), a 15-day payback horizon.
"""

import datetime as dt

import polars as pl

from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.pick_rate import with_pick_rates
from velocity_platform.domain.slotting import (
    SlottingConfig,
    plan_day_after_day,
    plan_directives,
    ranked_locations,
    reversed_relocations,
    reversing_relocations,
)
from velocity_platform.domain.travel import Layout, layout_locations

LABOR = LaborModel(walk_speed_m_s=1.0, move_minutes=10.0, payback_horizon_days=15.0)
CONFIG = SlottingConfig(routing="return", labor=LABOR)
LOCATIONS = layout_locations(Layout(aisles=6, bays_per_side=5), capacity_ft3=40.0)
RANKED = ranked_locations(LOCATIONS, CONFIG).sort("cost_rank")
BEST = RANKED.row(0, named=True)
# Two locations (both faces of one bay) whose one-line tour is 36 m longer than the best one's:
# at 1 line a day a move from there saves 36 m/day, 540 m over 15 days, less than the 600 m a
# relocation costs; at 1.25 lines a day it saves 675 m, more.
FAR = RANKED.filter(pl.col("cost_m") == BEST["cost_m"] + 36.0)["location_id"].to_list()[:2]
BACK = RANKED.tail(20)["location_id"].to_list()
FILLERS = [f"SKU-FILL{i:02d}" for i in range(20)]
MASTER = pl.DataFrame(
    {
        "sku_id": ["SKU-X", "SKU-Y", *FILLERS],
        "unit_cube_ft3": [0.1] * 22,
        "case_qty": [6] * 22,
        "cube_is_default": [False] * 22,
        "introduced_on": [None] * 22,
    },
    schema_overrides={"introduced_on": pl.Date},
)
START = pl.DataFrame({"sku_id": ["SKU-X", "SKU-Y", *FILLERS], "location_id": [*FAR, *BACK]})
CHANGE = dt.date(2026, 3, 1)  # the first day of a spike or of a new rate
HISTORY = [CHANGE - dt.timedelta(days=n) for n in range(60, 0, -1)]
AFTER = [CHANGE + dt.timedelta(days=n) for n in range(30)]


def demand(lines_per_day: dict[str, callable]) -> pl.DataFrame:
    """business_date, sku_id, pick_lines: each SKU's lines as a function of the day."""
    rows = [(day, sku, rate(day)) for day in HISTORY + AFTER for sku, rate in lines_per_day.items()]
    return pl.DataFrame(rows, schema={"business_date": pl.Date, "sku_id": pl.String, "pick_lines": pl.Int64}, orient="row")


def steady(lines: int):
    return lambda day: lines


def velocity_from(daily: pl.DataFrame):
    def on(day: dt.date) -> pl.DataFrame:
        window = daily.filter(pl.col("business_date").is_between(day - dt.timedelta(days=29), day))
        totals = window.group_by("sku_id").agg(pl.col("pick_lines").sum().alias("pick_lines_30d"))
        base = MASTER.select("sku_id").join(totals, on="sku_id", how="left").with_columns(
            pl.col("pick_lines_30d").fill_null(0), pl.lit(365, pl.Int32).alias("history_days")
        )
        return with_pick_rates(base, daily, day)

    return on


def plan_month(lines_per_day: dict[str, callable]) -> pl.DataFrame:
    plans = plan_day_after_day(AFTER, velocity_from(demand(lines_per_day)), LOCATIONS, START, MASTER, config=CONFIG)
    return pl.concat([plan.directives for plan in plans])


# Fillers sell every other day (0.5 lines a day: never worth a relocation from the back).
QUIET = {"SKU-X": steady(1), "SKU-Y": steady(1)} | {sku: (lambda day: day.toordinal() % 2) for sku in FILLERS}


def test_the_setting_is_one_where_nothing_pays_at_the_normal_rate():
    assert len(FAR) == 2 and plan_month(QUIET).is_empty()


def test_a_one_day_spike_of_fifty_times_moves_nothing_for_thirty_days():
    spiked = QUIET | {"SKU-X": lambda day: 50 if day == CHANGE else 1}
    assert plan_month(spiked).is_empty()
    # What the spike leaves behind is recorded as promotional uplift, not planned on.
    rates = velocity_from(demand(spiked))(CHANGE + dt.timedelta(days=3)).filter(pl.col("sku_id") == "SKU-X").row(0, named=True)
    assert (rates["promo_days_28d"], rates["promo_uplift_lines_28d"]) == (1, 45)  # cap 3 x 1 + 2 = 5 lines
    assert rates["expected_pick_lines_per_day"] < 1.2


def test_a_sustained_doubling_moves_the_sku_within_a_week():
    doubled = QUIET | {"SKU-Y": lambda day: 2 if day >= CHANGE else 1}
    directives = plan_month(doubled)
    assert directives["sku_id"].to_list() == ["SKU-Y"]  # and nothing else moves for it
    move = directives.row(0, named=True)
    assert (move["business_date"] - CHANGE).days < 7
    assert (move["from_location"], move["to_location"]) == (FAR[1], BEST["location_id"])
    # priced at the lowest of the 28-day level and the two windows, the day it first pays
    assert 600 / 36 / 15 < move["expected_pick_lines_per_day"] < 2
    assert move["payback_days"] < 15 and move["net_saving_h"] > 0 and move["relocations"] == 1


def test_a_move_is_planned_only_when_its_saving_repays_the_relocation():
    def velocity(rate: float) -> pl.DataFrame:
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

    start = pl.DataFrame({"sku_id": ["SKU-X"], "location_id": [FAR[0]]})
    day = CHANGE
    assert plan_directives(day, velocity(1.1), LOCATIONS, start, MASTER, config=CONFIG).is_empty()  # 594 m < 600 m
    paying = plan_directives(day, velocity(1.2), LOCATIONS, start, MASTER, config=CONFIG).row(0, named=True)
    assert paying["expected_saving_m_per_day"] == 1.2 * 36.0
    assert abs(paying["payback_days"] - 600 / (1.2 * 36.0)) < 1e-9
    assert abs(paying["net_saving_h"] - (1.2 * 36.0 * 15 - 600) / 3600) < 1e-9
    # Slower relocations, or a shorter horizon, and the same move no longer pays.
    slower = SlottingConfig(routing="return", labor=LaborModel(1.0, 11.0, 15.0))
    assert plan_directives(day, velocity(1.2), LOCATIONS, start, MASTER, config=slower).is_empty()
    # A new SKU's first slot costs no relocation, however slowly it sells.
    new = plan_directives(day, velocity(0.1), LOCATIONS, start.clear(), MASTER, config=CONFIG).row(0, named=True)
    assert (new["from_location"], new["relocations"], new["payback_days"]) == (None, 0, 0.0)


def test_a_move_back_within_thirty_days_is_thrash_and_one_later_is_not():
    a, b = FAR[0], BEST["location_id"]
    moves = pl.DataFrame(
        {
            "business_date": [CHANGE, CHANGE + dt.timedelta(days=20), CHANGE, CHANGE + dt.timedelta(days=45)],
            "sku_id": ["SKU-X", "SKU-X", "SKU-Y", "SKU-Y"],
            "from_location": [a, b, FAR[1], b],
            "to_location": [b, a, b, FAR[1]],
        }
    )
    assert reversed_relocations(moves, LOCATIONS, "return")[["sku_id", "business_date"]].rows() == [("SKU-X", CHANGE)]
    assert reversing_relocations(moves, LOCATIONS, "return")[["sku_id", "business_date"]].rows() == [
        ("SKU-X", CHANGE + dt.timedelta(days=20))
    ]
