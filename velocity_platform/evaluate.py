"""`velocity-platform evaluate`: replay order history day by day as the platform would have run it.

For each business date D of the range, in order:

1. D's real orders are walked on the platform's slotting and on a baseline that never
   re-slots (both started from the same assignment). A SKU that arrives without a slot is put
   away in a random free location in the baseline, and its first day's picks are walked from
   that same place in the platform's run too (its slot comes from the night's directives).
2. The nightly job runs for D exactly as the assets do, with the same domain functions:
   daily demand (``history.daily_demand``, computed once from the validated lines, one group
   per day), velocity at D from the 90 days up to D (``taxonomy.classify_skus``, nothing after
   D), directives against the assignment at the start of D (``slotting.plan_directives``,
   hysteresis against D-1, SKUs moved in the window left alone, the move budget), applied
   before D+1's orders.

Nothing looks ahead: the SKU master as of D knows only the SKUs the file has shown by D.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from velocity_platform.connectors.files import FileExport
from velocity_platform.domain.history import daily_demand, to_sales_history
from velocity_platform.domain.shadow import (
    ASSIGNMENT_SCHEMA,
    apply_directives,
    picks_on,
    putaway,
    random_assignment,
)
from velocity_platform.domain.slotting import SlottingConfig, plan_directives
from velocity_platform.domain.taxonomy import TaxonomyConfig, classify_skus
from velocity_platform.domain.travel import Layout, Routing, layout_locations, order_travel
from velocity_platform.domain.validation import validate_lines


@dataclass(frozen=True)
class EvaluationSettings:
    first: dt.date
    last: dt.date
    layout: Layout
    routing: Routing = "s-shape"
    move_budget: int | None = 200  # None: unlimited
    start_assignment: str = "random"  # "random" or a CSV/Parquet path with sku_id, location_id
    seed: int = 7
    history_from: dt.date | None = None  # default: the file's first date
    capacity_ft3: float = 40.0

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"--to {self.last} is before --from {self.first}")


@dataclass
class Evaluation:
    summary: dict
    days: pl.DataFrame  # business_date, orders, pick_lines, baseline_m, platform_m, moves, new_skus_slotted


def load_assignment(path: str | Path, locations: pl.DataFrame) -> pl.DataFrame:
    """A start assignment from a file (sku_id, location_id); every location must exist, once."""
    path = Path(path)
    reader = pl.read_parquet if path.suffix.lower() in (".parquet", ".pq") else pl.read_csv
    try:
        frame = reader(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ValueError(f"--start-assignment {path} cannot be read: {exc}") from None
    missing = [c for c in ASSIGNMENT_SCHEMA if c not in frame.columns]
    if missing:
        raise ValueError(f"--start-assignment {path} needs columns sku_id, location_id; it lacks {missing}")
    frame = frame.select(list(ASSIGNMENT_SCHEMA)).cast(ASSIGNMENT_SCHEMA)
    unknown = frame.join(locations, on="location_id", how="anti")
    if unknown.height:
        raise ValueError(
            f"--start-assignment {path}: {unknown.height} rows name locations not in the layout, "
            f"e.g. {unknown['location_id'].head(3).to_list()}; check --aisles/--bays/--levels"
        )
    for column in ASSIGNMENT_SCHEMA:
        if frame[column].is_duplicated().any():
            raise ValueError(f"--start-assignment {path}: a {column} appears twice; one SKU per location")
    return frame


def evaluate(
    export: FileExport,
    settings: EvaluationSettings,
    progress: Callable[[dict], None] | None = None,
) -> Evaluation:
    started = time.perf_counter()
    s = settings
    history_from = s.history_from or export.first_date
    if history_from is None or export.last_date is None:
        raise ValueError(f"{export.path.name} holds no dated lines")
    if s.first < history_from or s.last > export.last_date:
        raise ValueError(
            f"--from/--to {s.first}..{s.last} must lie within the file's history "
            f"{history_from}..{export.last_date}"
        )
    locations = layout_locations(s.layout, s.capacity_ft3)
    raw = export.raw_lines_between(history_from, s.last)
    master = export.sku_master(as_of=s.last)
    checked = validate_lines(raw, master, seen_at=dt.datetime.now(dt.UTC))
    sales = to_sales_history(checked.valid, master)
    demand = daily_demand(sales).sort("business_date")
    orders_by_day = {
        key[0]: frame
        for key, frame in sales.filter(pl.col("txn_type") == "ORDER")
        .select("business_date", pl.col("txn_id").alias("order_id"), "sku_id")
        .partition_by("business_date", as_dict=True)
        .items()
    }

    def velocity_at(day: dt.date) -> pl.DataFrame:
        window = demand.filter(
            pl.col("business_date").is_between(day - dt.timedelta(days=TaxonomyConfig().lookback_days - 1), day)
        )
        return classify_skus(window, master.filter(pl.col("introduced_on") <= day), day, history_start=history_from)

    known_at_start = master.filter(pl.col("introduced_on") < s.first)["sku_id"]
    if s.start_assignment == "random":
        start = random_assignment(known_at_start, locations, s.seed)
    else:
        start = load_assignment(s.start_assignment, locations)
    rng = np.random.default_rng([s.seed, 1])
    config = SlottingConfig(move_budget=s.move_budget, routing=s.routing)
    baseline, platform = start, start
    applied: list[pl.DataFrame] = []  # the platform's moves, for the hysteresis window
    yesterday = velocity_at(s.first - dt.timedelta(days=1))
    rows = []
    day = s.first
    while day <= s.last:
        lines = orders_by_day.get(day)
        if lines is not None and lines.height:
            # Stock that arrives without a slot is put away where there is room.
            arrivals = lines.join(baseline, on="sku_id", how="anti")["sku_id"]
            baseline = pl.concat([baseline, putaway(arrivals, baseline, locations, rng)])
            staged = baseline.join(platform, on="sku_id", how="anti")
            walked = {
                name: order_travel(picks_on(lines, assignment, locations), s.layout, s.routing)
                for name, assignment in (("baseline", baseline), ("platform", pl.concat([platform, staged])))
            }
            orders, pick_lines = walked["baseline"].height, int(walked["baseline"]["pick_lines"].sum())
            baseline_m = float(walked["baseline"]["travel_m"].sum())
            platform_m = float(walked["platform"]["travel_m"].sum())
            unslotted_picks = lines.join(staged, on="sku_id", how="semi").height
        else:
            orders = pick_lines = unslotted_picks = 0
            baseline_m = platform_m = 0.0
        today = velocity_at(day)
        window_start = day - dt.timedelta(days=config.hysteresis_days)
        recent = [m for m in applied[-config.hysteresis_days :] if not m.is_empty()]
        recently_moved = (
            pl.concat(recent).filter(pl.col("business_date") >= window_start).select("sku_id") if recent else None
        )
        directives = plan_directives(
            day,
            velocity_today=today,
            velocity_yesterday=yesterday,
            locations=locations,
            assignment=platform,
            sku_master=master.filter(pl.col("introduced_on") <= day),
            recently_moved=recently_moved,
            config=config,
        )
        platform = apply_directives(platform, directives)
        applied.append(directives.select("business_date", "sku_id"))
        row = {
            "business_date": day,
            "orders": orders,
            "pick_lines": pick_lines,
            "baseline_m": baseline_m,
            "platform_m": platform_m,
            "moves": directives.height,
            "new_skus_slotted": directives.filter(pl.col("from_location").is_null()).height,
            "unslotted_picks": unslotted_picks,
            "expected_saving_m_per_day": float(directives["expected_saving_m_per_day"].sum()),
        }
        rows.append(row)
        if progress:
            progress(row)
        yesterday = today
        day += dt.timedelta(days=1)

    days = pl.DataFrame(rows)
    summary = _summary(days, s, export, checked.valid.height, checked.rejects.height, history_from)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return Evaluation(summary, days)


def _summary(
    days: pl.DataFrame,
    s: EvaluationSettings,
    export: FileExport,
    validated: int,
    dead_lettered: int,
    history_from: dt.date,
) -> dict:
    orders = int(days["orders"].sum())
    baseline_m, platform_m = float(days["baseline_m"].sum()), float(days["platform_m"].sum())
    moves = int(days["moves"].sum())
    new_slots = int(days["new_skus_slotted"].sum())
    excluded = export.excluded.filter(
        pl.col("business_date").is_between(history_from, s.last)
    )["lines"].sum()
    return {
        "orders": orders,
        "pick_lines": int(days["pick_lines"].sum()),
        "baseline_m_per_order": round(baseline_m / orders, 2) if orders else 0.0,
        "platform_m_per_order": round(platform_m / orders, 2) if orders else 0.0,
        "travel_reduction_pct": round(100.0 * (1.0 - platform_m / baseline_m), 2) if baseline_m else 0.0,
        "baseline_m": round(baseline_m, 1),
        "platform_m": round(platform_m, 1),
        "moves": moves,
        "new_skus_slotted": new_slots,
        "relocations": moves - new_slots,
        "saving_m_per_relocation": round((baseline_m - platform_m) / (moves - new_slots), 2) if moves > new_slots else None,
        "routing": s.routing,
        "layout": {
            "aisles": s.layout.aisles,
            "bays_per_side": s.layout.bays_per_side,
            "levels": s.layout.levels,
            "aisle_pitch_m": s.layout.aisle_pitch_m,
            "bay_pitch_m": s.layout.bay_pitch_m,
            "locations": s.layout.n_locations,
        },
        "move_budget": s.move_budget,
        "start_assignment": s.start_assignment,
        "seed": s.seed,
        "evaluated_from": s.first.isoformat(),
        "evaluated_to": s.last.isoformat(),
        "history_from": history_from.isoformat(),
        "days": days.height,
        "file": export.path.name,
        "file_lines": {
            "validated": validated,
            "excluded_non_inventory": int(excluded or 0),
            "dead_lettered": dead_lettered,
        },
    }
