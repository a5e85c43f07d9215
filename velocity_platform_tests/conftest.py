"""Shared fixtures: a platform environment (DuckDB file, SQLite store, Dagster home) and live simulators."""

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pytest

from velocity_platform.batch import ensure_warehouse_partitions
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID
from velocity_platform.settings import Settings
from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.object_store import S3Server
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform.simulators.wms import WmsConfig, create_wms_app

PROJECT = Path(__file__).resolve().parents[1]
ERP_TOKEN = "erp-test-token"
WMS_TOKEN = "wms-test-token"


@dataclass
class Platform:
    root: Path
    erp_url: str
    wms_url: str
    erp_app: object
    wms_app: object
    erp_server: BackgroundServer | None = None  # to take the ERP down (stop) and bring it back on its port

    @property
    def settings(self) -> Settings:
        return Settings.from_env()

    def erp_stats(self) -> dict:
        return httpx.get(f"{self.erp_url}/v1/stats", headers={"Authorization": f"Bearer {ERP_TOKEN}"}).json()

    def wms_stats(self) -> dict:
        return httpx.get(f"{self.wms_url}/v1/stats", headers={"Authorization": f"Bearer {WMS_TOKEN}"}).json()


@contextmanager
def platform_environment(root: Path, erp: ErpConfig, wms: WmsConfig) -> Iterator[Platform]:
    """Simulators on free loopback ports and every VELOCITY_* / DAGSTER_HOME variable pointed at `root`."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    erp_app, wms_app = create_erp_app(erp), create_wms_app(wms)
    saved = dict(os.environ)
    with BackgroundServer(erp_app) as erp_server, BackgroundServer(wms_app) as wms_server:
        os.environ.update(
            {
                "DAGSTER_HOME": str(home),
                "VELOCITY_DUCKDB_PATH": str(root / "velocity.duckdb"),
                "VELOCITY_LAKE_PATH": str(root / "lake"),
                "VELOCITY_STORE_URL": f"sqlite:///{root / 'operational.sqlite'}",
                "VELOCITY_ERP_URL": erp_server.url,
                "VELOCITY_WMS_URL": wms_server.url,
                "VELOCITY_ERP_TOKEN": erp.token,
                "VELOCITY_WMS_TOKEN": wms.token,
            }
        )
        # The default site is a warehouse partition of the instance, as the registry sensor (or a
        # command) makes it before any run; a test may launch a job straight away.
        with dg.DagsterInstance.get() as instance:
            ensure_warehouse_partitions(instance, [DEFAULT_WAREHOUSE_ID])
        try:
            yield Platform(root, erp_server.url, wms_server.url, erp_app, wms_app, erp_server)
        finally:
            os.environ.clear()
            os.environ.update(saved)


WORLD = {"seed": 11, "skus": 300, "start": dt.date(2026, 1, 1), "days": 40}


@pytest.fixture(scope="module")
def small_platform(tmp_path_factory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    # 2,500 lines a day: the default 0.05% malformed lines give one or two dead letters a day,
    # so the dead-letter path runs while the 0.1% gate holds.
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    wms = WmsConfig(**WORLD, token=WMS_TOKEN)
    with platform_environment(root, erp, wms) as platform:
        yield platform


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture built once for its module (or class), which its module's
    other tests share; a session fixture is built once per worker anyway."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True
    return any(
        definition.scope in ("module", "class", "package")
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs `-n 4 --dist loadgroup`) a test module that shares a
    module-scoped fixture stays on one worker, so its simulators and Dagster homes are built once
    (the tests of any other module go to whichever worker is free); the production
    tests share one stack (webserver, daemon, code server), so they stay together too.

    First among the hooks: xdist turns the marks into groups in its own hook of the same name,
    and without `tryfirst` it ran before these marks existed (each test its own group, and a
    module's two-minute deployment built once on each worker).

    The groups with a `slow(minutes=N)` mark go first, the slowest first (with
    `--no-loadscope-reorder` xdist hands the groups out in this order): a seven-minute module
    that started last would end the session minutes after every other worker had finished."""
    groups = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        if "/production/" in module:
            group = "production-stack"
        elif _shares_a_module_fixture(item):
            group = module
        else:  # each test builds its own world: any worker may take it
            group = item.nodeid
        groups[item] = group
        item.add_marker(pytest.mark.xdist_group(group))
    minutes: dict[str, float] = {}
    for item, group in groups.items():
        if (slow := item.get_closest_marker("slow")) is not None:
            minutes[group] = max(minutes.get(group, 0.0), slow.kwargs["minutes"])
    items.sort(key=lambda item: -minutes.get(groups[item], 0.0))


# --- an S3-compatible store on loopback (moto's server), for the lake on a bucket ---


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_lake(s3_server, monkeypatch) -> str:
    """A fresh bucket's lake URI, with the endpoint and keys in the environment (processes the
    test spawns inherit them)."""
    for variable, value in s3_server.environment.items():
        monkeypatch.setenv(variable, value)
    return s3_server.new_lake()
