"""The nightly run's step retries: which failures wait for a later attempt, how long, until when."""

import datetime as dt
import random

import pytest

from velocity_platform.connectors.http import CircuitOpen, ResponseTooLarge, UpstreamError
from velocity_platform.defs.ops.retries import SCHEDULED_AT_TAG, is_outage, retry_delay, window_deadline


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (UpstreamError("ERP", "connection refused after 6 attempt(s)"), True),
        (UpstreamError("ERP", "still failing after 6 attempts: HTTP 503", 503), True),
        (UpstreamError("ERP", "still failing after 6 attempts: HTTP 429", 429), True),
        (CircuitOpen("ERP", "circuit open until 02:01"), True),
        (UpstreamError("ERP", "answered HTTP 401 (the bearer token was refused)", 401), False),
        (UpstreamError("ERP", "answered HTTP 422", 422), False),
        (ResponseTooLarge("ERP", "response over 64 MiB", 200), False),
    ],
)
def test_only_an_upstream_that_may_come_back_is_waited_for(error, outage):
    assert is_outage(error) is outage


def test_the_delay_doubles_with_jitter_until_its_cap():
    rng = random.Random(12)
    for _ in range(200):
        delays = [retry_delay(n, 60, 900, rng) for n in range(8)]
        bases = [60, 120, 240, 480, 900, 900, 900, 900]
        assert all(0.8 * b <= d <= 1.2 * b for d, b in zip(delays, bases, strict=True))
        assert delays[0] < delays[1] < delays[2] < delays[3]  # grows whatever the jitter draws
    assert retry_delay(10_000, 60, 900, rng) <= 900 * 1.2  # a long night does not overflow


def test_the_window_is_counted_from_the_scheduled_time_and_only_for_scheduled_runs():
    tags = {SCHEDULED_AT_TAG: "2026-03-29T01:00:00+00:00", "dagster/partition": "2026-03-28"}
    assert window_deadline(tags, 4) == dt.datetime(2026, 3, 29, 5, 0, tzinfo=dt.UTC)
    assert window_deadline({"dagster/partition": "2026-03-28"}, 4) is None  # the CLI, a backfill, a refresh
    assert window_deadline({SCHEDULED_AT_TAG: "not a time"}, 4) is None
