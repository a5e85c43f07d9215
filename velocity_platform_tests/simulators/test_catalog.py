from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta

import numpy as np
import pytest

from velocity_platform.simulators.catalog import MALFORMED_KINDS, build_catalog, day_bounds_utc, generate_day

START = date(2026, 1, 1)


@pytest.fixture(scope="module")
def cat():
    return build_catalog(seed=7, skus=2000, start=START, days=120)


def test_catalog_is_deterministic_per_seed(cat):
    again = build_catalog(seed=7, skus=2000, start=START, days=120)
    assert cat.rows(range(2000)) == again.rows(range(2000))
    other = build_catalog(seed=8, skus=2000, start=START, days=120)
    assert cat.rows(range(50)) != other.rows(range(50))


def test_sku_master_shape(cat):
    rows = cat.rows(range(len(cat)))
    assert all(re.fullmatch(r"[A-Z0-9-]{4,20}", r["sku_id"]) for r in rows)
    assert len({r["sku_id"] for r in rows}) == 2000
    assert len({r["category"] for r in rows}) == 12
    assert 50 <= len({r["subcategory"] for r in rows}) <= 60
    cube = np.array([r["unit_cube_ft3"] for r in rows])
    assert 0.05 < np.median(cube) < 2.0
    for r in rows:
        assert r["case_qty"] in (6, 12, 24, 48)
        assert r["pallet_qty"] % r["case_qty"] == 0
        assert r["uoms"][0] == "EA" and set(r["uoms"]) <= {"EA", "CS", "PL"}
    assert 0.7 < np.mean(["CS" in r["uoms"] for r in rows]) < 0.95
    assert 0.05 < np.mean(["PL" in r["uoms"] for r in rows]) < 0.3
    introduced = np.array([date.fromisoformat(r["introduced_on"]) for r in rows])
    during = (introduced > START).mean()
    assert 0.03 < during < 0.07, "about 5% of SKUs appear during the history"
    assert introduced.max() <= cat.end


def test_day_is_deterministic_and_seed_sensitive(cat):
    d = date(2026, 2, 3)
    a = generate_day(7, cat, d, 3000).documents()
    b = generate_day(7, cat, d, 3000).documents()
    assert a == b
    c = generate_day(8, cat, d, 3000).documents()
    assert a != c


def test_document_shape_and_mix(cat):
    d = date(2026, 2, 4)  # a Wednesday
    batch = generate_day(7, cat, d, 20_000, malformed_rate=0.0)
    docs = batch.documents()
    lo, hi = day_bounds_utc(d, "Europe/London")
    types = Counter(doc["txn_type"] for doc in docs)
    assert 0.015 < types["RETURN"] / len(docs) < 0.025
    assert 0.002 < types["ADJUSTMENT"] / len(docs) < 0.009
    prefix = {"ORDER": "SO-20260204-", "RETURN": "RT-20260204-", "ADJUSTMENT": "AJ-20260204-"}
    order_lines = 0
    for doc in docs:
        assert doc["txn_id"].startswith(prefix[doc["txn_type"]])
        assert doc["event_ts"].endswith("Z") and doc["created_at"] >= doc["event_ts"]
        skus = [ln["sku_id"] for ln in doc["lines"]]
        assert len(skus) == len(set(skus)), "distinct SKUs within a document"
        assert [ln["line_no"] for ln in doc["lines"]] == list(range(1, len(skus) + 1))
        if doc["txn_type"] == "ORDER":
            order_lines += len(skus)
            assert 1 <= len(skus) <= 8
            assert all(ln["quantity"] > 0 for ln in doc["lines"])
        if doc["txn_type"] == "RETURN":
            assert all(ln["quantity"] > 0 for ln in doc["lines"])
    assert 2.6 < order_lines / types["ORDER"] < 3.4
    assert (batch.event_ts >= lo).all() and (batch.event_ts < hi).all()
    uoms = Counter(ln["uom"] for doc in docs for ln in doc["lines"])
    assert uoms["EA"] > 0.8 * sum(uoms.values()) and uoms["CS"] > 0 and 0 < uoms["PL"] < uoms["CS"]
    # Only allowed UoMs and only introduced SKUs.
    for doc in docs[:2000]:
        for ln in doc["lines"]:
            i = cat.index[ln["sku_id"]]
            assert ln["uom"] in cat.allowed_uoms(i)
            assert cat.introduced_on(i) <= d


def test_volume_weekday_shape_and_new_skus(cat):
    lines = {}
    for k in range(14):
        d = date(2026, 3, 2) + timedelta(days=k)  # Mon 2 March .. Sun 15 March
        b = generate_day(7, cat, d, 4000, malformed_rate=0.0)
        lines[d] = int(b.n_lines[b.txn_type == 0].sum())
    weekdays = [v for d, v in lines.items() if d.weekday() < 5]
    assert 3000 < np.mean(weekdays) < 5000  # lines_per_day ~ an average weekday's order lines
    assert lines[date(2026, 3, 8)] < 0.6 * lines[date(2026, 3, 4)], "Sunday is quiet"


def test_skew_top_20_percent_carry_most_lines(cat):
    counts = np.zeros(len(cat))
    for k in range(7):
        b = generate_day(7, cat, date(2026, 3, 2) + timedelta(days=k), 5000, malformed_rate=0.0)
        counts += np.bincount(b.sku, minlength=len(cat))
    top = np.sort(counts)[::-1]
    share = top[: len(cat) // 5].sum() / top.sum()
    assert share > 0.7


def test_popularity_drifts_so_abc_classes_change(cat):
    def a_class(first: date) -> set[int]:
        counts = np.zeros(len(cat))
        for k in range(28):
            b = generate_day(7, cat, first + timedelta(days=k), 3000, malformed_rate=0.0)
            doc_of_line = np.repeat(np.arange(b.n_docs), np.diff(b.line_start))
            counts += np.bincount(b.sku[b.txn_type[doc_of_line] == 0], minlength=len(cat))
        order = np.argsort(-counts, kind="stable")
        share_before = np.cumsum(counts[order]) - counts[order]
        return set(order[share_before / counts.sum() < 0.8].tolist())

    early, late = a_class(date(2026, 1, 5)), a_class(date(2026, 3, 30))
    changed = len(early ^ late)
    assert changed > 0.05 * len(early), "some SKUs change ABC class across the history"
    assert len(early & late) > 0.5 * len(early), "but most of the A class is stable"


def test_new_skus_appear_only_after_introduction(cat):
    new = [i for i in range(len(cat)) if cat.introduced_on(i) > START + timedelta(days=10)]
    assert new
    first_day = generate_day(7, cat, START, 8000, malformed_rate=0.0)
    assert not set(first_day.sku.tolist()) & set(new)
    last_days = set()
    for k in range(5):
        last_days |= set(generate_day(7, cat, cat.end - timedelta(days=k), 8000, malformed_rate=0.0).sku.tolist())
    assert set(new) & last_days


def test_malformed_lines_cover_every_kind(cat):
    kinds: Counter[str] = Counter()
    for k in range(3):
        b = generate_day(7, cat, date(2026, 2, 2) + timedelta(days=k), 4000, malformed_rate=0.01)
        kinds.update(b.fault_counts["malformed"])
        docs = b.documents()
        assert sum(len(doc["lines"]) for doc in docs) == b.total_lines
    assert set(kinds) == set(MALFORMED_KINDS)
    # Default rate is about 0.05% of lines.
    b = generate_day(7, cat, date(2026, 2, 2), 40_000)
    assert 0 < sum(b.fault_counts["malformed"].values()) < 0.002 * b.total_lines


def test_malformed_examples_look_malformed(cat):
    b = generate_day(7, cat, date(2026, 2, 2), 4000, malformed_rate=0.1)
    docs = b.documents(sorted(b.overrides))
    lines = [ln for doc in docs for ln in doc["lines"]]
    assert any(ln.get("sku_id") == "" for ln in lines)
    assert any(ln.get("quantity") == "abc" for ln in lines)
    assert any(ln.get("uom") == "BX" for ln in lines)
    assert any("line_no" not in ln for ln in lines)
    assert any(not doc["event_ts"].endswith("Z") for doc in docs)
    assert any(len({ln.get("line_no") for ln in doc["lines"]}) < len(doc["lines"]) for doc in docs)


def test_promotions_lift_a_handful_of_skus(cat):
    from velocity_platform.simulators.catalog import _promo_multiplier

    lifted = [int((_promo_multiplier(cat, START + timedelta(days=k)) > 2.0).sum()) for k in range(60)]
    assert 0 < np.mean(lifted) <= 15
    # A promotion lasts about a week: the lifted set on consecutive days mostly overlaps.
    a = set(np.flatnonzero(_promo_multiplier(cat, START + timedelta(days=30)) > 2.0).tolist())
    b = set(np.flatnonzero(_promo_multiplier(cat, START + timedelta(days=31)) > 2.0).tolist())
    assert a & b
