"""Freshness per warehouse: each site's last night is due at the end of its own window, in its
own time zone, and a late one pages once, naming the site."""

import datetime as dt

import dagster as dg
import pytest

from velocity_platform.connectors.state import OperationalStore
from velocity_platform.defs.ops.freshness import site_freshness_sensor
from velocity_platform.defs.partitions import WAREHOUSES_PARTITIONS, SiteDay
from velocity_platform.defs.resources import AlertWebhookResource, OperationsResource, WarehouseResource
from velocity_platform.domain.network import Warehouse, night_due_by
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform_tests.ops.test_alerts import Receiver

CHICAGO = Warehouse(warehouse_id="CHI", timezone="America/Chicago")
BERLIN = Warehouse(warehouse_id="BER", timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "site", "night_of", "deadline"),
    [
        # 06:00 in Berlin (CET) is 05:00 UTC: just before, the night before last is the one due.
        (dt.datetime(2026, 1, 15, 4, 59, tzinfo=dt.UTC), BERLIN, dt.date(2026, 1, 13), dt.datetime(2026, 1, 14, 5, 0, tzinfo=dt.UTC)),
        (dt.datetime(2026, 1, 15, 5, 0, tzinfo=dt.UTC), BERLIN, dt.date(2026, 1, 14), dt.datetime(2026, 1, 15, 5, 0, tzinfo=dt.UTC)),
        # The same instant in Chicago (23:00 the day before): its night of the 13th is due since 12:00 UTC on the 14th.
        (dt.datetime(2026, 1, 15, 5, 0, tzinfo=dt.UTC), CHICAGO, dt.date(2026, 1, 13), dt.datetime(2026, 1, 14, 12, 0, tzinfo=dt.UTC)),
        # Chicago springs forward on 8 March: 02:00 does not exist, the night starts at 03:00 CDT and is due at 07:00 CDT.
        (dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC), CHICAGO, dt.date(2026, 3, 7), dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)),
    ],
)
def test_each_site_is_due_at_the_end_of_its_own_window(now, site, night_of, deadline):
    assert night_due_by(site, now, 2, 4) == (night_of, deadline)


def test_a_late_night_pages_once_naming_its_site_and_a_landed_one_does_not(tmp_path):
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = OperationalStore(store_url)
    for site in (CHICAGO, BERLIN):
        store.register_warehouse(site)
    now = dt.datetime.now(dt.UTC)
    chicago_due, _ = night_due_by(CHICAGO, now, 2, 4)
    berlin_due, _ = night_due_by(BERLIN, now, 2, 4)
    receiver = Receiver()
    with dg.instance_for_test() as instance, BackgroundServer(receiver.app()) as server:
        instance.add_dynamic_partitions(WAREHOUSES_PARTITIONS, ["CHI", "BER"])
        # Berlin's last night landed; Chicago's did not.
        instance.report_runless_asset_event(dg.AssetMaterialization("wms_directive_acks", partition=SiteDay("BER", berlin_due).key))
        resources = {
            "warehouse": WarehouseResource(store_url=store_url),
            "operations": OperationsResource(ui_base_url="http://ui.example"),
            "alert_webhook": AlertWebhookResource(url=f"{server.url}/hook"),
        }

        def tick(cursor):
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                return site_freshness_sensor(context)

        first = tick(None)
        assert first.skip_reason.skip_message == f"late: CHI {chicago_due}"
        [alert] = receiver.messages
        assert (alert["warehouse"], alert["business_date"], alert["kind"]) == ("CHI", chicago_due.isoformat(), "night_late")
        again = tick(first.cursor)
        assert len(receiver.messages) == 1 and again.cursor == first.cursor  # paged once
        instance.report_runless_asset_event(dg.AssetMaterialization("wms_directive_acks", partition=SiteDay("CHI", chicago_due).key))
        assert tick(again.cursor).skip_reason.skip_message == "every site's last night has landed"
    store.dispose()
