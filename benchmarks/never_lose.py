"""Never lose (issue 13): the default seqfraud model against LightGBM on session aggregates, on data we build.

    WANDB_MODE=disabled OMP_NUM_THREADS=1 .venv/bin/python benchmarks/never_lose.py \\
        --kinds amount_rule counts dispersion order generator --sessions 6000 --seeds 0 1 2 \\
        --models default lightgbm --work outputs/benchmarks/never_lose --out outputs/benchmarks/never_lose.md

The built-in generator is where the sequence model was developed, so beating LightGBM there proves little.
The four other datasets are deliberately unlike it, and each hides its fraud behind one kind of signal, two of
which (amounts, counts) are the aggregates' home ground: the claim under test is that the default model never
loses by more than seed noise, not that it wins. ``build`` writes each as a plain event log with its own
column names (``sid``, ``ts``, ``action``, ``channel``, ``merchant_cat``, ``value``; labels as ``sid``,
``is_fraud`` in a separate table), string or integer session ids, datetime or integer-epoch timestamps, events
of all sessions interleaved in time order, about 60 days of traffic (so the out-of-time split means something)
and nuisance that is the same for fraud and legitimate sessions: a channel per session (web, ios, android,
call_center), a merchant category on events that have one (null elsewhere), amounts (null on events without
one), and event types that carry no signal.

Common to the four:

- Drift, mild and in nuisance only: traffic grows by 20% over the range, mobile channels gain share on the web,
  travel merchants gain share, and amounts grow by 4%.
- Label noise, as chargebacks have: 8% of true frauds are labelled legitimate (never disputed) and 0.3% of
  legitimate sessions are labelled fraud (friendly fraud, mistaken disputes). Flipping a symmetric 2% would
  double the positive rate with noise alone; this keeps it at 1-3% with about one observed positive in seven
  a false one. ``truth.parquet`` keeps the true label of every session.

The kinds (:data:`KINDS`):

``amount_rule``
    Shopping sessions (``sid`` strings, ``ts`` naive datetimes); fraud is a session with a payment above a
    threshold T (about 1.8% of sessions). T sits mid-way (geometric mean) between two adjacent quantile edges
    of ``value`` that ``features/default.yaml`` gives the sequence model (16 equal-frequency buckets plus the
    0.98, 0.99, 0.995, 0.999 tail edges, fitted on the training split), the 0.99 and 0.995 ones, computed here
    on the earliest 70% of sessions. Bucket tokens alone cannot tell the sessions whose largest
    payment falls in T's bucket apart (fraud or not depending on which half); the value field
    (``features.numeric_values``) and the aggregates' ``value:max`` can split at T exactly. Refunds carry amounts too (somewhat smaller ones, a few above T),
    but only payments count, as a rule engine's amount rule would.
``counts``
    Checkout sessions (``sid`` integers, ``ts`` epoch milliseconds); fraud is card testing, a session with
    ``K`` or more ``auth_declined`` events, K the smallest count that at most 2.5% of sessions reach. Declines
    come from an over-dispersed distribution (some customers mistype their card a lot), so near misses (K-1,
    K-2) are common. Every event, declines included, sits at a random place after the opening ``login`` and
    the timing is independent of the type: order and time tell nothing, only the count does, which the
    aggregates hold as a column (``action=auth_declined``). From day 35 a new ``wallet_pay`` type takes over
    part of the approvals (drift in the vocabulary).
``dispersion``
    A customer's week as one sequence (``sid`` strings ``customer:monday``, ``ts`` UTC datetimes, ms): 2-15
    visits spread over seven days, about 56 events. Each customer has an amount level; a legitimate week's
    amounts scatter around it by a log-sd near 0.45 (some customers more, some less), a fraudulent week
    (account takeover mixing small probes with large cash-outs) by 1.0-1.7. Fraud is that spread, on payments
    and transfers alike; the level, the counts and the timing are those of legitimate weeks. The sequence
    model has to read the spread off dozens of amount tokens over a long window; the aggregates have
    ``value:std``, ``min`` and ``max``, confounded by the customer's level.
``order``
    Account sessions (``sid`` integers, ``ts`` epoch seconds, no ties within a session). 12% of sessions hold
    exactly one ``password_reset``, one ``add_card`` and one ``payment`` at random places after the opening
    ``login``; fraud (account takeover) is exactly those whose three events come in the order password_reset,
    add_card, payment (1 in 6 of them, 2% of all). The five other orders are legitimate, and since types,
    counts, amounts and timing are drawn before the order and independently of it, the counts of every
    event type are distributed identically in fraud and in its legitimate look-alikes: the aggregates can only
    find the 12%, the order alone tells the 2%.
``generator``
    The built-in synthetic clickstream (``data.synthetic``, its own schema and typologies), for reference.

Training: every (kind, model, seed) is one ``seqfraud.training.train.train(cfg)``, with the config composed as
``benchmarks/quality.py`` composes it (``compose("train", overrides=...)``), plus the kind's data overrides,
``logger=none`` and ``seed=SEED``. The data of a kind is built once (data seed ``--data-seed``, 0) into
``WORK/KIND-nSESSIONS-dDATASEED/data``; the model seeds only change the model. ``--models``: ``default`` is
no model override at all, so this benchmark follows ``train.yaml``'s default model when it changes;
``lightgbm`` is ``model=lightgbm``; any other NAME is ``model=NAME``. ``--variant NAME=OVERRIDE,OVERRIDE``
adds a row trained with those overrides (commas inside brackets stay in their override), e.g.
``--variant gru12=model=gru,trainer.max_epochs=12``. Extra positional overrides apply to every run; use a
fresh ``--work`` when changing them, since a finished run directory (one with ``seconds.txt``, as in
quality.py) of the same seqfraud commit is kept, not run again; one of another commit, or of a checkout with
changes, is run again (``--keep-stale`` keeps it, and says so). ``--report-only`` only rebuilds the table.

Reported per (kind, model): mean ± std over seeds of test PR-AUC (average precision) and recall at 1% FPR,
and the median fit seconds (the wall time of ``train(cfg)`` less its preprocessing). The verdict of a model
against LightGBM on a kind is ``holds`` when its mean test PR-AUC is at or above LightGBM's "within seed
noise", defined as ``mean_model >= mean_lightgbm - max(std_model, std_lightgbm)`` (sample std over seeds;
0 with a single seed), and ``LOSES`` otherwise.

Cost at ``--sessions 6000`` on the 2-core box, torch on one thread: a default-model run takes 30-100 s to fit
(``dispersion``, with about 56 events per sequence, is the longest; at most 8 epochs, early stopping with
patience 3), a LightGBM run a few seconds; the whole command about 15-20 minutes. The test split then holds
900 sessions with 15-40 positives per kind, so a few seeds matter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from seqfraud.provenance import source_commit

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2025, 3, 3, tzinfo=timezone.utc)  # a Monday
DAYS = 60
DAY_S = 86_400
GENERATOR = "generator"
BUILD_VERSION = 1  # bump when a kind's data changes, so that old data and runs are not reused
BUILD_FILE = "build.json"
DONE_FILE = "seconds.txt"  # written after a run's metrics, as quality.py does: its presence means finished
MISSED_FRAUD = 0.08  # true frauds labelled legitimate
FALSE_FRAUD = 0.003  # legitimate sessions labelled fraud
# amount_rule's threshold falls mid-way inside the value bucket of features/default.yaml between its 0.99 and
# 0.995 edges (tests/test_never_lose_data.py holds it there).
RULE_BUCKET = (0.99, 0.995)
TRAIN_FRACTION = 0.70  # the earliest sessions that the default split trains on

# The columns of the built kinds (the generator keeps its own).
SID, TS, ACTION, LABEL = "sid", "ts", "action", "is_fraud"
CHANNEL, MERCHANT, VALUE = "channel", "merchant_cat", "value"
CHANNELS = ["web", "ios", "android", "call_center"]
CHANNELS_AT_START = [0.50, 0.22, 0.20, 0.08]
CHANNELS_AT_END = [0.38, 0.29, 0.27, 0.06]
MERCHANTS = [
    "grocery",
    "fuel",
    "restaurants",
    "travel",
    "electronics",
    "fashion",
    "digital_goods",
    "utilities",
    "pharmacy",
    "gambling",
]
MERCHANTS_AT_START = [0.22, 0.10, 0.16, 0.06, 0.09, 0.12, 0.10, 0.07, 0.05, 0.03]
MERCHANTS_AT_END = [0.20, 0.09, 0.16, 0.11, 0.09, 0.12, 0.09, 0.07, 0.04, 0.03]
# Diurnal activity by hour of day (UTC, one market).
AM = [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.6, 3.8]  # hours 0-11
PM = [4, 3.8, 3.6, 3.5, 3.6, 4, 4.4, 4.6, 4.2, 3.5, 2.5, 1.6]  # hours 12-23
HOURLY = np.array(AM + PM)
HOURLY = HOURLY / HOURLY.sum()


# ---------------------------------------------------------------------------------------------------------
# Shared pieces of the generators


def _pick(rng: np.random.Generator, p_start: list[float], p_end: list[float], t: np.ndarray) -> np.ndarray:
    """One index per row from probabilities that drift linearly from ``p_start`` (t=0) to ``p_end`` (t=1)."""
    p = np.asarray(p_start)[None, :] * (1 - t[:, None]) + np.asarray(p_end)[None, :] * t[:, None]
    cum = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    return np.minimum((rng.random(len(t))[:, None] > cum).sum(1), len(p_start) - 1)


def _starts(rng: np.random.Generator, n: int, days: float = DAYS, growth: float = 0.2) -> np.ndarray:
    """Session start times in seconds from :data:`START`: traffic grows by ``growth`` over the range, diurnal."""
    u = rng.random(n)  # inverse CDF of a density proportional to 1 + growth * x on [0, 1]
    x = (np.sqrt(1 + 2 * growth * u * (1 + growth / 2)) - 1) / growth if growth else u
    day = np.minimum(np.floor(x * days), days - 1)
    hour = rng.choice(24, size=n, p=HOURLY)
    return (day * DAY_S + hour * 3600 + rng.random(n) * 3600).astype(np.float64)


def _offsets(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: its session index and its position within the session, for sessions of ``lengths``."""
    sess = np.repeat(np.arange(len(lengths)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return sess, np.arange(len(sess)) - first[sess]


def _times(rng: np.random.Generator, starts: np.ndarray, sess: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Event times (seconds): the session start plus lognormal gaps (median 12 s, at least 1 s) that do not
    depend on the event type."""
    gaps = np.maximum(1.0, np.round(rng.lognormal(np.log(12.0), 1.1, len(sess))))
    gaps[pos == 0] = 0.0
    run = np.cumsum(gaps)
    first = np.flatnonzero(pos == 0)
    return starts[sess] + run - run[first][sess]


def _shuffle_after_first(rng: np.random.Generator, sess: np.ndarray, keep_first: np.ndarray) -> np.ndarray:
    """A permutation of events that keeps sessions together and each ``keep_first`` event in front of its
    session, and puts the others in random order."""
    return np.lexsort((rng.random(len(sess)), ~keep_first, sess))


def _merchants(rng: np.random.Generator, t_event: np.ndarray, has: np.ndarray) -> np.ndarray:
    idx = _pick(rng, MERCHANTS_AT_START, MERCHANTS_AT_END, t_event)
    return np.where(has, np.asarray(MERCHANTS, dtype=object)[idx], None)


def _channels(rng: np.random.Generator, t_session: np.ndarray) -> np.ndarray:
    return np.asarray(CHANNELS, dtype=object)[_pick(rng, CHANNELS_AT_START, CHANNELS_AT_END, t_session)]


def _noisy(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """Observed labels: true frauds missed with :data:`MISSED_FRAUD`, legitimate ones flagged with
    :data:`FALSE_FRAUD`."""
    u = rng.random(len(truth))
    return np.where(truth, u >= MISSED_FRAUD, u < FALSE_FRAUD)


def _frame(
    sid: np.ndarray,
    ts: pl.Series,
    action: np.ndarray,
    channel: np.ndarray,
    merchant: np.ndarray,
    value: np.ndarray,
) -> pl.DataFrame:
    """The event log, one row per event, events of all sessions interleaved in time order."""
    events = pl.DataFrame(
        {
            SID: sid,
            TS: ts,
            ACTION: pl.Series(action.tolist(), dtype=pl.String),
            CHANNEL: pl.Series(channel.tolist(), dtype=pl.String),
            MERCHANT: pl.Series(merchant.tolist(), dtype=pl.String),
            VALUE: pl.Series(np.round(value, 2), dtype=pl.Float64, nan_to_null=True),
        }
    )
    return events.with_row_index("_row").sort(TS, "_row").drop("_row")


def _datetimes(seconds: np.ndarray, unit: str = "us", tz: str | None = None) -> pl.Series:
    """Datetimes of ``seconds`` after :data:`START`, naive (UTC) or in time zone ``tz``."""
    us = round(START.timestamp() * 1e6) + np.round(seconds * 1e6).astype(np.int64)
    out = pl.Series(us).cast(pl.Datetime("us")).dt.cast_time_unit(unit)
    return out.dt.replace_time_zone(tz) if tz else out


def _epochs(seconds: np.ndarray, per_second: int) -> pl.Series:
    return pl.Series(np.round((START.timestamp() + seconds) * per_second).astype(np.int64))


def _result(
    rng: np.random.Generator,
    ids: pl.Series,
    events: pl.DataFrame,
    truth: np.ndarray,
    label: pl.DataType,
    info: dict,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict]:
    labels = pl.DataFrame({SID: ids, LABEL: pl.Series(_noisy(rng, truth)).cast(label)})
    return events, labels, pl.DataFrame({SID: ids, "fraud": truth}), info


# ---------------------------------------------------------------------------------------------------------
# The kinds: each returns (events, labels, truth, parameters)

AMOUNT_ACTIONS = {
    "view_item": 0.20,
    "search": 0.18,
    "add_to_cart": 0.12,
    "payment": 0.25,
    "view_balance": 0.08,
    "refund": 0.02,
    "update_profile": 0.03,
    "logout": 0.07,
    "contact_support": 0.05,
}


def bucket_threshold(values: np.ndarray) -> float:
    """The geometric mean of the value-bucket edges at :data:`RULE_BUCKET`, fitted on ``values`` (the
    training values) as seqfraud fits them."""
    lo, hi = np.quantile(values, RULE_BUCKET, method="nearest")
    return float(np.round(np.sqrt(lo * hi), 2))


def amount_rule(n: int, rng: np.random.Generator):
    lengths = 2 + rng.poisson(10, n)
    starts = _starts(rng, n)
    t = starts / (DAYS * DAY_S)
    sess, pos = _offsets(lengths)
    names = np.asarray(list(AMOUNT_ACTIONS), dtype=object)
    action = names[rng.choice(len(names), size=len(sess), p=list(AMOUNT_ACTIONS.values()))]
    action[pos == 0] = "login"
    drift = np.log1p(0.04 * t[sess])
    value = np.full(len(sess), np.nan)
    pay, refund = action == "payment", action == "refund"
    value[pay] = rng.lognormal(3.7, 1.0, pay.sum()) * np.exp(drift[pay])
    value[refund] = rng.lognormal(3.5, 1.0, refund.sum()) * np.exp(drift[refund])
    value = np.round(value, 2)
    merchant = _merchants(rng, t[sess], np.isin(action, ["view_item", "add_to_cart", "payment", "refund"]))
    session_max = np.full(n, np.nan)
    np.fmax.at(session_max, sess[pay], value[pay])
    early = t[sess] <= np.quantile(t, TRAIN_FRACTION)
    threshold = bucket_threshold(value[early & ~np.isnan(value)])
    truth = np.nan_to_num(session_max, nan=-1.0) > threshold
    ids = pl.Series([f"s-{x:08x}" for x in rng.choice(2**32, size=n, replace=False)], dtype=pl.String)
    events = _frame(
        ids.to_numpy()[sess],
        _datetimes(_times(rng, starts, sess, pos)),
        action,
        _channels(rng, t)[sess],
        merchant,
        value,
    )
    return _result(rng, ids, events, truth, pl.Int8, {"threshold": threshold})


COUNT_ACTIONS = {
    "browse": 0.35,
    "search": 0.15,
    "add_to_cart": 0.12,
    "checkout": 0.06,
    "auth_approved": 0.08,
    "otp_sent": 0.06,
    "view_orders": 0.08,
    "logout": 0.05,
    "update_address": 0.02,
    "contact_support": 0.03,
}
WALLET_DAY = 35


def counts(n: int, rng: np.random.Generator):
    starts = _starts(rng, n)
    t = starts / (DAYS * DAY_S)
    # Over-dispersed declines: negative binomial, mean 0.9.
    declines = rng.negative_binomial(0.6, 0.6 / (0.6 + 0.9), n)
    k = int(next(k for k in range(1, 100) if np.mean(declines >= k) <= 0.025))
    others = 6 + rng.poisson(16, n)
    lengths = others + declines
    sess, pos = _offsets(lengths)
    first_of = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    is_decline = pos >= others[sess]
    names = np.asarray(list(COUNT_ACTIONS), dtype=object)
    action = names[rng.choice(len(names), size=len(sess), p=list(COUNT_ACTIONS.values()))]
    action[is_decline] = "auth_declined"
    action[first_of] = "login"
    late = (starts[sess] >= WALLET_DAY * DAY_S) & (action == "auth_approved") & (rng.random(len(sess)) < 0.4)
    action[late] = "wallet_pay"
    action = action[
        _shuffle_after_first(rng, sess, pos == 0)
    ]  # sessions stay in place, positions are now random but for the login
    paid = np.isin(action, ["checkout", "auth_approved", "auth_declined", "wallet_pay"])
    value = np.where(paid, rng.lognormal(3.8, 0.9, len(sess)) * (1 + 0.04 * t[sess]), np.nan)
    merchant = _merchants(rng, t[sess], paid | (action == "add_to_cart"))
    ids = pl.Series(rng.choice(np.arange(10**9, 10**9 + 50 * n), size=n, replace=False), dtype=pl.Int64)
    ts = _epochs(_times(rng, starts, sess, pos), 1000)
    events = _frame(ids.to_numpy()[sess], ts, action, _channels(rng, t)[sess], merchant, value)
    return _result(rng, ids, events, declines >= k, pl.Boolean, {"min_declines": k})


DISPERSION_ACTIONS = {
    "view_balance": 0.25,
    "payment": 0.35,
    "transfer": 0.10,
    "search": 0.10,
    "view_statement": 0.08,
    "logout": 0.07,
    "update_limits": 0.02,
    "contact_support": 0.03,
}
WEEKS = 8
FRAUD_WEEKS = 0.02
USUAL_SPREAD = 0.45  # a legitimate customer's typical log-sd of amounts; fraud weeks draw theirs from:
FRAUD_SPREAD = (1.0, 1.7)


def dispersion(n: int, rng: np.random.Generator):
    customers = math.ceil(n / 4)
    pairs = rng.choice(customers * WEEKS, size=n, replace=False)
    customer, week = pairs // WEEKS, pairs % WEEKS
    level = rng.normal(3.4, 0.7, customers)[customer]
    usual_spread = USUAL_SPREAD * np.exp(rng.normal(0.0, 0.2, customers))[customer]
    truth = rng.random(n) < FRAUD_WEEKS
    spread = np.where(truth, rng.uniform(*FRAUD_SPREAD, n), usual_spread * np.exp(rng.normal(0.0, 0.08, n)))
    # Visits spread over the week, each a login and a few events a few seconds apart.
    visits = 2 + np.minimum(rng.poisson(5, n), 13)
    v_sess, _ = _offsets(visits)
    v_start = week[v_sess] * 7 * DAY_S + _starts(rng, len(v_sess), days=7, growth=0.0)
    per_visit = 3 + rng.poisson(5, len(v_sess))
    visit, e_pos = _offsets(per_visit)
    e_time = _times(rng, v_start, visit, e_pos)
    sess = v_sess[visit]
    by_time = np.lexsort((e_pos, e_time, sess))  # a session's events in time order
    visit, e_pos, e_time, sess = visit[by_time], e_pos[by_time], e_time[by_time], sess[by_time]
    t_event = e_time / (DAYS * DAY_S)
    names = np.asarray(list(DISPERSION_ACTIONS), dtype=object)
    action = names[rng.choice(len(names), size=len(sess), p=list(DISPERSION_ACTIONS.values()))]
    action[e_pos == 0] = "login"
    pay, transfer = action == "payment", action == "transfer"
    z = rng.normal(0.0, 1.0, len(sess))
    log_value = level[sess] + np.log1p(0.04 * t_event) + spread[sess] * z + np.where(transfer, 0.7, 0.0)
    value = np.where(pay | transfer, np.exp(log_value), np.nan)
    merchant = _merchants(rng, t_event, pay)
    channel = _channels(rng, v_start / (DAYS * DAY_S))[visit]  # a visit's channel
    monday = [(START + timedelta(days=7 * int(w))).date().isoformat() for w in range(WEEKS)]
    ids = pl.Series([f"c{c:06d}:{monday[w]}" for c, w in zip(customer, week)], dtype=pl.String)
    events = _frame(ids.to_numpy()[sess], _datetimes(e_time, "ms", "UTC"), action, channel, merchant, value)
    return _result(
        rng, ids, events, truth, pl.Int8, {"fraud_spread": list(FRAUD_SPREAD), "usual_spread": USUAL_SPREAD}
    )


ORDER_FILLER = {
    "view_account": 0.26,
    "search": 0.12,
    "view_statement": 0.14,
    "transfer_internal": 0.10,
    "update_address": 0.04,
    "contact_support": 0.06,
    "message_inbox": 0.12,
    "logout": 0.16,
}
TRIO = ("password_reset", "add_card", "payment")
TRIO_SHARE = 0.12


def order(n: int, rng: np.random.Generator):
    starts = _starts(rng, n)
    t = starts / (DAYS * DAY_S)
    filler = 3 + rng.poisson(9, n)
    trio = rng.random(n) < TRIO_SHARE
    # Other sessions hold at most two of the three types: payments (1-2) in half of them, and a lone reset or a
    # lone added card in a few.
    payments = np.where(trio, 1, np.where(rng.random(n) < 0.5, 1 + (rng.random(n) < 0.3), 0))
    lone = np.where(~trio & (rng.random(n) < 0.08), 1 + (rng.random(n) < 0.5), 0)  # 1 reset, 2 card
    extra = np.where(trio, 2, lone > 0)
    lengths = 1 + filler + payments + extra
    sess, pos = _offsets(lengths)
    names = np.asarray(list(ORDER_FILLER), dtype=object)
    action = names[rng.choice(len(names), size=len(sess), p=list(ORDER_FILLER.values()))]
    tail = pos - (1 + filler[sess])  # 0.. over the session's payments, then its reset/card slots
    action[(tail >= 0) & (tail < payments[sess])] = "payment"
    slot = tail - payments[sess]
    action[(slot == 0) & (trio[sess] | (lone[sess] == 1))] = "password_reset"
    action[((slot == 1) & trio[sess]) | ((slot == 0) & (lone[sess] == 2))] = "add_card"
    action[pos == 0] = "login"
    action = action[_shuffle_after_first(rng, sess, pos == 0)]
    rank = {name: np.zeros(n, dtype=np.int64) for name in TRIO}
    for name in TRIO:
        rank[name][sess[action == name]] = pos[action == name]
    truth = trio & (rank["password_reset"] < rank["add_card"]) & (rank["add_card"] < rank["payment"])
    paid = np.isin(action, ["payment", "transfer_internal"])
    value = np.where(paid, rng.lognormal(4.0, 1.0, len(sess)) * (1 + 0.04 * t[sess]), np.nan)
    merchant = _merchants(rng, t[sess], action == "payment")
    ids = pl.Series(rng.permutation(n) + 500_000, dtype=pl.Int64)
    ts = _epochs(_times(rng, starts, sess, pos), 1)
    events = _frame(ids.to_numpy()[sess], ts, action, _channels(rng, t)[sess], merchant, value)
    return _result(rng, ids, events, truth, pl.Int8, {"trio_share": TRIO_SHARE})


KINDS: dict[str, Callable[[int, np.random.Generator], tuple]] = {
    "amount_rule": amount_rule,
    "counts": counts,
    "dispersion": dispersion,
    "order": order,
}


def data_overrides(out: Path) -> list[str]:
    """The Hydra overrides that train on a built kind's files in ``out``."""
    return [
        f"data.events={out / 'events.parquet'}",
        f"data.labels={out / 'labels.parquet'}",
        "data.typologies=null",
        f"data.schema.session_id={SID}",
        f"data.schema.timestamp={TS}",
        f"data.schema.event_type={ACTION}",
        f"data.schema.label={LABEL}",
        f"data.schema.categorical=[{CHANNEL},{MERCHANT}]",
        f"data.schema.numerical=[{VALUE}]",
    ]


def build(kind: str, sessions: int, seed: int, out: Path) -> dict:
    """Write ``events.parquet``, ``labels.parquet`` and ``truth.parquet`` (the true labels) of one kind into
    ``out``; returns what ``build.json`` keeps: the Hydra ``overrides`` to train on it, the observed positive
    rate and the kind's parameters. ``generator`` writes the built-in synthetic data (events, labels,
    typologies) and its overrides only say its size, seed and directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == GENERATOR:
        from seqfraud.preprocess import ensure_synthetic

        overrides = [
            f"data.synthetic.dir={out}",
            f"data.synthetic.sessions={sessions}",
            f"data.synthetic.seed={seed}",
        ]
        ensure_synthetic(
            {
                "synthetic": {"dir": str(out), "sessions": sessions, "seed": seed},
                "events": str(out / "events.parquet"),
            }
        )
        rate = float(pl.read_parquet(out / "labels.parquet")["label"].mean() or 0.0)
        info: dict = {}
    else:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; kinds are {[*KINDS, GENERATOR]}")
        events, labels, truth, info = KINDS[kind](sessions, np.random.default_rng(seed))
        events.write_parquet(out / "events.parquet")
        labels.write_parquet(out / "labels.parquet")
        truth.write_parquet(out / "truth.parquet")
        overrides = data_overrides(out)
        rate = float(labels[LABEL].cast(pl.Float64).mean() or 0.0)
    result = {
        "kind": kind,
        "sessions": sessions,
        "seed": seed,
        "version": BUILD_VERSION,
        "positive_rate": rate,
        "params": info,
        "overrides": overrides,
    }
    (out / BUILD_FILE).write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------------------------
# The benchmark


def kind_dir(work: Path, kind: str, sessions: int, data_seed: int) -> Path:
    return work / f"{kind}-n{sessions}-d{data_seed}"


def prepared_data(kind: str, sessions: int, seed: int, out: Path) -> dict:
    """``build``'s result, from ``build.json`` when the data there is this very build."""
    try:
        built = json.loads((out / BUILD_FILE).read_text())
    except (OSError, ValueError):
        built = None
    same = {"kind": kind, "sessions": sessions, "seed": seed, "version": BUILD_VERSION}
    if built and all(built.get(k) == v for k, v in same.items()):
        return built
    print(f"{kind}: building {sessions} sessions (data seed {seed}) into {out}", file=sys.stderr, flush=True)
    return build(kind, sessions, seed, out)


def split_overrides(text: str) -> list[str]:
    """``a=1,b=[x,y]`` -> ``["a=1", "b=[x,y]"]``: commas inside brackets or braces stay."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in [*parts, cur] if p]


def model_rows(models: list[str], variants: list[str]) -> dict[str, list[str]]:
    """Row name -> the model overrides of that row."""
    rows = {m: [] if m == "default" else [f"model={m}"] for m in models}
    for v in variants:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"--variant {v!r}: expected NAME=override[,override...]")
        rows[name] = split_overrides(rest)
    return rows


def run_one(data: dict, row: list[str], seed: int, directory: Path, extra: list[str]) -> dict:
    """One ``train(cfg)`` composed as quality.py composes it; writes ``seconds.txt`` (the fit alone) last."""
    from hydra import compose, initialize_config_dir

    from seqfraud import rundir
    from seqfraud.training.train import train

    overrides = [
        *data["overrides"],
        *row,
        f"seed={seed}",
        "experiment_name=never_lose",
        f"paths.data_dir={directory.parents[1] / 'data'}",
        f"paths.output_dir={directory}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    t0 = time.perf_counter()
    metrics = train(cfg)
    seconds = time.perf_counter() - t0
    seconds -= json.loads((directory / rundir.REPORT_FILE).read_text())["seconds"]  # less preprocessing
    (directory / DONE_FILE).write_text(f"{seconds:.1f} {source_commit()}")
    return metrics


def finished_by(directory: Path) -> str | None:
    """The seqfraud commit a finished run ran (``-dirty`` with changes; "None" outside a checkout), or None where
    the run is not finished or predates the record (a run of session 44's code was reported as today's: review
    256)."""
    done = directory / DONE_FILE
    parts = done.read_text().split() if done.exists() else []
    return parts[1] if len(parts) == 2 else None


def reusable(directory: Path, commit: str | None, keep_stale: bool) -> bool:
    """Whether a run directory is kept, not run again: finished by this clean ``commit``, or with ``keep_stale``
    finished at all."""
    if not (directory / DONE_FILE).exists():
        return False
    ran = finished_by(directory)
    return keep_stale or (commit is not None and not commit.endswith("-dirty") and ran == commit)


def load_run(directory: Path) -> dict:
    metrics = json.loads((directory / "metrics.json").read_text())
    return {
        "encoder": metrics.get("model"),
        "test": metrics["test"],
        "seconds": float((directory / DONE_FILE).read_text().split()[0]),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(model: list[float], baseline: list[float]) -> str:
    """``holds`` when mean(model) >= mean(baseline) - max(std(model), std(baseline)), else ``LOSES``."""
    (m, sm), (b, sb) = mean_std(model), mean_std(baseline)
    if math.isnan(m) or math.isnan(b):
        return "n/a"
    gap = m - b
    return f"{'holds' if gap >= -max(sm, sb) else 'LOSES'} ({gap:+.3f}, noise {max(sm, sb):.3f})"


def table(results: dict[str, dict[str, list[dict]]], builds: dict[str, dict]) -> str:
    from quality import RECALL, cell

    head = ["kind", "model", "test PR-AUC", "recall@1%FPR", "fit s", "test sessions (pos)", "vs lightgbm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, rows in results.items():
        base = rows.get("lightgbm")
        for name, runs in rows.items():
            tests = [r["test"] for r in runs]
            ap = [t["pr_auc"] for t in tests]
            label = f"default ({runs[0]['encoder']})" if name == "default" else name
            if name == "lightgbm":
                against = "baseline"
            elif base:
                against = verdict(ap, [r["test"]["pr_auc"] for r in base])
            else:
                against = "n/a"
            row = [
                kind,
                label,
                cell(ap),
                cell([t[RECALL] for t in tests]),
                f"{statistics.median(r['seconds'] for r in runs):.0f}",
                f"{int(tests[0]['n'])} ({int(tests[0]['positives'])})",
                against,
            ]
            lines.append("| " + " | ".join(row) + " |")
    notes = [
        f"- {kind}: positive rate {b['positive_rate']:.2%}"
        + (f", {', '.join(f'{k} {v}' for k, v in b['params'].items())}" if b["params"] else "")
        for kind, b in builds.items()
    ]
    return "\n".join([*lines, "", *notes])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", nargs="+", choices=[*KINDS, GENERATOR], default=[*KINDS, GENERATOR])
    parser.add_argument("--sessions", type=int, default=6000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["default", "lightgbm"])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE...]")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/never_lose")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument("--json", type=Path, default=None, help="raw figures (default WORK/never_lose.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--report-only", action="store_true", help="the table from existing run directories")
    parser.add_argument(
        "--keep-stale",
        action="store_true",
        help="keep finished runs of another commit, or of a changed checkout",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.append(str(Path(__file__).resolve().parent))  # quality.py and report.py, when imported
    rows = model_rows(args.models, args.variant)

    builds = {}
    for kind in args.kinds:
        out = kind_dir(args.work, kind, args.sessions, args.data_seed) / "data"
        if args.report_only:
            if (out / BUILD_FILE).exists():
                builds[kind] = json.loads((out / BUILD_FILE).read_text())
        else:
            builds[kind] = prepared_data(kind, args.sessions, args.data_seed, out)
    if not args.report_only:
        import torch

        torch.set_num_threads(args.threads)
        commit = source_commit()
        args.overrides = [
            f"threads={args.threads}",
            *args.overrides,
        ]  # train() sets its threads from the config
        # Seed-major, so that a partial run already compares every model on every kind.
        for seed in args.seeds:
            for kind, data in builds.items():
                for name, row in rows.items():
                    directory = kind_dir(args.work, kind, args.sessions, args.data_seed) / name / str(seed)
                    if reusable(directory, commit, args.keep_stale):
                        ran = finished_by(directory)
                        note = "" if ran == commit else f" (run by {ran}, not {commit}: --keep-stale)"
                        print(f"{kind} {name} seed={seed}: kept{note}", file=sys.stderr, flush=True)
                        continue
                    shutil.rmtree(directory, ignore_errors=True)  # a stale or unfinished run starts afresh
                    m = run_one(data, row, seed, directory, args.overrides)
                    print(
                        f"{kind} {name} seed={seed}: test PR-AUC {m['test']['pr_auc']:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )
    results: dict[str, dict[str, list[dict]]] = {}
    for kind in builds:
        for name in rows:
            dirs = [
                kind_dir(args.work, kind, args.sessions, args.data_seed) / name / str(s) for s in args.seeds
            ]
            runs = [load_run(d) for d in dirs if (d / DONE_FILE).exists()]
            if runs:
                results.setdefault(kind, {})[name] = runs

    from report import emit

    text = (
        f"{args.sessions} sessions per kind (data seed {args.data_seed}), model seeds {args.seeds}; test split = "
        "latest 15% of sessions by start time. Verdict: holds when mean PR-AUC >= LightGBM's mean - "
        "max(std model, std lightgbm) over seeds."
        + (f" Extra overrides: {' '.join(args.overrides)}." if args.overrides else "")
        + f"\n\n{table(results, builds)}"
    )
    emit(text, args.out, args.json or args.work / "never_lose.json", {"results": results, "builds": builds})


if __name__ == "__main__":
    main()
