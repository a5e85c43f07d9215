"""The nightly run waits out an ERP outage inside its batch window instead of failing at once.

Dagster 1.13's run retries (`run_retries` in dagster.yaml) re-execute a failed run from failure
as soon as the daemon sees it: the run-retry daemon has no delay between attempts
(dagster/_daemon/auto_run_reexecution), so a run that failed because the ERP was down would be
retried straight into the same outage and use up its retries in a minute. The work is split:

- An upstream outage that outlasts the HTTP client's own retry budget (connection refused,
  timeouts, 429 and 5xx after every attempt, an open circuit breaker) in a run of the 02:00
  schedule: the asset asks Dagster to retry the failed step later (`RetryRequested`), only that
  step, the finished ones stay. The delay doubles from `retry_first_delay_s` up to
  `retry_max_delay_s`, with +-20% jitter so two runs never hammer a recovering ERP in step, and
  never reaches past the end of the batch window (02:00 + VELOCITY_BATCH_WINDOW_HOURS). At the
  end of the window the last failure is final: the step fails saying the window was missed,
  and failure_alert_sensor sends one alert for the night.
- A run whose worker process died (out of memory, `kill -9`; the code server that started it
  marks it failed): the instance's run retries re-execute it from failure. Asset failures are left to the step
  retries above (`retry_on_asset_or_op_failure: false`): a gate that blocked a bad day would
  block it again, and an outage is already waited out inside the run.

Runs that no schedule launched (the CLI, backfills, the delta sensor's refreshes) fail as
before once the client's budget is spent: an operator is watching those, and a backfill must
not stall for hours on one day.
"""

import datetime as dt
import random
from typing import NoReturn

import dagster as dg

from velocity_platform.connectors.http import RETRYABLE_STATUS, BodyStillInvalid, ResponseTooLarge, UpstreamError
from velocity_platform.defs.resources import OperationsResource

# Set by the schedule daemon on every run it launches, and kept on the runs retried from it.
SCHEDULED_AT_TAG = ".dagster/scheduled_execution_time"
# Far above what a window allows: the window, not a count, ends the retries.
MAX_STEP_RETRIES = 10_000
JITTER = 0.2
WINDOW_MISSED = "batch window missed"


def is_outage(exc: UpstreamError) -> bool:
    """An upstream that may come back (nothing answered, or it answered 'busy' / 'broken' every time).

    A 4xx (a refused token, a bad request), an oversized answer or a body broken the same way on
    every fetch is the same on the next attempt, so it fails the run at once.
    """
    if isinstance(exc, (ResponseTooLarge, BodyStillInvalid)):
        return False
    return exc.status is None or exc.status in RETRYABLE_STATUS


def window_deadline(tags: dict[str, str], window_hours: float) -> dt.datetime | None:
    """End of the batch window of a scheduled run (scheduled time + window); None for other runs."""
    raw = tags.get(SCHEDULED_AT_TAG)
    if not raw:
        return None
    try:
        scheduled = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if scheduled.tzinfo is None:
        scheduled = scheduled.replace(tzinfo=dt.UTC)
    return scheduled + dt.timedelta(hours=window_hours)


def retry_delay(attempt: int, first_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (0 for the first): doubling from first_s, capped at max_s, +-20%."""
    base = min(first_s * 2 ** min(attempt, 32), max_s)
    return base * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def retry_or_fail(
    context: dg.AssetExecutionContext,
    operations: OperationsResource,
    exc: UpstreamError,
    failure: dg.Failure,
    now: dt.datetime | None = None,
) -> NoReturn:
    """Raised where an upstream failed past the client's budget: a later retry of the step while
    the nightly window lasts, else `failure` (saying so when the window has passed)."""
    window_hours = operations.batch_window_hours
    deadline = window_deadline(context.run.tags, window_hours)
    if deadline is None or not is_outage(exc):
        raise failure from None
    now = now or dt.datetime.now(dt.UTC)
    attempt = context.retry_number
    left = (deadline - now).total_seconds()
    if left <= 0:
        raise dg.Failure(
            description=f"{WINDOW_MISSED}: {failure.description}; the step tried {attempt + 1} time(s) "
            f"until {deadline.isoformat(timespec='seconds')}, the end of the {window_hours:g}-hour batch window. "
            "Re-run the partition once the upstream answers.",
            metadata={**failure.metadata, "attempts": attempt + 1, "window_ended_at": deadline.isoformat(timespec="seconds")},
            allow_retries=False,
        ) from None
    wait = min(retry_delay(attempt, operations.retry_first_delay_s, operations.retry_max_delay_s), left)
    context.log.warning(
        f"{failure.description}; attempt {attempt + 1} failed, retrying this step in {wait:.0f}s "
        f"(the batch window ends at {deadline.isoformat(timespec='seconds')})"
    )
    # The failure as the cause: the UI shows it on the step's retry event.
    raise dg.RetryRequested(max_retries=MAX_STEP_RETRIES, seconds_to_wait=wait) from failure
