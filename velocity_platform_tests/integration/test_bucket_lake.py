"""The whole graph on a lake in an S3 bucket (moto's S3 server on loopback): the same nights as
on a folder, every table in the bucket, nothing on the local disk, the directives sent once."""

import datetime as dt
import os
from pathlib import Path

import pytest

from velocity_platform.batch import business_dates, run_range, summarize
from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.object_store import S3Lake
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.warehouse import open_tables

pytestmark = pytest.mark.integration

DATES = business_dates(dt.date(2026, 2, 5), dt.date(2026, 2, 6))


@pytest.fixture(scope="module")
def two_nights_on_a_bucket(tmp_path_factory, s3_server):
    root = tmp_path_factory.mktemp("bucket-platform")
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with platform_environment(root, erp, wms) as platform:
        uri = s3_server.new_lake()
        os.environ.update({**s3_server.environment, "VELOCITY_LAKE_PATH": uri})  # restored by platform_environment
        yield platform, uri, run_range(DATES)


def test_every_night_succeeds_and_reconciles_on_the_bucket(two_nights_on_a_bucket):
    platform, _, outcomes = two_nights_on_a_bucket
    assert [o.success for o in outcomes] == [True, True], [o.error for o in outcomes]
    assert all(not o.checks_failed for o in outcomes), [o.checks_failed for o in outcomes]
    with ErpClient(platform.erp_url, ERP_TOKEN) as erp:
        erp_lines = sum(erp.count_lines(d) for d in DATES)
    summary = summarize(DATES, outcomes, erp_lines, platform.settings)
    assert summary["erp_lines"] == summary["raw_lines"] == summary["validated_lines"] + summary["dead_letter_lines"] > 0
    assert summary["directives"] == summary["directives_acked"] > 0


def test_the_tables_are_in_the_bucket_and_nowhere_on_disk(two_nights_on_a_bucket):
    platform, uri, _ = two_nights_on_a_bucket
    assert platform.settings.lake_path == uri
    held = S3Lake(uri).table_folders()
    assert {"raw_transactions", "validated_transactions", "sku_velocity", "slotting_directives", "wms_directive_acks"} <= set(held)
    assert not (Path(platform.root) / "lake").exists()
    with open_tables(platform.settings) as con:
        by_date = dict(con.execute("SELECT business_date, count(*) FROM warehouse.raw_transactions GROUP BY 1").fetchall())
    assert sorted(by_date) == DATES


def test_each_directive_reached_the_wms_once(two_nights_on_a_bucket):
    platform, _, _ = two_nights_on_a_bucket
    with open_tables(platform.settings) as con:
        planned = {r[0] for r in con.execute("SELECT directive_id FROM warehouse.slotting_directives").fetchall()}
    applied = platform.wms_stats()["applied_per_key"]
    assert planned and set(applied) == planned and set(applied.values()) == {1}
