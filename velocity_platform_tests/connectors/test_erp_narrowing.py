"""A page the ERP breaks on every fetch costs only the documents that stay unreadable alone."""

import datetime as dt

import polars as pl
import pytest

from velocity_platform.connectors.erp import ErpClient
from velocity_platform.connectors.erp_pages import ReceivedPage, raw_lines_from_received, read_erp_page
from velocity_platform.connectors.http import RetryPolicy, UpstreamLimits, reset_guards
from velocity_platform.simulators.erp import ErpConfig
from velocity_platform_tests.simulators.conftest import erp_client

DAYS = [dt.date(2026, 1, 7), dt.date(2026, 1, 8)]
FAST = RetryPolicy(max_attempts=4, initial_wait_s=0.001, max_wait_s=0.01, max_retry_after_s=30.0)


@pytest.fixture(autouse=True)
def fresh_guards():
    reset_guards()
    yield
    reset_guards()


def test_a_broken_page_is_narrowed_down_to_the_documents_the_erp_broke():
    with erp_client(fault_rate_corrupt_page=0.5, default_limit=20, lines_per_day=600) as raw:
        simulator = raw.app.state.simulator
        client = ErpClient(str(raw.base_url), simulator.config.token, retry=FAST, limits=UpstreamLimits(requests_per_second=0), page_limit=16)
        for day in DAYS:
            pages = [
                ReceivedPage(p.source_batch, p.body, p.parsed, p.error, p.fetches, p.cursor, p.limit)
                for p in client.transaction_pages(day, "Europe/London", reader=read_erp_page)
            ]
            ingested = raw_lines_from_received(pages, day)
            broken = simulator.stats()["corrupt_documents"].get(day.isoformat(), {"documents": 0, "lines": 0})
            assert broken["documents"] > 0, "the seed should break a document on each day"
            # Every line the ERP holds arrived, except those of the documents it broke: no more, no fewer.
            assert ingested.lines_received + broken["lines"] == client.count_lines(day)
            assert len(ingested.dead_lettered_pages) == broken["documents"]
            dead = ingested.lines.filter(pl.col("page_error").is_not_null())
            assert dead["page_error"].str.contains("one document at cursor").all()
            assert dead["source_batch"].str.ends_with(":document").all(), "named as documents, not pages lost whole"
            assert dead["raw_payload"].str.contains(r"\\x00").all(), "the raw bytes, stray byte escaped"
            assert ingested.lines.filter(pl.col("page_error").is_null())["txn_id"].n_unique() == ingested.documents


def test_the_default_page_limit_splits_a_day_into_several_pages():
    """A page-level fault should cost a fraction of a day, not the day: the ERP's default day
    (the simulator's default volume) comes in at least four pages at the default limit."""
    from velocity_platform.settings import HttpSettings

    with erp_client(lines_per_day=ErpConfig().lines_per_day) as raw:
        client = ErpClient(str(raw.base_url), raw.app.state.simulator.config.token, page_limit=HttpSettings().page_limit)
        pages = list(client.transaction_pages(DAYS[0], "Europe/London", reader=read_erp_page))
        documents = sum(p.parsed.documents.height for p in pages)
        assert len(pages) >= 4 and max(p.parsed.documents.height for p in pages) <= documents / 4


def test_a_long_listing_asks_for_larger_pages_as_it_goes():
    """Pages start at page_limit and double every PAGES_PER_DOUBLING pages up to page_limit_max,
    so a large day is not held at the request ceiling; every document still arrives once."""
    from velocity_platform.connectors.http import PAGES_PER_DOUBLING

    with erp_client(lines_per_day=3000) as raw:
        client = ErpClient(
            str(raw.base_url), raw.app.state.simulator.config.token, retry=FAST,
            limits=UpstreamLimits(requests_per_second=0), page_limit=5, page_limit_max=20,
        )
        pages = list(client.transaction_pages(DAYS[0], "Europe/London", reader=read_erp_page))
        asked = [p.limit for p in pages]
        assert len(pages) > 2 * PAGES_PER_DOUBLING, "the day should outlast two doublings"
        assert asked[:PAGES_PER_DOUBLING] == [5] * PAGES_PER_DOUBLING
        assert asked[PAGES_PER_DOUBLING : 2 * PAGES_PER_DOUBLING] == [10] * PAGES_PER_DOUBLING
        assert set(asked[2 * PAGES_PER_DOUBLING :]) == {20}, "never past page_limit_max"
        received = [ReceivedPage(p.source_batch, p.body, p.parsed, p.error, p.fetches, p.cursor, p.limit) for p in pages]
        ingested = raw_lines_from_received(received, DAYS[0])
        assert ingested.lines_received == client.count_lines(DAYS[0]), "every line once, none twice"
        assert ingested.lines["txn_id"].n_unique() == ingested.documents
