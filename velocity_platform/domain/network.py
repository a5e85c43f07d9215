"""A network of warehouses: what a site is, as registered, and the rules its facts obey.

A warehouse is a partition dimension of every asset (see defs/partitions.py). Its facts -- time
zone, rack layout, routing, WMS -- are data in the operational store (connectors/state.py), so a
site is added without a deploy. With no site registered, the platform runs one site,
`DEFAULT_WAREHOUSE_ID`, on the settings' layout and time zone, exactly as a single warehouse did.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The one site of a deployment that registered none (and of the one-warehouse presets).
DEFAULT_WAREHOUSE_ID = "WH-01"

# Letters, digits, '-' and '_', starting with a letter or digit: safe in a Dagster partition key
# (no '|', the multi-partition separator), a URL path, an idempotency key and a file name.
WAREHOUSE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")

Routing = Literal["s-shape", "return", "largest-gap"]
ROUTINGS: tuple[str, ...] = ("s-shape", "return", "largest-gap")

# A site beyond these is not a pick area one layout model describes; refused rather than planned.
MAX_AISLES, MAX_BAYS, MAX_LEVELS = 500, 1000, 12


def check_warehouse_id(value: str) -> str:
    """The id as given, or a ValueError naming the rule it breaks."""
    if not isinstance(value, str) or not WAREHOUSE_ID_PATTERN.match(value):
        raise ValueError(
            f"warehouse id {value!r} is not valid: use 1-32 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return value


def check_timezone(value: str) -> str:
    """The IANA zone name as given, or a ValueError saying it is unknown."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"time zone {value!r} is unknown: use an IANA name such as Europe/Berlin or America/Chicago") from None
    return value


class Warehouse(BaseModel):
    """One site of the network as registered: where it is in time, how its pick area is built,
    how its pickers walk, and which WMS holds its locations (None: the deployment's WMS URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warehouse_id: str
    timezone: str = "Etc/UTC"
    aisles: int = Field(40, ge=1, le=MAX_AISLES)
    bays: int = Field(50, ge=1, le=MAX_BAYS, description="bays per aisle side")
    levels: int = Field(1, ge=1, le=MAX_LEVELS)
    routing: Routing = "s-shape"
    wms_url: str | None = None

    @field_validator("warehouse_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_warehouse_id(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("wms_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"WMS URL {value!r} is not an http(s) URL")
        return value

    @property
    def locations(self) -> int:
        """Pick locations in the layout: both sides of every aisle, every bay, every level."""
        return self.aisles * 2 * self.bays * self.levels
