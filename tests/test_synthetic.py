"""The synthetic generator: its contract, and that each typology's signal is the one its name says."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from seqfraud.cli.synthetic import main as synthetic_cli
from seqfraud.data import synthetic as syn
from seqfraud.schema import LABEL_NOISE, SYNTHETIC_ENTITIES, SYNTHETIC_LABEL_TIME, TYPOLOGY
from seqfraud.schema import SYNTHETIC as S

N = 40_000
DEVICE, COUNTRY, METHOD = S.categorical
AMOUNT = S.numerical[0]
ACCOUNT, DEVICE_ID, IP = SYNTHETIC_ENTITIES
GAP = "__gap_s"
START, END, WEEK = "__start", "__end", "__week"


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


@pytest.fixture(scope="module")
def sessions(data: syn.SyntheticData) -> pl.DataFrame:
    """One row per session: its entities, start and end, and its true typology."""
    return (
        data.events.group_by(S.session_id)
        .agg(
            pl.col(ACCOUNT).first(),
            pl.col(DEVICE_ID).first(),
            pl.col(IP).first(),
            pl.col(S.timestamp).min().alias(START),
            pl.col(S.timestamp).max().alias(END),
        )
        .with_columns(pl.col(START).dt.truncate("7d").alias(WEEK))
        .join(data.typologies, on=S.session_id)
    )


def _of(frame: pl.DataFrame, *kinds: str) -> pl.DataFrame:
    return frame.filter(pl.col(TYPOLOGY).is_in(kinds))


def _per_entity(sessions: pl.DataFrame, column: str) -> pl.DataFrame:
    """Per value of an entity column: its accounts (all time, and the most in one week), devices and IPs, its
    active span, its share of weekend sessions, and whether ring or shared-entity sessions use it."""
    weekly = sessions.group_by(column, WEEK).agg(pl.col(ACCOUNT).n_unique().alias("week_accounts"))
    return (
        sessions.group_by(column)
        .agg(
            pl.col(ACCOUNT).n_unique().alias("accounts"),
            pl.col(DEVICE_ID, IP).n_unique().name.suffix("s"),
            ((pl.col(START).max() - pl.col(START).min()).dt.total_hours() / 24).alias("span_days"),
            (pl.col(TYPOLOGY) == syn.ENTITY_RING).any().alias("ring"),
            (pl.col(TYPOLOGY) == syn.HN_SHARED).any().alias("shared"),
            (pl.col(TYPOLOGY) == syn.HN_SHARED).all().alias("only_shared"),
            (pl.col(START).dt.weekday() >= 6).mean().alias("weekend"),
        )
        .join(weekly.group_by(column).agg(pl.col("week_accounts").max()), on=column)
    )


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
            ACCOUNT: pl.String,
            DEVICE_ID: pl.String,
            IP: pl.String,
        }
    )
    assert data.labels.schema == pl.Schema(
        {S.session_id: pl.String, S.label: pl.Int8, SYNTHETIC_LABEL_TIME: pl.Datetime("ms", "UTC")}
    )
    assert data.typologies.columns == [S.session_id, TYPOLOGY, LABEL_NOISE]
    assert set(data.events[S.event_type].unique()) <= set(syn.EVENT_TYPES)
    assert set(data.events[DEVICE].unique()) <= set(syn.DEVICES)
    assert set(data.events[COUNTRY].unique()) <= set(syn.COUNTRIES)
    assert set(data.events[METHOD].drop_nulls().unique()) == set(syn.PAYMENT_METHODS)
    assert data.events[S.session_id].str.contains(r"^s\d{7}$").all()
    assert data.events.select(SYNTHETIC_ENTITIES).null_count().sum_horizontal().item() == 0
    assert data.events[ACCOUNT].str.contains(r"^a\d{7}$").all()
    assert data.events[DEVICE_ID].str.contains(r"^d\d{6}$").all()
    assert data.events[IP].str.contains(r"^10\.\d{1,3}\.\d{1,3}\.\d{1,3}$").all()


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
    # The longest template (login, profile, a 140-event shop, checkout, logout) has 157 events.
    assert lengths.min() >= 2 and lengths.max() <= 157 and 20 <= lengths.mean() <= 40


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


def test_accounts_recur_on_a_few_devices_of_their_own(sessions):
    per_account = sessions.group_by(ACCOUNT).agg(
        pl.len().alias("n"),
        ((pl.col(START).max() - pl.col(START).min()).dt.total_days()).alias("span_days"),
    )
    # Most sessions belong to accounts seen again, often weeks apart: account histories exist.
    assert per_account.filter(pl.col("n") >= 2)["n"].sum() > 0.9 * N
    assert per_account["n"].median() >= 3 and per_account["span_days"].median() >= 30
    # An account on its own (no ring victim, no shared setting) uses 1-3 devices, and a device of its own
    # serves that account alone.
    plain = sessions.filter(
        ~pl.col(ACCOUNT).is_in(_of(sessions, syn.ENTITY_RING, syn.HN_SHARED)[ACCOUNT].implode())
    )
    devices = plain.group_by(ACCOUNT).agg(pl.col(DEVICE_ID).n_unique())[DEVICE_ID]
    assert devices.min() == 1 and devices.max() == 3 and 1.2 < devices.mean() < 2.0
    shared = set(_of(sessions, syn.ENTITY_RING, syn.HN_SHARED)[DEVICE_ID])
    own = _per_entity(sessions, DEVICE_ID).filter(~pl.col(DEVICE_ID).is_in(list(shared)))
    assert own["accounts"].max() == 1


def test_a_session_keeps_its_entities_and_changes_ip_only_with_country(data):
    per_session = data.events.group_by(S.session_id).agg(pl.col(ACCOUNT, DEVICE_ID, IP, COUNTRY).n_unique())
    assert per_session[ACCOUNT].max() == 1 and per_session[DEVICE_ID].max() == 1
    # The IP changes exactly where a session hops (VPN, roaming), mostly to another country.
    moved = per_session.filter(pl.col(IP) > 1)
    assert 0 < moved.height < 0.01 * N
    assert moved[IP].max() == 2 and (moved[COUNTRY] > 1).mean() > 0.8
    assert (per_session.filter(pl.col(COUNTRY) > 1)[IP] == 2).all()


def test_ring_devices_and_ips_serve_many_accounts_within_a_week(sessions):
    for column in (DEVICE_ID, IP):
        entities = _per_entity(sessions, column)
        ring = entities.filter(pl.col("ring"))
        assert ring["week_accounts"].median() >= 5 and ring["week_accounts"].max() >= 10, column
        assert ring["span_days"].max() <= syn.RING_DAYS[1] + 1, column
        # Outside rings and shared settings, an entity stays with its account or household.
        assert entities.filter(~pl.col("ring") & ~pl.col("shared"))["accounts"].max() <= 4, column
    typical = _per_entity(_of(sessions, syn.LEGIT), DEVICE_ID)["accounts"]
    assert typical.median() == 1 and typical.quantile(0.99) <= 3
    # The victims are accounts with lives of their own: most also have sessions outside the ring.
    victims = _of(sessions, syn.ENTITY_RING)[ACCOUNT]
    elsewhere = _of(sessions, syn.LEGIT).filter(pl.col(ACCOUNT).is_in(victims.implode()))
    assert elsewhere[ACCOUNT].n_unique() > 0.7 * victims.n_unique()


def test_legitimately_shared_entities_share_the_ring_pattern(sessions):
    devices = _per_entity(sessions, DEVICE_ID).filter(pl.col("only_shared"))
    ips = _per_entity(sessions, IP).filter(pl.col("only_shared"))
    # Family devices: 2-4 accounts over months. Public terminals: many accounts in a week, like a ring's.
    family = devices.filter(pl.col("accounts").is_between(2, 4) & (pl.col("span_days") > 60))
    assert family.height >= 5
    assert devices.filter(pl.col("week_accounts") >= 5).height >= 1
    # Office NATs: dozens of accounts on their own devices over months, on working days (a public terminal's
    # IP has one device). Public wifi: many accounts within days.
    offices = ips.filter(
        (pl.col("accounts") >= 12) & (pl.col("span_days") > 60) & (pl.col(f"{DEVICE_ID}s") > 1)
    )
    assert offices.height >= 1 and (offices["weekend"] < 0.1).all()
    assert ips.filter((pl.col("accounts") >= 5) & (pl.col("span_days") <= 3)).height >= 5
    assert ips["week_accounts"].max() >= 10


def test_ring_sessions_look_legit_on_their_own(ordered):
    """Length, event mix, timing, amounts and context of a ring session match plain legit ones."""
    per_session = (
        _of(ordered, syn.LEGIT, syn.ENTITY_RING)
        .group_by(S.session_id, TYPOLOGY)
        .agg(
            pl.len().alias("events"),
            pl.col(GAP).median().alias("gap"),
            pl.col(AMOUNT).max().alias("top_amount"),
            pl.col(S.timestamp).first().dt.hour().alias("hour"),
            *[(pl.col(S.event_type) == e).any().alias(e) for e in ("login", "view_item", "payment_attempt")],
            *[(pl.col(c).first() == v).alias(f"{c}={v}") for c, v in ((DEVICE, "mobile"), (COUNTRY, "US"))],
            (pl.col(METHOD).drop_nulls().first() == "card").alias("card"),
        )
    )
    ring, legit = _of(per_session, syn.ENTITY_RING), _of(per_session, syn.LEGIT)
    assert ring.height >= 100
    for column in ("events", "gap", "top_amount", "hour"):
        assert 0.7 < ring[column].median() / legit[column].median() < 1.4, column
    shares = [c for c in per_session.columns if per_session.schema[c] == pl.Boolean]
    for column in shares:
        assert abs(ring[column].mean() - legit[column].mean()) < 0.12, column


def test_label_times_are_chargeback_dates_of_the_observed_positives(data, sessions):
    t = data.labels.join(sessions, on=S.session_id)
    positive = t.filter(pl.col(S.label) == 1)
    assert t.filter(pl.col(S.label) == 0)[SYNTHETIC_LABEL_TIME].null_count() == t.height - positive.height
    delay = (positive[SYNTHETIC_LABEL_TIME] - positive[END]).dt.total_milliseconds() / 86_400_000
    assert delay.null_count() == 0
    assert syn.CHARGEBACK_DAYS[0] <= delay.min() and delay.max() <= syn.CHARGEBACK_DAYS[1]
    assert 10 < delay.median() < 30
    # False chargebacks are chargebacks too.
    false_positive = positive.filter(~pl.col(TYPOLOGY).is_in(syn.TYPOLOGIES))
    assert false_positive.height > 0 and false_positive[SYNTHETIC_LABEL_TIME].null_count() == 0


def test_the_new_kinds_are_wired_in():
    assert syn.ENTITY_RING in syn.TYPOLOGIES and syn.HN_SHARED in syn.HARD_NEGATIVES
    assert syn.HARD_NEGATIVE_OF[syn.ENTITY_RING] == syn.HN_SHARED
    assert set(syn.HARD_NEGATIVE_OF) == set(syn.TYPOLOGIES)
    assert len(set(syn.KINDS)) == len(syn.KINDS) == 1 + len(syn.TYPOLOGIES) + len(syn.HARD_NEGATIVES)


def test_cli_writes_the_three_files(tmp_path, capsys):
    synthetic_cli(["--sessions", "300", "--seed", "1", "--out", str(tmp_path / "a"), "--days", "30"])
    out = capsys.readouterr().out
    assert "sessions=300" in out and f"{syn.ENTITY_RING}=" in out and f"{ACCOUNT}s=" in out
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


def test_config_data_is_generated_again_when_its_stamp_differs(tmp_path):
    """A data directory from another size, seed or generator version is never trained on silently."""
    from seqfraud.preprocess import ensure_synthetic

    data = {
        "synthetic": {"dir": str(tmp_path), "sessions": 200, "seed": 0},
        "events": str(tmp_path / "events.parquet"),
    }
    ensure_synthetic(data)
    first = pl.read_parquet(tmp_path / "events.parquet")
    mtime = (tmp_path / "events.parquet").stat().st_mtime_ns
    ensure_synthetic(data)
    assert (tmp_path / "events.parquet").stat().st_mtime_ns == mtime  # same stamp: kept
    ensure_synthetic(data | {"synthetic": data["synthetic"] | {"sessions": 300}})
    assert pl.read_parquet(tmp_path / "events.parquet")[S.session_id].n_unique() == 300
    ensure_synthetic(data)
    assert pl.read_parquet(tmp_path / "events.parquet").equals(first)


def test_data_the_config_did_not_generate_is_never_replaced(tmp_path, capsys):
    """A dogfood pointed data.synthetic.dir at `seqfraud synthetic --seed 7` output: training replaced it with
    seed 0, logging one INFO line. The command's output is used where it matches the config, refused where it
    does not; files without a stamp (a user's own) are refused, never overwritten."""
    from seqfraud.errors import ConfigError
    from seqfraud.preprocess import ensure_synthetic

    out = tmp_path / "data7"
    synthetic_cli(["--sessions", "200", "--seed", "7", "--out", str(out)])
    made = (out / "events.parquet").read_bytes()
    data = {"synthetic": {"dir": str(out), "sessions": 200, "seed": 0}, "events": str(out / "events.parquet")}
    with pytest.raises(
        ConfigError, match="holds `seqfraud synthetic` output .*'seed': 7.* it is not replaced"
    ):
        ensure_synthetic(data)
    ensure_synthetic(data | {"synthetic": data["synthetic"] | {"seed": 7}})  # as the command made it: used
    # Output of other days has no setting to match it with: taken as one's own data (review 185).
    days = tmp_path / "days90"
    synthetic_cli(["--sessions", "200", "--seed", "7", "--days", "90", "--out", str(days)])
    with pytest.raises(ConfigError, match=r"No data.synthetic setting holds its days: .*data.synthetic=null"):
        ensure_synthetic(
            {
                "synthetic": {"dir": str(days), "sessions": 200, "seed": 7},
                "events": str(days / "events.parquet"),
            }
        )
    # The default's start spelt otherwise makes the default's data: used, not refused (review 186).
    spelt = tmp_path / "spelt"
    synthetic_cli(["--sessions", "200", "--seed", "7", "--start", "2026-01-01T00:00", "--out", str(spelt)])
    made = (spelt / "events.parquet").read_bytes()
    ensure_synthetic(
        {
            "synthetic": {"dir": str(spelt), "sessions": 200, "seed": 7},
            "events": str(spelt / "events.parquet"),
        }
    )
    assert (spelt / "events.parquet").read_bytes() == made
    with pytest.raises(SystemExit):
        synthetic_cli(["--sessions", "200", "--out", str(tmp_path / "x"), "--start", "2026-13-01"])
    assert (
        "'2026-13-01' is not an ISO 8601 date or datetime (month must be in 1..12)" in capsys.readouterr().err
    )
    assert (out / "events.parquet").read_bytes() == made
    (out / syn.STAMP_FILE).unlink()
    with pytest.raises(
        ConfigError,
        match=r"without the generator's stamp .* before it stamped its output\): it is not replaced",
    ):
        ensure_synthetic(data | {"synthetic": data["synthetic"] | {"seed": 7}})
    assert (out / "events.parquet").read_bytes() == made
