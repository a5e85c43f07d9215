"""Resources: thin ConfigurableResources around the connectors. Secrets come from dg.EnvVar."""


import functools
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler
from pydantic import Field

from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.state import OperationalStore
from velocity_platform.connectors.wms import WmsClient
from velocity_platform.settings import Settings


class _PolarsTablesHandler(DuckDBPolarsTypeHandler):
    """The stock polars handler, except that an empty frame still creates its (empty) table.

    The stock handler skips empty frames, so a day with no dead letters or no directives would
    leave no table and the first reader downstream would fail on a missing table instead of
    reading zero rows.
    """

    def handle_output(self, context, table_slice, obj: pl.DataFrame, connection):
        if obj.is_empty():
            empty_arrow = obj.to_arrow()  # noqa: F841  # referenced by name in the SQL below
            connection.execute(f"create schema if not exists {table_slice.schema}")
            connection.execute(
                f"create table if not exists {table_slice.schema}.{table_slice.table} as select * from empty_arrow"
            )
            context.add_output_metadata({"row_count": 0})
            return
        super().handle_output(context, table_slice, obj, connection)


class WarehouseTablesIOManager(DuckDBPolarsIOManager):
    """DuckDB tables for every asset (one writer at a time: see the duckdb pool)."""

    @staticmethod
    def type_handlers():
        return [_PolarsTablesHandler()]


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
    Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "io_manager": WarehouseTablesIOManager(database=settings.duckdb_path, schema="warehouse"),
        "erp": ErpResource(base_url=settings.erp_url, token=dg.EnvVar("VELOCITY_ERP_TOKEN")),
        "wms": WmsResource(base_url=settings.wms_url, token=dg.EnvVar("VELOCITY_WMS_TOKEN")),
        "state_store": OperationalStoreResource(url=settings.store_url),
        "warehouse": WarehouseResource(timezone=settings.timezone, move_budget=settings.move_budget),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
