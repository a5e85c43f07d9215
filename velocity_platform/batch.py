"""Running the graph for a range of business dates on a Dagster instance, and summarising it.

`velocity-platform run` and `demo` use this; so do the integration tests and the benchmarks, so
there is one code path from the command line to the tables. Each business date of each warehouse
is one run of the nightly job (the same job the 02:00 schedule and UI backfills launch), night by
night in date order -- a day's velocity reads the days before it and its moves start from the
previous day's -- and, within a night, site by site.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from velocity_platform.domain.network import DEFAULT_WAREHOUSE_ID
from velocity_platform.domain.taxonomy import UNCLASSIFIED
from velocity_platform.settings import Settings

JOB_NAME = "nightly_slotting_batch"
ROLLUP_JOB_NAME = "network_rollup"
# The run's events all go to the instance (the UI shows them); the terminal gets one progress
# line per day and only warnings and errors from Dagster.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_dagster_home(settings: Settings, template: Path | None = None) -> Path:
    """The settings' Dagster home (DAGSTER_HOME, or a git-ignored one under the local state dir),
    created, with the repo's dagster.yaml copied in when it has none: the repository root itself
    is never used as DAGSTER_HOME."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    template = template or Path.cwd() / "dagster.yaml"
    if not config.exists() and template.exists():
        shutil.copyfile(template, config)
    return home


def _definitions(settings: Settings | None):
    """The definitions these settings build; without settings, the code location's own (read from
    the environment, as `dagster dev` reads them)."""
    from velocity_platform.definitions import build_definitions, defs

    return build_definitions(settings) if settings is not None else defs()


def _instance(settings: Settings | None):
    from dagster import DagsterInstance

    return DagsterInstance.from_config(str(settings.dagster_home)) if settings is not None else DagsterInstance.get()


def business_dates(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


@dataclass
class DayOutcome:
    business_date: dt.date
    success: bool
    seconds: float
    checks_passed: int
    checks_failed: list[str] = field(default_factory=list)  # every check that did not pass, gates and signals
    error: str | None = None
    warehouse_id: str = DEFAULT_WAREHOUSE_ID
    checks_warned: list[str] = field(default_factory=list)  # those of checks_failed that are WARN signals

    @property
    def mark(self) -> str:
        """ok, warn (a signal raised, nothing stopped) or FAIL (the run failed or a gate did)."""
        if not self.success or set(self.checks_failed) - set(self.checks_warned):
            return "FAIL"
        return "warn" if self.checks_failed else "ok "


def network_sites(settings: Settings | None, warehouses: list[str] | None = None) -> list[str]:
    """The sites a command runs: those asked for, else every registered one, else the default
    site (a deployment that registered none is one warehouse, as before sites existed)."""
    if warehouses:
        return list(dict.fromkeys(warehouses))
    from velocity_platform.connectors.state import OperationalStore

    url = settings.store_url if settings is not None else Settings.from_env().store_url
    registered = OperationalStore(url).registered_warehouses()
    return [site.warehouse_id for site in registered] or [DEFAULT_WAREHOUSE_ID]


def ensure_warehouse_partitions(instance, sites: list[str]) -> None:
    """Every site a value of the warehouse dimension on this instance (the registry's own sensor
    does it under the daemon; a command does not wait for a tick)."""
    from velocity_platform.defs.partitions import WAREHOUSES_PARTITIONS

    known = set(instance.get_dynamic_partitions(WAREHOUSES_PARTITIONS))
    missing = [site for site in sites if site not in known]
    if missing:
        instance.add_dynamic_partitions(WAREHOUSES_PARTITIONS, missing)


def run_range(
    dates: list[dt.date],
    progress: Callable[[DayOutcome, int, int], None] | None = None,
    resource_config: dict[str, dict] | None = None,
    settings: Settings | None = None,
    warehouses: list[str] | None = None,
) -> list[DayOutcome]:
    """Materialize every asset for each date of each site, night by night and site by site, on the
    settings' Dagster instance (without settings: the environment's, DAGSTER_HOME); with several
    sites, each night's network roll-up after its sites.

    `resource_config` overrides resource fields for these runs, e.g. {"erp": {"timeout_s": 1.0}}.
    """
    from velocity_platform.defs.partitions import SiteDay

    definitions = _definitions(settings)
    job = definitions.resolve_job_def(JOB_NAME)
    sites = network_sites(settings, warehouses)
    outcomes: list[DayOutcome] = []
    run_config = {**QUIET_CONSOLE, "resources": {k: {"config": v} for k, v in (resource_config or {}).items()}}
    total = len(dates) * len(sites)
    with _instance(settings) as instance:
        ensure_warehouse_partitions(instance, sites)
        for day in dates:
            for site in sites:
                started = time.perf_counter()
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=SiteDay(site, day).key,
                    tags={"velocity/warehouse": site},
                    raise_on_error=False,
                    run_config=run_config,
                )
                outcome = _outcome(day, result, time.perf_counter() - started, site)
                outcomes.append(outcome)
                if progress:
                    progress(outcome, len(outcomes), total)
            if len(sites) > 1:
                definitions.resolve_job_def(ROLLUP_JOB_NAME).execute_in_process(
                    instance=instance, partition_key=day.isoformat(), raise_on_error=False, run_config=QUIET_CONSOLE
                )
    return outcomes


def run_together(
    dates: list[dt.date],
    resource_config: dict[str, dict] | None = None,
    assets: list[str] | None = None,
    settings: Settings | None = None,
    warehouse_id: str | None = None,
) -> DayOutcome:
    """Materialize every asset (or only `assets`, with their checks) for consecutive dates of one
    site in one run, as a backfill run does (see BACKFILL_POLICY); the outcome is dated with the
    last date and covers them all."""
    from dagster import AssetKey

    from velocity_platform.defs.partitions import SiteDay

    site = warehouse_id or network_sites(settings)[0]
    job = _definitions(settings).resolve_job_def(JOB_NAME)
    run_config = {**QUIET_CONSOLE, "resources": {k: {"config": v} for k, v in (resource_config or {}).items()}}
    tags = {
        RANGE_START_TAG: str(SiteDay(site, dates[0]).key),
        RANGE_END_TAG: str(SiteDay(site, dates[-1]).key),
        "velocity/warehouse": site,
    }
    selection = [AssetKey(name) for name in assets] if assets else None
    started = time.perf_counter()
    with _instance(settings) as instance:
        ensure_warehouse_partitions(instance, [site])
        result = job.execute_in_process(
            instance=instance, tags=tags, raise_on_error=False, run_config=run_config, asset_selection=selection
        )
    return _outcome(dates[-1], result, time.perf_counter() - started, site)


def _outcome(day: dt.date, result, seconds: float, warehouse_id: str = DEFAULT_WAREHOUSE_ID) -> DayOutcome:
    """What a finished in-process run says: success, checks passed and failed (and which of those
    are WARN signals), the first error."""
    from dagster import AssetCheckSeverity

    evaluations = result.get_asset_check_evaluations()
    failed = [f"{e.asset_key.to_user_string()}.{e.check_name}" for e in evaluations if not e.passed]
    warned = [
        f"{e.asset_key.to_user_string()}.{e.check_name}" for e in evaluations if not e.passed and e.severity == AssetCheckSeverity.WARN
    ]
    error = None
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        error = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error else "run failed"
    return DayOutcome(day, result.success, seconds, len(evaluations) - len(failed), failed, error, warehouse_id, warned)


# What a velocity window reads (daily_sku_demand) and everything it is built from, with their
# gates: the history the demo builds in one run before its nights.
DEMAND_ASSETS = [
    "sku_master",
    "raw_transactions",
    "validated_transactions",
    "dead_letter_transactions",
    "sales_history",
    "daily_sku_demand",
]

# The tags a backfill puts on a run that covers a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def summarize(
    dates: list[dt.date], outcomes: list[DayOutcome], erp_lines: int | dict[str, int], settings: Settings
) -> dict:
    """The KPI summary of a range, read back from the tables the run wrote: the network's totals
    at the top (today's fields), and each site's own under `warehouses`.

    `erp_lines` is the source's count of lines, per site (or one total for a single site).
    """
    sites = list(dict.fromkeys(o.warehouse_id for o in outcomes)) or [DEFAULT_WAREHOUSE_ID]
    source_lines = erp_lines if isinstance(erp_lines, dict) else {sites[0]: erp_lines, **{s: 0 for s in sites[1:]}}
    per_site = {
        site: _site_summary(dates, [o for o in outcomes if o.warehouse_id == site], source_lines.get(site, 0), settings, site)
        for site in sites
    }
    if len(per_site) == 1:
        summary = dict(next(iter(per_site.values())))
    else:
        summary = _network_totals(list(per_site.values()))
        summary["partitions"] = [d.isoformat() for d in dates]
    summary["warehouses"] = per_site
    return summary


def _site_summary(dates: list[dt.date], outcomes: list[DayOutcome], erp_lines: int, settings: Settings, site: str) -> dict:
    from velocity_platform.defs.tables import WarehouseTables

    first, last = dates[0], dates[-1]
    with WarehouseTables.of_settings(settings).session(read_only=True, warehouse_id=site) as tables:

        def count(table: str) -> int:
            return tables.count(table, first, last)

        def classes(column: str) -> dict[str, int]:
            if column not in CLASS_COLUMNS:
                raise ValueError(f"{column!r} is not a class column of sku_velocity ({', '.join(sorted(CLASS_COLUMNS))})")
            if not tables.exists("sku_velocity"):
                return {}
            rows = tables.read("sku_velocity", last, columns=[column]).group_by(column).len().sort(column, nulls_last=True)
            # a null XYZ class is a SKU without the weeks on sale to judge: shown apart, never as Z
            return {UNCLASSIFIED if k is None else k: v for k, v in rows.iter_rows()}

        raw, valid, dead = count("raw_transactions"), count("validated_transactions"), count("dead_letter_transactions")
        unreadable = _unreadable_rows(tables, first, last)
        acked = tables.count("wms_directive_acks", first, last, equal={"status": "acked"})
        abc = classes("abc_class")
        return {
            "partitions": [d.isoformat() for d in dates],
            "partitions_succeeded": sum(o.success for o in outcomes),
            "erp_lines": erp_lines,
            "raw_lines": raw,
            "validated_lines": valid,
            "dead_letter_lines": dead,
            "dlq_rate": round(dead / raw, 6) if raw else 0.0,
            **reconciliation(erp_lines, raw, valid, dead, unreadable),
            "skus_classified": sum(abc.values()),
            "abc_counts": abc,
            "xyz_counts": classes("xyz_class"),
            "directives": count("slotting_directives"),
            "directives_acked": acked,
            "checks_passed": sum(o.checks_passed for o in outcomes),
            "checks_failed": sum(len(o.checks_failed) for o in outcomes),
            "failed_checks": sorted({c for o in outcomes for c in o.checks_failed}),
            "warned_checks": sorted({c for o in outcomes for c in o.checks_warned}),
            "wall_seconds": round(sum(o.seconds for o in outcomes), 2),
            "site_days": len(dates),
            "warehouse_id": site,
        }


# The fields of a site's summary that the network's adds up (the rest are per site, or derived).
SUMMED = (
    "partitions_succeeded", "erp_lines", "raw_lines", "validated_lines", "dead_letter_lines", "skus_classified",
    "directives", "directives_acked", "checks_passed", "checks_failed", "wall_seconds", "site_days",
    "raw_lines_received", "unreadable_lines",
)


def _network_totals(sites: list[dict]) -> dict:
    """The network's summary from its sites': counts added up, class counts added up class by
    class, the DLQ rate of the total lines. `partitions_succeeded` counts site-days."""
    totals = {key: sum(site[key] for site in sites) for key in SUMMED}
    totals["wall_seconds"] = round(totals["wall_seconds"], 2)
    totals["dlq_rate"] = round(totals["dead_letter_lines"] / totals["raw_lines"], 6) if totals["raw_lines"] else 0.0
    for key in ("abc_counts", "xyz_counts"):
        merged: dict[str, int] = {}
        for site in sites:
            for name, n in site[key].items():
                merged[name] = merged.get(name, 0) + n
        totals[key] = dict(sorted(merged.items()))
    totals["failed_checks"] = sorted({c for site in sites for c in site["failed_checks"]})
    totals["warned_checks"] = sorted({c for site in sites for c in site.get("warned_checks", [])})
    # The network reconciles when every site does (a surplus at one never hides a loss at another).
    totals["reconciled"] = all(site["reconciled"] for site in sites)
    totals["not_reconciled"] = [f"{site['warehouse_id']}: {why}" for site in sites for why in site["not_reconciled"]]
    return totals


def _unreadable_rows(tables, first: dt.date, last: dt.date) -> int:
    """Raw rows standing for an unreadable ERP page or document (no lines of their own); a file's
    unreadable line (source batch '...:line-N') is a line and not counted here."""
    if not tables.exists("raw_transactions"):
        return 0
    where, params = tables._where(first, last, None)
    sql = (
        f"SELECT count(*) FROM {tables.source('raw_transactions')}{where or ' WHERE true'} "
        "AND page_error IS NOT NULL AND NOT regexp_matches(coalesce(source_batch, ''), ':line-[0-9]+$')"
    )
    return tables.connection.execute(sql, params).fetchone()[0]


def reconciliation(
    erp_lines: int, raw_rows: int, validated_lines: int, dead_letter_rows: int, unreadable_rows: int, excluded_lines: int = 0
) -> dict:
    """Whether a range's counts reconcile, and where what is missing is counted.

    Reconciled means ERP lines = raw lines (+ excluded) = validated + dead-lettered. A raw row
    standing for an unreadable page or document holds none of the ERP's lines: the lines the ERP
    counts and did not send readable are `unreadable_lines`, dead-lettered as that row. Anything
    else missing is counted nowhere, and said so.
    """
    raw_lines = raw_rows - unreadable_rows
    not_received = erp_lines - excluded_lines - raw_lines
    unreadable_lines = max(0, not_received) if unreadable_rows else 0
    missing: list[str] = []
    if unreadable_lines:
        missing.append(
            f"{unreadable_lines:,} ERP lines in {unreadable_rows:,} unreadable page(s)/document(s), "
            "dead-lettered as such (dead_letter_transactions, fields = ['document'] or ['page'])"
        )
    if not_received - unreadable_lines:
        gap = not_received - unreadable_lines
        missing.append(
            f"{gap:,} ERP lines not received and counted nowhere" if gap > 0 else f"{-gap:,} raw lines more than the ERP counts"
        )
    if raw_rows != validated_lines + dead_letter_rows:
        missing.append(
            f"{raw_rows - validated_lines - dead_letter_rows:,} raw rows neither validated nor dead-lettered"
        )
    return {"raw_lines_received": raw_lines, "unreadable_lines": unreadable_lines, "reconciled": not missing, "not_reconciled": missing}


# The class columns of sku_velocity the summary counts.
CLASS_COLUMNS = frozenset({"abc_class", "xyz_class"})


def failed_and_warned(failed: list[str], warned: list[str]) -> str:
    gates = [c for c in failed if c not in warned]
    signals = [c for c in failed if c in warned]
    return (f", failed: {', '.join(gates)}" if gates else "") + (f", signal: {', '.join(signals)}" if signals else "")


def print_progress(outcome: DayOutcome, index: int, total: int) -> None:
    line = (
        f"[{index:>3}/{total}] {outcome.business_date} {outcome.warehouse_id:<6} {outcome.mark}  {outcome.seconds:5.1f}s  "
        f"checks {outcome.checks_passed} passed"
    )
    line += failed_and_warned(outcome.checks_failed, outcome.checks_warned)
    if outcome.error:
        line += f"\n           {outcome.error.splitlines()[0][:200]}"
    print(line, file=sys.stderr, flush=True)


def all_succeeded(summary: dict) -> bool:
    """Every site-day of the summary's range succeeded."""
    return summary["partitions_succeeded"] == summary["site_days"]


def format_summary(summary: dict) -> str:
    sites = summary.get("warehouses") or {}
    lines = _summary_lines(summary, "network" if len(sites) > 1 else None)
    if len(sites) > 1:
        for site, figures in sites.items():
            lines.append("")
            lines += _summary_lines(figures, site)
    return "\n".join(lines)


def _summary_lines(summary: dict, title: str | None) -> list[str]:
    reconciled = summary["reconciled"]
    header = f"{title:<19} " if title else "Business dates      "
    succeeded = f"{summary['partitions_succeeded']}/{summary['site_days']} " + ("site-days" if title == "network" else "succeeded")
    return [
        f"{header}{summary['partitions'][0]} .. {summary['partitions'][-1]} ({succeeded})",
        f"ERP lines           {summary['erp_lines']:>12,}",
        f"Raw lines           {summary['raw_lines']:>12,}",
        f"  validated         {summary['validated_lines']:>12,}",
        f"  dead-lettered     {summary['dead_letter_lines']:>12,}   DLQ rate {summary['dlq_rate']:.4%}"
        f"   {'reconciled' if reconciled else 'NOT RECONCILED'}",
        *(f"  not reconciled:   {why}" for why in summary["not_reconciled"]),
        f"SKUs classified     {summary['skus_classified']:>12,}   ABC {summary['abc_counts']}  XYZ {summary['xyz_counts']}",
        f"Directives          {summary['directives']:>12,}   acknowledged by the WMS: {summary['directives_acked']:,}",
        f"Checks              {summary['checks_passed']:>12,} passed, {summary['checks_failed']} failed"
        + (f" ({failed_and_warned(summary['failed_checks'], summary.get('warned_checks', []))[2:]})" if summary["failed_checks"] else ""),
    ]
