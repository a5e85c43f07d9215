"""The registry becomes partitions: every site registered in the operational store is a value of
the `warehouse` dimension, so its partitions, nights and backfills exist without a deploy."""

import dagster as dg

from velocity_platform.defs.partitions import WAREHOUSES_PARTITIONS
from velocity_platform.defs.resources import WarehouseResource


@dg.sensor(
    name="warehouse_registry_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds each warehouse registered with `velocity-platform warehouses add` to the warehouse partitions "
    "(the command adds it at once when it can reach the instance; this catches every other way in).",
)
def warehouse_registry_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(WAREHOUSES_PARTITIONS))
    missing = [site.warehouse_id for site in warehouse.network() if site.warehouse_id not in known]
    if not missing:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"all {len(known)} warehouse partition(s) are registered sites"))
    context.log.info(f"adding warehouse partitions {missing}")
    return dg.SensorResult(dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(WAREHOUSES_PARTITIONS, missing)])


# Dagster's default automation sensor starts stopped; the roll-up's own starts running, so a
# deployment keeps the network's day in step as sites land without anyone turning it on.
network_rollup_automation = dg.AutomationConditionSensorDefinition(
    name="network_rollup_automation",
    target=dg.AssetSelection.assets("network_daily_rollup"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materializes the network roll-up of a date whenever one of its sites' nights lands.",
)
