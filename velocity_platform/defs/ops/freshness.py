"""Freshness of the nightly outputs: the UI shows a day that has not landed by 06:00 as late.

Declared as Dagster freshness policies (evaluated by the daemon, no runs needed): each nightly
output must have been materialized between 02:00 and 06:00 local time, the batch window of the
KPI. Before 06:00 the previous window counts, so a late night turns the asset FAIL at 06:00 and
PASS again when the run lands.
"""

import datetime as dt
import warnings

import dagster as dg

from velocity_platform.settings import NIGHTLY_START_HOUR

NIGHTLY_OUTPUTS = ("sku_velocity", "slotting_directives", "wms_directive_acks")


def nightly_freshness_policy(timezone: str, window_hours: float) -> dg.FreshnessPolicy:
    """Materialized within [02:00, 02:00 + window] local time, every day."""
    if not 0 < window_hours < 24:
        raise ValueError(f"the batch window must be between 0 and 24 hours, got {window_hours}")
    deadline = (dt.datetime.combine(dt.date(2000, 1, 1), dt.time(NIGHTLY_START_HOUR)) + dt.timedelta(hours=window_hours)).time()
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"{deadline.minute} {deadline.hour} * * *",
        lower_bound_delta=dt.timedelta(hours=window_hours),
        timezone=timezone,
    )


def with_nightly_freshness(defs: dg.Definitions, timezone: str, window_hours: float) -> dg.Definitions:
    """The same definitions with the nightly freshness policy on the nightly outputs."""
    policy = nightly_freshness_policy(timezone, window_hours)
    with warnings.catch_warnings():
        # "preview" in 1.13; the version is pinned, and the test of this module would catch a change.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_asset_specs(
            func=lambda spec: spec.replace_attributes(freshness_policy=policy)
            if spec.key.to_user_string() in NIGHTLY_OUTPUTS
            else spec
        )
