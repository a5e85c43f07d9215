"""The figures and verdicts of the gates, computed on frames without Dagster.

The Dagster layer (defs/) turns a verdict into a check result for the UI; what counts as
passing lives here, beside the rules it guards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class GateVerdict:
    """A gate's verdict on one business date: passed, its figures, and why not when it failed."""

    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str | None = None


def daily_dlq_figures(raw: pl.DataFrame, rejects: pl.DataFrame) -> pl.DataFrame:
    """Per business date: raw lines, dead-lettered lines and their share, and the source
    batches of pages dead-lettered whole."""
    lines = raw.group_by("business_date").len("lines")
    rejected = rejects.group_by("business_date").agg(
        pl.len().alias("rejected"),
        pl.col("source_batch").filter(pl.col("fields").list.contains("page")).alias("dead_pages"),
    )
    return (
        lines.join(rejected, on="business_date", how="left")
        .with_columns(pl.col("rejected").fill_null(0), pl.col("dead_pages").fill_null([]))
        .with_columns((pl.col("rejected") / pl.col("lines")).alias("dlq_rate"))
        .sort("business_date")
    )


def dlq_gate(figures: dict, limit: float, top_field: str) -> GateVerdict:
    """One date's DLQ gate: its dead-lettered share within the limit and no page lost whole."""
    dead_pages, rate = figures["dead_pages"], figures["dlq_rate"]
    if dead_pages:
        description = (
            f"{len(dead_pages)} ERP page(s) were unreadable and dead-lettered whole ({', '.join(dead_pages[:5])}): "
            "the day is incomplete, so it stops before planning. Re-materialize once the ERP serves them."
        )
    elif rate > limit:
        description = (
            f"{rate:.3%} of lines dead-lettered on {figures['business_date']} (limit {limit:.3%}); "
            f"see dead_letter_transactions, most rejects on field '{top_field}'"
        )
    else:
        description = None
    return GateVerdict(
        passed=description is None,
        metadata={
            "dlq_rate": rate,
            "limit": limit,
            "dead_letter_lines": figures["rejected"],
            "lines": figures["lines"],
            "pages_dead_lettered": len(dead_pages),
        },
        description=description,
    )
