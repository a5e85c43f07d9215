"""A network of warehouses: what a site is, as registered, and the rules its facts obey.

A warehouse is a partition dimension of every asset (see defs/partitions.py). Its facts -- time
zone, rack layout, routing, WMS -- are data in the operational store (connectors/state.py), so a
site is added without a deploy. With no site registered, the platform runs one site,
`DEFAULT_WAREHOUSE_ID`, on the settings' layout and time zone, exactly as a single warehouse did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zoneinfo
from collections.abc import Iterable
from typing import Literal

import polars as pl
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


def with_site_directive_ids(directives: pl.DataFrame, warehouse_id: str) -> pl.DataFrame:
    """Directives whose ids (their idempotency keys) are unique across the network.

    Two sites may hold the same SKU and the same location names (one WMS each), so the same move
    planned for the same day would get the same id at both, and the outbox would keep one. A site
    other than the default one puts its id in the key; the default site's ids stay as they were,
    so a deployment that grew from one warehouse never sends its pending directives again.
    """
    if warehouse_id == DEFAULT_WAREHOUSE_ID or directives.is_empty():
        return directives
    return directives.with_columns(
        pl.col("directive_id").map_batches(
            lambda ids: pl.Series(
                [hashlib.md5(f"{warehouse_id}|{i}".encode(), usedforsecurity=False).hexdigest() for i in ids], dtype=pl.String
            ),
            return_dtype=pl.String,
        )
    )


class NightlyRun(BaseModel):
    """A site's nightly run that is due: the business date that just ended there, and when."""

    model_config = ConfigDict(frozen=True)

    warehouse_id: str
    business_date: dt.date
    starts_at: dt.datetime  # the site's local start hour, as an instant (UTC)


def local_start(day: dt.date, hour: int, timezone: str) -> dt.datetime:
    """The instant of `hour`:00 on `day` in the zone, in UTC.

    On the night clocks go forward and the hour does not exist (02:00 in America/Chicago in
    March), the instant the clocks jump to (03:00 local); on the night it happens twice (02:00 in
    Europe/Berlin in October), the first of the two. Either way one instant per local day.
    """
    zone = zoneinfo.ZoneInfo(timezone)
    wall = dt.datetime.combine(day, dt.time(hour), tzinfo=zone)  # fold=0: the earlier offset
    return wall.astimezone(dt.UTC)


def nightly_runs_due(
    sites: Iterable[Warehouse], after: dt.datetime, until: dt.datetime, start_hour: int
) -> list[NightlyRun]:
    """Every site's nightly runs whose local start hour falls in (after, until]: each builds the
    business date that ended at the site's midnight before it. Sites in America/Chicago and
    Europe/Berlin run seven hours apart (six or eight in the weeks their DST changes differ)."""
    due = []
    for site in sites:
        zone = zoneinfo.ZoneInfo(site.timezone)
        first, last = after.astimezone(zone).date() - dt.timedelta(days=1), until.astimezone(zone).date() + dt.timedelta(days=1)
        day = first
        while day <= last:
            starts = local_start(day, start_hour, site.timezone)
            if after < starts <= until:
                due.append(NightlyRun(warehouse_id=site.warehouse_id, business_date=day - dt.timedelta(days=1), starts_at=starts))
            day += dt.timedelta(days=1)
    return sorted(due, key=lambda run: (run.starts_at, run.warehouse_id))


def night_due_by(site: Warehouse, now: dt.datetime, start_hour: int, window_hours: float) -> tuple[dt.date, dt.datetime]:
    """The latest business date whose night should have landed at the site by `now`, and that
    night's deadline: the night of date D starts at `start_hour` local on D+1 (DST included, see
    local_start) and ends `window_hours` later. The window is under a day, so two days back it
    has always passed."""
    local_today = now.astimezone(zoneinfo.ZoneInfo(site.timezone)).date()
    for back in (0, 1, 2):
        night_of = local_today - dt.timedelta(days=back)
        deadline = local_start(night_of, start_hour, site.timezone) + dt.timedelta(hours=window_hours)
        if deadline <= now or back == 2:
            return night_of - dt.timedelta(days=1), deadline
    raise AssertionError("unreachable")
