"""Raw events to model inputs at scoring time, with the training code's own validation and token rules.

Columns are checked and cast by :mod:`seqfraud.data.events` and sequences come from
:func:`seqfraud.features.tokens.sequences`, exactly as in training. :func:`numpy_sequences` is the one
second implementation of the token rules, kept because Polars spends milliseconds planning the query
for a single session; a parity test holds it to the Polars path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import (
    UNPARSED,
    DataValidationError,
    check_columns,
    fail_rows,
    normalize,
    out_of_range_text,
    reading,
)
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, UNKNOWN, Spec
from seqfraud.features.tokens import sequences


@dataclass
class Sequences:
    """Sessions back to back: session i's kept events are ``lengths[i]`` rows of ``tokens``, after ``lengths[:i].sum()``."""

    session_ids: list[str]
    tokens: np.ndarray  # [kept events, fields] int64, in time order within each session
    lengths: np.ndarray  # [sessions] int64

    def __len__(self) -> int:
        return len(self.lengths)


def as_frame(events: Any, spec: Spec, source: str) -> pl.DataFrame:
    """A Polars frame from a Polars frame, an Arrow table or a list of dicts (training column names).

    Columns that hold only nulls get the type of their role, so a session without any amount is not
    refused for its column type. In a list of dicts, categorical and numeric fields may be left out
    (null, like JSON without the key); keys outside the schema are ignored, like extra frame columns.
    """
    if isinstance(events, pl.DataFrame):
        frame = events
    elif isinstance(events, (list, tuple)):
        frame = _records_frame(events, spec, source)
    else:
        try:
            frame = pl.from_arrow(events)
        except TypeError:
            raise TypeError(f"events must be a Polars DataFrame, an Arrow table or a list of dicts, "
                            f"not {type(events).__name__}") from None
    if frame.height == 0:
        raise DataValidationError(f"{source}: no events")
    numeric = set(spec.schema.numerical)
    nulls = [c for c in spec.schema.event_columns if c in frame.columns and frame.schema[c] == pl.Null]
    if nulls:
        frame = frame.with_columns(pl.col(c).cast(pl.Float64 if c in numeric else pl.String) for c in nulls)
    return frame


def _records_frame(records: Sequence[Any], spec: Spec, source: str) -> pl.DataFrame:
    bad = sum(not isinstance(r, dict) for r in records)
    if bad:
        raise DataValidationError(f"{source}: {bad:,} event(s) are not objects of column -> value")
    s = spec.schema
    optional = {*s.categorical, *s.numerical}
    columns = []
    for c in s.event_columns:
        if c not in optional and not any(c in r for r in records):
            continue  # a required column nobody sent: check_columns names it
        values = [r.get(c) for r in records]
        try:
            columns.append(pl.Series(c, values, dtype=pl.Float64 if c in s.numerical else None))
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            types = sorted({type(v).__name__ for v in values if v is not None})
            raise DataValidationError(
                f"{source}: column {c!r}: values of types {types} cannot form one column"
                + (" (expected numbers)" if c in s.numerical else "")
            ) from None
    return pl.DataFrame(columns)


def epoch_unit(have: pl.Schema, spec: Spec, source: str) -> str | None:
    """The unit integer epochs are read in: the spec's, fixed at training, never one guessed from the input,
    so a session scores the same whatever else is sent with it. None for datetimes and strings."""
    ts = spec.schema.timestamp
    if not have[ts].is_integer():
        return None
    if spec.epoch_unit is None:
        raise DataValidationError(
            f"{source}: column {ts!r} holds integer epochs, but the model was trained on datetimes with "
            "data.schema.timestamp_unit=auto, so their unit is unknown; send RFC 3339 strings "
            "(2026-03-01T12:00:00Z) or datetimes, or train with data.schema.timestamp_unit set"
        )
    return spec.epoch_unit


def normalized_events(lf: pl.LazyFrame, spec: Spec, source: str) -> pl.DataFrame:
    """Checked, cast and validated events (the training loader's contract, without labels).

    The frame keeps normalize's timestamp flag columns: dropping them would cost a query per request.
    """
    schema = spec.schema
    have = check_columns(lf, schema, source, with_label=False)
    unit = epoch_unit(have, spec, source)
    with reading(source):
        events = normalize(lf, schema, have, unit or "datetime", with_label=False).collect()
    if n := events[S.SESSION_ID].null_count():
        fail_rows(source, schema.session_id, n, "have a null session id")
    n_null = events.height - int(events[S.TS_PRESENT].sum())
    if n_null:
        fail_rows(source, schema.timestamp, n_null, "have a null timestamp")
    n_out = int(events[S.TS_OUT_OF_RANGE].sum())
    if n := events[S.TS_US].null_count() - n_out:  # not null on input nor out of range: it did not parse
        fail_rows(source, schema.timestamp, n, UNPARSED)
    if n_out:
        fail_rows(source, schema.timestamp, n_out,
                  out_of_range_text(schema, unit, "the model's unit, fixed at training"))
    return events


def polars_sequences(events: pl.DataFrame, spec: Spec) -> Sequences:
    """The training path itself: :func:`seqfraud.features.tokens.sequences`."""
    seqs = sequences(events.lazy(), spec).collect()
    cols = [S.token_column(f) for f in spec.fields]
    tokens = seqs.select(pl.col(c).explode() for c in cols).to_numpy().astype(np.int64)
    return Sequences(seqs[S.SESSION_ID].to_list(), tokens, seqs[S.LENGTH].to_numpy().astype(np.int64))


def numpy_sequences(events: pl.DataFrame, spec: Spec, vocab_index: dict[str, dict[str, int]]) -> Sequences:
    """The token rules of :class:`~seqfraud.features.spec.Spec` in numpy, for inputs too small for Polars.

    Sorted by (session, time, input row) like :func:`~seqfraud.features.tokens.sequences`; buckets are
    ``searchsorted(side="left")``, so ``FIRST_ID + #{edge < x}``; vocabularies are dict lookups
    (``vocab_index`` from :func:`vocab_index`); sessions keep their last ``max_len`` events.
    """
    n = events.height
    sid = events[S.SESSION_ID]
    if sid.n_unique() == 1:
        names, codes = [sid[0]], np.zeros(n, dtype=np.int64)
    else:
        uniques, codes = np.unique(sid.to_numpy(), return_inverse=True)
        names = uniques.tolist()
    ts = events[S.TS_US].to_numpy()
    order = np.lexsort((events[S.ROW_INDEX].to_numpy(), ts, codes))
    codes, ts = codes[order], ts[order]
    first = np.r_[True, codes[1:] != codes[:-1]]
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, n])
    # The last max_len events of each session: those fewer than max_len from its end (sorted positions).
    kept = np.repeat(starts + counts, counts) - np.arange(n) <= spec.max_len
    rows = order[kept]  # the same events as input rows
    columns = []
    for f in spec.fields:
        if f == S.TIME_DELTA:
            delta = np.r_[np.nan, np.diff(ts).astype(np.float64) / 1e6]
            ids = _bucket(delta, first, spec.edges[f])[kept]
        elif f in vocab_index:
            lookup = vocab_index[f]
            ids = np.array([MISSING if v is None else lookup.get(v, UNKNOWN) for v in events[f].to_list()],
                           dtype=np.int64)[rows]
        else:
            x = events[f]
            null = np.array([v is None for v in x.to_list()]) if x.null_count() else np.zeros(n, dtype=bool)
            ids = _bucket(x.to_numpy(), null, spec.edges[f])[rows]
        columns.append(ids)
    lengths = np.minimum(counts, spec.max_len).astype(np.int64)
    return Sequences(names, np.stack(columns, axis=1), lengths)


def _bucket(x: np.ndarray, null: np.ndarray, edges: list[float]) -> np.ndarray:
    """``FIRST_ID + #{edge < x}``; ``NAN`` for NaN and ``MISSING`` where ``null`` (nulls read as NaN here)."""
    ids = np.searchsorted(np.asarray(edges, np.float64), x, side="left").astype(np.int64) + FIRST_ID
    ids[np.isnan(x)] = NAN
    ids[null] = MISSING
    return ids


def vocab_index(spec: Spec) -> dict[str, dict[str, int]]:
    """Value -> token id for each categorical field, built once per scorer."""
    return {f: {v: FIRST_ID + i for i, v in enumerate(vocab)} for f, vocab in spec.vocab.items()}
