"""Shadow mode: real orders replayed on two slottings, to measure what the directives save.

The same orders are walked (``travel.order_travel``) once on one assignment and once on
another -- the current slotting against the slotting after a day's directives in the
``slotting_shadow_report`` asset, the never-re-slotted baseline against the platform's in
``velocity-platform evaluate`` -- and compared per order and in total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from velocity_platform.domain.travel import Layout, Routing, order_travel

ASSIGNMENT_SCHEMA = {"sku_id": pl.String, "location_id": pl.String}


def apply_directives(assignment: pl.DataFrame, directives: pl.DataFrame) -> pl.DataFrame:
    """The assignment after a day's directives (sku_id -> to_location); new SKUs are added.

    Directives of one day target locations free at the start of the day and move each SKU at
    most once, so their order does not matter.
    """
    if directives.is_empty():
        return assignment.select(list(ASSIGNMENT_SCHEMA))
    moves = directives.select("sku_id", pl.col("to_location").alias("location_id"))
    kept = assignment.select(list(ASSIGNMENT_SCHEMA)).join(moves, on="sku_id", how="anti")
    return pl.concat([kept, moves.cast(ASSIGNMENT_SCHEMA)])


def random_assignment(skus: pl.Series, locations: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Every SKU in a distinct location drawn at random (seeded): the legacy slotting."""
    skus = skus.unique().sort()
    if skus.len() > locations.height:
        raise ValueError(
            f"{skus.len():,} SKUs need a location but the layout has {locations.height:,}; "
            "use more --aisles, --bays or --levels"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(locations.height)[: skus.len()]
    return pl.DataFrame({"sku_id": skus, "location_id": locations["location_id"].gather(chosen)}, schema=ASSIGNMENT_SCHEMA)


def putaway(
    skus: pl.Series, assignment: pl.DataFrame, locations: pl.DataFrame, rng: np.random.Generator
) -> pl.DataFrame:
    """Random free locations for SKUs that arrive without a slot (a WMS putting stock away
    where there is room). Returns the new rows only; an error when the warehouse is full."""
    skus = skus.unique().sort()
    if skus.is_empty():
        return pl.DataFrame(schema=ASSIGNMENT_SCHEMA)
    free = locations.join(assignment, on="location_id", how="anti")["location_id"]
    if free.len() < skus.len():
        raise ValueError(
            f"{skus.len()} new SKUs arrive but only {free.len()} locations are free; "
            "use more --aisles, --bays or --levels"
        )
    chosen = rng.choice(free.len(), size=skus.len(), replace=False)
    return pl.DataFrame({"sku_id": skus, "location_id": free.gather(chosen)}, schema=ASSIGNMENT_SCHEMA)


ORDER_HASH = "__order_hash"
_HASH_RANGE = 2**64


def with_order_hash(lines: pl.DataFrame) -> pl.DataFrame:
    """The lines with a hash of their order id: the sample's draw, computed once for many days."""
    return lines.with_columns(pl.col("order_id").hash(seed=17).alias(ORDER_HASH))


def sample_orders(lines: pl.DataFrame, max_orders: int, orders: int | None = None) -> pl.DataFrame:
    """The lines of about `max_orders` of the `orders` orders in `lines`: those whose id hashes
    below max_orders / orders of the hash range (all of them when there are no more than that).

    Deterministic, and one draw for every day (an order's hash does not change), so consecutive
    days share nearly all of their sample and their figures move with the slotting, not with the
    draw; and a filter on a number, so a month of lines is sampled in one pass. An order is kept
    or dropped whole.
    """
    orders = lines["order_id"].n_unique() if orders is None else orders
    if orders <= max_orders:
        return lines
    hashed = lines if ORDER_HASH in lines.columns else with_order_hash(lines)
    threshold = int(_HASH_RANGE * max_orders / orders)
    return hashed.filter(pl.col(ORDER_HASH) < pl.lit(threshold, dtype=pl.UInt64))


def picks_on(lines: pl.DataFrame, assignment: pl.DataFrame, locations: pl.DataFrame) -> pl.DataFrame:
    """Order lines (order_id, sku_id) located on an assignment: order_id, sku_id, aisle, bay.

    A line whose SKU has no location in the assignment is an error: a pick that is silently
    left out would understate travel.
    """
    located = lines.select("order_id", "sku_id").join(assignment, on="sku_id", how="left").join(
        locations.select("location_id", "aisle", "bay"), on="location_id", how="left"
    )
    missing = located.filter(pl.col("aisle").is_null())
    if missing.height:
        sample = missing["sku_id"].unique().sort().head(5).to_list()
        raise ValueError(f"{missing.height} pick lines have no location on the assignment, e.g. SKUs {sample}")
    return located.select("order_id", "sku_id", "aisle", "bay")


@dataclass(frozen=True)
class Comparison:
    """Per-order travel of the same orders on two assignments."""

    per_order: pl.DataFrame  # order_id, pick_lines, before_m, after_m

    @property
    def orders(self) -> int:
        return self.per_order.height

    @property
    def pick_lines(self) -> int:
        return int(self.per_order["pick_lines"].sum())

    @property
    def before_m(self) -> float:
        return float(self.per_order["before_m"].sum())

    @property
    def after_m(self) -> float:
        return float(self.per_order["after_m"].sum())

    @property
    def reduction_pct(self) -> float:
        return 100.0 * (1.0 - self.after_m / self.before_m) if self.before_m > 0 else 0.0


def compare(
    lines: pl.DataFrame,
    before: pl.DataFrame,
    after: pl.DataFrame,
    locations: pl.DataFrame,
    layout: Layout,
    routing: Routing,
) -> Comparison:
    """Walk the orders of `lines` (order_id, sku_id) on `before` and on `after`.

    An order none of whose SKUs changed location walks the same path on both, so only the
    orders touching a moved SKU are walked a second time (a day's few hundred moves leave most
    of a month's orders untouched).
    """
    keys = ["sku_id", "location_id"]
    moved = pl.concat(
        [after.join(before, on=keys, how="anti").select("sku_id"), before.join(after, on=keys, how="anti").select("sku_id")]
    ).unique()
    touched = lines.join(moved, on="sku_id", how="semi")
    lines_after = lines.join(touched.select("order_id").unique(), on="order_id", how="semi")
    walked_before = order_travel(picks_on(lines, before, locations), layout, routing).select(
        "order_id", "pick_lines", pl.col("travel_m").alias("before_m")
    )
    walked_after = order_travel(picks_on(lines_after, after, locations), layout, routing).select(
        "order_id", pl.col("travel_m").alias("after_m")
    )
    per_order = walked_before.join(walked_after, on="order_id", how="left", maintain_order="left").with_columns(
        pl.col("after_m").fill_null(pl.col("before_m"))
    )
    return Comparison(per_order)



def walked_savings(
    lines: pl.DataFrame,
    assignment: pl.DataFrame,
    moves: pl.DataFrame,
    locations: pl.DataFrame,
    layout: Layout,
    routing: Routing,
) -> pl.DataFrame:
    """business_date, saved_m: what each day's relocations save on the orders of `lines`.

    `lines` (order_id, sku_id) are one day's orders; `assignment` the slotting they are walked on
    (every SKU of `lines` placed); `moves` the relocations of the days before (business_date,
    sku_id, from_location, to_location), which `assignment` reflects; `locations` has
    location_id, aisle, bay and handling_m (a pick line's handling on its level, in metres of
    walking). The moves are taken back day by day, the latest first: a day's saving is how much
    longer the orders are walked and handled with its moves taken back too, the earlier days'
    moves still made -- what the moves add to the slotting they were planned on, as it is walked
    now under the warehouse's routing. The days' savings add up to the saving of all the moves
    together (moves help each other: under S-shape a fast mover brought forward saves an aisle
    only once the other lines of its orders are forward too).
    """
    empty = pl.DataFrame(schema={"business_date": pl.Date, "saved_m": pl.Float64})
    if moves.is_empty() or lines.is_empty():
        return empty
    lines = lines.select("order_id", "sku_id")
    where = assignment.select("sku_id", "location_id")
    moved = moves.select("business_date", "sku_id", "from_location")
    dates = moved.select(pl.col("business_date").unique().sort().alias("undo_from"))
    # Version `undo_from`: every move of that day or later taken back -- each SKU where its
    # earliest such move found it.
    undone = (
        dates.join(moved, how="cross")
        .filter(pl.col("business_date") >= pl.col("undo_from"))
        .sort("business_date")
        .group_by("undo_from", "sku_id")
        .agg(pl.col("from_location").first())
    )
    touched = lines.join(moved.select("sku_id").unique(), on="sku_id", how="semi").select("order_id").unique()
    if touched.is_empty():
        return empty
    walked = lines.join(touched, on="order_id", how="semi").join(where, on="sku_id", how="left")
    as_is = walked.with_columns(pl.lit(None, pl.Date).alias("undo_from"))
    versions = dates.join(walked, how="cross").join(undone, on=["undo_from", "sku_id"], how="left").with_columns(
        pl.coalesce("from_location", "location_id").alias("location_id")
    )
    picks = pl.concat([as_is, versions.drop("from_location")], how="diagonal_relaxed").join(
        locations.select("location_id", "aisle", "bay", "handling_m"), on="location_id", how="inner"
    )
    key = pl.concat_str(pl.col("undo_from").cast(pl.String).fill_null("-"), pl.lit("|"), pl.col("order_id")).alias("_key")
    picks = picks.with_columns(key)
    travel = order_travel(picks.select(pl.col("_key").alias("order_id"), "aisle", "bay"), layout, routing)
    per_version = (
        picks.group_by("_key")
        .agg(pl.col("undo_from").first(), pl.col("handling_m").sum())
        .join(travel.select(pl.col("order_id").alias("_key"), "travel_m"), on="_key")
        .group_by("undo_from")
        .agg((pl.col("travel_m") + pl.col("handling_m")).sum().alias("cost_m"))
        .sort("undo_from", nulls_last=True)
    )
    # A day's saving: its version (it and every later day taken back) less the next day's.
    return per_version.select(
        pl.col("undo_from").alias("business_date"),
        (pl.col("cost_m") - pl.col("cost_m").shift(-1)).alias("saved_m"),
    ).filter(pl.col("business_date").is_not_null())
