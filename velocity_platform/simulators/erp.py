"""ERP simulator: order documents over a paged HTTP API, with the faults of a real ERP.

Data is generated per business date on first use (``catalog.generate_day``) and kept in a small
LRU; pages are selected with numpy on per-day sorted views and only the page is rendered to JSON.

Live commits: `POST /v1/transactions` commits one order document now (its `created_at`, to the
microsecond and strictly increasing, is set at commit and returned) and `POST /v1/skus` registers
a new product in the SKU master. A committed document is visible to the next read by commit
time at once; a reader of `time_field=created_at` may pass `wait_s` to be answered as soon as
something is committed (long polling) instead of with an empty page.

Fault model:
- transient faults (429, 5xx, slow, dropped connection, truncated JSON) are rolled once per
  request attempt from a seeded stream, so a retry can succeed;
- data faults (malformed lines, schema drift, late arrivals, repeated documents across page
  boundaries) are a pure function of the seed and the data, so every pull sees the same thing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio.to_thread
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import _http
from .catalog import (
    LATE_MAX_DAYS,
    MAX_COMMIT_DELAY_S,
    Catalog,
    DayBatch,
    build_catalog,
    day_bounds_utc,
    generate_day,
    network_catalog,
)

__all__ = ["ErpConfig", "ErpSimulator", "create_erp_app"]

_TRANSIENT = ("fault_rate_429", "fault_rate_5xx", "fault_rate_slow", "fault_rate_drop", "fault_rate_bad_json")
_TIME_FIELDS = ("event_ts", "created_at")
_CORRUPT = "__corrupt_served__"  # marks a page to be served broken (never leaves the simulator)
_SITE_SERVED = "__site_served__"  # documents and lines served per warehouse (never leaves the simulator)
DEFAULT_WAREHOUSE = "WH-01"
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")  # as domain/network.WAREHOUSE_ID_PATTERN


@dataclass(frozen=True)
class Site:
    """One warehouse the ERP serves: its id, its time zone (its business day), its demand."""

    warehouse_id: str
    timezone: str
    no: int  # 1-based in a network of several sites; 0 for the one site of a single-warehouse ERP
    weight: np.ndarray | None  # popularity factor per catalog SKU (None: the catalog's own)


def parse_sites(raw: str | list | tuple | None, default_tz: str) -> list[tuple[str, str]]:
    """`ID[@TZ],...` -> [(id, tz)]; a site without a zone takes `default_tz`. ValueError on bad input."""
    if raw is None or raw == "" or raw == []:
        return [(DEFAULT_WAREHOUSE, default_tz)]
    items = [i.strip() for i in raw.split(",")] if isinstance(raw, str) else list(raw)
    sites: list[tuple[str, str]] = []
    for item in items:
        wid, _, tz = item.partition("@") if isinstance(item, str) else (item[0], "@", item[1])
        wid, tz = wid.strip(), (tz.strip() or default_tz)
        if not _SITE_ID.match(wid):
            raise ValueError(f"warehouse id {wid!r} is not valid: 1-32 letters, digits, '-' or '_'")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r} for warehouse {wid}") from exc
        if any(wid == w for w, _ in sites):
            raise ValueError(f"warehouse {wid} is listed twice")
        sites.append((wid, tz))
    if not sites:
        raise ValueError("--warehouses names no warehouse")
    return sites


@dataclass
class ErpConfig:
    seed: int = 7
    skus: int = 2000
    lines_per_day: int = 4000
    start: date | None = None  # None: the history ends yesterday (UTC) and spans `days`
    days: int = 120
    timezone: str = "Europe/London"  # warehouse time zone: maps event_ts to business dates
    token: str = "erp-dev-token"
    malformed_rate: float = 0.0005
    # One site's own share of malformed lines ("WH-02=0.02,..."; the others keep malformed_rate):
    # a data fault in one warehouse's feed.
    malformed_rate_by_site: str | dict | None = None
    default_limit: int = 1000
    max_limit: int = 10000
    cache_days: int = 8  # LRU of generated business dates
    # Simulated clock: records with created_at > now are invisible. None = real time.
    now: datetime | None = None
    # True: business dates after the history's end keep being generated up to the clock's date
    # (a live ERP for demos). False: the ERP holds exactly start..start+days-1.
    extend_to_clock: bool = False
    # Transient faults, rolled per request attempt (their sum must be <= 1).
    fault_rate_429: float = 0.0
    retry_after_seconds: int = 1
    fault_rate_5xx: float = 0.0
    fault_rate_slow: float = 0.0
    slow_seconds: float = 5.0
    fault_rate_drop: float = 0.0
    fault_rate_bad_json: float = 0.0
    # Data faults, stable per seed.
    fault_rate_duplicate: float = 0.0  # share of page boundaries that repeat 1-3 documents
    # Share of pages of default_limit documents served with invalid JSON inside one document on
    # every fetch (the envelope and its next_cursor stay intact): an export that is broken, not a
    # flaky connection. The broken documents are stable; any page holding one is served broken.
    fault_rate_corrupt_page: float = 0.0
    late_arrival_rate: float = 0.0  # share of documents committed 1-3 days after their date
    fault_rate_drift: float = 0.0  # share of documents with schema drift
    # The count endpoint reports this many lines more than it serves, for every date with data: an
    # ERP whose count includes lines on hold. Reconciliation must catch it.
    count_excess_lines: int = 0
    # The warehouses served: "ID[@TZ],..." (a site without a zone takes `timezone`). One site,
    # WH-01, serves exactly today's documents; several sites each have their own demand mix.
    warehouses: str | list = DEFAULT_WAREHOUSE
    # SKUs sold at one site only, per site, when there are several (None: a tenth of `skus`).
    site_only_skus: int | None = None

    def site_malformed_rate(self, warehouse_id: str) -> float:
        return float((self.malformed_rate_by_site or {}).get(warehouse_id, self.malformed_rate))

    def __post_init__(self) -> None:
        if isinstance(self.malformed_rate_by_site, str):
            pairs = [part.split("=", 1) for part in self.malformed_rate_by_site.split(",") if part.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"malformed_rate_by_site {self.malformed_rate_by_site!r}: write ID=RATE,...")
            self.malformed_rate_by_site = {k.strip(): float(v) for k, v in pairs}
        for site, rate in (self.malformed_rate_by_site or {}).items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"malformed_rate_by_site: {site}'s rate {rate} is not between 0 and 1")
        # Accept CLI-style strings for the typed fields.
        if isinstance(self.start, str):
            self.start = date.fromisoformat(self.start)
        if isinstance(self.now, str):
            self.now = _parse_datetime(self.now, "now")
        elif isinstance(self.now, datetime) and self.now.tzinfo is None:
            self.now = self.now.replace(tzinfo=UTC)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", "float") and isinstance(v, str):
                setattr(self, f.name, int(v) if f.type == "int" else float(v))
        if isinstance(self.extend_to_clock, str):
            self.extend_to_clock = self.extend_to_clock.lower() in ("1", "true", "yes")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        if not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("need 1 <= default_limit <= max_limit")
        _http.validate_rates(self, _TRANSIENT)
        _http.validate_rates(self, ("fault_rate_duplicate",))
        _http.validate_rates(self, ("fault_rate_corrupt_page",))
        _http.validate_rates(self, ("late_arrival_rate",))
        _http.validate_rates(self, ("fault_rate_drift",))
        _http.validate_rates(self, ("malformed_rate",))
        self.sites = parse_sites(self.warehouses, self.timezone)
        if len(self.sites) > 99:
            raise ValueError("at most 99 warehouses per simulated ERP")
        if isinstance(self.site_only_skus, str):
            self.site_only_skus = int(self.site_only_skus)


def _parse_datetime(raw: str, name: str) -> datetime:
    raw = raw.strip()
    if "T" in raw and " " in raw.split("T", 1)[1]:
        raw = raw.replace(" ", "+")  # an unescaped "+00:00" in a query string arrives as " 00:00"
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise _http.BadRequest(f"{name} is not an ISO-8601 timestamp: {raw!r}") from None
    if not 1900 <= dt.year <= 9000:
        raise _http.BadRequest(f"{name} is out of range: {raw!r}")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _parse_ts(raw: str | None, name: str) -> int | None:
    """ISO-8601 -> epoch seconds, rounded up (so since/until keep their inclusive/exclusive sense)."""
    if raw is None or raw == "":
        return None
    ts = _parse_datetime(raw, name).timestamp()
    return int(ts) if ts == int(ts) else int(ts) + 1


def _parse_us(raw: str | None) -> int | None:
    """ISO-8601 -> epoch microseconds (live commits are ordered to the microsecond)."""
    if raw is None or raw == "":
        return None
    moment = _parse_datetime(raw, "since/until")
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _iso_us(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def _wait_seconds(raw: str | None) -> float:
    try:
        return min(30.0, max(0.0, float(raw))) if raw else 0.0
    except ValueError:
        return 0.0


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Day:
    """A generated business date plus lazily built sort orders per time field."""

    def __init__(self, batch: DayBatch, lo: int, hi: int) -> None:
        self.batch = batch
        self.lo, self.hi = lo, hi
        self.key = batch.txn_key
        self._orders: dict[str, tuple[np.ndarray, ...]] = {}
        self._lock = threading.Lock()

    def order(self, time_field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(perm, times, keys, created_at) in (time_field, txn_id) order."""
        with self._lock:
            got = self._orders.get(time_field)
            if got is None:
                t = self.batch.event_ts if time_field == "event_ts" else self.batch.created_at
                perm = np.lexsort((self.key, t))
                got = (perm, t[perm], self.key[perm], self.batch.created_at[perm])
                self._orders[time_field] = got
            return got  # type: ignore[return-value]


class ErpSimulator:
    def __init__(self, config: ErpConfig) -> None:
        self.config = config
        if len(config.sites) == 1:
            self.catalog: Catalog = build_catalog(config.seed, config.skus, config.start, config.days)
            (wid, tz), = config.sites
            self.sites = [Site(wid, tz, 0, None)]
        else:
            site_only = config.skus // 10 if config.site_only_skus is None else config.site_only_skus
            codes = [re.sub(r"[^A-Z0-9-]", "-", w.upper())[:12] for w, _ in config.sites]
            self.catalog, weights = network_catalog(config.seed, config.skus, config.start, config.days, codes, site_only)
            self.sites = [Site(w, tz, k + 1, weights[k]) for k, (w, tz) in enumerate(config.sites)]
        self.site_by_id = {site.warehouse_id: site for site in self.sites}
        self.tz = ZoneInfo(config.timezone)
        self._clock_lock = threading.Lock()
        self._now_override: int | None = int(config.now.timestamp()) if config.now else None
        self._cache: OrderedDict[tuple[int, int], _Day] = OrderedDict()  # (site no, date ordinal)
        self._cache_lock = threading.Lock()
        self._gen_locks: dict[tuple[int, int], threading.Lock] = {}
        self._dice = _http.FaultDice(config.seed, 1)
        self.counters = _http.Counters()
        self.load = _http.LoadMeter()
        self._data_faults: dict[str, Any] = {}
        self._corrupt_served: dict[str, dict[str, list[int]]] = {}
        self._site_faults: dict[str, dict[str, Any]] = {}  # warehouse -> business date -> data faults
        self._corrupt_documents: dict[str, tuple[str, int]] = {}  # document -> (business date, lines)
        # How far created_at can trail the business date (bounds the days a created_at query scans).
        late = LATE_MAX_DAYS * 86_400 if config.late_arrival_rate > 0 else 0
        self._max_lag_s = MAX_COMMIT_DELAY_S + late + 86_400
        # Documents committed live (POST /v1/transactions), in commit order: (created_us, document).
        self._live_lock = threading.Lock()
        self._live_created: list[int] = []
        self._live_docs: list[dict[str, Any]] = []
        self._live_ids: set[str] = set()
        self._registered: dict[str, dict[str, Any]] = {}  # SKUs registered live, in registration order
        self._committed: asyncio.Event | None = None  # set (and replaced) at every commit: wakes long polls

    # --- clock and range -------------------------------------------------------------------
    def now(self) -> int:
        with self._clock_lock:
            return self._now_override if self._now_override is not None else int(time.time())

    def set_clock(self, now: datetime | None) -> None:
        with self._clock_lock:
            self._now_override = None if now is None else int(now.timestamp())

    def local_date(self, ts: int, site: Site | None = None) -> date:
        return datetime.fromtimestamp(ts, ZoneInfo(site.timezone) if site else self.tz).date()

    def date_range(self, site: Site | None = None) -> tuple[int, int]:
        """Ordinals of the first and last business date the ERP holds (at a site: its local dates)."""
        end = self.catalog.end.toordinal()
        if self.config.extend_to_clock:
            end = max(end, self.local_date(self.now(), site).toordinal())
        return self.catalog.start.toordinal(), end

    def site(self, warehouse_id: str | None) -> list[Site]:
        """The sites a query reads: the one named, or all of them; unknown id -> 404."""
        if warehouse_id is None or warehouse_id == "":
            return self.sites
        site = self.site_by_id.get(warehouse_id)
        if site is None:
            known = ", ".join(self.site_by_id)
            raise _http.BadRequest(f"unknown warehouse_id {warehouse_id!r}: this ERP serves {known}", 404)
        return [site]

    # --- data ------------------------------------------------------------------------------
    def day(self, ordinal: int, site: Site | None = None) -> _Day:
        site = site or self.sites[0]
        key = (site.no, ordinal)
        with self._cache_lock:
            got = self._cache.get(key)
            if got is not None:
                self._cache.move_to_end(key)
                return got
            gen_lock = self._gen_locks.setdefault(key, threading.Lock())
        with gen_lock:  # one generation per date even under concurrent requests
            with self._cache_lock:
                got = self._cache.get(key)
                if got is not None:
                    return got
            d = date.fromordinal(ordinal)
            cfg = self.config
            batch = generate_day(
                # The first site draws today's orders; every other site its own.
                cfg.seed if site.no <= 1 else cfg.seed * 1009 + 100 + site.no,
                self.catalog,
                d,
                cfg.lines_per_day,
                site.timezone,
                malformed_rate=cfg.site_malformed_rate(site.warehouse_id),
                late_arrival_rate=cfg.late_arrival_rate,
                drift_rate=cfg.fault_rate_drift,
                warehouse_id=site.warehouse_id,
                site_no=site.no,
                site_weight=site.weight,
            )
            got = _Day(batch, *day_bounds_utc(d, site.timezone))
            with self._cache_lock:
                self._cache[key] = got
                while len(self._cache) > max(1, cfg.cache_days * len(self.sites)):
                    self._cache.popitem(last=False)
                self._gen_locks.pop(key, None)
                faults = batch.fault_counts
                if len(self.sites) > 1:  # one site's faults do not overwrite another's
                    self._site_faults.setdefault(site.warehouse_id, {})[d.isoformat()] = faults
                    faults = _sum_faults([f.get(d.isoformat()) for f in self._site_faults.values()])
                self._data_faults[d.isoformat()] = faults
            return got

    def count(self, business_date: date, warehouse_id: str | None = None) -> dict[str, Any]:
        """Documents and lines of a business date (each site's own local day), of one site or all."""
        d = business_date.toordinal()
        now = self.now()
        docs = lines = 0
        for site in self.site(warehouse_id):
            lo, hi = self.date_range(site)
            if lo <= d <= hi and day_bounds_utc(business_date, site.timezone)[0] <= now:
                day = self.day(d, site)
                vis = day.batch.created_at <= now
                docs += int(vis.sum())
                lines += int(day.batch.n_lines[vis].sum()) + self.config.count_excess_lines
        body: dict[str, Any] = {"business_date": business_date.isoformat(), "documents": docs, "lines": lines}
        if warehouse_id:
            body["warehouse_id"] = warehouse_id
        return body

    def select(
        self,
        since: int | None,
        until: int | None,
        time_field: str,
        after: tuple[int, int] | None,
        limit: int,
        sites: list[Site] | None = None,
        bounds: dict[int, tuple[int, int]] | None = None,
    ) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, int, int]], bool]:
        """Next page in (time_field, txn_id) order, over the given sites (default: all).

        `bounds` gives a site (by no) its own [since, until) (a business date is each site's
        local day). Returns (day ordinal, doc indices) groups, the page's (time, key, day)
        sequence in order, and whether more records follow; with several sites a group's and a
        sequence entry's day is `(site no, ordinal)`.
        """
        sites = sites or self.sites
        if len(self.sites) == 1:
            t_all, k_all, i_all, d_all = self._select_site(self.sites[0], since, until, time_field, after, limit)
        else:
            parts = []
            for site in sites:
                lo, hi = (bounds or {}).get(site.no, (since, until))
                t, k, i, d = self._select_site(site, lo, hi, time_field, after, limit)
                parts.append((t, k, i, d, np.full(len(t), site.no)))
            t_all, k_all, i_all, d_all, s_all = (np.concatenate(c) for c in zip(*parts))
            order = np.lexsort((k_all, t_all))[: limit + 1]
            t_all, k_all, i_all = t_all[order], k_all[order], i_all[order]
            d_all = s_all[order] * 10_000_000 + d_all[order]  # site and day in one number
        has_more = len(t_all) > limit
        t_all, k_all, i_all, d_all = t_all[:limit], k_all[:limit], i_all[:limit], d_all[:limit]
        groups = [(int(o), i_all[d_all == o]) for o in np.unique(d_all)]
        seq = list(zip(t_all.tolist(), k_all.tolist(), d_all.tolist()))
        return groups, seq, has_more

    def _site_day(self, code: int) -> tuple[Site, int]:
        """(site, ordinal) of a day code from select()."""
        if len(self.sites) == 1:
            return self.sites[0], code
        return self.sites[code // 10_000_000 - 1], code % 10_000_000

    def _select_site(
        self, site: Site, since: int | None, until: int | None, time_field: str, after: tuple[int, int] | None, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The first limit+1 documents of one site after `after`: (times, keys, doc indices, days)."""
        now = self.now()
        first, last = self.date_range(site)
        lower = max(x for x in (since, after[0] if after else None, -(2**62)) if x is not None)
        lag = self._max_lag_s if time_field == "created_at" else 0
        if lower > -(2**62):
            first = max(first, self.local_date(lower - lag, site).toordinal())
        if until is not None:
            last = min(last, self.local_date(until - 1, site).toordinal())
        last = min(last, self.local_date(now, site).toordinal())  # later days have nothing visible

        t_all = np.zeros(0, np.int64)
        k_all = np.zeros(0, np.int64)
        i_all = np.zeros(0, np.int64)
        d_all = np.zeros(0, np.int64)
        for ordinal in range(first, last + 1):
            if len(t_all) > limit:
                # Every document of this day (and later ones) has a time >= the day's start.
                if t_all[limit] < day_bounds_utc(date.fromordinal(ordinal), site.timezone)[0]:
                    break
            day = self.day(ordinal, site)
            perm, times, keys, created = day.order(time_field)
            s = 0 if since is None else int(np.searchsorted(times, since, "left"))
            if after is not None:
                a_lo = int(np.searchsorted(times, after[0], "left"))
                a_hi = int(np.searchsorted(times, after[0], "right"))
                s = max(s, a_lo + int(np.searchsorted(keys[a_lo:a_hi], after[1], "right")))
            e = len(times) if until is None else int(np.searchsorted(times, until, "left"))
            if e <= s:
                continue
            pos = s + np.flatnonzero(created[s:e] <= now)[: limit + 1]
            t_all = np.concatenate([t_all, times[pos]])
            k_all = np.concatenate([k_all, keys[pos]])
            i_all = np.concatenate([i_all, perm[pos]])
            d_all = np.concatenate([d_all, np.full(len(pos), ordinal)])
            order = np.lexsort((k_all, t_all))[: limit + 1]
            t_all, k_all, i_all, d_all = t_all[order], k_all[order], i_all[order], d_all[order]
        return t_all, k_all, i_all, d_all

    # --- endpoint bodies (run in a worker thread) -------------------------------------------
    def transactions_page(self, params: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[int]]]:
        cfg = self.config
        unknown = set(params) - {"since", "until", "cursor", "limit", "time_field", "business_date", "wait_s", "warehouse_id"}
        if unknown:
            raise _http.BadRequest(f"unknown query parameter(s): {sorted(unknown)}")
        wid = params.get("warehouse_id") or None
        sites = self.site(wid)
        bdate = params.get("business_date")
        since = _parse_ts(params.get("since"), "since")
        until = _parse_ts(params.get("until"), "until")
        bounds: dict[int, tuple[int, int]] | None = None
        if bdate:
            if since is not None or until is not None:
                raise _http.BadRequest("give either business_date or since/until, not both")
            day = _parse_date(bdate)
            if len(sites) == 1:
                since, until = day_bounds_utc(day, sites[0].timezone)
            else:  # each site's own local day
                bounds = {site.no: day_bounds_utc(day, site.timezone) for site in sites}
        if since is not None and until is not None and until < since:
            raise _http.BadRequest("until must not be before since")
        time_field = params.get("time_field") or ("event_ts" if bdate else "created_at")
        if time_field not in _TIME_FIELDS:
            raise _http.BadRequest(f"time_field must be one of {list(_TIME_FIELDS)}, got {time_field!r}")
        limit = _http.parse_limit(params.get("limit"), cfg.default_limit, cfg.max_limit)

        query_tag: list[Any] = [since, until, time_field] if bounds is None else [bdate, None, time_field]
        if wid:
            query_tag.append(wid)
        after = None
        if time_field == "created_at":
            live_page = self._live_page(params, query_tag, limit)
            if live_page is not None:
                return live_page
        if params.get("cursor"):
            cur = _http.decode_cursor(params["cursor"])
            if not (isinstance(cur, list) and len(cur) == 3 and cur[0] == query_tag):
                raise _http.BadRequest("cursor does not belong to this query (same since/until/time_field required)")
            after = (int(cur[1]), int(cur[2]))

        groups, seq, has_more = self.select(since, until, time_field, after, limit, sites, bounds)
        rendered: dict[int, list[dict[str, Any]]] = {}
        served: dict[str, list[int]] = {}
        site_served: dict[str, list[int]] = {}
        for code, idx in groups:
            site, ordinal = self._site_day(code)
            batch = self.day(ordinal, site).batch
            rendered[code] = batch.documents(idx)
            docs_lines = [len(idx), int(batch.n_lines[idx].sum())]
            bd = served.setdefault(batch.business_date.isoformat(), [0, 0])
            at_site = site_served.setdefault(site.warehouse_id, [0, 0])
            for into in (bd, at_site):
                into[0] += docs_lines[0]
                into[1] += docs_lines[1]
        # Merge the per-day renders back into the page order.
        pos = {o: 0 for o in rendered}
        records = []
        for _, _, o in seq:
            records.append(rendered[o][pos[o]])
            pos[o] += 1

        next_cursor = None
        if not has_more and time_field == "created_at" and self._live_created:
            # The generated history is read: live commits follow under a cursor of their own.
            live, _ = self._live_between(_parse_us(params.get("since")), _parse_us(params.get("until")), 0, 1, wid)
            if live:
                next_cursor = _http.encode_cursor(["live", query_tag, 0])
        if has_more and seq:
            last = len(seq) - 1
            if cfg.fault_rate_duplicate > 0 and len(seq) >= 2:
                # Stable data fault: this page boundary replays 1-3 documents on the next page.
                u = _http.stable_uniform(cfg.seed, "dup", seq[last][0], seq[last][1])
                if u < cfg.fault_rate_duplicate:
                    last -= 1 + int(u * 1e6) % min(3, len(seq) - 1)
                    self.counters.add("faults", "duplicate_page")
            next_cursor = _http.encode_cursor([query_tag, seq[last][0], seq[last][1]])
        page = {"records": records, "next_cursor": next_cursor, _SITE_SERVED: site_served}
        if seq and cfg.fault_rate_corrupt_page > 0:
            # Stable data fault of single documents, whatever page they are served on: a document
            # is broken with the rate spread over a page of the ERP's default size, so about that
            # share of such pages hold one. A page is served with a stray byte in its first broken
            # document on every fetch; a page without one reads intact, so a client can narrow down.
            per_document = cfg.fault_rate_corrupt_page / cfg.default_limit
            at = next(
                (j for j, (t, k, _) in enumerate(seq) if _http.stable_uniform(cfg.seed, "corrupt", query_tag, t, k) < per_document),
                None,
            )
            if at is not None:
                t, k, ordinal = seq[at]
                document = (orjson.dumps([query_tag, t, k]).decode(), self.day(ordinal).batch.business_date.isoformat(), len(records[at].get("lines") or []))
                page[_CORRUPT] = (orjson.dumps([query_tag, seq[0][0], seq[0][1], limit]).decode(), served, document, at)
                served = {}
        return page, served

    def _live_page(self, params: dict[str, str], query_tag: list, limit: int) -> tuple[dict[str, Any], dict] | None:
        """A page of live commits when the cursor points into them (or the history holds nothing
        for the window); None when the generated history must be read first."""
        since_us, until_us = _parse_us(params.get("since")), _parse_us(params.get("until"))
        after = 0
        if params.get("cursor"):
            cur = _http.decode_cursor(params["cursor"])
            if not (isinstance(cur, list) and len(cur) == 3 and cur[0] == "live"):
                return None
            if cur[1] != query_tag:
                raise _http.BadRequest("cursor does not belong to this query (same since/until/time_field required)")
            after = int(cur[2])
        elif since_us is None or self._history_reaches(since_us):
            return None  # the generated history comes first; live commits follow it
        docs, nxt = self._live_between(since_us, until_us, after, limit, params.get("warehouse_id") or None)
        cursor = _http.encode_cursor(["live", query_tag, nxt]) if nxt is not None else None
        return {"records": docs, "next_cursor": cursor}, {}

    def _history_reaches(self, since_us: int) -> bool:
        """Could the generated history hold documents committed at or after `since_us`?"""
        last = self.date_range()[1]
        end_of_history = day_bounds_utc(date.fromordinal(last), self.config.timezone)[1] + self._max_lag_s
        return since_us // 1_000_000 < end_of_history

    def skus_page(self, params: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[int]]]:
        limit = _http.parse_limit(params.get("limit"), self.config.default_limit, self.config.max_limit)
        if params.get("ids"):
            # A lookup of named SKUs (how a follower learns a product registered since its last read).
            wanted = [i for i in params["ids"].split(",") if i][: self.config.max_limit]
            known = [self.catalog.index[i] for i in wanted if i in self.catalog.index]
            with self._live_lock:
                registered = [self._registered[i] for i in wanted if i in self._registered]
            return {"records": self.catalog.rows(known) + registered, "next_cursor": None}, {}
        offset = 0
        if params.get("cursor"):
            cur = _http.decode_cursor(params["cursor"])
            if not (isinstance(cur, list) and len(cur) == 2 and cur[0] == "skus" and isinstance(cur[1], int)):
                raise _http.BadRequest("invalid cursor")
            offset = cur[1]
        listable = np.flatnonzero(self.catalog.introduced_ord <= self.date_range()[1])
        idx = listable[offset : offset + limit]
        with self._live_lock:
            registered = list(self._registered.values())
        # Registered SKUs follow the generated ones, in registration order.
        extra = registered[max(0, offset - len(listable)) : max(0, offset + limit - len(listable))]
        more = offset + limit < len(listable) + len(registered)
        return {
            "records": self.catalog.rows(idx) + extra,
            "next_cursor": _http.encode_cursor(["skus", offset + limit]) if more else None,
        }, {}

    def count_body(self, params: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[int]]]:
        raw = params.get("business_date")
        if not raw:
            raise _http.BadRequest("business_date=YYYY-MM-DD is required")
        wid = params.get("warehouse_id") or None
        self.site(wid)  # an unknown site is a 404 before the date is read
        return self.count(_parse_date(raw), wid), {}

    # --- live commits ----------------------------------------------------------------------------
    def commit(self, document: Any) -> dict[str, Any]:
        """Commit one order document now; returns it with its created_at. The document's fields are
        kept as sent (a real ERP stores what its users key in; the platform judges the lines)."""
        if not isinstance(document, dict):
            raise _http.BadRequest("body must be one order document (a JSON object)")
        txn_id = document.get("txn_id")
        if not isinstance(txn_id, str) or not txn_id.strip():
            raise _http.BadRequest("txn_id must be a non-empty string")
        if not isinstance(document.get("lines"), list):
            raise _http.BadRequest("lines must be a list of {line_no, sku_id, quantity, uom}")
        # Every document belongs to a site: the first one unless it names another.
        document = {**document, "warehouse_id": document.get("warehouse_id") or self.sites[0].warehouse_id}
        if not isinstance(document["warehouse_id"], str):
            raise _http.BadRequest("warehouse_id must be a string")
        self.site(document["warehouse_id"])
        with self._live_lock:
            if txn_id in self._live_ids:
                raise _http.BadRequest(f"txn_id {txn_id!r} is already committed", 409)
            now_us = time.time_ns() // 1000
            created_us = max(now_us, self._live_created[-1] + 1) if self._live_created else now_us
            committed = {k: v for k, v in document.items() if k != "created_at"}
            committed["created_at"] = _iso_us(created_us)
            committed.setdefault("event_ts", committed["created_at"])
            self._live_created.append(created_us)
            self._live_docs.append(committed)
            self._live_ids.add(txn_id)
        self.counters.add("served", "live", "committed")
        return committed

    def register_sku(self, record: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Add a product to the SKU master (the /v1/skus record shape; sensible defaults filled).
        A list of records registers each of them (a product catalogue loaded at once)."""
        if isinstance(record, list):
            return [self.register_sku(r) for r in record]
        if not isinstance(record, dict) or not isinstance(record.get("sku_id"), str):
            raise _http.BadRequest("body must be a SKU record with a sku_id")
        sku_id = record["sku_id"]
        if sku_id in self.catalog.index:
            raise _http.BadRequest(f"sku_id {sku_id!r} is already in the SKU master", 409)
        row = {
            "sku_id": sku_id,
            "description": f"new product {sku_id}",
            "category": "New",
            "subcategory": "New",
            "unit_cube_ft3": 0.1,
            "unit_weight_lb": 1.0,
            "case_qty": 12,
            "pallet_qty": 480,
            "case_cube_ft3": 1.2,
            "uoms": ["EA", "CS"],
            "introduced_on": datetime.now(self.tz).date().isoformat(),
            **record,
        }
        with self._live_lock:
            if sku_id in self._registered:
                raise _http.BadRequest(f"sku_id {sku_id!r} is already in the SKU master", 409)
            self._registered[sku_id] = row
        return row

    def _live_between(
        self, since_us: int | None, until_us: int | None, after: int, limit: int, warehouse_id: str | None = None
    ) -> tuple[list[dict], int | None]:
        """Live documents with since <= created_at < until (of one site, when named), from
        position `after`; (page, next position)."""
        import bisect

        with self._live_lock:
            created = self._live_created
            lo = max(after, bisect.bisect_left(created, since_us) if since_us is not None else 0)
            hi = bisect.bisect_left(created, until_us) if until_us is not None else len(created)
            if warehouse_id is None:
                docs = self._live_docs[lo : min(hi, lo + limit)]
                more = lo + limit < hi
                return docs, (lo + limit if more else None)
            # Live commits are few: one site's are picked out of the commit log as it is read.
            docs, pos = [], lo
            while pos < hi and len(docs) < limit:
                if self._live_docs[pos].get("warehouse_id") == warehouse_id:
                    docs.append(self._live_docs[pos])
                pos += 1
            more = any(d.get("warehouse_id") == warehouse_id for d in self._live_docs[pos:hi])
        return docs, (pos if more else None)

    def _notify_commit(self) -> None:
        event, self._committed = self._committed, asyncio.Event()
        if event is not None:
            event.set()

    def _commit_event(self) -> asyncio.Event:
        if self._committed is None:
            self._committed = asyncio.Event()
        return self._committed

    def stats(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        with self._cache_lock:
            data_faults = orjson.loads(orjson.dumps(self._data_faults))
            corrupt: dict[str, dict[str, int]] = {}
            for served in self._corrupt_served.values():
                for bd, (docs, lines) in served.items():
                    row = corrupt.setdefault(bd, {"pages": 0, "documents": 0, "lines": 0})
                    row["pages"] += 1
                    row["documents"] += docs
                    row["lines"] += lines
            broken: dict[str, dict[str, int]] = {}
            for bd, lines in self._corrupt_documents.values():
                row = broken.setdefault(bd, {"documents": 0, "lines": 0})
                row["documents"] += 1
                row["lines"] += lines
        now = self.now()
        return {
            "served": snap.get("served", {}),
            "requests": snap.get("requests", {}),
            "faults": snap.get("faults", {}),
            "load": self.load.snapshot(),  # peak requests in flight and per second: what client limits must bound
            "corrupt_pages": corrupt,  # distinct pages (first record, limit) served broken: pages, documents, lines per business date
            "corrupt_documents": broken,  # the documents that held the stray byte: documents, lines per business date
            "data_faults": data_faults,
            "clock": {"now": _iso(now), "simulated": self._now_override is not None},
            "history": {"start": self.catalog.start.isoformat(), "end": self.catalog.end.isoformat()},
            "warehouses": self._site_stats(snap.get("site_served", {}), data_faults),
        }

    def _site_stats(self, served: dict[str, Any], data_faults: dict[str, Any]) -> dict[str, Any]:
        """Per warehouse: documents and lines served (totals over its dates), its zone, its own SKUs."""
        own = {s.warehouse_id: 0 if s.weight is None else int((s.weight[self.config.skus :] > 0).sum()) for s in self.sites}
        with self._live_lock:
            live = [d.get("warehouse_id") for d in self._live_docs]
        with self._cache_lock:
            faults = {w: orjson.loads(orjson.dumps(f)) for w, f in self._site_faults.items()}
        return {
            site.warehouse_id: {
                "timezone": site.timezone,
                "documents": served.get(site.warehouse_id, {}).get("documents", 0),
                "lines": served.get(site.warehouse_id, {}).get("lines", 0),
                "committed_live": live.count(site.warehouse_id),
                "site_only_skus": own[site.warehouse_id],
                "data_faults": faults.get(site.warehouse_id, data_faults if len(self.sites) == 1 else {}),
            }
            for site in self.sites
        }

    # --- HTTP --------------------------------------------------------------------------------
    async def _guarded(self, request: Request, endpoint: str, body_fn: Any) -> Response:
        """Auth, then one transient-fault roll for this attempt, then the body in a worker thread."""
        cfg = self.config
        if not _http.authorized(request, cfg.token):
            self.counters.add("requests", endpoint, "401")
            return _http.unauthorized()
        with self.load.request():
            return await self._answer(request, endpoint, body_fn)

    async def _answer(self, request: Request, endpoint: str, body_fn: Any) -> Response:
        cfg = self.config
        fault = self._dice.roll(
            [
                ("429", cfg.fault_rate_429),
                ("5xx", cfg.fault_rate_5xx),
                ("slow", cfg.fault_rate_slow),
                ("drop", cfg.fault_rate_drop),
                ("bad_json", cfg.fault_rate_bad_json),
            ]
        )
        if fault:
            self.counters.add("faults", fault)
        if fault == "429":
            self.counters.add("requests", endpoint, "429")
            return _http.error_response(429, "rate limited", {"Retry-After": str(cfg.retry_after_seconds)})
        if fault == "5xx":
            status = self._dice.choice((500, 502, 503))
            self.counters.add("requests", endpoint, str(status))
            return _http.error_response(status, "simulated upstream failure")
        if fault == "slow":
            await asyncio.sleep(cfg.slow_seconds)
        try:
            payload, served = await anyio.to_thread.run_sync(body_fn, dict(request.query_params))
        except _http.BadRequest as exc:
            self.counters.add("requests", endpoint, str(exc.status))
            return _http.error_response(exc.status, exc.message)
        corrupt = payload.pop(_CORRUPT, None) if isinstance(payload, dict) else None
        site_served = payload.pop(_SITE_SERVED, {}) if isinstance(payload, dict) else {}
        body = orjson.dumps(payload)
        if corrupt is not None:
            page_key, corrupt_served, (document_key, document_date, document_lines), at = corrupt
            docs = payload["records"]
            broken = orjson.dumps(docs[at])
            # A stray byte in the middle of the broken document; the envelope around it stays valid.
            parts = [orjson.dumps(d) for d in docs[:at]] + [broken[: len(broken) // 2] + b"\x00" + broken[len(broken) // 2 :]]
            parts += [orjson.dumps(d) for d in docs[at + 1 :]]
            body = b'{"records":[' + b",".join(parts) + b'],"next_cursor":' + orjson.dumps(payload["next_cursor"]) + b"}"
            self.counters.add("faults", "corrupt_page")
            with self._cache_lock:
                self._corrupt_served[page_key] = corrupt_served
                self._corrupt_documents[document_key] = (document_date, document_lines)
        self.counters.add("requests", endpoint, "200")
        if fault == "drop":
            return _http.DropResponse(body)
        if fault == "bad_json":
            return Response(body[: max(1, len(body) // 2)], media_type=_http.JSON)
        for bd, (docs, lines) in served.items():
            self.counters.add("served", bd, "documents", n=docs)
            self.counters.add("served", bd, "lines", n=lines)
        if served:  # a page served broken counts for no site, as for no date
            for wid, (docs, lines) in site_served.items():
                self.counters.add("site_served", wid, "documents", n=docs)
                self.counters.add("site_served", wid, "lines", n=lines)
        return Response(body, media_type=_http.JSON)

    async def _post(self, request: Request, endpoint: str, apply: Any, *, notify: bool) -> Response:
        """A write: auth, then the change (no fault is injected on writes: the drills are reads)."""
        if not _http.authorized(request, self.config.token):
            self.counters.add("requests", endpoint, "401")
            return _http.unauthorized()
        try:
            written = apply(orjson.loads(await request.body()))
        except orjson.JSONDecodeError:
            return _http.error_response(400, "body is not valid JSON")
        except _http.BadRequest as exc:
            self.counters.add("requests", endpoint, str(exc.status))
            return _http.error_response(exc.status, exc.message)
        if notify:
            self._notify_commit()
        self.counters.add("requests", endpoint, "201")
        return _http.json_response(written, 201)

    def app(self) -> Starlette:
        async def transactions(request: Request) -> Response:
            if request.method == "POST":
                return await self._post(request, "commit", self.commit, notify=True)
            response = await self._guarded(request, "transactions", self.transactions_page)
            wait_s = _wait_seconds(request.query_params.get("wait_s"))
            if wait_s and response.status_code == 200 and response.body.startswith(b'{"records":[]'):
                # Long poll: nothing yet; answer again as soon as a document is committed.
                event = self._commit_event()
                if not self._live_created or self._live_created[-1] < (_parse_us(request.query_params.get("since")) or 0):
                    try:
                        await asyncio.wait_for(event.wait(), wait_s)
                    except TimeoutError:
                        return response
                return await self._guarded(request, "transactions", self.transactions_page)
            return response

        async def skus_post(request: Request) -> Response:
            return await self._post(request, "register_sku", self.register_sku, notify=False)

        async def count(request: Request) -> Response:
            return await self._guarded(request, "transactions_count", self.count_body)

        async def skus(request: Request) -> Response:
            if request.method == "POST":
                return await skus_post(request)
            return await self._guarded(request, "skus", self.skus_page)

        async def stats(request: Request) -> Response:
            if not _http.authorized(request, self.config.token):
                return _http.unauthorized()
            return _http.json_response(self.stats())

        async def clock(request: Request) -> Response:
            if not _http.authorized(request, self.config.token):
                return _http.unauthorized()
            if request.method == "POST":
                try:
                    body = orjson.loads(await request.body())
                    if not isinstance(body, dict) or "now" not in body:
                        raise _http.BadRequest('body must be {"now": "<ISO-8601>"} or {"now": null}')
                    raw = body["now"]
                    if raw is not None and not isinstance(raw, str):
                        raise _http.BadRequest("now must be an ISO-8601 string or null")
                    self.set_clock(None if raw is None else _parse_datetime(raw, "now"))
                except orjson.JSONDecodeError:
                    return _http.error_response(400, "body is not valid JSON")
                except _http.BadRequest as exc:
                    return _http.error_response(exc.status, exc.message)
            return _http.json_response({"now": _iso(self.now()), "simulated": self._now_override is not None})

        async def healthz(request: Request) -> Response:
            return _http.json_response({"status": "ok"})

        _http.install_log_filter()
        app = Starlette(
            routes=[
                Route("/v1/transactions", transactions, methods=["GET", "POST"]),
                Route("/v1/transactions/count", count, methods=["GET"]),
                Route("/v1/skus", skus, methods=["GET", "POST"]),
                Route("/v1/stats", stats, methods=["GET"]),
                Route("/v1/admin/clock", clock, methods=["GET", "POST"]),
                Route("/healthz", healthz, methods=["GET"]),
            ]
        )
        app.state.simulator = self
        return app


def _sum_faults(per_site: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The network's data faults of a date: every site's counts added up."""
    total: dict[str, Any] = {"malformed": {}, "drift": {}, "late": 0}
    for faults in per_site:
        for kind, value in (faults or {}).items():
            if isinstance(value, dict):
                for name, n in value.items():
                    total.setdefault(kind, {})[name] = total.get(kind, {}).get(name, 0) + n
            else:
                total[kind] = total.get(kind, 0) + value
    return total


def _parse_date(raw: str) -> date:
    try:
        d = date.fromisoformat(raw)
    except ValueError:
        d = None
    if d is None or len(raw) != 10 or not 1900 <= d.year <= 9000:
        raise _http.BadRequest(f"business_date must be YYYY-MM-DD, got {raw!r}")
    return d


def create_erp_app(config: ErpConfig | None = None) -> Starlette:
    """Starlette app of the ERP simulator; the simulator object is at ``app.state.simulator``."""
    return ErpSimulator(config or ErpConfig()).app()
