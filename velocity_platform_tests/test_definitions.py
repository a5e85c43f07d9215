"""The code location loads, as `dg check defs` and `dagster dev -w workspace.yaml` load it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from velocity_platform.definitions import defs

PROJECT = Path(__file__).resolve().parents[1]
EXPECTED_ASSETS = {
    "raw_transactions",
    "dead_letter_transactions",
    "validated_transactions",
    "sku_master",
    "wms_locations",
    "sales_history",
    "daily_sku_demand",
    "sku_velocity",
    "slotting_directives",
    "wms_directive_acks",
}


def test_every_asset_of_the_architecture_is_partitioned_by_date_and_warehouse():
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS | {"slotting_shadow_report", "network_daily_rollup"} <= keys
    # The SKU master is the network's (one catalogue); everything else is a business date of one site.
    partitioned = {graph.get(dg.AssetKey(k)).partitions_def for k in (EXPECTED_ASSETS | {"slotting_shadow_report"}) - {"sku_master"}}
    assert graph.get(dg.AssetKey("sku_master")).partitions_def is None
    [site_days] = partitioned
    assert isinstance(site_days, dg.MultiPartitionsDefinition)
    dimensions = {d.name: d.partitions_def for d in site_days.partitions_defs}
    assert isinstance(dimensions["date"], dg.DailyPartitionsDefinition)
    assert isinstance(dimensions["warehouse"], dg.DynamicPartitionsDefinition) and dimensions["warehouse"].name == "warehouses"
    # The network's roll-up: the same dates, every site of a date.
    rollup = graph.get(dg.AssetKey("network_daily_rollup")).partitions_def
    assert rollup == dimensions["date"]


def test_gating_checks_are_blocking():
    blocking = {
        spec.key.name
        for assets_def in defs().assets or []
        if isinstance(assets_def, dg.AssetsDefinition)
        for spec in assets_def.check_specs
        if spec.blocking
    }
    assert {"reconciles_with_erp", "dlq_rate_within_limit", "txn_line_key_unique", "location_capacity_respected"} <= blocking


def test_dg_check_defs_passes():
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.prefix))}
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "dg"), "check", "defs"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_workspace_points_at_the_same_module():
    text = (PROJECT / "workspace.yaml").read_text()
    assert "velocity_platform.definitions" in text
