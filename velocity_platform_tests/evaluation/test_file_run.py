"""`velocity-platform run --source file` on the real export, end to end, as a user runs it.

A subprocess, because the partitions definition is built when the definitions are imported: the
command must move the first partition date back to 2010 before that, whatever this test process
imported already. The ERP is never started; the command serves the export's SKUs from a WMS
simulator on loopback.
"""

import base64
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from velocity_platform_tests.evaluation.conftest import PROJECT
from velocity_platform_tests.warehouse import open_tables

pytestmark = [pytest.mark.realdata, pytest.mark.integration]

DATES = ["2010-12-01", "2010-12-02"]


@pytest.fixture(scope="module")
def file_run(online_retail_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("file_run")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("VELOCITY_") and k != "DAGSTER_HOME"
    } | {
        "DAGSTER_HOME": str(home),
        "VELOCITY_STATE_DIR": str(root),
        "VELOCITY_DUCKDB_PATH": str(root / "velocity.duckdb"),
        "VELOCITY_STORE_URL": f"sqlite:///{root / 'operational.sqlite'}",
        "VELOCITY_FIRST_PARTITION_DATE": "2025-01-01",  # the default: the command must move it back
        "VELOCITY_MOVE_BUDGET": "50",  # fewer posts to the WMS: the moves themselves are tested elsewhere
    }
    command = [
        sys.executable, "-m", "velocity_platform.cli", "run", "--source", "file", "--path", str(online_retail_path),
        "--preset", "online-retail", "--from", DATES[0], "--to", DATES[-1], "--summary", str(root / "summary.json"),
    ]
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, home, json.loads((root / "summary.json").read_text()), done.stdout


def test_the_run_succeeds_on_2010_dates_and_every_line_is_accounted_for(file_run, online_retail):
    root, _, summary, stdout = file_run
    assert summary["partitions"] == DATES and summary["partitions_succeeded"] == 2
    counts = [online_retail.line_counts(dt.date.fromisoformat(d)) for d in DATES]
    file_lines = sum(c["file_lines"] for c in counts)
    excluded = sum(c["excluded_lines"] for c in counts)
    assert summary["raw_lines"] == file_lines - excluded
    assert summary["validated_lines"] + summary["dead_letter_lines"] == summary["raw_lines"]
    assert re.search(rf"File lines\s+{file_lines:,}\s+= {summary['validated_lines']:,} validated \+ {excluded:,} excluded", stdout)
    assert summary["directives"] == summary["directives_acked"] > 0
    with open_tables(state_dir=root) as con:
        master = con.execute("SELECT count(*), bool_and(cube_is_default) FROM warehouse.sku_master").fetchone()
        shadow = con.execute("SELECT count(*), count(DISTINCT business_date) FROM warehouse.slotting_shadow_report").fetchone()
    assert master == (online_retail.sku_master().height, True)
    assert shadow[0] > 0 and shadow[1] == 2


def test_the_shadow_report_carries_its_figures_and_plots(file_run):
    _, home, _, _ = file_run
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey("slotting_shadow_report"))
            metadata = event.asset_materialization.metadata
            raw = instance.get_latest_materialization_event(dg.AssetKey("raw_transactions")).asset_materialization.metadata
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous
    for key in ("orders", "pick_lines", "travel_current_m", "travel_after_m", "travel_reduction_pct", "moves", "saving_m_per_day_per_move"):
        assert key in metadata, key
    assert metadata["travel_after_m"].value <= metadata["travel_current_m"].value
    # A slotting report: net labor leads (hours, % of walking, cumulative, its plot), then the rack's labor.
    figures = [key for key in metadata if not key.startswith("dagster/")]
    assert figures[:4] == ["net_labor_h", "net_labor_pct_of_walking", "net_labor_cumulative_h", "net_labor_plot"]
    assert figures.index("replenishment_h_per_day") < figures.index("golden_zone_pick_share") < figures.index("orders")
    assert metadata["replenishment_h_per_day"].value > 0  # 0.1 ft3 default cubes in 40 ft3 faces still empty
    assert metadata["golden_zone_pick_share"].value == 1.0  # the one-level layout: a shelf at waist height
    for key in ("net_labor_plot", "abc_pareto", "location_heat_map"):
        markdown = metadata[key]
        assert isinstance(markdown, dg.MarkdownMetadataValue)
        image = re.fullmatch(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown.value)
        assert image and base64.b64decode(image.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert raw["excluded_non_inventory_lines"].value == sum(raw["excluded_by_code"].value.values())
    assert raw["file_lines"].value == raw["dagster/row_count"].value + raw["excluded_non_inventory_lines"].value
