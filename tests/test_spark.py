"""The Spark engine writes exactly what the Polars engine writes: the same spec, datasets and errors."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

if os.environ.get("SEQFRAUD_REQUIRE_SPARK"):
    import pyspark  # noqa: F401  (CI sets this: a missing pyspark fails the run instead of skipping the parity)
else:
    pytest.importorskip("pyspark")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("the Spark engine needs Java", allow_module_level=True)

from seqfraud import schema as S
from seqfraud.data import synthetic
from seqfraud.data.events import DataValidationError
from seqfraud.data.shards import shard_files
from seqfraud.features.spec import LONGEST_GAPS, MISSING, NAN, UNKNOWN
from seqfraud.features.tokens import quantile_rank
from seqfraud.preprocess import preprocess
from seqfraud.rundir import ENTITY_DIR
from seqfraud.schema import Schema

SPARK = {"engine": "spark", "spark": {"master": "local[2]"}}
FEATURES = {
    "max_len": 5,
    "hop": 2,  # sessions of 6 to 12 events keep 4 or 5
    "min_count": 2,
    "n_buckets": 4,
    "tail_quantiles": [0.9],
    "time_delta": {"min_seconds": 1.0, "max_seconds": 3600.0, "n_buckets": 6},
}
# refund: three values, all in the first session, so edges share ranks; fee: never set, so no edges at all.
# The timestamp range reaches back to 1900, for the encodings before 1970.
SCHEMA = Schema(
    categorical=("device", "merchant", "flag"),
    numerical=("amount", "items", "refund", "fee"),
    timestamp_range=("1900-01-01", "2100-01-01"),
)
T0_NS = 1_704_067_200 * 10**9  # 2024-01-01
T1922_NS = -1_500_000_000 * 10**9  # before 1970: flooring and truncating nanoseconds differ
LATE_TYPES = ("gift_card", "crypto")  # only in the latest sessions: unknown to a spec fitted on train


@pytest.fixture(autouse=True)
def spark(spark_session):
    return spark_session


def edge_events(seed: int, base_ns: int, n_sessions: int = 60) -> pl.DataFrame:
    """Events with every case the rules treat specially; ``ts_ns`` is cast per test to the wanted encoding.

    Offsets within a session come from a few values, so equal timestamps are common (input order breaks
    the tie); the sub-second part is not a multiple of a microsecond, so flooring matters before 1970.
    """
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 13, n_sessions)
    lens[0] = 3
    sess = np.repeat(np.arange(n_sessions), lens)
    start_s = np.sort(rng.integers(0, 30 * 86_400, n_sessions))
    offset_s = rng.choice([0, 0, 1, 7, 90, 4_000], sess.size)
    ts_ns = base_ns + (start_s[sess] + offset_s) * 10**9 + (offset_s % 7) * 123_456_789
    late = sess >= n_sessions * 4 // 5
    event_type = np.where(
        late & (rng.random(sess.size) < 0.3),
        rng.choice(LATE_TYPES, sess.size),
        rng.choice(["view", "login", "cart", "pay"], sess.size),
    )
    amount = np.round(rng.lognormal(3, 1, sess.size), 1)
    amount[rng.random(sess.size) < 0.05] = np.nan
    amount[rng.random(sess.size) < 0.03] = np.inf
    amount[rng.random(sess.size) < 0.02] = -np.inf
    events = pl.DataFrame(
        {
            "session_id": [f"u{i:03d}" for i in sess],
            "ts_ns": ts_ns,
            "event_type": event_type,
            "device": rng.choice(["ios", "android", "web", "tv"], sess.size, p=[0.4, 0.4, 0.18, 0.02]),
            "merchant": rng.integers(1, 8, sess.size),
            "flag": rng.random(sess.size) < 0.3,
            "amount": amount,
            "items": rng.integers(0, 5, sess.size),
            "refund": pl.Series(
                [12.0, 5.0, 7.5] + [None] * (sess.size - 3)
            ),  # the three events of the first session
            "fee": pl.Series([None] * sess.size, dtype=pl.Float32),
            "label": (sess % 7 == 0).astype(np.int64),
        }
    )
    events = events.with_columns(
        [
            pl.when(pl.Series(rng.random(sess.size) < 0.08)).then(None).otherwise(pl.col(c)).alias(c)
            for c in ("device", "merchant", "flag", "amount", "items")
        ]
    )
    return events.sample(fraction=1.0, shuffle=True, seed=seed)  # logs arrive unordered


def write_shards(events: pl.DataFrame, out, n: int = 3, name: str = "part-{}.parquet"):
    """Several Parquet files in one directory: sessions span files, and the file order is input order."""
    out.mkdir(parents=True, exist_ok=True)
    size = -(-events.height // n)
    for i in range(n):
        events.slice(i * size, size).write_parquet(out / name.format(i))
    return out


def run_both(data_cfg: dict, out, features: dict = FEATURES):
    """Both engines on the same input; asserts the same spec, datasets and counts, returns Polars' result."""
    polars = preprocess(data_cfg, features, out / "polars", {"engine": "polars"})
    spark = preprocess(data_cfg, features, out / "spark", SPARK)
    assert spark.report["engine"] == "spark" and spark.report["partitions"] > 1
    assert spark.spec.to_dict() | {"versions": None} == polars.spec.to_dict() | {"versions": None}
    assert polars.spec.fit_info[LONGEST_GAPS]  # measured, not None on both sides
    assert polars.spec.tied_share is not None and polars.spec.opening_shares  # recorded, equal on both sides
    for name in S.SPLITS:
        want = pl.read_parquet(shard_files(polars.datasets[name])).sort(S.SESSION_ID)
        got = pl.read_parquet(shard_files(spark.datasets[name])).sort(S.SESSION_ID)
        assert got.schema == want.schema, name
        assert got.equals(want), name
    same = (
        "n_events",
        "n_sessions",
        "n_positive_sessions",
        "splits",
        "val_start",
        "test_start",
        "sessions_after_test_end",
        "truncated_sessions",
        "longest_session",
        "events_not_read",
        "events_in_splits",
        "source",
        "timestamp_unit",
        "unlabeled_sessions_dropped",
        "unlabeled_events_dropped",
        "unlabeled_sessions_kept",
        "unlabeled_events_kept",
        "orphan_labels_dropped",
        "labels_never_known",
        "duplicate_rows",
        "entity_features",
        "busiest_entity_values",
        "zero_padded_ids",
    )
    assert {k: spark.report.get(k) for k in same} == {k: polars.report.get(k) for k in same}
    return polars


def tokens(prepared, field: str, splits=S.SPLITS) -> list[int]:
    frames = [
        pl.read_parquet(shard_files(prepared.datasets[s]), columns=[S.token_column(field)]) for s in splits
    ]
    return pl.concat(frames)[S.token_column(field)].explode().to_list()


TIMESTAMPS = {
    "datetime_us_naive": (T0_NS, lambda ns: pl.from_epoch(ns // 1_000, "us")),
    "datetime_ns_utc_before_1970": (T1922_NS, lambda ns: pl.from_epoch(ns, "ns").dt.replace_time_zone("UTC")),
    "epoch_ms": (T0_NS, lambda ns: ns // 10**6),
    "epoch_ns_before_1970": (T1922_NS, lambda ns: ns),
}


# The default run leaves out two encodings: the label-table tests below read the same edge_events as integer
# epoch milliseconds, and the entity test as naive microsecond datetimes. `make test-slow` runs them here too.
COVERED_BELOW = ("epoch_ms", "datetime_us_naive")


@pytest.mark.parametrize(
    "encoding", [pytest.param(e, marks=pytest.mark.slow) if e in COVERED_BELOW else e for e in TIMESTAMPS]
)
def test_parity_on_edge_cases(encoding, tmp_path):
    base, cast = TIMESTAMPS[encoding]
    events = edge_events(seed=len(encoding), base_ns=base)
    events = events.with_columns(cast(pl.col("ts_ns")).alias("timestamp")).drop("ts_ns")
    events = pl.concat([events, events.sample(7, seed=1)])  # exact copies (nulls, NaN) for duplicate_rows
    data = {
        "events": str(write_shards(events, tmp_path / "events")),
        "labels": None,
        "schema": SCHEMA.roles(),
    }
    prepared = run_both(data, tmp_path)
    assert prepared.report["duplicate_rows"] >= 7
    # The input really holds the cases the rules treat specially.
    assert prepared.report["truncated_sessions"] > 0
    assert UNKNOWN in tokens(prepared, "event_type", ("val", "test"))
    assert {MISSING, NAN} <= set(tokens(prepared, "amount"))
    assert MISSING in set(tokens(prepared, "merchant")) & set(tokens(prepared, "flag"))
    assert max(tokens(prepared, "amount")) == prepared.spec.vocab_size("amount") - 1  # +inf, the top bucket
    assert events.select(pl.struct("session_id", "timestamp").is_duplicated().any()).item()  # ties
    assert len(prepared.spec.edges["refund"]) == 2 and prepared.spec.edges["fee"] == []


def test_parity_on_integer_hours(tmp_path):
    """A log counted in steps (a simulator's hours, data.schema.timestamp_unit=h): both engines read the same
    times, ties of equal steps included; and past unread columns named as their working columns (review 167)."""
    events = edge_events(seed=9, base_ns=T0_NS)
    events = events.with_columns(
        (pl.col("ts_ns") // 3_600_000_000_000).alias("timestamp"),
        *(pl.lit(7).alias(c) for c in ("__path", "__file_row", "__offset", "__row")),
    ).drop("ts_ns")
    data = {
        "events": str(write_shards(events, tmp_path / "events")),
        "labels": None,
        "schema": replace(SCHEMA, timestamp_unit="h").roles(),
    }
    prepared = run_both(data, tmp_path)
    assert prepared.report["timestamp_unit"] == "h"
    assert events.select(pl.struct("session_id", "timestamp").is_duplicated().any()).item()


def test_parity_on_parts_typed_apart_but_alike(tmp_path):
    """Days written by different jobs (dogfood 71): integers of another width, a numeric column as floats in one
    part, a column with no value in a part (Arrow's Null type, or floats of no value), text as categories beside
    strings, an event field a part lacks, columns no role reads that one part gained or two typed apart
    (dogfood 171 and 173: refused by both engines), and a number as float32 in one part (read as its shortest
    decimal) read alike in both engines."""
    events = edge_events(seed=5, base_ns=T0_NS)
    events = events.with_columns(pl.from_epoch("ts_ns", "ns").alias("timestamp")).drop("ts_ns")
    shards = write_shards(events, tmp_path / "events")
    retyped = {
        "part-0.parquet": [
            pl.col("merchant").cast(pl.Int32),
            pl.col("items").cast(pl.Float64),
            pl.lit(3).alias("app"),
            pl.col("device").cast(pl.Categorical),  # pandas' category beside text (dogfood 173)
        ],
        "part-1.parquet": [
            pl.col("items").cast(pl.Int16),
            pl.col("refund")
            .cast(pl.Float32)
            .cast(pl.Float64),  # widened upstream, read as the decimals (review 260)
            pl.col("label").cast(pl.Int32),
            pl.lit(None, pl.Float64).alias("device"),  # no value, as pandas writes an empty category
        ],
        "part-2.parquet": [
            # float32 beside float64, at the 0.9 edge a value that Java prints apart from its shortest decimal
            # (3.27320276E13 for 3.2732028e13), as Spark's own cast to text would read it
            pl.when(pl.int_range(pl.len()) % 3 == 0)
            .then(3.2732028e13)
            .otherwise("amount")
            .cast(pl.Float32)
            .alias("amount"),
            pl.lit(None).alias("fee"),
            pl.lit(None).alias("device"),
            pl.lit("v2").alias("app"),
        ],
    }
    for name, columns in retyped.items():
        pl.read_parquet(shards / name).with_columns(columns).write_parquet(shards / name)
    pl.read_parquet(shards / "part-1.parquet").drop("flag").write_parquet(
        shards / "part-1.parquet"
    )  # gained later
    assert pl.read_parquet_schema(shards / "part-2.parquet")["device"] == pl.Null
    data = {"events": str(shards), "labels": None, "schema": SCHEMA.roles()}
    run_both(data, tmp_path)
    # Nanosecond datetimes beside microsecond ones, which Spark reads as integers: refused by name (review 74).
    part = shards / "part-1.parquet"
    pl.read_parquet(part).with_columns(pl.col("timestamp").dt.cast_time_unit("us")).write_parquet(part)
    with pytest.raises(
        DataValidationError, match=r"part-1.parquet.*\) hold columns that Spark cannot read as one"
    ):
        preprocess(data, FEATURES, tmp_path / "ns", SPARK)


@pytest.mark.parametrize("on_unlabeled", ["drop", "keep", "negative"])
def test_parity_with_label_table_unlabeled_policy_and_test_end(on_unlabeled, tmp_path):
    events = (
        edge_events(seed=11, base_ns=T0_NS)
        .with_columns(
            (pl.col("ts_ns") // 10**6).alias("timestamp"), pl.col("session_id").str.slice(1).cast(pl.Int64)
        )
        .drop("ts_ns", "label")
    )
    sids = events["session_id"].unique().sort()
    labels = pl.DataFrame({"session_id": sids, "label": (sids % 5 == 0)}).filter(sids % 9 != 4)
    if on_unlabeled == "negative":  # a chargeback file as it comes: the frauds, no label column
        labels = labels.filter("label").drop("label")
    labels.write_parquet(tmp_path / "labels.parquet")
    starts = events.group_by("session_id").agg(pl.col("timestamp").min())["timestamp"].sort()
    test_end = datetime.fromtimestamp(int(starts[int(0.9 * len(starts))]) / 1e3, tz=timezone.utc)
    shards = write_shards(events, tmp_path / "events", n=4)
    # An empty part as a pandas writer leaves it, every column Null-typed: left out by both engines alike.
    pq.write_table(pa.table({c: pa.array([], pa.null()) for c in events.columns}), shards / "part-9.parquet")
    data = {
        "events": str(shards),
        "labels": str(tmp_path / "labels.parquet"),
        "schema": SCHEMA.roles(),
        "policy": {"on_unlabeled": on_unlabeled},
        "split": {"test_end": test_end.replace(tzinfo=None).isoformat()},
    }
    prepared = run_both(data, tmp_path)
    said = "unlabeled_sessions_negative" if on_unlabeled == "negative" else "unlabeled_sessions_dropped"
    assert prepared.report[said] > 0 and prepared.report["sessions_after_test_end"] > 0
    # keep: the unlabelled training sessions stay, with a null label; val and test drop theirs.
    kept = prepared.report.get("unlabeled_sessions_kept", 0)
    nulls = [pl.read_parquet(shard_files(prepared.datasets[s]))[S.LABEL].null_count() for s in S.SPLITS]
    assert nulls == [kept, 0, 0] and (kept > 0) == (on_unlabeled == "keep")


def test_parity_on_synthetic_data(tmp_path):
    data = synthetic.generate(400, seed=7)
    events = tmp_path / "events +%20 é"  # Spark globs and URL-encodes paths; the files must still be found
    write_shards(data.events, events, name="part {}+é.parquet")
    data.labels.write_parquet(tmp_path / "labels.parquet")
    cfg = {"events": str(events), "labels": str(tmp_path / "labels.parquet"), "schema": S.SYNTHETIC.roles()}
    run_both(cfg, tmp_path, FEATURES | {"max_len": 32, "n_buckets": 8, "tail_quantiles": [0.98, 0.99]})


ENTITY_SCHEMA = replace(SCHEMA, entities=("ip", "card", "voucher"), label_time="label_time")
ENTITY = {"windows": ["1h", "7d"], "risk": True, "smoothing": 5}


def entity_events(seed: int) -> pl.DataFrame:
    """:func:`edge_events` on a few thousand events, with an IP (strings) and a card (integer ids) shared
    between sessions, each mostly one per session, sometimes another, sometimes null, and a voucher that no
    event carries."""
    events = edge_events(seed, T0_NS, n_sessions=400)
    rng = np.random.default_rng(seed)
    sid = events["session_id"].str.slice(1).cast(pl.Int64).to_numpy()
    n = events.height

    def shared(pool: int, per_session: np.ndarray, p_other: float, p_null: float) -> np.ndarray:
        value = np.where(rng.random(n) < p_other, rng.integers(0, pool, n), per_session[sid])
        return np.where(rng.random(n) < p_null, -1, value)

    ip = shared(40, rng.integers(0, 40, 400), 0.1, 0.1)
    card = shared(60, rng.integers(0, 60, 400), 0.05, 0.2)
    return events.with_columns(
        pl.Series("ip", [f"10.0.{x % 7}.{x}" if x >= 0 else None for x in ip]),
        pl.Series("card", card).replace(-1, None) + 4_000_000_000,  # ids past int32
        pl.from_epoch(pl.col("ts_ns") // 1_000, "us").alias("timestamp"),
        pl.lit(None, pl.String).alias("voucher"),
    ).drop("ts_ns", "label")


@pytest.mark.parametrize("on_unlabeled", ["drop", "negative", pytest.param("keep", marks=pytest.mark.slow)])
def test_parity_with_entity_features(on_unlabeled, tmp_path):
    """Entity features from a label table with label times (label_delay where one is null), risk on, some
    sessions without a label (dropped, kept: their events count, their missing label is never known, or read as
    legitimate, and a fraud charged back after its delay as legitimate until then): the same spec (edges fitted on
    the features) and datasets from both engines, though the Spark engine runs the kernel on several hash parts
    and the Polars engine on one."""
    events = entity_events(seed=5)
    ends = events.group_by("session_id").agg(pl.col("timestamp").max())
    rng = np.random.default_rng(5)
    sid = ends["session_id"].str.slice(1).cast(pl.Int64)
    hours = rng.integers(0, 96, ends.height).tolist()
    labels = ends.select(
        "session_id",
        (sid % 5 == 0).alias("label"),
        pl.Series([timedelta(hours=h) if h < 72 else None for h in hours]).alias("after"),
    ).with_columns((ends["timestamp"] + pl.col("after")).alias("label_time"))
    labels.filter(sid % 9 != 4).drop("after").write_parquet(tmp_path / "labels.parquet")
    data = {
        "events": str(write_shards(events, tmp_path / "events")),
        "labels": str(tmp_path / "labels.parquet"),
        "schema": ENTITY_SCHEMA.roles(),
        "policy": {"on_unlabeled": on_unlabeled, "label_delay": "2d"},
    }
    prepared = run_both(data, tmp_path, FEATURES | {"entity": ENTITY})
    spec = prepared.spec
    assert spec.entity is not None
    if on_unlabeled == "negative":
        assert (
            prepared.report["unlabeled_sessions_negative"] > 0
            and prepared.report["labels_known_after_delay"] > 0
        )
    else:
        assert prepared.report["unlabeled_sessions_dropped"] > 0
    assert len(list((tmp_path / "spark" / ENTITY_DIR / "0").glob("*.parquet"))) > 1  # several kernel parts
    # The features carry something: counts, labels known in the window, both entities' edges.
    assert prepared.events is not None
    most = prepared.events.select(
        pl.col(S.entity_feature(c, k, "7d")).max().alias(f"{c}.{k}")
        for c in ("ip", "card")
        for k in ("events", "known", "fraud", "distinct_ip" if c == "card" else "distinct_card")
    ).collect()
    assert all(v > 0 for v in most.row(0)), most
    assert all(len(spec.edges[S.entity_feature(c, "events", "7d")]) > 1 for c in ("ip", "card"))
    assert MISSING in tokens(prepared, S.entity_feature("card", "rate", "1h"))
    assert set(tokens(prepared, S.entity_feature("voucher", "events", "7d"))) == {MISSING}


def _error(data_cfg, out, engine) -> str:
    with pytest.raises(DataValidationError) as info:
        preprocess(data_cfg, FEATURES, out, engine)
    return str(info.value)


BREAKAGES = {  # (timestamp encoding, the change at rows 5 and 6, what the message says)
    "null_timestamp": (
        "datetime",
        lambda: pl.when(pl.col("i") == 5).then(None).otherwise(pl.col("timestamp")).alias("timestamp"),
        "1 row(s) have a null timestamp",
    ),
    "null_event_type": (
        "datetime",
        lambda: pl.when(pl.col("i") == 5).then(None).otherwise(pl.col("event_type")).alias("event_type"),
        "1 row(s) have a null event type",
    ),
    "blank_session_id": (
        "datetime",
        lambda: (
            pl.when(pl.col("i") == 5)
            .then(pl.lit(""))
            .when(pl.col("i") == 6)
            .then(pl.lit("  "))
            .otherwise(pl.col("session_id"))
            .alias("session_id")
        ),
        "2 row(s) have a blank session id (empty, or spaces only)",
    ),
    "mixed_label": (
        "datetime",
        lambda: pl.when(pl.col("i") == 5).then(1 - pl.col("label")).otherwise(pl.col("label")).alias("label"),
        "not constant",
    ),
    "before_the_range": (
        "datetime",
        lambda: (
            pl.when(pl.col("i").is_in([5, 6]))
            .then(datetime(1850, 1, 1))
            .otherwise(pl.col("timestamp"))
            .alias("timestamp")
        ),
        "2 row(s) have a timestamp outside",
    ),
    # 9e18 ms and the int64 minimum would wrap as microseconds; microseconds among milliseconds land in year 55970.
    "epoch_overflow": (
        "ms",
        lambda: (
            pl.when(pl.col("i") == 5)
            .then(9 * 10**18)
            .when(pl.col("i") == 6)
            .then(-(2**63))
            .when(pl.col("i") == 7)
            .then(pl.col("timestamp") * 1000)
            .otherwise(pl.col("timestamp"))
            .alias("timestamp")
        ),
        (
            "3 row(s) have a timestamp outside the plausible range 1900-01-01 to 2100-01-01 "
            "(data.schema.timestamp_range); integer epochs are read as milliseconds "
            "(data.schema.timestamp_unit=auto chose 'ms' from the first values)"
        ),
    ),
}


def test_parity_with_label_times_on_the_fraud_events_alone(tmp_path):
    """Labels and label times on the events under on_mixed_labels=any, dated on the fraudulent events alone (the
    others null; one session's fraud events dated apart): both engines know a fraud session from its earliest
    date, which the entity risk features read."""
    events = entity_events(seed=6)
    rng = np.random.default_rng(6)
    sid = events["session_id"].str.slice(1).cast(pl.Int64)
    fraud = (sid % 5 == 0) & pl.Series(rng.random(events.height) < 0.5)
    after = pl.Series(rng.integers(1, 96, events.height)).cast(pl.Int64)
    events = events.with_columns(
        fraud.cast(pl.Int64).alias("label"),
        pl.when(fraud).then(pl.col("timestamp") + pl.duration(hours=after)).alias("label_time"),
    )
    data = {
        "events": str(write_shards(events, tmp_path / "events")),
        "labels": None,
        "schema": ENTITY_SCHEMA.roles(),
        "policy": {"on_mixed_labels": "any", "label_delay": "2d"},
    }
    prepared = run_both(data, tmp_path, FEATURES | {"entity": ENTITY})
    assert prepared.report["mixed_label_sessions"] > 0 and prepared.report["n_positive_sessions"] > 0


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_validation_errors_are_the_shared_ones(breakage, tmp_path):
    encoding, change, says = BREAKAGES[breakage]
    ts = pl.from_epoch(pl.col("ts_ns"), "ns") if encoding == "datetime" else pl.col("ts_ns") // 10**6
    events = edge_events(seed=3, base_ns=T0_NS).with_columns(ts.alias("timestamp"))
    events = events.drop("ts_ns").with_row_index("i").with_columns(change()).drop("i")
    data = {
        "events": str(write_shards(events, tmp_path / "events")),
        "labels": None,
        "schema": SCHEMA.roles(),
    }
    message = _error(data, tmp_path / "polars", {"engine": "polars"})
    assert message == _error(data, tmp_path / "spark", SPARK)
    assert says in message


def test_both_engines_refuse_blank_entity_values_alike(tmp_path):
    """Entity values padded with spaces (a no-break space too) or invisible characters, empty, or holding a control
    character were taken in training as other entities, where the service refused them (dogfood 195: wallets
    padded by one export read as two); both engines refuse them, in the same words, and a text that spells no value
    (dogfood 277)."""
    changed = (
        pl.when(pl.col("i") == 5)
        .then(pl.lit(" 10.0.1.1"))
        .when(pl.col("i") == 6)
        .then(pl.lit("10.0.1.1\u00a0"))
        .when(pl.col("i") == 7)
        .then(pl.lit(""))
        .when(pl.col("i") == 8)
        .then(pl.lit("10.0\x01.1"))
        .when(pl.col("i") == 9)
        .then(pl.lit("10.0.1.1\u200b"))
        .when(pl.col("i") == 10)
        .then(pl.lit("\U000e0041"))  # a tag character: past U+FFFF, written otherwise in Java's regex
        .when(pl.col("i") == 11)
        .then(pl.lit("10.0\u200c.1.1"))  # within a value, as Persian writes it: not refused
        .when(pl.col("i") == 12)
        .then(pl.lit("NULL"))  # an export's null written as text (dogfood 277)
        .when(pl.col("i") == 13)
        .then(pl.lit("nan"))
        .when(pl.col("i") == 14)
        .then(pl.lit("\\N"))  # a SQL dump's null
        .otherwise(pl.col("ip"))
    )
    events = entity_events(seed=5).with_row_index("i").with_columns(changed.alias("ip")).drop("i")
    ends = events.group_by("session_id").agg(pl.col("timestamp").max())
    labels = ends.select("session_id", pl.lit(0).alias("label"), pl.col("timestamp").alias("label_time"))
    labels.write_parquet(tmp_path / "labels.parquet")
    data = {
        "events": str(write_shards(events, tmp_path / "events")),
        "labels": str(tmp_path / "labels.parquet"),
        "schema": ENTITY_SCHEMA.roles(),
        "policy": {"label_delay": "2d"},
    }
    message = _error(data, tmp_path / "polars", {"engine": "polars"})
    assert message == _error(data, tmp_path / "spark", SPARK)
    assert "column 'ip': 9 row(s) have an entity value that is empty, spells no value as text" in message


def test_inputs_the_spark_engine_refuses(tmp_path):
    events = edge_events(seed=4, base_ns=T0_NS)
    csv = tmp_path / "events.csv"
    events.with_columns(pl.from_epoch(pl.col("ts_ns"), "ns").alias("timestamp")).drop("ts_ns").write_csv(csv)
    data = {"events": str(csv), "labels": None, "schema": SCHEMA.roles()}
    assert "Parquet only" in _error(data, tmp_path / "o", SPARK)
    iso = tmp_path / "iso.parquet"
    events.with_columns(pl.from_epoch(pl.col("ts_ns"), "ns").dt.to_string().alias("timestamp")).drop(
        "ts_ns"
    ).write_parquet(iso)
    assert "datetime or integer epoch" in _error(data | {"events": str(iso)}, tmp_path / "o", SPARK)


def test_exact_quantiles_across_range_partitions(spark):
    """The k-th value by (range partition, position) numbering, against a sort on the driver."""
    from seqfraud.spark_engine import _exact_quantiles

    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=3_000), 1)  # many ties
    a[rng.random(a.size) < 0.05] = np.nan
    a[:3] = [np.inf, -np.inf, np.inf]
    b = np.full(a.size, np.nan)
    b[:2] = [2.0, 1.0]
    frame = spark.createDataFrame(
        pl.DataFrame({"a": a, "b": b, "c": pl.Series([None] * a.size, dtype=pl.Float64)}).to_arrow()
    ).repartition(7)
    probs = [0.001, 0.25, 0.5, 0.75, 0.98, 0.99, 0.995, 0.999]
    got = _exact_quantiles(frame, ("a", "b", "c"), probs)
    for name, values in (("a", a), ("b", b)):
        finite = np.sort(values[np.isfinite(values)])
        assert got[name] == [finite[quantile_rank(q, finite.size)] for q in probs], name
    assert got["c"] == [None] * len(probs)
    assert (
        spark.sparkContext.defaultParallelism == 2 and int(spark.conf.get("spark.sql.shuffle.partitions")) > 1
    )


def test_spark_reads_floats_as_the_polars_engine_does(spark):
    """Float32 values, and float32 values widened to doubles upstream, read as their shortest decimals by both
    engines alike (review 260); other doubles, integral ones, NaN and nulls as they are."""
    from seqfraud.data.events import as_float64
    from seqfraud.spark_engine import SparkEngine, _float32_decimals

    values = [0.3, 12.99, 3.2732028e13, 7.0, 0.1 + 0.2, None, float("nan"), float("inf")]
    frame = pl.DataFrame(
        {
            "f": pl.Series(values, dtype=pl.Float32),
            "w": pl.Series(values, dtype=pl.Float32).cast(pl.Float64),
            "d": pl.Series(values, dtype=pl.Float64),
        }
    )
    want = frame.select(as_float64(c, frame.schema[c], True) for c in frame.columns)
    session = (
        SparkEngine().spark
    )  # the fixture's, with the engine's settings: its Python workers run this one
    got = pl.from_arrow(
        _float32_decimals(session.createDataFrame(frame.to_arrow()), ["f", "w", "d"]).toArrow()
    )
    assert got.equals(want), (got, want)
    assert want["w"].to_list()[:2] == [0.3, 12.99] and want["d"].to_list()[4] == 0.1 + 0.2


def test_spark_takes_file_names_literally(spark, tmp_path):
    """Spark globs the paths it reads; a name with glob characters must still name just its own file."""
    from seqfraud.spark_engine import _escape_glob, _local_uri

    for name in ("a[1].parquet", "a1.parquet", "a*.parquet"):
        pl.DataFrame({"x": [name]}).write_parquet(tmp_path / name)
    for name in ("a[1].parquet", "a*.parquet"):
        rows = spark.read.parquet(_local_uri(_escape_glob(str(tmp_path / name)))).collect()
        assert [r.x for r in rows] == [name]


def test_both_engines_refuse_repeated_event_ids_alike(tmp_path):
    events = edge_events(seed=3, base_ns=T0_NS).with_columns(
        pl.from_epoch(pl.col("ts_ns"), "ns").alias("timestamp")
    )
    # Every session repeats ids (two per session, by row parity), nulls aside: both engines count the same rows.
    events = (
        events.drop("ts_ns")
        .with_row_index("i")
        .with_columns(pl.when(pl.col("i") % 7 == 0).then(None).otherwise(pl.col("i") % 2).alias("tx"))
    )
    data = {
        "events": str(write_shards(events.drop("i"), tmp_path / "events")),
        "labels": None,
        "schema": replace(SCHEMA, event_id="tx").roles(),
    }
    message = _error(data, tmp_path / "polars", {"engine": "polars"})
    assert message == _error(data, tmp_path / "spark", SPARK)
    assert "column 'tx':" in message and "repeat the id of an earlier event of their session" in message


def test_a_master_spark_cannot_take_is_refused_before_spark_starts():
    """Spark's own refusal was a Java stack trace that ended "Java gateway process exited" (dogfood 125)."""
    from seqfraud.errors import ConfigError
    from seqfraud.spark_engine import SparkEngine

    for master in ("bogus", "local[x]", "spark://", "local 2"):
        with pytest.raises(
            ConfigError, match=f"preprocess.spark.master='{re.escape(master)}' is no Spark master"
        ):
            SparkEngine(master=master)
    for master in (
        "local",
        "local[2]",
        "local[*]",
        "local[4, 3]",
        "yarn",
        "spark://host:7077",
        "k8s://https://h",
        None,
    ):
        assert "spark" not in vars(SparkEngine(master=master))  # taken, not started


def test_a_csv_is_refused_before_spark_starts(tmp_path):
    """Spark takes seconds to start: an input it cannot read is refused first."""
    from seqfraud.spark_engine import SparkEngine

    (tmp_path / "e.csv").write_text("session_id,timestamp,event_type\n1,2026-01-01T00:00:00Z,x\n")
    engine = SparkEngine()
    with pytest.raises(DataValidationError, match="Parquet only"):
        engine.load({"events": str(tmp_path / "e.csv")}, SCHEMA)
    assert "spark" not in vars(engine)  # never started
