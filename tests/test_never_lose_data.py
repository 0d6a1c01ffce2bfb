"""The datasets of benchmarks/never_lose.py: shape, positive rate, the signal each kind is built on, and
seqfraud's own validation. No training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # after everything else: its scripts shadow no module

import never_lose as nl

SMALL = 300
LARGE = 4000  # enough positives (about 80) to measure a signal


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every kind at ``LARGE`` sessions, data seed 0: (build result, events, labels, truth)."""
    out = {}
    for kind in nl.KINDS:
        d = tmp_path_factory.mktemp(kind)
        result = nl.build(kind, LARGE, 0, d)
        out[kind] = (
            result,
            pl.read_parquet(d / "events.parquet"),
            pl.read_parquet(d / "labels.parquet"),
            pl.read_parquet(d / "truth.parquet"),
        )
    return out


def _per_session(events: pl.DataFrame, labels: pl.DataFrame, truth: pl.DataFrame, *aggs) -> pl.DataFrame:
    return (
        events.group_by(nl.SID)
        .agg(*aggs)
        .join(labels, on=nl.SID)
        .join(truth, on=nl.SID)
        .with_columns(pl.col(nl.LABEL).cast(pl.Int8))
    )


def _compose(overrides: list[str], tmp: Path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.data_dir={tmp / 'data'}"])


@pytest.mark.parametrize("kind", list(nl.KINDS))
def test_small_build_has_the_columns_and_passes_seqfraud_validation(kind, tmp_path):
    from seqfraud.config import plain
    from seqfraud.preprocess import preprocess, resolve_data_config

    result = nl.build(kind, SMALL, 1, tmp_path / "data")
    events = pl.read_parquet(tmp_path / "data" / "events.parquet")
    labels = pl.read_parquet(tmp_path / "data" / "labels.parquet")
    assert events.columns == [nl.SID, nl.TS, nl.ACTION, nl.CHANNEL, nl.MERCHANT, nl.VALUE]
    assert events.schema[nl.SID] in (pl.String, pl.Int64)
    assert events.schema[nl.TS].is_temporal() or events.schema[nl.TS] == pl.Int64
    assert [events.schema[c] for c in (nl.ACTION, nl.CHANNEL, nl.MERCHANT)] == [pl.String] * 3
    assert events.schema[nl.VALUE] == pl.Float64
    assert events[nl.ACTION].null_count() == 0 and events[nl.CHANNEL].null_count() == 0
    assert 0 < events[nl.VALUE].null_count() < events.height  # amounts only where an event has one
    assert labels.columns == [nl.SID, nl.LABEL] and labels.height == SMALL
    assert labels.schema[nl.SID] == events.schema[nl.SID]
    assert set(events[nl.SID].unique().to_list()) == set(labels[nl.SID].to_list())
    assert events[nl.TS].is_sorted()  # sessions interleaved in time order, as a log is
    assert 0.003 <= result["positive_rate"] <= 0.06

    cfg = _compose(result["overrides"], tmp_path)
    prepared = preprocess(
        resolve_data_config(plain(cfg.data)), plain(cfg.features), tmp_path / "run", plain(cfg.preprocess)
    )
    assert prepared.report["n_sessions"] == SMALL
    assert sum(c["sessions"] for c in prepared.report["splits"].values()) == SMALL
    assert set(prepared.spec.fields) >= {nl.ACTION, nl.CHANNEL, nl.MERCHANT, nl.VALUE}


def test_generator_kind_is_the_built_in_data(tmp_path):
    from seqfraud.config import plain
    from seqfraud.preprocess import preprocess, resolve_data_config

    result = nl.build(nl.GENERATOR, SMALL, 0, tmp_path / "data")
    assert result["overrides"] == [
        f"data.synthetic.dir={tmp_path / 'data'}",
        f"data.synthetic.sessions={SMALL}",
        "data.synthetic.seed=0",
    ]
    assert 0 < result["positive_rate"] < 0.2
    cfg = _compose(result["overrides"], tmp_path)
    data = resolve_data_config(plain(cfg.data))
    assert data["typologies"] == str(tmp_path / "data" / "typologies.parquet")
    prepared = preprocess(data, plain(cfg.features), tmp_path / "run", plain(cfg.preprocess))
    assert prepared.report["n_sessions"] == SMALL


@pytest.mark.parametrize("kind", list(nl.KINDS))
def test_positive_rate_time_range_and_drift(built, kind):
    _, events, labels, truth = built[kind]
    rate = labels[nl.LABEL].cast(pl.Float64).mean()
    assert 0.01 <= rate <= 0.03, rate
    assert 0.01 <= truth["fraud"].mean() <= 0.03
    assert (labels[nl.LABEL].cast(pl.Boolean) != truth["fraud"]).mean() < 0.01  # some noise, not much
    assert (labels[nl.LABEL].cast(pl.Boolean) != truth["fraud"]).sum() > 0
    ts = events[nl.TS]
    if ts.dtype.is_integer():
        per_day = 86_400_000 if ts.max() > 10**11 else 86_400  # epoch ms or s
        span_days = (ts.max() - ts.min()) / per_day
    else:
        span_days = (ts.max() - ts.min()).total_seconds() / 86_400
    assert 50 <= span_days <= 64
    # Drift: the channel mix moves from the first third of the log to the last.
    third = events.height // 3
    web_early = (events[nl.CHANNEL].head(third) == "web").mean()
    web_late = (events[nl.CHANNEL].tail(third) == "web").mean()
    assert web_early - web_late > 0.03


def test_amount_rule_threshold_is_the_label_and_falls_mid_bucket(built, tmp_path):

    from seqfraud.config import plain
    from seqfraud.preprocess import preprocess, resolve_data_config

    result, events, labels, truth = built["amount_rule"]
    threshold = result["params"]["threshold"]
    s = _per_session(
        events,
        labels,
        truth,
        pl.col(nl.VALUE).filter(pl.col(nl.ACTION) == "payment").max().fill_null(0.0).alias("max_pay"),
        pl.col(nl.VALUE).max().fill_null(0.0).alias("max_any"),
    )
    assert (s["fraud"] == (s["max_pay"] > threshold)).all()
    assert (
        average_precision_score(s[nl.LABEL], s["max_pay"] > threshold) > 0.65
    )  # the rule, under label noise
    assert average_precision_score(s[nl.LABEL], s["max_pay"]) > 0.6  # the amount as a score
    assert (s["max_any"] > threshold).sum() > (s["max_pay"] > threshold).sum()  # refunds above T are no fraud
    near = s.filter((pl.col("max_pay") / threshold - 1).abs() < 0.1)
    assert near["fraud"].sum() >= 5 and (~near["fraud"]).sum() >= 5  # both sides of T are populated

    # T sits well inside one of the value buckets that the default features fit on the training split.
    cfg = _compose(result["overrides"], tmp_path)
    prepared = preprocess(resolve_data_config(plain(cfg.data)), plain(cfg.features), tmp_path / "run")
    edges = np.asarray(prepared.spec.edges[nl.VALUE])
    i = int(np.searchsorted(edges, threshold))
    lo, hi = edges[i - 1], edges[i]
    assert lo < threshold < hi
    assert min(math.log(threshold / lo), math.log(hi / threshold)) > 0.3 * math.log(hi / lo)


def test_counts_signal_is_the_count_and_not_the_order(built):
    result, events, labels, truth = built["counts"]
    k = result["params"]["min_declines"]
    ranked = events.with_columns((pl.int_range(pl.len()).over(nl.SID) / pl.len().over(nl.SID)).alias("where"))
    declined = pl.col(nl.ACTION) == "auth_declined"
    s = _per_session(
        ranked,
        labels,
        truth,
        declined.sum().alias("declines"),
        pl.col("where").filter(declined).mean().alias("where_declined"),
        (pl.len() - declined.sum()).alias("others"),
    )
    assert (s["fraud"] == (s["declines"] >= k)).all()
    assert average_precision_score(s[nl.LABEL], s["declines"]) > 0.75
    assert s.filter(pl.col("declines").is_between(k - 2, k - 1)).height > s["fraud"].sum()  # near misses
    # Where the declines sit and how long the rest of the session is say nothing.
    with_declines = s.filter(pl.col("declines") > 0)
    assert 0.4 < roc_auc_score(with_declines["fraud"], with_declines["where_declined"]) < 0.6
    assert 0.4 < roc_auc_score(s["fraud"], s["others"]) < 0.6


def test_dispersion_signal_is_the_spread_not_the_level_or_counts(built):
    _, events, labels, truth = built["dispersion"]
    log_value = pl.col(nl.VALUE).log()
    s = _per_session(
        events,
        labels,
        truth,
        log_value.std().alias("spread"),
        log_value.median().alias("level"),
        pl.len().alias("n"),
        (pl.col(nl.ACTION) == "payment").sum().alias("payments"),
    ).fill_null(0.0)
    assert average_precision_score(s[nl.LABEL], s["spread"]) > 0.6
    assert roc_auc_score(s["fraud"], s["spread"]) > 0.95
    for noise in ("level", "n", "payments"):
        assert 0.4 < roc_auc_score(s["fraud"], s[noise]) < 0.6, noise
    span_days = s.join(
        events.group_by(nl.SID).agg(
            ((pl.col(nl.TS).max() - pl.col(nl.TS).min()).dt.total_seconds() / 86_400).alias("days")
        ),
        on=nl.SID,
    )["days"]
    assert span_days.median() > 3  # a week-long window, not a session of minutes


def test_order_signal_is_the_order_alone(built):
    _, events, labels, truth = built["order"]
    position = pl.int_range(pl.len()).over(nl.SID)
    ranked = events.with_columns(position.alias("at"))
    types = events[nl.ACTION].unique().sort().to_list()

    def first(name: str) -> pl.Expr:
        return pl.col("at").filter(pl.col(nl.ACTION) == name).min().alias(name)

    s = _per_session(
        ranked,
        labels,
        truth,
        *[(pl.col(nl.ACTION) == t).sum().alias(f"n_{t}") for t in types],
        *[first(t) for t in nl.TRIO],
        pl.len().alias("n"),
        pl.col(nl.VALUE).sum().alias("amount"),
        (pl.col(nl.TS).max() - pl.col(nl.TS).min()).alias("duration"),
    )
    rule = (pl.col("password_reset") < pl.col("add_card")) & (pl.col("add_card") < pl.col("payment"))
    s = s.with_columns(rule.fill_null(False).alias("rule"))
    assert (s["fraud"] == s["rule"]).all()
    assert average_precision_score(s[nl.LABEL], s["rule"].cast(pl.Int8)) > 0.75
    # The look-alikes: sessions with one each of the three, in another order. The counts of every type, the
    # length, amounts and duration are distributed alike in fraud and in them.
    trio = s.filter(pl.all_horizontal([pl.col(f"n_{t}") == 1 for t in nl.TRIO]))
    assert trio["fraud"].sum() == s["fraud"].sum() and trio.height > 4 * trio["fraud"].sum()
    for column in [*[f"n_{t}" for t in types if t not in nl.TRIO], "n", "amount", "duration"]:
        auc = roc_auc_score(trio["fraud"], trio[column].fill_null(0))
        assert 0.35 < auc < 0.65, (column, auc)
    # The five other orders all occur among the look-alikes.
    perms = {
        tuple(np.argsort([row[t] for t in nl.TRIO]))
        for row in trio.filter(~pl.col("fraud")).iter_rows(named=True)
    }
    assert len(perms) == 5 and (0, 1, 2) not in perms


def test_build_writes_the_overrides_and_rebuilds_only_on_change(tmp_path):
    first = nl.prepared_data("order", SMALL, 0, tmp_path)
    mtime = (tmp_path / "events.parquet").stat().st_mtime_ns
    assert nl.prepared_data("order", SMALL, 0, tmp_path) == first
    assert (tmp_path / "events.parquet").stat().st_mtime_ns == mtime
    assert f"data.events={tmp_path / 'events.parquet'}" in first["overrides"]
    assert "data.schema.session_id=sid" in first["overrides"] and "data.typologies=null" in first["overrides"]
    nl.prepared_data("order", SMALL + 1, 0, tmp_path)
    assert pl.read_parquet(tmp_path / "labels.parquet").height == SMALL + 1
    with pytest.raises(ValueError, match="unknown kind"):
        nl.build("nope", SMALL, 0, tmp_path)


def test_model_rows_and_verdict():
    rows = nl.model_rows(["default", "lightgbm", "gru"], ["long=model=gru,data.schema.numerical=[value,x]"])
    assert rows == {
        "default": [],
        "lightgbm": ["model=lightgbm"],
        "gru": ["model=gru"],
        "long": ["model=gru", "data.schema.numerical=[value,x]"],
    }
    assert nl.verdict([0.53, 0.55, 0.57], [0.55, 0.56, 0.57]).startswith("holds")  # -0.01, noise 0.02
    assert nl.verdict([0.40, 0.41, 0.42], [0.55, 0.56, 0.57]).startswith("LOSES")
    assert nl.verdict([0.6], [0.6]).startswith("holds") and nl.verdict([0.59], [0.6]).startswith("LOSES")


def test_a_finished_run_is_kept_only_for_the_commit_that_ran_it(tmp_path):
    """A rerun into an old ``--work`` reported runs of an older commit as today's (review 256): a finished run is
    kept only where this clean commit ran it, or with ``--keep-stale``."""
    run = tmp_path / "run"
    run.mkdir()
    assert not nl.reusable(run, "abc", False)
    (run / nl.DONE_FILE).write_text("12.5 abc")
    assert nl.finished_by(run) == "abc" and nl.reusable(run, "abc", False)
    assert not any(nl.reusable(run, commit, False) for commit in ("def", "abc-dirty", None))
    assert nl.reusable(run, "def", True)
    (run / nl.DONE_FILE).write_text("12.5")  # finished before the commit was recorded
    assert nl.finished_by(run) is None and not nl.reusable(run, "abc", False)
    (run / "metrics.json").write_text('{"model": "gru", "test": {}}')
    assert nl.load_run(run)["seconds"] == 12.5
