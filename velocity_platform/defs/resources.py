"""Resources: thin ConfigurableResources around the connectors. Secrets come from dg.EnvVar."""


import functools
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import Field

from velocity_platform.connectors.erp import AsyncErpClient, ErpClient
from velocity_platform.connectors.files import FileExport, FileSourceError, preset, read_export
from velocity_platform.connectors.http import RetryPolicy, UpstreamApiClient, UpstreamLimits
from velocity_platform.connectors.state import OperationalStore
from velocity_platform.connectors.webhook import AlertWebhook
from velocity_platform.connectors.wms import AsyncWmsClient, WmsClient
from velocity_platform.defs.tables import RUN_OUTPUTS, WarehouseTables, WarehouseTablesIOManager
from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID, Warehouse
from velocity_platform.settings import (
    ALERT_WEBHOOK_ENV,
    ERP_TOKEN_ENV,
    NIGHTLY_START_HOUR,
    WMS_TOKEN_ENV,
    HttpSettings,
    OperationsSettings,
    Settings,
    SlottingSettings,
    SourceSettings,
    resource_field,
)


UpstreamClientT = TypeVar("UpstreamClientT", bound=UpstreamApiClient)


class _UpstreamResource(dg.ConfigurableResource):
    """What every HTTP upstream shares: timeouts, retries, rate limit, concurrency, breaker, TLS."""

    base_url: str
    # The knobs a setting also gives (one value for both upstreams): default and meaning are the setting's.
    timeout_s: float = resource_field(HttpSettings, "timeout_s")
    verify_tls: bool = Field(default=True, description="Verify the upstream's TLS certificate; keep on")
    allow_plain_http: bool = Field(default=False, description="Allow http:// to a non-loopback host (token in clear)")
    max_response_bytes: int = resource_field(HttpSettings, "max_response_bytes")
    max_attempts: int = resource_field(HttpSettings, "max_attempts")
    initial_backoff_s: float = resource_field(HttpSettings, "initial_backoff_s")
    max_backoff_s: float = resource_field(HttpSettings, "max_backoff_s")
    max_retry_after_s: float = Field(default=30.0, description="Longest Retry-After we honour")
    max_unreadable_attempts: int = Field(default=3, description="Fetches of an answer whose body cannot be read")
    requests_per_second: float = resource_field(HttpSettings, "requests_per_second")
    max_concurrent_requests: int = resource_field(HttpSettings, "max_concurrent_requests")
    breaker_fail_max: int = resource_field(HttpSettings, "breaker_fail_max")
    breaker_reset_s: float = resource_field(HttpSettings, "breaker_reset_s")
    page_limit: int = resource_field(HttpSettings, "page_limit")
    page_limit_max: int = resource_field(HttpSettings, "page_limit_max")

    def _retry(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts, self.initial_backoff_s, self.max_backoff_s, self.max_retry_after_s, self.max_unreadable_attempts
        )

    def _limits(self) -> UpstreamLimits:
        return UpstreamLimits(
            self.requests_per_second, self.max_concurrent_requests, self.breaker_fail_max, self.breaker_reset_s
        )

    def _connect(self, client_type: type[UpstreamClientT]) -> UpstreamClientT:
        """The connector's client with this resource's settings (the token is the subclass's field)."""
        return client_type(
            self.base_url,
            self.token,
            timeout_s=self.timeout_s,
            page_limit=self.page_limit,
            page_limit_max=self.page_limit_max,
            max_response_bytes=self.max_response_bytes,
            verify_tls=self.verify_tls,
            allow_plain_http=self.allow_plain_http,
            retry=self._retry(),
            limits=self._limits(),
        )


class ErpResource(_UpstreamResource):
    """The ERP's transaction and SKU API."""

    token: str = Field(description="Bearer token; set VELOCITY_ERP_TOKEN, never in code")

    def client(self) -> ErpClient:
        return self._connect(ErpClient)

    def async_client(self) -> AsyncErpClient:
        """The same client for coroutines (the exception service): same policy, same guard."""
        return self._connect(AsyncErpClient)


class WmsResource(_UpstreamResource):
    """The WMS's location, assignment and slotting-directive API; scoped to a site (`for_site`),
    that site's WMS (its registered URL, else the deployment's) and its locations only."""

    token: str = Field(description="Bearer token; set VELOCITY_WMS_TOKEN, never in code")
    push_batch_size: int = resource_field(Settings, "wms_push_batch_size")
    store_url: str | None = Field(default=None, description="The operational store holding the registry of sites")
    warehouse_id: str | None = Field(default=None, description="The site the client asks for (None: no site filter)")

    def for_site(self, warehouse_id: str) -> "WmsResource":
        site = site_facts(self.store_url, warehouse_id)
        return self.model_copy(update={"warehouse_id": warehouse_id, "base_url": site.wms_url or self.base_url})

    def client(self) -> WmsClient:
        return self._connect(WmsClient)

    def async_client(self) -> AsyncWmsClient:
        return self._connect(AsyncWmsClient)


@functools.cache
def _store(url: str) -> OperationalStore:
    # One engine (and one migration check) per process and URL, not one per asset.
    return OperationalStore(url)


class OperationalStoreResource(dg.ConfigurableResource):
    """Watermarks, the WMS outbox, the push log and the registry of sites (SQLite by default,
    PostgreSQL in production); scoped to a site (`for_site`), that site's directives only."""

    url: str
    warehouse_id: str | None = None

    def for_site(self, warehouse_id: str) -> "OperationalStoreResource":
        return self.model_copy(update={"warehouse_id": warehouse_id})

    def store(self) -> OperationalStore:
        store = _store(self.url)
        return store.for_site(self.warehouse_id) if self.warehouse_id else store


def registered_sites(store_url: str | None) -> list[Warehouse]:
    """The registered sites; none registered (or no store): the one default site is implied."""
    return _store(store_url).registered_warehouses() if store_url else []


def site_facts(store_url: str | None, warehouse_id: str, default_timezone: str = "Etc/UTC") -> Warehouse:
    """A site's registered facts; a site not registered (the default one of a deployment that
    registered none) has the deployment's settings (time zone, routing, WMS URL)."""
    for site in registered_sites(store_url):
        if site.warehouse_id == warehouse_id:
            return site
    return Warehouse(warehouse_id=warehouse_id, timezone=default_timezone)


class WarehouseResource(dg.ConfigurableResource):
    """Facts and policies of the warehouse that several stages share; scoped to a site
    (`for_site`), its registered time zone."""

    timezone: str = resource_field(Settings, "timezone")
    move_budget: int = resource_field(Settings, "move_budget")
    dlq_rate_max: float = resource_field(Settings, "dlq_rate_max")
    hysteresis_days: int = resource_field(Settings, "hysteresis_days")
    xyz_min_weeks: int = resource_field(Settings, "xyz_min_weeks")
    store_url: str | None = Field(default=None, description="The operational store holding the registry of sites")
    warehouse_id: str = Field(default=DEFAULT_WAREHOUSE_ID, description="The site these facts are of")

    def for_site(self, warehouse_id: str) -> "WarehouseResource":
        site = site_facts(self.store_url, warehouse_id, self.timezone)
        return self.model_copy(update={"warehouse_id": warehouse_id, "timezone": site.timezone})

    def network(self) -> list[Warehouse]:
        """The network's sites: the registered ones, else the one default site on the settings."""
        return registered_sites(self.store_url) or [Warehouse(warehouse_id=DEFAULT_WAREHOUSE_ID, timezone=self.timezone)]


def _token(settings: Settings, variable: str) -> str | dg.EnvVar:
    """A stand-in token a command gave for a simulator it started, else the variable through dg.EnvVar."""
    return settings.token(variable) or dg.EnvVar(variable)


def build_resources(settings: Settings) -> dict[str, object]:
    """Every resource of the code location, from the settings (definitions.py builds them once)."""
    Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    RUN_OUTPUTS.budget_bytes = settings.run_memo_mb * 1e6
    http = settings.http.model_dump()
    # The same tables for reads outside an input: windows summed in DuckDB, the dead-letter history, sensors.
    tables = WarehouseTables.of_settings(settings)
    return {
        "io_manager": WarehouseTablesIOManager(database=tables.database, lake_path=tables.lake_path, schema="warehouse"),
        "warehouse_tables": tables,
        "erp": ErpResource(base_url=settings.erp_url, token=_token(settings, ERP_TOKEN_ENV), **http),
        "wms": WmsResource(
            base_url=settings.wms_url,
            token=_token(settings, WMS_TOKEN_ENV),
            push_batch_size=settings.wms_push_batch_size,
            store_url=settings.store_url,
            **http,
        ),
        "state_store": OperationalStoreResource(url=settings.store_url),
        "warehouse": WarehouseResource(
            timezone=settings.timezone,
            move_budget=settings.move_budget,
            xyz_min_weeks=settings.xyz_min_weeks,
            dlq_rate_max=settings.dlq_rate_max,
            hysteresis_days=settings.hysteresis_days,
            store_url=settings.store_url,
        ),
        **operations_resources(settings),
        **source_resources(settings),
    }


# --- operating the platform: thresholds of the gates and signals, where alerts go ---------------


class OperationsResource(dg.ConfigurableResource):
    """Thresholds of the gates and signals, the delta sensor's limits, and the UI's address."""

    ingestion_success_min: float = resource_field(OperationsSettings, "ingestion_success_min")
    pareto_tolerance: float = resource_field(OperationsSettings, "pareto_tolerance")
    pareto_shift_max: float = resource_field(OperationsSettings, "pareto_shift_max")
    day_on_day_factor: float = resource_field(OperationsSettings, "day_on_day_factor")
    day_on_day_min_units: float = Field(default=20.0, description="Signal: smaller 30-day volumes are not compared")
    batch_start_hour: int = Field(default=NIGHTLY_START_HOUR, description="Local hour the nightly batch starts")
    batch_window_hours: float = resource_field(OperationsSettings, "batch_window_hours")
    retry_first_delay_s: float = resource_field(OperationsSettings, "retry_first_delay_s")
    retry_max_delay_s: float = resource_field(OperationsSettings, "retry_max_delay_s")
    delta_max_records: int = resource_field(OperationsSettings, "delta_max_records")
    ui_base_url: str = resource_field(OperationsSettings, "ui_base_url")

    @classmethod
    def from_settings(cls, settings: OperationsSettings) -> "OperationsResource":
        return cls(**settings.model_dump())


class AlertWebhookResource(dg.ConfigurableResource):
    """Where failed gates and failed runs are posted. The URL is a secret: VELOCITY_ALERT_WEBHOOK_URL."""

    url: str | None = Field(default=None, description="Set VELOCITY_ALERT_WEBHOOK_URL; never in code or config")
    timeout_s: float = 10.0

    def client(self) -> AlertWebhook | None:
        return AlertWebhook(self.url, timeout_s=self.timeout_s) if self.url else None


def operations_resources(settings: Settings) -> dict[str, object]:
    # dg.EnvVar only when the variable is set: an unset EnvVar fails every tick of the alert
    # sensor, while no URL at all is a legitimate setup (the sensor then says so and skips).
    url = dg.EnvVar(ALERT_WEBHOOK_ENV) if settings.alert_webhook_set else None
    return {
        "operations": OperationsResource.from_settings(settings.operations),
        "alert_webhook": AlertWebhookResource(url=url),
    }


# --- where order lines come from, and how slotting prices locations ------------------------------


class TransactionSourceResource(dg.ConfigurableResource):
    """Where raw_transactions and sku_master read from: the ERP's API, or a file-drop export."""

    kind: str = resource_field(SourceSettings, "source")
    file_path: str | None = resource_field(SourceSettings, "file_path")
    file_preset: str = resource_field(SourceSettings, "file_preset")
    default_unit_cube_ft3: float = resource_field(SourceSettings, "default_unit_cube_ft3")

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def export(self, timezone: str) -> FileExport:
        if not self.file_path:
            raise dg.Failure(description="the file source needs a path: set VELOCITY_FILE_PATH or --path")
        try:
            return read_export(self.file_path, preset(self.file_preset, self.default_unit_cube_ft3), warehouse_tz=timezone)
        except (FileSourceError, ValueError) as exc:
            raise dg.Failure(description=str(exc)) from None


class SlottingResource(dg.ConfigurableResource):
    """How slotting prices locations (the pick routing) and moves (the labor model); scoped to a
    registered site (`for_site`), the routing its pickers walk."""

    routing: str = resource_field(SlottingSettings, "routing")
    store_url: str | None = Field(default=None, description="The operational store holding the registry of sites")
    price_on: str = resource_field(SlottingSettings, "price_on")
    band_locations: int | None = Field(default=None, description="Locations per band; default a third of the pick face (fast, medium, slow zones)")
    walk_speed_m_s: float = resource_field(SlottingSettings, "walk_speed_m_s")
    move_minutes: float = resource_field(SlottingSettings, "move_minutes")
    payback_horizon_days: float = resource_field(SlottingSettings, "payback_horizon_days")
    replenish_minutes: float = resource_field(SlottingSettings, "replenish_minutes")
    level_handling_s: list[float] = Field(
        default=list(SlottingSettings.model_fields["level_handling_s"].default),
        description=SlottingSettings.model_fields["level_handling_s"].description,
    )

    @property
    def labor(self) -> LaborModel:
        return LaborModel(
            self.walk_speed_m_s, self.move_minutes, self.payback_horizon_days, self.replenish_minutes, tuple(self.level_handling_s)
        )

    def for_site(self, warehouse_id: str) -> "SlottingResource":
        registered = {site.warehouse_id: site for site in registered_sites(self.store_url)}
        if warehouse_id not in registered:
            return self  # the default site walks the settings' routing
        return self.model_copy(update={"routing": registered[warehouse_id].routing})


def source_resources(settings: Settings) -> dict[str, object]:
    source = settings.order_source
    return {
        "transaction_source": TransactionSourceResource(
            kind=source.source,
            file_path=source.file_path,
            file_preset=source.file_preset,
            default_unit_cube_ft3=source.default_unit_cube_ft3,
        ),
        "slotting": SlottingResource(**settings.slotting.model_dump(), store_url=settings.store_url),
    }
