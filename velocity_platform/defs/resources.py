"""Resources: thin ConfigurableResources around the connectors. Secrets come from dg.EnvVar."""


import functools

import dagster as dg
from dagster_duckdb_polars import DuckDBPolarsIOManager
from pydantic import Field

from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.state import OperationalStore
from velocity_platform.connectors.wms import WmsClient
from velocity_platform.settings import Settings


class ErpResource(dg.ConfigurableResource):
    """The ERP's transaction and SKU API."""

    base_url: str
    token: str = Field(description="Bearer token; set VELOCITY_ERP_TOKEN, never in code")
    timeout_s: float = 30.0
    page_limit: int = 5000

    def client(self) -> ErpClient:
        return ErpClient(self.base_url, self.token, timeout_s=self.timeout_s, page_limit=self.page_limit)


class WmsResource(dg.ConfigurableResource):
    """The WMS's location, assignment and slotting-directive API."""

    base_url: str
    token: str = Field(description="Bearer token; set VELOCITY_WMS_TOKEN, never in code")
    timeout_s: float = 30.0

    def client(self) -> WmsClient:
        return WmsClient(self.base_url, self.token, timeout_s=self.timeout_s)


@functools.cache
def _store(url: str) -> OperationalStore:
    # One engine (and one migration check) per process and URL, not one per asset.
    return OperationalStore(url)


class OperationalStoreResource(dg.ConfigurableResource):
    """Watermarks, the WMS outbox and the push log (SQLite by default, PostgreSQL in production)."""

    url: str

    def store(self) -> OperationalStore:
        return _store(self.url)


class WarehouseResource(dg.ConfigurableResource):
    """Facts and policies of the warehouse that several stages share."""

    timezone: str = "Europe/London"
    move_budget: int = 200
    dlq_rate_max: float = 0.001
    hysteresis_days: int = 2


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    settings = settings or Settings.from_env()
    return {
        "io_manager": DuckDBPolarsIOManager(database=settings.duckdb_path, schema="velocity"),
        "erp": ErpResource(base_url=settings.erp_url, token=dg.EnvVar("VELOCITY_ERP_TOKEN")),
        "wms": WmsResource(base_url=settings.wms_url, token=dg.EnvVar("VELOCITY_WMS_TOKEN")),
        "state_store": OperationalStoreResource(url=settings.store_url),
        "warehouse": WarehouseResource(timezone=settings.timezone, move_budget=settings.move_budget),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
