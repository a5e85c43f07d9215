"""One exception service for a network: two registered sites in different time zones, one
process, one loop. New SKUs ordered at each site get their first slot at their own site's WMS
only, exactly once; each site reads only its own expected rates and its own ERP documents, its
watermarks advance on its own documents, and /metrics shows both sites' figures, labelled."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest

from velocity_platform.connectors import delta_store
from velocity_platform.connectors.state import ACKED, OperationalStore
from velocity_platform.defs.resources import ErpResource, WmsResource
from velocity_platform.deltas.service import DeltaService, network_services, run_sites
from velocity_platform.domain.network import Warehouse
from velocity_platform.settings import Settings
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.serve import free_port
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.deltas.helpers import FAST_HTTP, FAST_HTTP_ENV, service_settings, wait_until
from velocity_platform_tests.warehouse import tables_at

pytestmark = pytest.mark.integration

ZONES = {"WH-01": "Europe/London", "WH-02": "America/Chicago"}
LAYOUTS = {"WH-01": (10, 20, 1), "WH-02": (8, 15, 2)}
NEW_PER_SITE = 3
COMMAND = [str(Path(sys.executable).parent / "velocity-platform"), "deltas"]


class NetworkThread:
    """`run_sites` for every registered site on its own loop in a thread (what the command runs)."""

    def __init__(self, sites: list[DeltaService]):
        self.sites = sites
        self.ready = threading.Event()
        self.ready_line = ""
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _said(self, line: str) -> None:
        self.ready_line = line
        self.ready.set()

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await run_sites(self.sites, self._stop, self._said)

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001  # surfaced by stop()
            self.error = exc
            self.ready.set()

    def __enter__(self) -> NetworkThread:
        self._thread.start()
        assert self.ready.wait(60), "the service did not get ready"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self.error:
            raise self.error


def _rates_of_each_site(root) -> pl.DataFrame:
    """sku_velocity as the nightly run writes it for a network: one table, a row per site and SKU,
    the two sites with different rates for the same SKUs (so a mix would show)."""
    skus = [f"SKU-{i:06d}" for i in range(1, 101)]
    velocity = pl.DataFrame(
        {
            "business_date": [dt.date(2026, 2, 9)] * 200,
            "warehouse_id": ["WH-01"] * 100 + ["WH-02"] * 100,
            "sku_id": skus * 2,
            "expected_pick_lines_per_day": [1.0] * 100 + [40.0] * 100,
        }
    )
    with tables_at(root).session() as tables:
        tables.replace("sku_velocity", velocity, {"WH-01": [dt.date(2026, 2, 9)], "WH-02": [dt.date(2026, 2, 9)]})
    return velocity


def _order_new_skus(erp: httpx.Client, wms: httpx.Client, wid: str, skus: list[str]) -> dict:
    """New products in the ERP's master, stocked at `wid`'s WMS only, and one order for them
    committed at `wid`; returns the committed document (with its created_at)."""
    for sku in skus:
        erp.post("/v1/skus", json={"sku_id": sku}).raise_for_status()
        wms.post("/v1/items", params={"warehouse_id": wid}, json={"sku_id": sku}).raise_for_status()
    answer = erp.post(
        "/v1/transactions",
        json={
            "txn_id": f"SO-NET-{wid}-{skus[0]}",
            "txn_type": "ORDER",
            "customer_id": "C-0001",
            "warehouse_id": wid,
            "event_ts": dt.datetime.now(dt.UTC).isoformat(),
            "lines": [{"line_no": n, "sku_id": sku, "quantity": 1, "uom": "EA"} for n, sku in enumerate(skus, start=1)],
        },
    )
    answer.raise_for_status()
    return answer.json()


def _slotted_at_own_site(wms: httpx.Client, new: dict[str, list[str]]) -> bool:
    """Every SKU of `new` has a location at its own site and at no other."""
    for wid, skus in new.items():
        for sku in skus:
            records = wms.get("/v1/slotting/assignments", params={"sku_id": sku}).json()["records"]
            if [r["warehouse_id"] for r in records] != [wid]:
                return False
    return True


def _network_configs() -> tuple[ErpConfig, WmsConfig]:
    erp = ErpConfig(**WORLD, warehouses=",".join(f"{w}@{z}" for w, z in ZONES.items()), token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, warehouses=",".join(f"{w}@{'x'.join(map(str, d))}" for w, d in LAYOUTS.items()), token=WMS_TOKEN)
    return erp, wms


def _register_sites(store: OperationalStore) -> None:
    for wid, zone in ZONES.items():
        aisles, bays, levels = LAYOUTS[wid]
        store.register_warehouse(Warehouse(warehouse_id=wid, timezone=zone, aisles=aisles, bays=bays, levels=levels))


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)  # SQLite hands back naive UTC


def _sample(text: str, name: str, **labels: str) -> float | None:
    """A sample's value from the exposition text, by name and labels (any label order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        raw = line[len(name) + 1 : line.index("}")]
        got = dict(part.split("=", 1) for part in raw.split(","))
        if all(got.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_one_process_follows_every_site_and_each_directive_reaches_its_own_site_once(tmp_path):
    with platform_environment(tmp_path, *_network_configs()) as platform:
        settings = Settings.from_env()
        store = OperationalStore(settings.store_url)
        _register_sites(store)
        velocity = _rates_of_each_site(tmp_path)
        port = free_port()
        services = network_services(
            settings,
            service_settings(metrics_port=port),
            ErpResource(base_url=settings.erp_url, token=os.environ["VELOCITY_ERP_TOKEN"], **FAST_HTTP),
            WmsResource(base_url=settings.wms_url, token=os.environ["VELOCITY_WMS_TOKEN"], store_url=settings.store_url, **FAST_HTTP),
            store,
        )
        by_site = {s.warehouse_id: s for s in services}
        wms = httpx.Client(base_url=platform.wms_url, headers={"Authorization": f"Bearer {WMS_TOKEN}"}, timeout=10)
        erp = httpx.Client(base_url=platform.erp_url, headers={"Authorization": f"Bearer {ERP_TOKEN}"}, timeout=10)
        try:
            assert sorted(by_site) == sorted(ZONES)
            assert {s.warehouse_id: s.timezone for s in services} == ZONES
            with NetworkThread(services) as running:
                assert "deltas: ready" in running.ready_line and "2 warehouse(s): WH-01, WH-02" in running.ready_line

                # Each site read its own rates from the one table, never the other site's rows.
                for wid, service in by_site.items():
                    own = velocity.filter(pl.col("warehouse_id") == wid).select("sku_id", "expected_pick_lines_per_day")
                    assert service.rates.velocity.sort("sku_id").equals(own.sort("sku_id"))

                started = {wid: delta_store.read_watermark(s.store) for wid, s in by_site.items()}
                new = {wid: [f"NEW-{wid}-{n}" for n in range(NEW_PER_SITE)] for wid in ZONES}
                committed = {wid: [_order_new_skus(erp, wms, wid, skus)] for wid, skus in new.items()}
                wait_until(lambda: _slotted_at_own_site(wms, new), "every new SKU slotted at its own site")
                wait_until(lambda: delta_store.pending_count(store) == 0, "the outbox to settle")

                stats = wms.get("/v1/stats").json()
                assert stats["rejected"] == 0  # no directive went to the wrong site or named none
                assert stats["applied_per_key"] and set(stats["applied_per_key"].values()) == {1}
                for wid, skus in new.items():
                    rows = [r for r in store.for_site(wid).outbox() if r.origin == delta_store.ORIGIN]
                    assert sorted(r.sku_id for r in rows) == sorted(skus)
                    assert {r.status for r in rows} == {ACKED} and {r.warehouse_id for r in rows} == {wid}
                    assert stats["warehouses"][wid]["applied"] == len(skus)
                    # The directive's date is the site's own business day.
                    zone = ZoneInfo(ZONES[wid])
                    for r in rows:
                        assert r.business_date in {_utc(m).astimezone(zone).date() for m in (r.source_committed_at, r.acked_at)}
                    # Applied under the site's keys: the WMS counts them per site.
                    keys = {k.split("/", 1)[1] for k in stats["applied_per_key"] if k.startswith(f"{wid}/")}
                    assert keys == {r.directive_id for r in rows}

                # Each site's watermark passed its own commit.
                for wid, service in by_site.items():
                    created = dt.datetime.fromisoformat(committed[wid][0]["created_at"].replace("Z", "+00:00"))
                    assert delta_store.read_watermark(service.store) >= created > started[wid]
                    assert delta_store.settled_watermark(service.store) >= created
                # WH-01 (the default site) keeps the one-warehouse names; WH-02's carry its id.
                assert store.get_watermark(delta_store.READ_WATERMARK) is not None
                assert store.get_watermark(f"{delta_store.READ_WATERMARK}:WH-02") is not None

                # A commit at one site moves that site's watermark only.
                before = delta_store.read_watermark(by_site["WH-01"].store)
                late = erp.post(
                    "/v1/transactions",
                    json={
                        "txn_id": "SO-NET-WH-02-2",
                        "txn_type": "ORDER",
                        "customer_id": "C-0001",
                        "warehouse_id": "WH-02",
                        "event_ts": dt.datetime.now(dt.UTC).isoformat(),
                        "lines": [{"line_no": 1, "sku_id": new["WH-02"][0], "quantity": 2, "uom": "EA"}],
                    },
                ).json()
                late_at = dt.datetime.fromisoformat(late["created_at"].replace("Z", "+00:00"))
                wait_until(lambda: delta_store.read_watermark(by_site["WH-02"].store) >= late_at, "WH-02 to read its commit")
                assert delta_store.read_watermark(by_site["WH-01"].store) == before < late_at

                # One endpoint, every site's figures under its label.
                def scraped() -> str | None:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                    counts = [_sample(text, "delta_sync_latency_seconds_count", warehouse=wid) for wid in ZONES]
                    return text if all(c is not None and c >= 1 for c in counts) else None

                text = wait_until(scraped, "acknowledgements of both sites in the latency histogram")
                for wid, skus in new.items():
                    assert _sample(text, "delta_exceptions_total", kind="first_slot", warehouse=wid) == len(skus)
                    assert _sample(text, "delta_documents_total", warehouse=wid) >= 1
        finally:
            wms.close()
            erp.close()
            store.dispose()


def test_the_command_follows_every_registered_site_and_stops_cleanly(tmp_path):
    """`velocity-platform deltas` itself (serve_forever): the registry read at start, one process
    for both sites, its ready and stopped lines naming them."""
    with platform_environment(tmp_path, *_network_configs()) as platform:
        store = OperationalStore(Settings.from_env().store_url)
        _register_sites(store)
        env = {
            **os.environ,
            **FAST_HTTP_ENV,
            "VELOCITY_DELTAS_METRICS_PORT": "0",
            "VELOCITY_DELTAS_LONG_POLL_S": "1",
            "VELOCITY_DELTAS_REPORT_INTERVAL_S": "3600",
        }
        env.pop("DAGSTER_HOME")  # no runless events: the reporting is tested elsewhere
        lines: list[str] = []
        process = subprocess.Popen(COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        wms = httpx.Client(base_url=platform.wms_url, headers={"Authorization": f"Bearer {WMS_TOKEN}"}, timeout=10)
        erp = httpx.Client(base_url=platform.erp_url, headers={"Authorization": f"Bearer {ERP_TOKEN}"}, timeout=10)
        try:
            ready = wait_until(lambda: [x for x in lines if "deltas: ready" in x] or process.poll() is not None, "the ready line")
            assert process.poll() is None, f"velocity-platform deltas exited with {process.returncode}"
            assert "following 2 warehouse(s): WH-01, WH-02" in ready[0]
            new = {wid: [f"NEW-CMD-{wid}"] for wid in ZONES}
            for wid, skus in new.items():
                _order_new_skus(erp, wms, wid, skus)
            wait_until(lambda: _slotted_at_own_site(wms, new), "each site's new SKU slotted at its own site")
            wait_until(lambda: delta_store.pending_count(store) == 0, "the outbox to settle")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0  # a clean stop
            reader.join(10)
            wms.close()
            erp.close()
        stats = httpx.get(f"{platform.wms_url}/v1/stats", headers={"Authorization": f"Bearer {WMS_TOKEN}"}).json()
        assert stats["rejected"] == 0 and set(stats["applied_per_key"].values()) == {1}
        stopped = [x for x in lines if "deltas: stopped" in x]
        assert stopped and "WH-01 read through" in stopped[0] and "WH-02 read through" in stopped[0]
        for wid in ZONES:
            assert delta_store.read_watermark(store.for_site(wid)) is not None
        store.dispose()
