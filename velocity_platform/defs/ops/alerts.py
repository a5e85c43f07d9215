"""Paging on failures: a failed ERROR check or a failed run, posted once to the alert webhook.

The sensor follows the instance's run-status events (every run that finished, in storage order)
and, for each finished run, reads its check evaluations from the event log. That is what a
run-failure sensor alone cannot do: a non-blocking ERROR check (every directive acknowledged)
fails without failing its run. WARN checks are signals for the UI and never page.

One message per failure: one per failed ERROR check, and one per failed run that no failed
ERROR check explains (a blocking gate fails its run; that run's page is the gate's). A failed run
that the daemon's run retries will re-execute pages nobody: its retry's outcome is the one that
counts, and the sensor waits at such a run until the daemon has launched the retry (or decided
not to). A nightly run that failed once its batch window had passed pages once, saying the window
was missed: its steps retried an ERP outage until then (defs/ops/retries.py). The cursor
is the storage id of the last run fully reported, plus the alerts already posted for the run in
hand, so a webhook outage mid-run re-posts nothing that went through. Each message carries an
`alert_id` for the receiver to de-duplicate on, should a tick be cut short after a post.
"""

import datetime as dt
import json
import time
from dataclasses import dataclass, field

import dagster as dg

from velocity_platform.connectors.webhook import WebhookError
from velocity_platform.defs.ops.retries import window_deadline
from velocity_platform.defs.partitions import site_day_of
from velocity_platform.defs.resources import ALERT_WEBHOOK_ENV, AlertWebhookResource, OperationsResource

FINISHED = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE)
RUNS_PER_TICK = 50
PARTITION_TAG = "dagster/partition"
WILL_RETRY_TAG = "dagster/will_retry"  # set on a failed run when the instance's run retries will re-execute it
RETRY_RUN_TAG = "dagster/auto_retry_run_id"  # set by the daemon once it has launched that retry
ROOT_RUN_TAG = "dagster/root_run_id"  # on a re-execution: the first run of its group
RETRY_LAUNCH_GRACE_S = 600  # the daemon retries within seconds; after this, page as if no retry came


@dataclass
class AlertCursor:
    after_storage_id: int
    posted: list[str] = field(default_factory=list)  # alert ids already posted for the next run

    def serialize(self) -> str:
        return json.dumps({"after_storage_id": self.after_storage_id, "posted": self.posted})

    @classmethod
    def parse(cls, raw: str) -> "AlertCursor":
        try:
            data = json.loads(raw)
            return cls(int(data["after_storage_id"]), [str(a) for a in data.get("posted", [])])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"failure_alert_sensor cursor {raw[:100]!r} is not readable; reset the cursor in the UI"
            ) from exc


def plain(value: object) -> object:
    """A metadata value as plain JSON: numbers, text, lists and dicts as they are, the rest as text."""
    raw = getattr(value, "value", value)
    if raw is None or isinstance(raw, (bool, int, float, str)):
        return raw
    if isinstance(raw, (list, tuple)):
        return [plain(v) for v in raw]
    if isinstance(raw, dict):
        return {str(k): plain(v) for k, v in raw.items()}
    return str(raw)


def _site_day(partition: str | None) -> dict:
    """The partition an alert is about, and which warehouse and business date that is: a
    network's on-call reads the site first."""
    if not partition or "|" not in str(partition):
        return {"partition": partition, "warehouse": None, "business_date": partition}
    site_day = site_day_of(str(partition))
    return {"partition": str(partition), "warehouse": site_day.warehouse_id, "business_date": site_day.business_date.isoformat()}


def _base_message(run: dg.DagsterRun, ui_base_url: str, at: float) -> dict:
    return {
        "severity": "ERROR",
        "job": run.job_name,
        "run_id": run.run_id,
        "run_status": run.status.value,
        "run_url": f"{ui_base_url}/runs/{run.run_id}",
        "occurred_at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds"),
    }


def retry_pending(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool | None:
    """True: the daemon will re-execute this failed run and has not yet; False: it has (the retry
    reports); None: no retry is coming. The daemon cannot retry a run launched outside it (no code
    location origin), and one it has not retried within RETRY_LAUNCH_GRACE_S is taken as not coming."""
    if run.status != dg.DagsterRunStatus.FAILURE or run.tags.get(WILL_RETRY_TAG) != "true":
        return None
    if run.tags.get(RETRY_RUN_TAG) is not None:
        return False
    if run.remote_job_origin is None:
        return None
    record = instance.get_run_record_by_id(run.run_id)
    ended_at = record.end_time if record and record.end_time else time.time()
    return time.time() - ended_at < RETRY_LAUNCH_GRACE_S


def alerts_for_run(
    instance: dg.DagsterInstance, run_id: str, ui_base_url: str, window_hours: float | None = None
) -> list[dict]:
    """The messages a finished run deserves: its failed ERROR checks, or its failure.

    With `window_hours`, a run of the nightly schedule that failed after the end of its batch
    window says the window was missed, once for the night (keyed on the night's first run).
    """
    run = instance.get_run_by_id(run_id)
    if run is None:
        return []
    messages = []
    evaluations = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in evaluations:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        asset = evaluation.asset_key.to_user_string()
        partition = evaluation.partition or run.tags.get(PARTITION_TAG)
        messages.append(
            {
                "alert_id": f"{run_id}:{asset}.{evaluation.check_name}:{partition or '-'}",
                "kind": "check_failed",
                "asset": asset,
                **_site_day(partition),
                "check": evaluation.check_name,
                "blocking": bool(evaluation.blocking),
                "description": evaluation.description,
                "figures": {key: plain(value) for key, value in evaluation.metadata.items()},
                **_base_message(run, ui_base_url, record.timestamp),
            }
        )
    if run.status == dg.DagsterRunStatus.FAILURE and not messages:
        failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        steps = [r.event_log_entry.dagster_event.step_key for r in failures]
        errors = [
            r.event_log_entry.dagster_event.step_failure_data.error.message.strip().splitlines()[0][:500]
            for r in failures
            if r.event_log_entry.dagster_event.step_failure_data.error
        ]
        record = instance.get_run_record_by_id(run_id)
        ended_at = record.end_time if record and record.end_time else time.time()
        cause = errors[0] if errors else "the run failed before any step ran; see the run's logs"
        deadline = window_deadline(run.tags, window_hours) if window_hours is not None else None
        missed = deadline is not None and ended_at >= deadline.timestamp()
        message = {
            "alert_id": f"{run_id}:run_failed",
            "kind": "run_failed",
            "asset": steps[0] if steps else None,
            **_site_day(run.tags.get(PARTITION_TAG)),
            "check": None,
            "blocking": None,
            "description": cause,
            "figures": {"failed_steps": steps, "errors": errors},
            **_base_message(run, ui_base_url, ended_at),
        }
        if missed:
            message.update(
                alert_id=f"{run.tags.get(ROOT_RUN_TAG, run_id)}:batch_window_missed",
                kind="batch_window_missed",
                description=f"the nightly run of {message['warehouse'] or 'the warehouse'} for {message['business_date']} missed its {window_hours:g}-hour batch "
                f"window, which ended at {deadline.isoformat(timespec='seconds')}; it kept retrying until then. "
                f"Last failure: {cause}",
                figures={**message["figures"], "window_ended_at": deadline.isoformat(timespec="seconds")},
            )
        messages.append(message)
    return messages


def finished_runs_after(instance: dg.DagsterInstance, storage_id: int, limit: int) -> list[tuple[int, str]]:
    """(storage id, run id) of runs that finished after `storage_id`, oldest first, complete up to a bound."""
    streams = [
        instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=storage_id), limit=limit, ascending=True
        ).records
        for event_type in FINISHED
    ]
    # A stream that filled its page may have more: only ids below its last one are complete.
    bound = min((s[-1].storage_id for s in streams if len(s) >= limit), default=None)
    merged = sorted((r.storage_id, r.run_id) for s in streams for r in s)
    return [(sid, run_id) for sid, run_id in merged if bound is None or sid <= bound]


def newest_finished_run(instance: dg.DagsterInstance) -> int:
    newest = [
        instance.fetch_run_status_changes(event_type, limit=1, ascending=False).records for event_type in FINISHED
    ]
    return max((records[0].storage_id for records in newest if records), default=0)


@dg.sensor(
    name="failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed ERROR check and every failed run, once, as JSON to VELOCITY_ALERT_WEBHOOK_URL.",
)
def failure_alert_sensor(
    context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource, operations: OperationsResource
) -> dg.SensorResult:
    webhook = alert_webhook.client()
    if webhook is None:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"{ALERT_WEBHOOK_ENV} is not set: failures are visible in the UI only"),
            cursor=context.cursor,
        )
    if not context.cursor:
        # A new sensor pages about what fails from now on, not about the instance's history.
        start = newest_finished_run(context.instance)
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"watching runs that finish after event {start}"),
            cursor=AlertCursor(start).serialize(),
        )
    cursor = AlertCursor.parse(context.cursor)
    sent = 0
    waiting = None
    with webhook:
        for storage_id, run_id in finished_runs_after(context.instance, cursor.after_storage_id, RUNS_PER_TICK):
            run = context.instance.get_run_by_id(run_id)
            pending = retry_pending(context.instance, run) if run is not None else None
            if pending:
                # The daemon has not launched this run's retry yet; should it give up, this run pages.
                waiting = run_id
                break
            messages = [] if pending is False else alerts_for_run(
                context.instance, run_id, operations.ui_base_url, operations.batch_window_hours
            )
            for message in messages:
                if message["alert_id"] in cursor.posted:
                    continue
                try:
                    webhook.post(message)
                except WebhookError as exc:
                    context.log.error(f"alert {message['alert_id']} not delivered: {exc}")
                    return dg.SensorResult(
                        skip_reason=dg.SkipReason(f"{sent} alert(s) posted, then the webhook failed: {exc}"),
                        cursor=cursor.serialize(),
                    )
                cursor.posted.append(message["alert_id"])
                sent += 1
            cursor = AlertCursor(storage_id)
    result_cursor = cursor.serialize()
    if sent == 0:
        reason = f"waiting for the retry of run {waiting}" if waiting else "no new failures"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=result_cursor)
    context.log.info(f"posted {sent} alert(s)")
    return dg.SensorResult(cursor=result_cursor)
