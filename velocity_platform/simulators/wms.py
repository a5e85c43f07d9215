"""WMS simulator: a picker-to-parts warehouse layout, the current slotting, and idempotent moves.

Directives are applied at most once per ``Idempotency-Key``: the first successful answer is
stored under the key and replayed for every repeat, including when the first answer was lost
on the way back (``fault_rate_commit_then_drop``), which is exactly the case the platform's
outbox must survive.

A product the ERP registered after the WMS started is added to the WMS's item master with
`POST /v1/items` (`{"sku_id": ...}` or a list of them: what an ERP-to-WMS item interface does);
a directive for a SKU the item master lacks is refused (422), as before.
`GET /v1/slotting/assignments?sku_id=ID` answers one SKU's assignment with
`assigned_at` (ISO, to the millisecond) and `assigned_at_ms` (epoch milliseconds): when the WMS
applied it.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, fields
from datetime import date, datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import _http
from .catalog import build_catalog, network_catalog

__all__ = ["WmsConfig", "WmsSimulator", "create_wms_app"]

_SKU_RE = re.compile(r"^[A-Z0-9-]{4,20}$")
AISLE_PITCH_M = 3.0
DEFAULT_WAREHOUSE = "WH-01"
_SITE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]{0,31})(?:@(\d+)x(\d+)x(\d+))?$")


def parse_sites(raw: str | None) -> list[tuple[str, tuple[int, int, int] | None]]:
    """`ID[@AxBxL],...` (aisles x bays per side x levels) -> [(id, layout or None)]; ValueError on bad input."""
    if not raw:
        return [(DEFAULT_WAREHOUSE, None)]
    sites: list[tuple[str, tuple[int, int, int] | None]] = []
    for item in (i.strip() for i in raw.split(",")):
        match = _SITE.match(item)
        if not match:
            raise ValueError(f"warehouse {item!r} is not ID or ID@AISLESxBAYSxLEVELS (e.g. WH-02@12x40x3)")
        wid, dims = match.group(1), match.groups()[1:]
        layout = tuple(int(d) for d in dims) if dims[0] else None
        if layout is not None and min(layout) < 1:
            raise ValueError(f"warehouse {wid}: aisles, bays and levels must each be >= 1")
        if any(wid == w for w, _ in sites):
            raise ValueError(f"warehouse {wid} is listed twice")
        sites.append((wid, layout))  # type: ignore[arg-type]
    return sites


@dataclass
class WmsConfig:
    seed: int = 7
    skus: int = 2000
    start: date | None = None  # same meaning as ErpConfig.start: same catalog for same args
    days: int = 120
    aisles: int | None = None  # None: sized for ~1.3 locations per SKU
    bays_per_side: int | None = None
    levels: int | None = None  # None: 1
    capacity_ft3: float = 40.0
    token: str = "wms-dev-token"
    default_limit: int = 1000
    max_limit: int = 10000
    max_batch: int = 500  # directives per POST /v1/slotting/directives/batch
    # Faults, rolled once per request attempt (their sum must be <= 1).
    fault_rate_429: float = 0.0
    retry_after_seconds: int = 1
    fault_rate_5xx: float = 0.0
    fault_rate_commit_then_drop: float = 0.0  # POST directives only: apply, then lose the answer
    # A journal of applied directives (JSON lines). With it the WMS keeps its assignment and its
    # idempotency answers across restarts, as a real one does; without it, state lives in memory.
    state_path: str | None = None
    # The SKUs of a warehouse whose orders come from elsewhere (a file-drop ERP export), as
    # (sku_id, introduced_on ISO date) pairs; None: the synthetic catalogue of `seed` and `skus`.
    # SKUs introduced by `start` sit in a random legacy slot, later ones wait for a first slot.
    sku_catalog: list[tuple[str, str]] | None = None
    # A network's catalogues site by site (warehouse id -> pairs as sku_catalog): a file-drop
    # export mapped to several sites stocks each with what it sells. None: sku_catalog at each.
    site_catalogs: dict[str, list[tuple[str, str]]] | None = None
    # The warehouses held: "ID[@AxBxL],..." (layout: aisles x bays per side x levels; default the
    # fields above). One site, WH-01, is today's WMS; with several, each site has its own layout
    # and location ids prefixed with the site ("WH-02/AA-001-1"), and stocks the ERP simulator's
    # shared SKUs plus its own (list the sites in the same order as the ERP's --warehouses).
    warehouses: str | None = None
    site_only_skus: int | None = None  # as ErpConfig.site_only_skus
    # Set on each site of a network by the network itself.
    warehouse_id: str = DEFAULT_WAREHOUSE
    location_prefix: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.start, str):
            self.start = date.fromisoformat(self.start)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, str) and f.type in ("int", "float", "int | None"):
                setattr(self, f.name, float(v) if f.type == "float" else int(v))
        _http.validate_rates(self, ("fault_rate_429", "fault_rate_5xx", "fault_rate_commit_then_drop"))
        for name in ("aisles", "bays_per_side", "levels"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1")
        self.sites = parse_sites(self.warehouses)


def _layout_dims(cfg: WmsConfig) -> tuple[int, int, int]:
    levels = cfg.levels or 1
    per_level = math.ceil(1.3 * cfg.skus / levels)
    aisles, bays = cfg.aisles, cfg.bays_per_side
    if aisles is None and bays is None:
        aisles = max(1, round(math.sqrt(per_level / 4)))  # aisles about half as many as bays
    if aisles is None:
        aisles = math.ceil(per_level / (2 * bays))
    if bays is None:
        bays = math.ceil(per_level / (2 * aisles))
    if aisles > 26 * 26:
        raise ValueError("at most 676 aisles (two-letter aisle codes)")
    return aisles, bays, levels


class WmsSimulator:
    def __init__(self, config: WmsConfig, *, network_sites: tuple[str, ...] = ()) -> None:
        self.config = config
        self.warehouse_id = config.warehouse_id
        self.network_sites = network_sites  # the other sites' ids, to name them in a refusal
        self.sites: dict[str, WmsSimulator] = {}
        self._lock = threading.Lock()
        self._dice = _http.FaultDice(config.seed, 2)
        self.counters = _http.Counters()
        # A WMS that stops answering directive POSTs for a while (busy, a lock held on its side):
        # they wait here until answering again. Tests and benchmarks close and open it.
        self._answering = threading.Event()
        self._answering.set()
        self._held = 0
        if len(config.sites) > 1:
            self._build_network()
            return
        if config.sites[0][1] is not None or config.sites[0][0] != DEFAULT_WAREHOUSE:
            self.warehouse_id = config.sites[0][0]
            if config.sites[0][1] is not None:
                config.aisles, config.bays_per_side, config.levels = config.sites[0][1]
        if config.sku_catalog is not None:
            self.catalog = _ExternalCatalog.of(config.sku_catalog, config.start)
            config.skus = len(self.catalog)  # the layout is sized for them when not given
        else:
            self.catalog = build_catalog(config.seed, config.skus, config.start, config.days)
        self.aisles, self.bays, self.levels = _layout_dims(config)
        self._build_layout()
        self._initial_assignment()
        self._answers: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._applied_per_key: dict[str, int] = {}
        self._acks = 0
        self._journal = None
        if config.state_path:
            self._replay_journal(Path(config.state_path))
            self._journal = open(config.state_path, "ab")  # noqa: SIM115  # closed with the process

    def _build_network(self) -> None:
        """One WMS per site, each its own layout, item master, slotting and idempotency keys;
        this object routes requests to them and adds up their figures."""
        cfg = self.config
        ids = tuple(w for w, _ in cfg.sites)
        catalogs: list[list[tuple[str, str]] | None] = [cfg.sku_catalog] * len(ids)
        if cfg.site_catalogs is not None:
            catalogs = [cfg.site_catalogs.get(w, []) for w in ids]
        if cfg.sku_catalog is None and cfg.site_catalogs is None:
            # The ERP simulator's network catalogue: every site stocks the shared SKUs and its own.
            site_only = cfg.skus // 10 if cfg.site_only_skus is None else cfg.site_only_skus
            codes = [re.sub(r"[^A-Z0-9-]", "-", w.upper())[:12] for w in ids]
            catalog, weights = network_catalog(cfg.seed, cfg.skus, cfg.start, cfg.days, codes, site_only)
            dates = [date.fromordinal(o).isoformat() for o in catalog.introduced_ord.tolist()]
            catalogs = [
                [(catalog.sku_ids[i], dates[i]) for i in np.flatnonzero(w > 0).tolist()] for w in weights
            ]
            start = catalog.start
        else:
            start = cfg.start
        for k, ((wid, layout), skus) in enumerate(zip(cfg.sites, catalogs, strict=True)):
            aisles, bays, levels = layout or (cfg.aisles, cfg.bays_per_side, cfg.levels)
            site_config = WmsConfig(
                seed=cfg.seed + k,  # each site's legacy slotting is its own
                skus=cfg.skus,
                start=start,
                days=cfg.days,
                aisles=aisles,
                bays_per_side=bays,
                levels=levels,
                capacity_ft3=cfg.capacity_ft3,
                token=cfg.token,
                default_limit=cfg.default_limit,
                max_limit=cfg.max_limit,
                max_batch=cfg.max_batch,
                state_path=f"{cfg.state_path}.{wid}" if cfg.state_path else None,
                sku_catalog=skus,
                warehouse_id=wid,
                location_prefix=f"{wid}/",
            )
            try:
                self.sites[wid] = WmsSimulator(site_config, network_sites=ids)
            except ValueError as exc:
                raise ValueError(f"warehouse {wid}: {exc}") from None

    def site(self, warehouse_id: str | None) -> WmsSimulator | None:
        """The site a read or a directive is for (None: every site of a network); 404 if unknown."""
        if not warehouse_id:
            return None if self.sites else self
        got = self.sites.get(warehouse_id) if self.sites else (self if warehouse_id == self.warehouse_id else None)
        if got is None:
            known = ", ".join(self.sites or [self.warehouse_id])
            raise _http.BadRequest(f"unknown warehouse_id {warehouse_id!r}: this WMS holds {known}", 404)
        return got

    def _replay_journal(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                break  # a torn last line from a crash: that write never answered, so drop it
            self._apply(entry["key"], tuple(entry["fingerprint"]), entry["body"], entry["answer"])

    def _apply(self, key: str, fingerprint: tuple[Any, ...] | None, body: dict[str, Any], answer: dict[str, Any]) -> None:
        """Move the SKU and remember the answer under the key (caller holds the lock)."""
        s = self._learn(body["sku_id"])
        to = self.location_index[body["to_location"]]
        frm = None if body["from_location"] is None else self.location_index[body["from_location"]]
        if frm is not None:
            self.sku_of_loc[frm] = -1
        self.sku_of_loc[to] = s
        self.loc_of_sku[s] = to
        self.assigned_at[s] = answer["applied_at"]
        self._acks = max(self._acks, int(answer["ack_id"].removeprefix("ACK-")))
        self._answers[key] = (fingerprint, answer)
        self._applied_per_key[key] = self._applied_per_key.get(key, 0) + 1

    # --- world -------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        a, k, side, lvl = np.meshgrid(
            np.arange(self.aisles), np.arange(self.bays), np.arange(2), np.arange(1, self.levels + 1), indexing="ij"
        )
        a, k, side, lvl = a.ravel(), k.ravel(), side.ravel(), lvl.ravel()
        position = 2 * (k + 1) - 1 + side  # odd on the left, even on the right
        distance = AISLE_PITCH_M * a + k + 0.5  # one-way rectilinear from the depot
        n = len(a)
        zone = np.full(n, "C")
        rank = np.empty(n, np.int64)
        rank[np.argsort(distance, kind="stable")] = np.arange(n)
        zone[rank < round(0.2 * n)] = "A"
        zone[(rank >= round(0.2 * n)) & (rank < round(0.5 * n))] = "B"
        width = max(3, len(str(2 * self.bays)))
        prefix = self.config.location_prefix
        ids = [
            f"{prefix}{chr(65 + ai // 26)}{chr(65 + ai % 26)}-{p:0{width}d}" + (f"-{lv}" if self.levels > 1 else "")
            for ai, p, lv in zip(a.tolist(), position.tolist(), lvl.tolist())
        ]
        self.location_ids = ids
        self.location_index = {loc: i for i, loc in enumerate(ids)}
        cap = float(self.config.capacity_ft3)
        site = self.warehouse_id
        self.location_rows = [
            {
                "location_id": loc,
                "zone": z,
                "aisle": ai,
                "bay": bi,
                "side": "R" if s else "L",
                "level": lv,
                "capacity_ft3": cap,
                "distance_m": d,
                "warehouse_id": site,
            }
            for loc, z, ai, bi, s, lv, d in zip(
                ids, zone.tolist(), a.tolist(), k.tolist(), side.tolist(), lvl.tolist(), distance.tolist()
            )
        ]

    def _initial_assignment(self) -> None:
        """Legacy slotting: every SKU live at the history's start sits in a random location."""
        cat = self.catalog
        n_loc = len(self.location_ids)
        start_ord = cat.start.toordinal()
        live = np.flatnonzero(cat.introduced_ord <= start_ord)
        if len(live) > n_loc:
            raise ValueError(f"{len(live)} SKUs need slots but the layout has only {n_loc} locations")
        rng = np.random.default_rng([self.config.seed, 77])
        self.loc_of_sku = np.full(len(cat), -1, np.int64)
        self.sku_of_loc = np.full(n_loc, -1, np.int64)
        locs = rng.permutation(n_loc)[: len(live)]
        self.loc_of_sku[live] = locs
        self.sku_of_loc[locs] = live
        since = np.maximum(cat.introduced_ord[live], start_ord - rng.integers(30, 720, len(live)))
        self.assigned_at: list[str | None] = [None] * len(cat)
        for s, o in zip(live.tolist(), since.tolist()):
            self.assigned_at[s] = date.fromordinal(o).isoformat() + "T00:00:00Z"
        # The WMS's own item list: the catalogue, plus products learnt from their first slot.
        self.sku_ids: list[str] = cat.sku_ids.tolist()
        self.sku_index: dict[str, int] = dict(cat.index)

    def add_items(self, body: Any, warehouse_id: str | None = None) -> dict[str, Any]:
        """`POST /v1/items`: products new to the WMS's item master (unslotted until a first slot);
        in a network, to the named site's (`?warehouse_id=`) or to every site's."""
        target = self.site(warehouse_id)
        if target is None:
            answers = [site.add_items(body) for site in self.sites.values()]
            return {"added": sum(a["added"] for a in answers), "known": sum(a["known"] for a in answers)}
        if target is not self:
            return target.add_items(body)
        records = body if isinstance(body, list) else [body]
        if not records or not all(isinstance(r, dict) and isinstance(r.get("sku_id"), str) and _SKU_RE.match(r["sku_id"]) for r in records):
            raise _http.BadRequest('body must be {"sku_id": "..."} or a list of them, each sku_id matching ^[A-Z0-9-]{4,20}$', 422)
        with self._lock:
            added = [r["sku_id"] for r in records if r["sku_id"] not in self.sku_index]
            for sku_id in added:
                self._learn(sku_id)
        return {"added": len(added), "known": len(records) - len(added)}

    def _learn(self, sku_id: str) -> int:
        """The index of a SKU, adding a product the WMS has not seen (caller holds the lock)."""
        s = self.sku_index.get(sku_id)
        if s is None:
            s = self.sku_index[sku_id] = len(self.sku_ids)
            self.sku_ids.append(sku_id)
            self.loc_of_sku = np.append(self.loc_of_sku, -1)
            self.assigned_at.append(None)
        return s

    # --- directives ----------------------------------------------------------------------------
    def _validate(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body must be a JSON object"]
        errs = []
        for name in ("directive_id", "reason"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                errs.append(f"{name} must be a non-empty string")
        if not _is_iso_date(body.get("business_date")):
            errs.append("business_date must be YYYY-MM-DD")
        sku = body.get("sku_id")
        if not isinstance(sku, str) or not _SKU_RE.match(sku):
            errs.append("sku_id must match ^[A-Z0-9-]{4,20}$")
        elif sku not in self.sku_index:
            errs.append(f"unknown sku_id {sku!r}")
        site = body.get("warehouse_id") or self.warehouse_id  # a one-site WMS takes a directive naming none
        if site != self.warehouse_id:
            errs.append(f"warehouse_id {site!r} is not this WMS's site ({self.warehouse_id})")
        frm = body.get("from_location", "<absent>")
        if frm == "<absent>":
            errs.append("from_location is required (null for an unslotted SKU)")
        elif frm is not None and frm not in self.location_index:
            errs.append(self._foreign(frm, "from_location") or f"unknown from_location {frm!r}")
        to = body.get("to_location")
        if not isinstance(to, str) or to not in self.location_index:
            errs.append(self._foreign(to, "to_location") or f"unknown to_location {to!r}")
        elif to == frm:
            errs.append("to_location equals from_location")
        saving = body.get("expected_saving_m_per_day")
        if isinstance(saving, bool) or not isinstance(saving, (int, float)) or not math.isfinite(saving):
            errs.append("expected_saving_m_per_day must be a number")
        return errs

    def _foreign(self, location: Any, name: str) -> str | None:
        """The refusal of a location that belongs to another site of the network, naming both."""
        if not isinstance(location, str) or "/" not in location:
            return None
        owner = location.split("/", 1)[0]
        if owner in self.network_sites and owner != self.warehouse_id:
            return f"{name} {location!r} belongs to warehouse {owner}, not to {self.warehouse_id} where this directive is addressed"
        return None

    def submit(self, key: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Apply a directive at most once per key. Atomic under the simulator lock."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        bd = body.get("business_date") if isinstance(body, dict) else None
        bd = bd if isinstance(bd, str) and len(bd) <= 10 else "unknown"
        fingerprint = (
            tuple(body.get(f) for f in ("directive_id", "sku_id", "from_location", "to_location"))
            if isinstance(body, dict)
            else None
        )
        with self._lock:
            self.counters.add("by_business_date", bd, "received")
            stored = self._answers.get(key)
            if stored is not None:
                if fingerprint is not None and fingerprint != stored[0]:
                    return self._reject(key, bd, 422, {"error": "Idempotency-Key reused with a different directive"})
                self.counters.add("directives", "replayed")
                self.counters.add("by_business_date", bd, "replayed")
                return 200, {**stored[1], "replayed": True}
            if body is None:
                return self._reject(key, bd, 422, {"error": "body is not valid JSON"})
            errs = self._validate(body)
            if errs:
                return self._reject(key, bd, 422, {"error": "invalid directive", "details": errs})
            s = self.sku_index.get(body["sku_id"], -1)
            to = self.location_index[body["to_location"]]
            frm = None if body["from_location"] is None else self.location_index[body["from_location"]]
            current = int(self.loc_of_sku[s]) if s >= 0 else -1
            if current != (-1 if frm is None else frm):
                where = "unslotted" if current < 0 else f"at {self.location_ids[current]}"
                msg = f"{body['sku_id']} is {where}, not at {body['from_location']}"
                return self._reject(key, bd, 409, {"error": msg})
            occupant = int(self.sku_of_loc[to])
            if occupant >= 0 and occupant != s:
                other = self.sku_ids[occupant]
                return self._reject(key, bd, 409, {"error": f"{body['to_location']} is occupied by {other}"})
            applied_at = datetime.now(dt_timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            answer = {
                "directive_id": body["directive_id"],
                "ack_id": f"ACK-{self._acks + 1:08d}",
                "status": "applied",
                "applied_at": applied_at,
            }
            if self._journal is not None:
                # Written before the move is visible: an answered directive is never forgotten.
                entry = {"key": key, "fingerprint": list(fingerprint or ()), "body": body, "answer": answer}
                self._journal.write(orjson.dumps(entry) + b"\n")
                self._journal.flush()
            self._apply(key, fingerprint, body, answer)
            self.counters.add("directives", "applied")
            self.counters.add("by_business_date", bd, "applied")
            return 201, {**answer, "replayed": False}

    def _reject(self, key: str, bd: str, status: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # Rejections are not stored under the key: a retry after the conflict clears may apply.
        self._applied_per_key.setdefault(key, 0)
        self.counters.add("directives", "rejected")
        self.counters.add("by_business_date", bd, "rejected")
        return status, payload

    # --- reads -------------------------------------------------------------------------------
    def route(self, key: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """A directive to the site it names (`warehouse_id`); a network refuses one naming none."""
        if not self.sites:
            return self.submit(key, raw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        wid = body.get("warehouse_id") if isinstance(body, dict) else None
        target = self.sites.get(wid) if isinstance(wid, str) else None
        if target is None:
            known = ", ".join(self.sites)
            what = "is required" if wid is None else f"{wid!r} is not a site of this WMS"
            self.counters.add("directives", "rejected")
            return 422, {"error": "invalid directive", "details": [f"warehouse_id {what} (sites: {known})"]}
        return target.submit(key, raw)

    def _network_page(self, tag: str, params: dict[str, str]) -> dict[str, Any]:
        """A page of every site's records, site after site, under a cursor that names the site."""
        k, inner = 0, None
        if params.get("cursor"):
            cur = _http.decode_cursor(params["cursor"])
            if not (isinstance(cur, list) and len(cur) == 4 and cur[:2] == ["network", tag] and isinstance(cur[2], int)
                    and 0 <= cur[2] < len(self.sites)):
                raise _http.BadRequest("invalid cursor")
            k, inner = cur[2], cur[3]
        sites = list(self.sites.values())
        query = {n: v for n, v in params.items() if n not in ("cursor", "warehouse_id")}
        if inner:
            query["cursor"] = inner
        page = getattr(sites[k], f"{tag}_page")(query)
        if page["next_cursor"]:
            nxt = _http.encode_cursor(["network", tag, k, page["next_cursor"]])
        else:
            nxt = _http.encode_cursor(["network", tag, k + 1, None]) if k + 1 < len(sites) else None
        return {"records": page["records"], "next_cursor": nxt}

    def locations_page(self, params: dict[str, str]) -> dict[str, Any]:
        target = self.site(params.get("warehouse_id"))
        if target is None:
            return self._network_page("locations", params)
        if target is not self:
            return target.locations_page(params)
        limit = _http.parse_limit(params.get("limit"), self.config.default_limit, self.config.max_limit)
        offset = _offset_cursor(params.get("cursor"), "locations")
        rows = self.location_rows[offset : offset + limit]
        more = offset + limit < len(self.location_rows)
        return {"records": rows, "next_cursor": _http.encode_cursor(["locations", offset + limit]) if more else None}

    def assignment_of(self, sku_id: str) -> dict[str, Any]:
        """One SKU's assignment: where it sits (null when unslotted) and when the WMS applied it."""
        with self._lock:
            s = self.sku_index.get(sku_id)
            loc = int(self.loc_of_sku[s]) if s is not None else -1
            at = self.assigned_at[s] if s is not None and loc >= 0 else None
        record = {"sku_id": sku_id, "location_id": self.location_ids[loc] if loc >= 0 else None, "assigned_at": at,
                  "assigned_at_ms": _epoch_ms(at) if at else None, "warehouse_id": self.warehouse_id}
        return {"records": [record], "next_cursor": None}

    def assignments_page(self, params: dict[str, str]) -> dict[str, Any]:
        target = self.site(params.get("warehouse_id"))
        if target is None:
            if params.get("sku_id"):  # the SKU at every site that stocks it
                pages = [site.assignment_of(params["sku_id"]) for site in self.sites.values()]
                return {"records": [r for p in pages for r in p["records"] if r["location_id"]], "next_cursor": None}
            return self._network_page("assignments", params)
        if target is not self:
            return target.assignments_page(params)
        if params.get("sku_id"):
            return self.assignment_of(params["sku_id"])
        limit = _http.parse_limit(params.get("limit"), self.config.default_limit, self.config.max_limit)
        offset = _offset_cursor(params.get("cursor"), "assignments")
        with self._lock:  # a consistent page while directives are being applied
            skus = offset + np.flatnonzero(self.loc_of_sku[offset:] >= 0)[: limit + 1]
            more = len(skus) > limit
            skus = skus[:limit]
            records = [
                {"sku_id": sid, "location_id": self.location_ids[loc], "assigned_at": self.assigned_at[s],
                 "warehouse_id": self.warehouse_id}
                for s, sid, loc in zip(
                    skus.tolist(), [self.sku_ids[i] for i in skus.tolist()], self.loc_of_sku[skus].tolist()
                )
            ]
        nxt = _http.encode_cursor(["assignments", int(skus[-1]) + 1]) if more else None
        return {"records": records, "next_cursor": nxt}

    def hold_directives(self) -> None:
        """Directive POSTs wait, unanswered, until `answer_directives`."""
        self._answering.clear()

    def answer_directives(self) -> None:
        self._answering.set()

    async def _wait_until_answering(self) -> None:
        if self._answering.is_set():
            return
        with self._lock:
            self._held += 1
        try:
            await anyio.to_thread.run_sync(self._answering.wait)
        finally:
            with self._lock:
                self._held -= 1

    def site_figures(self) -> dict[str, Any]:
        """One site's directives (received, applied, replayed, rejected), by date, and its layout."""
        snap = self.counters.snapshot()
        d = snap.get("directives", {})
        by_date = snap.get("by_business_date", {})
        return {
            "received": sum(v.get("received", 0) for v in by_date.values()),
            "applied": d.get("applied", 0),
            "replayed": d.get("replayed", 0),
            "rejected": d.get("rejected", 0),
            "by_business_date": by_date,
            "locations": len(self.location_ids),
            "layout": {"aisles": self.aisles, "bays_per_side": self.bays, "levels": self.levels},
        }

    def stats(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        d = snap.get("directives", {})
        with self._lock:
            held = self._held
        if not self.sites:
            with self._lock:
                per_key = dict(self._applied_per_key)
            return {
                "received": d.get("received", 0),
                "applied": d.get("applied", 0),
                "replayed": d.get("replayed", 0),
                "rejected": d.get("rejected", 0),
                "applied_per_key": per_key,
                "by_business_date": snap.get("by_business_date", {}),
                "requests": snap.get("requests", {}),
                "faults": snap.get("faults", {}),
                "held_requests": held,  # directive POSTs waiting while the WMS does not answer
                "warehouses": {self.warehouse_id: self.site_figures()},
            }
        # A network: the totals of its sites (keys are per site: `site/key` in applied_per_key).
        sites = {wid: site.site_figures() for wid, site in self.sites.items()}
        per_key: dict[str, int] = {}
        by_date: dict[str, dict[str, int]] = {}
        for wid, site in self.sites.items():
            with site._lock:
                per_key.update({f"{wid}/{k}": n for k, n in site._applied_per_key.items()})
            for bd, figures in sites[wid]["by_business_date"].items():
                row = by_date.setdefault(bd, {})
                for name, n in figures.items():
                    row[name] = row.get(name, 0) + n
        total = {name: sum(f[name] for f in sites.values()) for name in ("applied", "replayed", "rejected")}
        return {
            "received": d.get("received", 0),
            "applied": total["applied"],
            "replayed": total["replayed"],
            "rejected": total["rejected"] + d.get("rejected", 0),  # with those refused for naming no site
            "applied_per_key": per_key,
            "by_business_date": by_date,
            "requests": snap.get("requests", {}),
            "faults": snap.get("faults", {}),
            "held_requests": held,
            "warehouses": sites,
        }

    # --- HTTP --------------------------------------------------------------------------------
    def _roll(self, endpoint: str, *, post: bool = False) -> tuple[str | None, Response | None]:
        cfg = self.config
        rates = [("429", cfg.fault_rate_429), ("5xx", cfg.fault_rate_5xx)]
        if post:
            rates.append(("commit_then_drop", cfg.fault_rate_commit_then_drop))
        fault = self._dice.roll(rates)
        if fault:
            self.counters.add("faults", fault)
        if fault == "429":
            self.counters.add("requests", endpoint, "429")
            return fault, _http.error_response(429, "rate limited", {"Retry-After": str(cfg.retry_after_seconds)})
        if fault == "5xx":
            status = self._dice.choice((500, 502, 503))
            self.counters.add("requests", endpoint, str(status))
            return fault, _http.error_response(status, "simulated upstream failure")
        return fault, None

    def app(self) -> Starlette:
        def paged(endpoint: str, body_fn: Any) -> Any:
            async def handler(request: Request) -> Response:
                if not _http.authorized(request, self.config.token):
                    self.counters.add("requests", endpoint, "401")
                    return _http.unauthorized()
                _, failed = self._roll(endpoint)
                if failed is not None:
                    return failed
                try:
                    payload = body_fn(dict(request.query_params))
                except _http.BadRequest as exc:
                    self.counters.add("requests", endpoint, str(exc.status))
                    return _http.error_response(exc.status, exc.message)
                self.counters.add("requests", endpoint, "200")
                return _http.json_response(payload)

            return handler

        async def directives(request: Request) -> Response:
            if not _http.authorized(request, self.config.token):
                self.counters.add("requests", "directives", "401")
                return _http.unauthorized()
            self.counters.add("directives", "received")
            key = request.headers.get("idempotency-key", "").strip()
            if not key:
                self.counters.add("directives", "rejected")
                self.counters.add("requests", "directives", "400")
                return _http.error_response(400, "Idempotency-Key header is required")
            await self._wait_until_answering()
            fault, failed = self._roll("directives", post=True)
            if failed is not None:
                return failed
            status, payload = self.route(key, await request.body())
            self.counters.add("requests", "directives", str(status))
            if fault == "commit_then_drop":
                # Committed (and stored under the key) but the answer never arrives.
                return _http.DropResponse(orjson.dumps(payload), status, sent_bytes=0)
            return _http.json_response(payload, status)

        async def directive_batch(request: Request) -> Response:
            # Many directives in one request, each under its own idempotency key and answered
            # exactly as the single POST would answer it; the batch's own key makes the request
            # itself safe to repeat (each item is anyway).
            if not _http.authorized(request, self.config.token):
                self.counters.add("requests", "directive_batch", "401")
                return _http.unauthorized()
            if not request.headers.get("idempotency-key", "").strip():
                self.counters.add("requests", "directive_batch", "400")
                return _http.error_response(400, "Idempotency-Key header is required")
            await self._wait_until_answering()
            fault, failed = self._roll("directive_batch", post=True)
            if failed is not None:
                return failed
            try:
                items = orjson.loads(await request.body())["items"]
                if not isinstance(items, list) or not all(
                    isinstance(i, dict) and isinstance(i.get("idempotency_key"), str) and i["idempotency_key"].strip()
                    for i in items
                ):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.counters.add("requests", "directive_batch", "422")
                return _http.error_response(422, 'body must be {"items": [{"idempotency_key": ..., "directive": {...}}]}')
            if len(items) > self.config.max_batch:
                self.counters.add("requests", "directive_batch", "413")
                return _http.error_response(413, f"at most {self.config.max_batch} directives per batch")
            results = []
            for item in items:
                self.counters.add("directives", "received")
                status, payload = self.route(item["idempotency_key"], orjson.dumps(item.get("directive")))
                results.append({"idempotency_key": item["idempotency_key"], "http_status": status, **payload})
            self.counters.add("requests", "directive_batch", "200")
            if fault == "commit_then_drop":
                return _http.DropResponse(orjson.dumps({"results": results}), 200, sent_bytes=0)
            return _http.json_response({"results": results})

        async def stats(request: Request) -> Response:
            if not _http.authorized(request, self.config.token):
                return _http.unauthorized()
            return _http.json_response(self.stats())

        async def items(request: Request) -> Response:
            if not _http.authorized(request, self.config.token):
                return _http.unauthorized()
            try:
                body = orjson.loads(await request.body())
                return _http.json_response(self.add_items(body, request.query_params.get("warehouse_id")), 201)
            except orjson.JSONDecodeError:
                return _http.error_response(400, "body is not valid JSON")
            except _http.BadRequest as exc:
                return _http.error_response(exc.status, exc.message)

        async def healthz(request: Request) -> Response:
            return _http.json_response({"status": "ok"})

        _http.install_log_filter()
        app = Starlette(
            routes=[
                Route("/v1/items", items, methods=["POST"]),
                Route("/v1/locations", paged("locations", self.locations_page), methods=["GET"]),
                Route("/v1/slotting/assignments", paged("assignments", self.assignments_page), methods=["GET"]),
                Route("/v1/slotting/directives", directives, methods=["POST"]),
                Route("/v1/slotting/directives/batch", directive_batch, methods=["POST"]),
                Route("/v1/stats", stats, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"]),
            ]
        )
        app.state.simulator = self
        return app


@dataclass
class _ExternalCatalog:
    """Just what the WMS needs of a SKU master it did not generate: ids, index, introduction."""

    sku_ids: np.ndarray
    introduced_ord: np.ndarray
    start: date
    index: dict[str, int]

    @classmethod
    def of(cls, skus: list[tuple[str, str]], start: date | None) -> _ExternalCatalog:
        ordered = sorted({sku: introduced for sku, introduced in skus}.items())
        ids = np.array([sku for sku, _ in ordered], dtype=object)
        introduced = np.array([date.fromisoformat(d).toordinal() for _, d in ordered], dtype=np.int64)
        first = start or (date.fromordinal(int(introduced.min())) if len(ordered) else date.today())
        return cls(ids, introduced, first, {sku: i for i, sku in enumerate(ids.tolist())})

    def __len__(self) -> int:
        return len(self.sku_ids)


def _epoch_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _offset_cursor(raw: str | None, tag: str) -> int:
    if not raw:
        return 0
    cur = _http.decode_cursor(raw)
    if not (isinstance(cur, list) and len(cur) == 2 and cur[0] == tag and isinstance(cur[1], int) and cur[1] >= 0):
        raise _http.BadRequest("invalid cursor")
    return cur[1]


def create_wms_app(config: WmsConfig | None = None) -> Starlette:
    """Starlette app of the WMS simulator; the simulator object is at ``app.state.simulator``."""
    return WmsSimulator(config or WmsConfig()).app()
