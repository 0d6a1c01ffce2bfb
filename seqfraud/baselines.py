"""The incumbent to beat: LightGBM on hand-built per-session aggregates; and the stacker built on it.

Aggregates are what fraud teams already run: counts per event type and per category, amount
statistics, timing statistics. They see *what* happened and *how fast*, never in which order, which
is the gap a sequence model should close. Vocabularies come from the same fitted spec, so the
baseline is fitted on the training period only, like the sequence model.

:class:`Stacker` (``model=stacked``, :mod:`seqfraud.training.stacking`) is this baseline with one more input,
the sequence model's logit: it has everything the incumbent has, so it should not lose to it. Its trees travel
in LightGBM's own text format: no pickle, and reading them runs no code.
"""

from __future__ import annotations

import ctypes
import logging
import math
import re
import weakref
from collections.abc import Sequence

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.features.fastpath import EventColumns
from seqfraud.features.spec import Spec

log = logging.getLogger(__name__)
STACKER_FILE = "stacker.txt"
STACKER_FORMAT = "lightgbm-text"
# How a blend combines (the manifest's ``stacker.combine``): the mean of its trees' raw score and the sequence
# model's logit. A stacker without it is given the logit as its last input.
STACKER_BLEND = "mean-logit"


def session_aggregates(events: pl.LazyFrame, spec: Spec) -> pl.LazyFrame:
    """Normalized events to one feature row per session (column order is stable for a given spec)."""
    # Timing statistics need only the sorted timestamps of a session, not its event order.
    dt = pl.col(S.TS_US).sort().diff().drop_nulls().cast(pl.Float64) / 1e6
    aggs = [
        pl.len().alias("n_events"),
        ((pl.col(S.TS_US).max() - pl.col(S.TS_US).min()) / 1e6).alias("duration_s"),
    ]
    for c in spec.schema.categorical_fields:
        aggs += [(pl.col(c) == v).sum().alias(f"{c}={v}") for v in spec.vocab[c]]
        aggs += [
            (~pl.col(c).is_in(spec.vocab[c]) & pl.col(c).is_not_null()).sum().alias(f"{c}=<unknown>"),
            pl.col(c).is_null().sum().alias(f"{c}=<missing>"),
            pl.col(c).n_unique().alias(f"{c}:n_unique"),
        ]
    for c in spec.schema.numerical:
        x = pl.col(c).filter(pl.col(c).is_finite())
        aggs += [
            x.sum().alias(f"{c}:sum"),
            x.mean().alias(f"{c}:mean"),
            x.max().alias(f"{c}:max"),
            x.min().alias(f"{c}:min"),
            x.std().alias(f"{c}:std"),
            x.count().alias(f"{c}:count"),
        ]
    # Entity features change along the session as its context accrues: the latest value is the most informed.
    for c in spec.numeric_fields[len(spec.schema.numerical) :]:
        x = pl.col(c).drop_nulls()
        aggs += [
            pl.col(c).sort_by(S.TS_US, S.ROW_INDEX).drop_nulls().last().alias(f"{c}:last"),
            x.max().alias(f"{c}:max"),
            x.min().alias(f"{c}:min"),
            x.mean().alias(f"{c}:mean"),
        ]
    aggs += [
        dt.mean().alias("dt:mean"),
        dt.median().alias("dt:median"),
        dt.std().alias("dt:std"),
        dt.min().alias("dt:min"),
        dt.max().alias("dt:max"),
        (dt.std() / dt.mean()).alias("dt:cv"),
        (dt < 1.0).sum().alias("dt:under_1s"),
    ]
    return events.group_by(S.SESSION_ID).agg(aggs).sort(S.SESSION_ID)


DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "verbose": -1,
}


def check_lightgbm_params(params: dict, key: str, stacker: bool = False) -> None:
    """Refuse (ConfigError, naming ``key``) LightGBM parameters it does not know or will not take, by a one-round
    fit on a few rows: a misspelt one was ignored with a warning LightGBM prints, and a bad value failed after
    preprocessing and every sequence fit. A ``stacker``'s must also make trees an artifact reads
    (:func:`checked_trees`) and a raw score that is one model's logit, which the blend candidate reads: a forest's
    sums its trees (review 276), and cross_entropy_lambda's stacker was refused after training."""
    import lightgbm as lgb

    from seqfraud.errors import ConfigError, did_you_mean, first_line

    try:  # every name and alias LightGBM reads; a private table, so a LightGBM without it checks values only
        known = {a for aliases in lgb.basic._ConfigAliases._get_all_param_aliases().values() for a in aliases}
    except AttributeError:
        known = set(params)
    for name in params:
        if name not in known:
            raise ConfigError(f"{key}.{name}: not a LightGBM parameter{did_you_mean(name, sorted(known))}")
    # As fit_lightgbm fits (its defaults, a validation set, its metric), but on two features: a list's length is per
    # feature (monotone_constraints...), which only the real aggregates give, so lists are left to the fit (review 58).
    scalars = {k: v for k, v in params.items() if not isinstance(v, (list, tuple))}
    # Rows that split, so that a tree's kind shows (linear leaves, checked_trees refuses).
    rows = np.arange(400, dtype=np.float64).reshape(200, 2)
    labels = (np.arange(200) % 7 == 0) | (np.arange(200) > 150)
    train = lgb.Dataset(rows, labels)
    try:
        booster = lgb.train(
            {**DEFAULT_PARAMS, "metric": "average_precision", **scalars, "verbose": -1},
            train,
            num_boost_round=1,
            valid_sets=[lgb.Dataset(rows, labels, reference=train)],
        )
    except (lgb.basic.LightGBMError, TypeError, ValueError) as e:
        raise ConfigError(f"{key}: LightGBM refuses them: {first_line(e)}") from None
    if stacker:
        text = booster.model_to_string()
        if "\naverage_output\n" in text:
            raise ConfigError(
                f"{key}: a random forest's raw score sums its trees, where the stacker's blend reads one model's "
                "logit: boost (boosting: gbdt, the default)"
            )
        try:
            checked_trees(text, 2)
        except ValueError as e:
            raise ConfigError(f"{key}: an artifact could not read the stacker they make: {e}") from None


def fit_lightgbm(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    names: list[str],
    *,
    params: dict | None = None,
    num_boost_round: int = 1000,
    early_stopping: int = 50,
    seed: int = 0,
    num_threads: int = 0,
    what: str = "LightGBM",
):
    """A booster early-stopped on validation average precision (the baseline's and the stacker's fit), said when
    one tree ranked validation perfectly, so that early stopping kept it (``what`` names the fit there): 15
    validation frauds, one tree, scores in 5 values, unsaid (dogfood 198). A first tree kept at a lower precision
    is no saturated validation (no signal, or nothing to split: review 202)."""
    import lightgbm as lgb

    p = (
        DEFAULT_PARAMS
        | {
            "seed": seed,
            "num_threads": num_threads,
            "metric": "average_precision",
            "deterministic": True,
            "force_col_wise": True,
        }
        | (params or {})
    )
    # LightGBM refuses JSON punctuation in feature names, and category values can hold anything.
    names = [f"{i}_{re.sub(r'[^0-9A-Za-z_]', '_', c)}" for i, c in enumerate(names)]
    dtrain = lgb.Dataset(train_x, train_y, feature_name=names)
    dval = lgb.Dataset(val_x, val_y, reference=dtrain)
    booster = lgb.train(
        p,
        dtrain,
        num_boost_round,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(early_stopping, verbose=False)],
    )
    best = booster.best_score.get("valid_0", {}).get("average_precision")
    if booster.best_iteration == 1 and num_boost_round > 1 and best == 1.0:
        log.warning(
            "%s stopped at its first tree: validation average precision 1.0 after one tree, so one tree scores "
            "(in few distinct values). A validation of %d fraud(s) that one tree ranks perfectly cannot tell a "
            "better model apart: a longer validation period (data.split.val_start) gives it more to see",
            what,
            int(np.sum(val_y)),
        )
    return booster


def fit_predict_lightgbm(
    train: pl.DataFrame,
    val: pl.DataFrame,
    tests: dict[str, pl.DataFrame],
    **options,
) -> dict[str, np.ndarray]:
    """Early stopping on validation average precision; returns probabilities for val and each test frame.

    Frames hold aggregates plus ``label``; the session id is not a feature. ``options`` go to :func:`fit_lightgbm`.
    The rows are :func:`snapped`, as the stacker's are: the default model's baseline is then this very model
    (dogfood 253: LightGBM's bins on the raw floats kept 25 trees where the stacker's baseline kept 19, and scores
    moved by up to 0.108).
    """
    features = [c for c in train.columns if c not in (S.SESSION_ID, S.LABEL)]
    booster = fit_lightgbm(
        snapped(train.select(features).to_numpy()),
        train[S.LABEL].to_numpy(),
        snapped(val.select(features).to_numpy()),
        val[S.LABEL].to_numpy(),
        features,
        **options,
    )
    frames = {"val": val} | tests
    return {
        k: np.asarray(
            booster.predict(snapped(f.select(features).to_numpy()), num_iteration=booster.best_iteration)
        )
        for k, f in frames.items()
    }


def aggregate_matrix(events: pl.DataFrame | pl.LazyFrame, spec: Spec, session_ids: list[str]) -> np.ndarray:
    """:func:`session_aggregates` of normalized events as one float64 row per session, in ``session_ids`` order."""
    aggregates = session_aggregates(events.lazy(), spec).collect()
    order = pl.DataFrame({S.SESSION_ID: pl.Series(session_ids, dtype=pl.String)})
    aligned = order.join(aggregates, on=S.SESSION_ID, how="left", maintain_order="left")
    return aligned.drop(S.SESSION_ID).to_numpy().astype(np.float64)


def column_aggregates(events: EventColumns, layout: AggregateLayout) -> tuple[list[str], np.ndarray]:
    """:func:`session_aggregates` of plain columns (a request's few sessions), without Polars, which would spend
    milliseconds planning the query for one session: the sessions in sorted order and one float64 row each, as
    :func:`aggregate_matrix` gives them (a property test holds the two equal)."""
    ids = np.array(events.session_ids, dtype=object)
    names = sorted(set(events.session_ids))
    rows = [RunningAggregates(layout).add(events, np.flatnonzero(ids == sid)).row() for sid in names]
    return names, np.array(rows, dtype=np.float64).reshape(len(names), layout.width)


class AggregateLayout:
    """Where a spec's running totals sit in :class:`RunningAggregates`' arrays, built once per stacker (a
    vocabulary's positions are a dict, which one event must not rebuild)."""

    def __init__(self, spec: Spec):
        self.categorical = spec.schema.categorical_fields
        self.numerical = spec.schema.numerical
        self.entity = spec.numeric_fields[len(self.numerical) :]
        # Per categorical field: each vocabulary value's count's position, then the unknown and the null values'.
        self.position: dict[str, dict[str, int]] = {}
        self.others: dict[str, int] = {}
        at = 3  # after the events' count and the first and last times
        for c in self.categorical:
            self.position[c] = {v: at + i for i, v in enumerate(spec.vocab[c])}
            self.others[c] = at + len(spec.vocab[c])
            at = self.others[c] + 2
        self.numeric_counts = at
        self.n_counts = at + len(self.numerical) + len(self.entity)
        # Totals: 5 per number (sum, mean, squared deviations, min, max), 4 per entity feature (last, max, min,
        # sum), then the gaps' sum, mean and squared deviations.
        self.n_totals = 5 * len(self.numerical) + 4 * len(self.entity) + 3
        self.number_totals = slice(0, 5 * len(self.numerical))
        self.entity_totals = slice(5 * len(self.numerical), self.n_totals - 3)
        # n_events, duration; per categorical its counts, unknown, missing, distinct; 6 per number, 4 per entity
        # feature; 7 timing statistics: session_aggregates' columns.
        self.width = 2 + sum(len(spec.vocab[c]) + 3 for c in self.categorical)
        self.width += 6 * len(self.numerical) + 4 * len(self.entity) + 7

    def number(self, totals: np.ndarray, j: int) -> np.ndarray:
        """The ``j``-th number's five totals, a view."""
        return totals[5 * j : 5 * j + 5]


class RunningAggregates:
    """A session's :func:`session_aggregates` as running totals: counts, sums, extremes and running variances
    (Welford's, merged batch by batch), so online scoring adds an event in constant time where it recomputed
    the session's rows at every event. The gaps between events are kept whole and sorted, for their median.

    Events must come in time order across :meth:`add` calls (a late one rebuilds the session); the row agrees
    with Polars' to the last bit or nearly (sums add in another order; the stacker reads both
    :func:`snapped`)."""

    def __init__(
        self,
        layout: AggregateLayout,
        counts: np.ndarray | None = None,
        totals: np.ndarray | None = None,
        gaps: np.ndarray | None = None,
        unknown: list[list[str]] | None = None,
    ):
        self.layout = layout
        self.counts = np.zeros(layout.n_counts, np.int64) if counts is None else counts
        if totals is None:  # extremes and an entity feature's last: NaN, none yet
            totals = np.zeros(layout.n_totals, np.float64)
            totals[layout.number_totals].reshape(-1, 5)[:, 3:] = np.nan
            totals[layout.entity_totals].reshape(-1, 4)[:, :3] = np.nan
        self.totals = totals
        self.gaps = np.zeros(0, np.float64) if gaps is None else gaps  # seconds between events, ascending
        # Per categorical field its distinct values outside the vocabulary, in order seen (their distinct count).
        self.unknown = [[] for _ in layout.categorical] if unknown is None else unknown
        self._unknown = [set(u) for u in self.unknown]
        if (
            len(self.counts) != layout.n_counts
            or len(self.totals) != layout.n_totals
            or len(self.unknown) != len(layout.categorical)
            or len(self.gaps) != max(int(self.counts[0]) - 1, 0)
        ):
            raise ValueError("running aggregates of another spec")

    def check(self) -> None:
        """ValueError unless these totals are ones that :meth:`add` can reach: what a stored state's must be
        before it scores (a damaged latest time failed every later event; a damaged sum or count scored on,
        silently wrong: dogfood 84)."""
        with np.errstate(all="ignore"):  # a bound past the float maximum is inf: the sums may overflow
            self._check()

    def _check(self) -> None:
        layout, counts, totals, gaps = self.layout, self.counts, self.totals, self.gaps
        n = int(counts[0])
        # counts[1:3] are times, negative before 1970 (review 89); every count lies in [0, n], so none wraps.
        if n < 0 or ((counts[3:] < 0) | (counts[3:] > n)).any() or (n and counts[1] > counts[2]):
            raise ValueError("a count outside [0, events], or a first time after the last")
        for f, c in enumerate(layout.categorical):
            unknown_at = layout.others[c]
            if counts[unknown_at - len(layout.position[c]) : unknown_at + 2].sum() != n:
                raise ValueError(f"{c!r}: counts that do not add up to the session's events")
            if len(self.unknown[f]) > counts[unknown_at] or len(self._unknown[f]) != len(self.unknown[f]):
                raise ValueError(f"{c!r}: more values outside its vocabulary than it counted")
        for j in range(len(layout.numerical)):
            t = layout.number(totals, j)
            if not _spread_fits(t[:3], counts[layout.numeric_counts + j], *t[3:]):
                raise ValueError(f"{layout.numerical[j]!r}: a sum, mean or spread its extremes cannot give")
        if not (np.isfinite(gaps).all() and (gaps >= 0).all() and (np.diff(gaps) >= 0).all()):
            raise ValueError("gaps between events that are not finite, positive and sorted")
        low, high = (gaps[0], gaps[-1]) if len(gaps) else (np.nan, np.nan)
        duration = (counts[2] - counts[1]) / 1e6
        if not (
            _spread_fits(totals[-3:], len(gaps), low, high)
            and abs(totals[-3] - duration) <= 1e-6 * (1 + duration)
            and abs(gaps.sum() - duration) <= 1e-6 * (1 + duration)
        ):
            raise ValueError("gaps that do not add up to the session's duration")
        if layout.entity:
            self._check_entity()

    def _check_entity(self) -> None:
        """An entity feature's last value between its extremes, its sum within its count times the largest
        (values may be NaN: Polars skips them in the extremes, not in the sum or the last)."""
        layout = self.layout
        last, high, low, total = self.totals[layout.entity_totals].reshape(-1, 4).T
        counted = self.counts[layout.numeric_counts + len(layout.numerical) :]
        none = counted == 0
        if not (np.isnan([last[none], high[none], low[none]]).all() and (total[none] == 0).all()):
            raise ValueError("entity features with totals but no values")
        known = ~none & ~np.isnan(high)
        largest = np.maximum(abs(low), abs(high))[known]
        if not (
            (np.isnan(low) == np.isnan(high)).all()
            and (low[known] <= high[known]).all()
            and ((low[known] <= last[known]) & (last[known] <= high[known]) | np.isnan(last[known])).all()
            and ((abs(total[known]) <= counted[known] * largest * (1 + 1e-6)) | np.isnan(total[known])).all()
        ):
            raise ValueError("entity features whose last value or sum its extremes cannot give")

    def add(self, events: EventColumns, at: np.ndarray | None = None) -> RunningAggregates:
        """Take the events at positions ``at`` (all of them by default), none before the latest one taken."""
        with np.errstate(all="ignore"):  # extreme values overflow to inf, as they do in Polars
            self._add(events, np.arange(len(events)) if at is None else at)
        return self

    def _add(self, events: EventColumns, at: np.ndarray) -> None:
        layout, counts, totals = self.layout, self.counts, self.totals
        if not len(at):
            return
        at = at[np.lexsort((events.rows[at], events.ts_us[at]))]
        ts = events.ts_us[at]
        if counts[0]:
            if ts[0] < counts[2]:
                raise ValueError(
                    "an event before the session's latest one: its aggregates are computed again"
                )
            gaps = np.diff(ts, prepend=counts[2]) / 1e6
        else:
            counts[1] = ts[0]
            gaps = np.diff(ts) / 1e6
        _merge(totals[-3:], len(self.gaps), gaps)
        gaps.sort()
        self.gaps = np.insert(self.gaps, np.searchsorted(self.gaps, gaps), gaps)
        counts[0] += len(at)
        counts[2] = ts[-1]
        take = at.tolist()
        for f, (c, position) in enumerate(layout.position.items()):
            column, unknown_at = events.categorical[c], layout.others[c]
            for v in column if len(take) == len(column) else [column[i] for i in take]:
                if v is None:
                    counts[unknown_at + 1] += 1
                elif (i := position.get(v)) is not None:
                    counts[i] += 1
                else:
                    counts[unknown_at] += 1
                    if v not in self._unknown[f]:
                        self._unknown[f].add(v)
                        self.unknown[f].append(v)
        for j, c in enumerate(layout.numerical):
            x = events.numeric[c][0][at]
            x = x[np.isfinite(x)]
            if len(x):
                t = layout.number(totals, j)
                _merge(t, counts[layout.numeric_counts + j], x)
                t[3], t[4] = np.fmin(t[3], x.min()), np.fmax(t[4], x.max())
                counts[layout.numeric_counts + j] += len(x)
        if layout.entity:
            self._add_entity(events, at)

    def _add_entity(self, events: EventColumns, at: np.ndarray) -> None:
        """Every entity feature at once: a few numpy calls per feature cost milliseconds an event at a hundred
        features."""
        layout = self.layout
        x = np.stack([events.numeric[c][0][at] for c in layout.entity])  # a feature per row, in time order
        valid = ~np.stack([events.numeric[c][1][at] for c in layout.entity])
        t = self.totals[layout.entity_totals].reshape(-1, 4)
        counted = self.counts[layout.numeric_counts + len(layout.numerical) :]
        present = np.where(valid, x, np.nan)
        t[:, 1] = np.fmax(t[:, 1], np.fmax.reduce(present, axis=1))  # Polars skips NaN there
        t[:, 2] = np.fmin(t[:, 2], np.fmin.reduce(present, axis=1))
        some = valid.any(axis=1)
        t[some, 0] = x[some, x.shape[1] - 1 - np.argmax(valid[some, ::-1], axis=1)]
        t[:, 3] += np.where(valid, x, 0.0).sum(axis=1)
        counted += valid.sum(axis=1)

    def row(self) -> np.ndarray:
        """The session's :func:`session_aggregates` row, as float64."""
        with np.errstate(all="ignore"):
            return self._row()

    def _row(self) -> np.ndarray:
        layout, counts, totals = self.layout, self.counts, self.totals
        n = int(counts[0])
        row: list[float] = [n, (counts[2] - counts[1]) / 1e6]
        for f, (c, position) in enumerate(layout.position.items()):
            unknown_at = layout.others[c]
            known = counts[unknown_at - len(position) : unknown_at]
            nulls = int(counts[unknown_at + 1])
            row += [*known.tolist(), int(counts[unknown_at]), nulls]
            # Distinct values: those of the vocabulary seen, those outside it, and null as one.
            row.append(int(np.count_nonzero(known)) + len(self.unknown[f]) + (nulls > 0))
        for j in range(len(layout.numerical)):
            k, (total, _, deviations, low, high) = counts[layout.numeric_counts + j], layout.number(totals, j)
            row += [total, total / k if k else np.nan, high, low, _std(deviations, k), k]
        if layout.entity:
            t = totals[layout.entity_totals].reshape(-1, 4)
            counted = counts[layout.numeric_counts + len(layout.numerical) :]
            # A float32 column's mean is float32; a feature never present has none.
            mean = np.where(counted > 0, t[:, 3] / counted, np.nan).astype(np.float32).astype(np.float64)
            row += np.column_stack([t[:, 0], t[:, 1], t[:, 2], mean]).ravel().tolist()
        gaps, k = self.gaps, len(self.gaps)
        if not k:
            return np.array([*row, *[np.nan] * 6, 0], dtype=np.float64)
        mean, std = totals[-3] / k, _std(totals[-1], k)
        median = gaps[k // 2] if k % 2 else (gaps[k // 2 - 1] + gaps[k // 2]) / 2
        row += [mean, median, std, gaps[0], gaps[-1], std / mean, int(np.searchsorted(gaps, 1.0))]
        return np.array(row, dtype=np.float64)


def _merge(t: np.ndarray, k: int, x: np.ndarray) -> None:
    """Add values ``x`` to the sum, mean and squared deviations ``t[:3]`` of ``k`` earlier ones, in place (Chan
    et al.'s update: a sum of squares would lose a small variance of large values to cancellation)."""
    if len(x):
        mean, share = x.mean(), len(x) / (k + len(x))
        delta = mean - t[1]
        t[0] += x.sum()
        t[1] += delta * share  # a share, not counts: delta * len(x) overflowed where the mean does not
        # Without earlier values there is nothing to correct (and delta**2 * 0 was NaN past 1.3e154).
        t[2] += ((x - mean) ** 2).sum() + (delta * delta * k * share if k else 0.0)


def _spread_fits(t: np.ndarray, k: int, low: float, high: float) -> bool:
    """Whether a sum, mean and squared deviations ``t`` can be those of ``k`` finite values within ``[low,
    high]`` (to their rounding), unless the values are so large that the sums overflow; without values, zeros
    and no extremes."""
    total, mean, deviations = t
    if not k:
        return bool(total == mean == deviations == 0 and np.isnan([low, high]).all())
    largest = max(abs(low), abs(high))
    # The slack has a floor: among subnormal values (5e-324) a sum over k rounds by a whole unit (review 89).
    bound, slack, most = k * largest, 1e-9 * largest + 1e-300, k * (high - low) ** 2 * (1 + 1e-6)
    if not low <= high:
        return False
    return bool(
        not np.isfinite(bound)
        or (
            abs(total) <= bound + k * slack
            and low - slack <= mean <= high + slack
            and abs(total / k - mean) <= 2 * slack
            and 0 <= deviations <= most + k * slack * slack
        )
    )


def _std(deviations: float, k: int) -> float:
    """The sample standard deviation, as Polars gives it: null (NaN) under two values."""
    return np.sqrt(deviations / (k - 1)) if k > 1 else np.nan


def with_logit(aggregates: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The stacker's input rows: the aggregates (:func:`snapped`), then the sequence model's probability as a
    logit."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.column_stack([snapped(aggregates), np.log(p / (1 - p))])


SNAPPED_BITS = 20  # of a float64's 52 stored significand bits: 33 significant bits, about 10 digits, are kept
_HALF, _KEPT = np.uint64(1 << (SNAPPED_BITS - 1)), ~np.uint64((1 << SNAPPED_BITS) - 1)


def snapped(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to 33 significant bits (half away from zero), in training and serving alike.

    Polars and :class:`RunningAggregates` compute an aggregate in another order (a running variance, a division
    by 1e6 that Polars makes a multiplication), so one session's row differs in its last bits between batch and
    online, and training holds such neighbours too: a tree split between two of them moved a stacked score by
    0.0026 from ``/score`` to ``/events`` (dogfood 209). Rounded, the neighbours are one value, unless they
    straddle a rounding midpoint: a few units in the last place out of 2**20. Not the spread of large values that
    vary little (epoch-like numbers), which both paths compute to fewer digits than are kept (review 213).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    rounded = ((x.view(np.uint64) + _HALF) & _KEPT).view(np.float64)  # a carry into the exponent rounds up
    # NaN and inf as they are (a NaN's payload can carry to inf, or into the sign bit: to 0), and the largest
    # finite values too (to inf)
    return np.where(np.isfinite(x) & np.isfinite(rounded), rounded, x)


class OneRow:
    """A booster's probability (or ``raw`` score) for one row through LightGBM's single-row C API
    (``...SingleRowFast``): its configuration is parsed once, where ``Booster.predict`` builds a predictor per
    call. Per-event scoring calls it once an event: 46 us against 118 us, each call after 8 MB of other work (6
    against 22 us in a tight loop), equal to ``predict`` to the bit. Thread-safe: LightGBM locks the booster,
    the output is per call."""

    def __init__(self, booster, raw: bool = False):
        from lightgbm.basic import _LIB, _safe_call

        self._call, self._predict = _safe_call, _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self.width = booster.num_feature()
        self._config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                # C_API_PREDICT_RAW_SCORE, or C_API_PREDICT_NORMAL: the probability
                ctypes.c_int(1 if raw else 0),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # to the best (or last)
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(self.width),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        # Freed with this object; the booster outlives it (the finalizer holds it).
        weakref.finalize(self, _free_config, _LIB, self._config, booster)

    def __call__(self, row: np.ndarray) -> float:
        row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self.width,):
            raise ValueError(f"one row of {self.width} inputs, got shape {row.shape}")
        out, size = ctypes.c_double(), ctypes.c_int64()
        self._call(
            self._predict(
                self._config, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(size), ctypes.byref(out)
            )
        )
        return out.value


def _free_config(lib, config: ctypes.c_void_p, booster) -> None:
    lib.LGBM_FastConfigFree(config)


# LightGBM's text as seqfraud's stackers hold it: a binary model of numeric splits and constant leaves. Each tree's
# arrays by their length: a value per split, or per leaf (a tree of one leaf leaves the split ones and its leaves'
# weights empty).
_SPLIT_ARRAYS = {
    "split_feature": int,
    "split_gain": float,
    "threshold": float,
    "decision_type": int,
    "left_child": int,
    "right_child": int,
    "internal_value": float,
    "internal_weight": float,
    "internal_count": int,
}
_LEAF_ARRAYS = {"leaf_value": float, "leaf_weight": float, "leaf_count": int}
_TREE_KEYS = ("num_leaves", "num_cat", *_SPLIT_ARRAYS, *_LEAF_ARRAYS, "is_linear", "shrinkage")
_HEADER_KEYS = (
    "version",
    "num_class",
    "num_tree_per_iteration",
    "label_index",
    "max_feature_idx",
    "objective",
    "feature_names",
    "monotone_constraints",
    "feature_infos",
    "tree_sizes",
)
_FEATURE_RANGE = re.compile(r"\[([^:\]]+):([^:\]]+)\]")
MAX_LEAVES = 131_072  # LightGBM's most
_NUMBER_CHARS = frozenset("0123456789+-.eE")


def checked_trees(text: str, width: int) -> str:
    """LightGBM's text of a stacker over ``width`` inputs, written anew from what was checked in it: ValueError
    where it is not one. LightGBM's parser is native code that trusts the text: a split on an input past the rows,
    or a child past the nodes, read and wrote memory past its arrays (segfaults at load or at the first
    prediction), a class count of 0 divided by it, and a tree it could not read, of a text with tree sizes (which
    it reads in parallel), ended the process (a stacker edited by a byte, its hash updated, aborted ``seqfraud
    score`` and ``serve``: dogfood 272). And it reads the text by rules of its own, so a check that reads it
    otherwise (its line ends, a key twice, a line without ``=``) is passed by text LightGBM then misreads (review
    274): so LightGBM reads the text written here, of the values checked alone, without tree sizes."""
    lines = text.split("\n")
    if lines[0] != "tree":
        raise ValueError("not a LightGBM model: its first line is not 'tree'")
    try:
        ends = lines.index("end of trees")
    except ValueError:
        raise ValueError("not a LightGBM model: no line 'end of trees'") from None
    blocks: list[list[str]] = [[]]
    for line in lines[1:ends]:
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    header, trees = _keyed(blocks[0], _HEADER_KEYS, "its header"), [b for b in blocks[1:] if b]
    settings = {
        "num_class": "1",
        "num_tree_per_iteration": "1",
        "label_index": "0",
        "max_feature_idx": str(width - 1),
    }
    for key, wanted in settings.items():
        if header.get(key) != wanted:
            raise ValueError(
                f"not a stacker over {width} inputs: its {key} is {header.get(key)!r}, not {wanted!r}"
            )
    objective = header.get("objective", "")
    if objective.startswith("binary sigmoid:"):  # its number written anew too: 1 then 400 zeros read as 1e400
        (sigmoid,) = _numbers([objective.removeprefix("binary sigmoid:")], float, "its objective's sigmoid")
        objective = f"binary sigmoid:{sigmoid!r}"
    elif objective != "cross_entropy":
        objective = ""
    if header.get("version") not in ("v3", "v4") or not objective:
        raise ValueError("not a stacker: a LightGBM model of version v3 or v4 and a binary objective")
    ranges = []
    for info in header.get("feature_infos", "").split(" "):
        if (got := _FEATURE_RANGE.fullmatch(info)) is None and info != "none":
            raise ValueError(f"not a stacker: its feature_infos hold {info[:40]!r}")
        ranges.append(
            "none"
            if got is None
            else "[{!r}:{!r}]".format(*_numbers(got.groups(), float, "its feature_infos", infinite=True))
        )
    if len(ranges) != width:
        raise ValueError(f"not a stacker over {width} inputs: its feature_infos give {len(ranges)}")
    out = [
        "tree",
        *(f"{k}={header[k]}" for k in ("version", *settings)),
        f"objective={objective}",
        "feature_names=" + " ".join(f"Column_{i}" for i in range(width)),
        "feature_infos=" + " ".join(ranges),
        "",
    ]
    if not trees:
        raise ValueError("not a LightGBM model: it holds no tree")
    for index, block in enumerate(trees):
        if block[0] != f"Tree={index}":
            raise ValueError(
                f"not a LightGBM model: tree {index} begins {block[0][:40]!r}, not 'Tree={index}'"
            )
        out += [block[0], *_tree_lines(_keyed(block[1:], _TREE_KEYS, block[0]), block[0], width), ""]
    return "\n".join([*out, "", "end of trees", ""])


def _keyed(lines: list[str], allowed: tuple[str, ...], where: str) -> dict[str, str]:
    """``lines`` as ``key=value``, each key once and one of ``allowed``."""
    keyed: dict[str, str] = {}
    for line in lines:
        key, equals, value = line.partition("=")
        if not equals or key not in allowed or key in keyed:
            raise ValueError(f"not a stacker: {where} holds the line {line[:40]!r}")
        keyed[key] = value
    return keyed


def _numbers(values: Sequence[str], kind: type, what: str, infinite: bool = False) -> list:
    """``values`` read as ``kind``, each written anew by its ``repr``: an int of 32 bits (LightGBM's), or a float,
    finite or (``infinite``) not NaN: LightGBM writes ``inf`` for a split that sends the missing values alone one way
    (review 275: six of ten stackers on data with gaps); ValueError naming ``what``."""
    try:
        read = [kind(v) for v in values if not set(v) - _NUMBER_CHARS or (infinite and v in ("inf", "-inf"))]
    except ValueError:
        read = []
    if len(read) != len(values) or not all(
        -(2**31) <= v < 2**31 if kind is int else math.isfinite(v) or (infinite and not math.isnan(v))
        for v in read
    ):
        raise ValueError(f"not a stacker: {what} holds a value that is not a number it can hold")
    return read


def _tree_lines(tree: dict[str, str], name: str, width: int) -> list[str]:
    """One tree's lines written anew, checked: numeric splits on one of ``width`` inputs, each child a later node or
    one of the tree's leaves (so that each walk ends in a leaf), every array as long as its tree says."""
    (n,) = _numbers([tree.get("num_leaves", "")], int, f"{name}'s num_leaves")
    if not 1 <= n <= MAX_LEAVES:
        raise ValueError(f"not a stacker: {name} has {n} leaves")
    if tree.get("num_cat") != "0" or tree.get("is_linear") != "0":
        raise ValueError(
            f"not a stacker: {name} holds categorical splits or linear leaves, which stackers never make"
        )
    arrays = {}
    for key, kind in (*_SPLIT_ARRAYS.items(), *_LEAF_ARRAYS.items()):
        values = tree.get(key, "").split(" ") if tree.get(key) else []
        wanted = n - 1 if key in _SPLIT_ARRAYS else n
        if len(values) != wanted and not (n == 1 and key != "leaf_value" and len(values) <= 1):
            raise ValueError(
                f"not a stacker: {name} of {n} leaves holds {len(values)} {key} values, not {wanted}"
            )
        arrays[key] = _numbers(values, kind, f"{name}'s {key}", infinite=key == "threshold")
    if bad := [f for f in arrays["split_feature"] if not 0 <= f < width]:
        raise ValueError(f"not a stacker: {name} splits on input {bad[0]}, of {width} inputs")
    # A decision's bits: categorical (never), default left, and how missing values go (none, zero or NaN).
    if bad := [d for d in arrays["decision_type"] if d & ~0b1110 or d >> 2 == 3]:
        raise ValueError(f"not a stacker: {name} holds the decision type {bad[0]}")
    for node, children in enumerate(zip(arrays["left_child"], arrays["right_child"])):
        if bad := [c for c in children if not (node < c < n - 1 or -n <= c < 0)]:
            raise ValueError(
                f"not a stacker: {name}: node {node}'s child {bad[0]} is neither a later node nor one of its {n} leaves"
            )
    (shrinkage,) = _numbers([tree.get("shrinkage", "")], float, f"{name}'s shrinkage")
    return [
        f"num_leaves={n}",
        "num_cat=0",
        *(f"{key}={' '.join(map(repr, arrays[key]))}" for key in (*_SPLIT_ARRAYS, *_LEAF_ARRAYS)),
        "is_linear=0",
        f"shrinkage={shrinkage!r}",
    ]


class Stacker:
    """A LightGBM booster over :func:`with_logit` rows; thread-safe for concurrent predictions.

    A ``blend`` (stacking's ``blend`` candidate) is the baseline's trees, which never split on the score: its
    probability is the sigmoid of the mean of their raw score and the sequence model's logit, a hedge fitted on
    nothing, which validation can flatter only by choosing it."""

    def __init__(self, booster, spec: Spec, blend: bool = False):
        self.booster = booster
        self.spec = spec
        self.blend = blend
        self.layout = AggregateLayout(spec)
        if self.layout.width + 1 != booster.num_feature():
            raise ValueError(
                f"the stacker reads {booster.num_feature()} inputs; this spec gives "
                f"{self.layout.width} aggregates and the score"
            )
        splits_on_score = bool(booster.feature_importance("split")[-1] > 0)
        if blend and splits_on_score:
            raise ValueError(
                "a blend's trees must be the baseline's, which never split on the sequence score"
            )
        self.one_row = OneRow(booster, raw=blend)
        # A stacker that kept the aggregates alone (stacking's "aggregates": the score held constant in training)
        # never splits on the sequence model's score, so its sessions need not compute it (a dogfood's default
        # model ran its GRU at every event, 1.1-2.3 ms, for a score no tree read).
        self.reads_sequence = blend or splits_on_score

    @classmethod
    def from_text(cls, text: str, spec: Spec, blend: bool = False) -> Stacker:
        """The booster of LightGBM's text format; ValueError if the text is not one."""
        import lightgbm

        try:
            booster = lightgbm.Booster(model_str=checked_trees(text, AggregateLayout(spec).width + 1))
        except lightgbm.basic.LightGBMError as e:
            raise ValueError(f"not a LightGBM model: {e}") from e
        return cls(booster, spec, blend)

    def aggregates(self, events: pl.DataFrame | EventColumns, session_ids: list[str]) -> np.ndarray:
        """The aggregate rows of ``session_ids``, from normalized events or their plain columns."""
        if isinstance(events, EventColumns):
            names, rows = column_aggregates(events, self.layout)
            return rows[[names.index(sid) for sid in session_ids]]
        return aggregate_matrix(events, self.spec, session_ids)

    def combine(self, aggregates: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """Probabilities of the stacked model from the sessions' aggregates and sequence-model probabilities."""
        rows = with_logit(aggregates, probability)
        if len(rows) == 1:  # a session's event, online
            out = np.array([self.one_row(rows[0])])
        else:
            out = np.asarray(self.booster.predict(rows, num_threads=1, raw_score=self.blend))
        if self.blend:
            out = 1 / (1 + np.exp(-(out + rows[:, -1]) / 2))
        return out.astype(np.float32)
