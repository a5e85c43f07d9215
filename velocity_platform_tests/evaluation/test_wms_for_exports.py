"""The WMS simulator holding the SKUs of an export (for `run --source file`)."""

import datetime as dt

import orjson

from velocity_platform.simulators.wms import WmsConfig, WmsSimulator

CATALOG = [("85123A", "2010-12-01"), ("71053", "2010-12-01"), ("22139", "2011-06-05"), ("85123A", "2010-12-01")]


def test_it_slots_the_skus_live_at_its_start_and_accepts_first_slots_for_later_ones():
    wms = WmsSimulator(WmsConfig(sku_catalog=CATALOG, start=dt.date(2011, 6, 1), aisles=2, bays_per_side=3))
    assert (wms.aisles, wms.bays, wms.levels) == (2, 3, 1)
    slotted = {r["sku_id"]: r["location_id"] for r in wms.assignments_page({})["records"]}
    assert set(slotted) == {"85123A", "71053"}  # 22139 is introduced after the start
    free = next(r["location_id"] for r in wms.location_rows if r["location_id"] not in slotted.values())
    directive = {
        "directive_id": "a" * 32, "business_date": "2011-06-05", "sku_id": "22139", "from_location": None,
        "to_location": free, "reason": "new SKU", "expected_saving_m_per_day": 1.0,
    }
    status, answer = wms.submit("a" * 32, orjson.dumps(directive))
    assert (status, answer["status"]) == (201, "applied")
    unknown = {**directive, "directive_id": "b" * 32, "sku_id": "99999"}
    status, answer = wms.submit("b" * 32, orjson.dumps(unknown))
    assert status == 422 and "unknown sku_id '99999'" in answer["details"]
