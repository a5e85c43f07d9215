"""Freshness of the nightly outputs: a night that has not landed by 06:00 is late.

Two views. The Dagster freshness policies (evaluated by the daemon, no runs needed) say, per
asset, that each nightly output was materialized between 02:00 and 06:00 in the deployment's
zone: the asset turns FAIL at 06:00 and PASS when the run lands. A policy is one per asset, so in
a network it cannot know each site's zone: `site_freshness_sensor` does that per warehouse,
asking for each site whether its last night's `wms_directive_acks` partition exists once that
night's window has closed in the site's own zone, and pages a late one once, naming the site.
"""

import datetime as dt
import json
import warnings

import dagster as dg

from velocity_platform.connectors.webhook import WebhookError
from velocity_platform.defs.partitions import SiteDay
from velocity_platform.defs.resources import AlertWebhookResource, OperationsResource, WarehouseResource
from velocity_platform.domain.network import night_due_by
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


LANDED_ASSET = dg.AssetKey("wms_directive_acks")  # the night's last step: landed means acknowledged
LATE_KEPT = 500  # late site-days remembered in the cursor (so each pages once)


def late_nights(
    instance: dg.DagsterInstance, sites, now: dt.datetime, window_hours: float
) -> list[tuple[SiteDay, dt.datetime]]:
    """Each site whose last night has not landed although its window closed, with the deadline."""
    landed = instance.get_materialized_partitions(LANDED_ASSET)
    late = []
    for site in sites:
        day, deadline = night_due_by(site, now, NIGHTLY_START_HOUR, window_hours)
        site_day = SiteDay(site.warehouse_id, day)
        if site_day.key not in landed:
            late.append((site_day, deadline))
    return late


def late_night_alert(site_day: SiteDay, deadline: dt.datetime, ui_base_url: str) -> dict:
    return {
        "alert_id": f"late:{site_day.key}",
        "kind": "night_late",
        "warehouse": site_day.warehouse_id,
        "business_date": site_day.business_date.isoformat(),
        "deadline": deadline.isoformat(),
        "summary": f"{site_day.warehouse_id}: the night of {site_day.business_date} has not landed "
        f"(wms_directive_acks); its window closed at {deadline:%Y-%m-%d %H:%M} UTC",
        "link": f"{ui_base_url}/assets/wms_directive_acks?view=partitions",
    }


@dg.sensor(
    name="site_freshness_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Per warehouse, in its own time zone: a night whose wms_directive_acks has not landed by the end of its "
    "batch window (02:00 + VELOCITY_BATCH_WINDOW_HOURS) is late; posted once to VELOCITY_ALERT_WEBHOOK_URL, naming the site.",
)
def site_freshness_sensor(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    operations: OperationsResource,
    alert_webhook: AlertWebhookResource,
) -> dg.SensorResult:
    now = dt.datetime.now(dt.UTC)
    paged = json.loads(context.cursor) if context.cursor else []
    late = late_nights(context.instance, warehouse.network(), now, operations.batch_window_hours)
    webhook = alert_webhook.client()
    unpaged = [(sd, deadline) for sd, deadline in late if f"late:{sd.key}" not in paged]
    if webhook is not None and unpaged:
        with webhook:
            for site_day, deadline in unpaged:
                try:
                    webhook.post(late_night_alert(site_day, deadline, operations.ui_base_url))
                except WebhookError as exc:
                    context.log.error(f"the late night of {site_day} not paged: {exc}")
                    break
                paged.append(f"late:{site_day.key}")
    reason = (
        "late: " + ", ".join(f"{sd.warehouse_id} {sd.business_date}" for sd, _ in late)
        if late
        else "every site's last night has landed"
    )
    return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(paged[-LATE_KEPT:]))
