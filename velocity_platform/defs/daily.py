"""One way to handle a range of business dates: an asset body says what happens to one day of
one warehouse.

A backfill runs consecutive dates in one run (BACKFILL_POLICY), of one site or several, so every
partitioned asset and check may be handed a range of site-days. `daily_asset` applies what every
daily asset shares (partitions, backfill policy, the duckdb pool, kinds, the partition columns),
and takes the run's site-days site by site: the body sees one warehouse as if it were the only
one -- its inputs cut to that site (without the site column), the resources that know sites
scoped to it (`for_site`: its time zone and layout, its rows of the tables, its WMS, its outbox) --
and is called once per date in order, with its inputs cut to that date (or to the window a date
reads). The outputs get the site column back, and the days are merged: the frames concatenated,
each figure of the metadata as the asset declares once (`SUM`, `LAST`, ...), each in-asset
check's verdicts into the run's result. A check declared per partition (`daily_check`) judges a
site's dates the same way; `judge_dates` records each verdict on its site-day and merges them.

The one stage whose day depends on the day before, slotting, takes the range form
(`daily_asset(..., ranged=True)`): the body gets every date and yields each date's `Day` as the
domain's day-after-day loop produces it; the merging is the same.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from velocity_platform.defs.partitions import (
    BACKFILL_POLICY,
    DUCKDB_POOL,
    PARTITION_METADATA,
    DateVerdict,
    SiteDay,
    business_days,
    by_site,
    record_per_date,
    site_days_of,
    window,
)
from velocity_platform.defs.tables import PARTITION_COLUMN, WAREHOUSE_COLUMN

# The body's parameter that receives the site it is run for (stripped from what Dagster sees).
SITE_PARAMETER = "warehouse_id"

# How a figure of several days' metadata becomes the range's figure.
SUM = "sum"  # added up (counts, lines, hours)
LAST = "last"  # the latest date's (a state as of the end of the range); the default
FIRST = "first"
MAX = "max"  # the worst day's (a rate held to a limit on every date)
MIN = "min"  # the worst day's (a rate held to a floor on every date)
COUNTS = "counts"  # counts by kind ({field: n}), added up kind by kind
BY_DATE = "by_date"  # figures keyed by date ({"2026-01-05": {...}}): the dates' entries side by side
KINDS = {"duckdb", "polars"}


@dataclass(frozen=True)
class DailyIn:
    """A partitioned input cut to each date: the date itself, or the `days_back` days before it too."""

    days_back: int = 0
    columns: list[str] | None = None

    def asset_in(self) -> dg.AssetIn:
        return dg.AssetIn(
            partition_mapping=window(self.days_back) if self.days_back else None,
            metadata={"columns": self.columns} if self.columns else None,
        )

    def cut(self, frame: pl.DataFrame, day: dt.date, single: bool) -> pl.DataFrame:
        if single and not self.days_back:
            return frame  # a one-date run loaded exactly that date
        first = day - dt.timedelta(days=self.days_back)
        return frame.filter(pl.col(PARTITION_COLUMN).is_between(first, day))


@dataclass(frozen=True)
class Day:
    """What an asset makes of one business date: its frame (one per output of a multi-asset),
    the figures shown on it (per output name for a multi-asset), and its checks' verdicts."""

    output: pl.DataFrame | dict[str, pl.DataFrame]
    metadata: dict = field(default_factory=dict)
    checks: dict[str, DateVerdict] = field(default_factory=dict)


def _plain(value):
    return value.data if isinstance(value, dg.JsonMetadataValue) else value


def summed_counts(values: list) -> dict[str, int]:
    """Counts by kind from several dates, added up kind by kind, largest first."""
    counts: dict[str, int] = {}
    for value in values:
        for kind, n in _plain(value).items():
            counts[kind] = counts.get(kind, 0) + n
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _merged(rule, values: list):
    if callable(rule):
        return rule(values)
    if rule == SUM:
        total = sum(_plain(v) for v in values)
        return round(total, 6) if isinstance(total, float) else total
    if rule == MAX:
        return max(values, key=_plain)
    if rule == MIN:
        return min(values, key=_plain)
    if rule == FIRST:
        return values[0]
    if rule == COUNTS:
        return dg.MetadataValue.json(summed_counts(values))
    if rule == BY_DATE:
        return dg.MetadataValue.json({day: figures for value in values for day, figures in _plain(value).items()})
    return values[-1]


def merge_figures(per_day: list[dict], merge: dict[str, str | Callable]) -> dict:
    """Several dates' figures (or one date's) as one, each by its declared rule: a name above or
    a function of the dates' values; LAST when none is declared."""
    keys = list(dict.fromkeys(k for figures in per_day for k in figures))
    return {key: _merged(merge.get(key, LAST), [f[key] for f in per_day if key in f]) for key in keys}


def range_result(
    check_name: str, verdicts: dict[SiteDay, DateVerdict], merge: dict[str, str], asset_key: str | None = None
) -> dg.AssetCheckResult:
    """The run's result of a check from each site-day's verdict: it passes when every one passes
    (a range must not average a bad day away, nor a network a bad site), with the figures merged."""
    failing = {day: v for day, v in verdicts.items() if not v.passed}
    severity = (
        dg.AssetCheckSeverity.ERROR
        if any(v.severity == dg.AssetCheckSeverity.ERROR for v in (failing or verdicts).values())
        else dg.AssetCheckSeverity.WARN
    )
    # The result is about the latest failing date (the latest date when all pass): its figures
    # stand for the range wherever a figure has no rule of its own.
    shown = max(failing or verdicts)
    ordered = [v for day, v in verdicts.items() if day != shown] + [verdicts[shown]]
    metadata = merge_figures([v.metadata for v in ordered], merge)
    # Each failing site-day's own words, under its site's name: an alert names the warehouse.
    description = "\n".join(f"{site_day.warehouse_id}: {v.description}" for site_day, v in failing.items() if v.description) or None
    if len(verdicts) > 1:
        metadata["dates_failing"] = len(failing)
        metadata["shown_for"] = str(shown)
        sites = {site_day.warehouse_id for site_day in verdicts}
        if len(sites) > 1:
            metadata["warehouses_failing"] = len({site_day.warehouse_id for site_day in failing})
        if description:
            description = f"{len(failing)} of {len(verdicts)} site-days fail: {description}"
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name,
        passed=not failing,
        severity=severity,
        metadata=metadata,
        description=description,
    )


def _without(fn: Callable, *names: str) -> inspect.Signature:
    """The body's parameters as Dagster should see them: inputs and resources, not the date(s) or
    the site; and no return type (the body returns a Day, the asset yields frames)."""
    signature = inspect.signature(fn)
    return signature.replace(
        parameters=[p for n, p in signature.parameters.items() if n not in names],
        return_annotation=inspect.Signature.empty,
    )


def of_site(value, warehouse_id: str):
    """An input or resource as one site's body sees it: a partitioned frame cut to the site's rows
    (without the site column), a resource that knows sites scoped to it, anything else as is."""
    if isinstance(value, pl.DataFrame):
        if WAREHOUSE_COLUMN not in value.columns:
            return value  # network-wide reference data (the SKU master)
        return value.filter(pl.col(WAREHOUSE_COLUMN) == warehouse_id).drop(WAREHOUSE_COLUMN)
    for_site = getattr(value, "for_site", None)
    return for_site(warehouse_id) if callable(for_site) else value


def with_site(frame: pl.DataFrame, warehouse_id: str) -> pl.DataFrame:
    """A body's output with its site column, as every partitioned table stores it."""
    if frame.width == 0:
        return frame
    return frame.with_columns(pl.lit(warehouse_id, dtype=pl.String).alias(WAREHOUSE_COLUMN))


def _site_kwargs(fn: Callable, warehouse_id: str, kwargs: dict) -> dict:
    scoped = {name: of_site(value, warehouse_id) for name, value in kwargs.items()}
    if SITE_PARAMETER in inspect.signature(fn).parameters:
        scoped[SITE_PARAMETER] = warehouse_id
    return scoped


def _each_day(fn: Callable, context, days: list[dt.date], ins: dict[str, DailyIn], kwargs: dict) -> Iterable[tuple[dt.date, object]]:
    single = len(days) == 1
    for day in days:  # oldest first
        cut = {name: ins[name].cut(value, day, single) if name in ins else value for name, value in kwargs.items()}
        yield day, fn(context, day, **cut)


def _each_site_day(fn: Callable, context, ranged: bool, ins: dict[str, DailyIn], kwargs: dict) -> list[tuple[SiteDay, object]]:
    """The body's results for every site-day of the run: site by site, each site's dates in order."""
    produced = []
    for site, days in by_site(site_days_of(context)).items():
        scoped = _site_kwargs(fn, site, kwargs)
        results = fn(context, days, **scoped) if ranged else _each_day(fn, context, days, ins, scoped)
        produced += [(SiteDay(site, day), result) for day, result in results]
    return produced


def daily_asset(
    *,
    group: str,
    description: str | None = None,
    ins: dict[str, DailyIn] | None = None,
    outs: dict[str, dg.AssetOut] | None = None,
    merge: dict[str, str] | None = None,
    check_specs: list[dg.AssetCheckSpec] | None = None,
    check_merge: dict[str, dict[str, str]] | None = None,
    ranged: bool = False,
    **asset_kwargs,
):
    """A daily-partitioned asset (or multi-asset, with `outs`) from a body for one date.

    The body is `fn(context, day, **inputs_and_resources) -> Day`, its partitioned inputs cut to
    the date by `ins`. With `ranged=True` it is `fn(context, days, **...) -> Iterable[(day, Day)]`,
    for the stage that carries a state from one date to the next.
    """
    ins, merge, check_merge = ins or {}, merge or {}, check_merge or {}
    check_names = [spec.name for spec in check_specs or []]
    check_assets = {spec.name: spec.asset_key for spec in check_specs or []}

    def decorate(fn: Callable) -> dg.AssetsDefinition:
        @functools.wraps(fn)
        def body(context: dg.AssetExecutionContext, **kwargs):
            produced = _each_site_day(fn, context, ranged, ins, kwargs)
            names = list(outs) if outs else [None]
            for name in names:
                frames = [with_site(r.output[name] if name else r.output, site_day.warehouse_id) for site_day, r in produced]
                frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
                figures = merge_figures([(r.metadata.get(name, {}) if name else r.metadata) for _, r in produced], merge)
                metadata = {"dagster/row_count": frame.height, **figures}
                dates = {site_day.business_date for site_day, _ in produced}
                sites = {site_day.warehouse_id for site_day, _ in produced}
                if len(dates) > 1:
                    metadata["business_dates"] = len(dates)
                if len(sites) > 1:
                    metadata["warehouses"] = len(sites)
                yield dg.Output(frame, output_name=name or "result", metadata=metadata)
            for check in check_names:
                verdicts = {site_day: r.checks[check] for site_day, r in produced}
                yield range_result(check, verdicts, check_merge.get(check, {}), check_assets[check])

        body.__signature__ = _without(fn, "day", "days", SITE_PARAMETER)
        del body.__wrapped__  # Dagster reads the parameters of the wrapper, not of the body
        shared = dict(
            partitions_def=business_days,
            backfill_policy=BACKFILL_POLICY,
            group_name=group,
            pool=DUCKDB_POOL,
            check_specs=check_specs,
            # Inputs not named in `ins` (reference data, unpartitioned) are inferred and passed whole.
            ins={name: daily_in.asset_in() for name, daily_in in ins.items()} or None,
            name=fn.__name__,
            **asset_kwargs,
        )
        if outs:
            outs_with_layout = {
                name: dg.AssetOut(
                    metadata={**PARTITION_METADATA, **(out.metadata or {})},
                    kinds=KINDS,
                    description=out.description,
                )
                for name, out in outs.items()
            }
            return dg.multi_asset(outs=outs_with_layout, **shared)(body)
        return dg.asset(metadata=PARTITION_METADATA, kinds=KINDS, description=description, **shared)(body)

    return decorate


def judge_dates(
    context: dg.AssetCheckExecutionContext,
    asset: str,
    check: str,
    verdicts: dict[SiteDay, DateVerdict],
    merge: dict[str, str | Callable] | None = None,
    blocking: bool = False,
) -> dg.AssetCheckResult:
    """A check declared per partition, judged site-day by site-day: each verdict recorded on its
    site-day (a run over several), and the run's result, which gates the run, merged from them."""
    record_per_date(context, asset, check, verdicts, blocking)
    return range_result(check, verdicts, merge or {})


def daily_check(*, asset: str, name: str, merge: dict[str, str | Callable] | None = None, blocking: bool = False, **check_kwargs):
    """A check declared per partition from a body that judges one site's dates.

    The body is `fn(context, days, **inputs_and_resources) -> {date: DateVerdict}` (with a
    `warehouse_id` parameter if it needs the site's id), its inputs and resources as one site
    sees them (`of_site`); it is called once per site of the run.
    """

    def decorate(fn: Callable) -> dg.AssetChecksDefinition:
        @functools.wraps(fn)
        def body(context: dg.AssetCheckExecutionContext, **kwargs) -> dg.AssetCheckResult:
            verdicts: dict[SiteDay, DateVerdict] = {}
            for site, days in by_site(site_days_of(context)).items():
                for day, verdict in fn(context, days, **_site_kwargs(fn, site, kwargs)).items():
                    verdicts[SiteDay(site, day)] = verdict
            return judge_dates(context, asset, name, verdicts, merge, blocking)

        body.__signature__ = _without(fn, "days", SITE_PARAMETER)
        del body.__wrapped__
        return dg.asset_check(
            asset=asset, name=name, blocking=blocking, partitions_def=business_days, **check_kwargs
        )(body)

    return decorate
