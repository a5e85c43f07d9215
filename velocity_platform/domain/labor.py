"""The labor a slotting move costs and the walking it saves, in one currency.

A relocation takes a person ``move_minutes`` (default 10: pick the stock out, move it, put it
away, confirm in the WMS); a picker walks ``walk_speed_m_s`` (default 1.0 m/s). Both are priced
in metres of picker walking, so a move's value is ``saving_m_per_day * horizon - relocations *
move_cost_m``. A new SKU's first slot is a putaway that happens anyway: it costs no relocation.
A swap or a chain costs one relocation per SKU moved.

The payback horizon is how many days of expected saving a move may count on. The default, 30
days, comes from the Online Retail replay (docs/slotting.md, "Choosing the payback horizon"):
net labor peaks there (12.6% at 15 days, 14.0% at 30, 11.3% at 60). A shorter horizon leaves
moves undone that would have paid; a longer one counts on a pick rate further out than it
holds -- a SKU's rate regresses to the mean, and the Q4 lines of a gift wholesaler fade within
weeks of Christmas. It is also the window a relocation is protected from reversal.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class LaborModel:
    walk_speed_m_s: float = 1.0
    move_minutes: float = 10.0
    payback_horizon_days: float = 30.0

    def __post_init__(self) -> None:
        if not self.walk_speed_m_s > 0:
            raise ValueError(f"walk speed must be > 0 m/s, got {self.walk_speed_m_s}")
        if not self.move_minutes >= 0:
            raise ValueError(f"minutes per relocation must be >= 0, got {self.move_minutes}")
        if not self.payback_horizon_days > 0:
            raise ValueError(f"payback horizon must be > 0 days, got {self.payback_horizon_days}")

    @property
    def move_cost_m(self) -> float:
        """One relocation, in metres a picker walks in the same time."""
        return self.move_minutes * 60.0 * self.walk_speed_m_s

    def walk_hours(self, metres: pl.Expr | float) -> pl.Expr | float:
        return metres / (self.walk_speed_m_s * SECONDS_PER_HOUR)

    def relocation_hours(self, relocations: pl.Expr | float) -> pl.Expr | float:
        return relocations * self.move_minutes / 60.0

    def net_value_m(self, saving_m_per_day: pl.Expr, relocations: pl.Expr) -> pl.Expr:
        """Walking saved over the horizon less the relocations' labor, in metres of walking."""
        return saving_m_per_day * self.payback_horizon_days - relocations * self.move_cost_m

    def payback_days(self, saving_m_per_day: pl.Expr, relocations: pl.Expr) -> pl.Expr:
        """Days of expected saving that repay the relocations; 0 for a free putaway, null when
        the move saves nothing."""
        cost = relocations * self.move_cost_m
        return (
            pl.when(cost <= 0)
            .then(0.0)
            .when(saving_m_per_day > 0)
            .then(cost / saving_m_per_day)
            .otherwise(None)
        )
