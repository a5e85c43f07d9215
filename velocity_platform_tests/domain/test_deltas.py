"""Delta classification: ERP records committed between ticks -> late arrivals, new SKUs, spikes."""

import datetime as dt

import orjson
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity_platform.connectors.erp_pages import parse_erp_page
from velocity_platform.domain.validation import parse_quantity, parse_utc_timestamp
from velocity_platform.domain.deltas import (
    DELTA_LINES_SCHEMA,
    SpikePolicy,
    candidate_keys,
    demand_spikes,
    outside_range,
    late_arrivals,
    spike_baseline,
    spike_baseline_sql,
    unknown_skus,
)

TZ = "Europe/London"
HELD_SCHEMA = {"business_date": pl.Date, "txn_id": pl.String}


def doc(txn_id, event_ts, created_at, lines=..., txn_type="ORDER"):
    record = {"txn_id": txn_id, "txn_type": txn_type, "customer_id": "C00001", "event_ts": event_ts, "created_at": created_at}
    if lines is not ...:
        record["lines"] = lines
    return record


def line(no, sku, qty, uom="EA"):
    return {"line_no": no, "sku_id": sku, "quantity": qty, "uom": uom}


def documents(*records) -> pl.DataFrame:
    return parse_erp_page(orjson.dumps({"records": list(records), "next_cursor": None}))


def delta_lines(documents: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """ERP documents -> one row per line in DELTA_LINES_SCHEMA, as the exception service records
    the lines of earlier dates for the delta sensor."""
    line = pl.col("lines")
    return (
        documents.select(
            pl.col("txn_id").str.strip_chars(),
            pl.col("txn_type").str.strip_chars().str.to_uppercase(),
            parse_utc_timestamp("created_at").alias("created_at"),
            parse_utc_timestamp("event_ts").dt.convert_time_zone(timezone).dt.date().alias("business_date"),
            pl.col("lines"),
        )
        .explode("lines")
        .with_columns(
            line.struct.field("sku_id").str.strip_chars().alias("sku_id"),
            line.struct.field("quantity").alias("quantity"),
            line.struct.field("uom").str.strip_chars().str.to_uppercase().alias("uom"),
        )
        .with_columns(parse_quantity("quantity").alias("quantity"))
        .select(list(DELTA_LINES_SCHEMA))
        .cast(DELTA_LINES_SCHEMA)
    )


def test_late_arrivals_are_the_documents_a_built_partition_does_not_hold():
    d1, d2, unbuilt = dt.date(2026, 2, 5), dt.date(2026, 2, 6), dt.date(2026, 2, 7)
    lines = delta_lines(
        documents(
            doc("SO-A", "2026-02-05T10:00:00Z", "2026-02-07T09:00:00Z", [line(1, "SKU-000001", 1), line(2, "SKU-000002", 1)]),
            doc("SO-B", "2026-02-05T11:00:00Z", "2026-02-07T09:30:00Z", [line(1, "SKU-000001", 1)]),
            doc("SO-C", "2026-02-06T11:00:00Z", "2026-02-07T09:40:00Z", [line(1, "SKU-000003", 1)]),
            doc("SO-D", "2026-02-07T11:00:00Z", "2026-02-07T11:00:05Z", [line(1, "SKU-000003", 1)]),
        ),
        TZ,
    )
    built = [d1, d2]
    keys = candidate_keys(lines, built)
    assert sorted(keys.rows()) == [(d1, "SO-A"), (d1, "SO-B"), (d2, "SO-C")]
    # The partition of d2 already holds SO-C (committed just before its pull); d1 holds neither.
    held = pl.DataFrame({"business_date": [d2], "txn_id": ["SO-C"]}, schema=HELD_SCHEMA)
    late = late_arrivals(lines, built, held)
    assert late.select("business_date", "documents", "lines").rows() == [(d1, 2, 3)]
    assert late["first_committed_at"][0] == dt.datetime(2026, 2, 7, 9, tzinfo=dt.UTC)
    assert late["last_committed_at"][0] == dt.datetime(2026, 2, 7, 9, 30, tzinfo=dt.UTC)
    assert unbuilt not in late["business_date"].to_list()


def test_the_fingerprint_depends_on_which_records_are_late_not_on_their_order():
    day = dt.date(2026, 2, 5)
    records = [doc(f"SO-{i}", "2026-02-05T10:00:00Z", f"2026-02-07T09:0{i}:00Z", [line(1, "SKU-000001", 1)]) for i in range(4)]
    empty = pl.DataFrame(schema=HELD_SCHEMA)
    forward = late_arrivals(delta_lines(documents(*records), TZ), [day], empty)["fingerprint"][0]
    backward = late_arrivals(delta_lines(documents(*reversed(records)), TZ), [day], empty)["fingerprint"][0]
    fewer = late_arrivals(delta_lines(documents(*records[:3]), TZ), [day], empty)["fingerprint"][0]
    assert forward == backward != fewer


def test_a_document_without_a_txn_id_is_late_data_for_its_day():
    day = dt.date(2026, 2, 5)
    lines = delta_lines(documents(doc(None, "2026-02-05T10:00:00Z", "2026-02-07T09:00:00Z", [line(1, "SKU-000001", 1)])), TZ)
    late = late_arrivals(lines, [day], pl.DataFrame(schema=HELD_SCHEMA))
    # Counted as one (unnamed) document; the nightly validation dead-letters its line.
    assert late.select("business_date", "documents", "lines").rows() == [(day, 1, 1)]


def test_only_well_formed_unknown_skus_are_new():
    lines = delta_lines(
        documents(
            doc("SO-1", "2026-02-05T10:00:00Z", "2026-02-07T09:00:00Z",
                [line(1, "SKU-009999", 1), line(2, "sku-000001", 1), line(3, "AB", 1), line(4, "SKU-000001", 1)]),
            doc("SO-2", "2026-02-05T10:00:00Z", "2026-02-07T09:00:00Z", [line(1, "SKU-009999", 1), line(2, "SKU-000777", 1)]),
        ),
        TZ,
    )
    assert unknown_skus(lines, pl.DataFrame({"sku_id": ["SKU-000001"]})) == ["SKU-000777", "SKU-009999"]


MASTER = pl.DataFrame(
    {"sku_id": ["SKU-A001", "SKU-B002", "SKU-C003", "SKU-D004"], "case_qty": [12, 6, 10, 10], "pallet_qty": [480, 240, 400, 400]}
)


def baseline(**rows: tuple[float, int]) -> pl.DataFrame:
    """sku_id=(peak_day_units, days_sold) over the 90 days before."""
    return pl.DataFrame(
        {"sku_id": list(rows), "peak_day_units": [r[0] for r in rows.values()], "days_sold": [r[1] for r in rows.values()]},
        schema={"sku_id": pl.String, "peak_day_units": pl.Float64, "days_sold": pl.Int64},
    )


def test_spikes_count_ordered_eaches_against_the_skus_own_peak_day():
    lines = delta_lines(
        documents(
            # SKU-A001: 3 cases = 36 eaches against a peak day of 10 -> 3.6x.
            doc("SO-1", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, "SKU-A001", 3, "CS")]),
            # Returns and adjustments are not demand.
            doc("RT-1", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, "SKU-A001", 50)], txn_type="RETURN"),
            doc("AJ-1", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, "SKU-A001", 50)], txn_type="ADJUSTMENT"),
            # SKU-B002: 30 eaches against a peak day of 10 -> exactly 3x: not above.
            doc("SO-2", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, "SKU-B002", 30)]),
            # SKU-C003: sold on only 2 days before: no range of its own yet, not judged.
            doc("SO-3", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, "SKU-C003", 2500)]),
            # SKU-D004: never sold before (absent from the baseline): a launch, not a spike.
            doc("SO-4", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, "SKU-D004", 900), line(2, "SKU-D004", -5)]),
        ),
        TZ,
    )
    rates = baseline(**{"SKU-A001": (10.0, 40), "SKU-B002": (10.0, 6), "SKU-C003": (1.0, 2)})
    spikes = demand_spikes(lines, MASTER, rates, SpikePolicy(3.0, 20.0, 5))
    assert spikes.rows() == [("SKU-A001", 36.0, 10.0, 3.6)]
    # the defaults ask for 30x the peak day and 500 eaches: 36 is neither
    assert demand_spikes(lines, MASTER, rates).is_empty()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["SKU-A001", "SKU-B002", "SKU-C003"]),
            st.integers(-3, 40),
            st.sampled_from(["EA", "CS", "PL", "BX"]),
            st.sampled_from(["ORDER", "ORDER", "RETURN"]),
        ),
        max_size=30,
    ),
    st.floats(0.5, 6.0),
    st.floats(0.0, 50.0),
    st.integers(1, 8),
)
def test_spikes_match_a_line_by_line_reference(rows, multiple, min_units, min_days_sold):
    records = [
        doc(f"SO-{i}", "2026-02-05T10:00:00Z", "2026-02-06T09:00:00Z", [line(1, sku, qty, uom)], txn_type=kind)
        for i, (sku, qty, uom, kind) in enumerate(rows)
    ]
    peaks = {"SKU-A001": (30.0, 7), "SKU-B002": (12.0, 3)}
    policy = SpikePolicy(multiple, min_units, min_days_sold)
    spikes = demand_spikes(delta_lines(documents(*records), TZ), MASTER, baseline(**peaks), policy)
    per_uom = {sku: {"EA": 1, "CS": c, "PL": p} for sku, c, p in MASTER.iter_rows()}
    units: dict[str, float] = {}
    for sku, qty, uom, kind in rows:
        if kind == "ORDER" and qty > 0 and uom in per_uom[sku]:
            units[sku] = units.get(sku, 0.0) + qty * per_uom[sku][uom]
    expected = set()
    for sku, total in units.items():
        if sku not in peaks:
            continue
        peak, days_sold = peaks[sku]
        if days_sold >= min_days_sold and total >= min_units and total > multiple * peak:
            expected.add((sku, total))
    assert set(zip(spikes["sku_id"], spikes["units"])) == expected


def test_the_spike_baseline_is_the_same_from_sql_and_from_a_frame(tmp_path):
    import duckdb

    day = dt.date(2026, 2, 5)
    daily = pl.DataFrame(
        {
            "business_date": [day, day - dt.timedelta(days=3), day - dt.timedelta(days=89), day - dt.timedelta(days=90), day],
            "sku_id": ["SKU-A001", "SKU-A001", "SKU-A001", "SKU-A001", "SKU-B002"],
            "units": [5.0, 12.0, 7.0, 400.0, 0.0],  # D-90 lies outside the 90 days ending D
        }
    )
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE TABLE daily AS SELECT * FROM daily")
        from_sql = con.execute(spike_baseline_sql("daily", day)).pl()
    from_frame = spike_baseline(daily, day)
    assert from_sql.sort("sku_id").rows() == from_frame.sort("sku_id").rows() == [("SKU-A001", 12.0, 3), ("SKU-B002", 0.0, 0)]


def test_the_days_running_total_is_judged_not_one_read():
    """The exception service adds each read's eaches to the day's total: two orders of 300 eaches
    of a SKU whose largest day was 10 are no spike alone (under 500) and one together."""
    baseline = pl.DataFrame({"sku_id": ["SKU-A001"], "peak_day_units": [10.0], "days_sold": [6]})
    policy = SpikePolicy(30.0, 500.0, 5)
    one_read = pl.DataFrame({"sku_id": ["SKU-A001"], "units": [300.0]})
    assert outside_range(one_read, baseline, policy).is_empty()
    day_so_far = pl.DataFrame({"sku_id": ["SKU-A001"], "units": [600.0]})
    assert outside_range(day_so_far, baseline, policy).rows() == [("SKU-A001", 600.0, 10.0, 60.0)]
    # Sold on only four of the 90 days: no range yet, never a spike.
    assert outside_range(day_so_far, baseline.with_columns(pl.lit(4).alias("days_sold")), policy).is_empty()
