"""Entity features: what other sessions on the same device, IP, card or account show, as of each event.

**The point-in-time rule.** For an event of session ``s`` at time ``t``, and for the value ``e`` of each
entity column on that event, a feature reads only

- events of *other* sessions that carry ``e``, at times strictly before ``t``, and
- labels of other sessions that carried ``e``, each from the later of the time the label became known
  (``data.schema.label_time``, or the session's last event plus ``data.policy.label_delay``) and that
  session's first event on ``e``, again strictly before ``t``.

Nothing of ``s`` itself (its events, its label), nothing at ``t`` or later. Windowed features look back over
``[t - w, t)``. Every engine and every path (training, backtests, batch scoring, the export check) computes
the features with :func:`column_features`, and a property test holds it to this rule; docs/entities.md says
the same with examples.

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

from collections.abc import Mapping
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

    @property
    def window_us(self) -> list[int]:
        return [duration_us(w, "features.entity.windows") for w in self.windows]

    def column_feature_names(self, column: str) -> list[str]:
        others = [c for c in self.columns if c != column]
        kinds = [*ACTIVITY, *[f"distinct_{c}" for c in others], *(RISK if self.risk else ())]
        windowed = [S.entity_feature(column, k, w) for k in kinds for w in self.windows]
        return [*windowed, S.entity_feature(column, FIRST_SEEN), S.entity_feature(column, LAST_SEEN)]

    def feature_names(self) -> list[str]:
        return [name for c in self.columns for name in self.column_feature_names(c)]

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
        )


def entity_spec(
    schema: Schema, entity_cfg: Mapping[str, Any] | None, label_delay: str | None, prior: float
) -> EntitySpec | None:
    """The fitted entity spec from ``features.entity``; None when ``data.schema.entities`` is empty."""
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
        prior=prior,
        label_delay=label_delay,
    )


def kernel_rows(events: pl.LazyFrame, sessions: pl.DataFrame, entity: EntitySpec) -> pl.LazyFrame:
    """What :func:`column_features` reads: each event's row, session, time and entities, and its session's
    label with the time it became known (``sessions``: ``session_id``, ``label``, ``label_known``)."""

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
    )


def column_features(rows: pl.DataFrame, column: str, entity: EntitySpec) -> pl.DataFrame:
    """The features of entity column ``column`` for every row of ``rows`` that carries a value of it.

    ``rows`` (from :func:`kernel_rows`) must hold every row of each value of ``column`` it holds, and nothing
    else is read. Returns ``__row`` and :meth:`EntitySpec.column_feature_names`, one row per input row with a
    non-null value, in ``__row`` order.
    """
    names = entity.column_feature_names(column)
    # Ties in time break by session id, then input row: the same order whatever the other sessions' rows are
    # numbered (a history scored beside new events numbers them apart from the training log).
    rows = rows.filter(pl.col(column).is_not_null()).sort(S.SESSION_ID, S.ROW_INDEX)
    n = rows.height
    if n == 0:
        return pl.DataFrame(
            {S.ROW_INDEX: pl.Series([], dtype=rows.schema[S.ROW_INDEX])} | {c: [] for c in names},
            schema_overrides={c: pl.Float32 for c in names},
        )
    value = _codes(rows[column])
    session = _codes(rows[S.SESSION_ID])
    t = rows[S.TS_US].to_numpy()
    # Per row, the time its session's label became usable on this value (later of known time and first touch).
    known = rows[S.LABEL_KNOWN].fill_null(_NO_TIME).to_numpy()
    fraud = rows[S.LABEL].fill_null(0).to_numpy().astype(np.float64)
    pair = _codes(pl.Series(value * (int(session.max()) + 1) + session))

    times = np.unique(t)
    rank = np.searchsorted(times, t)
    by_value = _Grouped(value, rank, len(times))
    by_pair = _Grouped(pair, rank, len(times))
    first_touch = np.zeros(n, dtype=bool)
    first_touch[by_pair.order[by_pair.group_first]] = True
    touch_time = by_pair.first_value(t)  # per row: its session's first event on this value
    fact_time = np.maximum(known, touch_time)

    out: dict[str, np.ndarray] = {}
    others = [c for c in entity.columns if c != column]
    distinct = {
        c: (
            pl.DataFrame({"v": value, "o": rows[c], "r": np.arange(n)})
            .sort("r")[by_value.order]
            .select(pl.struct("v", "o").is_first_distinct() & pl.col("o").is_not_null())
            .to_series()
            .to_numpy()
        )
        for c in others
    }
    facts = _Facts(value[first_touch], fact_time[first_touch], fraud[first_touch])
    markers = {}
    for c in others:
        # First co-occurrence markers are found in value order; the window sums take them per input row.
        markers[c] = np.zeros(n)
        markers[c][by_value.order] = distinct[c]
    v_sorted, t_sorted = value[by_value.order], t[by_value.order]
    for w, w_us in zip(entity.windows, entity.window_us, strict=True):
        start_rank = np.searchsorted(times, t - w_us, side="left")
        lo_v, lo_p = by_value.lower(start_rank), by_pair.lower(start_rank)

        def others_only(weight: np.ndarray, lo_v: np.ndarray = lo_v, lo_p: np.ndarray = lo_p) -> np.ndarray:
            return by_value.window_sum(weight, lo_v) - by_pair.window_sum(weight, lo_p)

        out[S.entity_feature(column, "events", w)] = others_only(np.ones(n))
        out[S.entity_feature(column, "sessions", w)] = others_only(first_touch.astype(np.float64))
        for c in others:
            out[S.entity_feature(column, f"distinct_{c}", w)] = others_only(markers[c])
        if entity.risk:
            known_w, fraud_w = np.empty(n), np.empty(n)
            known_w[by_value.order], fraud_w[by_value.order] = facts.counts(
                v_sorted, t_sorted - w_us, t_sorted
            )
            # The session's own label, whenever it would fall in the window.
            own = (fact_time >= t - w_us) & (fact_time < t)
            known_w -= own
            fraud_w -= own * fraud
            out[S.entity_feature(column, "known", w)] = known_w
            out[S.entity_feature(column, "fraud", w)] = fraud_w
            out[S.entity_feature(column, "rate", w)] = (fraud_w + entity.smoothing * entity.prior) / (
                known_w + entity.smoothing
            )
    first_seen, last_seen = by_value.seen_by_others(session, t)
    out[S.entity_feature(column, FIRST_SEEN)] = first_seen
    out[S.entity_feature(column, LAST_SEEN)] = last_seen
    # Float32 on disk and on every path alike: counts stay exact, and the values the edges were fitted on are
    # the values scoring sees.
    seen = (S.entity_feature(column, FIRST_SEEN), S.entity_feature(column, LAST_SEEN))
    return pl.DataFrame({S.ROW_INDEX: rows[S.ROW_INDEX]} | {c: out[c] for c in names}).with_columns(
        pl.col(c).fill_nan(None).cast(pl.Float32) if c in seen else pl.col(c).cast(pl.Float32) for c in names
    )


def attach(events: pl.LazyFrame, features: pl.LazyFrame, names: list[str]) -> pl.LazyFrame:
    """``events`` with the features of one entity column (rows without a value get nulls), as Float64 like
    every numeric field."""
    return events.join(features, on=S.ROW_INDEX, how="left", maintain_order="left").with_columns(
        pl.col(c).cast(pl.Float64) for c in names
    )


def _codes(values: pl.Series) -> np.ndarray:
    """Dense 0-based codes of a column's values (any order, the same value the same code)."""
    return (values.rank("dense").cast(pl.Int64) - 1).to_numpy()


class _Grouped:
    """Rows sorted by (group, time, then their given order): sums of per-row weights over ``[t - w, t)`` within a group.

    Times enter as ranks among the distinct times, so ``group * (n_times + 1) + rank`` is one int64 key and
    every window bound is one ``searchsorted`` of sorted queries.
    """

    def __init__(self, group: np.ndarray, rank: np.ndarray, n_times: int):
        self.m = n_times + 1
        key = group * self.m + rank
        self.order = np.argsort(key, kind="stable")  # the rows' given order breaks ties
        self.keys = key[self.order]
        self.base = group[self.order] * self.m
        self.group_first = np.r_[True, self.base[1:] != self.base[:-1]]
        # Sorted position of the first row of each row's group, and of the first row at the row's own time.
        self.start = np.maximum.accumulate(np.where(self.group_first, np.arange(len(key)), 0))
        self.upper = np.searchsorted(self.keys, self.keys, side="left")

    def lower(self, start_rank: np.ndarray) -> np.ndarray:
        """Sorted position of each row's first group row at or after the window start (rank per input row)."""
        return np.searchsorted(self.keys, self.base + start_rank[self.order], side="left")

    def window_sum(self, weight: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """Per input row: the sum of ``weight`` over its group's rows in ``[lower, upper)``."""
        cum = np.r_[0.0, np.cumsum(weight[self.order], dtype=np.float64)]
        out = np.empty(len(weight))
        out[self.order] = cum[self.upper] - cum[lower]
        return out

    def first_value(self, x: np.ndarray) -> np.ndarray:
        """Per input row: ``x`` at the first row of its group."""
        out = np.empty_like(x)
        out[self.order] = x[self.order][self.start]
        return out

    def seen_by_others(self, session: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seconds since the group's first and latest row of another session before each row's time (NaN: none).

        Latest: the last row before the row's time, or, when that row is the row's own session, the row before
        the run of own-session rows that ends there. First: the group's first row, or the first row after the
        group's first run when that run is the row's own session.
        """
        n = len(t)
        s, ts = session[self.order], t[self.order]
        run_first = np.r_[True, (s[1:] != s[:-1]) | self.group_first[1:]]
        run_start = np.maximum.accumulate(np.where(run_first, np.arange(n), 0))
        last = self.upper - 1
        last = np.where((last >= 0) & (s[np.maximum(last, 0)] == s), run_start[np.maximum(last, 0)] - 1, last)
        ok = last >= self.start
        last_seen = np.where(ok, (ts - ts[np.maximum(last, 0)]) / 1e6, np.nan)
        # The first run of each group ends where the next run starts; that next row is the first other session.
        next_run = np.r_[np.flatnonzero(run_first)[1:], n]
        first_run_end = next_run[np.searchsorted(np.flatnonzero(run_first), self.start, side="right") - 1]
        second = np.minimum(first_run_end, n - 1)
        has_second = (first_run_end < n) & ~self.group_first[second] & (first_run_end > self.start)
        first_other = np.where(
            s[self.start] != s, self.start, np.where(has_second, second, -1)
        )  # sorted position, -1 for none
        valid = (first_other >= 0) & (ts[np.maximum(first_other, 0)] < ts)
        first_seen = np.where(valid, (ts - ts[np.maximum(first_other, 0)]) / 1e6, np.nan)
        out_first, out_last = np.empty(n), np.empty(n)
        out_first[self.order], out_last[self.order] = first_seen, last_seen
        return out_first, out_last


class _Facts:
    """Labels usable on a value from a time on; per query row, how many became usable in ``[start, t)``.

    Fact times rank among the distinct fact times, where a bound's rank (how many fact times lie below it)
    compares exactly with every fact; event-time ranks would not, as facts fall between events.
    """

    def __init__(self, value: np.ndarray, time: np.ndarray, fraud: np.ndarray):
        usable = time != _NO_TIME
        value, time, fraud = value[usable], time[usable], fraud[usable]
        self.times = np.unique(time)
        self.m = len(self.times) + 1
        key = value * self.m + np.searchsorted(self.times, time)
        order = np.argsort(key, kind="stable")
        self.keys = key[order]
        self.cum_known = np.arange(len(order) + 1, dtype=np.float64)
        self.cum_fraud = np.r_[0.0, np.cumsum(fraud[order], dtype=np.float64)]

    def counts(self, value: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Known and fraud counts of ``value``'s facts with ``start <= time < end`` (queries sorted by value, end)."""
        base = value * self.m
        lo = np.searchsorted(self.keys, base + np.searchsorted(self.times, start), side="left")
        hi = np.searchsorted(self.keys, base + np.searchsorted(self.times, end), side="left")
        return self.cum_known[hi] - self.cum_known[lo], self.cum_fraud[hi] - self.cum_fraud[lo]
