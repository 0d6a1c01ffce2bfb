"""Raw events to normalized events at scoring time, with the training code's own validation.

Columns are checked and cast by :mod:`seqfraud.data.events`, exactly as in training; the token rules
that follow are :mod:`seqfraud.features`' (both the Polars path and the numpy fast path).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any, cast

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import (
    RFC3339,
    UNPARSED,
    US_PER_UNIT,
    DataValidationError,
    check_columns,
    did_you_mean,
    epoch_bounds,
    fail_rows,
    normalize,
    out_of_range_text,
    reading,
    timestamp_range_us,
)
from seqfraud.features.fastpath import EventColumns
from seqfraud.features.spec import Spec


def as_frame(events: Any, spec: Spec, source: str) -> pl.DataFrame:
    """A Polars frame from a Polars frame, an Arrow table or a list of dicts (training column names).

    Columns that hold only nulls get the type of their role, so a session without any amount is not
    refused for its column type. In a list of dicts, categorical, numeric and entity fields may be left
    out (null, like JSON without the key; an entity left out is none), but keys outside the schema are
    refused, as the HTTP API refuses them: a misspelled optional key would otherwise read as missing. A
    frame's or table's extra columns are ignored, as training ignores the columns its schema does not name.
    """
    if isinstance(events, pl.DataFrame):
        frame = events
    elif isinstance(events, (list, tuple)):
        frame = _records_frame(events, spec, source)
    else:
        try:
            converted = pl.from_arrow(events)
        except TypeError:
            converted = None
        if not isinstance(converted, pl.DataFrame):  # an Arrow array converts to a Series, not a frame
            raise TypeError(
                f"events must be a Polars DataFrame, an Arrow table or a list of dicts, "
                f"not {type(events).__name__}"
            ) from None
        frame = converted
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
    known = set(s.event_columns)
    unknown = Counter(k for r in records for k in r.keys() - known)
    if unknown:
        named = "; ".join(
            f"{k!r} in {n:,} event(s)" + did_you_mean(k, list(s.event_columns))
            for k, n in sorted(unknown.items(), key=lambda kv: str(kv[0]))
        )
        raise DataValidationError(
            f"{source}: unknown key(s) {named}. Keys are the model's columns: {list(s.event_columns)}"
        )
    optional = {*s.categorical, *s.numerical, *s.entities}
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
        fail_rows(
            source,
            schema.timestamp,
            n_out,
            out_of_range_text(schema, unit, "the model's unit, fixed at training"),
        )
    return events


_RFC3339 = re.compile(RFC3339)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def record_columns(records: Sequence[Any], spec: Spec) -> EventColumns | None:
    """A few events as plain columns without Polars, for per-event online scoring; None unless every record is
    clean (known keys, the required ones set, one JSON type per column, timestamps that parse and lie in range).

    Where it answers, it answers exactly what :func:`normalized_events` gives (a property test holds it to
    that); every other input goes through :func:`normalized_events`, which names what is wrong.
    """
    s = spec.schema
    known = set(s.event_columns)
    if not all(isinstance(r, dict) and r.keys() <= known for r in records) or not records:
        return None
    column: dict[str, list[Any]] = {c: [r.get(c) for r in records] for c in s.event_columns}
    if any(v is None for c in (s.session_id, s.timestamp, s.event_type) for v in column[c]):
        return None
    text: dict[str, list[str | None]] = {}
    for c in (s.session_id, *s.categorical_fields, *s.entities):
        types = {type(v) for v in column[c] if v is not None}
        allowed = {str, int} if c in s.entities or c == s.session_id else {str, int, bool}
        if len(types) > 1 or not types <= allowed:
            return None
        if types == {int} and not all(v is None or _INT64_MIN <= v <= _INT64_MAX for v in column[c]):
            return None
        if types == {bool}:
            text[c] = [None if v is None else ("true" if v else "false") for v in column[c]]
        else:
            text[c] = [None if v is None else str(v) for v in column[c]]
    numeric = {}
    for c in s.numerical:
        values = column[c]
        if not all(
            v is None or type(v) is float or (type(v) is int and _INT64_MIN <= v <= _INT64_MAX)
            for v in values
        ):
            return None
        null = np.array([v is None for v in values])
        numeric[c] = (np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64), null)
    ts = _timestamps_us(column[s.timestamp], spec)
    if ts is None:
        return None
    return EventColumns(
        cast(list[str], text[s.session_id]),
        ts,
        np.arange(len(records), dtype=np.int64),
        {c: text[c] for c in s.categorical_fields},
        numeric,
    )


def _timestamps_us(values: list[Any], spec: Spec) -> np.ndarray | None:
    """Epoch microseconds by :func:`~seqfraud.data.events.normalize`'s rules; None where any value would not
    pass them (the full path then says why)."""
    first, last = epoch_bounds("us", timestamp_range_us(spec.schema))
    out = np.empty(len(values), dtype=np.int64)
    types = {type(v) for v in values}
    if types == {str}:
        for i, v in enumerate(values):
            m = _RFC3339.match(v)
            if m is None:
                return None
            day, clock = m["date"], m["time"]
            hour, minute, second = int(clock[:2]), int(clock[3:5]), int(clock[6:])
            if hour > 23 or minute > 59 or second > 59:  # a leap second or worse: the full path decides
                return None
            try:
                days = date(int(day[:4]), int(day[5:7]), int(day[8:])).toordinal() - _EPOCH_DAY
            except ValueError:
                return None
            us = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000
            us += int((m["frac"] or "")[:6].ljust(6, "0"))
            if m["sign"]:
                offset = (int(m["oh"]) * 60 + int(m["om"])) * 60_000_000
                us += offset if m["sign"] == "-" else -offset
            if not first <= us <= last:
                return None
            out[i] = us
        return out
    unit = spec.epoch_unit
    if types != {int} or unit is None:
        return None
    low, high = epoch_bounds(unit, timestamp_range_us(spec.schema))
    for i, v in enumerate(values):
        if not low <= v <= high:
            return None
        out[i] = v // 1_000 if unit == "ns" else v * US_PER_UNIT[unit]
    return out
