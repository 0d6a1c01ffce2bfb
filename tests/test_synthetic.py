"""The synthetic generator: its contract, and that each typology's signal is the one its name says."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from seqfraud.cli.synthetic import main as synthetic_cli
from seqfraud.data import synthetic as syn
from seqfraud.schema import LABEL_NOISE, TYPOLOGY
from seqfraud.schema import SYNTHETIC as S

N = 40_000
DEVICE, COUNTRY, METHOD = S.categorical
AMOUNT = S.numerical[0]
GAP = "__gap_s"


@pytest.fixture(scope="module")
def data() -> syn.SyntheticData:
    return syn.generate(N, seed=7)


@pytest.fixture(scope="module")
def ordered(data: syn.SyntheticData) -> pl.DataFrame:
    """Events in session/time order with their true typology and the gap since the previous event."""
    return (
        data.events.sort(S.session_id, S.timestamp)
        .join(data.typologies, on=S.session_id)
        .with_columns(
            (pl.col(S.timestamp).diff().over(S.session_id).dt.total_milliseconds() / 1000).alias(GAP)
        )
    )


def _of(frame: pl.DataFrame, *kinds: str) -> pl.DataFrame:
    return frame.filter(pl.col(TYPOLOGY).is_in(kinds))


def test_same_seed_same_frames_other_seed_differs():
    a, b, c = syn.generate(2000, seed=3), syn.generate(2000, seed=3), syn.generate(2000, seed=4)
    for name in ("events", "labels", "typologies"):
        assert getattr(a, name).equals(getattr(b, name))
    assert not a.events.equals(c.events)


def test_columns_and_types(data):
    assert data.events.schema == pl.Schema(
        {
            S.session_id: pl.String,
            S.timestamp: pl.Datetime("ms", "UTC"),
            S.event_type: pl.String,
            DEVICE: pl.String,
            COUNTRY: pl.String,
            METHOD: pl.String,
            AMOUNT: pl.Float64,
        }
    )
    assert data.labels.columns == [S.session_id, S.label]
    assert data.typologies.columns == [S.session_id, TYPOLOGY, LABEL_NOISE]
    assert set(data.events[S.event_type].unique()) <= set(syn.EVENT_TYPES)
    assert set(data.events[DEVICE].unique()) <= set(syn.DEVICES)
    assert set(data.events[COUNTRY].unique()) <= set(syn.COUNTRIES)
    assert set(data.events[METHOD].drop_nulls().unique()) == set(syn.PAYMENT_METHODS)
    assert data.events[S.session_id].str.contains(r"^s\d{7}$").all()


def test_every_kind_present_and_fraud_rate(data):
    counts = dict(data.typologies[TYPOLOGY].value_counts().iter_rows())
    for kind in (*syn.TYPOLOGIES, *syn.HARD_NEGATIVES):
        assert counts.get(kind, 0) >= 20, kind
    assert 0.01 <= sum(counts[t] for t in syn.TYPOLOGIES) / N <= 0.03


def test_labels_and_events_cover_the_same_sessions(data):
    ids = data.labels[S.session_id]
    assert ids.n_unique() == ids.len() == N
    assert data.typologies[S.session_id].equals(ids)
    assert set(data.events[S.session_id].unique()) == set(ids)
    assert set(data.labels[S.label].unique()) == {0, 1}
    lengths = data.events.group_by(S.session_id).len()["len"]
    assert lengths.min() >= 2 and lengths.max() <= 150 and 20 <= lengths.mean() <= 40


def test_label_noise_in_both_directions(data):
    t = data.labels.join(data.typologies, on=S.session_id).with_columns(
        pl.col(TYPOLOGY).is_in(syn.TYPOLOGIES).alias("fraud")
    )
    # The observed label is the true one flipped exactly where the noise flag says so.
    assert (t[S.label].cast(pl.Boolean) == (t["fraud"] ^ t[LABEL_NOISE])).all()
    missed = t.filter(pl.col("fraud"))[LABEL_NOISE].mean()
    false_alarm = t.filter(~pl.col("fraud"))[LABEL_NOISE]
    assert 0.02 <= missed <= 0.15
    assert false_alarm.sum() > 0 and false_alarm.mean() < 0.003


def test_rows_are_unordered_and_timestamps_tie(data):
    sorted_events = data.events.sort(S.session_id, S.timestamp)
    assert not data.events[S.session_id].equals(sorted_events[S.session_id])
    ties = data.events.height - data.events.select(S.session_id, S.timestamp).n_unique()
    assert 0 < ties < 0.05 * data.events.height


def test_missing_values_follow_the_event_type(data):
    e = data.events
    payment = pl.col(S.event_type).is_in(syn.PAYMENT_EVENTS)
    priced = pl.col(S.event_type).is_in(syn.AMOUNT_EVENTS)
    assert e.filter(~payment)[METHOD].null_count() == e.filter(~payment).height
    assert e.filter(payment)[METHOD].null_count() == 0
    assert e.filter(~priced)[AMOUNT].null_count() == e.filter(~priced).height
    assert e.filter(priced)[AMOUNT].null_count() == 0
    assert e.filter(priced)[AMOUNT].min() >= 0


def test_late_variant_and_new_event_types_only_late(data, ordered):
    boundary = syn.late_period_start()
    assert _of(ordered, syn.LATE_VARIANT)[S.timestamp].min() >= boundary
    new = ordered.filter(pl.col(S.event_type).is_in(syn.NEW_EVENT_TYPES))
    assert new[S.timestamp].min() >= boundary
    # Legit users take up the new events too, so the tokens alone are no rule.
    assert set(new[TYPOLOGY].unique()) == {syn.LATE_VARIANT, syn.HN_GIFT_CARD}


def test_sessions_span_the_whole_range(data):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ts = data.events[S.timestamp]
    assert start <= ts.min() < start + timedelta(days=1)
    assert start + timedelta(days=179) < ts.max() < start + timedelta(days=181)


def test_ato_order_differs_from_its_hard_negatives_only_in_order(ordered):
    pair = _of(ordered, syn.ATO_ORDER, syn.HN_ORDER)
    sessions = pair.group_by(TYPOLOGY).agg(pl.col(S.session_id).n_unique().alias("n"))
    n = dict(sessions.iter_rows())
    counts = (
        pair.group_by(TYPOLOGY, S.event_type)
        .len()
        .pivot(on=TYPOLOGY, index=S.event_type, values="len")
        .fill_null(0)
    )
    assert counts.height == len(set(pair[S.event_type]))
    for event, fraud, legit in counts.select(S.event_type, syn.ATO_ORDER, syn.HN_ORDER).iter_rows():
        assert abs(fraud / n[syn.ATO_ORDER] - legit / n[syn.HN_ORDER]) < 0.2, event
    gaps = pair.group_by(TYPOLOGY).agg(pl.col(GAP).median())
    median_gap = dict(gaps.iter_rows())
    assert 0.75 < median_gap[syn.ATO_ORDER] / median_gap[syn.HN_ORDER] < 1.33
    # The order itself: account changes before the checkout in the takeover, after it otherwise.
    when = pair.group_by(S.session_id, TYPOLOGY).agg(
        pl.col(S.timestamp).filter(pl.col(S.event_type) == "change_email").first().alias("email"),
        pl.col(S.timestamp).filter(pl.col(S.event_type) == "checkout_start").first().alias("checkout"),
    )
    assert (_of(when, syn.ATO_ORDER)["email"] <= _of(when, syn.ATO_ORDER)["checkout"]).all()
    assert (_of(when, syn.HN_ORDER)["email"] >= _of(when, syn.HN_ORDER)["checkout"]).all()


def test_bot_timing_is_fast_and_regular(ordered):
    per_session = ordered.group_by(S.session_id, TYPOLOGY).agg(
        pl.col(GAP).median().alias("median"), (pl.col(GAP).std() / pl.col(GAP).mean()).alias("cv")
    )
    stats = per_session.group_by(TYPOLOGY).agg(pl.col("median").median(), pl.col("cv").median())
    median, cv = ({k: row[i] for k, *row in stats.iter_rows()} for i in range(2))
    assert median[syn.BOT_TIMING] < median[syn.LEGIT] / 4
    # Power users are as quick but human-irregular, so speed alone is no rule.
    assert median[syn.HN_FAST] < 2 * median[syn.BOT_TIMING]
    assert cv[syn.BOT_TIMING] < 0.3 < cv[syn.HN_FAST]
    bot_events = set(_of(ordered, syn.BOT_TIMING)[S.event_type])
    assert bot_events <= set(_of(ordered, syn.LEGIT)[S.event_type])


def test_risky_context_is_the_device_country_pair(ordered):
    first = ordered.group_by(S.session_id, maintain_order=True).first()
    risky = pl.col(DEVICE) == syn.RISKY_DEVICE
    home = pl.col(COUNTRY) == syn.RISKY_COUNTRY
    assert _of(first, syn.RISKY_CONTEXT).select((risky & home).all()).item()
    assert _of(first, syn.HN_CONTEXT).select((risky ^ home).all()).item()
    legit = _of(first, syn.LEGIT)
    assert legit.filter(risky & ~home).height > 0 and legit.filter(home & ~risky).height > 0


def test_amount_spike_is_in_the_amounts(ordered):
    top = (
        ordered.group_by(S.session_id, TYPOLOGY)
        .agg(pl.col(AMOUNT).max())
        .group_by(TYPOLOGY)
        .agg(pl.col(AMOUNT).median())
    )
    amount = dict(top.iter_rows())
    assert amount[syn.AMOUNT_SPIKE] > amount[syn.HN_AMOUNT] > 3 * amount[syn.LEGIT]


def test_cli_writes_the_three_files(tmp_path, capsys):
    synthetic_cli(["--sessions", "300", "--seed", "1", "--out", str(tmp_path / "a"), "--days", "30"])
    assert "sessions=300" in capsys.readouterr().out
    for name in ("events", "labels", "typologies"):
        assert pl.read_parquet(tmp_path / "a" / f"{name}.parquet").height > 0
    run = subprocess.run(
        [sys.executable, "-m", "seqfraud", "synthetic", "--sessions", "50", "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sessions=50" in run.stdout
    written = pl.read_parquet(tmp_path / "b" / "labels.parquet")
    assert written.equals(syn.generate(50).labels)
