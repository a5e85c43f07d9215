"""The Online Retail export as a network of two sites: `online-retail-network` maps the United
Kingdom's lines to UK and every other country's to EU; each site is replayed on its own, and the
network's figures are the sites' summed, never averaged."""

import datetime as dt
import json
import subprocess
import sys

import polars as pl
import pytest

from velocity_platform.connectors.files import preset, read_export
from velocity_platform.evaluate import network_summary

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def network_export(online_retail_path):
    return read_export(online_retail_path, preset("online-retail-network"))


def test_every_line_of_the_export_belongs_to_exactly_one_site(network_export, online_retail):
    assert network_export.warehouses == ["EU", "UK"]
    uk, eu = network_export.of_site("UK"), network_export.of_site("EU")
    assert uk.total_lines + eu.total_lines == online_retail.total_lines == network_export.total_lines
    assert uk.lines.height + eu.lines.height == online_retail.lines.height
    # The United Kingdom's lines are UK's and no other country's; the rest are EU's.
    countries = pl.read_csv(network_export.path, columns=["Country"], encoding="utf8-lossy")["Country"]
    assert uk.total_lines == int((countries == "United Kingdom").sum())
    day = dt.date(2011, 11, 3)
    assert uk.line_counts(day)["file_lines"] + eu.line_counts(day)["file_lines"] == online_retail.line_counts(day)["file_lines"]
    # A site's SKU master is what that site sells: the two differ.
    assert set(eu.sku_master()["sku_id"]) != set(uk.sku_master()["sku_id"])
    # The one-warehouse preset is today's: one export, no sites.
    assert online_retail.warehouses == [] and online_retail.of_site("UK") is online_retail


def test_evaluate_replays_each_site_and_the_network_is_their_sum(online_retail_path, tmp_path):
    summary_path = tmp_path / "network.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "velocity_platform.cli", "evaluate", "--source", "file", "--path", str(online_retail_path),
            "--preset", "online-retail-network", "--from", "2011-11-01", "--to", "2011-11-04",
            "--history-from", "2011-09-01", "--summary", str(summary_path),
        ],
        env={"PATH": "/usr/bin:/bin", "VELOCITY_STATE_DIR": str(tmp_path / "state")},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    sites = summary["warehouses"]
    assert sorted(sites) == ["EU", "UK"]
    assert "--- UK" in done.stdout and "--- network (2 sites: EU, UK)" in done.stdout
    for figure in ("net_labor_saving_hours", "baseline_travel_hours", "orders", "pick_lines", "relocations", "moves"):
        assert summary[figure] == pytest.approx(sum(site[figure] for site in sites.values()), abs=0.11), figure
    assert summary["file_lines"] == {k: sum(site["file_lines"][k] for site in sites.values()) for k in summary["file_lines"]}
    # Shares come from the sums: the network's is between its sites', weighted by walking.
    expected = 100 * summary["net_labor_saving_hours"] / summary["baseline_travel_hours"]
    assert summary["net_labor_saving_pct"] == pytest.approx(expected, abs=0.01)
    low, high = sorted(site["net_labor_saving_pct"] for site in sites.values())
    assert low - 0.01 <= summary["net_labor_saving_pct"] <= high + 0.01
    # UK sells most of what the export holds; each site's demand is its own.
    assert sites["UK"]["pick_lines"] > sites["EU"]["pick_lines"] > 0


def test_a_site_the_export_does_not_hold_is_refused_in_one_line(online_retail_path, tmp_path):
    done = subprocess.run(
        [
            sys.executable, "-m", "velocity_platform.cli", "evaluate", "--path", str(online_retail_path),
            "--preset", "online-retail-network", "--from", "2011-11-01", "--to", "2011-11-02", "--warehouse", "US",
        ],
        env={"PATH": "/usr/bin:/bin", "VELOCITY_STATE_DIR": str(tmp_path / "state")},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "velocity-platform evaluate: --warehouse US: the export's lines belong to EU, UK"


def test_network_shares_are_weighted_by_their_sites_volumes():
    def site(net_h, base_h, pick_lines, a_lines, golden):
        figures = {k: 0 for k in (
            "travel_saved_hours", "relocation_hours", "handling_hours", "baseline_handling_hours", "replenishments",
            "replenishment_hours", "baseline_replenishments", "baseline_replenishment_hours", "priced_saving_hours",
            "realised_saving_hours", "relocations", "relocations_reversed_30d", "orders", "baseline_m", "platform_m",
            "moves", "new_skus_slotted",
        )}
        shared = {k: 1 for k in ("replenish_minutes", "level_handling_s", "price_on", "move_minutes", "walk_speed_m_s",
                                 "payback_horizon_days", "move_budget", "start_assignment", "seed", "evaluated_from",
                                 "evaluated_to", "days", "file")}
        return {
            **figures, **shared, "net_labor_saving_hours": net_h, "baseline_travel_hours": base_h, "pick_lines": pick_lines,
            "a_pick_lines": a_lines, "golden_zone_pick_share": golden, "golden_zone_a_pick_share": golden,
            "baseline_golden_zone_pick_share": None, "baseline_golden_zone_a_pick_share": None, "routing": "s-shape",
            "golden_levels": [1], "layout": {"locations": 100}, "history_from": "2011-01-01", "file_lines": {"validated": 1},
            "net_labor_saving_pct": 100 * net_h / base_h,
        }

    network = network_summary({"A": site(10.0, 100.0, 900, 300, 0.9), "B": site(-1.0, 10.0, 100, 100, 0.5)})
    assert network["net_labor_saving_pct"] == pytest.approx(100 * 9.0 / 110.0, abs=0.01)  # not the mean of 10% and -10%
    assert network["golden_zone_pick_share"] == pytest.approx(0.86)  # (0.9 x 900 + 0.5 x 100) / 1,000
    assert network["golden_zone_a_pick_share"] == pytest.approx(0.8)  # (0.9 x 300 + 0.5 x 100) / 400
    assert network["baseline_golden_zone_pick_share"] is None
    assert network["layout"] == {"locations": 200} and network["file_lines"] == {"validated": 2}
