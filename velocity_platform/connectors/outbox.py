"""Pushing a day's pending directives from the outbox to the WMS, safely from several pushers.

A pusher claims a small batch of pending rows (a lease in the operational store), re-stamps the
lease of each row just before it posts it, and settles the row (acked, rejected, or a failed
attempt that stays pending) in the same transaction as its push-log row. Two runs pushing the
same day therefore split the rows between them and each directive is posted by one of them.
When nothing is left to claim but rows are still held by another pusher, this one waits for
them to settle (or for that pusher's lease to lapse, then takes the rows over), so a run only
reports a day delivered when every directive of it is. Leases are short and renewed by a heartbeat
while a push runs; a holder on this host whose process is gone (a run killed mid-push) has its
rows taken over at once, and what is waited for, and until when, is logged. When the WMS client's circuit breaker is
open the push stops at once: the rest of the batch is released unsent for the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from velocity_platform.connectors.http import CircuitOpen, UpstreamError
from velocity_platform.connectors.state import (
    ACKED,
    DEFAULT_LEASE,
    REJECTED,
    Holder,
    OperationalStore,
    Outcome,
    OutboxRow,
    holder_is_gone,
    new_pusher_id,
)
from velocity_platform.connectors.wms import PushOutcome
from velocity_platform.settings import Settings

ACKED_WATERMARK = "wms:last_acked_business_date"
log = logging.getLogger(__name__)


class DirectivePusher(Protocol):
    def push_directive(self, directive: dict) -> PushOutcome: ...


class BatchDirectivePusher(DirectivePusher, Protocol):
    """A WMS that also takes many directives per request, each under its own key."""

    def push_directives(self, directives: list[dict]) -> list[PushOutcome]: ...


# Directives per request where the WMS takes batches (its limit is 500), when the caller gives no
# size: the setting's default (the nightly push passes the setting itself); one at a time otherwise.
WMS_BATCH_SIZE = Settings.model_fields["wms_push_batch_size"].default
SINGLE_CLAIM_SIZE = 25


@dataclass
class PushReport:
    pusher: str
    business_date: dt.date
    sent: list[str] = field(default_factory=list)  # directive ids this pusher posted
    acked: int = 0
    rejected: int = 0
    failures: list[str] = field(default_factory=list)  # "<id> (<sku>): <why>", still pending
    unsent: list[str] = field(default_factory=list)  # claimed, then released unsent: the WMS circuit opened
    held_elsewhere: int = 0  # pending rows another pusher still held when this one gave up waiting

    @property
    def still_pending(self) -> int:
        """Directives of the day this push leaves pending (they go with the next run)."""
        return len(self.failures) + len(self.unsent) + self.held_elsewhere


def push_pending(
    store: OperationalStore,
    client: DirectivePusher,
    business_date: dt.date,
    *,
    pusher: str | None = None,
    batch_size: int | None = None,
    lease: dt.timedelta = DEFAULT_LEASE,
    poll_s: float = 0.5,
    wait_for_others: dt.timedelta | None = None,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], None] = log.info,
) -> PushReport:
    """Post every pending directive of `business_date` that this pusher can claim.

    A directive whose send fails after the client's retries stays pending (named in
    `failures`) and is not tried again in this call; the next run re-sends it with the same
    Idempotency-Key. Rows held by another pusher are waited for up to `wait_for_others`
    (by default the lease plus a minute, after which a dead pusher's rows are claimable); those of
    a pusher on this host whose process is gone are taken over at once. While it runs, a heartbeat
    renews this pusher's leases every third of `lease`. `say` gets what is waited for.
    """
    report = PushReport(pusher=pusher or new_pusher_id(), business_date=business_date)
    with _Heartbeat(store, report.pusher, lease):
        return _push_pending(store, client, report, batch_size, lease, poll_s, wait_for_others, clock, say)


class _Heartbeat:
    """Renews a pusher's leases from a thread while it pushes, so a short lease outlives a slow
    request (its retries included) yet lapses soon after the pusher dies."""

    def __init__(self, store: OperationalStore, pusher: str, lease: dt.timedelta) -> None:
        self._store, self._pusher, self._lease = store, pusher, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease heartbeat {pusher}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._lease.total_seconds() / 3):
            try:
                self._store.renew(self._pusher, self._lease)
            except Exception as exc:  # noqa: BLE001  # the store busy or gone: the next beat tries again
                log.warning("renewing the outbox leases of %s failed (%s); trying again", self._pusher, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _describe(holders: list[Holder]) -> str:
    return "; ".join(f"{h.directives} held by {h.claimer} until {h.until:%H:%M:%S} UTC" for h in holders)


def _push_pending(
    store: OperationalStore,
    client: DirectivePusher,
    report: PushReport,
    batch_size: int | None,
    lease: dt.timedelta,
    poll_s: float,
    wait_for_others: dt.timedelta | None,
    clock: Callable[[], float],
    say: Callable[[str], None],
) -> PushReport:
    business_date = report.business_date
    batched = callable(getattr(client, "push_directives", None))
    batch_size = batch_size or (WMS_BATCH_SIZE if batched else SINGLE_CLAIM_SIZE)
    failed: set[str] = set()
    patience = wait_for_others if wait_for_others is not None else lease + dt.timedelta(minutes=1)
    waiting_since: float | None = None
    waited_for: list[str] = []
    while True:
        batch = store.claim_pending(business_date, batch_size, claimer=report.pusher, lease=lease, exclude=failed)
        if batch and batched:
            waiting_since = None
            if _push_batch(store, client, batch, report, failed, lease):
                return report  # the WMS circuit is open
            continue
        if batch:
            waiting_since = None
            for index, row in enumerate(batch):
                if not store.hold(row.directive_id, report.pusher, lease):
                    continue  # our lease lapsed and another pusher took the row over
                report.sent.append(row.directive_id)
                try:
                    outcome = client.push_directive(orjson.loads(row.payload))
                except UpstreamError as exc:
                    store.record_failed_attempt(row.directive_id, str(exc), pusher=report.pusher)
                    report.failures.append(f"{row.directive_id} ({row.sku_id}): {exc}")
                    failed.add(row.directive_id)
                    if isinstance(exc, CircuitOpen):
                        # The WMS is down: the rest stay pending, unsent, for the next run.
                        report.unsent = [r.directive_id for r in batch[index + 1 :]]
                        store.release(report.unsent, report.pusher)
                        return report
                    continue
                status = REJECTED if outcome.status == "rejected" else ACKED
                store.record_outcome(
                    row.directive_id,
                    status,
                    outcome.http_status,
                    outcome.ack_id,
                    outcome.detail,
                    watermark=(ACKED_WATERMARK, business_date.isoformat()) if status == ACKED else None,
                    pusher=report.pusher,
                )
                if status == ACKED:
                    report.acked += 1
                else:
                    report.rejected += 1
            continue
        held = store.pending_count(business_date, exclude=failed)
        if not held:
            return report
        holders = store.holders(business_date, exclude=failed)
        gone = [h for h in holders if holder_is_gone(h.claimer)]
        if gone:
            taken = store.take_over(business_date, [h.claimer for h in gone])
            say(f"took over {taken} directives of {business_date} at once: {_describe(gone)}, whose process is gone from this host")
            continue
        waiting_since = waiting_since if waiting_since is not None else clock()
        if clock() - waiting_since > patience.total_seconds():
            report.held_elsewhere = held
            return report
        if [h.claimer for h in holders] != waited_for:
            waited_for = [h.claimer for h in holders]
            gives_up = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=patience.total_seconds() - (clock() - waiting_since))
            say(
                f"waiting for {held} directives of {business_date} held by another pusher ({_describe(holders)}): "
                f"they are taken over when a lease lapses; giving up at {gives_up:%H:%M:%S} UTC"
            )
        time.sleep(poll_s)  # another pusher is mid-batch: its rows settle or its lease lapses


def _push_batch(
    store: OperationalStore,
    client: BatchDirectivePusher,
    batch: list[OutboxRow],
    report: PushReport,
    failed: set[str],
    lease: dt.timedelta,
) -> bool:
    """Send a claimed batch in one request and settle every answer in one transaction.

    A request that gets no usable answer leaves every directive of it pending, counted as a
    failed attempt. Returns True when the WMS circuit is open: the push stops there.
    """
    held = set(store.hold_many([r.directive_id for r in batch], report.pusher, lease))
    rows = [r for r in batch if r.directive_id in held]  # the others were taken over after our lease lapsed
    if not rows:
        return False
    ids = [r.directive_id for r in rows]
    report.sent.extend(ids)
    try:
        outcomes = client.push_directives([orjson.loads(r.payload) for r in rows])
    except UpstreamError as exc:
        store.record_failed_attempts(ids, str(exc), pusher=report.pusher)
        report.failures.extend(f"{r.directive_id} ({r.sku_id}): {exc}" for r in rows)
        failed.update(ids)
        return isinstance(exc, CircuitOpen)  # the WMS is down: what is left waits for the next run
    settled = [
        Outcome(o.directive_id, REJECTED if o.status == "rejected" else ACKED, o.http_status, o.ack_id, o.detail)
        for o in outcomes
    ]
    acked = sum(o.status == ACKED for o in settled)
    watermark = (ACKED_WATERMARK, report.business_date.isoformat()) if acked else None
    store.record_outcomes(settled, watermark=watermark, pusher=report.pusher)
    report.acked += acked
    report.rejected += len(settled) - acked
    return False


__all__ = ["ACKED_WATERMARK", "BatchDirectivePusher", "DirectivePusher", "PushReport", "push_pending"]
