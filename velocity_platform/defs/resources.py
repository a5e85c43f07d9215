"""Resources: thin ConfigurableResources around the connectors. Secrets come from dg.EnvVar."""


import dataclasses
import functools
import os
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import Field

from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.files import FileExport, FileSourceError, preset, read_export
from velocity_platform.connectors.http import RetryPolicy, UpstreamApiClient, UpstreamLimits
from velocity_platform.connectors.outbox import WMS_BATCH_SIZE
from velocity_platform.connectors.state import OperationalStore
from velocity_platform.connectors.webhook import AlertWebhook
from velocity_platform.connectors.wms import WmsClient
from velocity_platform.defs.tables import RUN_OUTPUTS, WarehouseTables, WarehouseTablesIOManager
from velocity_platform.domain.labor import LaborModel
from velocity_platform.settings import (
    NIGHTLY_START_HOUR,
    XYZ_MIN_WEEKS,
    OperationsSettings,
    Settings,
    SourceSettings,
    labor_from_env,
    xyz_min_weeks_from_env,
)


UpstreamClientT = TypeVar("UpstreamClientT", bound=UpstreamApiClient)


class _UpstreamResource(dg.ConfigurableResource):
    """What every HTTP upstream shares: timeouts, retries, rate limit, concurrency, breaker, TLS."""

    base_url: str
    timeout_s: float = Field(default=30.0, description="Per-request timeout (connect, read, write)")
    verify_tls: bool = Field(default=True, description="Verify the upstream's TLS certificate; keep on")
    allow_plain_http: bool = Field(default=False, description="Allow http:// to a non-loopback host (token in clear)")
    max_response_bytes: int = Field(default=64 * 1024 * 1024, description="Cap on one response body")
    max_attempts: int = Field(default=6, description="Attempts per request, the first included")
    initial_backoff_s: float = Field(default=0.2, description="Backoff scale: waits are random in [0, s * 2^n]")
    max_backoff_s: float = Field(default=10.0, description="Longest wait between attempts (Retry-After aside)")
    max_retry_after_s: float = Field(default=30.0, description="Longest Retry-After we honour")
    max_unreadable_attempts: int = Field(default=3, description="Fetches of an answer whose body cannot be read")
    requests_per_second: float = Field(default=50.0, description="Ceiling of requests per second; 0 = none")
    max_concurrent_requests: int = Field(default=4, description="Requests in flight at once to this upstream")
    breaker_fail_max: int = Field(default=8, description="Consecutive failed requests that open the breaker")
    breaker_reset_s: float = Field(default=30.0, description="Cool-down before the breaker lets a trial through")
    page_limit: int = Field(default=5000, description="Records asked for per page")

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


class WmsResource(_UpstreamResource):
    """The WMS's location, assignment and slotting-directive API."""

    token: str = Field(description="Bearer token; set VELOCITY_WMS_TOKEN, never in code")
    push_batch_size: int = Field(
        default=WMS_BATCH_SIZE, description="Directives per POST to the WMS's batch endpoint (its limit is 500)"
    )

    def client(self) -> WmsClient:
        return self._connect(WmsClient)


# Client knobs may also come from the environment (one value for both upstreams), so a run from
# the command line or a test can shorten timeouts and backoff; the UI can still set each resource.
HTTP_ENV = {
    "VELOCITY_HTTP_TIMEOUT_S": "timeout_s",
    "VELOCITY_HTTP_MAX_ATTEMPTS": "max_attempts",
    "VELOCITY_HTTP_BACKOFF_S": "initial_backoff_s",
    "VELOCITY_HTTP_MAX_BACKOFF_S": "max_backoff_s",
    "VELOCITY_HTTP_RATE_LIMIT_RPS": "requests_per_second",
    "VELOCITY_HTTP_MAX_CONCURRENCY": "max_concurrent_requests",
    "VELOCITY_HTTP_BREAKER_FAIL_MAX": "breaker_fail_max",
    "VELOCITY_HTTP_BREAKER_RESET_S": "breaker_reset_s",
    "VELOCITY_HTTP_MAX_RESPONSE_BYTES": "max_response_bytes",
    "VELOCITY_HTTP_PAGE_LIMIT": "page_limit",
}


def http_config_from_env() -> dict[str, float | int]:
    config: dict[str, float | int] = {}
    for name, field in HTTP_ENV.items():
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        kind = _UpstreamResource.model_fields[field].annotation
        try:
            config[field] = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    return config


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
    xyz_min_weeks: int = Field(
        default=XYZ_MIN_WEEKS, description="Whole weeks on sale a SKU needs before it gets an XYZ class"
    )


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    settings = settings or Settings.from_env()
    Path(settings.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    RUN_OUTPUTS.budget_bytes = float(os.environ.get("VELOCITY_RUN_MEMO_MB", "").strip() or 512) * 1e6
    return {
        "io_manager": WarehouseTablesIOManager(database=settings.duckdb_path, schema="warehouse"),
        # The same tables for reads outside an input: windows summed in DuckDB, the dead-letter history, sensors.
        "warehouse_tables": WarehouseTables(database=settings.duckdb_path),
        "erp": ErpResource(base_url=settings.erp_url, token=dg.EnvVar("VELOCITY_ERP_TOKEN"), **http_config_from_env()),
        "wms": WmsResource(
            base_url=settings.wms_url,
            token=dg.EnvVar("VELOCITY_WMS_TOKEN"),
            push_batch_size=int(os.environ.get("VELOCITY_WMS_PUSH_BATCH_SIZE", "").strip() or WMS_BATCH_SIZE),
            **http_config_from_env(),
        ),
        "state_store": OperationalStoreResource(url=settings.store_url),
        "warehouse": WarehouseResource(
            timezone=settings.timezone, move_budget=settings.move_budget, xyz_min_weeks=xyz_min_weeks_from_env()
        ),
        **operations_resources(),
        **source_resources(),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)


# --- operating the platform: thresholds of the gates and signals, where alerts go ---------------


class OperationsResource(dg.ConfigurableResource):
    """Thresholds of the gates and signals, the delta sensor's limits, and the UI's address."""

    ingestion_success_min: float = Field(default=0.9995, description="Gate: readable lines / lines the ERP holds")
    pareto_tolerance: float = Field(default=0.20, description="Signal: class share of SKUs vs 20/30/50")
    pareto_shift_max: float = Field(default=0.025, description="Signal: class share of SKUs vs yesterday's")
    day_on_day_factor: float = Field(default=3.0, description="Signal: a 30-day velocity change in one day that counts")
    day_on_day_min_units: float = Field(default=20.0, description="Signal: smaller 30-day volumes are not compared")
    batch_start_hour: int = Field(default=NIGHTLY_START_HOUR, description="Local hour the nightly batch starts")
    batch_window_hours: float = Field(default=4.0, description="Signal: the batch must land this long after its start")
    retry_first_delay_s: float = Field(default=60.0, description="Nightly run: first wait before retrying a step an outage failed")
    retry_max_delay_s: float = Field(default=900.0, description="Nightly run: longest wait between retries of a step")
    spike_multiple: float = Field(default=30.0, description="Sensor: units since the last tick vs the SKU's peak day")
    spike_min_units: float = Field(default=500.0, description="Sensor: smaller bursts are never spikes")
    spike_min_days_sold: int = Field(default=5, description="Sensor: SKUs sold on fewer of 90 days are not judged")
    delta_max_records: int = Field(default=200_000, description="Sensor: ERP records read per tick at most")
    ui_base_url: str = Field(default="http://127.0.0.1:3000", description="Dagster UI, for run links in alerts")

    @classmethod
    def from_settings(cls, settings: OperationsSettings) -> "OperationsResource":
        return cls(
            ingestion_success_min=settings.ingestion_success_min,
            pareto_tolerance=settings.pareto_tolerance,
            pareto_shift_max=settings.pareto_shift_max,
            day_on_day_factor=settings.day_on_day_factor,
            batch_window_hours=settings.batch_window_hours,
            retry_first_delay_s=settings.retry_first_delay_s,
            retry_max_delay_s=settings.retry_max_delay_s,
            spike_multiple=settings.spike_multiple,
            spike_min_units=settings.spike_min_units,
            spike_min_days_sold=settings.spike_min_days_sold,
            delta_max_records=settings.delta_max_records,
            ui_base_url=settings.ui_base_url,
        )


class AlertWebhookResource(dg.ConfigurableResource):
    """Where failed gates and failed runs are posted. The URL is a secret: VELOCITY_ALERT_WEBHOOK_URL."""

    url: str | None = Field(default=None, description="Set VELOCITY_ALERT_WEBHOOK_URL; never in code or config")
    timeout_s: float = 10.0

    def client(self) -> AlertWebhook | None:
        return AlertWebhook(self.url, timeout_s=self.timeout_s) if self.url else None


ALERT_WEBHOOK_ENV = "VELOCITY_ALERT_WEBHOOK_URL"


def operations_resources() -> dict[str, object]:
    # dg.EnvVar only when the variable is set: an unset EnvVar fails every tick of the alert
    # sensor, while no URL at all is a legitimate setup (the sensor then says so and skips).
    url = dg.EnvVar(ALERT_WEBHOOK_ENV) if os.environ.get(ALERT_WEBHOOK_ENV, "").strip() else None
    return {
        "operations": OperationsResource.from_settings(OperationsSettings.from_env()),
        "alert_webhook": AlertWebhookResource(url=url),
    }


# --- where order lines come from, and how slotting prices locations ------------------------------


class TransactionSourceResource(dg.ConfigurableResource):
    """Where raw_transactions and sku_master read from: the ERP's API, or a file-drop export."""

    kind: str = Field(default="erp", description="erp (HTTP API) or file (VELOCITY_FILE_PATH)")
    file_path: str | None = Field(default=None, description="CSV or Parquet export, plain or .gz")
    file_preset: str = Field(default="online-retail", description="Column mapping: online-retail or erp-lines")
    default_unit_cube_ft3: float = Field(default=0.1, description="Cube for SKUs the export gives none (flagged)")

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
    """How slotting prices locations (the pick routing) and moves (the labor model)."""

    routing: str = Field(default="s-shape", description="s-shape, return or largest-gap")
    band_locations: int | None = Field(default=None, description="Locations per band; default a third of the pick face (fast, medium, slow zones)")
    walk_speed_m_s: float = Field(default=LaborModel().walk_speed_m_s, description="Picker walking speed, m/s")
    move_minutes: float = Field(default=LaborModel().move_minutes, description="Labor of one relocation, minutes")
    payback_horizon_days: float = Field(
        default=LaborModel().payback_horizon_days, description="Days of saving a relocation may count on to repay itself"
    )

    @property
    def labor(self) -> LaborModel:
        return LaborModel(self.walk_speed_m_s, self.move_minutes, self.payback_horizon_days)


def source_resources() -> dict[str, object]:
    source = SourceSettings.from_env()
    return {
        "transaction_source": TransactionSourceResource(
            kind=source.source,
            file_path=source.file_path,
            file_preset=source.file_preset,
            default_unit_cube_ft3=source.default_unit_cube_ft3,
        ),
        "slotting": SlottingResource(routing=source.routing, **dataclasses.asdict(labor_from_env())),
    }
