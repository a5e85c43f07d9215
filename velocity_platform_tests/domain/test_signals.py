"""The figures behind the gates and signals: success rate, Pareto shape, thrash, day-on-day, window."""

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity_platform.domain.signals import (
    batch_window,
    day_on_day_changes,
    ingestion_success_rate,
    pareto_shape,
    thrash,
)

D = dt.date(2026, 3, 10)


def test_ingestion_success_rate():
    assert ingestion_success_rate(9_995, 10_000) == pytest.approx(0.9995)
    assert ingestion_success_rate(0, 0) == 1.0  # a day the ERP holds nothing for is not a failure
    with pytest.raises(ValueError, match="negative"):
        ingestion_success_rate(-1, 10)


def velocity_of(classes: str, units: list[float] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"sku_id": [f"SKU-{i:04d}" for i in range(len(classes))], "abc_class": list(classes),
         "units_30d": units or [1.0] * len(classes)}
    )


def test_pareto_shape_flags_a_class_far_from_its_share():
    healthy = pareto_shape(velocity_of("AA" + "BBB" + "CCCCC"), tolerance=0.2)
    assert healthy["within"].all()
    assert healthy.filter(pl.col("abc_class") == "A")["sku_share"][0] == pytest.approx(0.2)
    # Flat demand makes most SKUs A: far from a fifth.
    flat = pareto_shape(velocity_of("AAAAAAAA" + "CC"), tolerance=0.2)
    assert flat.filter(~pl.col("within"))["abc_class"].to_list() == ["A", "B", "C"]
    assert flat.filter(pl.col("abc_class") == "A")["deviation"][0] == pytest.approx(0.6)
    # One SKU carrying nearly everything empties A and B into C.
    skewed = pareto_shape(velocity_of("A" + "C" * 9, [1000.0] + [1.0] * 9), tolerance=0.2)
    assert skewed.filter(~pl.col("within"))["abc_class"].to_list() == ["B", "C"]


def moves(*rows: tuple[dt.date, str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"business_date": pl.Date, "sku_id": pl.String}, orient="row")


def test_thrash_is_a_move_inside_the_window_or_twice_today():
    directives = pl.DataFrame(
        {"sku_id": ["SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-4"], "directive_id": ["d1", "d2", "d3", "d4", "d5"]}
    )
    earlier = moves(
        (D - dt.timedelta(days=1), "SKU-1"),  # yesterday: inside a 2-day window
        (D - dt.timedelta(days=3), "SKU-2"),  # three days ago: outside
        (D, "SKU-3"),  # today's own move is not an earlier one
    )
    found = thrash(directives, earlier, D, window_days=2)
    assert found.rows() == [
        ("SKU-1", "d1", "moved on 2026-03-09, inside the 2-day window"),
        ("SKU-4", "d4", "more than one directive today"),
        ("SKU-4", "d5", "more than one directive today"),
    ]


def day_velocity(units: dict[str, float], history: dict[str, int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"sku_id": list(units), "units_30d": list(units.values()),
         "history_days": [(history or {}).get(s, 400) for s in units]},
        schema={"sku_id": pl.String, "units_30d": pl.Float64, "history_days": pl.Int32},
    )


def demand(*rows: tuple[dt.date, str, float]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"business_date": pl.Date, "sku_id": pl.String, "units": pl.Float64}, orient="row")


def test_day_on_day_reads_yesterdays_window_from_the_days_that_entered_and_left():
    month_ago = D - dt.timedelta(days=30)
    velocity = day_velocity(
        {"SKU-UP": 100.0, "SKU-STEADY": 60.0, "SKU-NEW": 40.0, "SKU-YOUNG": 100.0, "SKU-QUIET": 8.0},
        history={"SKU-YOUNG": 12},
    )
    daily = demand(
        (D, "SKU-UP", 80.0),  # yesterday 20 -> today 100: 5x
        (D, "SKU-STEADY", 3.0), (month_ago, "SKU-STEADY", 2.0),  # 59 -> 60
        (D, "SKU-NEW", 40.0),  # 0 -> 40, above the 20-unit floor
        (D, "SKU-YOUNG", 90.0),  # not compared: its window is not full yet
        (D, "SKU-QUIET", 8.0),  # 0 -> 8: under the floor
    )
    changed, compared = day_on_day_changes(velocity, daily, D, factor=3.0, min_units=20.0)
    assert compared == 4
    assert changed.rows() == [
        ("SKU-NEW", 0.0, 40.0, None, "up"),
        ("SKU-UP", 20.0, 100.0, 5.0, "up"),
    ]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 30), min_size=31, max_size=31), min_size=1, max_size=5),
    st.floats(1.1, 4.0),
)
def test_day_on_day_agrees_with_summing_both_windows(per_sku_days, factor):
    """Oracle: yesterday's and today's 30-day sums computed directly from 31 days of demand."""
    skus = [f"SKU-{i:03d}" for i in range(len(per_sku_days))]
    days = [D - dt.timedelta(days=30 - k) for k in range(31)]  # D-30 .. D
    rows = [(day, sku, float(u)) for sku, series in zip(skus, per_sku_days) for day, u in zip(days, series) if u]
    today = {sku: float(sum(series[1:])) for sku, series in zip(skus, per_sku_days)}
    yesterday = {sku: float(sum(series[:-1])) for sku, series in zip(skus, per_sku_days)}
    changed, _ = day_on_day_changes(day_velocity(today), demand(*rows), D, factor=factor, min_units=20.0)
    expected = {
        s for s in skus
        if max(today[s], yesterday[s]) >= 20.0
        and (min(today[s], yesterday[s]) == 0 or max(today[s], yesterday[s]) / min(today[s], yesterday[s]) > factor)
    }
    assert set(changed["sku_id"]) == expected
    assert dict(zip(changed["sku_id"], changed["units_30d_yesterday"])) == {s: yesterday[s] for s in expected}


def test_the_batch_window_is_two_to_six_on_the_warehouse_clock_across_dst():
    winter_start, winter_end = batch_window(dt.date(2026, 1, 14), "Europe/London", 2, 4)
    assert winter_start.astimezone(dt.UTC) == dt.datetime(2026, 1, 15, 2, tzinfo=dt.UTC)
    assert winter_end.astimezone(dt.UTC) == dt.datetime(2026, 1, 15, 6, tzinfo=dt.UTC)
    # The night the clocks go forward (29 March 2026): still 02:00-06:00 local, now BST.
    dst_start, dst_end = batch_window(dt.date(2026, 3, 28), "Europe/London", 2, 4)
    assert dst_start.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 1, tzinfo=dt.UTC)
    assert dst_end.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 5, tzinfo=dt.UTC)
