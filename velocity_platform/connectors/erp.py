"""HTTP client for the ERP: transaction pages for a business date, reconciliation counts, SKUs.

Pages are returned as raw bytes with their place in the pull (the "source batch"), so that
parsing happens once, vectorised, in the domain layer, and a page that cannot be parsed can be
dead-lettered whole with where it came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import orjson

from velocity_platform.connectors.http import (
    RetryPolicy,
    RetryStats,
    UpstreamError,
    make_client,
    raise_for_final_status,
    send_with_retries,
)

SYSTEM = "ERP"


@dataclass(frozen=True)
class ErpPage:
    source_batch: str  # e.g. "erp:2026-03-01:page-0003"
    body: bytes


def business_day_bounds(business_date: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a business date in the warehouse time zone, in UTC."""
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(business_date, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(business_date + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ErpClient:
    base_url: str
    token: str | None
    timeout_s: float = 30.0
    page_limit: int = 5000
    max_page_bytes: int = 64 * 1024 * 1024
    verify_tls: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stats: RetryStats = field(default_factory=RetryStats)

    def __post_init__(self) -> None:
        self._http = make_client(self.base_url, self.token, self.timeout_s, self.verify_tls)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ErpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str | int]) -> bytes:
        describe = f"GET {path}"
        response = send_with_retries(
            SYSTEM, lambda: self._http.get(path, params=params), self.retry, self.stats, describe
        )
        raise_for_final_status(SYSTEM, response, describe)
        if len(response.content) > self.max_page_bytes:
            raise UpstreamError(
                SYSTEM,
                f"{describe} returned {len(response.content):,} bytes, over the cap of "
                f"{self.max_page_bytes:,}; lower page_limit",
            )
        return response.content

    def _paged(self, path: str, params: dict[str, str | int], batch_prefix: str) -> Iterator[ErpPage]:
        cursor: str | None = None
        page_no = 0
        while True:
            query = {**params, "limit": self.page_limit}
            if cursor:
                query["cursor"] = cursor
            body = self._get(path, query)
            page_no += 1
            yield ErpPage(f"{batch_prefix}:page-{page_no:04d}", body)
            cursor = _next_cursor(body)
            if not cursor:
                return

    # --- the API -------------------------------------------------------------------------------

    def transaction_pages(self, business_date: dt.date, timezone: str) -> Iterator[ErpPage]:
        """Every page of order documents whose business time falls on `business_date`."""
        start, end = business_day_bounds(business_date, timezone)
        params = {"since": _iso(start), "until": _iso(end), "time_field": "event_ts"}
        yield from self._paged("/v1/transactions", params, f"erp:{business_date.isoformat()}")

    def changed_pages(self, since: dt.datetime, until: dt.datetime) -> Iterator[ErpPage]:
        """Documents committed in [since, until), whatever their business date (delta polling)."""
        params = {"since": _iso(since), "until": _iso(until), "time_field": "created_at"}
        yield from self._paged("/v1/transactions", params, f"erp-delta:{_iso(since)}")

    def count_lines(self, business_date: dt.date) -> int:
        body = self._get("/v1/transactions/count", {"business_date": business_date.isoformat()})
        return int(orjson.loads(body)["lines"])

    def skus(self) -> list[dict]:
        records: list[dict] = []
        for page in self._paged("/v1/skus", {}, "erp-skus"):
            records.extend(orjson.loads(page.body)["records"])
        return records


def _next_cursor(body: bytes) -> str | None:
    """The paging cursor, read without parsing the whole page twice where possible."""
    tail = body[-512:]
    marker = b'"next_cursor":'
    at = tail.rfind(marker)
    if at >= 0:
        rest = tail[at + len(marker) :].strip()
        if rest.startswith(b"null"):
            return None
        if rest.startswith(b'"'):
            end = rest.find(b'"', 1)
            if end > 0:
                return rest[1:end].decode()
    try:
        return orjson.loads(body).get("next_cursor")
    except orjson.JSONDecodeError:
        return None

