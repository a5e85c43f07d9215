"""Velocity taxonomy against small hand-computed fixtures.

Every expected number below is worked out from the definitions in docs/architecture.md
("Velocity taxonomy"), in the comment next to it, not copied from a run of the code.
"""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity_platform.domain.contracts import (
    DAILY_SKU_DEMAND_SCHEMA,
    SKU_MASTER_SCHEMA,
    SKU_VELOCITY_SCHEMA,
)
from velocity_platform.domain.taxonomy import TaxonomyConfig, class_shares, classify_skus

D = dt.date(2024, 6, 30)
LONG_AGO = D - dt.timedelta(days=365)


def ago(days: int) -> dt.date:
    return D - dt.timedelta(days=days)


def demand(*rows: tuple) -> pl.DataFrame:
    """Rows of (sku_id, age in days before D, units[, pick_lines[, orders]])."""
    records = []
    for row in rows:
        sku, age, units, pick_lines, orders = (*row, 1, 1)[:5]
        records.append(
            {
                "business_date": ago(age),
                "sku_id": sku,
                "units": float(units),
                "pick_lines": pick_lines,
                "orders": orders,
                "returns_units": 0.0,
                "adjustment_units": 0.0,
                "cube_ft3": 0.0,
            }
        )
    return pl.DataFrame(records, schema=DAILY_SKU_DEMAND_SCHEMA)


def master(*rows: tuple) -> pl.DataFrame:
    """Rows of (sku_id[, unit_cube_ft3[, introduced_on]])."""
    records = []
    for row in rows:
        sku, cube, introduced = (*row, 1.0, LONG_AGO)[:3]
        records.append(
            {
                "sku_id": sku,
                "description": sku.lower(),
                "category": "CAT",
                "subcategory": "SUB",
                "unit_cube_ft3": cube,
                "unit_weight_lb": 1.0,
                "case_qty": 12,
                "pallet_qty": 480,
                "introduced_on": introduced,
                "cube_is_default": False,
            }
        )
    return pl.DataFrame(records, schema=SKU_MASTER_SCHEMA)


def by_sku(velocity: pl.DataFrame) -> dict[str, dict]:
    return {row["sku_id"]: row for row in velocity.iter_rows(named=True)}


def column(velocity: pl.DataFrame, name: str) -> dict[str, object]:
    return dict(zip(velocity["sku_id"], velocity[name]))


# --- contract ------------------------------------------------------------------------------------


def test_output_schema_is_the_contract():
    out = classify_skus(demand(("SKU-A", 0, 5)), master(("SKU-A",), ("SKU-B",)), D)
    assert out.schema == pl.Schema(SKU_VELOCITY_SCHEMA)
    assert out["business_date"].to_list() == [D, D]
    assert out.schema["history_days"] == pl.Int32


def test_empty_inputs_give_an_empty_frame_of_the_contract():
    out = classify_skus(pl.DataFrame(schema=DAILY_SKU_DEMAND_SCHEMA), master(), D)
    assert out.height == 0
    assert out.schema == pl.Schema(SKU_VELOCITY_SCHEMA)


def test_lazy_and_eager_demand_agree():
    rows = demand(("SKU-A", 0, 5), ("SKU-B", 40, 7), ("SKU-A", 80, 3))
    skus = master(("SKU-A",), ("SKU-B",))
    eager = classify_skus(rows, skus, D)
    lazy = classify_skus(rows.lazy(), skus, D)
    assert eager.equals(lazy)


# --- ABC -----------------------------------------------------------------------------------------


def test_abc_share_before_boundaries_and_zero_demand():
    out = classify_skus(
        demand(("SKU-A", 0, 80), ("SKU-B", 0, 15), ("SKU-C", 0, 5)),
        master(("SKU-A",), ("SKU-B",), ("SKU-C",), ("SKU-D",)),
        D,
    )
    # total 100; order A(80) B(15) C(5) D(0)
    assert out["sku_id"].to_list() == ["SKU-A", "SKU-B", "SKU-C", "SKU-D"]
    assert out["abc_rank"].to_list() == [1, 2, 3, 4]
    # share_before: 0/100, 80/100, 95/100, 100/100
    assert out["share_before"].to_list() == pytest.approx([0.0, 0.80, 0.95, 1.0])
    # 0.80 is not < 0.80 -> B; 0.95 is not < 0.95 -> C; zero demand -> C
    assert out["abc_class"].to_list() == ["A", "B", "C", "C"]


def test_abc_ties_in_basis_are_broken_by_sku_id():
    out = classify_skus(
        # R is listed before Q on purpose: input order must not matter
        demand(("SKU-R", 0, 10), ("SKU-M", 0, 75), ("SKU-S", 0, 5), ("SKU-Q", 0, 10)),
        master(("SKU-M",), ("SKU-Q",), ("SKU-R",), ("SKU-S",)),
        D,
    )
    # order M(75), Q(10), R(10) (tie: Q < R), S(5); total 100
    assert out["sku_id"].to_list() == ["SKU-M", "SKU-Q", "SKU-R", "SKU-S"]
    assert out["abc_rank"].to_list() == [1, 2, 3, 4]
    # share_before 0, 75/100, 85/100, 95/100
    assert out["share_before"].to_list() == pytest.approx([0.0, 0.75, 0.85, 0.95])
    assert out["abc_class"].to_list() == ["A", "A", "B", "C"]


def test_abc_all_zero_demand_is_all_c_with_null_share():
    out = classify_skus(
        demand(("SKU-A", 45, 10)),  # in the 90-day window but not in the 30-day basis
        master(("SKU-B",), ("SKU-A",)),
        D,
    )
    assert out["sku_id"].to_list() == ["SKU-A", "SKU-B"]  # tie on 0 -> sku_id
    assert out["abc_rank"].to_list() == [1, 2]
    assert out["share_before"].to_list() == [None, None]
    assert out["abc_class"].to_list() == ["C", "C"]


def test_abc_on_pick_lines_basis():
    rows = demand(("SKU-A", 0, 100, 1), ("SKU-B", 0, 10, 9))
    skus = master(("SKU-A",), ("SKU-B",))

    by_units = by_sku(classify_skus(rows, skus, D))
    # units: A 100 (share_before 0 -> A), B 10 (share_before 100/110 = 0.909 -> B)
    assert (by_units["SKU-A"]["abc_rank"], by_units["SKU-A"]["abc_class"]) == (1, "A")
    assert (by_units["SKU-B"]["abc_rank"], by_units["SKU-B"]["abc_class"]) == (2, "B")
    assert by_units["SKU-B"]["share_before"] == pytest.approx(100 / 110)

    by_lines = by_sku(classify_skus(rows, skus, D, TaxonomyConfig(abc_basis="pick_lines")))
    # pick lines: B 9 (share_before 0 -> A), A 1 (share_before 9/10 = 0.9 -> B)
    assert (by_lines["SKU-B"]["abc_rank"], by_lines["SKU-B"]["abc_class"]) == (1, "A")
    assert (by_lines["SKU-A"]["abc_rank"], by_lines["SKU-A"]["abc_class"]) == (2, "B")
    assert by_lines["SKU-A"]["share_before"] == pytest.approx(0.9)


def test_class_shares():
    out = classify_skus(
        demand(("SKU-A", 0, 80), ("SKU-B", 0, 15), ("SKU-C", 0, 5)),
        master(("SKU-A",), ("SKU-B",), ("SKU-C",), ("SKU-D",)),
        D,
    )
    shares = class_shares(out)
    # A: SKU-A (80 units); B: SKU-B (15); C: SKU-C (5) and SKU-D (0); 4 SKUs, 100 units
    assert shares == {
        "A": {"skus": 1, "sku_share": 0.25, "units_30d": 80.0, "units_share": 0.80},
        "B": {"skus": 1, "sku_share": 0.25, "units_30d": 15.0, "units_share": 0.15},
        "C": {"skus": 2, "sku_share": 0.50, "units_30d": 5.0, "units_share": 0.05},
    }


def test_class_shares_of_an_empty_frame():
    shares = class_shares(pl.DataFrame(schema=SKU_VELOCITY_SCHEMA))
    assert shares["A"] == {"skus": 0, "sku_share": 0.0, "units_30d": 0.0, "units_share": 0.0}


# --- windows -------------------------------------------------------------------------------------


def test_window_edges():
    out = by_sku(
        classify_skus(
            demand(
                ("SKU-W", -1, 512, 1, 10),  # after D: ignored
                ("SKU-W", 0, 1, 1, 10),
                ("SKU-W", 6, 2, 1, 10),
                ("SKU-W", 7, 4, 1, 10),
                ("SKU-W", 29, 8, 1, 10),
                ("SKU-W", 30, 16, 1, 10),
                ("SKU-W", 59, 32, 1, 10),
                ("SKU-W", 60, 64, 1, 10),
                ("SKU-W", 89, 128, 1, 10),
                ("SKU-W", 90, 256, 1, 10),  # before D-89: ignored
            ),
            master(("SKU-W",)),
            D,
        )
    )["SKU-W"]
    assert out["units_7d"] == 1 + 2  # ages 0, 6
    assert out["units_30d"] == 1 + 2 + 4 + 8  # ages 0..29
    assert out["units_60d"] == 15 + 16 + 32  # + ages 30, 59
    assert out["units_90d"] == 63 + 64 + 128  # + ages 60, 89
    assert out["pick_lines_30d"] == 4  # four rows in ages 0..29
    assert out["orders_30d"] == 40


def test_sku_seen_only_outside_the_window_is_not_in_the_output():
    out = classify_skus(
        demand(("SKU-A", 0, 3), ("SKU-OLD", 90, 50), ("SKU-NEXT", -1, 50)),
        master(("SKU-A",)),
        D,
    )
    assert out["sku_id"].to_list() == ["SKU-A"]


# --- XYZ -----------------------------------------------------------------------------------------


def test_xyz_weekly_cv_with_empty_weeks_as_zero():
    rows = []
    for w in range(12):
        # 3 + 4 = 7 every week; ages 7w and 7w+6 are the first and last day of week w
        rows += [("SKU-X0", 7 * w, 3), ("SKU-X0", 7 * w + 6, 4)]
        # 15, 5, 15, 5, ...
        rows.append(("SKU-X5", 7 * w + 3, 15 if w % 2 == 0 else 5))
    rows += [("SKU-Y1", 7 * w + 2, 10) for w in range(6)]  # weeks 0..5 only
    rows += [("SKU-Z3", 7 * w + 1, 12) for w in (0, 4, 8)]  # 3 of 12 weeks
    rows += [("SKU-ZE", 6, 6), ("SKU-ZE", 7, 6)]  # age 6 is week 0, age 7 is week 1
    rows += [("SKU-OLD", 85, 10)]  # in the 90-day window, before the 12 weeks (ages 0..83)
    skus = ("SKU-X0", "SKU-X5", "SKU-Y1", "SKU-Z3", "SKU-ZE", "SKU-OLD", "SKU-NONE")
    out = by_sku(classify_skus(demand(*rows), master(*[(s,) for s in skus]), D))

    def xyz(sku):
        r = out[sku]
        return r["weekly_mean_12w"], r["demand_cv"], r["xyz_class"]

    # 7 every week: mean 7, std 0
    assert xyz("SKU-X0") == (7.0, 0.0, "X")
    # mean 10, every week 5 away from it: std 5, cv 0.5 (<= 0.5 -> X)
    assert xyz("SKU-X5") == (10.0, 0.5, "X")
    # 6 weeks of 10, 6 of 0: mean 5, std 5, cv 1.0 (<= 1.0 -> Y)
    assert xyz("SKU-Y1") == (5.0, 1.0, "Y")
    # 3 weeks of 12, 9 of 0: mean 3, var (3*9^2 + 9*3^2)/12 = 27, cv sqrt(27)/3 = sqrt(3)
    mean, cv, cls = xyz("SKU-Z3")
    assert (mean, cls) == (3.0, "Z") and cv == pytest.approx(math.sqrt(3))
    # weeks 0 and 1 hold 6 each: mean 1, var (2*5^2 + 10*1^2)/12 = 5, cv sqrt(5)
    # (both in one week would be var (11^2 + 11*1^2)/12 = 11)
    mean, cv, cls = xyz("SKU-ZE")
    assert (mean, cls) == (1.0, "Z") and cv == pytest.approx(math.sqrt(5))
    # zero mean: Z with a null cv
    assert xyz("SKU-OLD") == (0.0, None, "Z")
    assert out["SKU-OLD"]["units_90d"] == 10
    assert xyz("SKU-NONE") == (0.0, None, "Z")


# --- cube ----------------------------------------------------------------------------------------


def test_cubic_velocity_and_coi():
    out = by_sku(
        classify_skus(
            demand(
                ("SKU-C1", 0, 60, 4),
                ("SKU-C2", 10, 15, 3),
                ("SKU-C2", 40, 30, 100),  # outside 30 days: neither units nor lines count
                ("SKU-C3", 5, 3, 0),
            ),
            master(("SKU-C1", 0.5), ("SKU-C2", 2.0), ("SKU-C3", 1.0), ("SKU-C4", 1.0)),
            D,
        )
    )
    # 60 * 0.5 / 30 = 1.0 ft3/day; a week of it: 60/30 * 7 * 0.5 = 7 ft3 over 4 lines = 1.75
    assert out["SKU-C1"]["cubic_velocity_ft3_per_day"] == pytest.approx(1.0)
    assert out["SKU-C1"]["coi"] == pytest.approx(1.75)
    # 15 * 2 / 30 = 1.0; 15/30 * 7 * 2 = 7 ft3 over 3 lines = 2.333...
    assert out["SKU-C2"]["cubic_velocity_ft3_per_day"] == pytest.approx(1.0)
    assert out["SKU-C2"]["coi"] == pytest.approx(7 / 3)
    # 3 * 1 / 30 = 0.1; no pick lines -> no COI
    assert out["SKU-C3"]["cubic_velocity_ft3_per_day"] == pytest.approx(0.1)
    assert out["SKU-C3"]["coi"] is None
    # no demand: 0 ft3/day, no COI
    assert out["SKU-C4"]["cubic_velocity_ft3_per_day"] == 0.0
    assert out["SKU-C4"]["coi"] is None
    assert out["SKU-C1"]["unit_cube_ft3"] == 0.5


def test_unknown_sku_in_demand():
    out = classify_skus(
        demand(("SKU-K", 0, 10, 2), ("UNKNOWN-1", 3, 30, 5)),
        master(("SKU-K", 1.0)),
        D,
        history_start=ago(99),
    )
    rows = by_sku(out)
    assert set(rows) == {"SKU-K", "UNKNOWN-1"}
    unknown = rows["UNKNOWN-1"]
    assert unknown["units_30d"] == 30 and unknown["pick_lines_30d"] == 5
    assert unknown["unit_cube_ft3"] is None
    assert unknown["cubic_velocity_ft3_per_day"] is None
    assert unknown["coi"] is None
    # ranked with the rest: 30 before 10, share_before 0 -> A
    assert (unknown["abc_rank"], unknown["abc_class"]) == (1, "A")
    # no introduced_on: history runs from history_start, D - (D-99) + 1
    assert unknown["history_days"] == 100


def test_population_follows_introduced_on():
    out = by_sku(
        classify_skus(
            demand(("SKU-LATE", 0, 5)),
            master(
                ("SKU-FUTURE", 1.0, D + dt.timedelta(days=1)),  # not yet introduced, no demand
                ("SKU-LATE", 1.0, D + dt.timedelta(days=5)),  # not yet introduced, but sold
                ("SKU-TODAY", 1.0, D),
                ("SKU-NODATE", 1.0, None),
            ),
            D,
            history_start=ago(199),
        )
    )
    assert set(out) == {"SKU-LATE", "SKU-TODAY", "SKU-NODATE"}
    assert out["SKU-TODAY"]["history_days"] == 1  # D - D + 1
    assert out["SKU-NODATE"]["history_days"] == 200  # D - (D-199) + 1
    assert out["SKU-LATE"]["history_days"] == 0  # D - (D+5) + 1 = -4, floored at 0
    assert out["SKU-LATE"]["unit_cube_ft3"] == 1.0


def test_duplicate_sku_in_master_is_an_error():
    with pytest.raises(ValueError, match="duplicate"):
        classify_skus(demand(("SKU-A", 0, 1)), master(("SKU-A",), ("SKU-A",)), D)


def test_config_is_validated():
    with pytest.raises(ValueError):
        TaxonomyConfig(abc_basis="cube")
    with pytest.raises(ValueError):
        TaxonomyConfig(abc_cutoffs=(0.95, 0.80))
    with pytest.raises(ValueError):
        TaxonomyConfig(xyz_weeks=13)  # 91 days do not fit the 90-day look-back


# --- seasonality ---------------------------------------------------------------------------------


SEASONAL_ROWS = (
    ("SKU-S2", 0, 60),
    ("SKU-S2", 60, 30),  # u30 60, u90 90
    ("SKU-SL", 0, 1),
    ("SKU-SL", 45, 89),  # u30 1, u90 90
    ("SKU-S0", 45, 90),  # u30 0, u90 90
    ("SKU-S3", 0, 90),  # u30 90, u90 90
    ("SKU-NEW", 0, 90),  # introduced 50 days before D
)
SEASONAL_MASTER = (
    ("SKU-S2",),
    ("SKU-SL",),
    ("SKU-S0",),
    ("SKU-S3",),
    ("SKU-NEW", 1.0, ago(50)),
    ("SKU-NONE",),
)


def test_seasonality_with_full_history():
    out = classify_skus(
        demand(*SEASONAL_ROWS), master(*SEASONAL_MASTER), D, history_start=ago(89)
    )
    index = column(out, "seasonality_index")
    history = column(out, "history_days")
    assert index["SKU-S2"] == pytest.approx(2.0)  # (60/30) / (90/90)
    assert index["SKU-SL"] == pytest.approx(0.1)  # (1/30) / 1 = 0.033 -> clipped to 0.1
    assert index["SKU-S0"] == pytest.approx(0.1)  # 0 -> clipped to 0.1
    assert index["SKU-S3"] == pytest.approx(3.0)  # (90/30) / 1, inside [0.1, 5.0]
    assert index["SKU-NEW"] is None  # introduced D-50: 51 days of history, not yet known
    assert history["SKU-NEW"] == 51
    assert index["SKU-NONE"] == 1.0  # units_90d == 0
    assert history["SKU-S2"] == 90  # D - (D-89) + 1


def test_seasonality_is_not_known_below_90_days_of_history():
    out = classify_skus(
        demand(*SEASONAL_ROWS), master(*SEASONAL_MASTER), D, history_start=ago(88)
    )
    assert set(out["history_days"]) == {89, 51}
    assert out["seasonality_index"].to_list() == [None] * out.height


def test_history_start_defaults_to_the_earliest_demand_date():
    skus = master(("SKU-A",), ("SKU-B",))
    # earliest row D-89: 90 days of history; SKU-A: (90/30) / (90/90) = 3
    full = classify_skus(demand(("SKU-A", 0, 90), ("SKU-B", 89, 1)), skus, D)
    assert column(full, "history_days") == {"SKU-A": 90, "SKU-B": 90}
    assert column(full, "seasonality_index")["SKU-A"] == pytest.approx(3.0)
    # earliest row D-88: 89 days
    short = classify_skus(demand(("SKU-A", 0, 90), ("SKU-B", 88, 1)), skus, D)
    assert column(short, "history_days") == {"SKU-A": 89, "SKU-B": 89}
    assert column(short, "seasonality_index") == {"SKU-A": None, "SKU-B": None}
    # a row before the window is ignored in the sums but still shows history since D-120
    older = classify_skus(demand(("SKU-A", 0, 90), ("SKU-B", 120, 1)), skus, D)
    assert column(older, "history_days") == {"SKU-A": 121, "SKU-B": 121}
    assert column(older, "units_90d") == {"SKU-A": 90.0, "SKU-B": 0.0}


def test_seasonality_clips_at_the_upper_bound():
    rows, skus = demand(("SKU-S3", 0, 90)), master(("SKU-S3",))
    # a 10-day short window: (90/10) / (90/90) = 9 -> clipped to the default 5.0
    out = classify_skus(rows, skus, D, TaxonomyConfig(windows=(10, 60, 90)), history_start=ago(89))
    assert out["seasonality_index"].item() == 5.0
    # default windows: (90/30) / 1 = 3 -> clipped to a 2.5 bound
    out = classify_skus(
        rows, skus, D, TaxonomyConfig(seasonality_clip=(0.1, 2.5)), history_start=ago(89)
    )
    assert out["seasonality_index"].item() == 2.5


# --- properties ----------------------------------------------------------------------------------

SKU_IDS = [f"SKU-{i:02d}" for i in range(12)]
demand_rows = st.lists(
    st.tuples(st.sampled_from(SKU_IDS), st.integers(0, 89), st.integers(0, 1000)),
    min_size=1,
    max_size=60,
)



@st.composite
def weekly_rows(draw):
    """Demand in every one of the 12 weeks (two rows on random days of each), plus a row in
    the six days before them: a spread of X, Y and Z that sparse random rows seldom reach."""
    rows = []
    for sku in SKU_IDS[:4]:
        for week, units in enumerate(draw(st.lists(st.integers(0, 30), min_size=12, max_size=12))):
            part = draw(st.integers(0, units))
            first, second = draw(st.integers(0, 6)), draw(st.integers(0, 6))
            rows += [(sku, 7 * week + first, part), (sku, 7 * week + second, units - part)]
        rows.append((sku, draw(st.integers(84, 89)), draw(st.integers(0, 30))))
    return rows


@settings(max_examples=150, deadline=None)
@given(rows=demand_rows, in_master=st.sets(st.sampled_from(SKU_IDS)), seed=st.integers(0, 2**32))
def test_abc_respects_cutoffs_and_ignores_row_order(rows, in_master, seed):
    frame = demand(*rows)
    skus = master(*[(s,) for s in sorted(in_master)])
    out = classify_skus(frame, skus, D, history_start=ago(89))

    units = out["units_30d"].to_list()  # in abc_rank order
    classes = out["abc_class"].to_list()
    total = sum(units)
    assert out["abc_rank"].to_list() == list(range(1, out.height + 1))
    assert out["sku_id"].to_list() == [
        s for _, s in sorted(zip(units, out["sku_id"]), key=lambda t: (-t[0], t[1]))
    ]
    assert all(c == "C" for u, c in zip(units, classes) if u == 0)
    for cls, cutoff in (("A", 0.80), ("B", 0.95)):
        members = [i for i, c in enumerate(classes) if c == cls]
        if members:
            last = members[-1]
            # everything ranked above the last member of the class stays under the cut-off
            assert sum(units[:last]) / total < cutoff
        # and the first SKU after the class (with demand) starts at or over it
        after = [i for i, c in enumerate(classes) if c > cls and units[i] > 0]
        if after:
            assert sum(units[: after[0]]) / total >= cutoff

    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    again = classify_skus(shuffled, skus, D, history_start=ago(89))
    # whole units: every sum is exact, so ranks and classes must not move at all; derived floats
    # may differ in the last bit (polars divides by a broadcast scalar via its reciprocal)
    exact = ["sku_id", "abc_rank", "abc_class", "xyz_class", "units_30d", "units_90d"]
    assert again.select(exact).equals(out.select(exact))
    assert_frame_equal(again, out, check_exact=False, rel_tol=1e-12)


@settings(max_examples=150, deadline=None)
@given(rows=st.one_of(demand_rows, weekly_rows()))
def test_windows_and_xyz_match_a_plain_reading_of_the_definition(rows):
    out = by_sku(classify_skus(demand(*rows), master(), D, history_start=ago(89)))
    assert set(out) == {sku for sku, _, _ in rows}
    for sku, got in out.items():
        mine = [(age, units) for s, age, units in rows if s == sku]

        def window(days):
            return sum(units for age, units in mine if age < days)

        assert (got["units_7d"], got["units_30d"]) == (window(7), window(30))
        assert (got["units_60d"], got["units_90d"]) == (window(60), window(90))
        weeks = [sum(u for age, u in mine if 7 * w <= age <= 7 * w + 6) for w in range(12)]
        mean = Fraction(sum(weeks), 12)
        assert got["weekly_mean_12w"] == pytest.approx(float(mean))
        if mean == 0:
            assert (got["demand_cv"], got["xyz_class"]) == (None, "Z")
            continue
        cv_squared = sum((w - mean) ** 2 for w in weeks) / 12 / mean**2
        expected = "X" if cv_squared <= Fraction(1, 4) else "Y" if cv_squared <= 1 else "Z"
        assert got["xyz_class"] == expected
        assert got["demand_cv"] == pytest.approx(math.sqrt(cv_squared))
