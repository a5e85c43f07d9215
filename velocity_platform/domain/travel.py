"""Picker travel distance in a single-block, parallel-aisle, picker-to-parts warehouse.

Geometry (the textbook model of Roodbergen & de Koster and Petersen 1997):

* ``aisles`` parallel aisles, aisle ``i`` has its centre-line at ``x = aisle_pitch_m * i``
  (3.0 m by default); pick faces on both sides, picked from the centre-line (no crossing cost).
* bay ``k`` (0-based) sits at depth ``y = (k + 0.5) * bay_pitch_m`` from the front cross-aisle
  (``y = 0``); the back cross-aisle is at ``y = L = bays_per_side * bay_pitch_m``.
* levels are stacked at the same face position: no vertical travel cost.
* the depot is at the front of the left-most aisle, ``(0, 0)``; travel is rectilinear along
  aisle centre-lines and the two cross-aisles (cross-aisle width is not modelled).

Routings (tour = depot -> every pick -> depot), with ``a_max`` the right-most visited aisle and
``m`` the number of visited aisles. All three run along the front cross-aisle out to ``a_max`` and
back (or out along one cross-aisle and back along the other), so horizontal travel is always
``2 * aisle_pitch_m * a_max``; they differ in the travel inside aisles:

* ``"return"``: every visited aisle is entered and left from the front, to its deepest pick and
  back: ``sum(2 * y_max(aisle))``.
* ``"s-shape"`` (traversal): every visited aisle is traversed end to end; when ``m`` is odd the
  last (right-most) visited aisle is instead entered and left from the front, to its deepest pick
  and back: ``m * L`` (``m`` even) or ``(m - 1) * L + 2 * y_max(a_max)`` (``m`` odd).
* ``"largest-gap"`` (Hall 1993): with one visited aisle, a return trip (``2 * y_max``). Otherwise
  the first and last visited aisles are traversed entirely (out along the back cross-aisle, home
  along the front one); in each middle visited aisle the largest gap -- the largest of the
  distances between adjacent picks, from the front cross-aisle to the first pick, and from the
  last pick to the back cross-aisle -- is never travelled: picks in front of it are fetched from
  the front, picks behind it from the back, each as an in-and-out trip: ``2 * L + sum over middle
  aisles of 2 * (L - largest_gap)``.

Everything is vectorised over all pick lines of all orders at once (two polars group-bys); there
is no Python loop over orders or lines.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import polars as pl

Routing = Literal["s-shape", "return", "largest-gap"]
ROUTINGS: tuple[str, ...] = ("s-shape", "return", "largest-gap")
SIDES: tuple[str, ...] = ("L", "R")

LOCATION_KEY = ["aisle", "bay", "side", "level"]

ORDER_TRAVEL_SCHEMA = {
    "travel_m": pl.Float64,
    "aisles_visited": pl.Int64,
    "pick_lines": pl.Int64,
}

LOCATION_COSTS_SCHEMA = {
    "aisle": pl.Int32,
    "bay": pl.Int32,
    "side": pl.String,
    "level": pl.Int32,
    "cost_rank": pl.Int64,
    "cost_m": pl.Float64,
}


@dataclass(frozen=True)
class Layout:
    """A single block of parallel aisles (see the module docstring for the geometry)."""

    aisles: int
    bays_per_side: int
    levels: int = 1
    aisle_pitch_m: float = 3.0
    bay_pitch_m: float = 1.0

    def __post_init__(self) -> None:
        for name in ("aisles", "bays_per_side", "levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"Layout.{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("aisle_pitch_m", "bay_pitch_m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"Layout.{name} must be a positive finite number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Layout.{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def aisle_length_m(self) -> float:
        """Distance between the front and back cross-aisles (``L``)."""
        return self.bays_per_side * self.bay_pitch_m

    @property
    def locations_per_aisle(self) -> int:
        return 2 * self.bays_per_side * self.levels

    @property
    def n_locations(self) -> int:
        return self.aisles * self.locations_per_aisle

    def aisle_x_m(self, aisle: int) -> float:
        return self.aisle_pitch_m * aisle

    def bay_depth_m(self, bay: int) -> float:
        return (bay + 0.5) * self.bay_pitch_m

    @classmethod
    def from_locations(
        cls, locations: pl.DataFrame, *, aisle_pitch_m: float = 3.0, bay_pitch_m: float = 1.0
    ) -> Layout:
        """The grid spanned by a WMS location master (WMS_LOCATIONS_SCHEMA columns).

        ``aisles = max(aisle) + 1``, ``bays_per_side = max(bay) + 1``, ``levels = max(level)``:
        gaps in the numbering (an aisle with no locations) are kept as positions, since they
        still occupy floor space the picker walks past. The master is treated as one block.
        """
        _require_columns(locations, ["aisle", "bay", "side", "level"], "locations")
        if locations.height == 0:
            raise ValueError("cannot build a Layout from an empty location master")
        stats = locations.select(
            nulls=pl.sum_horizontal(pl.col("aisle", "bay", "side", "level").null_count()),
            aisle_min=pl.col("aisle").min(),
            aisle_max=pl.col("aisle").max(),
            bay_min=pl.col("bay").min(),
            bay_max=pl.col("bay").max(),
            level_min=pl.col("level").min(),
            level_max=pl.col("level").max(),
            bad_side=(~pl.col("side").is_in(SIDES)).sum(),
        ).row(0, named=True)
        if stats["nulls"]:
            raise ValueError(f"location master has {stats['nulls']} null aisle/bay/side/level")
        if stats["aisle_min"] < 0 or stats["bay_min"] < 0 or stats["level_min"] < 1:
            raise ValueError(
                "location master out of range: aisle and bay are 0-based, level is 1-based "
                f"(min aisle {stats['aisle_min']}, bay {stats['bay_min']}, "
                f"level {stats['level_min']})"
            )
        if stats["bad_side"]:
            raise ValueError(f"location master has {stats['bad_side']} sides not in {SIDES}")
        return cls(
            aisles=int(stats["aisle_max"]) + 1,
            bays_per_side=int(stats["bay_max"]) + 1,
            levels=int(stats["level_max"]),
            aisle_pitch_m=aisle_pitch_m,
            bay_pitch_m=bay_pitch_m,
        )


def _require_columns(frame: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing columns {missing}; has {frame.columns}")


def _check_routing(routing: str) -> None:
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; expected one of {ROUTINGS}")


def locate(picks: pl.DataFrame, locations: pl.DataFrame) -> pl.DataFrame:
    """Add aisle, bay, side and level to pick lines by their ``location_id``.

    Keeps the pick lines' order and columns. Every pick line must resolve to exactly one
    location of the master (``location_id`` unique there); an unknown or null ``location_id``
    raises, because a line silently dropped would understate travel.
    """
    _require_columns(picks, ["location_id"], "picks")
    _require_columns(locations, ["location_id", *LOCATION_KEY], "locations")
    clash = [c for c in LOCATION_KEY if c in picks.columns]
    if clash:
        raise ValueError(f"picks already has {clash}; drop them before locate()")
    master = locations.select("location_id", *LOCATION_KEY)
    if master["location_id"].is_duplicated().any():
        raise ValueError("location master has duplicate location_id values")
    located = picks.join(
        master, on="location_id", how="left", validate="m:1", maintain_order="left"
    )
    unmatched = located.filter(pl.col("aisle").is_null())
    if unmatched.height:
        sample = unmatched["location_id"].unique().head(5).to_list()
        raise ValueError(
            f"{unmatched.height} pick lines have a location_id not in the master, e.g. {sample}"
        )
    return located


def _pick_lines(picks: pl.DataFrame, layout: Layout) -> pl.LazyFrame:
    """order_id, aisle, y (depth in m) per pick line, after range checks."""
    if "aisle" not in picks.columns and "location_id" in picks.columns:
        raise ValueError("picks has location_id but no aisle/bay; call locate(picks, locations)")
    _require_columns(picks, ["order_id", "aisle", "bay"], "picks")
    for column in ("aisle", "bay"):
        if not picks.schema[column].is_integer():
            dtype = picks.schema[column]
            raise ValueError(f"picks.{column} must be an integer column, got {dtype}")
    stats = picks.select(
        nulls=pl.sum_horizontal(pl.col("order_id", "aisle", "bay").null_count()),
        bad=(
            (pl.col("aisle") < 0)
            | (pl.col("aisle") >= layout.aisles)
            | (pl.col("bay") < 0)
            | (pl.col("bay") >= layout.bays_per_side)
        ).sum(),
    ).row(0)
    if stats[0]:
        raise ValueError(f"picks has {stats[0]} null order_id/aisle/bay values")
    if stats[1]:
        raise ValueError(
            f"{stats[1]} pick lines lie outside the layout "
            f"(aisles 0..{layout.aisles - 1}, bays 0..{layout.bays_per_side - 1})"
        )
    return picks.lazy().select(
        pl.col("order_id"),
        pl.col("aisle").cast(pl.Int32),
        ((pl.col("bay").cast(pl.Float64) + 0.5) * layout.bay_pitch_m).alias("y"),
    )


def order_travel(picks: pl.DataFrame, layout: Layout, routing: Routing) -> pl.DataFrame:
    """Tour length (depot -> picks -> depot) of every order under a routing policy.

    ``picks`` has one row per pick line with ``order_id``, ``aisle`` and ``bay`` (side, level and
    any other columns are ignored: both faces are picked from the centre-line and levels are
    stacked). Lines repeating a location are visited once but counted in ``pick_lines``.

    Returns one row per order, sorted by ``order_id``: ``order_id``, ``travel_m`` (metres),
    ``aisles_visited`` (distinct aisles with a pick), ``pick_lines``.
    """
    _check_routing(routing)
    lines = _pick_lines(picks, layout)
    L = layout.aisle_length_m
    pitch = layout.aisle_pitch_m

    if routing == "largest-gap":
        # Largest gap between adjacent picks inside each (order, aisle): sort once, diff against
        # the previous line and keep it only where that line is in the same (order, aisle).
        same_group = (pl.col("order_id") == pl.col("order_id").shift(1)) & (
            pl.col("aisle") == pl.col("aisle").shift(1)
        )
        lines = lines.sort("order_id", "aisle", "y").with_columns(
            gap_in=pl.when(same_group).then(pl.col("y") - pl.col("y").shift(1)).otherwise(0.0)
        )
        extra = [pl.col("gap_in").max()]
    else:
        extra = []

    per_aisle = lines.group_by("order_id", "aisle").agg(
        pl.len().alias("n"),
        pl.col("y").min().alias("y_min"),
        pl.col("y").max().alias("y_max"),
        *extra,
    )

    # Travel inside each visited aisle, given its place among the order's visited aisles.
    by_order = ["order_id"]
    m = pl.len().over(by_order)
    is_first = pl.col("aisle") == pl.col("aisle").min().over(by_order)
    is_last = pl.col("aisle") == pl.col("aisle").max().over(by_order)
    in_and_out = 2.0 * pl.col("y_max")  # from the front to the deepest pick and back
    if routing == "return":
        inside = in_and_out
    elif routing == "s-shape":
        inside = pl.when(is_last & (m % 2 == 1)).then(in_and_out).otherwise(pl.lit(L))
    else:  # largest-gap
        largest_gap = pl.max_horizontal(pl.col("y_min"), L - pl.col("y_max"), pl.col("gap_in"))
        inside = (
            pl.when(m == 1)
            .then(in_and_out)
            .when(is_first | is_last)
            .then(pl.lit(L))
            .otherwise(2.0 * (L - largest_gap))
        )

    # Cross-aisle travel: out to the right-most visited aisle and back.
    across = 2.0 * pitch * pl.col("aisle").max().cast(pl.Float64)
    return (
        per_aisle.with_columns(inside_m=inside)
        .group_by("order_id")
        .agg(
            (across + pl.col("inside_m").sum()).alias("travel_m"),
            pl.len().cast(pl.Int64).alias("aisles_visited"),
            pl.col("n").sum().cast(pl.Int64).alias("pick_lines"),
        )
        .sort("order_id")
        .collect()
    )


def location_costs(layout: Layout, routing: Routing) -> pl.DataFrame:
    """Every location of the layout with a travel cost and a slotting rank (1 = cheapest).

    Slotting gives the fastest movers the lowest ``cost_rank``. ``cost_rank`` is a strict order
    (1..n_locations, no ties) so SKUs sorted by velocity can be zipped with locations sorted by
    rank; ties in cost are broken by aisle, bay, level, side (L before R).

    What ``cost_m`` means, per routing (``x = aisle_pitch_m * aisle``, ``y`` the bay depth,
    ``L`` the aisle length). It is a stand-alone cost of using the location, not an exact
    marginal cost -- that depends on the other picks in the order:

    * ``"return"`` and ``"largest-gap"``: ``2 * x + 2 * y``, the tour of a one-line order from
      that location (a single visited aisle is a return trip under both). Under return routing
      it is also an upper bound on what the location can add to any tour. Ranked by
      ``cost_m``, so front bays of far aisles can beat deep bays of near ones (across-aisle
      style). Under largest-gap a pick deep in a middle aisle of a multi-aisle order can be
      fetched from the back, which this cost ignores.
    * ``"s-shape"``: ``2 * x + L``: an aisle with a pick is walked end to end, plus the
      cross-aisle run out to it and back when it is the right-most aisle, so all locations of
      an aisle cost the same. Ranked aisle first (nearest the depot first, i.e. within-aisle
      storage), then front bays first -- depth only matters on the return leg into an odd last
      aisle.
    """
    _check_routing(routing)

    def axis(name: str, start: int, stop: int) -> pl.DataFrame:
        return pl.DataFrame({name: pl.int_range(start, stop, dtype=pl.Int32, eager=True)})

    grid = (
        axis("aisle", 0, layout.aisles)
        .join(axis("bay", 0, layout.bays_per_side), how="cross")
        .join(axis("level", 1, layout.levels + 1), how="cross")
        .join(pl.DataFrame({"side": list(SIDES)}, schema={"side": pl.String}), how="cross")
    )
    x = layout.aisle_pitch_m * pl.col("aisle").cast(pl.Float64)
    y = (pl.col("bay").cast(pl.Float64) + 0.5) * layout.bay_pitch_m
    if routing == "s-shape":
        cost = 2.0 * x + layout.aisle_length_m
        order = ["aisle", "bay", "level", "side"]
    else:
        cost = 2.0 * x + 2.0 * y
        order = ["cost_m", "aisle", "bay", "level", "side"]
    return (
        grid.with_columns(cost_m=cost)
        .sort(order)
        .with_columns(cost_rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int64))
        .select(list(LOCATION_COSTS_SCHEMA))
    )


def expected_aisles_visited(
    aisles: int, bays_per_side: int, levels: int, picks_per_order: int
) -> float:
    """Expected distinct aisles visited by an order under random storage.

    The order's ``n = picks_per_order`` lines are ``n`` distinct locations drawn uniformly
    without replacement from the ``N = aisles * 2 * bays_per_side * levels`` locations, ``L =
    2 * bays_per_side * levels`` per aisle, so an aisle is missed with probability
    ``C(N - L, n) / C(N, n)`` and ``E = aisles * (1 - C(N - L, n) / C(N, n))`` (exact; the big
    integers are divided exactly, then rounded once).
    """
    layout = Layout(aisles=aisles, bays_per_side=bays_per_side, levels=levels)
    n = picks_per_order
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"picks_per_order must be a non-negative int, got {n!r}")
    n = int(n)
    N = layout.n_locations
    if n > N:
        raise ValueError(f"cannot draw {n} distinct locations from {N}")
    per_aisle = layout.locations_per_aisle
    return aisles * (1.0 - math.comb(N - per_aisle, n) / math.comb(N, n))


def rank_locations(
    locations: pl.DataFrame,
    routing: Routing,
    *,
    aisle_pitch_m: float = 3.0,
    bay_pitch_m: float = 1.0,
) -> pl.DataFrame:
    """The location master with ``cost_m`` and ``cost_rank`` under a routing.

    Costs come from ``location_costs`` on the grid the master spans; ``cost_rank`` is re-counted
    1..n over the master's own locations (a grid position the master lacks takes no rank), in
    the same order, so slotting can zip SKUs ranked by velocity with locations ranked by cost.
    """
    _check_routing(routing)
    _require_columns(locations, ["location_id", *LOCATION_KEY], "locations")
    layout = Layout.from_locations(locations, aisle_pitch_m=aisle_pitch_m, bay_pitch_m=bay_pitch_m)
    costs = location_costs(layout, routing).rename({"cost_rank": "_grid_rank"})
    keyed = locations.with_columns(
        pl.col("aisle").cast(pl.Int32), pl.col("bay").cast(pl.Int32), pl.col("level").cast(pl.Int32)
    )
    ranked = keyed.join(costs, on=LOCATION_KEY, how="left").sort("_grid_rank")
    return ranked.with_columns(cost_rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int64)).drop("_grid_rank")


def layout_locations(layout: Layout, capacity_ft3: float = 40.0) -> pl.DataFrame:
    """A WMS location master (WMS_LOCATIONS_SCHEMA columns, no occupants) for a layout.

    Ids follow the WMS simulator's scheme -- two-letter aisle, face position (odd left, even
    right, numbered from the front), ``-level`` when there is more than one level -- so that an
    assignment exported from that WMS can be replayed on the same layout. Zones A/B/C are the
    nearest 20%, the next 30% and the rest by one-way distance from the depot, as there.
    """
    if layout.aisles > 26 * 26:
        raise ValueError("at most 676 aisles (two-letter aisle codes)")
    grid = (
        pl.DataFrame({"aisle": pl.int_range(0, layout.aisles, dtype=pl.Int32, eager=True)})
        .join(pl.DataFrame({"bay": pl.int_range(0, layout.bays_per_side, dtype=pl.Int32, eager=True)}), how="cross")
        .join(pl.DataFrame({"side": list(SIDES)}, schema={"side": pl.String}), how="cross")
        .join(pl.DataFrame({"level": pl.int_range(1, layout.levels + 1, dtype=pl.Int32, eager=True)}), how="cross")
    )
    width = max(3, len(str(2 * layout.bays_per_side)))
    position = 2 * (pl.col("bay") + 1) - 1 + (pl.col("side") == "R").cast(pl.Int32)
    codes = pl.Series([chr(65 + a // 26) + chr(65 + a % 26) for a in range(layout.aisles)], dtype=pl.String)
    aisle_code = pl.col("aisle").replace_strict(pl.int_range(0, layout.aisles, eager=True), codes)
    location_id = pl.concat_str(aisle_code, pl.lit("-"), position.cast(pl.String).str.zfill(width))
    if layout.levels > 1:
        location_id = pl.concat_str(location_id, pl.lit("-"), pl.col("level").cast(pl.String))
    distance = layout.aisle_pitch_m * pl.col("aisle") + (pl.col("bay") + 0.5) * layout.bay_pitch_m
    n = layout.n_locations
    placed = grid.with_columns(
        location_id=location_id,
        distance_m=distance.cast(pl.Float64),
        capacity_ft3=pl.lit(float(capacity_ft3)),
        sku_id=pl.lit(None, pl.String),
    )
    # position in the stable distance order, as the simulator ranks its zones
    order = placed.select(pl.arg_sort_by("distance_m", maintain_order=True).alias("_i")).to_series()
    nearness = pl.Series("_nearness", [0] * n, dtype=pl.Int64).scatter(order, pl.int_range(0, n, eager=True))
    zone = (
        pl.when(pl.col("_nearness") < round(0.2 * n))
        .then(pl.lit("A"))
        .when(pl.col("_nearness") < round(0.5 * n))
        .then(pl.lit("B"))
        .otherwise(pl.lit("C"))
    )
    return (
        placed.with_columns(nearness)
        .with_columns(zone=zone)
        .select("location_id", "zone", "aisle", "bay", "side", "level", "capacity_ft3", "distance_m", "sku_id")
    )


def marginal_location_costs(order_lines: pl.DataFrame, layout: Layout, routing: Routing, probe_bays: int = 5) -> pl.DataFrame:
    """aisle, bay, marginal_m: how much longer, on average over their pick lines, the tours of
    `order_lines`' orders (order_id, aisle, bay) become when one more pick line is added at that
    grid position (each order weighted by its lines: that is where a SKU's lines land).

    This is what a pick line in a location really costs once the other lines of an order are
    walked anyway (``location_costs`` prices a one-line order): under S-shape routing a line in
    an aisle the order visits anyway costs nothing, a line in an aisle it skips costs the aisle.
    Measured by walking every order once as it is and once with the extra line, for every aisle
    at ``probe_bays`` depths; depths in between are interpolated. Orders x probes tours, one
    ``order_travel`` call; a few hundred orders measure it to a few percent.
    """
    _check_routing(routing)
    grid = pl.DataFrame({"aisle": pl.int_range(0, layout.aisles, dtype=pl.Int32, eager=True)}).join(
        pl.DataFrame({"bay": pl.int_range(0, layout.bays_per_side, dtype=pl.Int32, eager=True)}), how="cross"
    )
    if order_lines.is_empty():
        return grid.with_columns(pl.lit(None, pl.Float64).alias("marginal_m"))
    depths = sorted({round(i * (layout.bays_per_side - 1) / max(1, probe_bays - 1)) for i in range(probe_bays)})
    probes = (
        pl.DataFrame({"aisle": pl.int_range(0, layout.aisles, dtype=pl.Int32, eager=True)})
        .join(pl.DataFrame({"bay": pl.Series(depths, dtype=pl.Int32)}), how="cross")
        .with_row_index("probe")
        .with_columns(pl.col("probe").cast(pl.Int64))
    )
    n_probes = probes.height
    lines = order_lines.select(
        (pl.col("order_id").rank("dense").cast(pl.Int64) - 1).alias("order_id"),
        pl.col("aisle").cast(pl.Int32),
        pl.col("bay").cast(pl.Int32),
    )
    orders = lines.select("order_id").unique()
    with_probe = pl.concat(
        [
            lines.join(probes.select("probe"), how="cross"),
            orders.join(probes, how="cross").select("order_id", "aisle", "bay", "probe"),
        ]
    ).select((pl.col("order_id") * n_probes + pl.col("probe")).alias("order_id"), "aisle", "bay")
    # Weighted by the order's lines: a pick line lands in a large order more often than in a
    # small one, and in a large order most aisles are walked anyway.
    as_is = order_travel(lines, layout, routing).select(
        "order_id", pl.col("travel_m").alias("as_is_m"), pl.col("pick_lines").cast(pl.Float64).alias("_w")
    )
    extra = (
        order_travel(with_probe, layout, routing)
        .select(
            (pl.col("order_id") // n_probes).alias("base"),
            (pl.col("order_id") % n_probes).alias("probe"),
            "travel_m",
        )
        .join(as_is.rename({"order_id": "base"}), on="base")
        .group_by("probe")
        .agg((((pl.col("travel_m") - pl.col("as_is_m")) * pl.col("_w")).sum() / pl.col("_w").sum()).alias("marginal_m"))
    )
    measured = probes.join(extra, on="probe").select("aisle", "bay", "marginal_m")
    return (
        grid.join(measured, on=["aisle", "bay"], how="left")
        .sort("aisle", "bay")
        .with_columns(pl.col("marginal_m").interpolate().over("aisle"))
    )
