"""HTTP client for the ERP: transaction pages for a business date, reconciliation counts, SKUs.

Pages come back with their place in the pull (the "source batch") and, when the caller passes a
reader, already read by it: parsing happens once, vectorised, in the domain layer, inside the
retry loop, so a page that arrives truncated is fetched again like any other transient fault.

A page that stays unreadable after the retry budget is read again from its cursor in smaller
pages, down to one document (ErpClient._narrowed); what stays unreadable is handed back with its
error instead of its contents, so it can be dead-lettered while the rest of the day still lands.
That is only possible when its cursor can still be read (the corruption is inside the records);
a page cut short before its cursor gives no way to go on, and the pull fails loudly instead.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson

from velocity_platform.connectors.http import (
    AsyncUpstreamApiClient,
    BodyStillInvalid,
    HttpAnswer,
    InvalidBody,
    UpstreamApiClient,
    UpstreamError,
)

SYSTEM = "ERP"


@dataclass(frozen=True)
class ErpPage:
    source_batch: str  # e.g. "erp:2026-03-01:page-0003"
    body: bytes
    parsed: Any = None  # what the caller's reader made of the body (None without a reader)
    error: str | None = None  # set when the page stayed unreadable; `parsed` is then None
    fetches: int = 1
    cursor: str | None = None  # the cursor the page was asked for from (None: the listing's first page)
    limit: int | None = None  # the documents asked for: 1 when a broken page was narrowed down to one document


def business_day_bounds(business_date: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a business date in the warehouse time zone, in UTC."""
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(business_date, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(business_date + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(kw_only=True)
class ErpClient(UpstreamApiClient):
    SYSTEM: ClassVar[str] = SYSTEM
    token_source: str = "VELOCITY_ERP_TOKEN"

    # --- plumbing ----------------------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, str | int]) -> Any:
        return self._get(path, params, read=_json_or_invalid)[1]

    def _paged(
        self,
        path: str,
        params: dict[str, str | int],
        batch_prefix: str,
        reader: Callable[[bytes], Any] | None,
    ) -> Iterator[ErpPage]:
        """Every page of a cursor-paged listing, in order, read by `reader` inside the retry loop.

        The next page is requested as soon as this page's cursor is read (from the end of its
        body), so the ERP prepares and sends it while this one is being parsed: at most two pages
        are in flight, and pages are yielded in order.
        """
        prefetch = ThreadPoolExecutor(max_workers=2, thread_name_prefix="erp-page")
        jobs: dict[int, Future] = {}

        def fetch(page_no: int, cursor: str | None) -> list[ErpPage]:
            def go_on(next_page: str | None) -> None:
                if next_page and page_no + 1 not in jobs:
                    jobs[page_no + 1] = prefetch.submit(fetch, page_no + 1, next_page)

            source_batch = f"{batch_prefix}:page-{page_no:04d}"
            limit = self.page_size(page_no)
            page, next_page = self._fetch_page(path, params, cursor, limit, source_batch, reader, go_on)
            if page.error is None:
                return [page]
            return self._narrowed(path, params, page, limit, next_page, reader)

        try:
            jobs[1] = prefetch.submit(fetch, 1, None)
            page_no = 1
            while page_no in jobs:
                yield from jobs.pop(page_no).result()
                page_no += 1
        finally:
            for job in jobs.values():
                job.cancel()
            prefetch.shutdown(wait=True)

    def _fetch_page(
        self,
        path: str,
        params: dict[str, str | int],
        cursor: str | None,
        limit: int,
        source_batch: str,
        reader: Callable[[bytes], Any] | None,
        go_on: Callable[[str | None], None] = lambda _: None,
    ) -> tuple[ErpPage, str | None]:
        """One page from `cursor` (read by `reader` in the retry loop) and its next cursor;
        `go_on(next cursor)` is called as soon as a fetch's cursor is read. A page that stays
        unreadable comes back with `error` set; one without a cursor to go on from raises."""
        query = {**params, "limit": limit}
        if cursor:
            query["cursor"] = cursor
        reads = 0
        with_cursor: tuple[bytes, str | None] | None = None  # a fetch of this page whose cursor was readable

        def read(answer: HttpAnswer) -> tuple[Any, str | None]:
            nonlocal reads, with_cursor
            reads += 1
            next_page = cursor_of(answer.content)
            with_cursor = (answer.content, next_page)
            go_on(next_page)
            return (None if reader is None else read_page(answer.content, reader)), next_page

        try:
            answer, (parsed, next_page) = self._get(path, query, read)
        except BodyStillInvalid as exc:
            body = exc.answer.content
            found, next_page = next_cursor(body)
            if not found and with_cursor is not None:
                # The last fetch came cut short, an earlier one had the cursor: go on from it.
                (body, next_page), found = with_cursor, True
            if not found:
                raise UpstreamError(
                    SYSTEM,
                    f"{source_batch} stayed unreadable after {exc.attempts} fetches ({exc.reason}) and carries no "
                    "cursor to continue from, so the rest of the pull cannot be fetched. Nothing was stored; "
                    "re-run the partition when the ERP serves complete pages.",
                ) from None
            go_on(next_page)
            return ErpPage(source_batch, body, None, exc.reason, exc.attempts, cursor, limit), next_page
        return ErpPage(source_batch, answer.content, parsed, None, max(1, reads), cursor, limit), next_page

    def _narrowed(
        self,
        path: str,
        params: dict[str, str | int],
        broken: ErpPage,
        limit: int,
        end: str | None,
        reader: Callable[[bytes], Any] | None,
    ) -> list[ErpPage]:
        """The documents of a page that stayed unreadable, read again from its cursor in pages of
        half its size, each broken half halved again: only documents unreadable on their own (a
        page of one) stay unreadable, so one stray byte costs one document instead of the page.

        The halves end at the broken page's own next cursor (`end`). Should the ERP's paging not
        land on it (a page boundary that replays documents), at most twice the page's documents
        are read: what overlaps the next page is a repeat, dropped as any served twice.
        """
        if limit <= 1:  # one document unreadable alone: named so, it is not a page lost whole
            return [replace(broken, source_batch=f"{broken.source_batch}:document")]
        half = (limit + 1) // 2
        # The two halves cover the page exactly; only a paging that replays documents needs more.
        sizes = [half, limit - half, *[half] * 2]
        pages: list[ErpPage] = []
        cursor = broken.cursor
        for part, size in enumerate(sizes, start=1):
            page, next_page = self._fetch_page(path, params, cursor, size, f"{broken.source_batch}.{part}", reader)
            pages.extend([page] if page.error is None else self._narrowed(path, params, page, size, next_page, reader))
            cursor = next_page
            if cursor is None or cursor == end:
                break
        return pages

    # --- the API -------------------------------------------------------------------------------

    def transaction_pages(
        self,
        business_date: dt.date,
        timezone: str,
        reader: Callable[[bytes], Any] | None = None,
        warehouse_id: str | None = None,
    ) -> Iterator[ErpPage]:
        """Every page of order documents whose business time falls on `business_date` (in
        `timezone`: the warehouse's), of one warehouse when `warehouse_id` is given.

        `reader(body)` is called inside the retry loop; whatever it raises makes the page a
        transient failure (fetched again), and a page that never becomes readable is yielded
        with `error` set (see the module docstring).
        """
        start, end = business_day_bounds(business_date, timezone)
        params = {"since": _iso(start), "until": _iso(end), "time_field": "event_ts", **_site(warehouse_id)}
        yield from self._paged("/v1/transactions", params, f"erp:{_batch_site(warehouse_id)}{business_date.isoformat()}", reader)

    def changed_pages(
        self,
        since: dt.datetime,
        until: dt.datetime,
        reader: Callable[[bytes], Any] | None = None,
        warehouse_id: str | None = None,
    ) -> Iterator[ErpPage]:
        """Documents committed in [since, until), whatever their business date (delta polling)."""
        params = {"since": _iso(since), "until": _iso(until), "time_field": "created_at", **_site(warehouse_id)}
        yield from self._paged("/v1/transactions", params, f"erp-delta:{_batch_site(warehouse_id)}{_iso(since)}", reader)

    def skus_by_id(self, sku_ids: list[str], reader: Callable[[bytes], Any]) -> Any:
        """The SKU master's records of the named SKUs (those it knows), read by `reader`."""
        return self._get("/v1/skus", {"ids": ",".join(sku_ids)}, lambda a: reader(a.content))[1]

    def count_lines(self, business_date: dt.date, warehouse_id: str | None = None) -> int:
        """Lines the ERP holds for a business date (the warehouse's local day when one is named)."""
        params = {"business_date": business_date.isoformat(), **_site(warehouse_id)}
        return int(self._get_json("/v1/transactions/count", params)["lines"])

    def skus(self, reader: Callable[[bytes], Any] | None = None) -> list:
        """The SKU master: every record (as dicts), or with `reader` what it made of each page."""
        parsed: list = []
        for page in self._paged("/v1/skus", {}, "erp-skus", reader or _records):
            if page.error:
                raise UpstreamError(SYSTEM, f"{page.source_batch} of the SKU master stayed unreadable: {page.error}")
            if reader is None:
                parsed.extend(page.parsed)
            else:
                parsed.append(page.parsed)
        return parsed


@dataclass(kw_only=True)
class AsyncErpClient(AsyncUpstreamApiClient):
    """The ERP for the exception service: what was committed since a moment."""

    SYSTEM: ClassVar[str] = SYSTEM
    token_source: str = "VELOCITY_ERP_TOKEN"

    async def committed_since(
        self,
        since: dt.datetime,
        reader: Callable[[bytes], Any],
        *,
        wait_s: float = 0.0,
        max_pages: int = 50,
        warehouse_id: str | None = None,
    ) -> list[ErpPage]:
        """Pages of the documents committed at or after `since` (by `created_at`), in commit order.

        `wait_s` > 0 asks the ERP to hold an empty first answer until something is committed
        (long polling; an ERP that offers it takes `wait_s`). At most `max_pages` pages: the rest
        is read by the next call, from the watermark the caller advances. A page that stays
        unreadable but still carries its cursor comes back with `error` set; one without a
        cursor to go on from raises UpstreamError. `warehouse_id`: one warehouse's documents only.
        """
        params: dict[str, str | int] = {
            "since": _iso(since), "time_field": "created_at", "limit": self.page_limit, **_site(warehouse_id)
        }
        if wait_s > 0:
            params["wait_s"] = f"{wait_s:g}"
        pages: list[ErpPage] = []
        cursor: str | None = None
        while len(pages) < max_pages:
            query = dict(params, cursor=cursor) if cursor else params
            source_batch = f"erp-delta:{_batch_site(warehouse_id)}{_iso(since)}:page-{len(pages) + 1:04d}"

            def read(answer: HttpAnswer) -> tuple[Any, str | None]:
                next_page = cursor_of(answer.content)
                return read_page(answer.content, reader), next_page

            try:
                answer, (parsed, cursor) = await self._aget("/v1/transactions", query, read)
                pages.append(ErpPage(source_batch, answer.content, parsed))
            except BodyStillInvalid as exc:
                found, cursor = next_cursor(exc.answer.content)
                if not found:
                    raise UpstreamError(
                        SYSTEM,
                        f"{source_batch} stayed unreadable after {exc.attempts} fetches ({exc.reason}) and carries no "
                        "cursor to continue from; the watermark stays and the next read starts from it again",
                    ) from None
                pages.append(ErpPage(source_batch, exc.answer.content, None, exc.reason, exc.attempts))
            params.pop("wait_s", None)  # only an empty first answer is worth waiting for
            if not cursor:
                break
        return pages


def _site(warehouse_id: str | None) -> dict[str, str]:
    """The ERP's warehouse filter (none: every warehouse, as a one-site ERP has always answered)."""
    return {"warehouse_id": warehouse_id} if warehouse_id else {}


def _batch_site(warehouse_id: str | None) -> str:
    """The warehouse in a source batch name ("erp:WH-02:2026-03-01:page-0001"), so two sites'
    pages of a date never share one."""
    return f"{warehouse_id}:" if warehouse_id else ""


def _json_or_invalid(answer: HttpAnswer) -> Any:
    try:
        return orjson.loads(answer.content)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"not valid JSON ({exc})") from None


def _records(body: bytes) -> list[dict]:
    try:
        records = orjson.loads(body)["records"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidBody(f"not a page of records ({type(exc).__name__})") from None
    if not isinstance(records, list):
        raise InvalidBody("records is not a list")
    return records


_CURSOR_AT_END = re.compile(rb'"next_cursor"\s*:\s*(null|"([^"\\]*)")\s*}\s*\Z')


def next_cursor(body: bytes) -> tuple[bool, str | None]:
    """(found, cursor): the paging cursor, read from the end of the page without parsing it all.

    `found` is False when the page does not end with its cursor (cut short, or a different
    layout that does not parse either): then "no next page" cannot be told from "lost".
    """
    match = _CURSOR_AT_END.search(body[-1024:])
    if match:
        return True, None if match.group(1) == b"null" else match.group(2).decode()
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None
    if not isinstance(page, dict) or "next_cursor" not in page:
        return False, None
    cursor = page["next_cursor"]
    return True, cursor if isinstance(cursor, str) and cursor else None


def cursor_of(body: bytes) -> str | None:
    """The page's next cursor; InvalidBody when the page does not end with one (cut short: a
    page that lost its cursor cannot tell "last page" from "lost", so it is fetched again)."""
    found, cursor = next_cursor(body)
    if not found:
        raise InvalidBody("the page ends before its next_cursor (truncated)")
    return cursor


def read_page(body: bytes, reader: Callable[[bytes], Any]) -> Any:
    """What `reader` makes of a page; whatever it cannot make sense of is an unreadable page
    (InvalidBody: fetched again inside the client's retry loop)."""
    try:
        return reader(body)
    except InvalidBody:
        raise
    except Exception as exc:
        raise InvalidBody(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
