"""When labels become known (data.schema.label_time, data.policy.label_delay) and entity ids as strings:
the sessions table's end_time and label_known, their validation, and the same results from both engines."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from functools import partial

import polars as pl
import pytest

from seqfraud import schema as S
from seqfraud.data.events import MIN_DATED_LABELS, DataValidationError, load_events
from seqfraud.errors import ConfigError
from seqfraud.preprocess import PolarsEngine
from seqfraud.schema import Schema
from tests.test_validation import fails as fails_with

T0 = datetime(2024, 1, 1)
SCHEMA = Schema(entities=("device_id", "ip"), label_time="known_at")
PLAIN = Schema(entities=("device_id", "ip"))  # no label time
fails = partial(fails_with, schema=SCHEMA)
HOUR_US = 3_600_000_000


def us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1)) // timedelta(microseconds=1)


START = {"s1": us(T0), "s2": us(T0 + timedelta(seconds=60)), "s3": us(T0 + timedelta(seconds=120))}
END = {"s1": us(T0 + timedelta(seconds=5)), "s2": us(T0 + timedelta(seconds=61)), "s3": START["s3"]}
KNOWN_S2 = T0 + timedelta(days=2)


def events(**overrides) -> pl.DataFrame:
    """s1 (2 events, label 0), s2 (2 events, label 1), s3 (1 event, label 0); integer and string entities."""
    cols = {
        "session_id": ["s1", "s1", "s2", "s2", "s3"],
        "timestamp": [T0 + timedelta(seconds=s) for s in (0, 5, 60, 61, 120)],
        "event_type": ["view", "pay", "view", "pay", "view"],
        "device_id": [7, 7, 12, None, 3],
        "ip": ["1.2.3.4", None, "1.2.3.4", "5.6.7.8", "5.6.7.8"],
        "label": [0, 0, 1, 1, 0],
    }
    return pl.DataFrame(cols).with_columns(**overrides)


def labels(known_at: list) -> pl.DataFrame:
    return pl.DataFrame({"session_id": ["s1", "s2", "s3"], "label": [0, 1, 0], "known_at": known_at})


def write(df: pl.DataFrame, path) -> str:
    df.write_csv(path) if path.suffix == ".csv" else df.write_parquet(path)
    return str(path)


def known(loaded) -> dict[str, int | None]:
    return dict(loaded.sessions.select(S.SESSION_ID, S.LABEL_KNOWN).iter_rows())


# ---------------------------------------------------------------- label_known


@pytest.mark.parametrize("encoding", ["datetime", "rfc3339_csv", "epoch_ms", "day_csv", "date"])
def test_label_known_from_a_label_table_column(encoding, tmp_path, caplog):
    ev = events().drop("label")
    if encoding == "datetime":
        table = labels([None, KNOWN_S2, None])
    elif encoding == "rfc3339_csv":  # an offset is honoured: 02:00+02:00 is midnight UTC
        table = labels([None, "2024-01-03 02:00:00+02:00", None])
    elif encoding in ("day_csv", "date"):  # a chargeback's day counts from its end, the next midnight
        day = KNOWN_S2.date() - timedelta(days=1)
        table = labels([None, day.isoformat() if encoding == "day_csv" else day, None])
    else:  # integer epochs are read in the events' unit
        ev = ev.with_columns(pl.col("timestamp").dt.epoch("ms"))
        table = labels([None, us(KNOWN_S2) // 1000, None])
    ext = "csv" if encoding.endswith("_csv") else "parquet"
    loaded = load_events(write(ev, tmp_path / "e.parquet"), SCHEMA, write(table, tmp_path / f"labels.{ext}"))
    assert known(loaded) == {"s1": None, "s2": us(KNOWN_S2), "s3": None}
    assert dict(loaded.sessions.select(S.SESSION_ID, S.END_TIME).iter_rows()) == END
    assert loaded.sessions.schema[S.END_TIME] == pl.Int64 == loaded.sessions.schema[S.LABEL_KNOWN]
    assert loaded.report["labels_never_known"] == 2
    # Said, not only counted: a chargeback date on frauds alone left every negative unknown (dogfood 21).
    assert "column 'known_at': 2 of 3 label(s) (2 negative) have no label time" in caplog.text


def test_a_chargeback_dated_after_the_delay_reads_as_legitimate_until_then(tmp_path):
    """A chargeback file (frauds alone) whose fraud is dated after its session's end plus label_delay: the session
    reads as a known legitimate one from then until its chargeback, as the service reads it before the chargeback
    comes; batch reads had it unknown until then, reading the coming chargeback (dogfood 160)."""
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    frauds = write(labels([None, KNOWN_S2, None]).filter(pl.col("label") == 1), tmp_path / "frauds.parquet")
    for delay, legit in (("1d", END["s2"] + 86_400_000_000), ("3d", None)):
        loaded = load_events(ev, SCHEMA, frauds, on_unlabeled="negative", label_delay=delay)
        got = loaded.sessions.filter(pl.col(S.SESSION_ID) == "s2").select(
            S.LABEL, S.LABEL_KNOWN, S.LEGIT_FROM
        )
        assert got.row(0) == (1, us(KNOWN_S2), legit)
        assert loaded.report.get("labels_known_after_delay") == (1 if legit else None)
    # A table of every label lists its legitimate sessions itself: none reads as one before its label.
    table = write(labels([None, KNOWN_S2, None]), tmp_path / "all.parquet")
    assert load_events(ev, SCHEMA, table, label_delay="1d").sessions[S.LEGIT_FROM].null_count() == 3


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_label_table_whose_label_column_is_named_otherwise_is_no_list_of_frauds(kind, tmp_path, caplog):
    """Under the negative policy a table without the label column lists frauds; one whose 0/1 column bears another
    name read every row as a fraud, zeros too, without a word (dogfood 169: 1,115 training frauds for 101).
    Refused where the name is close to the label's (a misspelt data.schema.label), said otherwise: a chargeback
    file may hold a 0/1 flag of its own, and a column of zeros, text or lists reads as before (review 172)."""
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    table = labels([None, KNOWN_S2, None])
    load = partial(load_events, ev, SCHEMA, on_unlabeled="negative", label_delay="1d")
    with pytest.raises(DataValidationError) as e:
        load(write(table.rename({"label": "labels"}), tmp_path / f"l.{kind}"))
    assert (
        f"l.{kind}: no column 'label' (data.schema.label), so under data.policy.on_unlabeled=negative"
        in str(e.value)
    )
    assert "column(s) ['labels'] hold 0 and 1 alone (did you mean 'labels'?): if it holds the labels" in str(
        e.value
    )
    loaded = load(write(table.rename({"label": "is_fraud"}), tmp_path / f"w.{kind}"))
    assert (
        "column(s) ['is_fraud'] hold 0 and 1 alone: if one holds the labels, rename it to 'label'"
        in caplog.text
    )
    assert loaded.sessions[S.LABEL].to_list() == [1, 1, 1]  # as said: every row a fraud
    caplog.clear()
    frauds = table.filter(pl.col("label") == 1).drop("label")
    frauds = frauds.with_columns(reason=pl.lit("10.4"), prior_disputes=pl.lit(0))
    if kind == "parquet":
        frauds = frauds.with_columns(codes=pl.lit(["10.4", "13.1"]))
    loaded = load(write(frauds, tmp_path / f"f.{kind}"))
    assert dict(loaded.sessions.select(S.SESSION_ID, S.LABEL).iter_rows()) == {"s1": 0, "s2": 1, "s3": 0}
    assert "hold 0 and 1 alone" not in caplog.text


def test_a_label_cutoff_reads_a_fraud_charged_back_after_it_as_legitimate_under_the_negative_policy():
    """A retrain at the cutoff, given a chargeback file, read a fraud whose chargeback had not come though its
    delay had passed as legitimate; one whose delay had not passed is held back, as every unfinal session is."""
    from seqfraud.data.split import labels_known_by

    day = 86_400_000_000
    sessions = pl.DataFrame(
        {
            S.SESSION_ID: ["late", "unfinal", "known", "legit", "dated"],
            S.SPLIT: ["train"] * 5,
            S.END_TIME: [0, 9 * day, 0, 0, 0],
            S.LABEL: pl.Series([1, 1, 1, 0, 1], dtype=pl.Int8),
            S.LABEL_KNOWN: [20 * day, 20 * day, 5 * day, 2 * day, 20 * day],
            S.LEGIT_FROM: pl.Series([2 * day, 11 * day, None, None, None], dtype=pl.Int64),
        }
    )
    cutoff = "1970-01-11"  # day 10
    got, report = labels_known_by(sessions, cutoff, 30 * day, 2 * day)
    assert got[S.LABEL].to_list() == [0, None, 1, 0, None]
    assert report["legitimate_at_cutoff"] == {"train": {"sessions": 1, "positives": 1}}
    assert report["labels_known_after_cutoff"] == {"train": {"sessions": 2, "positives": 2}}
    # A cutoff past the test start counts what a retrain at the test start could not have read: "unfinal" read as
    # legitimate from day 11, after a test start at day 10.5 (dogfood 164).
    _, report = labels_known_by(sessions, "1970-01-13", 10 * day + day // 2, 2 * day)
    assert report["legitimate_at_cutoff"] == {"train": {"sessions": 2, "positives": 2}}
    assert report["labels_known_after_test_start"] == {"train": {"sessions": 1, "positives": 1}}


def test_integer_label_times_behind_empty_csv_rows_are_still_integers(tmp_path):
    """Negatives seldom have a label time: the first 10,000 rows may all be empty."""
    ev = write(
        events().drop("label").with_columns(pl.col("timestamp").dt.epoch("ms")), tmp_path / "e.parquet"
    )
    n = 10_001
    table = pl.DataFrame(
        {
            "session_id": ["s1"] * n + ["s2", "s3"],
            "label": [0] * n + [1, 0],
            "known_at": pl.Series([None] * n + [us(KNOWN_S2) // 1000, None], dtype=pl.Int64),
        }
    )
    loaded = load_events(ev, SCHEMA, write(table, tmp_path / "labels.csv"))
    assert known(loaded) == {"s1": None, "s2": us(KNOWN_S2), "s3": None}


def test_label_known_from_label_delay(tmp_path):
    ev = write(events(), tmp_path / "e.parquet")
    loaded = load_events(ev, PLAIN, label_delay="2h")
    assert known(loaded) == {s: end + 2 * HOUR_US for s, end in END.items()}
    assert loaded.report["labels_never_known"] == 0


def test_label_delay_is_the_fallback_where_a_label_time_is_null(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels([None, KNOWN_S2, None]), tmp_path / "labels.parquet")
    loaded = load_events(ev, SCHEMA, lab, label_delay="1h")
    assert known(loaded) == {"s1": END["s1"] + HOUR_US, "s2": us(KNOWN_S2), "s3": END["s3"] + HOUR_US}
    assert loaded.report["labels_never_known"] == 0


def test_label_time_on_the_events(tmp_path):
    ev = write(events(known_at=pl.Series([None, None, KNOWN_S2, KNOWN_S2, None])), tmp_path / "e.parquet")
    loaded = load_events(ev, SCHEMA)
    assert known(loaded) == {"s1": None, "s2": us(KNOWN_S2), "s3": None}
    assert loaded.report["labels_never_known"] == 2
    assert "known_at" not in loaded.events.collect_schema()  # nor any working column of it
    assert not [c for c in loaded.events.collect_schema() if c.startswith("__label")]


def test_nothing_configured_changes_nothing(tmp_path):
    loaded = load_events(write(events(), tmp_path / "e.parquet"), PLAIN)
    assert known(loaded) == {"s1": None, "s2": None, "s3": None}
    assert "labels_never_known" not in loaded.report
    assert loaded.sessions.columns == [
        S.SESSION_ID,
        S.START_TIME,
        S.END_TIME,
        "n_events",
        "n_tied",
        "n_whole_seconds",
        S.FIRST_TYPE,
        S.LABEL,
        S.LABEL_KNOWN,
        S.LEGIT_FROM,
    ]


def test_the_polars_engine_passes_the_label_delay_policy(tmp_path):
    data = {"events": write(events(), tmp_path / "e.parquet"), "policy": {"label_delay": "1h"}}
    assert known(PolarsEngine().load(data, PLAIN)) == {s: end + HOUR_US for s, end in END.items()}


# ---------------------------------------------------------------- validation


def test_label_table_label_time_that_does_not_parse(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels(["2024-01-03T00:00:00Z", "03/01/2024", "2024-02-30"]), tmp_path / "labels.csv")
    fails(
        ev,
        lab,
        "column 'known_at': 2 row(s) have a label time that does not parse",
        "or a date alone (2026-03-01, read as the end of that day)",
        "RFC 3339",
        "(first: '03/01/2024', session 's2')",
        labels=lab,
    )


def test_label_table_label_time_outside_the_range(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels([None, datetime(2150, 1, 1), None]), tmp_path / "labels.parquet")
    fails(
        ev,
        lab,
        "column 'known_at': 1 row(s) have a label time outside the plausible range",
        "(first: 2150-01-01 00:00:00, session 's2')",
        labels=lab,
    )
    # A date alone inside the range whose day ends past it: said why (dogfood 126).
    lab = write(labels([None, "2099-12-31", None]), tmp_path / "dated.parquet")
    fails(
        ev,
        lab,
        "outside the plausible range 1990-01-01 to 2100-01-01 (data.schema.timestamp_range); a date alone "
        "counts from the end of its day, the next midnight UTC",
        "(first: '2099-12-31', session 's2')",
        labels=lab,
    )


def test_label_time_on_events_that_does_not_parse_or_is_out_of_range(tmp_path):
    bad = write(events(known_at=pl.Series([None, None, "never", "never", None])), tmp_path / "a.parquet")
    fails(
        bad,
        bad,
        "column 'known_at': 2 row(s) have a label time that does not parse",
        "(first: 'never', session 's2')",
    )
    old = write(events(known_at=pl.Series([T0, T0, datetime(1950, 1, 1), None, T0])), tmp_path / "b.parquet")
    fails(
        old,
        old,
        "column 'known_at': 1 row(s) have a label time outside the plausible range",
        "(first: 1950-01-01 00:00:00, session 's2')",
    )


def test_bad_label_times_of_every_kind_are_named_in_one_error(tmp_path):
    """Unparsed and out-of-range label times, in a label table or on the events beside bad timestamps and labels,
    are named together: each kind came a run at a time (review 162)."""
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels(["03/01/2024", "2150-01-01T00:00:00Z", None]), tmp_path / "labels.csv")
    fails(
        ev,
        lab,
        "column 'known_at': 1 row(s) have a label time that does not parse",
        "; column 'known_at': 1 row(s) have a label time outside the plausible range",
        labels=lab,
    )
    on_events = events(
        known_at=pl.Series([None, None, "never", "never", None]),
        timestamp=pl.Series(["2024-01-01T00:00:00Z", "soon", *["2024-01-01T00:01:00Z"] * 3]),
        label=pl.Series([0, 0, 1, 1, 2]),
    )
    bad = write(on_events, tmp_path / "bad.parquet")
    fails(
        bad,
        bad,
        "column 'timestamp': 1 row(s) have a timestamp that does not parse",
        "; column 'label': 1 row(s) have a label that is not 0/1",
        "; column 'known_at': 2 row(s) have a label time that does not parse",
    )


def test_label_time_on_events_not_constant_within_a_session(tmp_path):
    times = [KNOWN_S2, KNOWN_S2 + timedelta(hours=1), KNOWN_S2, KNOWN_S2, KNOWN_S2]
    path = write(events(known_at=pl.Series(times)), tmp_path / "e.parquet")
    fails(path, path, "column 'known_at': 2 row(s) belong to 1 session(s) whose label time is not constant")
    path = write(events(known_at=pl.Series([None, None, KNOWN_S2, None, None])), tmp_path / "f.parquet")
    fails(path, path, "column 'known_at': 1 row(s) have a null label time inside 1 session(s)", "=any reads")
    # A legitimate session's: on_mixed_labels=any would refuse it alike, so it is not offered (review 52).
    path = write(events(known_at=pl.Series([KNOWN_S2, None, None, None, None])), tmp_path / "g.parquet")
    assert "on_mixed_labels" not in fails(path, path, "1 row(s) have a null label time inside 1 session(s)")


def test_a_fraud_session_under_any_is_known_from_its_first_fraud_events_label_time(tmp_path, caplog):
    """A log that flags and dates its fraudulent transactions alone: under on_mixed_labels=any their session is
    fraud, known from the earliest of their label times; the others' null times, and a later chargeback of
    another fraud event, do not refuse it (they did). A legitimate session's label times stay one per session,
    and a history reading the labels off the same events agrees."""
    from seqfraud.data.events import read_labels

    rows = events(
        label=pl.Series([0, 0, 1, 1, 0]),
        known_at=pl.Series([None, None, KNOWN_S2 + timedelta(days=3), KNOWN_S2, None]),
    )
    extra = (
        rows.filter(pl.col("session_id") == "s1")
        .head(1)
        .with_columns(label=pl.lit(1, pl.Int64), known_at=pl.lit(KNOWN_S2))
    )
    path = write(
        pl.concat([rows, extra.with_columns(timestamp=pl.lit(T0 + timedelta(seconds=9)))]),
        tmp_path / "e.parquet",
    )
    dated = write(rows, tmp_path / "dated.parquet")
    fails(dated, dated, "whose label time is not constant", "data.policy.on_mixed_labels=any reads")
    loaded = load_events(path, SCHEMA, on_mixed_labels="any")
    assert known(loaded) == {"s1": us(KNOWN_S2), "s2": us(KNOWN_S2), "s3": None}
    table, _ = read_labels(path, SCHEMA, timestamp_unit="us", any_event=True)
    assert dict(table.select(S.SESSION_ID, S.LABEL_TIME_US).iter_rows()) == {
        "s1": us(KNOWN_S2),
        "s2": us(KNOWN_S2),
        "s3": None,
    }
    two_days = write(
        rows.with_columns(known_at=pl.Series([KNOWN_S2, None, None, KNOWN_S2, None])), tmp_path / "f.parquet"
    )
    said = fails(
        two_days, two_days, "1 row(s) have a null label time inside 1 session(s)", on_mixed_labels="any"
    )
    assert "on_mixed_labels=any reads" not in said  # it was told to set what it had set (dogfood 51)
    # A label time on an event labelled 0 of a fraud session is not read: said (it was dropped unsaid: dogfood 51).
    unread = events(
        label=pl.Series([0, 1, 1, 1, 0]),
        known_at=pl.Series([T0 - timedelta(days=9), KNOWN_S2, KNOWN_S2, KNOWN_S2, None]),
    )
    path = write(unread, tmp_path / "unread.parquet")
    with caplog.at_level("WARNING", logger="seqfraud.data.events"):
        assert known(load_events(path, SCHEMA, on_mixed_labels="any"))["s1"] == us(KNOWN_S2)
    assert "1 event row(s) labelled 0 in fraud sessions carry a label time, which is not read" in caplog.text


def test_labels_read_off_events_leave_a_session_without_one_unlabelled(tmp_path):
    """A history whose events carry the labels holds recent sessions with none yet: read off the events, such a
    session is unlabelled, as training reads it (every label table read off events with one was refused, "leave
    sessions without a label out of the label table", which events cannot do); one labelled in part is refused,
    as training refuses it."""
    from seqfraud.data.events import DataValidationError, read_labels

    rows = events(
        label=pl.Series([0, 0, 1, 1, None]), known_at=pl.Series([None, None, KNOWN_S2, KNOWN_S2, None])
    )
    path = write(rows, tmp_path / "e.parquet")
    table, _ = read_labels(path, SCHEMA, timestamp_unit="us", rows_are_events=True)
    assert dict(table.select(S.SESSION_ID, S.LABEL).iter_rows()) == {"s1": 0, "s2": 1}
    partial = write(rows.with_columns(label=pl.Series([0, None, 1, 1, None])), tmp_path / "p.parquet")
    with pytest.raises(
        DataValidationError, match="1 row\\(s\\) have a null label inside 1 otherwise labelled"
    ):
        read_labels(partial, SCHEMA, timestamp_unit="us", rows_are_events=True)
    with pytest.raises(DataValidationError, match="leave sessions without a label out of the label table"):
        read_labels(path, SCHEMA, timestamp_unit="us")  # a label table's row without a label is refused still


def test_label_time_before_the_session_starts(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels([T0 - timedelta(days=1), KNOWN_S2, None]), tmp_path / "labels.parquet")
    fails(ev, lab, "column 'known_at': 1 row(s) have a label time before the first event", labels=lab)
    # Which session, and both times: the count alone left the label table to be searched.
    fails(
        ev,
        lab,
        "(1 session(s); first: session 's1', label time 2023-12-31T00:00:00+00:00, first event "
        "2024-01-01T00:00:00+00:00)",
        labels=lab,
    )
    times = [T0, T0, KNOWN_S2, KNOWN_S2, T0]  # s3 starts 2 minutes after T0
    on_events = write(events(known_at=pl.Series(times)), tmp_path / "on.parquet")
    fails(on_events, on_events, "column 'known_at': 1 row(s) have a label time before the first event")
    # Under on_mixed_labels=any, the rows that carry one: a fraud session's undated events were counted too.
    dated_fraud = events(label=pl.Series([0, 0, 1, 0, 0]), known_at=pl.Series([None, None, T0, None, None]))
    path = write(dated_fraud, tmp_path / "any.parquet")
    fails(
        path,
        path,
        "column 'known_at': 1 row(s) have a label time before the first event",
        on_mixed_labels="any",
    )


def test_a_positive_label_never_known(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels([None, None, None]), tmp_path / "labels.parquet")
    fails(
        ev,
        lab,
        "column 'known_at': 1 row(s) have no label time in 1 positive",
        "set data.schema.label_time values or data.policy.label_delay",
        labels=lab,
    )
    on_events = write(events(known_at=pl.lit(None, pl.Datetime("us"))), tmp_path / "on.parquet")
    fails(on_events, on_events, "column 'known_at': 2 row(s) have no label time in 1 positive")
    assert known(load_events(ev, SCHEMA, lab, label_delay="1d"))["s2"] == END["s2"] + 24 * HOUR_US


def test_label_time_column_missing_or_of_a_bad_type(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    lab = write(labels([None, KNOWN_S2, None]).drop("known_at"), tmp_path / "l1.parquet")
    fails(ev, lab, "missing column(s) 'known_at'", labels=lab)
    lab = write(labels([None, 1.5, None]), tmp_path / "l2.parquet")
    fails(ev, lab, "column 'known_at' has type Float64", labels=lab)
    on_events = write(events(), tmp_path / "on.parquet")
    fails(on_events, on_events, "missing column(s) 'known_at'")


def test_integer_label_times_need_the_events_epoch_unit(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")  # datetimes: no epoch unit
    lab = write(labels([None, us(KNOWN_S2), None]), tmp_path / "labels.parquet")
    fails(ev, lab, "column 'known_at' holds integer epochs", "data.schema.timestamp_unit", labels=lab)


def test_conflicting_label_times_in_the_label_table(tmp_path):
    ev = write(events().drop("label"), tmp_path / "e.parquet")
    table = pl.concat([labels([None, KNOWN_S2, None]), labels([None, KNOWN_S2 + timedelta(days=1), None])])
    lab = write(table, tmp_path / "labels.parquet")
    fails(
        ev,
        lab,
        "column 'known_at': 2 row(s) belong to 1 session(s) listed with conflicting label times",
        "keep the one that stands",
        labels=lab,
    )


def test_a_bad_label_delay_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.policy.label_delay"):
        load_events(write(events(), tmp_path / "e.parquet"), PLAIN, label_delay="30 days")


# ---------------------------------------------------------------- entity columns


def test_integer_entity_ids_become_the_same_strings_in_parquet_and_csv(tmp_path):
    want = {
        "device_id": ["7", "7", "12", None, "3"],
        "ip": ["1.2.3.4", None, "1.2.3.4", "5.6.7.8", "5.6.7.8"],
    }
    for ext in ("parquet", "csv"):
        loaded = load_events(write(events(), tmp_path / f"e.{ext}"), PLAIN)
        got = loaded.events.collect().sort(S.ROW_INDEX)
        assert {c: got[c].to_list() for c in want} == want, ext
        assert got.schema["device_id"] == pl.String


def test_csv_entity_ids_keep_their_zeros(tmp_path):
    path = write(events(device_id=pl.Series(["007", "007", "7", None, "0"])), tmp_path / "e.csv")
    got = load_events(path, PLAIN).events.collect().sort(S.ROW_INDEX)["device_id"].to_list()
    assert got == ["007", "007", "7", None, "0"]


def test_entity_columns_are_required_and_typed(tmp_path):
    path = write(events().rename({"device_id": "device"}), tmp_path / "a.parquet")
    fails(path, path, "missing column(s) 'device_id' (did you mean 'device'?)", schema=PLAIN)
    path = write(events(device_id=pl.lit(1.5)), tmp_path / "b.parquet")
    fails(path, path, "column 'device_id' has type Float64", "string or integer", schema=PLAIN)


# ---------------------------------------------------------------- both engines


@pytest.fixture(scope="module")
def spark_engine(request):
    """The Spark engine on the local session, skipped without pyspark or Java as tests/test_spark.py is."""
    if not os.environ.get("SEQFRAUD_REQUIRE_SPARK"):
        pytest.importorskip("pyspark")
        if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
            pytest.skip("the Spark engine needs Java")
    from seqfraud.spark_engine import SparkEngine

    request.getfixturevalue("spark_session")
    return SparkEngine()


def write_two_files(df: pl.DataFrame, folder) -> str:
    folder.mkdir()
    df.slice(0, 3).write_parquet(folder / "part-0.parquet")
    df.slice(3).write_parquet(folder / "part-1.parquet")
    return str(folder)


def same_loads(data: dict, schema: Schema, spark_engine):
    polars, spark = PolarsEngine().load(data, schema), spark_engine.load(data, schema)
    want, got = polars.sessions.sort(S.SESSION_ID), spark.sessions.sort(S.SESSION_ID)
    assert got.schema == want.schema and got.equals(want)
    assert spark.report == polars.report
    columns = [S.SESSION_ID, S.ROW_INDEX, *schema.entities]
    want_events = polars.events.select(columns).collect().sort(S.ROW_INDEX)
    got_events = pl.from_arrow(spark.events.select(columns).toArrow())
    assert isinstance(got_events, pl.DataFrame)
    got_events = got_events.with_columns(pl.col(S.ROW_INDEX).cast(want_events.schema[S.ROW_INDEX]))
    assert got_events.sort(S.ROW_INDEX).equals(want_events)
    return polars


@pytest.mark.integration
def test_both_engines_give_the_same_sessions_from_a_label_table(spark_engine, tmp_path):
    ev = write_two_files(
        events().drop("label").with_columns(pl.col("timestamp").dt.epoch("ms")), tmp_path / "ev"
    )
    lab = write(labels([None, us(KNOWN_S2) // 1000, None]), tmp_path / "labels.parquet")
    data = {"events": ev, "labels": lab, "policy": {"label_delay": "12h"}}
    loaded = same_loads(data, SCHEMA, spark_engine)
    assert known(loaded) == {
        "s1": END["s1"] + 12 * HOUR_US,
        "s2": us(KNOWN_S2),
        "s3": END["s3"] + 12 * HOUR_US,
    }
    assert loaded.events.collect().sort(S.ROW_INDEX)["device_id"].to_list() == ["7", "7", "12", None, "3"]


@pytest.mark.integration
def test_both_engines_give_the_same_sessions_from_label_times_on_events(spark_engine, tmp_path):
    ev = write_two_files(events(known_at=pl.Series([None, None, KNOWN_S2, KNOWN_S2, None])), tmp_path / "ev")
    loaded = same_loads({"events": ev, "labels": None}, SCHEMA, spark_engine)
    assert known(loaded) == {"s1": None, "s2": us(KNOWN_S2), "s3": None}
    loaded = same_loads({"events": ev, "labels": None}, PLAIN, spark_engine)  # nothing configured
    assert known(loaded) == {"s1": None, "s2": None, "s3": None}


@pytest.mark.integration
def test_both_engines_read_a_date_label_time_on_events_as_the_end_of_its_day(spark_engine, tmp_path):
    day = KNOWN_S2.date() - timedelta(days=1)
    ev = write_two_files(events(known_at=pl.Series([None, None, day, day, None])), tmp_path / "ev")
    loaded = same_loads({"events": ev, "labels": None}, SCHEMA, spark_engine)
    assert known(loaded) == {"s1": None, "s2": us(KNOWN_S2), "s3": None}


@pytest.mark.integration
def test_both_engines_give_the_same_label_time_errors(spark_engine, tmp_path):
    times = [T0, T0, KNOWN_S2, KNOWN_S2, datetime(2150, 1, 1)]
    ev = write_two_files(events(known_at=pl.Series(times)), tmp_path / "ev")
    messages = []
    for engine in (PolarsEngine(), spark_engine):
        with pytest.raises(DataValidationError) as info:
            engine.load({"events": ev, "labels": None}, SCHEMA)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "column 'known_at': 1 row(s) have a label time outside the plausible range" in messages[0]
    assert messages[0].endswith(
        f"(first: 2150-01-01 00:00:00, session 's3', in {tmp_path / 'ev' / 'part-1.parquet'})"
    )


def test_label_times_all_at_midnight_are_said_as_days_written_as_datetimes(tmp_path, caplog):
    """pandas writes a chargeback's day as a datetime at midnight: read as the start of the day, its label was
    known a day before a date alone is (dogfood 173), unsaid. Said where every label time is at midnight."""
    n = MIN_DATED_LABELS
    ev = events(session_id=pl.lit("s1")).drop("label")
    ev = pl.concat([ev.with_columns(session_id=pl.lit(f"s{i}")) for i in range(n)])
    days = [datetime(2024, 2, 1) + timedelta(days=i) for i in range(n)]
    for times, said in (
        (days, True),
        ([d + timedelta(hours=9) for d in days], False),
        ([d.date() for d in days], False),
        # As text too, as a CSV holds them (dogfood 190); a date alone counts from its day's end, as documented.
        ([f"{d:%Y-%m-%d %H:%M:%S}" for d in days], True),
        ([f"{d:%Y-%m-%dT%H:%M:%S}.000+02:00" for d in days], True),
        ([f"{d:%Y-%m-%dT%H:%M:%S}Z" for d in days], True),
        ([f"{d + timedelta(hours=9):%Y-%m-%d %H:%M:%S}" for d in days], False),
        ([f"{d:%Y-%m-%d}" for d in days], False),
    ):
        caplog.clear()
        table = pl.DataFrame({"session_id": [f"s{i}" for i in range(n)], "label": [0] * n, "known_at": times})
        load_events(write(ev, tmp_path / "e.parquet"), SCHEMA, write(table, tmp_path / "l.parquet"))
        # And on the events, each session's events carrying its label time (review 174: said of tables alone).
        on_events = ev.join(table, on="session_id")
        load_events(write(on_events, tmp_path / "on.parquet"), SCHEMA)
        assert (
            caplog.text.count("label times with a time of day are at midnight: days written as datetimes?")
            == 2 * said
        )
        assert (
            f"column 'known_at': all {n} label times with a time of day are at midnight: days written as datetimes?"
            in caplog.text
        ) == said
