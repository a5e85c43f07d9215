"""The one entry point: every definition under defs/, with the partitions, the resources and the
freshness policy of one Settings object.

`dg check defs`, `dagster dev` and the production code server load `defs`, which reads the
settings from the environment once, here. The command line and the tests build a Settings object
and call `build_definitions` with it.
"""

from pathlib import Path

import dagster as dg

from velocity_platform.defs.ops.freshness import with_nightly_freshness
from velocity_platform.defs.partitions import with_business_days
from velocity_platform.defs.resources import build_resources
from velocity_platform.settings import Settings
from velocity_platform.workers import executor_of


def build_definitions(settings: Settings) -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # Business days, freshness and resources are applied here, over the loaded graph, so the stages'
    # asset files stay about their stage and no module reads a setting when it is imported.
    daily = with_business_days(loaded, settings)
    fresh = with_nightly_freshness(daily, settings.timezone, settings.operations.batch_window_hours)
    return dg.Definitions.merge(
        fresh, dg.Definitions(resources=build_resources(settings), executor=executor_of(settings))
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
