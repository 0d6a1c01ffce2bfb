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

import re
from collections import Counter

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.features.fastpath import EventColumns
from seqfraud.features.spec import Spec

STACKER_FILE = "stacker.txt"
STACKER_FORMAT = "lightgbm-text"


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


def check_lightgbm_params(params: dict, key: str) -> None:
    """Refuse (ConfigError, naming ``key``) LightGBM parameters it does not know or will not take, by a one-round
    fit on a few rows: a misspelt one was ignored with a warning LightGBM prints, and a bad value failed after
    preprocessing and every sequence fit."""
    import lightgbm as lgb

    from seqfraud.errors import ConfigError, did_you_mean

    try:  # every name and alias LightGBM reads; a private table, so a LightGBM without it checks values only
        known = {a for aliases in lgb.basic._ConfigAliases._get_all_param_aliases().values() for a in aliases}
    except AttributeError:
        known = set(params)
    for name in params:
        if name not in known:
            raise ConfigError(f"{key}.{name}: not a LightGBM parameter{did_you_mean(name, sorted(known))}")
    # As fit_lightgbm fits (a validation set, its metric), but on two features: a list's length is per feature
    # (monotone_constraints...), which only the real aggregates give, so lists are left to the fit (review 58).
    scalars = {k: v for k, v in params.items() if not isinstance(v, (list, tuple))}
    rows, labels = np.arange(40, dtype=np.float64).reshape(20, 2), np.arange(20) % 2
    train = lgb.Dataset(rows, labels)
    try:
        lgb.train(
            {"metric": "average_precision", **scalars, "verbose": -1},
            train,
            num_boost_round=1,
            valid_sets=[lgb.Dataset(rows, labels, reference=train)],
        )
    except (lgb.basic.LightGBMError, TypeError, ValueError) as e:
        raise ConfigError(f"{key}: LightGBM refuses them: {str(e).splitlines()[0]}") from None


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
):
    """A booster early-stopped on validation average precision (the baseline's and the stacker's fit)."""
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
    return lgb.train(
        p,
        dtrain,
        num_boost_round,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(early_stopping, verbose=False)],
    )


def fit_predict_lightgbm(
    train: pl.DataFrame,
    val: pl.DataFrame,
    tests: dict[str, pl.DataFrame],
    **options,
) -> dict[str, np.ndarray]:
    """Early stopping on validation average precision; returns probabilities for val and each test frame.

    Frames hold aggregates plus ``label``; the session id is not a feature. ``options`` go to :func:`fit_lightgbm`.
    """
    features = [c for c in train.columns if c not in (S.SESSION_ID, S.LABEL)]
    booster = fit_lightgbm(
        train.select(features).to_numpy(),
        train[S.LABEL].to_numpy(),
        val.select(features).to_numpy(),
        val[S.LABEL].to_numpy(),
        features,
        **options,
    )
    frames = {"val": val} | tests
    return {
        k: np.asarray(booster.predict(f.select(features).to_numpy(), num_iteration=booster.best_iteration))
        for k, f in frames.items()
    }


def aggregate_matrix(events: pl.DataFrame | pl.LazyFrame, spec: Spec, session_ids: list[str]) -> np.ndarray:
    """:func:`session_aggregates` of normalized events as one float64 row per session, in ``session_ids`` order."""
    aggregates = session_aggregates(events.lazy(), spec).collect()
    order = pl.DataFrame({S.SESSION_ID: pl.Series(session_ids, dtype=pl.String)})
    aligned = order.join(aggregates, on=S.SESSION_ID, how="left", maintain_order="left")
    return aligned.drop(S.SESSION_ID).to_numpy().astype(np.float64)


def column_aggregates(events: EventColumns, spec: Spec) -> tuple[list[str], np.ndarray]:
    """:func:`session_aggregates` of plain columns (a request's few sessions), without Polars, which would spend
    milliseconds planning the query for one session: the sessions in sorted order and one float64 row each, as
    :func:`aggregate_matrix` gives them (a property test holds the two equal)."""
    ids = np.array(events.session_ids, dtype=object)
    names = sorted(set(events.session_ids))
    with np.errstate(all="ignore"):  # extreme values overflow to inf, as they do in Polars
        rows = [_aggregate_row(events, spec, np.flatnonzero(ids == sid)) for sid in names]
    return names, np.array(rows, dtype=np.float64)


def _aggregate_row(events: EventColumns, spec: Spec, at: np.ndarray) -> list[float]:
    """One session's :func:`session_aggregates` (its events at positions ``at``)."""
    ts = events.ts_us[at]
    row: list[float] = [len(at), (ts.max() - ts.min()) / 1e6]
    for c in spec.schema.categorical_fields:
        column = events.categorical[c]
        counts = Counter(column if len(at) == len(column) else [column[i] for i in at.tolist()])
        known = [counts[v] for v in spec.vocab[c]]
        row += [*known, len(at) - sum(known) - counts[None], counts[None], len(counts)]  # nulls count as one
    for c in spec.schema.numerical:
        x = events.numeric[c][0][at]
        x = x[np.isfinite(x)]
        mean, high, low, std = _stats(x)
        row += [x.sum(), mean, high, low, std, len(x)]
    if entity := spec.numeric_fields[len(spec.schema.numerical) :]:
        row += _entity_aggregates(events, entity, at[np.lexsort((events.rows[at], ts))])
    dt = np.diff(np.sort(ts)) / 1e6
    mean, high, low, std = _stats(dt)
    row += [mean, np.median(dt) if len(dt) else np.nan, std, low, high, std / mean, (dt < 1.0).sum()]
    return row


def _entity_aggregates(events: EventColumns, names: tuple[str, ...], order: np.ndarray) -> list[float]:
    """Per entity feature, the last (in time order), max, min and mean of a session's non-null values, every
    feature at once: a few numpy calls per feature cost milliseconds an event at a hundred features."""
    x = np.stack([events.numeric[c][0][order] for c in names])  # a feature per row, each contiguous
    valid = ~np.stack([events.numeric[c][1][order] for c in names])
    n, count = x.shape[1], valid.sum(axis=1)
    present = np.where(valid, x, np.nan)
    high, low = np.fmax.reduce(present, axis=1), np.fmin.reduce(present, axis=1)  # Polars skips NaN there
    last = x[np.arange(len(names)), n - 1 - np.argmax(valid[:, ::-1], axis=1)]
    # A row's sum adds as the mean of its values alone does, bit for bit; partly null features are taken alone.
    mean = x.sum(axis=1) / n
    for j in np.flatnonzero((count < n) & (count > 0)):
        mean[j] = x[j, valid[j]].mean()
    mean = mean.astype(np.float32).astype(np.float64)  # a float32 column's mean is float32
    none = count == 0
    last[none] = mean[none] = np.nan
    return np.column_stack([last, high, low, mean]).ravel().tolist()


def _stats(x: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, max, min and sample standard deviation as Polars gives them: null (NaN) where ``x`` is too short."""
    if not len(x):
        return (np.nan,) * 4
    return x.mean(), x.max(), x.min(), x.std(ddof=1) if len(x) > 1 else np.nan


def with_logit(aggregates: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The stacker's input rows: the aggregates, then the sequence model's probability as a logit."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.column_stack([aggregates, np.log(p / (1 - p))])


class Stacker:
    """A LightGBM booster over :func:`with_logit` rows; thread-safe for concurrent predictions."""

    def __init__(self, booster, spec: Spec):
        self.booster = booster
        self.spec = spec

    @classmethod
    def from_text(cls, text: str, spec: Spec) -> Stacker:
        """The booster of LightGBM's text format; ValueError if the text is not one."""
        try:
            import lightgbm
        except ImportError as e:
            raise ImportError(
                "this artifact stacks LightGBM on the sequence model: install lightgbm "
                "(pip install 'seqfraud[serve]' or 'seqfraud[train]')"
            ) from e
        try:
            booster = lightgbm.Booster(model_str=text)
        except lightgbm.basic.LightGBMError as e:
            raise ValueError(f"not a LightGBM model: {e}") from e
        return cls(booster, spec)

    def aggregates(self, events: pl.DataFrame | EventColumns, session_ids: list[str]) -> np.ndarray:
        """The aggregate rows of ``session_ids``, from normalized events or their plain columns."""
        if isinstance(events, EventColumns):
            names, rows = column_aggregates(events, self.spec)
            rows = rows[[names.index(sid) for sid in session_ids]]
        else:
            rows = aggregate_matrix(events, self.spec, session_ids)
        if rows.shape[1] + 1 != self.booster.num_feature():
            raise ValueError(
                f"the stacker reads {self.booster.num_feature()} inputs; this spec gives "
                f"{rows.shape[1]} aggregates and the score"
            )
        return rows

    def combine(self, aggregates: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """Probabilities of the stacked model from the sessions' aggregates and sequence-model probabilities."""
        return np.asarray(
            self.booster.predict(with_logit(aggregates, probability), num_threads=1), np.float32
        )
