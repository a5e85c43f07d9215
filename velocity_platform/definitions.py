"""The one entry point: every definition under defs/, loaded the way `dg` loads a project."""

from pathlib import Path

import dagster as dg

from velocity_platform.defs.ops.freshness import with_nightly_freshness


@dg.definitions
def defs() -> dg.Definitions:
    # Freshness is declared here, over the loaded graph, so the stages' asset files stay about their stage.
    return with_nightly_freshness(dg.load_from_defs_folder(path_within_project=Path(__file__).parent))
