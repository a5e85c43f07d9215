"""The one partitions definition: a business day in the warehouse's time zone."""

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg
from dagster_shared.record import replace

from velocity_platform.settings import Settings

# What every daily asset and partitioned check declares. The business days depend on two settings
# (the first date, the warehouse's time zone), which are read when the definitions are built, not
# when this module is imported: definitions.py puts `business_days_of(settings)` in this one's place
# (`with_business_days`), and the backfill policy of the settings in BACKFILL_POLICY's.
business_days = dg.DailyPartitionsDefinition(start_date="1970-01-01", timezone="Etc/UTC")


def business_days_of(settings: Settings) -> dg.DailyPartitionsDefinition:
    """The one partitions definition: a business day in the warehouse's time zone."""
    return dg.DailyPartitionsDefinition(start_date=settings.first_partition_date.isoformat(), timezone=settings.timezone)


# Every partitioned table carries its business date in this DATE column (the I/O manager
# filters on it; a text column would silently load nothing downstream).
PARTITION_METADATA = {"partition_expr": "business_date"}

# DuckDB has one writer: every asset that writes it takes the single slot of this pool.
DUCKDB_POOL = "duckdb"


def partition_dates(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[dt.date]:
    """The business dates a run covers, oldest first: one for the nightly run or a single-date
    run, several for a backfill run over a range (see BACKFILL_POLICY)."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


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
    """The loaded definitions with the settings' business days and backfill policy on every daily
    asset and partitioned check (those that declared `business_days`)."""
    days, policy = business_days_of(settings), backfill_policy_of(settings)

    def daily(definition):
        if not isinstance(definition, dg.AssetsDefinition):
            return definition
        checks = {
            name: replace(spec, partitions_def=days) if spec.partitions_def == business_days else spec
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
        if any(spec.partitions_def == business_days for spec in definition.specs):
            definition = definition.map_asset_specs(
                lambda spec: spec.replace_attributes(partitions_def=days) if spec.partitions_def == business_days else spec
            )
            if definition.backfill_policy == BACKFILL_POLICY:
                definition = definition.with_attributes(backfill_policy=policy)
        return definition

    return replace(
        defs, assets=[daily(a) for a in defs.assets or []], asset_checks=[daily(c) for c in defs.asset_checks or []]
    )


def window(days_back: int) -> dg.TimeWindowPartitionMapping:
    """Upstream days D-days_back..D; days before the first partition simply have no rows."""
    return dg.TimeWindowPartitionMapping(start_offset=-days_back, allow_nonexistent_upstream_partitions=True)


@dataclass(frozen=True)
class DateVerdict:
    """A check's verdict on one business date of a run over several."""

    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str | None = None
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


def record_per_date(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    asset: str,
    check: str,
    verdicts: dict[dt.date, DateVerdict],
    blocking: bool = False,
) -> None:
    """In a run over several dates, record a partitioned check's verdict on each date as its own
    evaluation.

    A check returns one result per run, which a run over a range records without a partition;
    Dagster would then show every date of the range as skipped. Each date's own verdict (with
    its figures) is what the UI shows on that partition; the run's result still gates the run.
    Only for the checks declared per partition (the separate @asset_checks): the gates inside
    an asset are not partitioned and record one result per run, nightly or backfill alike.
    """
    if len(verdicts) <= 1:
        return
    log = context.log_event if isinstance(context, dg.AssetExecutionContext) else context.op_execution_context.log_event
    for day, verdict in verdicts.items():
        log(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset),
                check_name=check,
                passed=verdict.passed,
                partition=day.isoformat(),
                metadata=verdict.metadata,
                severity=verdict.severity,
                description=verdict.description,
                blocking=blocking,
            )
        )
