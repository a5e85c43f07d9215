"""The velocity definitions of ARCHITECTURE.md, pinned on small cases worked out by hand.

Each expected value is derived in the comment beside it from the definition, not read off a run:
ABC on units over 30 days with cut-offs 0.80 / 0.95 (ties by sku_id, "share_before" < cut-off),
XYZ on 12 trailing weeks (empty weeks are zero, population std / mean, X <= 0.5 < Y <= 1.0 < Z),
cubic velocity, COI and the seasonality index.
"""

import datetime as dt
import math

import polars as pl
import pytest

from velocity_platform.domain.contracts import DAILY_SKU_DEMAND_SCHEMA, SKU_MASTER_SCHEMA
from velocity_platform.domain.taxonomy import TaxonomyConfig, classify_skus

D = dt.date(2011, 11, 30)


def demand(rows: list[tuple[str, int, float, int]]) -> pl.DataFrame:
    """(sku_id, days before D, units, pick lines)"""
    return pl.DataFrame(
        [
            {
                "business_date": D - dt.timedelta(days=age),
                "sku_id": sku,
                "units": float(units),
                "pick_lines": lines,
                "orders": lines,
                "returns_units": 0.0,
                "adjustment_units": 0.0,
                "cube_ft3": 0.0,
            }
            for sku, age, units, lines in rows
        ],
        schema=DAILY_SKU_DEMAND_SCHEMA,
    )


def master(skus: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "sku_id": sku,
                "description": None,
                "category": None,
                "subcategory": None,
                "unit_cube_ft3": cube,
                "unit_weight_lb": None,
                "case_qty": 1,
                "pallet_qty": None,
                "uoms": ["EA"],
                "introduced_on": dt.date(2010, 12, 1),
                "cube_is_default": False,
            }
            for sku, cube in skus.items()
        ],
        schema=SKU_MASTER_SCHEMA,
    )


def classes(rows, skus, **kwargs) -> dict[str, dict]:
    out = classify_skus(demand(rows), master(skus), D, history_start=dt.date(2010, 12, 1), **kwargs)
    return {r["sku_id"]: r for r in out.iter_rows(named=True)}


def test_a_tie_straddling_the_80_percent_line_is_split_by_sku_id():
    # 60 + 20 + 20 = 100 units. 21868 and 21869 tie on 20: 21868 ranks first.
    # share_before: 22423 0/100 -> A; 21868 60/100 -> A; 21869 80/100 = 0.80, not < 0.80 -> B.
    out = classes([("22423", 0, 60, 6), ("21869", 3, 20, 2), ("21868", 10, 20, 2)], {"22423": 0.1, "21868": 0.1, "21869": 0.1})
    assert [(s, out[s]["abc_rank"], out[s]["abc_class"]) for s in ("22423", "21868", "21869")] == [
        ("22423", 1, "A"), ("21868", 2, "A"), ("21869", 3, "B"),
    ]
    assert out["21869"]["share_before"] == pytest.approx(0.80)


def test_the_95_percent_line_and_a_sku_just_below_80():
    # 79 + 16 + 4 + 1 = 100: shares before 0, .79, .95, .99 -> A, A (0.79 < 0.80), C (0.95), C
    out = classes(
        [("A1", 0, 79, 1), ("B1", 0, 16, 1), ("C1", 0, 4, 1), ("C2", 0, 1, 1)], {"A1": 1, "B1": 1, "C1": 1, "C2": 1}
    )
    assert {s: out[s]["abc_class"] for s in out} == {"A1": "A", "B1": "A", "C1": "C", "C2": "C"}


def test_units_outside_the_30_day_window_do_not_count_for_abc():
    # age 29 is D-29, inside; age 30 is D-30, outside the 30-day window but inside 60/90.
    out = classes([("IN30", 29, 10, 1), ("OUT30", 30, 1000, 1)], {"IN30": 1, "OUT30": 1})
    assert (out["IN30"]["abc_class"], out["OUT30"]["abc_class"]) == ("A", "C")
    assert (out["OUT30"]["units_30d"], out["OUT30"]["units_60d"]) == (0.0, 1000.0)


def test_xyz_on_twelve_weeks_with_empty_weeks_as_zero():
    # STEADY: 4 units every week -> cv 0 -> X.
    # HALF:   6 units in even weeks, 2 in odd -> mean 4, std 2, cv 0.5 -> X (<= 0.5).
    # ONEOFF: 12 units in one week -> mean 1, var (11^2 + 11 * 1^2) / 12 = 11, cv sqrt(11) -> Z.
    # PAIR:   weeks 0..5 at 8, weeks 6..11 empty -> mean 4, std 4, cv 1.0 -> Y (<= 1.0).
    rows = [("STEADY", 7 * w, 4, 1) for w in range(12)]
    rows += [("HALF", 7 * w + 1, 6 if w % 2 == 0 else 2, 1) for w in range(12)]
    rows += [("ONEOFF", 20, 12, 1)]
    rows += [("PAIR", 7 * w + 6, 8, 1) for w in range(6)]
    out = classes(rows, {s: 1.0 for s in ("STEADY", "HALF", "ONEOFF", "PAIR")})
    assert {s: out[s]["xyz_class"] for s in out} == {"STEADY": "X", "HALF": "X", "ONEOFF": "Z", "PAIR": "Y"}
    assert out["HALF"]["demand_cv"] == pytest.approx(0.5)
    assert out["ONEOFF"]["demand_cv"] == pytest.approx(math.sqrt(11))
    assert out["PAIR"]["weekly_mean_12w"] == pytest.approx(4.0)


def test_cubic_velocity_and_coi():
    # 90 units in 30 days at 0.2 ft3: 90 * 0.2 / 30 = 0.6 ft3/day.
    # A week of it: 90 / 30 * 7 * 0.2 = 4.2 ft3, over 12 pick lines -> COI 0.35.
    out = classes([("CUBE", 1, 90, 12)], {"CUBE": 0.2})
    assert out["CUBE"]["cubic_velocity_ft3_per_day"] == pytest.approx(0.6)
    assert out["CUBE"]["coi"] == pytest.approx(0.35)


def test_seasonality_needs_ninety_days_of_history():
    rows = [("XMAS", 5, 60, 6), ("XMAS", 70, 30, 3)]  # 60 in the last 30 days, 90 in the last 90
    skus = {"XMAS": 1.0}
    # (60 / 30) / (90 / 90) = 2.0 with 90 days of history; not yet known (null) with 89
    full = classify_skus(demand(rows), master(skus), D, history_start=D - dt.timedelta(days=89))
    short = classify_skus(demand(rows), master(skus), D, history_start=D - dt.timedelta(days=88))
    assert full["seasonality_index"][0] == pytest.approx(2.0)
    assert short["seasonality_index"][0] is None
    # a product out of season: 1 unit in 30 days of 90 in 90 -> 1/30 -> clipped to 0.1
    faded = classify_skus(demand([("FADE", 1, 1, 1), ("FADE", 60, 89, 9)]), master({"FADE": 1.0}), D, history_start=dt.date(2010, 12, 1))
    assert faded["seasonality_index"][0] == pytest.approx(0.1)


def test_abc_on_pick_lines_breaks_ties_by_sku_id_too():
    # pick lines 8, 1, 1 (total 10): share before 0, .8, .9 -> A, B, B
    out = classes([("P1", 0, 1, 8), ("P3", 0, 500, 1), ("P2", 0, 1, 1)], {"P1": 1, "P2": 1, "P3": 1}, config=TaxonomyConfig(abc_basis="pick_lines"))
    assert [(s, out[s]["abc_rank"], out[s]["abc_class"]) for s in ("P1", "P2", "P3")] == [("P1", 1, "A"), ("P2", 2, "B"), ("P3", 3, "B")]
