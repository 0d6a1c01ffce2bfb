"""Token rules, the fitted spec and the out-of-time split, on small hand-made logs with literal answers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from seqfraud import schema as S
from seqfraud.data.events import load_events
from seqfraud.data.split import assign_split, split_boundaries
from seqfraud.errors import ConfigError
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, PAD, UNKNOWN, VALUE_STEPS, Spec, SpecError
from seqfraud.features.tokens import fit_spec, sequences, time_delta_edges
from seqfraud.preprocess import preprocess
from seqfraud.rundir import REPORT_FILE, SPEC_FILE
from seqfraud.schema import Schema

T0 = datetime(2024, 1, 1)  # 2024-01-01T00:00:00Z
T0_US = 1_704_067_200_000_000
DAY_US = 86_400 * 1_000_000
SCHEMA = Schema(categorical=("device",), numerical=("amount",))
# Time-delta edges [0, 1, 10, 100] seconds: buckets 4 (<=0), 5 (0,1], 6 (1,10], 7 (10,100], 8 (>100).
TD = {"min_seconds": 1.0, "max_seconds": 100.0, "n_buckets": 5}
TOK = {f: S.token_column(f) for f in ("event_type", "device", "amount", S.TIME_DELTA)}
COLUMNS = {
    "session_id": pl.String,
    "timestamp": pl.Datetime("us"),
    "event_type": pl.String,
    "device": pl.String,
    "amount": pl.Float64,
    "label": pl.Int64,
}


def frame(rows) -> pl.DataFrame:
    """rows: (session, seconds after T0, event_type, device, amount, label)."""
    sid, sec, et, dev, amt, lab = zip(*rows)
    return pl.DataFrame(
        {
            "session_id": sid,
            "timestamp": [T0 + timedelta(seconds=s) for s in sec],
            "event_type": et,
            "device": dev,
            "amount": amt,
            "label": lab,
        },
        schema=COLUMNS,
    )


def write(df: pl.DataFrame, path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)
    return str(path)


def run(path, schema=SCHEMA, *, fit_sessions=None, labels=None, **fit_kw):
    """load -> fit (optionally on a subset of sessions) -> sequences; returns (loaded, spec, {sid: row})."""
    loaded = load_events(str(path), schema, labels)
    train = loaded.events
    if fit_sessions is not None:
        train = train.filter(pl.col(S.SESSION_ID).is_in(list(fit_sessions)))
    kw = {"min_count": 1, "n_buckets": 4, "time_delta": TD} | fit_kw
    spec = fit_spec(train, schema, timestamp_unit=loaded.timestamp_unit, **kw)
    labels = loaded.sessions.lazy().select(S.SESSION_ID, S.LABEL)
    seqs = sequences(loaded.events, spec).join(labels, on=S.SESSION_ID, how="left").collect()
    return loaded, spec, {r[S.SESSION_ID]: r for r in seqs.iter_rows(named=True)}


def test_reserved_ids_are_fixed():
    assert (PAD, UNKNOWN, MISSING, NAN, FIRST_ID) == (0, 1, 2, 3, 4)


def test_time_delta_edges_literal():
    assert time_delta_edges(1.0, 100.0, 5) == [0.0, 1.0, 10.0, 100.0]
    assert time_delta_edges(1.0, 100.0, 4) == [0.0, 1.0, 100.0]
    default = time_delta_edges(0.25, 86_400.0, 24)
    assert len(default) == 23 and default[:3] == [0.0, 0.25, 0.458861] and default[-1] == 86_400.0
    for bad in ((0.0, 10.0, 5), (10.0, 1.0, 5), (1.0, 10.0, 2)):
        with pytest.raises(ValueError):
            time_delta_edges(*bad)


# ---------------------------------------------------------------- categorical vocabularies

VOCAB_ROWS = [  # one session, one event per second
    ("s1", 0, "view", "web", 1.0, 0),
    ("s1", 1, "click", "web", 1.0, 0),
    ("s1", 2, "add", None, 1.0, 0),
    ("s1", 3, "view", "app", 1.0, 0),
    ("s1", 4, "pay", "app", 1.0, 0),
    ("s1", 5, "click", "web", 1.0, 0),
    ("s1", 6, "view", None, 1.0, 0),
    ("s1", 7, "add", "web", 1.0, 0),
    ("s1", 8, "zzz", "app", 1.0, 0),
    ("s1", 9, "view", "web", 1.0, 0),
]


def test_vocab_frequency_ranked_ties_by_value_with_min_count(tmp_path):
    path = write(frame(VOCAB_ROWS), tmp_path / "e.parquet")
    _, spec, seqs = run(path, min_count=2)
    # counts: view 4, add 2, click 2, pay 1, zzz 1 -> add before click on the tie; pay/zzz below min_count
    assert spec.vocab["event_type"] == ["view", "add", "click"]
    assert spec.vocab["device"] == ["web", "app"]  # web 5, app 3; nulls never enter the vocabulary
    # The share of training events with a value whose value has a token: event types 8 of 10, devices 8 of 8
    # (a null is missing, not unknown: payment fields are null on most events of a clickstream).
    assert spec.fit_info["vocab_coverage"] == {"event_type": 0.8, "device": 1.0}
    assert spec.vocab_size("event_type") == FIRST_ID + 3
    s1 = seqs["s1"]
    assert s1[TOK["event_type"]] == [4, 6, 5, 4, UNKNOWN, 6, 4, 5, UNKNOWN, 4]
    assert s1[TOK["device"]] == [4, 4, MISSING, 5, 5, 4, MISSING, 4, 5, 4]
    assert s1[TOK[S.TIME_DELTA]] == [MISSING] + [5] * 9  # 1 s gaps, exactly on the edge 1.0
    assert s1[S.LENGTH] == 10 and s1[S.LABEL] == 0 and s1[S.START_TIME] == T0_US


@pytest.mark.parametrize(
    ("min_count", "max_vocab", "expected"),
    [
        (1, 1000, ["view", "add", "click", "pay", "zzz"]),
        (1, 4, ["view", "add", "click", "pay"]),
        (1, 2, ["view", "add"]),
        (3, 1000, ["view"]),
        (5, 1000, []),
    ],
)
def test_vocab_min_count_and_max_vocab(tmp_path, caplog, min_count, max_vocab, expected):
    path = write(frame(VOCAB_ROWS), tmp_path / "e.parquet")
    with caplog.at_level("WARNING", logger="seqfraud.features.tokens"):
        _, spec, seqs = run(path, min_count=min_count, max_vocab=max_vocab)
    assert spec.vocab["event_type"] == expected
    # The values frequent enough for a token that max_vocab left out: the monitor's sign that a value outside
    # the vocabulary may be an old one.
    counts = {"view": 4, "add": 2, "click": 2, "pay": 1, "zzz": 1}
    left_out = [n for v, n in counts.items() if n >= min_count and v not in expected]
    assert spec.fit_info["values_over_max_vocab"]["event_type"] == len(left_out)
    assert spec.fit_info["left_out_max_share"]["event_type"] == (max(left_out) / 10 if left_out else 0.0)
    # Said at the fit: the monitor said it first (dogfood 179: 284 merchant ids with tokens' counts, unsaid).
    said = f"column 'event_type': {len(left_out)} values, on {sum(left_out) / 10:.1%} of its training events"
    assert (said in caplog.text) == bool(left_out), caplog.text
    ids = {v: FIRST_ID + i for i, v in enumerate(expected)}
    types = [r[2] for r in VOCAB_ROWS]
    assert seqs["s1"][TOK["event_type"]] == [ids.get(t, UNKNOWN) for t in types]


def test_a_vocabulary_that_covers_little_of_the_training_events_is_warned_about(tmp_path, caplog):
    """A column of ids (one value per event) keeps no value past min_count: every event reads as unknown, which
    a dogfood run found only in the spec."""
    rows = [("s1", i, "view", f"dev{i}", 1.0, 0) for i in range(10)]
    _, spec, _ = run(write(frame(rows), tmp_path / "e.parquet"), min_count=2)
    assert spec.vocab["device"] == [] and spec.fit_info["vocab_coverage"]["device"] == 0.0
    assert "column 'device': its 0 kept value(s) (seen at least 2 times in training" in caplog.text
    assert "column 'event_type'" not in caplog.text


def test_text_that_spells_a_missing_value_is_said_at_the_fit(tmp_path, caplog):
    """A warehouse export wrote 'NULL' for missing page paths: a token of its own, unsaid (dogfood 179). Read
    as a value, as the README says, and said; empty fields (nulls) stay missing."""
    # 'NA' is Namibia's code and 'none' a value of some fields: not said, on every run of such a log (review 182).
    rows = [("s1", i, ["NA", "none", "view"][i % 3], "NULL" if i % 3 else None, 1.0, 0) for i in range(9)]
    _, spec, _ = run(write(frame(rows), tmp_path / "e.csv"), min_count=1)
    assert spec.vocab["device"] == ["NULL"] and sorted(spec.vocab["event_type"]) == ["NA", "none", "view"]
    assert "column(s) ['device']: training values that spell a missing value" in caplog.text
    assert "counts {'device': {'NULL': 6}}" in caplog.text


def test_a_categorical_column_of_decimal_numbers_is_said(tmp_path, caplog):
    """A quantity declared categorical: Parquet's float column is refused, a CSV's text was read as 360 tokens in
    silence (dogfood 118). Whole amounts among them count (review 122); versions ("10.4"), fewer values, and
    integer codes written as floats ("5411.0") are left alone."""
    from seqfraud.features.tokens import DECIMAL_VALUES

    amounts = [f"{i * 0.37:.2f}" if i % 2 else str(i) for i in range(DECIMAL_VALUES)]
    rows = [("s1", i, "view", a, 1.0, 0) for i, a in enumerate(amounts)]
    run(write(frame(rows), tmp_path / "e.parquet"), min_count=1)
    assert (
        f"column 'device': every value counted in training is a number, {DECIMAL_VALUES} of them"
        in caplog.text
    )
    caplog.clear()
    run(write(frame(rows[:-1]), tmp_path / "f.parquet"), min_count=1)
    codes = [("s1", i, "view", f"{5000 + i}.0", 1.0, 0) for i in range(DECIMAL_VALUES)]
    run(write(frame(codes), tmp_path / "g.parquet"), min_count=1)
    assert "with a fraction" not in caplog.text


def test_columns_without_a_value_in_training_are_warned_about(tmp_path, caplog):
    """A column left empty by the export was accepted without a word (vocab_coverage null in the spec, dogfood 22)."""
    rows = [("s1", i, "view", None, None, 0) for i in range(10)]
    run(write(frame(rows), tmp_path / "e.parquet"), min_count=2)
    assert "column(s) ['device', 'amount']: no training event has a value" in caplog.text
    caplog.clear()
    run(
        write(frame([("s1", i, "view", "web", 1.0, 0) for i in range(10)]), tmp_path / "f.parquet"),
        min_count=2,
    )
    assert "no training event has a value" not in caplog.text
    # Constant columns carry as little (dogfood 29: a numeric column always 7.0 passed without a word).
    assert (
        "column(s) ['event_type', 'device', 'amount']: every training event that has a value has the same one"
        in caplog.text
    )
    caplog.clear()
    varied = [("s1", i, "view" if i % 2 else "pay", f"d{i % 3}", float(i), 0) for i in range(10)]
    run(write(frame(varied), tmp_path / "g.parquet"), min_count=2)
    assert "has the same one" not in caplog.text


def test_infinite_training_values_are_counted_and_said(tmp_path, caplog):
    """Four infinite amounts took the end buckets, and no count or line said so (dogfood 27)."""
    amounts = [float("inf"), float("-inf"), float("inf"), float("inf"), *map(float, range(6))]
    rows = [("s1", i, "view" if i % 2 else "pay", "web", a, 0) for i, a in enumerate(amounts)]
    _, spec, _ = run(write(frame(rows), tmp_path / "e.parquet"), min_count=1)
    assert spec.fit_info["infinite_values"] == {"amount": 4}
    assert "column(s) ['amount']: training values that are +inf or -inf" in caplog.text
    assert spec.fit_info["nan_values"] == {"amount": 0} and "NaN" not in caplog.text


def test_nan_training_values_are_counted_and_said(tmp_path, caplog):
    """NaN is a token of its own, not a missing value: a pandas export's NaN for missing is said at training."""
    amounts = [float("nan"), float("nan"), *map(float, range(8))]
    rows = [("s1", i, "view" if i % 2 else "pay", "web", a, 0) for i, a in enumerate(amounts)]
    _, spec, _ = run(write(frame(rows), tmp_path / "e.parquet"), min_count=1)
    assert spec.fit_info["nan_values"] == {"amount": 2}
    assert "column(s) ['amount']: training values that are NaN read as a token of their own" in caplog.text


def test_unseen_rare_and_null_categories(tmp_path):
    rows = [
        ("a", 0, "view", "web", 1.0, 0),
        ("a", 1, "view", "web", 1.0, 0),
        ("a", 2, "pay", "app", 1.0, 0),  # pay and app occur once at fit time: too rare for min_count=2
        ("b", 10, "view", "web", 1.0, 1),
        ("b", 11, "pay", "app", 1.0, 1),
        ("b", 12, "refund", "tor", 1.0, 1),  # never seen at fit time
        ("b", 13, "view", None, 1.0, 1),  # a null event type is refused (test_bad_files)
    ]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path, fit_sessions=["a"], min_count=2)
    assert spec.vocab == {"event_type": ["view"], "device": ["web"]}
    assert seqs["b"][TOK["event_type"]] == [4, UNKNOWN, UNKNOWN, 4]
    assert seqs["b"][TOK["device"]] == [4, UNKNOWN, UNKNOWN, MISSING]
    assert seqs["a"][TOK["event_type"]] == [4, 4, UNKNOWN]


# ---------------------------------------------------------------- numeric buckets


def test_numeric_edges_from_quantiles_and_bucket_rule(tmp_path):
    inf, nan = float("inf"), float("nan")
    fit_amounts = [50.0, 10.0, 40.0, None, 20.0, nan, 30.0, inf, -inf]  # only finite ones count
    probe = [None, nan, -inf, 19.0, 20.0, 20.5, 30.0, 40.0, 41.0, inf]
    rows = [("fit", i, "view", "web", a, 0) for i, a in enumerate(fit_amounts)]
    rows += [("probe", 100 + i, "view", "web", a, 0) for i, a in enumerate(probe)]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path, fit_sessions=["fit"], n_buckets=4)
    assert spec.edges["amount"] == [20.0, 30.0, 40.0]  # the 25/50/75 % nearest quantiles of 10..50
    assert spec.vocab_size("amount") == FIRST_ID + 4
    # FIRST_ID + #{edge < x}: an exact edge value stays in the lower bucket; +/-inf in the end buckets
    assert seqs["probe"][TOK["amount"]] == [MISSING, NAN, 4, 4, 4, 5, 5, 6, 7, 7]
    assert seqs["fit"][TOK["amount"]] == [7, 4, 6, MISSING, 4, NAN, 5, 7, 4]


def test_a_float32_log_and_its_csv_export_fit_one_spec(tmp_path):
    """Edges fitted on widened float32 values (0.3 read as 0.30000001192092896) split a CSV export's or a request's
    decimals from training's: a value at an inner edge read into the next bucket, and scores moved up to 0.154
    (dogfood 255). A folder whose parts mix float32 and float64 reads its float32 part so too, and a float64 log of
    widened float32 values reads as its decimals."""
    amounts = [10.0, 12.99, 0.3, 30.01, 1e-7, 40.0, 12.99, 0.3]
    f64 = frame([("s", i, "view", "web", a, 0) for i, a in enumerate(amounts)])
    f32 = f64.with_columns(pl.col("amount").cast(pl.Float32))
    _, csv_spec, csv_seqs = run(write(f64, tmp_path / "e.csv"))
    _, f32_spec, f32_seqs = run(write(f32, tmp_path / "f32.parquet"))
    # And widened to float64 upstream (pandas' astype(float)), as alike (review 260).
    _, widened_spec, _ = run(
        write(f32.with_columns(pl.col("amount").cast(pl.Float64)), tmp_path / "wide.parquet")
    )
    write(f32.head(4), tmp_path / "mixed" / "a.parquet")
    write(f64.tail(4).with_columns(pl.col("amount").cast(pl.Float64)), tmp_path / "mixed" / "b.parquet")
    loaded, mixed_spec, _ = run(tmp_path / "mixed")
    assert loaded.events.collect()["amount"].to_list() == amounts
    assert set(f32_spec.edges["amount"]) & {0.3, 12.99, 30.01}
    assert f32_spec.edges == csv_spec.edges == mixed_spec.edges == widened_spec.edges
    assert f32_seqs["s"][TOK["amount"]] == csv_seqs["s"][TOK["amount"]]


def test_a_spec_says_how_it_read_float32_numbers(tmp_path):
    """Scoring reads float32 numbers as the spec's fit did: a spec of version 5 or before widened them."""
    _, spec, _ = run(write(frame([("s", 0, "view", "web", 1.0, 0)]), tmp_path / "e.parquet"))
    d = spec.to_dict()
    assert (d["version"], d["float32_decimal"]) == (6, True)
    older = d | {"version": 5}
    older.pop("float32_decimal")
    assert Spec.from_dict(older).float32_decimal is False
    # And written back as version 5, which releases before version 6 read (review 260: a re-export of an old run).
    assert Spec.from_dict(older).to_dict() == older
    with pytest.raises(SpecError, match="float32_decimal='yes'"):
        Spec.from_dict(d | {"float32_decimal": "yes"})


def test_a_numbers_values_above_a_point_mass_get_a_low_edge_of_their_own(tmp_path):
    """A fee of 0 on 80% of the events takes the lowest quantiles' edges, so the values above it had no low edge,
    and part of them /100 fell into the lowest bucket above 0, unsaid (dogfood 258): the training values' lowest
    quantile above the mass is recorded for scoring, read back from the value field's tokens."""
    from seqfraud.features.drift import MASS_EDGES
    from seqfraud.preprocess import training_shares

    rng = np.random.default_rng(3)
    n = 6_000
    fees = np.where(rng.random(n) < 0.8, 0.0, np.round(rng.lognormal(2.0, 1.0, n), 2))
    rows = [(f"s{i // 6}", i, "view", "web", float(fee), 0) for i, fee in enumerate(fees)]
    path = write(frame(rows).with_columns(pl.col("amount").alias("flat")), tmp_path / "in" / "events.parquet")
    data = {
        "events": path,
        "labels": None,
        "schema": {"categorical": ["device"], "numerical": ["amount", "flat"]},
        "split": {"val_start": "2030-01-01", "test_start": "2030-01-02"},
    }
    features = {
        "max_len": 8,
        "min_count": 1,
        "n_buckets": 8,
        "tail_quantiles": [0.001, 0.01],
        "time_delta": TD,
    }
    prepared = preprocess(data, features, tmp_path / "out")
    edges = training_shares(prepared.datasets, prepared.spec)[MASS_EDGES]
    above = pl.Series(fees[fees > 0]).quantile(0.001, "nearest")
    assert prepared.spec.edges["amount"][0] == 0.0 and prepared.spec.edges["amount"][1] > above
    assert set(edges) == {"amount", "flat"} and above * (1 - 1e-4) < edges["amount"] < above
    # Without value fields there is nothing to read it back from.
    bare = preprocess(data, features | {"numeric_values": False}, tmp_path / "bare")
    assert training_shares(bare.datasets, bare.spec)[MASS_EDGES] == {}


def test_numeric_edges_deduplicated(tmp_path):
    rows = [("s", i, "view", "web", a, 0) for i, a in enumerate([1.0, 1.0, 1.0, 1.0, 5.0])]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path, n_buckets=4)
    assert spec.edges["amount"] == [1.0]
    assert spec.vocab_size("amount") == FIRST_ID + 2
    assert seqs["s"][TOK["amount"]] == [4, 4, 4, 4, 5]


def test_numeric_edges_empty_when_training_has_no_finite_value(tmp_path):
    rows = [("s", 0, "view", "web", None, 0), ("s", 1, "view", "web", float("nan"), 0)]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path)
    assert spec.edges["amount"] == []
    assert seqs["s"][TOK["amount"]] == [MISSING, NAN]


# ---------------------------------------------------------------- time deltas, ordering, truncation


def test_time_delta_buckets_for_known_gaps(tmp_path):
    # gaps: 0, 0.5, 1, 5, 100, 1000 seconds
    secs = [0.0, 0.0, 0.5, 1.5, 6.5, 106.5, 1106.5]
    rows = [("s", s, "view", "web", 1.0, 0) for s in secs]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path)
    assert spec.edges[S.TIME_DELTA] == [0.0, 1.0, 10.0, 100.0]
    assert spec.vocab_size(S.TIME_DELTA) == FIRST_ID + 5
    assert seqs["s"][TOK[S.TIME_DELTA]] == [MISSING, 4, 5, 5, 6, 7, 8]


def test_rows_sorted_by_time_with_input_order_breaking_ties(tmp_path):
    rows = [
        ("s1", 10, "a", "web", 1.0, 0),
        ("s0", 3, "z", "web", 1.0, 0),
        ("s1", 5, "b", "web", 1.0, 0),
        ("s1", 10, "c", "web", 1.0, 0),
        ("s1", 5, "d", "web", 1.0, 0),
        ("s1", 7, "e", "web", 1.0, 0),
    ]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path)
    assert spec.vocab["event_type"] == ["a", "b", "c", "d", "e", "z"]  # all seen once: by value
    ids = {v: FIRST_ID + i for i, v in enumerate(spec.vocab["event_type"])}
    # time order 5,5,7,10,10; the tied pairs keep their input order (b before d, a before c)
    assert seqs["s1"][TOK["event_type"]] == [ids[t] for t in "bdeac"]
    assert seqs["s1"][TOK[S.TIME_DELTA]] == [MISSING, 4, 6, 6, 4]  # gaps -, 0, 2, 3, 0
    assert seqs["s1"][S.START_TIME] == T0_US + 5_000_000
    assert seqs["s0"][TOK[S.TIME_DELTA]] == [MISSING]


def test_a_long_sessions_window_moves_in_hops(tmp_path, caplog):
    """Past max_len the window starts at the latest multiple of hop that leaves at most max_len events: what a
    GRU can carry as one state per multiple (seqfraud.scoring.online), at the cost of reading between max_len -
    hop + 1 and max_len events of a long session."""
    from seqfraud.features.spec import window_start

    assert [window_start(n, 4, 2) for n in range(1, 10)] == [0, 0, 0, 0, 2, 2, 4, 4, 6]
    assert [window_start(n, 4, 1) for n in range(1, 8)] == [0, 0, 0, 0, 1, 2, 3]  # spec version 4's
    np.testing.assert_array_equal(window_start(np.array([3, 5, 9]), 4, 3), [0, 3, 6])
    rows = [("long", s, t, "web", 1.0, 1) for s, t in zip([0, 1, 2, 12, 13, 15, 20], "abcdefg")]
    rows += [("six", 100 + s, t, "web", 1.0, 0) for s, t in zip(range(6), "aabbcc")]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path, max_len=4, hop=2)
    assert (spec.max_len, spec.hop) == (4, 2) and Spec.from_dict(spec.to_dict()).hop == 2
    # vocab: a 3, b 3, c 3, d 1, e 1, f 1, g 1 -> a=4 b=5 c=6 d=7 e=8 f=9 g=10
    assert seqs["long"][TOK["event_type"]] == [8, 9, 10]  # 7 events: from the 4th (window_start 4)
    assert (
        seqs["long"][TOK[S.TIME_DELTA]][0] == 5
    )  # e's delta to d (1 s, as in the test below), read before the cut
    assert seqs["six"][TOK["event_type"]] == [5, 5, 6, 6]  # 6 events: from the 2nd
    assert (seqs["long"][S.LENGTH], seqs["six"][S.LENGTH]) == (3, 4)
    for bad in (0, 5, 2.5, True):
        with pytest.raises(ConfigError, match="features.hop must be an integer from 1 to features.max_len=4"):
            run(path, max_len=4, hop=bad)
    with pytest.raises(SpecError, match="hop=5 is not an integer between 1 and max_len=4"):
        Spec.from_dict(spec.to_dict() | {"hop": 5})
    assert run(path, max_len=64)[1].hop == 8 and run(path, max_len=7)[1].hop == 1  # max_len // 8 by default
    with caplog.at_level("WARNING"):
        run(path, max_len=4, hop=4)
    assert (
        "features.hop=4 with features.max_len=4: a session longer than max_len keeps as few as its last 1"
        in (caplog.text)
    )


def test_truncation_keeps_most_recent_events(tmp_path):
    rows = [("long", s, t, "web", 1.0, 1) for s, t in zip([0, 1, 2, 12, 13], "abcde")]
    rows += [("short", 100 + s, t, "web", 1.0, 0) for s, t in zip([0, 50], "ab")]
    path = write(frame(rows), tmp_path / "e.parquet")
    _, spec, seqs = run(path, max_len=3)
    assert spec.max_len == 3
    # vocab: a 2, b 2, c 1, d 1, e 1 -> a=4 b=5 c=6 d=7 e=8
    assert seqs["long"][TOK["event_type"]] == [6, 7, 8]
    # deltas -, 1, 1, 10, 1: the oldest kept event keeps its delta to the (dropped) predecessor
    assert seqs["long"][TOK[S.TIME_DELTA]] == [5, 6, 5]
    assert seqs["long"][TOK["device"]] == [4, 4, 4]
    assert seqs["long"][S.LENGTH] == 3
    assert seqs["long"][S.START_TIME] == T0_US  # the session still starts at its first event
    assert seqs["short"][TOK["event_type"]] == [4, 5]
    assert seqs["short"][TOK[S.TIME_DELTA]] == [MISSING, 7]
    assert seqs["short"][S.LENGTH] == 2


# ---------------------------------------------------------------- out-of-time split


def _sessions(starts_us) -> pl.DataFrame:
    return pl.DataFrame(
        {S.SESSION_ID: [f"s{i:03d}" for i in range(len(starts_us))], S.START_TIME: starts_us},
        schema={S.SESSION_ID: pl.String, S.START_TIME: pl.Int64},
    )


VAL_US = T0_US + 9 * DAY_US  # 2024-01-10T00:00:00Z
TEST_US = T0_US + 19 * DAY_US  # 2024-01-20T00:00:00Z


@pytest.mark.parametrize(
    ("val_start", "test_start"),
    [
        ("2024-01-10T00:00:00", "2024-01-20T00:00:00"),  # naive means UTC
        ("2024-01-10", "2024-01-20"),
        ("2024-01-10T02:00:00+02:00", "2024-01-19T19:00:00-05:00"),
        ("2024-01-10T00:00:00Z", "2024-01-20T00:00:00+00:00"),
    ],
)
def test_explicit_split_boundaries(val_start, test_start):
    sessions = _sessions([T0_US, VAL_US - 1, VAL_US, TEST_US - 1, TEST_US, TEST_US + DAY_US])
    assert split_boundaries(sessions, val_start, test_start) == (VAL_US, TEST_US)
    out = assign_split(sessions, VAL_US, TEST_US)
    assert out[S.SPLIT].to_list() == ["train", "train", "val", "val", "test", "test"]


def test_a_fraction_that_falls_inside_sessions_starting_together_says_so():
    """Sessions that start at three times (80/10/10): the fractions' val boundary fell inside the first time's
    sessions, which all went to validation, and the error said to leave the boundaries unset (dogfood 166)."""
    sessions = _sessions([T0_US] * 80 + [VAL_US] * 10 + [TEST_US] * 10)
    with pytest.raises(
        ConfigError,
        match=r"80 of the 100 sessions start at 2024-01-01.*where val_fraction \(0.15\) and test_fraction \(0.15\) "
        "put a boundary, so the train split is empty",
    ):
        split_boundaries(sessions, None, None)
    # Validation emptied by a tie at an explicit test start, its own start placed there by the fractions (review
    # 168), or both boundaries in one tie: the fractions that placed them named.
    tied = _sessions([T0_US] * 50 + [VAL_US] * 40 + [TEST_US] * 10)
    with pytest.raises(
        ConfigError, match=r"40 of the 100 .* val_fraction \(0.15\) and test_fraction .* val split"
    ):
        split_boundaries(tied, None, "2024-01-10")
    with pytest.raises(
        ConfigError, match=r"80 of the 100 .* val_fraction .* test_fraction .* val split is empty"
    ):
        split_boundaries(_sessions([T0_US] * 10 + [VAL_US] * 80 + [TEST_US] * 10), None, None)
    assert split_boundaries(sessions, "2024-01-10", "2024-01-20") == (VAL_US, TEST_US)
    # An explicit boundary of one's own is not blamed on the fractions (review 167), nor are boundaries that cross.
    assert split_boundaries(sessions, "2024-01-01", None) == (T0_US, VAL_US)
    daily = _sessions([T0_US + day * DAY_US for day in range(10) for _ in range(10)])
    with pytest.raises(ConfigError, match="val_start .* is after test_start"):
        split_boundaries(daily, None, "2024-01-06")
    assert split_boundaries(daily, None, "2024-01-09") == (T0_US + 7 * DAY_US, T0_US + 8 * DAY_US)
    # One start time for every session: no boundary can split them (check_splits says so).
    assert split_boundaries(_sessions([T0_US] * 50), None, None) == (T0_US, T0_US)


def test_null_boundaries_take_the_latest_sessions():
    sessions = _sessions([T0_US + i * DAY_US for i in range(100)][::-1])  # input order must not matter
    val_us, test_us = split_boundaries(sessions, None, None, val_fraction=0.15, test_fraction=0.15)
    split = dict(zip(*assign_split(sessions, val_us, test_us).select(S.SESSION_ID, S.SPLIT)))
    order = [f"s{i:03d}" for i in range(99, -1, -1)]  # session ids by start time
    labels = [split[s] for s in order]
    n_train, n_val = labels.count("train"), labels.count("val")
    assert labels == ["train"] * n_train + ["val"] * n_val + ["test"] * (100 - n_train - n_val)
    assert 69 <= n_train <= 70 and 15 <= n_val <= 16  # within one session of 70/15/15


def test_null_boundaries_exact_fractions():
    sessions = _sessions([T0_US + i * DAY_US for i in range(100)])
    out = assign_split(sessions, *split_boundaries(sessions, None, None, 0.15, 0.15))
    assert [out[S.SPLIT].to_list().count(s) for s in S.SPLITS] == [70, 15, 15]


def test_mixed_null_and_explicit_boundaries():
    sessions = _sessions([T0_US + i * DAY_US for i in range(11)])
    val_us, test_us = split_boundaries(sessions, "2024-01-03", None, test_fraction=0.2)
    assert val_us == T0_US + 2 * DAY_US and test_us == T0_US + 9 * DAY_US  # the last round(11 * 0.2) = 2


def test_val_start_after_test_start_errors():
    sessions = _sessions([T0_US])
    with pytest.raises(ValueError, match="val_start"):
        split_boundaries(sessions, "2024-01-20", "2024-01-10")


# ---------------------------------------------------------------- no leakage, end to end


def test_preprocess_fits_on_train_only(tmp_path, caplog):
    def d(day, sec=0):  # seconds after T0 on day `day` (0-based)
        return day * 86_400 + sec

    rows = [
        # train: first events before 2024-01-10
        ("t1", d(0), "view", "web", 10.0, 0),
        ("t1", d(0, 30), "pay", "app", 20.0, 0),
        ("t1", d(25), "view", "web", 30.0, 0),  # a late event of a train session stays in train
        ("t2", d(3), "view", "app", 40.0, 1),
        ("t2", d(3, 5), "pay", "web", 50.0, 1),
        # val: first event in [01-10, 01-20)
        ("v1", d(12), "view", "tor", 1_000_000.0, 1),
        ("v1", d(12, 1), "refund", "tor", 2_000_000.0, 1),
        # test: first event from 01-20 on
        ("x1", d(22), "refund", "tor", 5_000_000.0, 0),
    ]
    path = write(frame(rows), tmp_path / "in" / "events.parquet")
    data = {
        "events": path,
        "labels": None,
        "schema": {"categorical": ["device"], "numerical": ["amount"]},
        "split": {"val_start": "2024-01-10", "test_start": "2024-01-20T00:00:00+00:00"},
    }
    features = {"max_len": 8, "min_count": 1, "n_buckets": 4, "time_delta": TD}
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="seqfraud.preprocess"):
        prepared = preprocess(data, features, out)
    spec = prepared.spec
    assert spec.vocab == {"event_type": ["view", "pay"], "device": ["web", "app"]}
    assert spec.edges["amount"] == [20.0, 30.0, 40.0]
    assert spec.fit_info["n_sessions"] == 2 and spec.fit_info["n_events"] == 5
    assert spec.fit_info["val_start"] == "2024-01-10T00:00:00+00:00"
    assert spec.fit_info["test_start"] == "2024-01-20T00:00:00+00:00"
    assert Spec.load(out / SPEC_FILE) == spec

    ds = {name: pl.read_parquet(p).sort(S.SESSION_ID) for name, p in prepared.datasets.items()}
    assert {k: v[S.SESSION_ID].to_list() for k, v in ds.items()} == {
        "train": ["t1", "t2"],
        "val": ["v1"],
        "test": ["x1"],
    }
    v1 = ds["val"].row(0, named=True)
    assert v1[TOK["device"]] == [UNKNOWN, UNKNOWN]
    assert v1[TOK["event_type"]] == [4, UNKNOWN]
    assert v1[TOK["amount"]] == [7, 7]  # beyond every fitted edge
    assert v1[S.LABEL] == 1 and v1[S.LENGTH] == 2
    x1 = ds["test"].row(0, named=True)
    assert (x1[TOK["event_type"]], x1[TOK["device"]], x1[TOK["amount"]]) == ([UNKNOWN], [UNKNOWN], [7])
    t1 = ds["train"].row(0, named=True)
    assert t1[TOK["amount"]] == [4, 4, 5] and t1[TOK[S.TIME_DELTA]] == [MISSING, 7, 8]

    report = json.loads((out / REPORT_FILE).read_text())
    assert report["splits"] == {
        "train": {"sessions": 2, "positives": 1},
        "val": {"sessions": 1, "positives": 1},
        "test": {"sessions": 1, "positives": 0},
    }
    assert report["truncated_sessions"] == 0 and report["n_events"] == 8
    # t1 runs on past the validation start (and the test's): counted, and warned of as 3 of train's 5 events
    # (review 104: a log keyed by customer had half its training events in the test period, said nowhere).
    assert report["sessions_crossing_split"] == {"train": {"sessions": 1, "events": 3}}
    assert "1 train session(s) (3 of the split's 5 events) run on past the validation start" in caplog.text


# ---------------------------------------------------------------- timestamp encodings

TS_ROWS = [
    ("a", 0, "view", "web", 5.0, 0),
    ("a", 0, "click", "app", 7.0, 0),
    ("a", 3, "pay", "web", 9.0, 0),
    ("b", 86_400 + 200, "view", None, 1.0, 1),
    ("b", 86_400, "view", "app", 3.0, 1),
]


def _ts_variant(kind: str) -> pl.Expr:
    ts = pl.col("timestamp")
    epoch_s = ts.dt.epoch("s")
    return {
        "naive": ts,
        "utc": ts.dt.replace_time_zone("UTC"),
        "new_york": ts.dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York"),
        "datetime_ms": ts.cast(pl.Datetime("ms")),
        "datetime_ns": ts.cast(pl.Datetime("ns")),
        "iso_string": ts.dt.strftime("%Y-%m-%dT%H:%M:%S"),
        "iso_string_offset": ts.dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Kolkata")
        .dt.strftime("%Y-%m-%dT%H:%M:%S%:z"),
        "epoch_s": epoch_s,
        "epoch_ms": epoch_s * 1_000,
        "epoch_us": epoch_s * 1_000_000,
        "epoch_ns": epoch_s * 1_000_000_000,
        "epoch_s_int32": epoch_s.cast(pl.Int32),
        # naive and offset strings in one column, T and space
        "iso_mixed": pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(ts.dt.strftime("%Y-%m-%d %H:%M:%S"))
        .otherwise(
            ts.dt.replace_time_zone("UTC")
            .dt.convert_time_zone("Asia/Kolkata")
            .dt.strftime("%Y-%m-%dT%H:%M:%S%:z")
        ),
    }[kind]


@pytest.mark.parametrize(
    ("kind", "configured", "unit"),
    [
        ("naive", "auto", "datetime"),
        ("utc", "auto", "datetime"),
        ("new_york", "auto", "datetime"),
        ("datetime_ms", "auto", "datetime"),
        ("datetime_ns", "auto", "datetime"),
        ("iso_string", "auto", "datetime"),
        ("iso_string_offset", "auto", "datetime"),
        ("epoch_s", "auto", "s"),
        ("epoch_ms", "auto", "ms"),
        ("epoch_us", "auto", "us"),
        ("epoch_ns", "auto", "ns"),
        ("epoch_s_int32", "auto", "s"),
        ("iso_mixed", "auto", "datetime"),
        ("epoch_s", "s", "s"),
        ("epoch_ms", "ms", "ms"),
        # datetimes with a configured unit: the spec records it, for integer epochs at scoring
        ("naive", "ms", "ms"),
        ("iso_string", "s", "s"),
        ("epoch_ns", "ns", "ns"),
    ],
)
def test_timestamp_encodings_give_identical_tokens(tmp_path, kind, configured, unit):
    base = frame(TS_ROWS)
    _, ref_spec, ref = run(write(base, tmp_path / "ref.parquet"))
    assert {s: r[S.START_TIME] for s, r in ref.items()} == {"a": T0_US, "b": T0_US + DAY_US}
    assert ref["a"][TOK["event_type"]] == [4, 5, 6]  # view 3 -> 4, click 1 -> 5, pay 1 -> 6
    assert ref["b"][TOK[S.TIME_DELTA]] == [MISSING, 8]

    schema = Schema(categorical=("device",), numerical=("amount",), timestamp_unit=configured)
    variant = base.with_columns(_ts_variant(kind).alias("timestamp"))
    loaded, spec, got = run(write(variant, tmp_path / f"{kind}.parquet"), schema)
    assert loaded.timestamp_unit == unit and spec.timestamp_unit == unit
    assert Spec.from_dict(json.loads(spec.to_json())).timestamp_unit == unit
    assert spec.epoch_unit == (None if unit == "datetime" else unit)
    assert got == ref
    assert (spec.vocab, spec.edges) == (ref_spec.vocab, ref_spec.edges)
    assert spec.fit_info["first_event_us"] == T0_US
    assert loaded.sessions.sort(S.SESSION_ID)[S.START_TIME].to_list() == [T0_US, T0_US + DAY_US]


# ---------------------------------------------------------------- spec file


def _fitted_spec(tmp_path) -> Spec:
    _, spec, _ = run(write(frame(VOCAB_ROWS), tmp_path / "e.parquet"))
    return spec


def test_spec_json_round_trip(tmp_path):
    spec = _fitted_spec(tmp_path)
    path = spec.save(tmp_path / "nested" / "spec.json")
    loaded = Spec.load(path)
    assert loaded == spec
    d = json.loads(path.read_text())
    assert d["format"] == "seqfraud.preprocessing-spec" and d["version"] == 6 and d["entity"] is None
    assert d["schema"]["timestamp_range"] == ["1990-01-01", "2100-01-01"]
    assert d["reserved"] == {"pad": 0, "unknown": 1, "missing": 2, "nan": 3}
    assert d["vocab"]["event_type"] == ["view", "add", "click", "pay", "zzz"]
    assert d["edges"]["amount"] == [1.0]
    assert d["edges"][S.TIME_DELTA] == [0.0, 1.0, 10.0, 100.0]
    assert d["timestamp_unit"] == "datetime"
    assert d["values"] == ["amount"]
    assert loaded.vocab_sizes() == {
        "event_type": 9,
        "device": 6,
        "amount": 6,
        S.value_field("amount"): FIRST_ID + VALUE_STEPS + 1,
        S.TIME_DELTA: 9,
    }


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(version=7), "version 7"),
        (lambda d: d["schema"].update(timestamp_range=["2100-01-01", "1990-01-01"]), "malformed"),
        (lambda d: d.pop("version"), "version None"),
        (lambda d: d.update(format="something-else"), "not a seqfraud preprocessing spec"),
        (lambda d: d.update(reserved={"pad": 0, "unknown": 2, "missing": 1, "nan": 3}), "reserved ids"),
        (lambda d: d.pop("max_len"), "malformed"),
        (lambda d: d["schema"].update(colour="red"), "malformed"),
        (lambda d: d["vocab"].pop("device"), "do not match"),
        (lambda d: d["edges"].update(extra=[1.0]), "do not match"),
    ],
)
def test_bad_spec_raises_spec_error(tmp_path, mutate, match):
    spec = _fitted_spec(tmp_path)
    d = json.loads(spec.to_json())
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(SpecError, match=match):
        Spec.load(path)


def test_a_version_1_spec_still_loads(tmp_path):
    """Version 1 had no timestamp range (the default applies) and the same meaning of ``timestamp_unit``."""
    d = json.loads(_fitted_spec(tmp_path).to_json())
    d["version"] = 1
    del d["schema"]["timestamp_range"]
    spec = Spec.from_dict(d)
    assert spec.schema.timestamp_range == ("1990-01-01", "2100-01-01")
    assert spec.timestamp_unit == "datetime" and spec.epoch_unit is None


@pytest.mark.parametrize(
    ("timestamp_unit", "configured", "epoch_unit"),
    [
        ("ms", "auto", "ms"),  # integer epochs at training: their unit
        ("ns", "ns", "ns"),
        ("datetime", "auto", None),  # datetimes with auto: no unit is known, integer epochs are refused
        ("datetime", "s", "s"),  # a version 1 spec of datetimes with a configured unit
    ],
)
def test_the_unit_of_integer_epochs_at_scoring(tmp_path, timestamp_unit, configured, epoch_unit):
    d = json.loads(_fitted_spec(tmp_path).to_json())
    d["timestamp_unit"], d["schema"]["timestamp_unit"] = timestamp_unit, configured
    assert Spec.from_dict(d).epoch_unit == epoch_unit


def test_unreadable_spec_raises_spec_error(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(SpecError, match="cannot read spec"):
        Spec.load(tmp_path / "x.json")
    with pytest.raises(SpecError, match="cannot read spec"):
        Spec.load(tmp_path / "missing.json")


def test_check_schema(tmp_path):
    spec = _fitted_spec(tmp_path)
    spec.check_schema(SCHEMA)
    # the timestamp unit and range may differ
    spec.check_schema(
        Schema(
            categorical=("device",),
            numerical=("amount",),
            timestamp_unit="ms",
            timestamp_range=("2000-01-01", "2030-01-01"),
        )
    )
    for other in (
        Schema(categorical=("device", "country"), numerical=("amount",)),
        Schema(categorical=("device",), numerical=()),
        Schema(session_id="sid", categorical=("device",), numerical=("amount",)),
    ):
        with pytest.raises(SpecError, match="does not match the spec"):
            spec.check_schema(other)


# ---------------------------------------------------------------- input layouts

INPUT_ROWS = [
    ("s2", 5, "view", "web", 10.0, 1),
    ("s1", 0, "view", "app", 20.0, 0),
    ("s1", 0, "click", None, None, 0),  # tied with the row above and the first row of the next shard
    ("s1", 0, "pay", "web", 30.0, 0),
    ("s2", 4, "click", "web", 40.0, 1),
    ("s1", 9, "view", "app", 50.0, 0),
]


def test_sharded_glob_and_csv_inputs_match_single_file(tmp_path):
    df = frame(INPUT_ROWS)
    _, ref_spec, ref = run(write(df, tmp_path / "one.parquet"))
    # view 3, click 2, pay 1 -> view 4, click 5, pay 6; s1 ties keep input order view, click, pay
    assert ref["s1"][TOK["event_type"]] == [4, 5, 6, 4]
    assert ref["s2"][TOK["event_type"]] == [5, 4]
    shards = tmp_path / "shards"
    for i, (lo, hi) in enumerate([(0, 3), (3, 4), (4, 6)]):
        write(df.slice(lo, hi - lo), shards / f"part-{i}.parquet")
    write(df, tmp_path / "events.csv")
    # A partitioned dataset's folders picked by a glob read as folders (dogfood 189: "not a regular file"); `**`
    # matches the folders and their files alike, each file read once.
    days = tmp_path / "days"
    for i, (lo, hi) in enumerate([(0, 3), (3, 4), (4, 6)]):
        write(df.slice(lo, hi - lo), days / f"day=2026-03-0{i + 1}" / "part-0.parquet")
    for source in (
        shards,
        str(shards / "part-*.parquet"),
        tmp_path / "events.csv",
        str(days / "**"),
        str(days / "day=2026-03-0*"),
    ):
        if source == str(days / "day=2026-03-0*"):  # a job's marker file, which a folder's reading skips
            (days / "day=2026-03-01" / "_SUCCESS").touch()
        loaded, spec, got = run(source)
        assert got == ref, source
        assert (spec.vocab, spec.edges) == (ref_spec.vocab, ref_spec.edges)
        assert loaded.report["n_events"] == 6 and loaded.report["n_sessions"] == 2
    assert run(shards)[0].source == f"{shards} (3 files)"


def test_labels_in_a_separate_table(tmp_path):
    df = frame(INPUT_ROWS)
    _, _, ref = run(write(df, tmp_path / "one.parquet"))
    labels = pl.DataFrame({"session_id": ["s1", "s2"], "label": [0, 1]})
    write(labels, tmp_path / "labels.csv")
    ev = write(df.drop("label"), tmp_path / "nolabel.parquet")
    _, _, got = run(ev, labels=str(tmp_path / "labels.csv"))
    assert got == ref


def test_at_ranks_tallies_counts_exactly_as_a_partition():
    """numeric_quantiles tallies whole non-negative values (entity counts) with a bincount: the same values at
    the same ranks as the partition it stands in for, -0.0 and large values included."""
    import numpy as np

    from seqfraud.features.tokens import _at_ranks, quantile_probs, quantile_rank

    rng = np.random.default_rng(0)
    probs = quantile_probs(16, (0.99, 0.999))
    cases = [
        rng.integers(0, 5, 1000).astype(np.float32),
        rng.poisson(30, 777).astype(np.float32),
        np.r_[rng.integers(0, 3, 500), [2**21]].astype(np.float32),
        (rng.random(300) * 10).astype(np.float32),
        np.r_[[-0.0], rng.integers(0, 4, 50)].astype(np.float32),
        np.array([3.0]),
    ]
    for values in cases:
        ranks = [quantile_rank(q, len(values)) for q in probs]
        ordered = np.partition(values, sorted(set(ranks)))
        expected = [float(ordered[r]) for r in ranks]
        got = _at_ranks(values, ranks)
        assert [repr(v) for v in got] == [repr(v) for v in expected]
