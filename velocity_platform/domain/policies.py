"""Policies whose defaults the settings expose, in a module that imports nothing of the domain:
`settings.py` imports it whenever a command starts, and should not load the planner, the
validation rules and the rest to learn three numbers."""

from __future__ import annotations

from dataclasses import dataclass

# A SKU relocated this recently is left alone by the planner (and is the thrash signal's window).
HYSTERESIS_DAYS = 2


@dataclass(frozen=True)
class SpikePolicy:
    """A spike is demand outside the SKU's own range: more eaches on one tick than `multiple` times
    the SKU's largest day of the last 90, and at least `min_units`.

    A wholesaler's SKUs routinely sell 10x their usual day to one bulk customer; judged against
    the 30-day daily rate, most SKUs "spiked" most days. The defaults are measured on the Online
    Retail history (docs/operations.md): demand above 30x the SKU's peak day of the 90 before, at
    least 500 eaches, for a SKU sold on at least 5 of the previous 90 days. A SKU sold on fewer days
    has no normal range yet and is not judged.
    """

    multiple: float = 30.0
    min_units: float = 500.0
    min_days_sold: int = 5

    def __post_init__(self) -> None:
        if self.multiple <= 0 or self.min_units < 0 or self.min_days_sold < 1:
            raise ValueError(f"spike multiple must be > 0, min units >= 0 and min days sold >= 1, got {self}")
