"""Fixtures: simulators served over real loopback HTTP (BackgroundServer + httpx)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import httpx
import pytest

from velocity_platform.simulators.erp import ErpConfig, create_erp_app
from velocity_platform.simulators.serve import BackgroundServer
from velocity_platform.simulators.wms import WmsConfig, create_wms_app

START = date(2026, 1, 1)
DAYS = 30


@contextmanager
def erp_client(**overrides: Any) -> Iterator[httpx.Client]:
    cfg = ErpConfig(**{"start": START, "days": DAYS, "skus": 500, "lines_per_day": 1500, **overrides})
    app = create_erp_app(cfg)
    with BackgroundServer(app) as srv, httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {cfg.token}"}, timeout=10.0
    ) as client:
        client.app = app  # type: ignore[attr-defined]  # tests reach the simulator through it
        yield client


@contextmanager
def wms_client(**overrides: Any) -> Iterator[httpx.Client]:
    cfg = WmsConfig(**{"start": START, "days": DAYS, "skus": 500, **overrides})
    app = create_wms_app(cfg)
    with BackgroundServer(app) as srv, httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {cfg.token}"}, timeout=10.0
    ) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


def pull_all(client: httpx.Client, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Follow next_cursor to the end; returns the pages."""
    pages = []
    cursor = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        resp = client.get(path, params=q)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body["records"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture(scope="module")
def erp() -> Iterator[httpx.Client]:
    with erp_client() as client:
        yield client


@pytest.fixture(scope="module")
def wms() -> Iterator[httpx.Client]:
    with wms_client() as client:
        yield client
