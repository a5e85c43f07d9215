"""Configuration from the environment, with defaults that work on a fresh checkout.

Every knob is an environment variable so the same code runs under `make demo`, `dagster dev`,
the production daemon and CI. Secrets (the bearer tokens) are read by the Dagster resources
through `dg.EnvVar` at run time; they are never held here.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

# Where local state lives when nothing else is configured: beside the working directory, git-ignored.
LOCAL_STATE_DIR = Path(os.environ.get("VELOCITY_STATE_DIR", ".velocity")).resolve()

ENV_DOCS = {
    "VELOCITY_ERP_URL": "Base URL of the ERP API",
    "VELOCITY_ERP_TOKEN": "Bearer token for the ERP (secret)",
    "VELOCITY_WMS_URL": "Base URL of the WMS API",
    "VELOCITY_WMS_TOKEN": "Bearer token for the WMS (secret)",
    "VELOCITY_DUCKDB_PATH": "DuckDB file holding the asset tables",
    "VELOCITY_STORE_URL": "SQLAlchemy URL of the operational store (watermarks, WMS outbox, push log)",
    "VELOCITY_WAREHOUSE_TZ": "IANA time zone of the warehouse; business dates are days in this zone",
    "VELOCITY_FIRST_PARTITION_DATE": "First business date of the daily partitions",
    "VELOCITY_MOVE_BUDGET": "Maximum slotting moves per day",
    "VELOCITY_WMS_PUSH_BATCH_SIZE": "Directives per request to the WMS's batch endpoint (default 100, at most 500)",
}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    erp_url: str
    wms_url: str
    duckdb_path: str
    store_url: str
    timezone: str
    first_partition_date: dt.date
    move_budget: int

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            erp_url=_env("VELOCITY_ERP_URL", "http://127.0.0.1:8710"),
            wms_url=_env("VELOCITY_WMS_URL", "http://127.0.0.1:8720"),
            duckdb_path=_env("VELOCITY_DUCKDB_PATH", str(LOCAL_STATE_DIR / "velocity.duckdb")),
            store_url=_env("VELOCITY_STORE_URL", f"sqlite:///{LOCAL_STATE_DIR / 'operational.sqlite'}"),
            timezone=_env("VELOCITY_WAREHOUSE_TZ", "Europe/London"),
            first_partition_date=dt.date.fromisoformat(_env("VELOCITY_FIRST_PARTITION_DATE", "2025-01-01")),
            move_budget=int(_env("VELOCITY_MOVE_BUDGET", "200")),
        )


# --- the velocity taxonomy -----------------------------------------------------------------------

# XYZ judges a SKU's predictability by the CV of its weekly demand over the weeks it could have
# sold in (docs/architecture.md). Below this many weeks the SKU is "not yet classified". Eight
# of the twelve weeks: on the Online Retail history, for the SKUs with twelve weeks on sale, the
# class from the last n weeks agrees with the twelve-week class for 87.6% / 86.5% of them at
# n = 8 (D = 2011-06-30 / 2011-09-30), 80.1% / 78.5% at 6 and 68.9% / 65.1% at 4; below about
# six weeks one SKU in four or five would carry a class its next weeks overturn.
# velocity_platform_tests/evaluation/test_signals_on_real_history.py measures it again.
XYZ_MIN_WEEKS = 8

ENV_DOCS["VELOCITY_XYZ_MIN_WEEKS"] = "Whole weeks on sale a SKU needs before it gets an XYZ class (default 8)"


def xyz_min_weeks_from_env() -> int:
    return int(_env("VELOCITY_XYZ_MIN_WEEKS", str(XYZ_MIN_WEEKS)))


# --- operating the platform: gates, signals, sensors, alerts -----------------------------------

ENV_DOCS.update(
    {
        "VELOCITY_INGESTION_SUCCESS_MIN": "Gate: share of the ERP's lines for a date that must arrive as readable lines",
        "VELOCITY_PARETO_TOLERANCE": "Signal: how far a class's share of SKUs may sit from the 20/30/50 Pareto shape",
        "VELOCITY_PARETO_SHIFT_MAX": "Signal: how far a class's share of SKUs may move from one day to the next",
        "VELOCITY_DAY_ON_DAY_FACTOR": "Signal: a SKU's 30-day velocity changing by more than this factor in a day "
        "counts as changed; the signal fires when more SKUs change than on a usual day",
        "VELOCITY_BATCH_WINDOW_HOURS": "Signal: hours after the 02:00 start by which the nightly batch must land",
        "VELOCITY_RETRY_FIRST_DELAY_SECONDS": "Nightly run: wait before retrying a step the ERP outage failed (then doubled)",
        "VELOCITY_RETRY_MAX_DELAY_SECONDS": "Nightly run: longest wait between two retries of a step inside the batch window",
        "VELOCITY_SPIKE_MULTIPLE": "Sensor: units since the last tick above this multiple of the SKU's peak day of 90",
        "VELOCITY_SPIKE_MIN_UNITS": "Sensor: fewer units than this are never a spike",
        "VELOCITY_SPIKE_MIN_DAYS_SOLD": "Sensor: SKUs sold on fewer of the last 90 days have no range yet, never spike",
        "VELOCITY_DELTA_MAX_RECORDS": "Sensor: ERP records read per tick at most; the rest waits for the next tick",
        "VELOCITY_ALERT_WEBHOOK_URL": "Where failed gates and failed runs are posted as JSON (secret: may embed a token)",
        "VELOCITY_UI_BASE_URL": "Base URL of the Dagster UI, for the run links in alerts",
    }
)


@dataclass(frozen=True)
class OperationsSettings:
    """Thresholds of the gates and signals, and what the sensors need; all from the environment."""

    ingestion_success_min: float
    pareto_tolerance: float
    pareto_shift_max: float
    day_on_day_factor: float
    batch_window_hours: float
    retry_first_delay_s: float
    retry_max_delay_s: float
    spike_multiple: float
    spike_min_units: float
    spike_min_days_sold: int
    delta_max_records: int
    ui_base_url: str

    @classmethod
    def from_env(cls) -> OperationsSettings:
        return cls(
            ingestion_success_min=float(_env("VELOCITY_INGESTION_SUCCESS_MIN", "0.9995")),
            pareto_tolerance=float(_env("VELOCITY_PARETO_TOLERANCE", "0.20")),
            # On the Online Retail history class shares move at most 1.1 points on a normal day;
            # 4.5 and 3.1 the days its one 74,215-unit line entered and left the 30-day window.
            pareto_shift_max=float(_env("VELOCITY_PARETO_SHIFT_MAX", "0.025")),
            day_on_day_factor=float(_env("VELOCITY_DAY_ON_DAY_FACTOR", "3.0")),
            batch_window_hours=float(_env("VELOCITY_BATCH_WINDOW_HOURS", "4")),
            retry_first_delay_s=float(_env("VELOCITY_RETRY_FIRST_DELAY_SECONDS", "60")),
            retry_max_delay_s=float(_env("VELOCITY_RETRY_MAX_DELAY_SECONDS", "900")),
            spike_multiple=float(_env("VELOCITY_SPIKE_MULTIPLE", "30")),
            spike_min_units=float(_env("VELOCITY_SPIKE_MIN_UNITS", "500")),
            spike_min_days_sold=int(_env("VELOCITY_SPIKE_MIN_DAYS_SOLD", "5")),
            delta_max_records=int(_env("VELOCITY_DELTA_MAX_RECORDS", "200000")),
            ui_base_url=_env("VELOCITY_UI_BASE_URL", "http://127.0.0.1:3000").rstrip("/"),
        )


# The nightly batch starts at this local hour for the business date that just ended.
NIGHTLY_START_HOUR = 2


# --- where order lines come from, and how slotting prices a location ---------------------------

ENV_DOCS.update(
    {
        "VELOCITY_SOURCE": "Where order lines come from: erp (the HTTP API) or file (a file-drop export)",
        "VELOCITY_FILE_PATH": "The export read when VELOCITY_SOURCE=file (CSV or Parquet, plain or .gz)",
        "VELOCITY_FILE_PRESET": "Column mapping of the export: online-retail or erp-lines",
        "VELOCITY_DEFAULT_UNIT_CUBE_FT3": "Unit cube given to SKUs whose source has none (flagged cube_is_default)",
        "VELOCITY_ROUTING": "Pick routing slotting prices locations under: s-shape, return or largest-gap",
    }
)


@dataclass(frozen=True)
class SourceSettings:
    source: str  # "erp" | "file"
    file_path: str | None
    file_preset: str
    default_unit_cube_ft3: float
    routing: str

    @classmethod
    def from_env(cls) -> SourceSettings:
        source = _env("VELOCITY_SOURCE", "erp").lower()
        if source not in ("erp", "file"):
            raise ValueError(f"VELOCITY_SOURCE={source!r}: use erp or file")
        path = _env("VELOCITY_FILE_PATH", "") or None
        if source == "file" and not path:
            raise ValueError("VELOCITY_SOURCE=file needs VELOCITY_FILE_PATH (the export to read)")
        return cls(
            source=source,
            file_path=path,
            file_preset=_env("VELOCITY_FILE_PRESET", "online-retail"),
            default_unit_cube_ft3=float(_env("VELOCITY_DEFAULT_UNIT_CUBE_FT3", "0.1")),
            routing=_env("VELOCITY_ROUTING", "s-shape"),
        )


# --- slotting economics: what a relocation costs and how long a move may take to pay back ------

ENV_DOCS.update(
    {
        "VELOCITY_WALK_SPEED_M_S": "Picker walking speed in m/s (prices travel saved in hours)",
        "VELOCITY_MOVE_MINUTES": "Labor of one relocation, in minutes (a new SKU's first slot costs none)",
        "VELOCITY_PAYBACK_HORIZON_DAYS": "Days of expected saving a relocation may count on to repay its labor",
    }
)


def labor_from_env():
    """The labor model with the environment's overrides; the defaults live in LaborModel."""
    from velocity_platform.domain.labor import LaborModel

    defaults = LaborModel()
    return LaborModel(
        walk_speed_m_s=float(_env("VELOCITY_WALK_SPEED_M_S", str(defaults.walk_speed_m_s))),
        move_minutes=float(_env("VELOCITY_MOVE_MINUTES", str(defaults.move_minutes))),
        payback_horizon_days=float(_env("VELOCITY_PAYBACK_HORIZON_DAYS", str(defaults.payback_horizon_days))),
    )


# --- the exception service (velocity-platform deltas) ---------------------------------------------

ENV_DOCS.update(
    {
        "VELOCITY_DELTAS_METRICS_PORT": "Exception service: port of its Prometheus /metrics on 127.0.0.1 (0: none)",
        "VELOCITY_DELTAS_LONG_POLL_S": "Exception service: how long the ERP may hold an empty read until a commit "
        "arrives (0: the ERP does not offer long polling; the service polls with backoff)",
        "VELOCITY_DELTAS_MIN_INTERVAL_S": "Exception service: pause after an empty read, doubled on each one after it",
        "VELOCITY_DELTAS_MAX_INTERVAL_S": "Exception service: longest pause between two reads of an idle ERP",
        "VELOCITY_DELTAS_MAX_PAGES": "Exception service: ERP pages read per round at most (the rest in the next round)",
        "VELOCITY_DELTAS_QUEUE_BATCHES": "Exception service: batches of exceptions waiting for the WMS before reading pauses",
        "VELOCITY_DELTAS_PUSH_CONCURRENCY": "Exception service: requests to the WMS in flight at once",
        "VELOCITY_DELTAS_REPORT_INTERVAL_S": "Exception service: seconds of batches summed into one runless event on exception_deltas",
        "VELOCITY_DELTAS_REFERENCE_REFRESH_S": "Exception service: how often it re-reads locations, assignments and expected rates",
        "VELOCITY_DELTAS_SPIKE_MULTIPLE": "Exception service: pick lines today above this multiple of the expected rate is a spike",
        "VELOCITY_DELTAS_SPIKE_MIN_LINES": "Exception service: fewer pick lines today than this are never a spike",
        "VELOCITY_DELTAS_START": "Exception service: ERP commit time to start reading from when the store has no "
        "watermark yet (ISO-8601; default: the moment it first starts)",
    }
)


@dataclass(frozen=True)
class DeltaServiceSettings:
    """How the resident exception service follows the ERP and feeds the WMS (docs/deltas.md)."""

    metrics_port: int
    long_poll_s: float
    min_interval_s: float
    max_interval_s: float
    max_pages: int
    queue_batches: int
    push_concurrency: int
    report_interval_s: float
    reference_refresh_s: float
    spike_multiple: float
    spike_min_lines: int
    start: dt.datetime | None

    @classmethod
    def from_env(cls) -> DeltaServiceSettings:
        start = _env("VELOCITY_DELTAS_START", "")
        moment = dt.datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"VELOCITY_DELTAS_START={start!r} needs a time zone offset, e.g. 2026-03-01T00:00:00Z")
        settings = cls(
            metrics_port=int(_env("VELOCITY_DELTAS_METRICS_PORT", "9464")),
            long_poll_s=float(_env("VELOCITY_DELTAS_LONG_POLL_S", "5")),
            min_interval_s=float(_env("VELOCITY_DELTAS_MIN_INTERVAL_S", "0.005")),
            max_interval_s=float(_env("VELOCITY_DELTAS_MAX_INTERVAL_S", "1.0")),
            max_pages=int(_env("VELOCITY_DELTAS_MAX_PAGES", "20")),
            queue_batches=int(_env("VELOCITY_DELTAS_QUEUE_BATCHES", "64")),
            push_concurrency=int(_env("VELOCITY_DELTAS_PUSH_CONCURRENCY", "4")),
            report_interval_s=float(_env("VELOCITY_DELTAS_REPORT_INTERVAL_S", "10")),
            reference_refresh_s=float(_env("VELOCITY_DELTAS_REFERENCE_REFRESH_S", "300")),
            spike_multiple=float(_env("VELOCITY_DELTAS_SPIKE_MULTIPLE", "10")),
            spike_min_lines=int(_env("VELOCITY_DELTAS_SPIKE_MIN_LINES", "20")),
            start=moment,
        )
        if settings.queue_batches < 1 or settings.push_concurrency < 1 or settings.max_pages < 1:
            raise ValueError("VELOCITY_DELTAS_QUEUE_BATCHES, _PUSH_CONCURRENCY and _MAX_PAGES must be at least 1")
        if not 0 < settings.min_interval_s <= settings.max_interval_s:
            raise ValueError("need 0 < VELOCITY_DELTAS_MIN_INTERVAL_S <= VELOCITY_DELTAS_MAX_INTERVAL_S")
        return settings
