"""The Dagster UI of the production stack in a real headless Chromium: what an operator sees.

Debian's `chromium` (installed by .ci/run where missing) driven by Playwright; browser downloads
are never used. Screenshots land in artifacts/ui/ (git-ignored) as the test's artefacts.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from velocity_platform_tests.production.conftest import (
    BACKFILL_DATES,
    GOOD_DATES,
    PROJECT,
)

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.production, pytest.mark.integration]

CHROMIUM = os.environ.get("VELOCITY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = PROJECT / "artifacts" / "ui"
UI_TIMEOUT_MS = 30_000

MATERIALIZATIONS = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(limit: 200) { partition runId } } }
}"""

CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 20) { runId evaluation { description } }
}"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI requires the browser: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set VELOCITY_CHROMIUM)")
    from playwright.sync_api import expect

    # expect() keeps its own 5 s default apart from the context's; a loaded CI machine renders a
    # page's checks tab slower than that.
    expect.set_options(timeout=UI_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(request, browser, production_stack):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    # Dagster greets a new instance with a newsletter dialog, at a moment of its choosing: whenever
    # it covers the page, skip it and carry on with what the test was doing.
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"), lambda _: page.get_by_role("button", name="Skip").click()
    )
    yield page
    if getattr(request.node, "call_failed", False):  # what the page showed when an assertion failed
        page.screenshot(path=SCREENSHOTS / f"FAILED-{request.node.name}.png", full_page=True)
    context.close()


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")


def screenshot(page, name: str, **kw) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text("Join the Dagster community")).to_be_hidden()  # the handler skips it
    page.screenshot(path=SCREENSHOTS / name, **kw)


def test_the_asset_graph_shows_every_stage(page, production_stack, nightly_history):
    from playwright.sync_api import expect

    open_page(page, f"{production_stack.ui}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(page.get_by_text("velocity", exact=True).last).to_be_visible()
    page.keyboard.press("Alt+KeyE")  # the graph's "Expand all groups"
    for asset in ("raw_transactions", "sku_master", "sales_history", "daily_sku_demand", "sku_velocity", "wms_locations", "wms_directive_acks"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")  # each node's latest status, for the screenshot
    screenshot(page, "asset_graph.png")


def test_the_partitions_of_sku_velocity_show_the_materialized_days(page, production_stack, nightly_history):
    from playwright.sync_api import expect

    open_page(page, f"{production_stack.ui}/assets/sku_velocity?view=partitions")
    # Four good days; the night whose gate failed shows as failed, downstream of the gate.
    expect(page.get_by_text(f"Materialized ({len(GOOD_DATES)})")).to_be_visible()
    expect(page.get_by_text("Failed (1)")).to_be_visible()
    day = BACKFILL_DATES[1]
    # The grid is dates x warehouses: filter the dates (every business day since the first
    # partition) as a user would, pick the day, then its warehouse.
    page.get_by_placeholder("Filter by date").fill(day.isoformat())
    page.get_by_text(day.isoformat(), exact=True).first.click()
    page.get_by_text("WH-01", exact=True).first.click()
    expect(page.get_by_text(f"{day.isoformat()}|WH-01", exact=True).first).to_be_visible()
    # The partition's panel names the run that built it (one of the backfill's) and the figures it recorded.
    materializations = production_stack.graphql(MATERIALIZATIONS, {"key": {"path": ["sku_velocity"]}})["assetOrError"]["assetMaterializations"]
    [built_by] = [m["runId"] for m in materializations if m["partition"] == f"{day.isoformat()}|WH-01"]
    assert built_by in nightly_history.runs_of_date[day]
    expect(page.get_by_text(built_by[:8], exact=True)).to_be_visible()
    expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()
    expect(page.get_by_text("skus_classified", exact=True)).to_be_visible()
    screenshot(page, "sku_velocity_partitions.png")


def test_the_failed_dead_letter_gate_shows_its_message(page, production_stack, nightly_history):
    from playwright.sync_api import expect

    executions = production_stack.graphql(
        CHECK_EXECUTIONS, {"key": {"path": ["validated_transactions"]}, "check": "dlq_rate_within_limit"}
    )["assetCheckExecutions"]
    [failed] = [e for e in executions if e["runId"] == nightly_history.failing_run_id]
    message = failed["evaluation"]["description"]

    open_page(page, f"{production_stack.ui}/assets/validated_transactions?view=checks&checkDetail=dlq_rate_within_limit")
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    expect(page.get_by_text(message, exact=True)).to_be_visible()
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
    screenshot(page, "dlq_gate_failed.png", full_page=True)
