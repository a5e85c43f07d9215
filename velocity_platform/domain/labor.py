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

Two more kinds of labor sit beside walking, for the baseline and the platform alike:

* **Handling by level.** A pick from the golden zone (waist to shoulder) takes no extra time; from
  the floor a picker bends and rises, from the top level reaches up. ``level_handling_s`` is the
  extra seconds a pick line costs on each level, floor first; a level above the list's end costs
  what its last entry does; a one-level layout is a shelf at waist height (golden). Defaults:
  floor +2.2 s, the MTM-1 body motions "bend" (29.0 TMU) and "arise from bend" (31.9 TMU),
  60.9 TMU x 0.036 s; the top of four levels +1.5 s, a reach above the shoulder (MTM-1 has no
  element for it: an assumption, a time study should set it); levels 2 and 3 golden.
* **Replenishment.** A pick face holds ``capacity / unit cube`` units; each time it empties a
  replenisher brings stock from reserve, a trip of ``replenish_minutes`` (default 5: an
  assumption for a case-level restock from reserve on the same floor; set it from the WMS's task
  times). Trips per day are units picked over units a face holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SECONDS_PER_HOUR = 3600.0
# Extra seconds a pick line takes on each level, floor first (see the module docstring).
LEVEL_HANDLING_S: tuple[float, ...] = (2.2, 0.0, 0.0, 1.5)
REPLENISH_MINUTES = 5.0


@dataclass(frozen=True)
class LaborModel:
    walk_speed_m_s: float = 1.0
    move_minutes: float = 10.0
    payback_horizon_days: float = 30.0
    replenish_minutes: float = REPLENISH_MINUTES
    level_handling_s: tuple[float, ...] = LEVEL_HANDLING_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_handling_s", tuple(float(v) for v in self.level_handling_s))
        if not self.level_handling_s or min(self.level_handling_s) < 0:
            raise ValueError(f"handling seconds by level must be one or more values >= 0, got {self.level_handling_s}")
        if not self.replenish_minutes >= 0:
            raise ValueError(f"minutes per replenishment trip must be >= 0, got {self.replenish_minutes}")
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

    def replenish_hours(self, trips: pl.Expr | float) -> pl.Expr | float:
        return trips * self.replenish_minutes / 60.0

    def handling_s(self, level: int, levels: int) -> float:
        """Extra seconds of a pick line on `level` (1 = floor) of a layout with `levels` levels."""
        if levels <= 1:
            return 0.0  # a single level is a shelf at waist height
        return self.level_handling_s[min(level, len(self.level_handling_s)) - 1]

    def golden_levels(self, levels: int) -> list[int]:
        """The levels whose picks cost no extra handling (the golden zone)."""
        return [level for level in range(1, levels + 1) if self.handling_s(level, levels) == 0.0]

    def handling_m_expr(self, level: pl.Expr, levels: int) -> pl.Expr:
        """A pick line's extra handling on `level`, in metres of walking in the same time."""
        by_level = {k: self.handling_s(k, levels) * self.walk_speed_m_s for k in range(1, levels + 1)}
        return level.cast(pl.Int64).replace_strict(by_level, default=0.0, return_dtype=pl.Float64)

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
