"""The token rules of :mod:`seqfraud.features.tokens` in numpy, for inputs too small for Polars.

Polars spends milliseconds planning the query for a single session, so the scorer's real-time path
(every HTTP ``/score``) runs this one. It is the only second implementation of the rules; a property
test and every export's end-to-end check hold it equal to :func:`~seqfraud.features.tokens.sequences`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, UNKNOWN, VALUE_STEPS, Spec, value_pieces
from seqfraud.features.tokens import Sequences

VocabIndex = dict[str, dict[str, int]]


def vocab_index(spec: Spec) -> VocabIndex:
    """Value -> token id for each categorical field, built once per scorer."""
    return {f: {v: FIRST_ID + i for i, v in enumerate(vocab)} for f, vocab in spec.vocab.items()}


def category_ids(values: Iterable[str | None], lookup: dict[str, int]) -> np.ndarray:
    """A categorical field's ids: ``MISSING`` for null, ``UNKNOWN`` for a value outside the vocabulary."""
    return np.array([MISSING if v is None else lookup.get(v, UNKNOWN) for v in values], dtype=np.int64)


@dataclass
class EventColumns:
    """Normalized events as plain columns: what the numpy rules read, whether they came from a frame of
    :func:`~seqfraud.scoring.prepare.normalized_events` or straight from a request's records."""

    session_ids: list[str]
    ts_us: np.ndarray  # int64
    rows: np.ndarray  # int64, the input order (ties in time break by it)
    categorical: dict[str, list[str | None]]
    numeric: dict[str, tuple[np.ndarray, np.ndarray]]  # float64 values (NaN where null) and the null mask

    @classmethod
    def of_frame(cls, events: pl.DataFrame, spec: Spec) -> EventColumns:
        numeric = {}
        for c in spec.numeric_fields:  # value fields read these same columns
            x = events[c]
            null = (
                np.array([v is None for v in x.to_list()]) if x.null_count() else np.zeros(len(x), dtype=bool)
            )
            numeric[c] = (x.cast(pl.Float64).to_numpy(), null)
        return cls(
            events[S.SESSION_ID].to_list(),
            events[S.TS_US].to_numpy().astype(np.int64),
            events[S.ROW_INDEX].to_numpy().astype(np.int64),
            {c: events[c].to_list() for c in spec.schema.categorical_fields},
            numeric,
        )

    def take(self, at: list[int]) -> EventColumns:
        idx = np.asarray(at, dtype=np.int64)
        return EventColumns(
            [self.session_ids[i] for i in at],
            self.ts_us[idx],
            self.rows[idx],
            {c: [v[i] for i in at] for c, v in self.categorical.items()},
            {c: (x[idx], null[idx]) for c, (x, null) in self.numeric.items()},
        )


def numpy_sequences(events: pl.DataFrame, spec: Spec, index: VocabIndex) -> Sequences:
    """Normalized events to :class:`~seqfraud.features.tokens.Sequences`, as ``sequences`` makes them."""
    return column_sequences(EventColumns.of_frame(events, spec), spec, index)


def column_sequences(events: EventColumns, spec: Spec, index: VocabIndex) -> Sequences:
    """:class:`EventColumns` to :class:`~seqfraud.features.tokens.Sequences`, as ``sequences`` makes them.

    Sorted by (session, time, input row); buckets are ``searchsorted(side="left")``, so
    ``FIRST_ID + #{edge < x}``; vocabularies are dict lookups (``index`` from :func:`vocab_index`);
    sessions keep their last ``max_len`` events.
    """
    n = len(events.session_ids)
    if len(set(events.session_ids)) == 1:
        names, codes = [events.session_ids[0]], np.zeros(n, dtype=np.int64)
    else:
        uniques, codes = np.unique(np.array(events.session_ids, dtype=object), return_inverse=True)
        names = uniques.tolist()
    order = np.lexsort((events.rows, events.ts_us, codes))
    codes, ts = codes[order], events.ts_us[order]
    first = np.r_[True, codes[1:] != codes[:-1]]
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, n])
    # The last max_len events of each session: those fewer than max_len from its end (sorted positions).
    kept = np.repeat(starts + counts, counts) - np.arange(n) <= spec.max_len
    rows = order[kept]  # the same events as input rows
    values = dict(zip(spec.value_fields, spec.values))  # value field -> its numeric column
    columns = []
    for f in spec.fields:
        if f == S.TIME_DELTA:
            delta = np.r_[np.nan, np.diff(ts).astype(np.float64) / 1e6]
            ids = _bucket(delta, first, spec.edges[f])[kept]
        elif f in index:
            ids = category_ids(events.categorical[f], index[f])[rows]
        else:
            column = values.get(f, f)
            x, null = events.numeric[column]
            rule = _value if f in values else _bucket
            ids = rule(x, null, spec.edges[column])[rows]
        columns.append(ids)
    lengths = np.minimum(counts, spec.max_len).astype(np.int64)
    return Sequences(names, np.stack(columns, axis=1), lengths)


def time_delta_ids(seconds: np.ndarray, spec: Spec) -> np.ndarray:
    """The time-delta field's ids of events that follow others by ``seconds``."""
    return _bucket(seconds, np.zeros(len(seconds), dtype=bool), spec.edges[S.TIME_DELTA])


def _bucket(x: np.ndarray, null: np.ndarray, edges: list[float]) -> np.ndarray:
    """``FIRST_ID + #{edge < x}``; ``NAN`` for NaN and ``MISSING`` where ``null`` (nulls read as NaN here)."""
    ids = np.searchsorted(np.asarray(edges, np.float64), x, side="left").astype(np.int64) + FIRST_ID
    ids[np.isnan(x)] = NAN
    ids[null] = MISSING
    return ids


def _value(x: np.ndarray, null: np.ndarray, edges: list[float]) -> np.ndarray:
    """The value-field rule of :class:`~seqfraud.features.spec.Spec`; reserved ids as in :func:`_bucket`."""
    m = len(edges)
    with np.errstate(all="ignore"):  # the branches not taken see infinities and NaN
        if m == 0:
            position = np.full(len(x), 0.5)
        else:
            lo, width, scale = value_pieces(edges)
            bucket = np.searchsorted(np.asarray(edges, np.float64), x, side="left")
            inner = (x - np.asarray(lo)[bucket]) / np.asarray(width)[bucket]
            below = 1.0 / (1.0 + (edges[0] - x) / scale)
            above = 1.0 - 1.0 / (1.0 + (x - edges[-1]) / scale)
            share = np.where(bucket == 0, below, np.where(bucket == m, above, inner))
            position = (bucket + share) / (m + 1)
        ids = np.floor(position * VALUE_STEPS + 0.5).astype(np.int64) + FIRST_ID
    ids[np.isnan(x)] = NAN
    ids[null] = MISSING
    return ids
