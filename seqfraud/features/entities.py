"""Entity features: what other sessions on the same device, IP, card or account show, as of each event.

**The point-in-time rule.** For an event of session ``s`` at time ``t``, and for the value ``e`` of each
entity column on that event, a feature reads only

- events of *other* sessions that carry ``e``, at times strictly before ``t``, and
- labels of other sessions that carried ``e``, each from the later of the time the label became known
  (``data.schema.label_time``, or the session's last event plus ``data.policy.label_delay``) and that
  session's first event on ``e``, again strictly before ``t``. Under ``data.policy.on_unlabeled=negative`` a
  session the label table lists with a label known only after its end plus the label delay reads, until then,
  as a known legitimate one from that time (:data:`~seqfraud.schema.LEGIT_FROM`): what a chargeback file said
  of it then.

Nothing of ``s`` itself (its events, its label), nothing at ``t`` or later. Windowed features look back over
``[t - w, t)``. Every engine and every batch path (training, backtests, batch scoring, the export check)
computes the features with :func:`column_features`; online scoring reads the rule at each new event with
:func:`point_features`. A property test holds both to this rule; docs/entities.md says the same with examples.

Per entity column ``c`` (names from :func:`seqfraud.schema.entity_feature`), for each window ``w``:

- ``events_w``: events on ``e`` in the window;
- ``sessions_w``: sessions whose first event on ``e`` falls in the window (a session counts from its arrival);
- ``distinct_{c2}_w``, for each other entity column ``c2``: values of ``c2`` whose first event together with
  ``e`` falls in the window and belongs to another session (accounts per device, devices per card);
- with ``risk`` on: ``known_w``, sessions on ``e`` whose label became usable (see above) in the window;
  ``fraud_w``, how many of them were fraud; ``rate_w``, the fraud rate shrunk towards the training rate
  ``prior`` by ``smoothing`` pseudo-sessions;

and, over all time, ``first_seen_s`` and ``last_seen_s``: seconds since ``e``'s first and latest event in
another session (null when there is none before ``t``). A null entity value gives null features.

:func:`column_features` reads only the rows that carry the values it is given, so an engine may split the
rows by a hash of the value and run it on each part: that is how both engines stay out of core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.durations import duration_us
from seqfraud.errors import ConfigError
from seqfraud.schema import Schema

ACTIVITY = ("events", "sessions")
RISK = ("known", "fraud", "rate")
FIRST_SEEN = "first_seen_s"
LAST_SEEN = "last_seen_s"
_NO_TIME = np.iinfo(np.int64).max  # a label that is never known


@dataclass(frozen=True)
class EntitySpec:
    """The entity part of the preprocessing spec: which features exist and the constants they need."""

    columns: tuple[str, ...]
    windows: tuple[str, ...]
    risk: bool
    smoothing: float
    prior: float  # the training period's fraud rate, where the smoothed rate starts from
    label_delay: str | None  # kept for the record and for histories scored later
    # How long after their sessions' end the training labels became known (the 95th percentile, in µs); None in
    # specs written before it was kept, and where no training label became known.
    label_lag_us: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "windows", tuple(str(w) for w in self.windows))
        if not self.windows:
            raise ConfigError("features.entity.windows must list at least one window, e.g. [1h, 1d, 7d, 30d]")
        us = [duration_us(w, "features.entity.windows") for w in self.windows]
        if len(set(us)) != len(us):
            raise ConfigError(f"features.entity.windows repeats a window: {list(self.windows)}")
        if not self.smoothing > 0:
            raise ConfigError(f"features.entity.smoothing must be positive, got {self.smoothing}")
        if not 0 <= self.prior <= 1:
            raise ConfigError(f"entity prior must be a rate in [0, 1], got {self.prior}")

    def rate(self, fraud: np.ndarray, known: np.ndarray) -> np.ndarray:
        """The smoothed fraud rate of ``fraud`` frauds among ``known`` labels: shrunk towards ``prior`` by
        ``smoothing`` pseudo-sessions, so that a value with one fraudulent session is not a certainty."""
        return (fraud + self.smoothing * self.prior) / (known + self.smoothing)

    @property
    def window_us(self) -> list[int]:
        return [duration_us(w, "features.entity.windows") for w in self.windows]

    def _kinds(self, column: str) -> list[str]:
        """The windowed features of one entity column."""
        others = [c for c in self.columns if c != column]
        return [*ACTIVITY, *[f"distinct_{c}" for c in others], *(RISK if self.risk else ())]

    def presence_feature(self, column: str) -> str:
        """The feature null exactly where an event has no value in ``column``: its first window's count of events
        (0, not null, for a value seen first), by which preprocessing and the monitor count a column's nulls."""
        return S.entity_feature(column, ACTIVITY[0], self.windows[0])

    def column_feature_names(self, column: str) -> list[str]:
        windowed = [S.entity_feature(column, k, w) for k in self._kinds(column) for w in self.windows]
        return [*windowed, S.entity_feature(column, FIRST_SEEN), S.entity_feature(column, LAST_SEEN)]

    def feature_names(self) -> list[str]:
        return [name for c in self.columns for name in self.column_feature_names(c)]

    def warm_up_us(self) -> dict[str, int | None]:
        """Per feature, how much log must lie before an event for the feature to read as it will in a long
        history: its window, plus, for the risk features, how late labels come (:attr:`label_lag_us`, else the
        label delay): a window's labels are those of sessions that ended up to that long before it. Labels dated
        30 to 120 days after their claims, with no label delay set, left a 30-day count's warm-up at 30 days, and
        the monitor alerted at PSI 1.17 on a log without drift (dogfood 198). None for time since first and last
        seen, whose range grows with the history's age and never settles."""
        delay = self.label_lag_us
        if delay is None:
            delay = (
                0 if self.label_delay is None else duration_us(self.label_delay, "data.policy.label_delay")
            )
        out: dict[str, int | None] = {}
        for column in self.columns:
            for kind in self._kinds(column):
                for window, span in zip(self.windows, self.window_us):
                    out[S.entity_feature(column, kind, window)] = span + (delay if kind in RISK else 0)
            out[S.entity_feature(column, FIRST_SEEN)] = out[S.entity_feature(column, LAST_SEEN)] = None
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"columns": list(self.columns), "windows": list(self.windows)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EntitySpec:
        return cls(
            columns=tuple(d["columns"]),
            windows=tuple(d["windows"]),
            risk=bool(d["risk"]),
            smoothing=float(d["smoothing"]),
            prior=float(d["prior"]),
            label_delay=d.get("label_delay"),
            label_lag_us=d.get("label_lag_us"),
        )


def entity_spec(
    schema: Schema, entity_cfg: Mapping[str, Any] | None, label_delay: str | None, train: pl.DataFrame
) -> EntitySpec | None:
    """The fitted entity spec from ``features.entity``, with the training sessions' fraud rate and label lag
    (``train``: their label, end and label-known times); None when ``data.schema.entities`` is empty."""
    if not schema.entities:
        return None
    cfg = dict(entity_cfg or {})
    unknown = sorted(set(cfg) - {"windows", "risk", "smoothing"})
    if unknown:
        raise ConfigError(
            f"features.entity has unknown keys {unknown}; known keys are [risk, smoothing, windows]"
        )
    risk = bool(cfg.get("risk", True))
    if label_delay is not None:
        duration_us(label_delay, "data.policy.label_delay")
    if risk and not schema.label_time and label_delay is None:
        raise ConfigError(
            "features.entity.risk needs to know when labels became known: set data.schema.label_time (a column "
            "of the label table) or data.policy.label_delay (e.g. 30d), or set features.entity.risk=false"
        )
    return EntitySpec(
        columns=schema.entities,
        windows=tuple(cfg.get("windows") or ("1h", "1d", "7d", "30d")),
        risk=risk,
        smoothing=float(cfg.get("smoothing", 20)),
        prior=float(train[S.LABEL].cast(pl.Float64).mean() or 0.0) if train.height else 0.0,
        label_delay=label_delay,
        label_lag_us=_label_lag_us(train),
    )


def _label_lag_us(train: pl.DataFrame) -> int | None:
    """How long after its session's end a training label became known: the 95th percentile, of all labels and of
    the frauds' alone, whichever is later (reviews within a day beside frauds referred 30-120 days late read 1 day:
    review 202). A high quantile, since a window reads the labels of sessions that late, and not the latest, since
    one chargeback a year late would leave the risk features' drift unchecked. A session a label cutoff reads as
    legitimate counts from then (:data:`~seqfraud.schema.LEGIT_FROM`), not from its later chargeback."""
    cut_legit = (pl.col(S.LABEL) == 0) & pl.col(S.LEGIT_FROM).is_not_null()
    known = pl.when(cut_legit).then(pl.col(S.LEGIT_FROM)).otherwise(pl.col(S.LABEL_KNOWN))
    lag = (known - pl.col(S.END_TIME)).clip(lower_bound=0)
    labelled = pl.col(S.LABEL).is_not_null() & known.is_not_null()
    q = train.select(
        pl.max_horizontal(
            lag.filter(labelled).quantile(0.95, "higher"),
            lag.filter(labelled & (pl.col(S.LABEL) == 1)).quantile(0.95, "higher"),
        )
    ).item()
    return None if q is None else int(q)


def kernel_rows(events: pl.LazyFrame, sessions: pl.DataFrame, entity: EntitySpec) -> pl.LazyFrame:
    """What :func:`column_features` reads: each event's row, session, time and entities, and its session's
    label with the time it became known (``sessions``: ``session_id``, ``label``, ``label_known``,
    ``legit_from``)."""

    def lookup(column: str, dtype: type[pl.DataType]) -> pl.Expr:
        return (
            pl.col(S.SESSION_ID)
            .replace_strict(sessions[S.SESSION_ID], sessions[column], default=None, return_dtype=dtype)
            .alias(column)
        )

    return events.select(
        S.ROW_INDEX,
        S.SESSION_ID,
        S.TS_US,
        *entity.columns,
        lookup(S.LABEL, pl.Int8),
        lookup(S.LABEL_KNOWN, pl.Int64),
        lookup(S.LEGIT_FROM, pl.Int64),
    )


def column_features(rows: pl.DataFrame, column: str, entity: EntitySpec) -> pl.DataFrame:
    """The features of entity column ``column`` for every row of ``rows`` that carries a value of it.

    ``rows`` (from :func:`kernel_rows`) must hold every row of each value of ``column`` it holds, and nothing
    else is read. Session ids and entity values may come as non-negative integer codes instead (session codes
    in the ids' sort order): only equality and the order of sessions count. Returns ``__row`` and
    :meth:`EntitySpec.column_feature_names`, one row per input row with a non-null value, in ``__row`` order.
    """
    names = entity.column_feature_names(column)
    if rows[column].null_count():
        rows = rows.filter(pl.col(column).is_not_null())
    n = rows.height
    if n == 0:
        return pl.DataFrame(
            {S.ROW_INDEX: pl.Series([], dtype=rows.schema[S.ROW_INDEX])} | {c: [] for c in names},
            schema_overrides={c: pl.Float32 for c in names},
        )
    out: dict[str, np.ndarray] = {}

    def emit(name: str, x: np.ndarray) -> None:
        """Float32 on disk and on every path alike: counts stay exact, and the values the edges were fitted on
        are the values scoring sees. From order A to ``__row`` order on the way."""
        y = np.empty(n, dtype=np.float32)
        y[a_out] = x
        out[name] = y

    # Ties in time break by session id, then input row: the same order whatever the other sessions' rows are
    # numbered (a history scored beside new events numbers them apart from the training log). The work below is
    # on integer codes, time ranks and positions (int32 where they fit): strings are coded once, never sorted.
    session = _codes(rows[S.SESSION_ID], ordered=True)
    row = rows[S.ROW_INDEX].to_numpy()
    given = _argsort_pair(session, row)  # the tie-break order, of input rows
    by_row = np.argsort(row, kind="stable")  # the output's order (rows often come in it: then one pass)
    row_index = pl.Series(S.ROW_INDEX, rows[S.ROW_INDEX].to_numpy()[by_row])
    out_at = np.empty(n, dtype=_index(n))  # each input row's output position
    out_at[by_row] = np.arange(n, dtype=out_at.dtype)
    del row, by_row
    t = rows[S.TS_US].to_numpy()
    times, rank = _time_ranks(t)
    m = len(times) + 1
    value = _codes(rows[column])
    # Order A: (value, time, tie-break order); a[j] is the input row of A's row j, a_out[j] its output position.
    # Every per-row array below is in order A.
    a = given[np.argsort((value * m + rank)[given], kind="stable")]
    a_out = out_at[a]
    del given, out_at
    value, session, t, rank = value[a], session[a].astype(_index(n)), t[a], rank[a]
    by_value = _Runs(value, rank, m)
    up_v = by_value.upper
    first_seen, last_seen = by_value.seen_by_others(session, t)
    emit(S.entity_feature(column, FIRST_SEEN), first_seen)
    emit(S.entity_feature(column, LAST_SEEN), last_seen)
    del first_seen, last_seen, by_value.start, by_value.group_first
    # Order B: one session's rows on the value together (a pair), in time order; b[p] is the A position of B's
    # row p. What a row's own session adds to a window comes from there and is taken back out.
    b = np.argsort(session, kind="stable").astype(_index(n))
    by_pair = _Runs(_run_ids(session[b], value[b]), rank[b], m)
    del session
    to_b = np.empty(n, dtype=_index(n))
    to_b[b] = np.arange(n, dtype=_index(n))

    def from_b(x: np.ndarray) -> np.ndarray:
        out = np.empty(n, dtype=x.dtype)
        out[b] = x
        return out

    # The session's first event on the value, and its rows on the value before the row's time. A window that
    # starts at or before that first event holds all of them; only the other rows need a search of the pair.
    touch_rank = from_b(rank[b][by_pair.start])
    first_touch = from_b(by_pair.group_first)
    own_before = from_b(by_pair.upper - by_pair.start)
    cum_touch = _cumsum(first_touch)
    touch_up = cum_touch[up_v]
    touch_before = touch_rank < rank
    markers = {}  # per other column: prefix sums in order A, the same in order B, own rows before the row's time
    for c in entity.columns:
        if c != column:
            marker = _first_with(value, _codes(rows[c])[a])
            cum_a, cum_b = _cumsum(marker), _cumsum(marker[b])
            markers[c] = (cum_a, cum_a[up_v], cum_b, from_b(cum_b[by_pair.upper] - cum_b[by_pair.start]))
    del by_pair.start, by_pair.group_first
    if entity.risk:
        # Per row, the time its session's label became usable on this value (later of known time and first touch).
        fact_time = np.maximum(_filled(rows[S.LABEL_KNOWN], _NO_TIME)[a], times[touch_rank])
        fraud = _filled(rows[S.LABEL], 0)[a].astype(np.int8)
        usable = first_touch & (fact_time != _NO_TIME)
        facts = _Facts(value[usable], fact_time[usable], fraud[usable], value, times)
        facts_to_t = facts.before(rank)
        fraud_to_t = facts.cum_fraud[facts_to_t]
        fact_before_t = fact_time < t
        del usable
        # A known legitimate session before its label is usable, from its time (S.LEGIT_FROM) on the value, as one
        # more known fact of label 0 until then.
        legit = _filled(rows[S.LEGIT_FROM], _NO_TIME)[a] if rows[S.LEGIT_FROM].count() else None
        if legit is not None:
            legit = np.maximum(legit, times[touch_rank])
            legit[legit >= fact_time] = _NO_TIME
            interim = first_touch & (legit != _NO_TIME)
            interims = _Interims(by_value.keys, m, times, value[interim], legit[interim], fact_time[interim])
            del interim
    del rows, a, first_touch, value

    x = np.empty(n, dtype=_index(n))
    q, start_rank = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for w, w_us in zip(entity.windows, entity.window_us, strict=True):
        np.take(np.searchsorted(times, times - w_us), rank, out=start_rank)  # the window start's time rank
        np.subtract(by_value.keys, rank, out=q)
        lo_v = np.searchsorted(by_value.keys, np.add(q, start_rank, out=q))
        # Rows whose session came to the value before the window: their own rows in it, searched in order B.
        late = np.flatnonzero(touch_rank < start_rank)
        at_b = to_b[late]
        lo_p = np.searchsorted(by_pair.keys, by_pair.keys[at_b] - rank[late] + start_rank[late])
        pair_window = (late, lo_p, by_pair.upper[at_b])
        emit(S.entity_feature(column, "events", w), _others(x, lo_v, pair_window, up_v, own_before))
        np.subtract(touch_up, np.take(cum_touch, lo_v, out=x), out=x)
        x -= (touch_rank >= start_rank) & touch_before
        emit(S.entity_feature(column, "sessions", w), x)
        for c, (cum_a, cum_up, cum_b, own) in markers.items():
            emit(
                S.entity_feature(column, f"distinct_{c}", w),
                _others(x, lo_v, pair_window, cum_up, own, cum_a, cum_b),
            )
        del lo_v
        if entity.risk:
            # The session's own label, whenever it would fall in the window.
            own_fact = (fact_time >= np.subtract(t, w_us, out=q)) & fact_before_t
            lo_f = facts.before(rank, w_us)
            known_w = np.subtract(facts_to_t, lo_f, out=x)
            known_w -= own_fact
            if legit is not None:
                own_legit = (legit < t) & (legit >= t - w_us) & (fact_time >= t)
                known_w += (interims.counts(w_us) - own_legit).astype(x.dtype)
            emit(S.entity_feature(column, "known", w), known_w)
            fraud_w = np.subtract(fraud_to_t, facts.cum_fraud[lo_f], out=q)
            fraud_w -= own_fact * fraud
            emit(S.entity_feature(column, "fraud", w), fraud_w)
            rate = entity.rate(fraud_w, known_w)
            emit(S.entity_feature(column, "rate", w), rate)
            del rate, lo_f, own_fact
    del x, q, start_rank
    return pl.DataFrame([row_index, *(_nullable(c, out.pop(c)) for c in names)])


def point_features(
    entity: EntitySpec,
    session: str,
    ts: np.ndarray,
    values: Sequence[Sequence[str | None]],
    context: Sequence[tuple[str, int, Sequence[str | None]]],
    known: Mapping[str, tuple[int, int]],
    legit: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """The features of a few new events of one ``session`` (times ``ts``; ``values[i]``: their values of entity
    column ``i``), for online scoring, where :func:`column_features`' sorts of every row cost more than the rule
    read at each event.

    ``context`` holds (session, time, entity values) of every other row of each value the events carry: every
    event of the other sessions on them, and the session's own earlier events. ``known`` maps each labelled
    session among them to (label, time the label became known), ``legit`` each that reads as a known legitimate one
    before then to the time it does (:data:`~seqfraud.schema.LEGIT_FROM`). Returns each of
    :meth:`EntitySpec.feature_names` as float32 in event order, NaN where :func:`column_features` gives null.
    The oracle test and the online replay test hold the two equal.
    """
    n = len(ts)
    sessions = [r[0] for r in context] + [session] * n
    stamps = [r[1] for r in context] + ts.tolist()  # a list: rows are read one at a time below
    # Ties in time break by session id, as in the kernel; rows of one session at one time read alike.
    order = sorted(range(len(sessions)), key=sessions.__getitem__)
    order.sort(key=stamps.__getitem__)  # stable: by time, then session (two sorts with C keys, no tuples)
    columns = [[r[2][i] for r in context] + list(values[i]) for i in range(len(entity.columns))]
    spans = np.array(entity.window_us, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for i, column in enumerate(entity.columns):
        names = entity.column_feature_names(column)
        table = np.full((len(names), n), np.nan)
        on: dict[str, list[int]] = {v: [] for v in values[i] if v is not None}
        for j in order:
            if (v := columns[i][j]) in on:
                on[v].append(j)
        for v, rows in on.items():
            kinds = _point_kinds(entity, i, session, rows, sessions, stamps, columns, known, legit)
            for q in (q for q in range(n) if values[i][q] == v):
                t = int(ts[q])
                table[:, q] = _at(entity, column, kinds, t, t - spans)
        out |= dict(zip(names, table.astype(np.float32)))
    return out


def _point_kinds(
    entity: EntitySpec,
    i: int,
    session: str,
    rows: list[int],
    sessions: list[str],
    times: list[int],
    columns: list[list[str | None]],
    known: Mapping[str, tuple[int, int]],
    legit: Mapping[str, int],
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per windowed kind, the ascending times at which other sessions' facts on one value happen (with their
    fraud flags for ``fraud``), from its ``rows`` in (time, session) order; ``seen``: their events' times.
    ``legit``: the times known legitimate readings start, with the times they last until (:func:`_at`)."""
    seen = np.array([times[j] for j in rows if sessions[j] != session], dtype=np.int64)
    touch: dict[str, int] = {}
    for j in rows:
        touch.setdefault(sessions[j], times[j])
    touch.pop(session, None)
    kinds: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "events": (seen, None),
        "sessions": (np.sort(np.fromiter(touch.values(), np.int64, len(touch))), None),
    }
    for k, other in enumerate(entity.columns):
        if k != i:
            first: dict[str, int] = {}
            for j in rows:
                if (x := columns[k][j]) is not None and x not in first:
                    first[x] = j
            together = [times[j] for j in first.values() if sessions[j] != session]
            kinds[f"distinct_{other}"] = (np.sort(np.array(together, dtype=np.int64)), None)
    if entity.risk:
        facts = sorted((max(known[s][1], t), known[s][0]) for s, t in touch.items() if s in known)
        usable = np.array([f[0] for f in facts], dtype=np.int64)
        kinds["known"] = (usable, None)
        kinds["fraud"] = (usable, np.array([f[1] for f in facts], dtype=np.int64))
        spans = sorted(
            (max(legit[s], t), max(known[s][1], t) if s in known else _NO_TIME)
            for s, t in touch.items()
            if s in legit
        )
        spans = [(start, until) for start, until in spans if start < until]
        kinds["legit"] = (
            np.array([x[0] for x in spans], np.int64),
            np.array([x[1] for x in spans], np.int64),
        )
    return kinds


def _at(
    entity: EntitySpec,
    column: str,
    kinds: dict[str, tuple[np.ndarray, np.ndarray | None]],
    t: int,
    starts: np.ndarray,
) -> np.ndarray:
    """One event's features of one value at time ``t`` (window starts ``starts``), in feature-name order."""
    counts: dict[str, np.ndarray] = {}
    for kind, (at, weight) in kinds.items():
        lo, hi = np.searchsorted(at, starts), np.searchsorted(at, t)
        if kind == "legit":  # readings that start in the window and last until t, known ones of label 0
            assert weight is not None
            counts["known"] += np.array([np.count_nonzero(weight[a:hi] >= t) for a in lo])
        elif weight is None:
            counts[kind] = (hi - lo).astype(np.float64)
        else:
            cum = np.concatenate([[0], np.cumsum(weight)])
            counts[kind] = (cum[hi] - cum[lo]).astype(np.float64)
    if entity.risk:
        counts["rate"] = entity.rate(counts["fraud"], counts["known"])
    seen = kinds["events"][0]
    before = seen[: np.searchsorted(seen, t)]
    since = [(t - before[0]) / 1e6, (t - before[-1]) / 1e6] if len(before) else [np.nan, np.nan]
    return np.concatenate([*(counts[k] for k in entity._kinds(column)), since])


def _nullable(name: str, x: np.ndarray) -> pl.Series:
    """A feature column with NaN (never seen) as null; the NaN scan costs less than Polars' own conversion."""
    return pl.Series(name, x, nan_to_null=bool(np.isnan(x).any()))


# The preprocessing report's key: each entity column's busiest value and its sessions (busiest_value).
BUSIEST_ENTITY_VALUES = "busiest_entity_values"
# A value shared by this share of the sessions (and by at least BUSY_MIN_SESSIONS) is said at preprocessing; a
# placeholder text already from PLACEHOLDER_MIN_SESSIONS.
BUSY_SHARE = 0.05
BUSY_MIN_SESSIONS = 100
PLACEHOLDER_MIN_SESSIONS = 10
# Texts that logs write where they mean "no value": shared by every event that has them, they link sessions that
# share nothing.
_PLACEHOLDERS = {"0", "-1", "unknown", "0.0.0.0", "-"}  # an empty value, or "null" and the like, is refused
# And seven zeros or nines or more, after a country code or with separators: a phone or an id filled as 0000000000,
# 999-999-9999 or +44 0000 000000 (dogfood 250: one on 155 of 517 applications moved 136 to decline); not 1000000,
# 111111 or a test card's 4111111111111111, which are ids (review 252).
_REPEATED_DIGIT = re.compile(r"(\+[0-9]{1,3})?(0{7,}|9{7,})")


def is_placeholder(value: Any) -> bool:
    """Whether an entity value reads as a placeholder for "no value" (:data:`_PLACEHOLDERS`, a repeated digit)."""
    text = str(value).strip().lower()
    return text in _PLACEHOLDERS or bool(_REPEATED_DIGIT.fullmatch(re.sub(r"[\s().-]", "", text)))


def busiest_value(rows: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """The value of ``column`` shared by the most sessions (the smallest value on a tie, so that every engine
    names the same one), as ``value, sessions``; no row when no event carries the column."""
    return (
        rows.filter(pl.col(column).is_not_null())
        .group_by(column)
        .agg(pl.col(S.SESSION_ID).n_unique().alias("sessions"))
        .sort(["sessions", column], descending=[True, False])
        .head(1)
        .select(pl.col(column).alias("value"), "sessions")
    )


def busy_warnings(busiest: Mapping[str, Sequence[Any] | None], n_sessions: int) -> list[str]:
    """What to say of each entity column's busiest value (``{column: [value, sessions] or None}``).

    One value on many sessions is either a placeholder for "unknown", which links sessions that share nothing
    (write null instead), or a truly shared one (a carrier NAT address, a popular e-mail domain): its features
    are then the same for most sessions, and live scoring reads all its rows in the longest window at each of
    its events, a cost that grows with them (BENCHMARKS.md, a busy value).
    """
    said = []
    for column, found in busiest.items():
        if found is None:
            continue
        value, sessions = found
        placeholder = is_placeholder(value)
        if sessions < (
            PLACEHOLDER_MIN_SESSIONS if placeholder else max(BUSY_MIN_SESSIONS, BUSY_SHARE * n_sessions)
        ):
            continue
        said.append(
            f"entity column {column!r}: the value {value!r} is on {sessions:,} of the {n_sessions:,} sessions "
            f"({sessions / max(n_sessions, 1):.1%}): "
            + (
                "it looks like a placeholder for no value, which links every session that has it: write null "
                "where an event has no such entity"
                if placeholder
                else "if it stands for no value, write null; if it is real (a shared NAT address, a popular "
                "domain), its features are alike for all those sessions, and live scoring reads all its rows "
                "in the longest window at each of its events (docs/entities.md, busy values)"
            )
        )
    return said


def attach(events: pl.LazyFrame, features: pl.LazyFrame, names: list[str]) -> pl.LazyFrame:
    """``events`` with the features of one entity column (rows without a value get nulls)."""
    return events.join(
        features.select(S.ROW_INDEX, *names), on=S.ROW_INDEX, how="left", maintain_order="left"
    )


def _codes(values: pl.Series, *, ordered: bool = False) -> np.ndarray:
    """Int64 codes of a column's values below ``2**31``, -1 for null; with ``ordered``, in the values' sort order.

    Strings go through an Enum of their distinct values (a hash lookup, where a dense rank sorts every row);
    integer codes that are already small and non-negative stay as they are.
    """
    if values.dtype == pl.String:
        categories = values.drop_nulls().unique()
        codes = values.cast(pl.Enum(categories.sort() if ordered else categories)).to_physical()
    elif values.dtype.is_integer() and _small_non_negative(values):
        codes = values
    else:
        codes = values.rank("dense") - 1
    return codes.cast(pl.Int64).fill_null(-1).to_numpy()


def _filled(values: pl.Series, fill: int) -> np.ndarray:
    """An integer column as int64, nulls as ``fill``."""
    if not values.null_count():
        return values.to_numpy().astype(np.int64, copy=False)
    return values.fill_null(fill).cast(pl.Int64).to_numpy()


def _small_non_negative(values: pl.Series) -> bool:
    low, high = values.min(), values.max()
    return low is None or (isinstance(low, int) and isinstance(high, int) and low >= 0 and high < 2**31)


def _argsort_pair(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """The order of (major, minor), both non-negative integers: one sort of a packed key where it fits."""
    minor = minor.astype(np.int64)
    span = int(minor.max()) + 1
    if (int(major.max()) + 1) * span < 2**63:
        return np.argsort(major * span + minor, kind="stable")
    return np.lexsort((minor, major))


def _starts(x: np.ndarray) -> np.ndarray:
    """Where a run of equal values begins."""
    first = np.empty(len(x), dtype=bool)
    first[:1] = True
    np.not_equal(x[1:], x[:-1], out=first[1:])
    return first


def _run_ids(*keys: np.ndarray) -> np.ndarray:
    """0-based ids of the runs of equal key tuples (rows sorted so that equal tuples are adjacent)."""
    first = _starts(keys[0])
    for k in keys[1:]:
        first |= _starts(k)
    return np.cumsum(first) - 1


def _time_ranks(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct times, ascending, and each time's rank among them."""
    order = pl.Series(t).arg_sort().to_numpy()  # any order of ties; Polars' sort is the faster on many rows
    sorted_t = t[order]
    first = _starts(sorted_t)
    rank = np.empty(len(t), dtype=_index(len(t)))
    rank[order] = np.cumsum(first, dtype=rank.dtype) - 1
    return sorted_t[first], rank


def _index(n: int) -> type[np.signedinteger]:
    """The integer type for positions and counts among ``n`` rows: int32 where it fits, half of int64's memory."""
    return np.int32 if n < 2**31 - 1 else np.int64


def _cumsum(x: np.ndarray) -> np.ndarray:
    """``[0, x0, x0 + x1, ...]`` of 0/1 weights: a sum over positions ``[lo, hi)`` is ``c[hi] - c[lo]``."""
    c = np.zeros(len(x) + 1, dtype=_index(len(x) + 1))
    np.cumsum(x, dtype=c.dtype, out=c[1:])
    return c


def _first_with(value: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Rows (in order A) where a non-null value of another column first appears together with the value."""
    key = value * (int(other.max()) + 2) + other + 1
    return pl.Series(key).is_first_distinct().to_numpy() & (other >= 0)


def _others(
    out: np.ndarray,
    lo_v: np.ndarray,
    pair_window: tuple[np.ndarray, np.ndarray, np.ndarray],
    cum_up: np.ndarray,
    own: np.ndarray,
    cum_a: np.ndarray | None = None,
    cum_b: np.ndarray | None = None,
) -> np.ndarray:
    """A weight summed over other sessions' rows in each row's window, into ``out``: over the value's rows in
    ``[lo_v, upper)`` (prefix sums ``cum_a`` in order A, ``cum_up`` at the uppers), less the row's own session's
    rows, ``own``, or for the rows in ``pair_window`` (rows, lower and upper bounds in order B) the sum there
    (prefix sums ``cum_b``). Without prefix sums, the weight is one per row."""
    late, lo_p, up_p = pair_window
    np.subtract(cum_up, lo_v if cum_a is None else np.take(cum_a, lo_v, out=out), out=out)
    fix = own[late] - (up_p - lo_p if cum_b is None else cum_b[up_p] - cum_b[lo_p])
    out -= own
    out[late] += fix
    return out


class _Runs:
    """Rows sorted by (group, time): the rows of a group in ``[t - w, t)`` are a range of positions.

    Times enter as ranks among the distinct times, so ``group * m + rank`` is one ascending int64 key and every
    window bound is one ``searchsorted``.
    """

    def __init__(self, group: np.ndarray, rank: np.ndarray, m: int):
        idx = np.arange(len(group), dtype=_index(len(group)))
        self.keys = group * m + rank
        self.group_first = _starts(group)
        # Position of the first row of each row's group, and of the first row at the row's own time.
        self.start = np.maximum.accumulate(np.where(self.group_first, idx, 0))
        self.upper = np.maximum.accumulate(np.where(_starts(self.keys), idx, 0))

    def seen_by_others(self, session: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seconds since the group's first and latest row of another session before each row's time (NaN: none).

        Latest: the last row before the row's time, or, when that row is the row's own session, the row before
        the run of own-session rows that ends there. First: the group's first row, or the first row after the
        group's first run when that run is the row's own session.
        """
        n = len(t)
        s = session
        run_first = _starts(s) | self.group_first
        run_id = np.cumsum(run_first) - 1
        run_starts = np.flatnonzero(run_first)
        run_start = run_starts[run_id]
        last = self.upper - 1
        at = np.maximum(last, 0)
        last = np.where((last >= 0) & (s[at] == s), run_start[at] - 1, last)
        ok = last >= self.start
        last_seen = np.where(ok, (t - t[np.maximum(last, 0)]) / 1e6, np.nan)
        # The first run of each group ends where the next run starts; that next row is the first other session.
        next_run = np.r_[run_starts[1:], n]
        first_run_end = next_run[run_id[self.start]]
        second = np.minimum(first_run_end, n - 1)
        has_second = (first_run_end < n) & ~self.group_first[second] & (first_run_end > self.start)
        first_other = np.where(s[self.start] != s, self.start, np.where(has_second, second, -1))
        valid = (first_other >= 0) & (t[np.maximum(first_other, 0)] < t)
        first_seen = np.where(valid, (t - t[np.maximum(first_other, 0)]) / 1e6, np.nan)
        return first_seen, last_seen


class _Interims:
    """Facts that start on a value and last until a time (``until``): per query row (order A, ``keys`` as
    :class:`_Runs`' of value and time rank), those that start in its window ``[t - w, t)`` and last until ``t`` or
    after. Each counts on the range of its value's rows from after its start to the earlier of the window's end
    and ``until``, summed with a difference array; the ranges' first rows are the same for every window."""

    def __init__(
        self,
        keys: np.ndarray,
        m: int,
        times: np.ndarray,
        value: np.ndarray,
        start: np.ndarray,
        until: np.ndarray,
    ):
        self.keys, self.m, self.times, self.value = keys, m, times, value
        self.start, self.until = start, until
        self.first = self._after(start)

    def _after(self, at: np.ndarray) -> np.ndarray:
        """Per fact, the position of its value's first row later than ``at``."""
        return np.searchsorted(self.keys, self.value * self.m + np.searchsorted(self.times, at, side="right"))

    def counts(self, w_us: int) -> np.ndarray:
        diff = np.zeros(len(self.keys) + 1, dtype=np.int64)
        np.add.at(diff, self.first, 1)
        np.add.at(diff, self._after(np.minimum(self.start + w_us, self.until)), -1)
        return np.cumsum(diff[:-1])


class _Facts:
    """Labels usable on a value from a time on: per query row, how many sort before (value, time).

    Fact times rank among the distinct fact times, where a bound's rank (how many fact times lie below it)
    compares exactly with every fact; event-time ranks would not, as facts fall between events.
    """

    def __init__(
        self,
        value: np.ndarray,
        time: np.ndarray,
        fraud: np.ndarray,
        rows_value: np.ndarray,
        event_times: np.ndarray,
    ):
        self.times, rank = _time_ranks(time)
        self.event_times = event_times
        m = len(self.times) + 1
        key = value * m + rank
        order = np.argsort(key)
        self.keys = key[order]
        self.cum_fraud = _cumsum(fraud[order])
        self.base = rows_value * m

    def before(self, rank: np.ndarray, back_us: int = 0) -> np.ndarray:
        """Per query row (its time as a rank among ``event_times``), the facts of lower values plus those of its
        value before its time less ``back_us``: a difference of two is a count, and indexes ``cum_fraud``."""
        below = np.searchsorted(self.times, self.event_times - back_us)[rank]
        return np.searchsorted(self.keys, np.add(self.base, below, out=below))
