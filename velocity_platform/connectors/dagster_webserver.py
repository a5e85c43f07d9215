"""The Dagster webserver's GraphQL API, as the UI uses it: launch backfills and runs, evaluate and
start the nightly schedule, read daemon health and status.

One home for the queries that operating the platform sends (deploy/prod.py, and the local
deployment the tests and benchmarks start). Plain HTTP: the webserver is a running service we
talk to, like the ERP, so nothing here imports Dagster.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx

LOCATION = "velocity_platform"
REPOSITORY = "__repository__"
JOB = "nightly_slotting_batch"
SCHEDULE = "nightly_slotting_schedule"
REPOSITORY_SELECTOR = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}


class GraphQLError(RuntimeError):
    pass


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60.0) -> dict:
    response = httpx.post(f"{url.rstrip('/')}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise GraphQLError("; ".join(e.get("message", str(e)) for e in body["errors"]))
    return body["data"]


def _unwrap(result: dict, ok_type: str, what: str) -> dict:
    """A mutation answers a union: the expected type, or an error type with a message."""
    if result.get("__typename") != ok_type:
        raise GraphQLError(f"{what}: {result.get('__typename')}: {result.get('message') or json.dumps(result)[:500]}")
    return result


# --- the code location ----------------------------------------------------------------------------

LOCATION_STATUS = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def location_loaded(url: str) -> bool:
    """Whether the webserver has loaded the code location; raises when it failed to load."""
    for entry in graphql(url, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]:
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                raise GraphQLError(f"the code location failed to load: {error['message']}")
            return True
    return False


# --- backfills ------------------------------------------------------------------------------------

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}"""

BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions }
    ... on PythonError { message }
  }
}"""


ADD_DYNAMIC_PARTITION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""
# The dynamic dimension of the business days that holds the network's sites (defs/partitions.py).
WAREHOUSES_PARTITIONS = "warehouses"


def add_warehouse_partitions(url: str, warehouse_ids: list[str]) -> None:
    """Each site a value of the warehouse dimension (one already there is left as it is)."""
    for warehouse_id in warehouse_ids:
        variables = {"selector": REPOSITORY_SELECTOR, "name": WAREHOUSES_PARTITIONS, "key": warehouse_id}
        result = graphql(url, ADD_DYNAMIC_PARTITION, variables)["addDynamicPartition"]
        if result.get("__typename") != "DuplicateDynamicPartitionError":
            _unwrap(result, "AddDynamicPartitionSuccess", f"warehouse partition {warehouse_id}")


def site_day_keys(dates: list[dt.date], warehouse_ids: list[str]) -> list[str]:
    """The partition keys of these dates of these sites ("2026-01-05|WH-01": date first, as Dagster
    orders the dimensions by name)."""
    return [f"{day.isoformat()}|{site}" for site in warehouse_ids for day in dates]


JOB_ASSETS = """
query($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { __typename ... on Pipeline { name } }
  assetNodes(pipeline: $selector) { assetKey { path } isPartitioned }
}"""


def nightly_assets(url: str) -> list[tuple[list[str], bool]]:
    """The nightly job's asset keys (paths), each with whether it is partitioned (date x warehouse)."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "pipelineName": JOB}
    data = graphql(url, JOB_ASSETS, {"selector": selector})
    _unwrap(data["pipelineOrError"], "Pipeline", f"job {JOB}")
    return [(node["assetKey"]["path"], node["isPartitioned"]) for node in data["assetNodes"]]


def site_day_ranges(partitions: list[str]) -> list[dict[str, str]]:
    """Site-day keys as ranges: each site's consecutive dates one range ("start".."end" keys)."""
    by_site: dict[str, list[dt.date]] = {}
    for key in partitions:
        day, _, site = key.partition("|")
        by_site.setdefault(site, []).append(dt.date.fromisoformat(day))
    ranges = []
    for site, days in sorted(by_site.items()):
        days = sorted(set(days))
        first = previous = days[0]
        for day in [*days[1:], None]:
            if day is not None and (day - previous).days == 1:
                previous = day
                continue
            ranges.append({"start": f"{first.isoformat()}|{site}", "end": f"{previous.isoformat()}|{site}"})
            if day is not None:
                first = previous = day
    return ranges


def launch_backfill(url: str, partitions: list[str], title: str | None = None, tags: dict[str, str] | None = None) -> str:
    """A backfill of the nightly job's assets over `partitions` (site-day keys), as the asset
    graph's "Materialize all > Backfill" makes it: the SKU master once, then the partitioned
    assets (and their checks) over the site-days, in ranges per the backfill policy.

    An asset backfill, not a backfill of the job's partition set: Dagster 1.13's job backfill puts
    the first partition's dimension tags (`dagster/partition/date`, `.../warehouse`) on every
    ranged run, and a run with those tags builds that one site-day only (docs/operations.md).
    """
    ranges = site_day_ranges(partitions)
    params: dict = {
        "partitionsByAssets": [
            {"assetKey": {"path": path}, "partitions": {"ranges": ranges} if partitioned else None}
            for path, partitioned in nightly_assets(url)
        ],
        "title": title or f"{JOB} {partitions[0]} .. {partitions[-1]}",
    }
    if tags:
        params["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    result = graphql(url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    return _unwrap(result, "LaunchBackfillSuccess", "backfill")["backfillId"]


def backfill_status(url: str, backfill_id: str) -> str:
    result = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    return _unwrap(result, "PartitionBackfill", f"backfill {backfill_id}")["status"]


# --- runs and the nightly schedule ----------------------------------------------------------------

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""

SCHEDULE_DRY_RUN = """
mutation($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        runRequests { runKey runConfigYaml tags { key value } }
        skipReason
        error { message }
      }
    }
    ... on PythonError { message }
    ... on ScheduleNotFoundError { message }
  }
}"""

START_SCHEDULE = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""


def launch_run(url: str, tags: dict[str, str], run_config: dict | None = None) -> str:
    params = {
        "selector": {"jobName": JOB, **REPOSITORY_SELECTOR},
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    result = graphql(url, LAUNCH_RUN, {"params": params})["launchRun"]
    if result["__typename"] == "RunConfigValidationInvalid":
        raise GraphQLError("run config: " + "; ".join(e["message"] for e in result["errors"]))
    return _unwrap(result, "LaunchRunSuccess", "launch")["run"]["runId"]


def schedule_dry_run(url: str, at: dt.datetime) -> dict:
    """What the nightly schedule asks for as of `at`: its run requests (or why it skips)."""
    selector = {"scheduleName": SCHEDULE, **REPOSITORY_SELECTOR}
    result = graphql(url, SCHEDULE_DRY_RUN, {"selector": selector, "timestamp": at.timestamp()})["scheduleDryRun"]
    evaluation = _unwrap(result, "DryRunInstigationTick", "schedule evaluation")["evaluationResult"]
    if evaluation["error"]:
        raise GraphQLError(f"schedule evaluation failed: {evaluation['error']['message']}")
    return evaluation


def start_schedule(url: str) -> str:
    result = graphql(url, START_SCHEDULE, {"selector": {"scheduleName": SCHEDULE, **REPOSITORY_SELECTOR}})["startSchedule"]
    if result["__typename"] == "PythonError" and "already running" in result.get("message", ""):
        return "RUNNING"
    return _unwrap(result, "ScheduleStateResult", "start schedule")["scheduleState"]["status"]


# --- health and status ----------------------------------------------------------------------------

DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }"

STATUS = f"""
{{
  instance {{ daemonHealth {{ allDaemonStatuses {{ daemonType required healthy }} }} }}
  scheduleOrError(scheduleSelector: {{scheduleName: "{SCHEDULE}", repositoryName: "{REPOSITORY}", repositoryLocationName: "{LOCATION}"}}) {{
    __typename
    ... on Schedule {{ scheduleState {{ status }} futureTicks(limit: 1) {{ results {{ timestamp }} }} executionTimezone }}
  }}
  runsOrError(limit: 10) {{ ... on Runs {{ results {{ runId status tags {{ key value }} startTime endTime }} }} }}
  partitionBackfillsOrError(limit: 5) {{ ... on PartitionBackfills {{ results {{ id status numPartitions title }} }} }}
}}"""


def daemon_health(url: str, since: float = 0.0) -> dict[str, bool]:
    """Required daemons and whether each is healthy with a heartbeat at or after `since` (epoch s):
    heartbeats of a daemon that ran before are still in the database and prove nothing."""
    statuses = graphql(url, DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return {
        d["daemonType"]: bool(d["healthy"]) and (d["lastHeartbeatTime"] or 0.0) >= since
        for d in statuses
        if d["required"]
    }


def status(url: str) -> dict:
    """Daemons, the nightly schedule, the last runs and backfills, in one query."""
    return graphql(url, STATUS)
