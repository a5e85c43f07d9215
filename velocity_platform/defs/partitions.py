"""The one partitions definition: a business day of one warehouse (date x warehouse).

Every asset from the ERP pull to the WMS acknowledgements, and every check on them, is partitioned
by `date` (business days) x `warehouse` (dynamic partitions, one per registered site): adding a
site is data (`velocity-platform warehouses add`), not a deploy. A run may be handed any set of
site-days (one nightly partition, or a backfill's rectangle of dates x sites); `site_days_of`
reads them, and defs/daily.py runs each site's dates in order.
"""

import datetime as dt
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import dagster as dg
from dagster_shared.record import replace

from velocity_platform.settings import Settings

DATE_DIMENSION, WAREHOUSE_DIMENSION = "date", "warehouse"
# The dynamic dimension's name: the instance keeps the registered sites under it.
WAREHOUSES_PARTITIONS = "warehouses"
warehouses = dg.DynamicPartitionsDefinition(name=WAREHOUSES_PARTITIONS)


def _site_days(days: dg.DailyPartitionsDefinition) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({DATE_DIMENSION: days, WAREHOUSE_DIMENSION: warehouses})


# What every partitioned asset and check declares. The business days depend on two settings
# (the first date, the network's reference time zone), which are read when the definitions are
# built, not when this module is imported: definitions.py puts `business_days_of(settings)` in this
# one's place (`with_business_days`), and the backfill policy of the settings in BACKFILL_POLICY's.
business_days = _site_days(dg.DailyPartitionsDefinition(start_date="1970-01-01", timezone="Etc/UTC"))


def business_days_of(settings: Settings) -> dg.MultiPartitionsDefinition:
    """Business dates x registered warehouses.

    The date dimension is kept in the reference zone (VELOCITY_WAREHOUSE_TZ) and reaches one day
    ahead of it (`end_offset=1`): a site east of that zone ends its day earlier, and its 02:00 run
    asks for a date the reference zone is still living through.
    """
    days = dg.DailyPartitionsDefinition(
        start_date=settings.first_partition_date.isoformat(), timezone=settings.timezone, end_offset=1
    )
    return _site_days(days)


class SiteDay(NamedTuple):
    """One partition: a business date of one warehouse. Sorts by site, then date."""

    warehouse_id: str
    business_date: dt.date

    @property
    def key(self) -> dg.MultiPartitionKey:
        return dg.MultiPartitionKey({DATE_DIMENSION: self.business_date.isoformat(), WAREHOUSE_DIMENSION: self.warehouse_id})

    def __str__(self) -> str:
        return f"{self.warehouse_id} {self.business_date.isoformat()}"


def site_day_of(key: str | dg.MultiPartitionKey) -> SiteDay:
    """The site-day of a partition key ("2026-01-05|WH-01", dimensions in name order)."""
    if isinstance(key, dg.MultiPartitionKey):
        by_dimension = key.keys_by_dimension
        return SiteDay(by_dimension[WAREHOUSE_DIMENSION], dt.date.fromisoformat(by_dimension[DATE_DIMENSION]))
    date, warehouse_id = str(key).split("|", 1)
    return SiteDay(warehouse_id, dt.date.fromisoformat(date))


def partition_key(warehouse_id: str, day: dt.date) -> dg.MultiPartitionKey:
    return SiteDay(warehouse_id, day).key


def site_days_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[SiteDay]:
    """The site-days a run covers, by site and oldest date first: one for the nightly run, a
    backfill's dates x sites for a backfill run over a range (see BACKFILL_POLICY)."""
    return sorted(site_day_of(key) for key in context.partition_keys)


def by_site(site_days: Iterable[SiteDay]) -> dict[str, list[dt.date]]:
    """Each site's dates, oldest first."""
    sites: dict[str, list[dt.date]] = {}
    for site_day in sorted(site_days):
        sites.setdefault(site_day.warehouse_id, []).append(site_day.business_date)
    return sites


def partition_dates(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[dt.date]:
    """The business dates a run covers, oldest first (of every site it covers)."""
    return sorted({site_day.business_date for site_day in site_days_of(context)})


# Every partitioned table carries its business date in this DATE column and its site in this one
# (the I/O manager filters on both; a text date column would silently load nothing downstream).
PARTITION_METADATA = {"partition_expr": {DATE_DIMENSION: "business_date", WAREHOUSE_DIMENSION: "warehouse_id"}}

# DuckDB has one writer: every asset that writes it takes the single slot of this pool.
DUCKDB_POOL = "duckdb"


def backfill_policy_of(settings: Settings) -> dg.BackfillPolicy:
    """A backfill runs consecutive business dates together, up to VELOCITY_BACKFILL_DAYS_PER_RUN per
    run, oldest range first: one run start (process, code load, queue) per range instead of per date,
    and every stage works on the whole range at once. Each asset handles a range as the dates in order
    (moves are planned day after day on the slotting the previous day's moves leave). Memory grows with
    the range: about lines per day x days x 0.3 KB at the widest stage."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_days_per_run)


# What the daily assets declare; replaced by backfill_policy_of(settings) with the business days.
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=Settings.model_fields["backfill_days_per_run"].default)


def with_business_days(defs: dg.Definitions, settings: Settings) -> dg.Definitions:
    """The loaded definitions with the settings' business days and backfill policy on every
    partitioned asset and check (those that declared `business_days`), and the settings' dates on
    the network roll-up (those that declared `network_days`)."""
    placeholders = [(business_days, business_days_of(settings)), (network_days, network_days_of(settings))]
    policy = backfill_policy_of(settings)

    def settled(partitions_def):
        return next((real for placeholder, real in placeholders if partitions_def == placeholder), partitions_def)

    def daily(definition):
        if not isinstance(definition, dg.AssetsDefinition):
            return definition
        checks = {
            name: replace(spec, partitions_def=settled(spec.partitions_def))
            for name, spec in definition.check_specs_by_output_name.items()
        }
        if checks != dict(definition.check_specs_by_output_name):
            # A check's partitions cannot be mapped like an asset's: the same check, created again
            # with the business days in its specs.
            definition = dg.AssetChecksDefinition.create(
                keys_by_input_name=definition.node_keys_by_input_name,
                node_def=definition.op,
                check_specs_by_output_name=checks,
                can_subset=definition.can_subset,
                resource_defs=definition.resource_defs,
            )
        if any(settled(spec.partitions_def) is not spec.partitions_def for spec in definition.specs):
            definition = definition.map_asset_specs(
                lambda spec: spec.replace_attributes(partitions_def=settled(spec.partitions_def))
            )
            if definition.backfill_policy == BACKFILL_POLICY:
                definition = definition.with_attributes(backfill_policy=policy)
        return definition

    return replace(
        defs, assets=[daily(a) for a in defs.assets or []], asset_checks=[daily(c) for c in defs.asset_checks or []]
    )


def window(days_back: int) -> dg.MultiPartitionMapping:
    """Upstream days D-days_back..D of the same site; days before the first partition simply have no rows."""
    return dg.MultiPartitionMapping(
        {
            DATE_DIMENSION: dg.DimensionPartitionMapping(
                DATE_DIMENSION,
                dg.TimeWindowPartitionMapping(start_offset=-days_back, allow_nonexistent_upstream_partitions=True),
            ),
            WAREHOUSE_DIMENSION: dg.DimensionPartitionMapping(WAREHOUSE_DIMENSION, dg.IdentityPartitionMapping()),
        }
    )


# The network roll-up: one business date, every site's partitions of that date.
network_days = dg.DailyPartitionsDefinition(start_date="1970-01-01", timezone="Etc/UTC")


def network_days_of(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=settings.first_partition_date.isoformat(), timezone=settings.timezone, end_offset=1
    )


with warnings.catch_warnings():
    # beta in 1.13; the version is pinned, and the roll-up's test would catch a change.
    warnings.simplefilter("ignore", dg.BetaWarning)
    EVERY_SITE_OF_THE_DATE = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIMENSION)


@dataclass(frozen=True)
class DateVerdict:
    """A check's verdict on one site-day of a run over several."""

    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str | None = None
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


def record_per_date(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    asset: str,
    check: str,
    verdicts: dict[SiteDay, DateVerdict],
    blocking: bool = False,
) -> None:
    """In a run over several site-days, record a partitioned check's verdict on each as its own
    evaluation.

    A check returns one result per run, which a run over a range records without a partition;
    Dagster would then show every site-day of the range as skipped. Each one's own verdict (with
    its figures) is what the UI shows on that partition; the run's result still gates the run.
    Only for the checks declared per partition (the separate @asset_checks): the gates inside
    an asset are not partitioned and record one result per run, nightly or backfill alike.
    """
    if len(verdicts) <= 1:
        return
    log = context.log_event if isinstance(context, dg.AssetExecutionContext) else context.op_execution_context.log_event
    for site_day, verdict in verdicts.items():
        log(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset),
                check_name=check,
                passed=verdict.passed,
                partition=site_day.key,
                metadata=verdict.metadata,
                severity=verdict.severity,
                description=verdict.description,
                blocking=blocking,
            )
        )
