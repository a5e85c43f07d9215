"""`run --source file --preset online-retail-network`: the export's two sites (UK, EU) each run
from their own lines through the whole graph, each site's WMS stocking what that site sells."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pytest

from velocity_platform.connectors.files import preset, read_export
from velocity_platform_tests.evaluation.conftest import PROJECT
from velocity_platform_tests.warehouse import open_tables

pytestmark = [pytest.mark.realdata, pytest.mark.integration]

DATES = ["2010-12-01", "2010-12-02"]


def test_each_site_of_the_export_runs_from_its_own_lines_and_reconciles(online_retail_path, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VELOCITY_") and k != "DAGSTER_HOME"} | {
        "DAGSTER_HOME": str(home),
        "VELOCITY_STATE_DIR": str(tmp_path),
        "VELOCITY_MOVE_BUDGET": "50",
    }
    command = [
        sys.executable, "-m", "velocity_platform.cli", "run", "--source", "file", "--path", str(online_retail_path),
        "--preset", "online-retail-network", "--from", DATES[0], "--to", DATES[-1], "--summary", str(tmp_path / "summary.json"),
    ]
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    export = read_export(online_retail_path, preset("online-retail-network"))
    sites = summary["warehouses"]
    assert sorted(sites) == ["EU", "UK"]
    for site, figures in sites.items():
        of_site = export.of_site(site)
        expected = sum(of_site.line_counts(dt.date.fromisoformat(d))["raw_lines"] for d in DATES)
        assert figures["raw_lines"] == figures["erp_lines"] == expected, site
        assert figures["validated_lines"] + figures["dead_letter_lines"] == figures["raw_lines"], site
        assert figures["reconciled"] and figures["partitions_succeeded"] == len(DATES), site
        assert figures["directives"] == figures["directives_acked"], site
    assert summary["raw_lines"] == sum(f["raw_lines"] for f in sites.values())
    with open_tables(state_dir=tmp_path) as con:
        by_site = dict(con.execute("SELECT warehouse_id, count(*) FROM warehouse.raw_transactions GROUP BY 1").fetchall())
        moved_elsewhere = con.execute(
            "SELECT count(*) FROM warehouse.slotting_directives WHERE split_part(to_location, '/', 1) <> warehouse_id"
        ).fetchone()[0]
    assert by_site == {site: figures["raw_lines"] for site, figures in sites.items()}
    assert moved_elsewhere == 0  # each site's directives name its own locations


def test_a_site_the_export_does_not_hold_is_refused_before_anything_runs(online_retail_path, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VELOCITY_") and k != "DAGSTER_HOME"} | {"VELOCITY_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable, "-m", "velocity_platform.cli", "run", "--source", "file", "--path", str(online_retail_path),
            "--preset", "online-retail-network", "--from", DATES[0], "--to", DATES[0], "--warehouse", "WH-01",
        ],
        env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "velocity-platform run: --warehouse WH-01: the export's lines belong to EU, UK"
