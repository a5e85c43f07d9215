"""Every path of the README's "Command line" table, run as a new user runs it: the installed
`velocity-platform` as a subprocess, from a directory outside the checkout, with a clean
environment (no VELOCITY_* variable, no DAGSTER_HOME). A mistake is one line on stderr naming
what to change, with exit code 2 and no traceback; a working command exits 0."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.serve import BackgroundServer, free_port
from velocity_platform.simulators.wms import WmsConfig, create_wms_app
from benchmarks.deployment import wait_until
from velocity_platform_tests.warehouse import open_tables

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).with_name("velocity-platform"))
DEV_TOKENS = {"VELOCITY_ERP_TOKEN": "erp-dev-token", "VELOCITY_WMS_TOKEN": "wms-dev-token"}
# A small world, a few seconds a business date; 2,500 lines a day keep the simulator's 0.05%
# malformed lines under the 0.1% dead-letter gate.
SMALL = {"seed": 5, "skus": 100, "lines_per_day": 2500, "days": 12}
YESTERDAY = dt.datetime.now(ZoneInfo("Europe/London")).date() - dt.timedelta(days=1)


def cli(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", **env}
    return subprocess.run([EXE, *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=timeout)


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    """The command refused with exit 2 and said why in exactly one line, without a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("velocity-platform "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def simulators():
    """An ERP and a WMS with their development tokens, as `make dev` runs them."""
    erp = ErpConfig(**SMALL, token=DEV_TOKENS["VELOCITY_ERP_TOKEN"])
    wms = WmsConfig(seed=SMALL["seed"], skus=SMALL["skus"], days=SMALL["days"], token=DEV_TOKENS["VELOCITY_WMS_TOKEN"])
    with BackgroundServer(create_erp_app(erp)) as erp_server, BackgroundServer(create_wms_app(wms)) as wms_server:
        yield {"VELOCITY_ERP_URL": erp_server.url, "VELOCITY_WMS_URL": wms_server.url}


# --- velocity-platform run --from DATE --to DATE ----------------------------------------------------


def test_run_without_tokens_names_both_variables_and_how_to_set_them(tmp_path, simulators):
    line = one_clear_line(cli(["run", "--from", str(YESTERDAY), "--to", str(YESTERDAY)], tmp_path, **simulators))
    assert "VELOCITY_ERP_TOKEN and VELOCITY_WMS_TOKEN are not set" in line
    assert "export VELOCITY_ERP_TOKEN=" in line and "export VELOCITY_WMS_TOKEN=" in line
    # only one missing: only that one is named
    line = one_clear_line(
        cli(["run", "--from", str(YESTERDAY), "--to", str(YESTERDAY)], tmp_path, VELOCITY_ERP_TOKEN="t", **simulators)
    )
    assert "VELOCITY_WMS_TOKEN is not set" in line and "VELOCITY_ERP_TOKEN" not in line


@pytest.mark.parametrize("down", ["ERP", "WMS"])
def test_run_against_an_upstream_that_does_not_answer_names_the_url_and_what_was_tried(tmp_path, simulators, down):
    dead = f"http://127.0.0.1:{free_port()}"
    urls = {**simulators, f"VELOCITY_{down}_URL": dead}
    line = one_clear_line(cli(["run", "--from", str(YESTERDAY), "--to", str(YESTERDAY)], tmp_path, **urls, **DEV_TOKENS))
    assert f"the {down} at {dead} cannot be reached" in line
    assert f"GET {dead}/v1/" in line and "failed 3 times" in line
    assert f"VELOCITY_{down}_URL / --{down.lower()}-url" in line
    # nothing was built
    assert not list((tmp_path / ".velocity").glob("lake/*/_delta_log"))


def test_run_with_a_token_the_upstream_refuses_says_which(tmp_path, simulators):
    tokens = {**DEV_TOKENS, "VELOCITY_ERP_TOKEN": "not-the-erp-token"}
    line = one_clear_line(cli(["run", "--from", str(YESTERDAY), "--to", str(YESTERDAY)], tmp_path, **simulators, **tokens))
    assert "refused VELOCITY_ERP_TOKEN (HTTP 401" in line
    assert "not-the-erp-token" not in line  # a secret is never repeated


def test_run_with_an_unwritable_state_directory(tmp_path, simulators):
    (tmp_path / "a-file").write_text("not a directory")
    state = tmp_path / "a-file" / "state"
    line = one_clear_line(
        cli(["run", "--from", str(YESTERDAY), "--to", str(YESTERDAY)], tmp_path, VELOCITY_STATE_DIR=str(state), **simulators, **DEV_TOKENS)
    )
    assert f"the state directory {state}" in line and "is not writable" in line
    assert "set VELOCITY_STATE_DIR" in line


@pytest.mark.parametrize(
    ("first", "last", "said"),
    [
        (YESTERDAY, YESTERDAY - dt.timedelta(days=2), "is before --from"),
        (dt.date(2024, 6, 1), YESTERDAY, "set VELOCITY_FIRST_PARTITION_DATE=2024-06-01"),
        (YESTERDAY, YESTERDAY + dt.timedelta(days=2), "has not ended yet in Europe/London"),
        ("2026-02-30", YESTERDAY, "'2026-02-30' is not a date like"),
    ],
)
def test_run_over_a_bad_date_range(tmp_path, first, last, said):
    line = one_clear_line(cli(["run", "--from", str(first), "--to", str(last)], tmp_path, **DEV_TOKENS))
    assert said in line


@pytest.mark.slow(minutes=0.9)
def test_run_builds_the_range_when_everything_is_set(tmp_path, simulators):
    first = YESTERDAY - dt.timedelta(days=1)
    summary = tmp_path / "out" / "summary.json"
    result = cli(
        ["run", "--from", str(first), "--to", str(YESTERDAY), "--summary", str(summary)], tmp_path, **simulators, **DEV_TOKENS
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"[  2/2] {YESTERDAY}" in result.stderr  # one progress line per business date
    figures = json.loads(summary.read_text())
    assert figures["partitions_succeeded"] == 2
    assert figures["raw_lines"] == figures["erp_lines"] == figures["validated_lines"] + figures["dead_letter_lines"]
    # the state lives beside where the user stands, not in the checkout
    assert (tmp_path / ".velocity" / "lake" / "raw_transactions" / "_delta_log").is_dir()


# --- velocity-platform demo -------------------------------------------------------------------------


@pytest.mark.slow(minutes=0.9)
def test_demo_builds_history_in_one_run_then_the_nights_one_by_one(tmp_path):
    result = cli(["demo", "--days", "2", "--history-days", "14", "--skus", "100", "--lines-per-day", "2500"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    history_first = YESTERDAY - dt.timedelta(days=15)
    assert f"[history] {history_first} .. {YESTERDAY - dt.timedelta(days=2)} WH-01  ok" in result.stderr
    assert f"[  1/2] {YESTERDAY - dt.timedelta(days=1)}" in result.stderr and f"[  2/2] {YESTERDAY}" in result.stderr
    assert "SKUs classified" in result.stdout and "XYZ {" in result.stdout
    with open_tables(state_dir=tmp_path / ".velocity") as con:
        demand_days = con.execute("SELECT count(DISTINCT business_date) FROM warehouse.daily_sku_demand").fetchone()[0]
        velocity_days = con.execute("SELECT count(DISTINCT business_date) FROM warehouse.sku_velocity").fetchone()[0]
        before_history = con.execute(
            "SELECT count(*) FROM warehouse.daily_sku_demand WHERE business_date < ?", [history_first]
        ).fetchone()[0]
    # 14 days of history up to daily demand, then the 2 nights through the whole graph
    assert (demand_days, velocity_days, before_history) == (16, 2, 0)


@pytest.mark.slow(minutes=0.9)
def test_a_demo_of_three_warehouses_reconciles_each_site_and_their_mixes_differ(tmp_path):
    summary_path = tmp_path / "summary.json"
    args = ["demo", "--warehouses", "3", "--days", "1", "--history-days", "7", "--skus", "150", "--lines-per-day", "2500"]
    result = cli([*args, "--summary", str(summary_path)], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "3 warehouse(s)" in result.stderr
    summary = json.loads(summary_path.read_text())
    sites = summary["warehouses"]
    assert sorted(sites) == ["WH-01", "WH-02", "WH-03"]
    for site, figures in sites.items():
        # ERP = raw = validated + dead-lettered, per warehouse; every directive acknowledged, by its site.
        assert figures["reconciled"], (site, figures["not_reconciled"])
        assert figures["erp_lines"] == figures["raw_lines"] == figures["validated_lines"] + figures["dead_letter_lines"] > 0
        assert figures["directives"] == figures["directives_acked"], site
    assert summary["raw_lines"] == sum(f["raw_lines"] for f in sites.values())
    assert len({json.dumps(f["abc_counts"], sort_keys=True) for f in sites.values()}) == 3  # each site its own demand
    with open_tables(state_dir=tmp_path / ".velocity") as con:
        foreign = con.execute(
            "SELECT count(*) FROM warehouse.wms_directive_acks a JOIN warehouse.slotting_directives d USING (directive_id) "
            "WHERE a.warehouse_id <> d.warehouse_id"
        ).fetchone()[0]
    assert foreign == 0


# --- velocity-platform simulate erp|wms -------------------------------------------------------------


def test_simulate_serves_until_interrupted(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [EXE, "simulate", "erp", "--port", str(port), "--skus", "20", "--lines-per-day", "20", "--days", "3"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )

    def healthy() -> bool:
        assert process.poll() is None, process.stderr.read()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until("the simulator to answer", healthy, deadline_s=60, poll_s=0.2)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/transactions/count",
            params={"business_date": str(YESTERDAY)},
            headers={"Authorization": "Bearer erp-dev-token"},
        )
        assert answer.status_code == 200 and answer.json()["lines"] > 0
        # the port is now taken: a second simulator on it says so in one line
        line = one_clear_line(cli(["simulate", "wms", "--port", str(port)], tmp_path))
        assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert "Traceback" not in process.stderr.read()


def test_simulate_with_an_impossible_fault_rate(tmp_path):
    line = one_clear_line(cli(["simulate", "erp", "--fault-rate-429", "1.5"], tmp_path))
    assert "fault_rate_429" in line and "1.5" in line


# --- velocity-platform run --source file / evaluate --------------------------------------------------

COLUMNS = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
FILE_DAYS = [dt.date(2011, 6, 1), dt.date(2011, 6, 2), dt.date(2011, 6, 3)]
LINES_PER_DAY = 1200  # one broken line stays under the 0.1% dead-letter gate


def export_lines() -> list[str]:
    """An Online Retail-shaped export: three days, one postage line, one line with an
    unterminated quote on the second day."""
    lines = []
    for day_index, day in enumerate(FILE_DAYS):
        for n in range(LINES_PER_DAY):
            invoice = 600000 + day_index * 1000 + n // 4
            sku = f"{20000 + (n * 7 + day_index) % 40}"
            lines.append(f"{invoice},{sku},ITEM {sku},{1 + n % 5},{day} {8 + n % 9:02d}:{n % 60:02d}:00,1.25,17850.0,United Kingdom")
    lines.append(f"600001,POST,POSTAGE,1,{FILE_DAYS[0]} 09:00:00,18.0,17850.0,United Kingdom")
    lines.insert(LINES_PER_DAY + 10, f'600999,"20001,ITEM 20001,2,{FILE_DAYS[1]} 10:00:00,1.25,17850.0,United Kingdom')
    return lines


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("export") / "orders.csv"
    lines = export_lines()
    path.write_text("\n".join([COLUMNS, *lines]) + "\n")
    return path, len(lines)


@pytest.mark.slow(minutes=0.9)
def test_run_from_a_file_accounts_for_every_line_and_dead_letters_the_broken_one(tmp_path, export):
    path, lines_in_file = export
    result = cli(
        ["run", "--source", "file", "--path", str(path), "--preset", "online-retail", "--from", str(FILE_DAYS[0]),
         "--to", str(FILE_DAYS[-1]), "--aisles", "4", "--bays", "10"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    accounting = next(line for line in result.stdout.splitlines() if line.startswith("File lines"))
    numbers = [int(part.replace(",", "")) for part in accounting.split() if part.replace(",", "").isdigit()]
    total, validated, excluded, dead = numbers
    assert total == lines_in_file == validated + excluded + dead
    assert (excluded, dead) == (1, 1)
    with open_tables(state_dir=tmp_path / ".velocity") as con:
        business_date, payload, reasons = con.execute(
            "SELECT business_date, raw_payload, reasons FROM warehouse.dead_letter_transactions"
        ).fetchone()
    # the line between two lines of 2 June is a dead letter of 2 June, with its text and why
    assert business_date == FILE_DAYS[1]
    assert payload.startswith('600999,"20001,ITEM 20001')
    assert f"line {LINES_PER_DAY + 11} of orders.csv" in reasons[0] and "quote that is never closed" in reasons[0]


def test_run_from_a_file_that_is_not_a_csv_or_not_there(tmp_path):
    (tmp_path / "photo.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    base = ["run", "--source", "file", "--preset", "online-retail", "--from", "2011-06-01", "--to", "2011-06-02"]
    line = one_clear_line(cli([*base, "--path", str(tmp_path / "photo.csv")], tmp_path))
    assert "photo.csv is not a CSV export" in line
    line = one_clear_line(cli([*base, "--path", str(tmp_path / "missing.csv")], tmp_path))
    assert "missing.csv cannot be read" in line and "--path" in line


def test_run_from_a_file_outside_its_dates(tmp_path, export):
    path, _ = export
    args = ["run", "--source", "file", "--path", str(path), "--from", "2011-07-01", "--to", "2011-07-02"]
    assert "is not inside the export's 2011-06-01 .. 2011-06-03" in one_clear_line(cli(args, tmp_path))


def test_evaluate_replays_a_file_and_refuses_a_range_outside_it(tmp_path, export):
    path, _ = export
    base = ["evaluate", "--source", "file", "--path", str(path), "--preset", "online-retail", "--aisles", "4", "--bays", "10"]
    result = cli([*base, "--from", str(FILE_DAYS[1]), "--to", str(FILE_DAYS[2]), "--summary", "eval.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["file_lines"]["dead_lettered"] == 1 and summary["orders"] > 0
    refused = cli([*base, "--from", "2011-05-01", "--to", str(FILE_DAYS[2])], tmp_path)
    # evaluate says what it replays first; the refusal is the one line after it
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "must lie within the file's history" in refused.stderr.strip().splitlines()[-1]


# --- velocity-platform warehouses add|list ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"id": "WH 02"}, "ID: warehouse id 'WH 02' is not valid"),
        ({"id": "WH|02"}, "is not valid"),  # '|' would break the partition key
        ({"--timezone": "Mars/Olympus"}, "--timezone: time zone 'Mars/Olympus' is unknown"),
        ({"--aisles": "0"}, "--aisles: Input should be greater than or equal to 1"),
        ({"--levels": "40"}, "--levels: Input should be less than or equal to 12"),
        ({"--wms-url": "ftp://wms"}, "--wms-url: WMS URL 'ftp://wms' is not an http(s) URL"),
    ],
)
def test_a_warehouse_with_a_bad_fact_is_refused_in_one_line(tmp_path, change, said):
    facts = {"--timezone": "Europe/Berlin", "--aisles": "30", "--bays": "40", "--levels": "4", "--routing": "return"}
    facts.update({k: v for k, v in change.items() if k != "id"})
    args = ["warehouses", "add", change.get("id", "BER"), *(x for kv in facts.items() for x in kv)]
    line = one_clear_line(cli(args, tmp_path))
    assert said in line, line
    listed = cli(["warehouses", "list", "--json"], tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []  # nothing half-registered


def test_registered_warehouses_are_listed_with_their_facts_and_become_partitions(tmp_path):
    empty = cli(["warehouses", "list"], tmp_path)
    assert empty.returncode == 0 and "No warehouse registered: the platform runs one, WH-01" in empty.stdout
    for args in (
        ["BER", "--timezone", "Europe/Berlin", "--aisles", "30", "--bays", "40", "--levels", "4", "--routing", "largest-gap"],
        ["CHI", "--timezone", "America/Chicago", "--aisles", "50", "--bays", "60", "--levels", "1", "--routing", "s-shape",
         "--wms-url", "http://127.0.0.1:9999"],
    ):
        added = cli(["warehouses", "add", *args], tmp_path)
        assert added.returncode == 0, added.stderr
    again = cli(["warehouses", "add", "BER", "--timezone", "Europe/Berlin", "--aisles", "30", "--bays", "40", "--levels", "2",
                 "--routing", "return"], tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("BER updated")
    sites = {s["warehouse_id"]: s for s in json.loads(cli(["warehouses", "list", "--json"], tmp_path).stdout)}
    assert (sites["BER"]["levels"], sites["BER"]["routing"]) == (2, "return")
    assert (sites["CHI"]["timezone"], sites["CHI"]["wms_url"]) == ("America/Chicago", "http://127.0.0.1:9999")
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / ".velocity" / "dagster_home")) as instance:
        assert set(instance.get_dynamic_partitions("warehouses")) == {"BER", "CHI"}
