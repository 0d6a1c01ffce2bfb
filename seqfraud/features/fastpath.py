"""The token rules of :mod:`seqfraud.features.tokens` in numpy, for inputs too small for Polars.

Polars spends milliseconds planning the query for a single session, so the scorer's real-time path
(every HTTP ``/score``) runs this one. It is the only second implementation of the rules; a property
test and every export's end-to-end check hold it equal to :func:`~seqfraud.features.tokens.sequences`.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, UNKNOWN, VALUE_STEPS, Spec, value_pieces
from seqfraud.features.tokens import Sequences


@dataclass(frozen=True)
class TokenTables:
    """A spec's rules as ready lookups, built once per scorer: a single event then pays for no list-to-array
    conversion, which would cost more than its tokens."""

    vocab: dict[str, dict[str | None, int]]  # categorical field -> value (None: null) -> token id
    edges: dict[str, np.ndarray]  # numeric column -> its edges, float64
    pieces: dict[str, tuple[np.ndarray, np.ndarray, float]]  # value field's column -> value_pieces, as arrays
    fields: tuple[str, ...]  # the spec's token fields, in model input order
    value_of: dict[str, str]  # value field -> the numeric column it reads
    # categorical field -> whether it holds booleans, and the :func:`spelling` of each learnt value -> that value
    respelt: dict[str, tuple[bool, dict[str, str]]]


# An integer written as a decimal, its digits captured, and an integer's leading zeros: one pattern each for Python
# here and Polars in the scorer (replaced by "$1" and "$1$2").
POINT_ZEROS = r"^([+-]?[0-9]+)\.0*$"
_POINT_ZEROS = re.compile(POINT_ZEROS)
LEADING_ZEROS = r"^([+-]?)0+([1-9][0-9]*|0)$"  # linear: "0+([0-9]+)" backtracked quadratically (review 197)
_LEADING_ZEROS = re.compile(LEADING_ZEROS)


def spelling(value: str, booleans: bool = False) -> str:
    """A value as a client may have respelt it: case, the spaces at its ends and Unicode's compatibility forms
    aside (NFKC: "café" typed with its accent as a mark of its own, full-width letters, a no-break space: dogfood
    128), an integer written as a decimal (``411111.0``, as pandas writes an integer column with a gap: dogfood
    169) or without a code's leading zeros (``742`` for ``0742``, as an integer column holds it: dogfoods 190 and
    192), and in a column of booleans (:func:`holds_booleans`) 1 and 0 for true and false, as JSON's 1 reads."""
    key = unicodedata.normalize("NFKC", value).strip().casefold()
    key = integer[1] if (integer := _POINT_ZEROS.fullmatch(key)) else key
    key = _LEADING_ZEROS.sub(r"\1\2", key)
    return {"1": "true", "0": "false"}.get(key, key) if booleans else key


def holds_booleans(spec: Spec, field: str) -> bool:
    """Whether a categorical field's vocabulary holds both of its spellings of false and true."""
    return set(spec.boolean_text(field)) <= set(spec.vocab.get(field, ()))


def token_tables(spec: Spec) -> TokenTables:
    pieces = {}
    for column in spec.values:
        lo, width, scale = value_pieces(spec.edges[column])
        pieces[column] = (np.asarray(lo, np.float64), np.asarray(width, np.float64), scale)
    respelt = {}
    for f, vocab in spec.vocab.items():
        booleans = holds_booleans(spec, f)
        respelt[f] = booleans, {spelling(v, booleans): v for v in vocab}
    return TokenTables(
        {
            f: {None: MISSING} | {v: FIRST_ID + i for i, v in enumerate(vocab)}
            for f, vocab in spec.vocab.items()
        },
        {c: np.asarray(e, np.float64) for c, e in spec.edges.items()},
        pieces,
        spec.fields,
        dict(zip(spec.value_fields, spec.values)),
        respelt,
    )


@dataclass
class EventColumns:
    """Normalized events as plain columns: what the numpy rules read, whether they came from a frame of
    :func:`~seqfraud.scoring.prepare.normalized_events` or straight from a request's records."""

    session_ids: list[str]
    ts_us: np.ndarray  # int64
    rows: np.ndarray  # int64, the input order (ties in time break by it)
    categorical: dict[str, list[str | None]]
    numeric: dict[str, tuple[np.ndarray, np.ndarray]]  # float64 values (NaN where null) and the null mask
    # Entity values as text, where the model reads entity features: what online scoring computes them from.
    entities: dict[str, list[str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of_frame(cls, events: pl.DataFrame, spec: Spec) -> EventColumns:
        """The frame's columns; entity features where it has them (online scoring adds them after)."""
        numeric = {}
        added_later = set(spec.entity.feature_names()) - set(events.columns) if spec.entity else set()
        for c in spec.numeric_fields:  # value fields read these same columns
            if c in added_later:
                continue
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
            {c: events[c].to_list() for c in spec.schema.entities},
        )

    def take(self, at: list[int]) -> EventColumns:
        idx = np.asarray(at, dtype=np.int64)
        return EventColumns(
            [self.session_ids[i] for i in at],
            self.ts_us[idx],
            self.rows[idx],
            {c: [v[i] for i in at] for c, v in self.categorical.items()},
            {c: (x[idx], null[idx]) for c, (x, null) in self.numeric.items()},
            {c: [v[i] for i in at] for c, v in self.entities.items()},
        )


def numpy_sequences(events: pl.DataFrame, spec: Spec, tables: TokenTables) -> Sequences:
    """Normalized events to :class:`~seqfraud.features.tokens.Sequences`, as ``sequences`` makes them."""
    return column_sequences(EventColumns.of_frame(events, spec), spec, tables)


def column_sequences(events: EventColumns, spec: Spec, tables: TokenTables) -> Sequences:
    """:class:`EventColumns` to :class:`~seqfraud.features.tokens.Sequences`, as ``sequences`` makes them.

    Sorted by (session, time, input row); buckets are ``searchsorted(side="left")``, so
    ``FIRST_ID + #{edge < x}``; vocabularies are dict lookups (``tables`` from :func:`token_tables`);
    sessions keep their events from :meth:`~seqfraud.features.spec.Spec.window_start` on.
    """
    n = len(events.session_ids)
    if len(set(events.session_ids)) == 1:  # a request's one session: no grouping to do
        names = [events.session_ids[0]]
        order = np.lexsort((events.rows, events.ts_us)) if n > 1 else np.zeros(1, dtype=np.int64)
        ts = events.ts_us[order]
        first = np.zeros(n, dtype=bool)
        first[0] = True
        counts = np.array([n])
        kept_from = spec.window_start(n)
        rows = order[kept_from:]
        kept: slice | np.ndarray = slice(kept_from, None)
    else:
        uniques, codes = np.unique(np.array(events.session_ids, dtype=object), return_inverse=True)
        names = uniques.tolist()
        order = np.lexsort((events.rows, events.ts_us, codes))
        codes, ts = codes[order], events.ts_us[order]
        first = np.r_[True, codes[1:] != codes[:-1]]
        starts = np.flatnonzero(first)
        counts = np.diff(np.r_[starts, n])
        # Each session's events from its window's start on (sorted positions).
        kept = np.arange(n) >= np.repeat(starts + spec.window_start(counts), counts)
        rows = order[kept]  # the same events as input rows
    values = tables.value_of
    tokens = np.empty((len(rows), len(tables.fields)), dtype=np.int64)
    # In time order, none cut: no reordering.
    as_given = n == 1 or (len(rows) == n and bool((rows == np.arange(n)).all()))
    for j, f in enumerate(tables.fields):
        if f == S.TIME_DELTA:
            delta = np.empty(n, dtype=np.float64)
            delta[0] = np.nan
            delta[1:] = (ts[1:] - ts[:-1]) / 1e6
            tokens[:, j] = _bucket(delta, first, tables.edges[f])[kept]
        elif f in tables.vocab:
            column = events.categorical[f]
            picked = column if as_given else [column[i] for i in rows.tolist()]
            tokens[:, j] = list(map(tables.vocab[f].get, picked, itertools.repeat(UNKNOWN)))
        elif f in values:
            x, null = events.numeric[values[f]]
            tokens[:, j] = _value(x[rows], null[rows], tables.edges[values[f]], tables.pieces[values[f]])
        else:
            x, null = events.numeric[f]
            tokens[:, j] = _bucket(x[rows], null[rows], tables.edges[f])
    lengths = spec.window_length(counts).astype(np.int64)
    return Sequences(names, tokens, lengths)


def category_ids(values: Iterable[str | None], lookup: dict[str | None, int]) -> np.ndarray:
    """A categorical field's ids: ``MISSING`` for null, ``UNKNOWN`` for a value outside the vocabulary."""
    return np.array([lookup.get(v, UNKNOWN) for v in values], dtype=np.int64)


def time_delta_ids(seconds: np.ndarray, tables: TokenTables) -> np.ndarray:
    """The time-delta field's ids of events that follow others by ``seconds``."""
    return _bucket(seconds, np.zeros(len(seconds), dtype=bool), tables.edges[S.TIME_DELTA])


def _bucket(x: np.ndarray, null: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``FIRST_ID + #{edge < x}``; ``NAN`` for NaN and ``MISSING`` where ``null`` (nulls read as NaN here)."""
    ids = np.searchsorted(edges, x, side="left") + FIRST_ID
    ids[np.isnan(x)] = NAN
    ids[null] = MISSING
    return ids


def _value(
    x: np.ndarray, null: np.ndarray, edges: np.ndarray, pieces: tuple[np.ndarray, np.ndarray, float]
) -> np.ndarray:
    """The value-field rule of :class:`~seqfraud.features.spec.Spec`; reserved ids as in :func:`_bucket`."""
    m = len(edges)
    with np.errstate(all="ignore"):  # the branches not taken see infinities and NaN
        if m == 0:
            position = np.full(len(x), 0.5)
        else:
            lo, width, scale = pieces
            bucket = np.searchsorted(edges, x, side="left")
            inner = (x - lo[bucket]) / width[bucket]
            below = 1.0 / (1.0 + (edges[0] - x) / scale)
            above = 1.0 - 1.0 / (1.0 + (x - edges[-1]) / scale)
            share = np.where(bucket == 0, below, np.where(bucket == m, above, inner))
            position = (bucket + share) / (m + 1)
        ids = np.floor(position * VALUE_STEPS + 0.5).astype(np.int64) + FIRST_ID
    ids[np.isnan(x)] = NAN
    ids[null] = MISSING
    return ids
