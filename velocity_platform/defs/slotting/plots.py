"""Plots for the asset page: PNGs embedded in markdown metadata, which the Dagster UI renders.

The UI's markdown sanitiser allows `data:` image sources, so a plot travels inside the
materialization event itself; nothing has to be served from elsewhere.
"""

from __future__ import annotations

import base64
import io
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@cache
def _pyplot():
    """pyplot on the first plot drawn: its import is a third of a second that every process loading
    the definitions (code servers, the daemon, the command line) would pay without drawing anything."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    return plt


def markdown_image(figure: Figure, title: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    _pyplot().close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def abc_pareto(velocity: pl.DataFrame, cutoffs: tuple[float, float] = (0.80, 0.95)) -> Figure:
    """Cumulative share of 30-day units against the share of SKUs, in ABC rank order."""
    ranked = velocity.sort("abc_rank").select("units_30d", "abc_class")
    units = ranked["units_30d"].fill_null(0.0).to_numpy()
    total = units.sum()
    share = np.cumsum(units) / total if total > 0 else np.zeros_like(units)
    x = np.arange(1, len(units) + 1) / max(len(units), 1)
    figure, axes = _pyplot().subplots(figsize=(6, 3.2))
    axes.plot(x * 100, share * 100, color="#1f6feb", linewidth=2)
    for cut, label in zip(cutoffs, ("A | B", "B | C"), strict=True):
        axes.axhline(cut * 100, color="#999999", linestyle="--", linewidth=1)
        axes.text(101, cut * 100, label, va="center", fontsize=8, color="#555555")
    counts = dict(ranked.group_by("abc_class").len().iter_rows())
    axes.set_title(
        "ABC Pareto: " + ", ".join(f"{c} {counts.get(c, 0):,} SKUs" for c in ("A", "B", "C")), fontsize=10
    )
    axes.set_xlabel("SKUs, busiest first (%)")
    axes.set_ylabel("30-day units (%)")
    axes.set_xlim(0, 100)
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3)
    return figure


def heat_maps(picks_before: pl.DataFrame, picks_after: pl.DataFrame, aisles: int, bays: int) -> Figure:
    """Pick lines per aisle x bay (sides and levels summed), before and after, on one scale."""
    grids = []
    for picks in (picks_before, picks_after):
        grid = np.zeros((bays, aisles))
        counts = picks.group_by("aisle", "bay").len()
        grid[counts["bay"].to_numpy(), counts["aisle"].to_numpy()] = counts["len"].to_numpy()
        grids.append(grid)
    top = max(float(g.max()) for g in grids) or 1.0
    figure, panes = _pyplot().subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for pane, grid, title in zip(panes, grids, ("current slotting", "after today's directives"), strict=True):
        image = pane.imshow(grid, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=top)
        pane.set_title(f"pick lines per location, {title}", fontsize=9)
        pane.set_xlabel("aisle (depot at aisle 0, front)")
    panes[0].set_ylabel("bay (front = 0)")
    figure.colorbar(image, ax=panes, shrink=0.85, label="pick lines, last 30 days")
    return figure


def cumulative_net_labor(net_by_date: dict) -> Figure:
    """Net labor hours (walking saved over the payback horizon less relocation time) summed over
    the dates built, in date order: a line that falls means moves that did not pay."""
    dates = sorted(net_by_date)
    running = np.cumsum([net_by_date[d] for d in dates]) if dates else np.zeros(0)
    figure, axes = _pyplot().subplots(figsize=(6, 3.2))
    axes.plot(dates, running, color="#1a7f37", linewidth=2, marker="o" if len(dates) < 40 else None, markersize=3)
    axes.axhline(0, color="#999999", linewidth=1)
    axes.set_title("Cumulative net labor saved (hours)", fontsize=10)
    axes.set_ylabel("hours")
    figure.autofmt_xdate()
    return figure


def net_labor_by_site(rollup: pl.DataFrame) -> Figure:
    """Net labor hours of one date per warehouse, as bars (green saved, red lost)."""
    sites = rollup["warehouse_id"].to_list()
    hours = rollup["net_labor_h"].fill_null(0.0).to_list()
    figure, axes = _pyplot().subplots(figsize=(6, 3.2))
    axes.bar(sites, hours, color=["#1a7f37" if h >= 0 else "#cf222e" for h in hours])
    axes.axhline(0, color="#999999", linewidth=1)
    axes.set_title("Net labor saved per warehouse (hours)", fontsize=10)
    axes.set_ylabel("hours")
    return figure
