"""The failure alert sensor against a webhook receiver on loopback.

One world, four kinds of day: a run that succeeds although an ERROR check failed (the WMS
rejected directives for SKUs it does not know: only the check evaluations show it), a run a
blocking gate stopped (the ERP's count disagrees), a run that failed outright (an expired ERP
token), and a WARN signal (a scheduled run that landed late), which must page nobody.
"""

import datetime as dt
import os
import threading

import dagster as dg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velocity_platform.batch import run_range
from velocity_platform.definitions import defs
from velocity_platform.defs.ops.alerts import failure_alert_sensor
from velocity_platform.defs.resources import AlertWebhookResource, OperationsResource
from velocity_platform.defs.wms.checks import landed_within_batch_window
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.conftest import ERP_TOKEN, WMS_TOKEN, WORLD, platform_environment
from velocity_platform_tests.warehouse import day_key, day_key_str

pytestmark = pytest.mark.integration

UI = "http://dagster.example.test:3000"
EXPIRED_TOKEN = "expired-erp-token-do-not-leak"
NORMAL, GATED, BROKEN, LATER = dt.date(2026, 2, 4), dt.date(2026, 2, 5), dt.date(2026, 2, 6), dt.date(2026, 2, 9)


class Receiver:
    """A webhook on loopback that keeps what it is sent, or answers with an outage status."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.bodies: list[bytes] = []
        self.status = 200
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.status != 200:
                return Response(status_code=self.status)
            with self._lock:
                self.bodies.append(body)
                self.messages.append(await request.json())
            return JSONResponse({"received": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    with BackgroundServer(receiver.app()) as server:
        receiver.url = f"{server.url}/hook"
        yield receiver


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    erp = ErpConfig(**WORLD, lines_per_day=2500, token=ERP_TOKEN)
    # The WMS lists 20 fewer SKUs than the ERP sells: their new-slot directives are refused (422).
    wms = WmsConfig(**{**WORLD, "skus": WORLD["skus"] - 20}, token=WMS_TOKEN)
    with platform_environment(tmp_path_factory.mktemp("alerts"), erp, wms) as platform:
        with dg.DagsterInstance.get() as instance:
            yield platform, instance


def tick(instance: dg.DagsterInstance, cursor: str | None, receiver: Receiver) -> dg.SensorResult:
    resources = {"alert_webhook": AlertWebhookResource(url=receiver.url), "operations": OperationsResource(ui_base_url=UI)}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return failure_alert_sensor(context)


def run_id_of(instance: dg.DagsterInstance, day: dt.date) -> str:
    runs = dg.RunsFilter(job_name="nightly_slotting_batch", tags={"dagster/partition": day_key_str(day)})
    [record] = instance.get_run_records(runs, limit=1)
    return record.dagster_run.run_id


@pytest.fixture(scope="module")
def first_round(world, receiver):
    platform, instance = world
    watching = tick(instance, None, receiver)  # a new sensor starts from now
    assert not receiver.messages

    [normal] = run_range([NORMAL])
    simulator = platform.erp_app.state.simulator
    simulator.config.count_excess_lines = 4
    [gated] = run_range([GATED])
    simulator.config.count_excess_lines = 0
    os.environ["VELOCITY_ERP_TOKEN"] = EXPIRED_TOKEN
    [broken] = run_range([BROKEN])
    os.environ["VELOCITY_ERP_TOKEN"] = ERP_TOKEN

    # A WARN signal: the day's landing judged as if the 02:00 schedule had launched its run.
    # (sales_history rides along only so the job has a partitioned asset to take the partition from.)
    window = dg.define_asset_job(
        "landing_check",
        selection=dg.AssetSelection.checks(landed_within_batch_window) | dg.AssetSelection.assets("sales_history"),
    )
    late = (
        dg.Definitions.merge(defs(), dg.Definitions(jobs=[window]))
        .resolve_job_def("landing_check")
        .execute_in_process(
            instance=instance,
            partition_key=day_key(NORMAL),
            tags={"dagster/schedule_name": "nightly_slotting_schedule"},
        )
    )
    warned = [e for e in late.get_asset_check_evaluations() if not e.passed]
    result = tick(instance, watching.cursor, receiver)
    return (normal, gated, broken), warned, result, list(receiver.messages)


def test_each_failure_is_posted_once_with_its_figures_and_a_link_to_the_run(world, first_round):
    _, instance = world
    (normal, gated, broken), _, _, messages = first_round
    assert normal.success and "wms_directive_acks.every_directive_acknowledged" in normal.checks_failed
    assert not gated.success and not broken.success
    by_day = {m["business_date"]: m for m in messages}
    assert {m["warehouse"] for m in messages} == {"WH-01"}  # the alert names the site
    assert sorted(by_day) == [NORMAL.isoformat(), GATED.isoformat(), BROKEN.isoformat()]
    assert len(messages) == 3 and len({m["alert_id"] for m in messages}) == 3

    acks = by_day[NORMAL.isoformat()]
    run_id = run_id_of(instance, NORMAL)
    assert acks["kind"] == "check_failed" and acks["run_status"] == "SUCCESS" and acks["blocking"] is False
    assert (acks["asset"], acks["check"]) == ("wms_directive_acks", "every_directive_acknowledged")
    assert acks["figures"]["not_acked"] == acks["figures"]["directives"] - acks["figures"]["acked"] > 0
    assert acks["run_url"] == f"{UI}/runs/{run_id}" and acks["run_id"] == run_id

    # The gate stopped its run: one message, the gate's, not a second one for the run failure.
    gate = by_day[GATED.isoformat()]
    assert (gate["kind"], gate["asset"], gate["check"], gate["blocking"]) == (
        "check_failed", "raw_transactions", "reconciles_with_erp", True
    )
    assert gate["figures"]["difference"] == -4 and gate["run_status"] == "FAILURE"
    assert "re-run the partition" in gate["description"]

    failed = by_day[BROKEN.isoformat()]
    assert failed["kind"] == "run_failed" and failed["check"] is None
    assert set(failed["figures"]["failed_steps"]) >= {"sku_master", "raw_transactions"}
    assert "401" in failed["description"]
    assert failed["run_url"] == f"{UI}/runs/{run_id_of(instance, BROKEN)}"


def test_warn_signals_show_in_the_ui_but_page_nobody(first_round):
    _, warned, _, messages = first_round
    assert [(e.check_name, e.severity) for e in warned] == [("landed_within_batch_window", dg.AssetCheckSeverity.WARN)]
    assert "landed_within_batch_window" not in {m["check"] for m in messages}


def test_secrets_never_reach_the_webhook(receiver, first_round):
    assert not any(EXPIRED_TOKEN.encode() in body or ERP_TOKEN.encode() in body for body in receiver.bodies)


def test_a_webhook_outage_delays_an_alert_and_never_duplicates_one(world, receiver, first_round):
    platform, instance = world
    *_, result, messages = first_round
    assert tick(instance, result.cursor, receiver).cursor == result.cursor  # nothing new: nothing posted
    assert receiver.messages == messages

    receiver.status = 503
    platform.erp_app.state.simulator.config.count_excess_lines = 4
    run_range([LATER])
    platform.erp_app.state.simulator.config.count_excess_lines = 0
    during = tick(instance, result.cursor, receiver)
    assert receiver.messages == messages
    assert "webhook" in during.skip_reason.skip_message

    receiver.status = 200
    after = tick(instance, during.cursor, receiver)
    new = receiver.messages[len(messages):]
    assert [(m["business_date"], m["check"]) for m in new] == [(LATER.isoformat(), "reconciles_with_erp")]
    tick(instance, after.cursor, receiver)
    assert len(receiver.messages) == len(messages) + 1
