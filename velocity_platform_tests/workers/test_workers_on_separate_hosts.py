"""Workers on hosts of their own: each `velocity-platform worker` in a network namespace of its
own, with its own state directory, reaching PostgreSQL, RabbitMQ, the lake's S3 server and the
simulators only over its veth pair (velocity_platform_tests/workers/netns.py); the night still
runs, on both, and nothing of the lake is on any host's disk."""

import datetime as dt
import os
from contextlib import ExitStack

import dagster as dg
import pytest
import sqlalchemy as sa
from kombu.utils.url import url_to_parts

from velocity_platform.connectors.object_store import S3Lake
from velocity_platform_tests.conftest import ERP_TOKEN
from velocity_platform_tests.production.postgres import ADMIN_URL
from velocity_platform_tests.workers.cluster import (
    BROKER_URL,
    NightlyRun,
    celery_deployment,
    partition,
    step_workers,
    wait_for_workers,
)
from velocity_platform_tests.workers.netns import HUB, forwarders, namespace, why_no_namespaces

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

RUN_DEADLINE_S = 240.0


def _on_hub(url: str) -> str:
    """The same URL with the hub's name for its host (what every worker host is given)."""
    return sa.make_url(url).set(host=HUB).render_as_string(hide_password=False)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_night_runs_on_workers_that_reach_everything_over_their_own_network(tmp_path, s3_server):
    reason = why_no_namespaces()
    if reason:
        pytest.skip(f"no separate hosts here: {reason}")
    day = dt.date(2026, 2, 5)
    with celery_deployment(tmp_path, "netns") as deployment, ExitStack() as hosts:
        platform = deployment.platform
        broker = url_to_parts(BROKER_URL)
        ports = {
            "postgres": sa.make_url(ADMIN_URL).port or 5432,
            "rabbitmq": broker.port or 5672,
            "erp": _port(platform.erp_url),
            "wms": _port(platform.wms_url),
            "s3": _port(s3_server.url),
        }
        # The lake is a bucket: the orchestrator reaches it on loopback, each host over its pair.
        lake = s3_server.new_lake()
        os.environ.update({**s3_server.environment, "VELOCITY_LAKE_PATH": lake})  # restored with the deployment
        erp_url, wms_url = f"http://{HUB}:{ports['erp']}", f"http://{HUB}:{ports['wms']}"
        same_environment = {
            "DAGSTER_PG_URL": _on_hub(deployment.dagster_url),
            "VELOCITY_STORE_URL": _on_hub(deployment.store_url),
            "VELOCITY_CELERY_BROKER_URL": f"amqp://{broker.username}:{broker.password}@{HUB}:{ports['rabbitmq']}//",
            "VELOCITY_ERP_URL": erp_url,
            "VELOCITY_WMS_URL": wms_url,
            "AWS_ENDPOINT_URL": f"http://{HUB}:{ports['s3']}",
        }
        relays, workers = {}, []
        for index, name in enumerate(("dock", "mezzanine"), start=1):
            space = hosts.enter_context(namespace(index))
            relays[name] = hosts.enter_context(forwarders(space.host_address, list(ports.values())))
            workers.append(deployment.worker(name, same_environment, prefix=space.exec_prefix()))
        wait_for_workers(workers)

        # The simulators speak plain HTTP over the pairs (a test network); the resources refuse
        # that to a non-loopback host unless told, which is run configuration, the same for all.
        upstreams = {
            "erp": {"base_url": erp_url, "token": {"env": "VELOCITY_ERP_TOKEN"}, "allow_plain_http": True},
            "wms": {"base_url": wms_url, "token": {"env": "VELOCITY_WMS_TOKEN"}, "allow_plain_http": True},
        }
        run_config = {"resources": {name: {"config": config} for name, config in upstreams.items()}}
        run = NightlyRun(partition(day), deployment.root / "run.log", run_config).start()
        assert run.wait(RUN_DEADLINE_S) == dg.DagsterRunStatus.SUCCESS, run.text()[-3000:]

        with dg.DagsterInstance.get() as instance:
            taken = step_workers(instance, run.run_id)
        nodes = {w.node for w in workers}
        print(f"steps by host: { {n: sum(ws == [n] for ws in taken.values()) for n in nodes} }; connections relayed: "
              f"{ {host: {p: r.connections for p, r in rs.items()} for host, rs in relays.items()} }")
        assert {ws[0] for ws in taken.values()} == nodes
        # Each host reached PostgreSQL and RabbitMQ through its own pair, and the simulators were
        # reached over the pairs too (by whichever host ran the steps that call them).
        for host, by_port in relays.items():
            assert by_port[ports["postgres"]].connections and by_port[ports["rabbitmq"]].connections, host
            assert by_port[ports["s3"]].connections, f"{host} wrote no table to the lake's server"
            assert not (deployment.root / f"worker-{host}" / "lake").exists()
        assert sum(r[ports["erp"]].connections for r in relays.values()) and sum(r[ports["wms"]].connections for r in relays.values())
        stats = platform.wms_stats()
        assert stats["by_business_date"][day.isoformat()]["applied"] > 0 and set(stats["applied_per_key"].values()) == {1}
        assert ERP_TOKEN not in run.text()
        # Every table of the night is in the bucket, and no host (the orchestrator's included) has a lake folder.
        held = set(S3Lake(lake).table_folders())
        assert {"raw_transactions", "validated_transactions", "sku_velocity", "slotting_directives", "wms_directive_acks"} <= held
        assert not (deployment.root / "lake").exists()
        assert [w.stop() for w in workers] == [0, 0]
