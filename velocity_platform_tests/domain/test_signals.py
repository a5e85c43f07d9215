"""The figures behind the gates and signals: success rate, Pareto shape and shift, thrash, velocity changes, window."""

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity_platform.domain.signals import (
    VelocityChangePolicy,
    batch_window,
    changed_sku_counts,
    class_share_shift,
    history_judged,
    ingestion_success_rate,
    pareto_shape,
    thrash,
    unusual_line_sizes,
    usual_change_count,
    usual_line_sizes,
    usual_line_sizes_sql,
    velocity_change_verdict,
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


def demand(*rows: tuple[dt.date, str, float]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"business_date": pl.Date, "sku_id": pl.String, "units": pl.Float64}, orient="row")


POLICY = VelocityChangePolicy()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 30), min_size=34, max_size=34), min_size=1, max_size=5),
    st.floats(1.1, 4.0),
)
def test_changed_sku_counts_agree_with_summing_both_windows(per_sku_days, factor):
    """Oracle: each day's and the day before's 30-day sums computed directly from the daily rows."""
    policy = VelocityChangePolicy(factor=factor, min_units=20.0)
    skus = [f"SKU-{i:03d}" for i in range(len(per_sku_days))]
    days = [D - dt.timedelta(days=33 - k) for k in range(34)]  # D-33 .. D
    rows = [(day, sku, float(u)) for sku, series in zip(skus, per_sku_days) for day, u in zip(days, series) if u]
    first = D - dt.timedelta(days=3)
    counts = changed_sku_counts(demand(*rows), first, D, history_start=days[0], policy=policy)
    got = dict(zip(counts["business_date"], counts["skus_changed"]))
    for offset in range(4):  # D-3 .. D; days[k] is D-33+k
        k = 30 + offset
        expected = 0
        for series in per_sku_days:
            today, before = sum(series[k - 29 : k + 1]), sum(series[k - 30 : k])
            low, high = min(today, before), max(today, before)
            expected += high >= 20 and (low == 0 or high > low * factor)
        # D-3 is day 31 of history: its day before (day 30) has a full window too, so it is compared
        assert got[days[k]] == expected


def test_a_count_is_not_judged_before_the_window_is_full():
    start = D - dt.timedelta(days=30)  # D is day 31: judged; D-1 is day 30: not
    counts = changed_sku_counts(demand((D, "SKU-1", 50.0)), D - dt.timedelta(days=1), D, start, POLICY)
    assert counts.rows() == [(D - dt.timedelta(days=1), None, None), (D, 1, 1)]


def test_the_usual_count_is_a_margin_over_the_ninetieth_percentile_of_the_weeks_before():
    # nearest rank: 90% of 10 counts is the 9th smallest = 9; 1.5 x 9 = 13.5
    assert usual_change_count(list(range(1, 11)), POLICY) == pytest.approx(13.5)
    assert usual_change_count([4, None, 5, 6, 4, 5], POLICY) is None  # 5 days compared, needs 7
    # only the last 28 days count: an old storm is forgotten
    assert usual_change_count([500] * 5 + [2] * 28, POLICY) == pytest.approx(3.0)


def order_lines(*rows: tuple[dt.date, str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [(d, s, "ORDER", q) for d, s, q in rows],
        schema={"business_date": pl.Date, "sku_id": pl.String, "txn_type": pl.String, "quantity_eaches": pl.Float64},
        orient="row",
    )


def test_a_sku_whose_every_line_is_out_of_its_usual_size_is_unusual_a_bulk_order_is_not():
    before = [D - dt.timedelta(days=d) for d in range(1, 13)]
    history = order_lines(
        *[(d, "SKU-CASES", 2.0) for d in before],  # usually 2 eaches a line
        *[(d, "SKU-BULK", 2.0) for d in before],
        *[(d, "SKU-DOZEN", 2.0) for d in before],
        *[(d, "SKU-YOUNG", 2.0) for d in before[:9]],  # 9 lines before: no usual line yet
        *[(D, "SKU-CASES", q) for q in (48.0, 48.0, 72.0, 96.0, 48.0)],  # every line in cases of 24: median 48 = 24x
        *[(D, "SKU-BULK", q) for q in (2.0, 2.0, 4.0, 2.0, 5000.0)],  # one bulk order: median 2
        *[(D, "SKU-DOZEN", 24.0) for _ in range(5)],  # median 24 = 12x: not more than 12x
        *[(D, "SKU-YOUNG", 200.0) for _ in range(5)],
        *[(D, "SKU-FEW", 400.0) for _ in range(4)],  # four lines: not judged
    )
    usual = usual_line_sizes(history, D, days_before=90)
    found = unusual_line_sizes(history.filter(pl.col("business_date") == D), usual, POLICY)
    assert found.rows() == [("SKU-CASES", 5, 48.0, 2.0, 24.0, "larger")]
    # the reverse mistake: cases read as eaches (2 eaches a line becomes 1/24 of it)
    shrunk = order_lines(*[(D, "SKU-CASES", 2.0 / 24) for _ in range(6)])
    assert unusual_line_sizes(shrunk, usual, POLICY)["direction"].to_list() == ["smaller"]


def test_half_the_lines_in_cases_and_half_in_eaches_is_a_mixed_day_not_a_unit_fault():
    before = [D - dt.timedelta(days=d) for d in range(1, 13)]
    usual = usual_line_sizes(order_lines(*[(d, "SKU-MIXED", 2.0) for d in before]), D, days_before=90)
    # Three wholesale lines in cases, three retail lines in eaches: the interpolated median,
    # (4 + 48) / 2 = 26, is 13x the usual 2; the lower median, 4, is 2x.
    mixed = order_lines(*[(D, "SKU-MIXED", q) for q in (240.0, 96.0, 48.0, 4.0, 2.0, 1.0)])
    assert unusual_line_sizes(mixed, usual, POLICY).is_empty()
    # One more line in cases makes four of seven: most lines are out of size.
    mostly_cases = order_lines(*[(D, "SKU-MIXED", q) for q in (240.0, 96.0, 48.0, 48.0, 4.0, 2.0, 1.0)])
    assert unusual_line_sizes(mostly_cases, usual, POLICY).select("median_line_today", "direction").rows() == [
        (48.0, "larger")
    ]
    # And the reverse: four of six lines under 1/12 of the usual 24 eaches, read from the upper median.
    usual_24 = usual_line_sizes(order_lines(*[(d, "SKU-MIXED", 24.0) for d in before]), D, days_before=90)
    shrunk = order_lines(*[(D, "SKU-MIXED", q) for q in (1.0, 1.0, 1.0, 1.0, 24.0, 48.0)])
    assert unusual_line_sizes(shrunk, usual_24, POLICY).select("median_line_today", "direction").rows() == [
        (1.0, "smaller")
    ]
    half_shrunk = order_lines(*[(D, "SKU-MIXED", q) for q in (1.0, 1.0, 1.0, 24.0, 24.0, 48.0)])
    assert unusual_line_sizes(half_shrunk, usual_24, POLICY).is_empty()


def test_the_usual_line_is_the_same_from_duckdb(tmp_path):
    import duckdb

    history = order_lines(
        *[(D - dt.timedelta(days=d), "SKU-1", float(d % 7 + 1)) for d in range(0, 95)],
        (D - dt.timedelta(days=5), "SKU-2", 3.0),
        (D - dt.timedelta(days=5), "SKU-2", 8.0),
    )
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE TABLE sales_history AS SELECT * FROM history")
        con.register("skus", pl.DataFrame({"sku_id": ["SKU-1", "SKU-2"]}).to_arrow())
        from_sql = con.execute(usual_line_sizes_sql("sales_history", D, 90, "skus")).pl()
    from_frame = usual_line_sizes(history, D, 90)
    assert from_sql.sort("sku_id").rows() == from_frame.sort("sku_id").rows()
    assert dict(from_frame.select("sku_id", "lines_before").iter_rows()) == {"SKU-1": 90, "SKU-2": 2}  # D-90 .. D-1
    assert dict(from_frame.select("sku_id", "usual_line_units").iter_rows())["SKU-2"] == pytest.approx(5.5)


def test_velocity_change_is_not_judged_without_a_full_window_of_history():
    verdict = velocity_change_verdict(D, 12, pl.DataFrame(), order_lines(), usual_line_sizes(order_lines(), D, 90), POLICY)
    assert verdict.passed and verdict.not_judged == "not judged: 12 days of history (needs 31)"
    assert history_judged(30, 30) is None


def test_class_shares_shift_when_one_line_takes_most_of_the_units():
    from velocity_platform.domain.taxonomy import with_abc

    skus = [f"SKU-{i:02d}" for i in range(10)]
    units = pl.DataFrame({"sku_id": skus, "units_30d": [10.0] * 9 + [10_000.0]})
    velocity = with_abc(units.lazy(), "units_30d").collect()
    # SKU-09's 9,990 units came in today: yesterday it had 10 like the rest
    shift = class_share_shift(velocity, demand((D, "SKU-09", 9_990.0)), D)
    by_class = {r["abc_class"]: r for r in shift.iter_rows(named=True)}
    # yesterday ten equal SKUs: share_before 0.0, 0.1, .., 0.9 -> A for < 0.8 (8), B for < 0.95 (2)
    assert [by_class[c]["sku_share_yesterday"] for c in "ABC"] == [0.8, 0.2, 0.0]
    # today SKU-09 holds 10,000 of 10,090: it alone is A, the rest start at 0.991 -> C
    assert [by_class[c]["sku_share_today"] for c in "ABC"] == [0.1, 0.0, 0.9]
    assert [round(by_class[c]["shift"], 6) for c in "ABC"] == [-0.7, -0.2, 0.9]


def test_the_batch_window_is_two_to_six_on_the_warehouse_clock_across_dst():
    winter_start, winter_end = batch_window(dt.date(2026, 1, 14), "Europe/London", 2, 4)
    assert winter_start.astimezone(dt.UTC) == dt.datetime(2026, 1, 15, 2, tzinfo=dt.UTC)
    assert winter_end.astimezone(dt.UTC) == dt.datetime(2026, 1, 15, 6, tzinfo=dt.UTC)
    # The night the clocks go forward (29 March 2026): still 02:00-06:00 local, now BST.
    dst_start, dst_end = batch_window(dt.date(2026, 3, 28), "Europe/London", 2, 4)
    assert dst_start.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 1, tzinfo=dt.UTC)
    assert dst_end.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 5, tzinfo=dt.UTC)
