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
