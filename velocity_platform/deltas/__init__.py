"""`velocity-platform deltas`: the resident exception service beside Dagster (docs/deltas.md)."""
