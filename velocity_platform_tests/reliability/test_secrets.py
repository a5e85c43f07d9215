"""Bearer tokens: from the environment, to their own host only, never written anywhere."""

import logging
import os
from pathlib import Path

import pytest

from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.http import UpstreamError
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform.simulators.wms import WmsConfig
from velocity_platform_tests.warehouse import open_tables
from velocity_platform_tests.conftest import platform_environment

from .conftest import DATES, LINES_PER_DAY, WORLD, faulty_world, run

pytestmark = pytest.mark.reliability

ERP_SECRET = "erp-SECRET-7f3a9c1e5b"
WMS_SECRET = "wms-SECRET-2d8e4b6a0c"


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_run_leaves_no_token_in_events_tables_store_or_logs(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    # Faults on, so retries log and errors carry upstream answers: the places a token could slip into.
    erp = ErpConfig(**WORLD, lines_per_day=LINES_PER_DAY, token=ERP_SECRET, retry_after_seconds=0,
                    fault_rate_5xx=0.2, fault_rate_drift=0.05)
    wms = WmsConfig(**WORLD, token=WMS_SECRET, retry_after_seconds=0, fault_rate_commit_then_drop=0.2)
    root = tmp_path / "world"
    with platform_environment(root, erp, wms) as platform:
        outcomes = run(DATES, warehouse={"dlq_rate_max": 0.5})
        assert all(o.success for o in outcomes), [o.error for o in outcomes]
        assert platform.wms_app.state.simulator.stats()["applied"] > 0
        with open_tables(platform.settings) as con:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'warehouse'"
            ).fetchall()]
            assert "dead_letter_transactions" in tables
            for name in tables:
                text = con.execute(f'SELECT CAST(list(t) AS VARCHAR) FROM warehouse."{name}" t').fetchone()[0] or ""
                assert ERP_SECRET not in text and WMS_SECRET not in text, f"token in table {name}"
    captured = capfd.readouterr()
    for secret in (ERP_SECRET, WMS_SECRET):
        # Every file the run wrote: the Dagster event log and run storage (SQLite under DAGSTER_HOME),
        # compute logs, the DuckDB file, the operational store and its WAL.
        assert files_containing(root, secret.encode()) == []
        assert secret not in caplog.text
        assert secret not in captured.out and secret not in captured.err


def test_a_refused_token_fails_the_run_with_a_message_that_names_the_variable_not_the_value(tmp_path):
    wrong = "not-the-right-token-91c2"
    with faulty_world(tmp_path) as platform:
        os.environ["VELOCITY_ERP_TOKEN"] = wrong
        [outcome] = run(DATES[:1])
        assert not outcome.success
        assert "HTTP 401" in outcome.error and "VELOCITY_ERP_TOKEN" in outcome.error
        assert wrong not in outcome.error
        assert platform.erp_stats()["requests"]["skus"]["401"] >= 1
        assert files_containing(tmp_path, wrong.encode()) == []


def test_the_client_refuses_what_would_leak_the_token(tmp_path):
    with faulty_world(tmp_path) as platform:
        # 401 through the client: final at once (no retries), the fix named, the token absent.
        with ErpClient(platform.erp_url, "wrong-token-abc") as client, pytest.raises(UpstreamError) as refused:
            client.count_lines(DATES[0])
        assert refused.value.status == 401 and client.stats.requests == 1
        assert "VELOCITY_ERP_TOKEN" in str(refused.value) and "wrong-token-abc" not in str(refused.value)
    # A token never travels in clear to a remote host, nor inside the URL.
    with pytest.raises(ValueError, match="plain http"):
        ErpClient("http://erp.example.com", "t")
    with pytest.raises(ValueError, match="must not carry credentials") as in_url:
        ErpClient("https://user:hunter2@erp.example.com", "t")
    assert "hunter2" not in str(in_url.value)
    # TLS verification is on unless switched off explicitly.
    client = ErpClient("https://erp.example.com", "t")
    assert client._http._http._transport._pool._ssl_context.verify_mode.name == "CERT_REQUIRED"
    client.close()
