"""Keeping the lake lean: compact each table's small files and vacuum the files no kept version reads.

Every replace of a (date, site) partition leaves the partition's previous files behind (a version
readers of the past may still ask for), and a backfill's ranges write many small files. Once a
week the job folds small files together and removes the files only versions older than the
retention (`VELOCITY_LAKE_RETAIN_DAYS`) read, so the versions a directive batch records
(`planned_on_table_versions`) stay readable for that long. It then checkpoints each table's log,
dropping the log entries older than that retention, and sets the lake's table properties
(`tables.table_properties`) on a table made before them. The DuckDB file store has nothing to do.
"""

import dagster as dg

from velocity_platform.defs.tables import LakeSession, WarehouseTables


@dg.op(description="Compact small files and vacuum old versions of every lake table, one table at a time.")
def compact_and_vacuum_the_lake(context: dg.OpExecutionContext, warehouse_tables: WarehouseTables) -> dict:
    if not warehouse_tables.lake_path:
        context.log.info(f"The tables are in {warehouse_tables.location}: no lake to maintain")
        return {}
    done = {}
    with warehouse_tables.session() as session:
        assert isinstance(session, LakeSession)
        for table in session.tables():
            result = session.maintain(table)
            done[table] = result
            context.log.info(
                f"{table}: version {result['version']}, {result['files_removed']} small files compacted into "
                f"{result['files_added']}, {result['files_vacuumed']} old files vacuumed, log checkpointed"
                + (f", properties set: {result['properties_set']}" if result.get("properties_set") else "")
            )
    context.add_output_metadata(
        {
            "tables": len(done),
            "files_compacted": sum(r["files_removed"] for r in done.values()),
            "files_vacuumed": sum(r["files_vacuumed"] for r in done.values()),
            "retain_days": warehouse_tables.lake_retain_days,
            "by_table": dg.MetadataValue.json(done),
        }
    )
    return done


@dg.job(description="Compact and vacuum the lake's tables (weekly; any time from the Launchpad).")
def lake_maintenance():
    compact_and_vacuum_the_lake()


lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_schedule",
    job=lake_maintenance,
    # Sunday 04:30 UTC, after the European and American nights. A night elsewhere writing at the
    # same time is no harm: a compaction that conflicts with a write commits again after it.
    cron_schedule="30 4 * * 0",
    execution_timezone="Etc/UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Weekly compaction and vacuum of the lake (nothing to do on the DuckDB file store).",
)
