"""Deterministic synthetic world shared by the ERP and WMS simulators.

Everything here is a pure function of ``seed`` (and the business date for demand), so two
processes built with the same arguments agree exactly without talking to each other. Demand is
generated column-wise with numpy; documents are rendered to dicts only on demand (per page),
because building a million line dicts up front is what would make a big day slow.

Only stdlib and third-party imports: a real ERP shares no code with the platform.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from dataclasses import replace as dc_replace
from datetime import date, datetime, timedelta, timezone as dt_timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

__all__ = [
    "CATEGORIES",
    "DRIFT_KINDS",
    "MALFORMED_KINDS",
    "TXN_TYPES",
    "UOMS",
    "Catalog",
    "DayBatch",
    "build_catalog",
    "day_bounds_utc",
    "gc_paused",
    "generate_day",
    "resolve_start",
]

TXN_TYPES = ("ORDER", "RETURN", "ADJUSTMENT")
_TXN_PREFIX = ("SO-", "RT-", "AJ-")
# txn_id sort rank: lexicographic order of the prefixes is AJ < RT < SO.
_TXN_RANK = np.array([2, 1, 0], dtype=np.int64)
UOMS = ("EA", "CS", "PL")
_UOM_ARR = np.array(UOMS)

MALFORMED_KINDS = (
    "sku_lowercase",
    "sku_too_short",
    "sku_empty",
    "quantity_not_number",
    "quantity_negative",
    "uom_unknown",
    "uom_not_allowed",
    "line_no_missing",
    "event_ts_unparseable",
    "duplicate_line",
)
DRIFT_KINDS = (
    "renamed_sku_id",
    "renamed_quantity",
    "quantity_as_string",
    "line_no_as_string",
    "extra_fields",
    "missing_uom",
    "missing_customer_id",
)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "Beverages": ("Soft Drinks", "Water", "Juice", "Coffee", "Tea"),
    "Snacks": ("Crisps", "Biscuits", "Confectionery", "Nuts", "Bars"),
    "Household": ("Cleaning", "Laundry", "Paper", "Storage", "Kitchenware"),
    "Personal Care": ("Hair", "Skin", "Oral", "Shaving", "Deodorant"),
    "Electronics": ("Cables", "Batteries", "Audio", "Lighting", "Accessories"),
    "Toys": ("Puzzles", "Games", "Plush", "Building", "Outdoor Toys"),
    "Apparel": ("Socks", "T-Shirts", "Outerwear", "Hats", "Gloves"),
    "Hardware": ("Fasteners", "Hand Tools", "Adhesives", "Electrical", "Plumbing"),
    "Garden": ("Seeds", "Planters", "Watering", "Fertiliser", "Garden Tools"),
    "Office": ("Paper Products", "Pens", "Filing", "Desk", "Printing"),
    "Pet": ("Dog Food", "Cat Food", "Litter", "Pet Toys", "Pet Care"),
    "Automotive": ("Oils", "Car Care", "Wipers", "Bulbs", "Car Accessories"),
}
_CATEGORY_NAMES = np.array(list(CATEGORIES))
_SUBCATEGORY_NAMES = np.array([s for subs in CATEGORIES.values() for s in subs])
# Typical density per category (lb per ft3) and size multiplier, so weight and cube correlate.
_CAT_DENSITY = np.array([40.0, 8.0, 12.0, 20.0, 15.0, 6.0, 5.0, 35.0, 18.0, 14.0, 22.0, 30.0])
_CAT_SIZE = np.array([1.0, 0.6, 1.3, 0.5, 0.6, 1.6, 0.8, 0.7, 1.5, 0.9, 1.8, 1.1])
_ADJECTIVES = np.array(["Classic", "Premium", "Value", "Eco", "Pro", "Mini", "Max", "Family", "Travel", "Select"])

_LINES_PER_ORDER_P = np.array([0.25, 0.23, 0.18, 0.12, 0.09, 0.06, 0.04, 0.03])
_MEAN_LINES_PER_ORDER = float((_LINES_PER_ORDER_P * np.arange(1, 9)).sum())
_RETURN_DOC_SHARE = 0.02
_ADJUST_DOC_SHARE = 0.005
# Mon..Sun; Mon-Fri average to 1.0 so lines_per_day means "an average weekday".
_WEEKDAY_FACTOR = np.array([1.06, 1.02, 1.0, 0.98, 0.94, 0.62, 0.38])
MAX_COMMIT_DELAY_S = 600
LATE_MAX_DAYS = 3


def resolve_start(start: date | None, days: int) -> date:
    """``None`` means the history ends yesterday (UTC) and spans ``days`` days."""
    if start is not None:
        return start
    return datetime.now(dt_timezone.utc).date() - timedelta(days=days)


@lru_cache(maxsize=4096)
def day_bounds_utc(business_date: date, tz: str) -> tuple[int, int]:
    """[start, end) of a business date in the warehouse time zone, as UTC epoch seconds."""
    zone = ZoneInfo(tz)
    lo = datetime(business_date.year, business_date.month, business_date.day, tzinfo=zone)
    nxt = business_date + timedelta(days=1)
    hi = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return int(lo.timestamp()), int(hi.timestamp())


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


@dataclass(frozen=True, eq=False)
class Catalog:
    """SKU master as parallel numpy arrays (index i is SKU ``sku_ids[i]``, sorted by sku_id)."""

    seed: int
    start: date
    days: int
    sku_ids: np.ndarray
    description: np.ndarray
    category: np.ndarray  # index into _CATEGORY_NAMES
    subcategory: np.ndarray  # index into _SUBCATEGORY_NAMES
    unit_cube_ft3: np.ndarray
    unit_weight_lb: np.ndarray
    case_qty: np.ndarray
    pallet_qty: np.ndarray
    case_cube_ft3: np.ndarray
    has_cs: np.ndarray
    has_pl: np.ndarray
    introduced_ord: np.ndarray  # date.toordinal() of introduced_on
    # Demand parameters (closed-form in the date, so any day can be generated on its own).
    base_weight: np.ndarray
    season_amp: np.ndarray
    season_phase: np.ndarray
    drift_period: np.ndarray  # (n, 2) days
    drift_phase: np.ndarray  # (n, 2) radians
    n_customers: int
    index: dict[str, int] = field(repr=False)

    @property
    def end(self) -> date:
        """Last business date of the history (inclusive)."""
        return self.start + timedelta(days=self.days - 1)

    def __len__(self) -> int:
        return len(self.sku_ids)

    def introduced_on(self, i: int) -> date:
        return date.fromordinal(int(self.introduced_ord[i]))

    def allowed_uoms(self, i: int) -> list[str]:
        return ["EA"] + (["CS"] if self.has_cs[i] else []) + (["PL"] if self.has_pl[i] else [])

    def rows(self, idx: np.ndarray | list[int]) -> list[dict[str, Any]]:
        """Render SKU master rows (the ERP's /v1/skus record shape)."""
        idx = np.asarray(idx, dtype=np.int64)
        cols = zip(
            self.sku_ids[idx].tolist(),
            self.description[idx].tolist(),
            _CATEGORY_NAMES[self.category[idx]].tolist(),
            _SUBCATEGORY_NAMES[self.subcategory[idx]].tolist(),
            self.unit_cube_ft3[idx].tolist(),
            self.unit_weight_lb[idx].tolist(),
            self.case_qty[idx].tolist(),
            self.pallet_qty[idx].tolist(),
            self.case_cube_ft3[idx].tolist(),
            self.has_cs[idx].tolist(),
            self.has_pl[idx].tolist(),
            self.introduced_ord[idx].tolist(),
        )
        return [
            {
                "sku_id": s,
                "description": d,
                "category": c,
                "subcategory": sc,
                "unit_cube_ft3": uc,
                "unit_weight_lb": uw,
                "case_qty": cq,
                "pallet_qty": pq,
                "case_cube_ft3": cc,
                "uoms": ["EA"] + (["CS"] if cs else []) + (["PL"] if pl else []),
                "introduced_on": date.fromordinal(io).isoformat(),
            }
            for s, d, c, sc, uc, uw, cq, pq, cc, cs, pl, io in cols
        ]

    def day_weights(self, business_date: date) -> np.ndarray:
        """Unnormalised per-SKU order popularity on a date (0 for SKUs not yet introduced)."""
        t = float(business_date.toordinal())
        season = 1.0 + self.season_amp * np.sin(2 * np.pi * t / 365.25 + self.season_phase)
        # Slow drift: two long sinusoids per SKU, so popularity ranks (and ABC classes) of SKUs
        # near class boundaries change over weeks, deterministically for any single date.
        wave = np.sin(2 * np.pi * t / self.drift_period + self.drift_phase).sum(axis=1)
        drift = np.exp(0.45 * wave)
        w = self.base_weight * season * drift * _promo_multiplier(self, business_date)
        w[self.introduced_ord > business_date.toordinal()] = 0.0
        return w


def build_catalog(seed: int = 7, skus: int = 2000, start: date | None = None, days: int = 120) -> Catalog:
    """SKU master for a seed. ~5% of SKUs are introduced during the history, the rest before it."""
    if skus < 1:
        raise ValueError("skus must be >= 1")
    if days < 1:
        raise ValueError("days must be >= 1")
    start = resolve_start(start, days)
    rng = _rng(seed, 0)
    n = skus
    width = max(6, len(str(n)))
    sku_ids = np.array([f"SKU-{i:0{width}d}" for i in range(1, n + 1)])

    n_sub = len(_SUBCATEGORY_NAMES)
    subcategory = rng.integers(0, n_sub, n)
    category = subcategory // 5
    # Unit cube: lognormal, median ~0.3 ft3, mostly 0.05-2 ft3, scaled per category.
    unit_cube = np.clip(rng.lognormal(np.log(0.3), 0.9, n) * _CAT_SIZE[category], 0.01, 6.0)
    unit_weight = np.clip(unit_cube * _CAT_DENSITY[category] * rng.lognormal(0.0, 0.25, n), 0.02, 150.0)
    # Small items come in bigger cases.
    case_choice = np.select(
        [unit_cube < 0.1, unit_cube < 0.3, unit_cube < 0.8], [3, 2, 1], default=0
    )
    case_choice = np.clip(case_choice + rng.integers(-1, 2, n), 0, 3)
    case_qty = np.array([6, 12, 24, 48])[case_choice]
    case_cube = unit_cube * case_qty * 1.08  # packaging overhead
    cases_per_pallet = np.clip(np.floor(55.0 / case_cube), 1, 120).astype(np.int64)
    pallet_qty = case_qty * cases_per_pallet
    has_cs = rng.random(n) < 0.85
    has_pl = has_cs & (rng.random(n) < 0.18)

    start_ord = start.toordinal()
    new = rng.random(n) < 0.05
    introduced = np.where(
        new,
        start_ord + rng.integers(1, max(2, days), n),  # during the history
        start_ord - rng.integers(0, 730, n),  # legacy SKUs
    )
    introduced = np.minimum(introduced, start_ord + days - 1)

    # Zipf-like popularity over a random ranking: top 20% of SKUs carry roughly 80% of lines.
    rank = rng.permutation(n) + 1
    base_weight = rank.astype(np.float64) ** -1.0

    adjective = _ADJECTIVES[rng.integers(0, len(_ADJECTIVES), n)]
    sub_names = _SUBCATEGORY_NAMES[subcategory]
    description = np.array(
        [
            f"{a} {s} {q}-pack #{i}"
            for i, (a, s, q) in enumerate(zip(adjective.tolist(), sub_names.tolist(), case_qty.tolist()), 1)
        ]
    )

    return Catalog(
        seed=seed,
        start=start,
        days=days,
        sku_ids=sku_ids,
        description=description,
        category=category,
        subcategory=subcategory,
        unit_cube_ft3=np.round(unit_cube, 4),
        unit_weight_lb=np.round(unit_weight, 2),
        case_qty=case_qty.astype(np.int64),
        pallet_qty=pallet_qty.astype(np.int64),
        case_cube_ft3=np.round(case_cube, 4),
        has_cs=has_cs,
        has_pl=has_pl,
        introduced_ord=introduced.astype(np.int64),
        base_weight=base_weight,
        season_amp=rng.uniform(0.0, 0.5, n),
        season_phase=rng.uniform(0, 2 * np.pi, n),
        drift_period=rng.uniform(45.0, 240.0, (n, 2)),
        drift_phase=rng.uniform(0, 2 * np.pi, (n, 2)),
        n_customers=int(np.clip(n * 5, 1000, 99_999)),
        index={s: i for i, s in enumerate(sku_ids.tolist())},
    )


def network_catalog(
    seed: int, skus: int, start: date | None, days: int, site_codes: list[str], site_only: int
) -> tuple[Catalog, list[np.ndarray]]:
    """One SKU master for a network of sites, and each site's popularity weights over it.

    The first `skus` SKUs are shared (today's catalog for the seed); each site then has
    `site_only` SKUs of its own, `<code>-00001`..., a tenth or so of its lines. A shared SKU's popularity is reweighted per
    site by a seeded lognormal factor (sigma 1.2: a SKU that is A at one site is often B or C at
    another), except at the first site, which keeps the catalog's own ranking.
    """
    base = build_catalog(seed, skus, start, days)
    parts = [base]
    for k, code in enumerate(site_codes):
        if site_only <= 0:
            break
        extra = build_catalog(seed * 1009 + k + 1, site_only, base.start, days)
        ids = np.array([f"{code}-{i:05d}" for i in range(1, site_only + 1)])
        parts.append(dc_replace(extra, sku_ids=ids))
    array_fields = [f.name for f in fields(Catalog) if f.name not in ("seed", "start", "days", "n_customers", "index")]
    merged = {name: np.concatenate([getattr(p, name) for p in parts]) for name in array_fields}
    catalog = Catalog(
        seed=seed,
        start=base.start,
        days=days,
        n_customers=base.n_customers,
        index={s: i for i, s in enumerate(merged["sku_ids"].tolist())},
        **merged,
    )
    weights = []
    for k in range(len(site_codes)):
        w = np.zeros(len(catalog))
        w[:skus] = 1.0 if k == 0 else _rng(seed, k, 5).lognormal(0.0, 1.2, skus)
        if site_only > 0:
            # A quarter of a shared SKU's weight at the same rank: a site's own range carries ~10% of its lines.
            w[skus + k * site_only : skus + (k + 1) * site_only] = 0.25
        weights.append(w)
    return catalog, weights


def _promo_multiplier(cat: Catalog, business_date: date) -> np.ndarray:
    """~3x for a handful of SKUs; promotions start on random days and run 5-9 days.

    The promotions started on each of the previous 9 days are re-derived from that day's own
    RNG stream, so the answer for one date never depends on which other dates were generated.
    """
    n = len(cat)
    mult = np.ones(n)
    starts_per_day = max(1.0, n / 400) / 7.0  # ~n/400 promotions live at any time
    d0 = business_date.toordinal()
    for s in range(d0 - 9, d0 + 1):
        r = _rng(cat.seed, s, 9)
        k = r.poisson(starts_per_day)
        if k == 0:
            continue
        skus = r.integers(0, n, k)
        length = r.integers(5, 10, k)
        lift = r.uniform(2.5, 3.5, k)
        live = d0 < s + length
        mult[skus[live]] = np.maximum(mult[skus[live]], lift[live])
    return mult


@dataclass(eq=False)
class DayBatch:
    """One business date of ERP documents, column-wise.

    Documents are sorted by true event time. Lines are grouped per document:
    document ``d`` owns lines ``line_start[d]:line_start[d+1]`` (before injected anomalies).
    Documents with anomalies (malformed lines, schema drift) are pre-rendered in ``overrides``.
    """

    business_date: date
    catalog: Catalog
    txn_type: np.ndarray  # int8 index into TXN_TYPES
    seq: np.ndarray  # per-type sequence number (1-based) used in txn_id
    seq_width: int
    customer: np.ndarray  # int32 customer number, -1 for adjustments (no customer)
    event_ts: np.ndarray  # int64 epoch seconds (true business time)
    created_at: np.ndarray  # int64 epoch seconds (ERP commit time)
    line_start: np.ndarray  # int64, n_docs + 1
    line_no: np.ndarray
    sku: np.ndarray  # index into catalog
    quantity: np.ndarray
    uom: np.ndarray  # int8 index into UOMS
    n_lines: np.ndarray  # line entries per document as served (duplicates included)
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    fault_counts: dict[str, Any] = field(default_factory=dict)
    # The site whose documents these are; in a network of several sites `site_no` (1-based) makes
    # txn ids and keys unique across sites (0: the one site of a single-warehouse ERP, ids as ever).
    warehouse_id: str = "WH-01"
    site_no: int = 0

    @property
    def n_docs(self) -> int:
        return len(self.txn_type)

    @property
    def total_lines(self) -> int:
        return int(self.n_lines.sum())

    @property
    def txn_key(self) -> np.ndarray:
        """int64 whose order equals the lexicographic order of txn_id (for stable tie-breaks)."""
        ymd = self.business_date.year * 10_000 + self.business_date.month * 100 + self.business_date.day
        return _TXN_RANK[self.txn_type] * 10**17 + ymd * 10**9 + self.site_no * 10**7 + self.seq

    def txn_ids(self, idx: np.ndarray) -> list[str]:
        ds = self.business_date.strftime("%Y%m%d")
        w = self.seq_width
        site = f"{self.warehouse_id}-" if self.site_no else ""
        return [f"{site}{_TXN_PREFIX[t]}{ds}-{s:0{w}d}" for t, s in zip(self.txn_type[idx].tolist(), self.seq[idx].tolist())]

    def documents(self, idx: np.ndarray | list[int] | None = None) -> list[dict[str, Any]]:
        """Render documents (all of them, or ``idx`` in that order) as JSON-ready dicts."""
        idx = np.arange(self.n_docs) if idx is None else np.asarray(idx, dtype=np.int64)
        with gc_paused():
            docs = self._render_plain(idx)
        if self.overrides:
            keys = np.fromiter(self.overrides, dtype=np.int64, count=len(self.overrides))
            for pos in np.flatnonzero(np.isin(idx, keys)).tolist():
                docs[pos] = self.overrides[int(idx[pos])]
        return docs

    def _render_plain(self, idx: np.ndarray) -> list[dict[str, Any]]:
        starts = self.line_start[idx]
        sizes = self.line_start[idx + 1] - starts
        li = _ranges(starts, sizes)
        lines = [
            {"line_no": a, "sku_id": b, "quantity": c, "uom": d}
            for a, b, c, d in zip(
                self.line_no[li].tolist(),
                self.catalog.sku_ids[self.sku[li]].tolist(),
                self.quantity[li].tolist(),
                _UOM_ARR[self.uom[li]].tolist(),
            )
        ]
        ends = np.cumsum(sizes)
        cust = self.customer[idx].tolist()
        site = self.warehouse_id
        return [
            {
                "txn_id": tid,
                "txn_type": TXN_TYPES[t],
                "customer_id": None if c < 0 else f"C{c:05d}",
                "event_ts": ev + "Z",
                "created_at": cr + "Z",
                "lines": lines[e - n : e],
                "warehouse_id": site,
            }
            for tid, t, c, ev, cr, e, n in zip(
                self.txn_ids(idx),
                self.txn_type[idx].tolist(),
                cust,
                _iso(self.event_ts[idx]),
                _iso(self.created_at[idx]),
                ends.tolist(),
                sizes.tolist(),
            )
        ]


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small dicts.

    The dicts hold no cycles, but allocating a million of them triggers repeated full
    collections that triple the render time. Re-entrant across threads via a holder count.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        _gc_holders += 1
        if _gc_holders == 1:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def _iso(ts: np.ndarray) -> list[str]:
    return np.datetime_as_string(ts.astype("datetime64[s]"), unit="s").tolist()


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ranges start..start+size, vectorised."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(sizes) - sizes
    return np.repeat(starts - offsets, sizes) + np.arange(total)


def _sample(rng: np.random.Generator, cdf: np.ndarray, k: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(k) * cdf[-1], side="right"), len(cdf) - 1)


def generate_day(
    seed: int,
    catalog: Catalog,
    business_date: date,
    lines_per_day: int = 4000,
    timezone: str = "Europe/London",
    *,
    malformed_rate: float = 0.0005,
    late_arrival_rate: float = 0.0,
    drift_rate: float = 0.0,
    warehouse_id: str = "WH-01",
    site_no: int = 0,
    site_weight: np.ndarray | None = None,
) -> DayBatch:
    """All documents of one business date, deterministic per (seed, date, arguments).

    `site_weight` scales each SKU's popularity for one site of a network (0: not sold there);
    the caller gives each site its own seed, so sites draw their own orders.

    Independent RNG streams per concern, so e.g. changing ``late_arrival_rate`` moves commit
    times of some documents but leaves the demand itself unchanged. The phases below draw from
    the day's demand stream in this order; reordering them changes every generated day.
    """
    day_ordinal = business_date.toordinal()
    demand_rng = _rng(seed, day_ordinal, 1)
    day_start, day_end = day_bounds_utc(business_date, timezone)

    txn_type = _document_types(demand_rng, business_date, lines_per_day)
    event_ts, created_at = _document_times(demand_rng, len(txn_type), day_start, day_end)
    doc_of_line = _document_of_each_line(demand_rng, txn_type)
    doc_of_line, sku, line_type = _skus_of_lines(demand_rng, catalog, business_date, txn_type, doc_of_line, site_weight)
    lines_per_doc = np.bincount(doc_of_line, minlength=len(txn_type))
    line_start = np.concatenate([[0], np.cumsum(lines_per_doc)]).astype(np.int64)
    line_no = (np.arange(len(doc_of_line)) - line_start[doc_of_line] + 1).astype(np.int64)
    uom, quantity = _units_and_quantities(demand_rng, catalog, sku, line_type)
    seq = _txn_sequence_numbers(txn_type)
    customer = _customers(demand_rng, catalog, txn_type)

    counts: dict[str, Any] = {"malformed": {}, "drift": {}, "late": 0}
    if late_arrival_rate > 0:
        counts["late"] = _commit_some_late(_rng(seed, day_ordinal, 3), created_at, day_end, late_arrival_rate)

    batch = DayBatch(
        business_date=business_date,
        catalog=catalog,
        txn_type=txn_type,
        seq=seq.astype(np.int64),
        seq_width=max(6, len(str(int(seq.max()) if len(txn_type) else 0))),
        customer=customer,
        event_ts=event_ts,
        created_at=created_at,
        line_start=line_start,
        # Compact dtypes: a 1M-line day stays around 40 MB in the ERP's LRU.
        line_no=line_no.astype(np.int16),
        sku=sku.astype(np.int32),
        quantity=quantity.astype(np.int32),
        uom=uom,
        n_lines=lines_per_doc.astype(np.int32),
        fault_counts=counts,
        warehouse_id=warehouse_id,
        site_no=site_no,
    )
    if len(doc_of_line):
        _inject_malformed(batch, _rng(seed, day_ordinal, 2), malformed_rate, doc_of_line)
    if drift_rate > 0:
        _inject_drift(batch, _rng(seed, day_ordinal, 4), drift_rate)
    return batch


def _document_types(rng: np.random.Generator, business_date: date, lines_per_day: int) -> np.ndarray:
    """The day's documents as types (0 order, 1 return, 2 adjustment), in random order.

    Volume follows the weekday and an annual wave peaking in late November; returns and
    adjustments are a fixed share of the documents.
    """
    day_of_year = business_date.timetuple().tm_yday
    season = 1.0 + 0.15 * np.sin(2 * np.pi * (day_of_year - 239) / 365.25)
    expected_lines = lines_per_day * _WEEKDAY_FACTOR[business_date.weekday()] * season
    orders = int(rng.poisson(expected_lines / _MEAN_LINES_PER_ORDER))
    other_share = 1 - _RETURN_DOC_SHARE - _ADJUST_DOC_SHARE
    returns = int(rng.poisson(orders * _RETURN_DOC_SHARE / other_share))
    adjustments = int(rng.poisson(orders * _ADJUST_DOC_SHARE / other_share))
    return rng.permutation(
        np.concatenate([np.zeros(orders, np.int8), np.ones(returns, np.int8), np.full(adjustments, 2, np.int8)])
    )


def _document_times(rng: np.random.Generator, documents: int, day_start: int, day_end: int) -> tuple[np.ndarray, np.ndarray]:
    """(event_ts, created_at) in epoch seconds: business time, sorted, with a daytime peak over a
    flat background within the local day; the ERP commits each document seconds to minutes later."""
    day_seconds = day_end - day_start
    peak = np.clip(rng.normal(13.5 * 3600, 3.2 * 3600, documents), 0, day_seconds - 1)
    flat = rng.uniform(0, day_seconds, documents)
    event_ts = day_start + np.sort(np.where(rng.random(documents) < 0.8, peak, flat).astype(np.int64))
    commit_delay = np.clip(rng.lognormal(np.log(20.0), 1.2, documents), 1, MAX_COMMIT_DELAY_S).astype(np.int64)
    return event_ts, event_ts + commit_delay


def _document_of_each_line(rng: np.random.Generator, txn_type: np.ndarray) -> np.ndarray:
    """The document of each line: orders have 1-8 lines, returns 1-2, adjustments 1-3."""
    lines_per_doc = np.empty(len(txn_type), np.int64)
    is_order, is_return, is_adjustment = txn_type == 0, txn_type == 1, txn_type == 2
    lines_per_doc[is_order] = rng.choice(8, int(is_order.sum()), p=_LINES_PER_ORDER_P) + 1
    lines_per_doc[is_return] = rng.choice(2, int(is_return.sum()), p=[0.75, 0.25]) + 1
    lines_per_doc[is_adjustment] = rng.integers(1, 4, int(is_adjustment.sum()))
    return np.repeat(np.arange(len(txn_type)), lines_per_doc)


def _skus_of_lines(
    rng: np.random.Generator,
    catalog: Catalog,
    business_date: date,
    txn_type: np.ndarray,
    doc_of_line: np.ndarray,
    site_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A SKU per line, by popularity (adjustments: any live SKU), distinct within a document.

    Clashes are drawn again a few times, then the lines still clashing are dropped: returns the
    kept lines' (document, SKU, document type).
    """
    weights = catalog.day_weights(business_date)
    if site_weight is not None:
        weights = weights * site_weight
    if not weights.any():
        raise ValueError(f"no SKU is introduced by {business_date}")
    by_popularity = np.cumsum(weights)
    any_live = np.cumsum((weights > 0).astype(np.float64))
    line_type = txn_type[doc_of_line]
    adjustment_line = line_type == 2
    sku = _sample(rng, by_popularity, len(doc_of_line))
    sku[adjustment_line] = _sample(rng, any_live, int(adjustment_line.sum()))

    live_skus = int((weights > 0).sum())
    for _ in range(12):
        clash = _dup_mask(doc_of_line, sku, len(catalog))
        if not clash.any():
            break
        sku[clash] = _sample(rng, by_popularity if live_skus > 8 else any_live, int(clash.sum()))
    keep = ~_dup_mask(doc_of_line, sku, len(catalog))
    if not keep.all():
        return doc_of_line[keep], sku[keep], line_type[keep]
    return doc_of_line, sku, line_type


def _units_and_quantities(
    rng: np.random.Generator, catalog: Catalog, sku: np.ndarray, line_type: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(uom, quantity) per line: mostly EA, some CS, rare PL, only where the SKU allows it.

    Returns come in small quantities and mostly as eaches; adjustments are eaches, 1-10 up or
    (more often) down.
    """
    lines = len(sku)
    draw = rng.random(lines)
    uom = np.zeros(lines, np.int8)
    uom[(draw < 0.10) & catalog.has_cs[sku]] = 1
    uom[(draw < 0.006) & catalog.has_pl[sku]] = 2
    uom[line_type == 2] = 0
    uom[(line_type == 1) & (draw >= 0.05)] = 0
    quantity = np.where(uom == 0, rng.geometric(0.42, lines), np.where(uom == 1, rng.geometric(0.6, lines), 1))
    quantity = np.minimum(quantity, 60).astype(np.int64)
    is_return, is_adjustment = line_type == 1, line_type == 2
    quantity[is_return] = np.minimum(quantity[is_return], 3)
    adjustments = int(is_adjustment.sum())
    quantity[is_adjustment] = rng.integers(1, 11, adjustments) * np.where(rng.random(adjustments) < 0.6, -1, 1)
    return uom, quantity


def _txn_sequence_numbers(txn_type: np.ndarray) -> np.ndarray:
    """Each document's number within its type (1-based, in business-time order), for its txn_id."""
    seq = np.zeros(len(txn_type), np.int64)
    for t in range(len(TXN_TYPES)):
        of_type = txn_type == t
        seq[of_type] = np.arange(1, int(of_type.sum()) + 1)
    return seq


def _customers(rng: np.random.Generator, catalog: Catalog, txn_type: np.ndarray) -> np.ndarray:
    """A customer number per document, a few customers ordering most; -1 on adjustments (none)."""
    return np.where(
        txn_type == 2, -1, 1 + (catalog.n_customers * rng.random(len(txn_type)) ** 2.5).astype(np.int64)
    ).astype(np.int32)


def _commit_some_late(rng: np.random.Generator, created_at: np.ndarray, day_end: int, rate: float) -> int:
    """Move the commit time of `rate` of the documents 1-3 days past the business date (in place);
    returns how many."""
    late = rng.random(len(created_at)) < rate
    k = int(late.sum())
    created_at[late] = day_end + rng.integers(0, LATE_MAX_DAYS, k) * 86_400 + rng.integers(0, 86_400, k)
    return k


def _dup_mask(doc: np.ndarray, sku: np.ndarray, n_sku: int) -> np.ndarray:
    """True for every line whose (doc, sku) already appeared earlier in the same document."""
    key = doc.astype(np.int64) * n_sku + sku
    order = np.argsort(key, kind="stable")
    sk = key[order]
    dup_sorted = np.zeros(len(sk), bool)
    dup_sorted[1:] = sk[1:] == sk[:-1]
    mask = np.zeros(len(sk), bool)
    mask[order[dup_sorted]] = True
    return mask


def _override(batch: DayBatch, d: int) -> dict[str, Any]:
    doc = batch.overrides.get(d)
    if doc is None:
        doc = batch._render_plain(np.array([d]))[0]
        batch.overrides[d] = doc
    return doc


def _inject_malformed(batch: DayBatch, rng: np.random.Generator, rate: float, doc_of_line: np.ndarray) -> None:
    """Corrupt `rate` of the day's lines in varied ways (see MALFORMED_KINDS).

    The count is stratified (floor of the expectation plus one with the fractional chance), not
    binomial: a quiet Sunday must not dead-letter three times the rate by luck, or every demo
    would trip the 0.1% DLQ gate now and then.
    """
    n_lines = len(batch.sku)
    expected = n_lines * rate
    k = int(expected) + int(rng.random() < expected - int(expected)) if rate > 0 else 0
    if k == 0:
        return
    picked = np.sort(rng.choice(n_lines, k, replace=False))
    kinds = rng.integers(0, len(MALFORMED_KINDS), k)
    counts: dict[str, int] = batch.fault_counts["malformed"]
    cat = batch.catalog
    # Descending, so a duplicated line inserted into a document never shifts a later pick.
    for line, kind_i in zip(picked[::-1].tolist(), kinds[::-1].tolist()):
        d = int(doc_of_line[line])
        doc = _override(batch, d)
        pos = line - int(batch.line_start[d])
        ln = doc["lines"][pos]
        kind = MALFORMED_KINDS[kind_i]
        if kind == "quantity_negative" and doc["txn_type"] == "ADJUSTMENT":
            kind = "quantity_not_number"  # negative is legal on an adjustment
        s = int(batch.sku[line])
        if kind == "sku_lowercase":
            ln["sku_id"] = ln["sku_id"].lower()
        elif kind == "sku_too_short":
            ln["sku_id"] = ln["sku_id"][:3].replace("-", "")
        elif kind == "sku_empty":
            ln["sku_id"] = ""
        elif kind == "quantity_not_number":
            ln["quantity"] = "abc"
        elif kind == "quantity_negative":
            ln["quantity"] = -abs(int(ln["quantity"])) if isinstance(ln["quantity"], int) else -1
        elif kind == "uom_unknown":
            ln["uom"] = "BX"
        elif kind == "uom_not_allowed":
            missing = [u for u, ok in (("CS", cat.has_cs[s]), ("PL", cat.has_pl[s])) if not ok]
            if missing:
                ln["uom"] = missing[-1]
            else:
                kind, ln["uom"] = "uom_unknown", "BX"
        elif kind == "line_no_missing":
            ln.pop("line_no", None)
        elif kind == "event_ts_unparseable" and len(doc["lines"]) > 1:
            # The timestamp is the document's: on a multi-line order it would spoil every line.
            ln["quantity"], kind = "abc", "quantity_not_number"
        elif kind == "event_ts_unparseable":
            ev = datetime.fromtimestamp(int(batch.event_ts[d]), dt_timezone.utc)
            doc["event_ts"] = ev.strftime("%d/%m/%Y") + " 25:00"
        elif kind == "duplicate_line":
            doc["lines"].insert(pos + 1, dict(ln))
            batch.n_lines[d] += 1
        counts[kind] = counts.get(kind, 0) + 1


def _inject_drift(batch: DayBatch, rng: np.random.Generator, rate: float) -> None:
    """Schema drift on ~rate of documents: one kind per document, applied to all its lines."""
    docs = np.flatnonzero(rng.random(batch.n_docs) < rate)
    kinds = rng.integers(0, len(DRIFT_KINDS), len(docs))
    counts: dict[str, int] = batch.fault_counts["drift"]
    for d, kind_i in zip(docs.tolist(), kinds.tolist()):
        doc = _override(batch, d)
        kind = DRIFT_KINDS[kind_i]
        for ln in doc["lines"]:
            if kind == "renamed_sku_id" and "sku_id" in ln:
                ln["sku"] = ln.pop("sku_id")
            elif kind == "renamed_quantity" and "quantity" in ln:
                ln["qty"] = ln.pop("quantity")
            elif kind == "quantity_as_string" and isinstance(ln.get("quantity"), int):
                ln["quantity"] = str(ln["quantity"])
            elif kind == "line_no_as_string" and isinstance(ln.get("line_no"), int):
                ln["line_no"] = str(ln["line_no"])
            elif kind == "extra_fields":
                ln["lot_no"] = f"LOT-{d % 997:03d}"
            elif kind == "missing_uom":
                ln.pop("uom", None)
        if kind == "extra_fields":
            doc["channel"] = "EDI"
        elif kind == "missing_customer_id":
            doc.pop("customer_id", None)
        counts[kind] = counts.get(kind, 0) + 1
