"""`velocity-platform evaluate`: replay order history day by day as the platform would have run it.

For each business date D of the range, in order:

1. D's real orders are walked on the platform's slotting and on a baseline that never
   re-slots (both started from the same assignment). A SKU that arrives without a slot is put
   away in a random free location in the baseline, and its first day's picks are walked from
   that same place in the platform's run too (its slot comes from the night's directives).
2. The nightly job runs for D exactly as the assets do, with the same domain functions:
   daily demand (``history.daily_demand``, computed once from the validated lines, one group
   per day), velocity and pick rates at D from the 90 days up to D (``taxonomy.classify_skus``,
   ``pick_rate.with_pick_rates``, nothing after D), and the one planning loop
   (``slotting.plan_day_after_day``) that the ``slotting_directives`` asset runs: directives
   against the assignment at the start of D, applied before D+1's orders.

Nothing looks ahead: the SKU master as of D knows only the SKUs the file has shown by D.

What it reports leads with net labor: the walking the platform saved against the baseline, in
hours at the walk speed, less the hours its relocations took (``labor.LaborModel``); gross
travel reduction beside it, and the relocations undone within 30 days (thrash).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from velocity_platform.connectors.files import FileExport
from velocity_platform.domain.faces import faces, faces_short_of_a_day, replenishment_trips
from velocity_platform.domain.history import daily_demand, to_sales_history
from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.pick_rate import with_pick_rates
from velocity_platform.domain.shadow import (
    ASSIGNMENT_SCHEMA,
    apply_directives,
    picks_on,
    putaway,
    random_assignment,
    walked_savings,
)
from velocity_platform.domain.slotting import (
    MOVE_SCHEMA,
    SlottingConfig,
    plan_day_after_day,
    ranked_locations,
    reversed_relocations,
)
from velocity_platform.domain.taxonomy import TaxonomyConfig, classify_skus
from velocity_platform.domain.travel import Layout, Routing, layout_locations, order_travel
from velocity_platform.domain.validation import validate_lines

# How far back the static-turnover start looks for pick lines: the months an analyst would use.
STATIC_TURNOVER_DAYS = 182
REVERSAL_WINDOW_DAYS = 30

@dataclass(frozen=True)
class EvaluationSettings:
    first: dt.date
    last: dt.date
    layout: Layout
    routing: Routing = "s-shape"
    move_budget: int | None = 200  # None: unlimited
    start_assignment: str = "random"  # "random", "static-turnover" or a CSV/Parquet path with sku_id, location_id
    seed: int = 7
    history_from: dt.date | None = None  # default: the file's first date
    capacity_ft3: float = 40.0
    labor: LaborModel = field(default_factory=LaborModel)
    price_on: str = "target"  # SlottingConfig.price_on

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"--to {self.last} is before --from {self.first}")


@dataclass
class Evaluation:
    summary: dict
    days: pl.DataFrame  # business_date, orders, pick_lines, baseline_m, platform_m, moves, new_skus_slotted, relocations
    directives: pl.DataFrame  # every directive applied (SLOTTING_DIRECTIVES_SCHEMA)
    locations: pl.DataFrame  # the layout's location master
    savings: pl.DataFrame | None = None  # per day of relocations: priced and realised saving (m)


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


def static_turnover_assignment(
    skus: pl.Series, demand: pl.DataFrame, before: dt.date, locations: pl.DataFrame, routing: Routing
) -> pl.DataFrame:
    """The one-shot slotting an analyst makes before go-live: `skus` ranked by pick lines over
    the STATIC_TURNOVER_DAYS before `before`, fastest into the cheapest location under the
    routing (ties and SKUs without lines by sku_id)."""
    skus = skus.unique()
    if skus.len() > locations.height:
        raise ValueError(
            f"{skus.len():,} SKUs need a location but the layout has {locations.height:,}; use more --aisles, --bays or --levels"
        )
    lines = (
        demand.filter(pl.col("business_date").is_between(before - dt.timedelta(days=STATIC_TURNOVER_DAYS), before - dt.timedelta(days=1)))
        .group_by("sku_id")
        .agg(pl.col("pick_lines").sum())
    )
    ranked = (
        pl.DataFrame({"sku_id": skus})
        .join(lines, on="sku_id", how="left")
        .sort([pl.col("pick_lines").fill_null(0), pl.col("sku_id")], descending=[True, False])
    )
    cheapest = ranked_locations(locations, SlottingConfig(routing=routing)).sort("cost_rank")["location_id"]
    return ranked.select("sku_id", cheapest.head(ranked.height).alias("location_id")).cast(ASSIGNMENT_SCHEMA)


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
    order_lines = sales.filter(pl.col("txn_type") == "ORDER").select(
        "business_date", pl.col("txn_id").alias("order_id"), "sku_id", pl.col("quantity_eaches").alias("units")
    )
    orders_by_day = {key[0]: frame for key, frame in order_lines.partition_by("business_date", as_dict=True).items()}
    lookback = TaxonomyConfig().lookback_days
    config = SlottingConfig(move_budget=s.move_budget, routing=s.routing, labor=s.labor, price_on=s.price_on)

    a_class: dict[dt.date, pl.DataFrame] = {}

    def velocity_on(day: dt.date) -> pl.DataFrame:
        window = demand.filter(pl.col("business_date").is_between(day - dt.timedelta(days=lookback - 1), day))
        velocity = classify_skus(window, master.filter(pl.col("introduced_on") <= day), day, history_start=history_from)
        a_class[day] = velocity.filter(pl.col("abc_class") == "A").select("sku_id")
        return with_pick_rates(velocity, window, day, config.pick_rate)

    def recent_orders_on(day: dt.date) -> pl.DataFrame:
        return order_lines.filter(
            pl.col("business_date").is_between(day - dt.timedelta(days=config.pick_rate.level_days - 1), day)
        )

    known_at_start = master.filter(pl.col("introduced_on") < s.first)["sku_id"]
    if s.start_assignment == "random":
        start = random_assignment(known_at_start, locations, s.seed)
    elif s.start_assignment == "static-turnover":
        start = static_turnover_assignment(known_at_start, demand, s.first, locations, s.routing)
    else:
        start = load_assignment(s.start_assignment, locations)
    rng = np.random.default_rng([s.seed, 1])
    baseline = start
    horizon = int(round(s.labor.payback_horizon_days))
    # Each location's level, and the handling a pick line there takes, in metres of walking.
    placed = ranked_locations(locations, config).select("location_id", "handling_m").join(
        locations.select("location_id", "aisle", "bay", "level", "capacity_ft3"), on="location_id"
    )
    golden = pl.col("handling_m") == 0.0
    relocated = pl.DataFrame(schema=MOVE_SCHEMA)
    realised: list[pl.DataFrame] = []  # business_date of the moves, saved_m on a later day's orders
    days = [s.first + dt.timedelta(days=n) for n in range((s.last - s.first).days + 1)]
    # Walking costs measured weekly: they move slowly, and six months stay under half a minute.
    plans = plan_day_after_day(days, velocity_on, locations, start, master, None, recent_orders_on, config, walk_costs_every_days=7)
    rows, applied = [], []
    for plan in plans:
        day, platform, directives = plan.business_date, plan.assignment, plan.directives
        lines = orders_by_day.get(day)
        if lines is not None and lines.height:
            # Stock that arrives without a slot is put away where there is room.
            arrivals = lines.join(baseline, on="sku_id", how="anti")["sku_id"]
            baseline = pl.concat([baseline, putaway(arrivals, baseline, locations, rng)])
            staged = baseline.join(platform, on="sku_id", how="anti")
            sides = {"baseline": baseline, "platform": pl.concat([platform, staged])}
            walked = {
                name: order_travel(picks_on(lines, assignment, locations), s.layout, s.routing)
                for name, assignment in sides.items()
            }
            orders, pick_lines = walked["baseline"].height, int(walked["baseline"]["pick_lines"].sum())
            baseline_m = float(walked["baseline"]["travel_m"].sum())
            platform_m = float(walked["platform"]["travel_m"].sum())
            unslotted_picks = lines.join(staged, on="sku_id", how="semi").height
            units = lines.group_by("sku_id").agg(pl.col("units").sum())
            a_skus = a_class.get(day, pl.DataFrame(schema={"sku_id": pl.String}))
            labor_of = {}
            for name, assignment in sides.items():
                at = lines.join(assignment, on="sku_id").join(placed, on="location_id")
                is_a = pl.col("sku_id").is_in(a_skus["sku_id"].implode())
                labor_of[name] = {
                    "handling_m": float(at["handling_m"].sum()),
                    "golden_lines": int(at.select(golden.sum()).item()),
                    "a_lines": int(at.select(is_a.sum()).item()),
                    "a_golden_lines": int(at.select((is_a & golden).sum()).item()),
                    "replenishments": float(replenishment_trips(units, faces(assignment, placed, master))["trips"].sum()),
                }
            # What the relocations of the horizon before realise on today's orders.
            by_move_day = walked_savings(lines, sides["platform"], relocated, placed, s.layout, s.routing)
            realised.append(by_move_day)
            realised_m = float(by_move_day["saved_m"].sum()) if by_move_day.height else 0.0
        else:
            orders = pick_lines = unslotted_picks = 0
            baseline_m = platform_m = realised_m = 0.0
            labor_of = {name: dict.fromkeys(("handling_m", "golden_lines", "a_lines", "a_golden_lines", "replenishments"), 0) for name in ("baseline", "platform")}
        relocated = pl.concat(
            [
                relocated.filter(pl.col("business_date") > day - dt.timedelta(days=horizon)),
                directives.filter(pl.col("from_location").is_not_null()).select(list(MOVE_SCHEMA)),
            ]
        )
        applied.append(directives)
        row = {
            "business_date": day,
            "orders": orders,
            "pick_lines": pick_lines,
            "baseline_m": baseline_m,
            "platform_m": platform_m,
            "moves": directives.height,
            "new_skus_slotted": directives.filter(pl.col("from_location").is_null()).height,
            "relocations": int(directives["relocations"].sum()),
            "unslotted_picks": unslotted_picks,
            "expected_saving_m_per_day": float(directives["expected_saving_m_per_day"].sum()),
            "expected_net_saving_h": float(directives["net_saving_h"].sum()),
            # The walking (and handling) the day's relocations are priced at, per day.
            "priced_saving_m_per_day": float(directives.filter(pl.col("relocations") > 0)["expected_saving_m_per_day"].sum()),
            "realised_saving_m": realised_m,
            **{f"{name}_{key}": value for name, figures in labor_of.items() for key, value in figures.items()},
        }
        rows.append(row)
        if progress:
            progress(row)

    days_frame = pl.DataFrame(rows)
    directives = pl.concat(applied)
    reversed_moves = reversed_relocations(directives.select(list(MOVE_SCHEMA)), locations, s.routing, REVERSAL_WINDOW_DAYS)
    summary = _summary(days_frame, s, export, checked.valid.height, checked.rejects.height, history_from, reversed_moves.height)
    # Faces that cannot hold a day of demand, on the slotting the replay ends with.
    last_month = order_lines.filter(pl.col("business_date") > s.last - dt.timedelta(days=30))
    daily_units = last_month.group_by("sku_id").agg((pl.col("units").sum() / 30.0).alias("units_per_day"))
    short = faces_short_of_a_day(daily_units, faces(apply_directives(plan.assignment, plan.directives), placed, master))
    summary["skus_face_below_a_day"] = short.height
    summary["skus_face_below_a_day_default_cube"] = int(short["cube_is_default"].sum())
    summary["seconds"] = round(time.perf_counter() - started, 1)
    savings = _savings_by_move_day(days_frame, realised, s)
    return Evaluation(summary, days_frame, directives, locations, savings)


def _savings_by_move_day(days: pl.DataFrame, realised: list[pl.DataFrame], s: EvaluationSettings) -> pl.DataFrame:
    """business_date, relocations, priced_saving_m, realised_saving_m: each day's relocations,
    priced over the horizon (cut at the replay's end) and realised on the orders of those days."""
    horizon = int(round(s.labor.payback_horizon_days))
    walked = (
        pl.concat(realised).group_by("business_date").agg(pl.col("saved_m").sum().alias("realised_saving_m"))
        if realised
        else pl.DataFrame(schema={"business_date": pl.Date, "realised_saving_m": pl.Float64})
    )
    remaining = pl.min_horizontal(pl.lit(horizon), (pl.lit(s.last) - pl.col("business_date")).dt.total_days())
    return (
        days.select("business_date", "relocations", (pl.col("priced_saving_m_per_day") * remaining).alias("priced_saving_m"))
        .join(walked, on="business_date", how="left")
        .with_columns(pl.col("realised_saving_m").fill_null(0.0))
    )


def write_directives(evaluation: Evaluation, path: Path) -> int:
    """Every directive the replay applied, as CSV or Parquet (by the file's suffix): business_date,
    sku_id, from/to location with aisle/bay/level, expected saving, payback, net hours."""
    where = evaluation.locations.select("location_id", "aisle", "bay", "level")
    table = (
        evaluation.directives.join(where.rename(lambda c: f"from_{c}" if c != "location_id" else "from_location"), on="from_location", how="left")
        .join(where.rename(lambda c: f"to_{c}" if c != "location_id" else "to_location"), on="to_location", how="left")
        .select(
            "business_date",
            "sku_id",
            "from_location",
            "to_location",
            "from_aisle",
            "from_bay",
            "from_level",
            "to_aisle",
            "to_bay",
            "to_level",
            "expected_saving_m_per_day",
            "expected_pick_lines_per_day",
            "relocations",
            "payback_days",
            "net_saving_h",
            "reason",
        )
        .sort("business_date", "sku_id")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        table.write_parquet(path)
    else:
        table.write_csv(path)
    return table.height


def _share(total: dict, part: str, days: pl.DataFrame, whole: str) -> float | None:
    lines = float(days[whole].sum())
    return round(total[part] / lines, 4) if lines else None


def _summary(
    days: pl.DataFrame,
    s: EvaluationSettings,
    export: FileExport,
    validated: int,
    dead_lettered: int,
    history_from: dt.date,
    relocations_reversed: int,
) -> dict:
    orders = int(days["orders"].sum())
    baseline_m, platform_m = float(days["baseline_m"].sum()), float(days["platform_m"].sum())
    moves = int(days["moves"].sum())
    new_slots = int(days["new_skus_slotted"].sum())
    relocations = int(days["relocations"].sum())
    labor = s.labor
    baseline_h = labor.walk_hours(baseline_m)
    saved_h = labor.walk_hours(baseline_m - platform_m)
    relocation_h = labor.relocation_hours(relocations)
    total = {column: float(days[column].sum()) for column in days.columns if column.startswith(("baseline_", "platform_"))}
    handling_h = {side: labor.walk_hours(total[f"{side}_handling_m"]) for side in ("baseline", "platform")}
    replenish_h = {side: labor.replenish_hours(total[f"{side}_replenishments"]) for side in ("baseline", "platform")}
    net_h = saved_h + (handling_h["baseline"] - handling_h["platform"]) + (replenish_h["baseline"] - replenish_h["platform"]) - relocation_h
    # A day's relocations are priced at their saving per day over the horizon (cut at the replay's
    # end), and realised by what they saved on the orders of the same days.
    horizon = int(round(labor.payback_horizon_days))
    priced_m = days.select(
        (
            pl.col("priced_saving_m_per_day")
            * pl.min_horizontal(pl.lit(horizon), (pl.lit(s.last) - pl.col("business_date")).dt.total_days())
        ).sum()
    ).item()
    priced_h, realised_h = labor.walk_hours(float(priced_m or 0.0)), labor.walk_hours(float(days["realised_saving_m"].sum()))

    def share(part: str, whole: str, side: str = "platform") -> float | None:
        return round(total[f"{side}_{part}"] / total[f"{side}_{whole}"], 4) if total[f"{side}_{whole}"] else None

    excluded = export.excluded.filter(
        pl.col("business_date").is_between(history_from, s.last)
    )["lines"].sum()
    return {
        # Net labor: walking, handling and replenishment saved against the baseline, less the
        # relocations' labor; as a share of the baseline's walking hours.
        "net_labor_saving_hours": round(net_h, 1),
        "net_labor_saving_pct": round(100.0 * net_h / baseline_h, 2) if baseline_h else 0.0,
        "travel_saved_hours": round(saved_h, 1),
        "relocation_hours": round(relocation_h, 1),
        "handling_hours": round(handling_h["platform"], 1),
        "baseline_handling_hours": round(handling_h["baseline"], 1),
        "replenishments": round(total["platform_replenishments"]),
        "replenishment_hours": round(replenish_h["platform"], 1),
        "baseline_replenishments": round(total["baseline_replenishments"]),
        "baseline_replenishment_hours": round(replenish_h["baseline"], 1),
        "replenish_minutes": labor.replenish_minutes,
        "level_handling_s": list(labor.level_handling_s),
        "golden_levels": labor.golden_levels(s.layout.levels),
        "golden_zone_pick_share": _share(total, "platform_golden_lines", days, "pick_lines"),
        "golden_zone_a_pick_share": share("a_golden_lines", "a_lines"),
        "a_pick_lines": round(total["platform_a_lines"]),
        "baseline_golden_zone_pick_share": _share(total, "baseline_golden_lines", days, "pick_lines"),
        "baseline_golden_zone_a_pick_share": share("a_golden_lines", "a_lines", "baseline"),
        "priced_saving_hours": round(priced_h, 1),
        "realised_saving_hours": round(realised_h, 1),
        "realised_to_priced": round(realised_h / priced_h, 3) if priced_h else None,
        "baseline_travel_hours": round(baseline_h, 1),
        "relocations": relocations,
        "relocations_reversed_30d": relocations_reversed,
        "relocations_reversed_30d_pct": round(100.0 * relocations_reversed / relocations, 2) if relocations else 0.0,
        "move_minutes": labor.move_minutes,
        "walk_speed_m_s": labor.walk_speed_m_s,
        "payback_horizon_days": labor.payback_horizon_days,
        "orders": orders,
        "pick_lines": int(days["pick_lines"].sum()),
        "baseline_m_per_order": round(baseline_m / orders, 2) if orders else 0.0,
        "platform_m_per_order": round(platform_m / orders, 2) if orders else 0.0,
        "travel_reduction_pct": round(100.0 * (1.0 - platform_m / baseline_m), 2) if baseline_m else 0.0,
        "baseline_m": round(baseline_m, 1),
        "platform_m": round(platform_m, 1),
        "moves": moves,
        "new_skus_slotted": new_slots,
        "saving_m_per_relocation": round((baseline_m - platform_m) / relocations, 2) if relocations else None,
        "routing": s.routing,
        "price_on": s.price_on,
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


# The figures of a site's summary that add up over the network (hours, counts, metres).
_ADDITIVE = (
    "net_labor_saving_hours", "travel_saved_hours", "relocation_hours", "handling_hours", "baseline_handling_hours",
    "replenishments", "replenishment_hours", "baseline_replenishments", "baseline_replenishment_hours",
    "priced_saving_hours", "realised_saving_hours", "baseline_travel_hours", "relocations", "relocations_reversed_30d",
    "orders", "pick_lines", "a_pick_lines", "baseline_m", "platform_m", "moves", "new_skus_slotted",
)
# Settings every site shares (the command's), kept at the network's level as they are.
_SHARED = (
    "replenish_minutes", "level_handling_s", "price_on", "move_minutes", "walk_speed_m_s", "payback_horizon_days",
    "move_budget", "start_assignment", "seed", "evaluated_from", "evaluated_to", "days", "file",
)


def network_summary(sites: dict[str, dict]) -> dict:
    """The network's summary from its sites': today's fields, hours and counts summed, shares and
    per-order figures recomputed from the sums (not averaged), and each site's own under `warehouses`."""
    first = next(iter(sites.values()))
    total = {k: sum(site[k] for site in sites.values()) for k in _ADDITIVE}
    for k in ("net_labor_saving_hours", "travel_saved_hours", "relocation_hours", "handling_hours", "baseline_handling_hours",
              "replenishment_hours", "baseline_replenishment_hours", "priced_saving_hours", "realised_saving_hours",
              "baseline_travel_hours", "baseline_m", "platform_m"):
        total[k] = round(total[k], 1)

    def weighted(share: str, weight: str) -> float | None:
        known = [(site[share], site[weight]) for site in sites.values() if site[share] is not None and site[weight]]
        whole = sum(w for _, w in known)
        return round(sum(v * w for v, w in known) / whole, 4) if whole else None

    orders, relocations = total["orders"], total["relocations"]
    baseline_m, platform_m = total["baseline_m"], total["platform_m"]
    return {
        **total,
        **{k: first[k] for k in _SHARED},
        "net_labor_saving_pct": round(100.0 * total["net_labor_saving_hours"] / total["baseline_travel_hours"], 2) if total["baseline_travel_hours"] else 0.0,
        "golden_zone_pick_share": weighted("golden_zone_pick_share", "pick_lines"),
        "golden_zone_a_pick_share": weighted("golden_zone_a_pick_share", "a_pick_lines"),
        "baseline_golden_zone_pick_share": weighted("baseline_golden_zone_pick_share", "pick_lines"),
        "baseline_golden_zone_a_pick_share": weighted("baseline_golden_zone_a_pick_share", "a_pick_lines"),
        "realised_to_priced": round(total["realised_saving_hours"] / total["priced_saving_hours"], 3) if total["priced_saving_hours"] else None,
        "relocations_reversed_30d_pct": round(100.0 * total["relocations_reversed_30d"] / relocations, 2) if relocations else 0.0,
        "baseline_m_per_order": round(baseline_m / orders, 2) if orders else 0.0,
        "platform_m_per_order": round(platform_m / orders, 2) if orders else 0.0,
        "travel_reduction_pct": round(100.0 * (1.0 - platform_m / baseline_m), 2) if baseline_m else 0.0,
        "saving_m_per_relocation": round((baseline_m - platform_m) / relocations, 2) if relocations else None,
        "routing": ", ".join(sorted({site["routing"] for site in sites.values()})),
        "golden_levels": sorted({level for site in sites.values() for level in site["golden_levels"]}),
        "layout": {"locations": sum(site["layout"]["locations"] for site in sites.values())},
        "history_from": min(site["history_from"] for site in sites.values()),
        "seconds": round(sum(site.get("seconds", 0.0) for site in sites.values()), 1),
        "file_lines": {k: sum(site["file_lines"][k] for site in sites.values()) for k in first["file_lines"]},
        "warehouses": sites,
    }
