"""WMS pages as the WMS sends them: the location master and the current assignments."""

from __future__ import annotations

import polars as pl

from velocity_platform.connectors.pages import read_records_page
from velocity_platform.domain.contracts import WMS_LOCATIONS_SCHEMA, conform

# Records as the WMS sends them (extra fields are ignored).
_LOCATION_RECORD = pl.Struct({k: v for k, v in WMS_LOCATIONS_SCHEMA.items() if k != "sku_id"})
_ASSIGNMENT_RECORD = pl.Struct({"sku_id": pl.String, "location_id": pl.String, "assigned_at": pl.String})


def read_location_page(body: bytes) -> pl.DataFrame:
    return read_records_page(body, _LOCATION_RECORD)


def read_assignment_page(body: bytes) -> pl.DataFrame:
    return read_records_page(body, _ASSIGNMENT_RECORD)


def locations_from_pages(locations: list[pl.DataFrame], assignments: list[pl.DataFrame]) -> pl.DataFrame:
    """The WMS location pages with each location's current occupant (null when empty)."""
    master = pl.concat(locations) if locations else pl.DataFrame(schema=_LOCATION_RECORD.to_schema())
    occupants = pl.concat(assignments) if assignments else pl.DataFrame(schema=_ASSIGNMENT_RECORD.to_schema())
    joined = master.join(occupants.select("location_id", "sku_id"), on="location_id", how="left")
    return conform(joined, WMS_LOCATIONS_SCHEMA).sort("location_id")
