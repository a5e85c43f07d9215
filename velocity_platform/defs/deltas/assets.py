"""`exception_deltas`: what the resident exception service did, as seen in the Dagster UI.

An external asset: no run materializes it. `velocity-platform deltas` reports a runless
materialization per reporting window (documents and lines read, lines dead-lettered, first slots
planned, acknowledged and refused, late lines recorded, latency percentiles from ERP commit to
WMS acknowledgement) and an observation per demand spike (velocity_platform/deltas/report.py).
"""

import dagster as dg

exception_deltas = dg.AssetSpec(
    "exception_deltas",
    description=(
        "Exceptions handled between nightly runs by the resident service `velocity-platform deltas`: new SKUs "
        "slotted in the WMS within milliseconds of the ERP commit, lines dead-lettered, late lines recorded for "
        "the delta sensor, demand spikes observed. Reported by the service as runless events, one per window."
    ),
    group_name="wms",
    kinds={"python"},
    metadata={"reported_by": "velocity-platform deltas (docs/deltas.md)"},
)
