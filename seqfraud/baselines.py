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

import numpy as np
import polars as pl

from seqfraud import schema as S
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

    def aggregates(self, events: pl.DataFrame, session_ids: list[str]) -> np.ndarray:
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
