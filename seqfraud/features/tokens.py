"""Fit the spec on training events and turn events into token sequences: pure LazyFrame transforms.

Input frames are the normalized events of :mod:`seqfraud.data.events` (``session_id``, ``__ts_us``,
``__row``, the schema's categorical and numeric columns as String/Float64, optionally ``label``).
"""

from __future__ import annotations

import math

import polars as pl

from seqfraud import schema as S
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, UNKNOWN, Spec, library_versions
from seqfraud.schema import Schema


def time_delta_edges(min_seconds: float, max_seconds: float, n_buckets: int) -> list[float]:
    """Log-spaced edges in seconds, with 0 first so that simultaneous events get their own bucket."""
    if not (0 < min_seconds < max_seconds) or n_buckets < 3:
        raise ValueError("time-delta buckets need 0 < min_seconds < max_seconds and n_buckets >= 3")
    n = n_buckets - 2
    ratio = (max_seconds / min_seconds) ** (1 / max(n - 1, 1))
    return [0.0] + [round(min_seconds * ratio**i, 6) for i in range(n)]


def fit_spec(
    train_events: pl.LazyFrame,
    schema: Schema,
    *,
    timestamp_unit: str,
    max_len: int = 256,
    min_count: int = 5,
    max_vocab: int = 1000,
    n_buckets: int = 16,
    time_delta: dict | None = None,
) -> Spec:
    """Vocabularies and numeric edges from the training period only, so val and test cannot leak into it."""
    time_delta = time_delta or {}
    td_edges = time_delta_edges(
        time_delta.get("min_seconds", 0.25), time_delta.get("max_seconds", 86_400.0), time_delta.get("n_buckets", 24)
    )
    vocab_queries = [
        train_events.group_by(c).agg(pl.len().alias("n"))
        .filter(pl.col(c).is_not_null() & (pl.col("n") >= min_count))
        .sort(["n", c], descending=[True, False]).head(max_vocab)
        for c in schema.categorical_fields
    ]
    probs = [i / n_buckets for i in range(1, n_buckets)]
    quantile_query = train_events.select(
        *[
            pl.col(c).filter(pl.col(c).is_finite()).quantile(q, "nearest").alias(f"{c}@{i}")
            for c in schema.numerical for i, q in enumerate(probs)
        ],
        pl.len().alias("__n_events"),
        pl.col(S.SESSION_ID).n_unique().alias("__n_sessions"),
        pl.col(S.TS_US).min().alias("__ts_min"),
        pl.col(S.TS_US).max().alias("__ts_max"),
    )
    *vocab_frames, quantiles = pl.collect_all([*vocab_queries, quantile_query], engine="streaming")
    if quantiles["__n_events"][0] == 0:
        raise ValueError("the training period holds no events; check data.split")
    vocab = {c: frame[c].to_list() for c, frame in zip(schema.categorical_fields, vocab_frames)}
    edges = {}
    for c in schema.numerical:
        values = [quantiles[f"{c}@{i}"][0] for i in range(len(probs))]
        edges[c] = sorted({float(v) for v in values if v is not None and math.isfinite(v)})
    edges[S.TIME_DELTA] = td_edges
    fit_info = {
        "n_events": int(quantiles["__n_events"][0]),
        "n_sessions": int(quantiles["__n_sessions"][0]),
        "first_event_us": quantiles["__ts_min"][0],
        "last_event_us": quantiles["__ts_max"][0],
        "min_count": min_count,
        "max_vocab": max_vocab,
        "n_buckets": n_buckets,
    }
    return Spec(schema=schema, timestamp_unit=timestamp_unit, max_len=max_len, vocab=vocab, edges=edges,
                fit_info=fit_info, versions=library_versions())


def categorical_ids(column: str, vocab: list[str]) -> pl.Expr:
    ids = pl.Series(range(FIRST_ID, FIRST_ID + len(vocab)), dtype=pl.Int32)
    mapped = pl.col(column).replace_strict(pl.Series(vocab, dtype=pl.String), ids, default=UNKNOWN,
                                           return_dtype=pl.Int32)
    return pl.when(pl.col(column).is_null()).then(pl.lit(MISSING, pl.Int32)).otherwise(mapped)


def bucket_ids(value: pl.Expr, edges: list[float]) -> pl.Expr:
    """``FIRST_ID + #{edge < x}``: searchsorted on the left side counts edges strictly below x."""
    bucket = pl.lit(pl.Series(edges, dtype=pl.Float64)).search_sorted(value, side="left").cast(pl.Int32) + FIRST_ID
    return (
        pl.when(value.is_null()).then(pl.lit(MISSING, pl.Int32))
        .when(value.is_nan()).then(pl.lit(NAN, pl.Int32))
        .otherwise(bucket)
    )


def sort_events(events: pl.LazyFrame) -> pl.LazyFrame:
    """Order by session then time; input row order breaks ties, so the result never depends on the engine."""
    return events.sort([S.SESSION_ID, S.TS_US, S.ROW_INDEX])


def seconds_since_previous(events: pl.LazyFrame) -> pl.LazyFrame:
    """Needs :func:`sort_events` order; null on each session's first event."""
    same = pl.col(S.SESSION_ID) == pl.col(S.SESSION_ID).shift(1)
    delta = (pl.col(S.TS_US) - pl.col(S.TS_US).shift(1)).cast(pl.Float64) / 1e6
    return events.with_columns(pl.when(same).then(delta).otherwise(None).alias(S.TIME_DELTA))


def tokenize(events: pl.LazyFrame, spec: Spec) -> pl.LazyFrame:
    """Replace each field by its token ids (the time delta must already be computed)."""
    return events.with_columns(
        *[categorical_ids(c, spec.vocab[c]).alias(S.token_column(c)) for c in spec.schema.categorical_fields],
        *[bucket_ids(pl.col(c), spec.edges[c]).alias(S.token_column(c))
          for c in (*spec.schema.numerical, S.TIME_DELTA)],
    )


def aggregate_sessions(tokens: pl.LazyFrame, spec: Spec, extra: tuple[str, ...] = ()) -> pl.LazyFrame:
    """One row per session: token lists of its most recent ``max_len`` events, in time order."""
    tok_cols = [S.token_column(f) for f in spec.fields]
    return tokens.group_by(S.SESSION_ID, maintain_order=True).agg(
        *[pl.col(c).tail(spec.max_len) for c in tok_cols],
        pl.len().clip(upper_bound=spec.max_len).cast(pl.Int32).alias(S.LENGTH),
        pl.col(S.TS_US).min().alias(S.START_TIME),
        *[pl.col(c).first() for c in extra],
    )


def sequences(events: pl.LazyFrame, spec: Spec, extra: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Normalized events to per-session token sequences; ``extra`` columns (constant per session) ride along."""
    return (
        events.pipe(sort_events)
        .pipe(seconds_since_previous)
        .pipe(tokenize, spec)
        .pipe(aggregate_sessions, spec, extra)
    )
