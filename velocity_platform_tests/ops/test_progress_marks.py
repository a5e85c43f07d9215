"""A night's line says what happened: ok, a signal raised (warn: nothing stopped), or FAIL (the
run failed or a gate did), naming gates and signals apart."""

import datetime as dt

import pytest

from velocity_platform.batch import DayOutcome, print_progress

DAY = dt.date(2026, 12, 5)
GATE, SIGNAL = "validated_transactions.dlq_rate_within_limit", "sku_velocity.velocity_change_within_factor"


@pytest.mark.parametrize(
    ("success", "failed", "warned", "mark", "says"),
    [
        (True, [], [], "ok ", ""),
        (True, [SIGNAL], [SIGNAL], "warn", f", signal: {SIGNAL}"),
        (False, [GATE], [], "FAIL", f", failed: {GATE}"),
        (False, [GATE, SIGNAL], [SIGNAL], "FAIL", f", failed: {GATE}, signal: {SIGNAL}"),
        (False, [], [], "FAIL", ""),  # the run failed outside any check
    ],
)
def test_the_mark_and_the_checks_named(capsys, success, failed, warned, mark, says):
    outcome = DayOutcome(DAY, success, 4.2, 10, failed, None, "WH-01", warned)
    assert outcome.mark == mark
    print_progress(outcome, 14, 14)
    line = capsys.readouterr().err.rstrip("\n")
    assert line == f"[ 14/14] {DAY} WH-01  {mark}    4.2s  checks 10 passed{says}"
