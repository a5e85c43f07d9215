"""The platform on real order history: the UCI Online Retail export (../shared/data).

Counts below are facts of that file, checked by hand against its README: 541,909 lines, twelve
non-inventory codes, and 34 gift-voucher lines (gift_0001_10 .. _50), excluded by their shape.
"""

import datetime as dt
import json

import polars as pl
import pytest

import velocity_platform.evaluate as engine
from velocity_platform.domain import history, slotting, taxonomy, travel
from velocity_platform.domain.travel import Layout
from velocity_platform.domain.validation import validate_lines
from velocity_platform.evaluate import EvaluationSettings, evaluate

pytestmark = pytest.mark.realdata

LAYOUT = Layout(aisles=40, bays_per_side=50, levels=1)


def test_every_line_of_the_file_ends_in_exactly_one_place(online_retail):
    assert online_retail.total_lines == 541_909
    assert (online_retail.first_date, online_retail.last_date) == (dt.date(2010, 12, 1), dt.date(2011, 12, 9))
    assert online_retail.excluded_counts() == {
        "POST": 1256, "DOT": 710, "M": 571, "C2": 144, "D": 77, "S": 63,
        "BANK CHARGES": 37, "AMAZONFEE": 34, "CRUK": 16, "gift_0001_20": 10, "gift_0001_10": 9,
        "gift_0001_30": 8, "PADS": 4, "gift_0001_50": 4, "B": 3, "gift_0001_40": 3, "m": 1,
    }
    raw = online_retail.raw_lines_between(online_retail.first_date, online_retail.last_date)
    checked = validate_lines(raw, online_retail.sku_master(), seen_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert checked.rejects.height == 0  # the vouchers are excluded, not dead-lettered
    assert raw.height + 2916 + 34 == 541_909
    assert checked.valid.height + checked.rejects.height == raw.height
    kinds = dict(checked.valid.group_by("txn_type").len().iter_rows())
    # "C" invoices of stock codes are returns; other negative lines adjustments; never demand
    assert kinds == {"ORDER": 528_919, "RETURN": 8_704, "ADJUSTMENT": 1_336}
    assert checked.valid.filter(pl.col("txn_type") != "ADJUSTMENT")["quantity"].min() >= 0
    master = online_retail.sku_master()
    assert master["cube_is_default"].all() and master.height == 3_942  # 3,947 codes less the five voucher values


def test_the_replay_runs_the_platforms_own_domain_functions(online_retail, monkeypatch):
    calls: dict[str, int] = {}

    def spy(name, function):
        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return function(*args, **kwargs)

        monkeypatch.setattr(engine, name, counted)

    assert engine.plan_day_after_day is slotting.plan_day_after_day
    assert engine.classify_skus is taxonomy.classify_skus
    assert engine.daily_demand is history.daily_demand
    assert engine.order_travel is travel.order_travel
    for name in ("classify_skus", "daily_demand", "order_travel"):
        spy(name, getattr(engine, name))
    # the planning loop's own step, where the loop (shared with the asset) looks it up
    original, planned = slotting.plan_directives, []

    def plan_counted(day, *args, **kwargs):
        planned.append(day)
        return original(day, *args, **kwargs)

    monkeypatch.setattr(slotting, "plan_directives", plan_counted)
    evaluate(online_retail, EvaluationSettings(dt.date(2011, 6, 6), dt.date(2011, 6, 8), LAYOUT))
    # demand once for the whole history; velocity and a plan for each day; two walks a day
    assert calls == {"daily_demand": 1, "classify_skus": 3, "order_travel": 6}
    assert planned == [dt.date(2011, 6, 6), dt.date(2011, 6, 7), dt.date(2011, 6, 8)]


def test_no_day_is_planned_with_anything_it_could_not_have_known(online_retail):
    short = evaluate(online_retail, EvaluationSettings(dt.date(2011, 6, 1), dt.date(2011, 6, 14), LAYOUT))
    longer = evaluate(online_retail, EvaluationSettings(dt.date(2011, 6, 1), dt.date(2011, 6, 28), LAYOUT))
    # Knowing two more weeks of orders changes nothing about the first two weeks.
    assert longer.days.head(short.days.height).equals(short.days)
    assert short.days["moves"].sum() > 0 and short.days["orders"].sum() > 0
    # One level is a shelf at waist height: every pick golden, no handling beyond the walk.
    assert short.summary["golden_zone_pick_share"] == 1.0 and short.summary["handling_hours"] == 0.0


def test_a_four_level_rack_counts_handling_and_replenishment_and_prices_what_the_moves_realise(online_retail):
    result = evaluate(
        online_retail, EvaluationSettings(dt.date(2011, 6, 1), dt.date(2011, 6, 14), Layout(aisles=40, bays_per_side=50, levels=4), seed=1)
    )
    s = result.summary
    # Random over four levels, about half the picks are from the golden two; the platform sends
    # its fast movers there.
    assert 0.4 < s["baseline_golden_zone_a_pick_share"] < 0.6
    assert s["golden_zone_a_pick_share"] > s["baseline_golden_zone_a_pick_share"] + 0.1
    assert s["handling_hours"] < s["baseline_handling_hours"]
    assert s["golden_levels"] == [2, 3] and s["level_handling_s"] == [2.2, 0.0, 0.0, 1.5]
    # Every face is 40 ft3 of a default 0.1 ft3 cube: the same trips either way, all flagged.
    assert s["replenishments"] == s["baseline_replenishments"] > 0
    assert s["replenishment_hours"] == pytest.approx(s["replenishments"] * 5 / 60, abs=0.1)
    assert s["skus_face_below_a_day"] == s["skus_face_below_a_day_default_cube"]
    # Net labor: walking, handling and replenishment saved, less the relocations.
    parts = s["travel_saved_hours"] + s["baseline_handling_hours"] - s["handling_hours"] - s["relocation_hours"]
    parts += s["baseline_replenishment_hours"] - s["replenishment_hours"]
    assert s["net_labor_saving_hours"] == pytest.approx(parts, abs=0.3)
    # Priced and realised are the per-day figures of the relocations, in hours at the walk speed.
    savings = result.savings
    assert savings["relocations"].sum() == s["relocations"] > 0
    assert s["priced_saving_hours"] == pytest.approx(savings["priced_saving_m"].sum() / 3600, abs=0.05)
    assert s["realised_saving_hours"] == pytest.approx(savings["realised_saving_m"].sum() / 3600, abs=0.05)
    assert s["realised_saving_hours"] > 0


@pytest.mark.slow(minutes=1.5)
def test_the_moves_pay_for_their_labor_on_the_goal_setting(online_retail):
    """The issue's setting: 2011-06-01 .. 2011-12-09, history from 2010-12-01, 40 x 50 x 1,
    S-shape, random start, 200 moves a day at most, 10 min a relocation, 1.0 m/s."""
    result = evaluate(
        online_retail,
        EvaluationSettings(dt.date(2011, 6, 1), dt.date(2011, 12, 9), LAYOUT, "s-shape", 200, seed=1, history_from=dt.date(2010, 12, 1)),
    )
    s = result.summary
    assert s["orders"] == 12_138 and s["days"] == 192
    # Net of the relocations' labor the platform saves walking (the old planner lost 143%).
    assert s["relocation_hours"] == pytest.approx(s["relocations"] * 10 / 60, abs=0.05)
    assert s["travel_saved_hours"] > s["relocation_hours"] > 0
    # The goals: at least 12% of the baseline's walking hours net, at most 2% thrash.
    assert s["net_labor_saving_pct"] >= 12.0, s
    assert s["relocations_reversed_30d_pct"] <= 2.0, s
    # The budget is a cap, not a target: after the first days most days move far fewer than 200.
    assert (result.days["relocations"] < 100).mean() > 0.8
    assert s["new_skus_slotted"] > 0
    assert sum(s["file_lines"].values()) == 541_909  # the whole file is the history here


@pytest.mark.slow(minutes=1.5)
def test_a_warehouse_slotted_by_turnover_still_gains_from_the_nightly_run(online_retail):
    """From the one-shot slotting an analyst makes before go-live, the moves must still pay."""
    result = evaluate(
        online_retail,
        EvaluationSettings(dt.date(2011, 6, 1), dt.date(2011, 12, 9), LAYOUT, "s-shape", 200, "static-turnover", seed=1),
    )
    s = result.summary
    assert s["net_labor_saving_pct"] >= 2.0, s
    assert s["relocations_reversed_30d_pct"] <= 2.0, s


def test_the_evaluate_command_writes_its_summary_and_replays_a_given_start(online_retail, online_retail_path, tmp_path, capsys):
    from velocity_platform.cli import main
    from velocity_platform.domain.shadow import random_assignment
    from velocity_platform.domain.travel import layout_locations

    args = ["evaluate", "--source", "file", "--path", str(online_retail_path), "--preset", "online-retail",
            "--from", "2011-06-01", "--to", "2011-06-07", "--aisles", "40", "--bays", "50", "--levels", "1",
            "--routing", "return", "--moves-per-day", "50", "--seed", "3"]
    assert main([*args, "--start-assignment", "random", "--summary", str(tmp_path / "random.json")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "random.json").read_text())
    for key in ("orders", "pick_lines", "baseline_m_per_order", "platform_m_per_order", "travel_reduction_pct",
                "moves", "new_skus_slotted", "routing", "layout", "relocations", "travel_saved_hours",
                "relocation_hours", "net_labor_saving_hours", "net_labor_saving_pct", "relocations_reversed_30d",
                "relocations_reversed_30d_pct", "move_minutes", "walk_speed_m_s"):
        assert key in summary, key
    assert summary["routing"] == "return" and summary["layout"]["locations"] == 4000
    assert summary["moves"] <= 50 * 7
    lines = summary["file_lines"]
    assert f"= {lines['validated']:,} validated + {lines['excluded_non_inventory']:,} excluded" in printed
    # the same start handed over as a file replays identically
    known = online_retail.sku_master().filter(pl.col("introduced_on") < dt.date(2011, 6, 1))["sku_id"]
    random_assignment(known, layout_locations(LAYOUT), seed=3).write_csv(tmp_path / "start.csv")
    assert main([*args, "--start-assignment", str(tmp_path / "start.csv"), "--summary", str(tmp_path / "file.json")]) == 0
    from_file = json.loads((tmp_path / "file.json").read_text())
    assert from_file["platform_m"] == summary["platform_m"] and from_file["baseline_m"] == summary["baseline_m"]
    # every directive applied, with where it went, for the analyst; and the static-turnover start
    out = tmp_path / "directives.csv"
    assert main([*args, "--start-assignment", "static-turnover", "--move-minutes", "3", "--walk-speed", "1.2",
                 "--directives", str(out), "--summary", str(tmp_path / "static.json")]) == 0
    static = json.loads((tmp_path / "static.json").read_text())
    written = pl.read_csv(out)
    assert written.height == static["moves"] and written["relocations"].sum() == static["relocations"]
    assert {"business_date", "sku_id", "from_location", "to_location", "from_aisle", "from_bay", "from_level",
            "to_aisle", "to_bay", "to_level", "expected_saving_m_per_day"} <= set(written.columns)
    assert (static["move_minutes"], static["walk_speed_m_s"]) == (3.0, 1.2)
    assert static["baseline_m"] < summary["baseline_m"]  # a turnover-slotted start walks less than a random one
    # a range outside the file is refused with the reason, not a traceback
    assert main([*args[:7], "--from", "2012-01-01", "--to", "2012-01-05"]) == 2
    assert "must lie within the file's history 2010-12-01..2011-12-09" in capsys.readouterr().err
