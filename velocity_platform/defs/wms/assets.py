"""The WMS side: the location master, and delivering directives exactly once through the outbox."""


import datetime as dt

import dagster as dg
import polars as pl

from velocity_platform.connectors.outbox import push_pending
from velocity_platform.connectors.state import new_pusher_id
from velocity_platform.connectors.wms import directive_body
from velocity_platform.connectors.wms_pages import locations_from_pages, read_assignment_page, read_location_page
from velocity_platform.defs.daily import SUM, DailyIn, Day, daily_asset
from velocity_platform.defs.partitions import DateVerdict
from velocity_platform.defs.resources import OperationalStoreResource, WmsResource
from velocity_platform.domain.contracts import WMS_DIRECTIVE_ACKS_SCHEMA

ACK_CHECK = "every_directive_acknowledged"


@daily_asset(
    group="wms",
    # The WMS is live: it holds today's locations only, so a range is read once and each of its
    # dates records that snapshot (the location master a night planned on).
    ranged=True,
    description="The site's WMS location master (zone, aisle, bay, level, capacity, distance) and each location's "
    "occupant, as read on the night of the date.",
)
def wms_locations(context: dg.AssetExecutionContext, days: list[dt.date], wms: WmsResource):
    with wms.client() as client:
        locations = locations_from_pages(
            client.locations(reader=read_location_page, warehouse_id=wms.warehouse_id),
            client.assignments(reader=read_assignment_page, warehouse_id=wms.warehouse_id),
        )
    figures = {
        "locations": locations.height,
        "occupied": locations.filter(pl.col("sku_id").is_not_null()).height,
        "aisles": locations["aisle"].n_unique(),
        "by_zone": dict(locations.group_by("zone").len().sort("zone").iter_rows()),
    }
    for day in days:
        yield day, Day(locations.with_columns(pl.lit(day).alias("business_date")), figures)


def latest_snapshot(wms_locations: pl.DataFrame) -> pl.DataFrame:
    """The location master as the latest date of a slice read it (a range's inputs hold one
    snapshot per date), without the date: what the planner and the walk take."""
    if "business_date" not in wms_locations.columns:
        return wms_locations
    return wms_locations.filter(pl.col("business_date") == pl.col("business_date").max()).drop("business_date")


ACKS_MERGE = {
    "directives": SUM,
    "newly_enqueued": SUM,
    "sent_this_run": SUM,
    "acked": SUM,
    "rejected": SUM,
    "http_requests": SUM,
    "http_retries": SUM,
}


@daily_asset(
    group="wms",
    # The whole range is enqueued before the first date is pushed, oldest date first: a date's
    # moves were planned on the slotting the previous date's leave.
    ranged=True,
    ins={"slotting_directives": DailyIn()},
    merge=ACKS_MERGE,
    check_specs=[
        dg.AssetCheckSpec(
            ACK_CHECK, asset="wms_directive_acks", description="Every directive of the day is acknowledged by the WMS."
        )
    ],
    check_merge={ACK_CHECK: {"directives": SUM, "acked": SUM, "not_acked": SUM}},
    description="What the WMS acknowledged for each of the day's directives (outbox pattern: sent once per key).",
)
def wms_directive_acks(
    context: dg.AssetExecutionContext,
    days: list[dt.date],
    wms: WmsResource,
    state_store: OperationalStoreResource,
    slotting_directives: pl.DataFrame,
):
    store = state_store.store()
    directives = slotting_directives.to_dicts()
    site = {"warehouse_id": wms.warehouse_id} if wms.warehouse_id else {}
    newly_enqueued = store.enqueue({**d, **site, "payload": directive_body({**d, **site})} for d in directives)
    with wms.client() as client:
        for day in days:
            before = client.stats.as_metadata()
            # Claimed in leased batches, so two runs pushing the same day split it (connectors/outbox.py);
            # an open WMS circuit stops the push and leaves the rest pending, unsent, for the next run.
            # A wait for another pusher, or taking over a dead one's claims, shows on the console (WARNING).
            report = push_pending(
                store, client, day, pusher=new_pusher_id(f"run {context.run.run_id}"), batch_size=wms.push_batch_size, say=context.log.warning
            )
            if report.still_pending:
                attempted = len(report.sent) + len(report.unsent) + report.held_elsewhere
                raise dg.Failure(
                    description=f"{report.still_pending} of {attempted} directives for {day} are still pending after "
                    "retries; they stay in the outbox and a re-run re-sends them with the same Idempotency-Key"
                    + (f" (later dates of the range, after {day}, were not pushed)" if day != days[-1] else "")
                    + ".",
                    metadata={"first_failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in report.failures[:10]))},
                )
            http = client.stats.as_metadata()
            planned = {d["directive_id"] for d in directives if d["business_date"] == day}
            acks = _acks(r for r in store.outbox(day) if r.directive_id in planned)
            acked = acks.filter(pl.col("status") == "acked").height
            figures = {
                "directives": len(planned),
                "newly_enqueued": newly_enqueued if day == days[0] else 0,
                "sent_this_run": len(report.sent),
                "acked": acked,
                "rejected": acks.filter(pl.col("status") == "rejected").height,
                "http_requests": http["requests"] - before["requests"],
                "http_retries": http["retries"] - before["retries"],
            }
            check = DateVerdict(
                acked == len(planned),
                {"directives": len(planned), "acked": acked, "not_acked": len(planned) - acked},
                None if acked == len(planned) else f"{len(planned) - acked} directives were rejected by the WMS; see detail",
            )
            yield day, Day(acks, figures, {ACK_CHECK: check})


def _acks(outbox) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "business_date": r.business_date,
                "directive_id": r.directive_id,
                "sku_id": r.sku_id,
                "status": r.status,
                "http_status": r.http_status,
                "ack_id": r.ack_id,
                "attempts": r.attempts,
                "acked_at": r.acked_at,
                "detail": r.detail,
            }
            for r in outbox
        ],
        schema=WMS_DIRECTIVE_ACKS_SCHEMA,
    )
