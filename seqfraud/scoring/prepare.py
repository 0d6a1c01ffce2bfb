"""Raw events to normalized events at scoring time, with the training code's own validation.

Columns are checked and cast by :mod:`seqfraud.data.events`, exactly as in training; the token rules
that follow are :mod:`seqfraud.features`' (both the Polars path and the numpy fast path).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from operator import itemgetter
from typing import Any, cast

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import (
    BLANK_ENTITY,
    BLANK_ID,
    DECIMAL_INTEGER,
    NULL_EVENT_TYPE,
    RFC3339,
    SCORING_NAMES,
    TRAINED_ZONED,
    TS_UNPARSED_ROWS,
    UNPARSED,
    US_PER_UNIT,
    ZONED,
    BadRows,
    DataValidationError,
    IdForms,
    blank,
    blank_id,
    check_columns,
    epoch_bounds,
    epoch_value,
    first_bad,
    integer_columns,
    naive_said,
    normalize,
    null_text,
    out_of_range_text,
    reading,
    refuse_integer_ids,
    refuse_repeated_ids,
    refuse_rewritten_ids,
    repeated_event_ids,
    rewritten_id,
    same_contents,
    say_repeated_rows,
    timestamp_range_us,
)
from seqfraud.data.events import timestamp_us as epoch_us
from seqfraud.errors import did_you_mean, is_finite, is_number
from seqfraud.features.drift import (
    CATEGORY_SHARES,
    MASS_EDGES,
    NULL_SHARES,
    NUMERIC_SHARES,
    TRANSITION_PAIRS,
    TRANSITION_SHARES,
    UNKNOWN_LABEL,
    VANISHED_FROM,
    followers,
    holds_mass,
    lowest_prob,
    mass_share,
    psi,
    psi_bins,
    token_label,
)
from seqfraud.features.fastpath import EventColumns, holds_booleans, spelling, token_tables
from seqfraud.features.spec import FIRST_ID, OPENER_SHARE, PAD, UNKNOWN, Spec
from seqfraud.features.tokens import quantile_probs

log = logging.getLogger(__name__)


def polars_frame(table: Any, what: str) -> pl.DataFrame:
    """A Polars frame from a Polars frame, an Arrow table or a list of dicts; anything else (pandas above all)
    refused by what it is, ``what`` naming the argument."""
    if isinstance(table, pl.DataFrame):
        return table
    if isinstance(table, (list, tuple)) and table and all(isinstance(r, dict) for r in table):
        return pl.from_dicts(table)
    try:
        converted = None if table is None else pl.from_arrow(table)
    except (TypeError, ValueError):  # a numpy array fails on its truth value
        converted = None
    if not isinstance(converted, pl.DataFrame):  # an Arrow array converts to a Series, not a frame
        kind = f"{type(table).__module__.split('.')[0]}.{type(table).__name__}"
        pandas = (
            " (pl.from_pandas(df) converts one, and reads pandas' NaN as missing)"
            if kind.startswith("pandas.")
            else ""
        )
        raise TypeError(
            f"{what} must be a Polars DataFrame, an Arrow table or a list of dicts, not {kind}{pandas}"
        ) from None
    return converted


def as_frame(events: Any, spec: Spec, source: str) -> pl.DataFrame:
    """A Polars frame from a Polars frame, an Arrow table or a list of dicts (training column names).

    Columns that hold only nulls get the type of their role, so a session without any amount is not
    refused for its column type. In a list of dicts, categorical, numeric and entity fields may be left
    out (null, like JSON without the key; an entity left out is none), but keys outside the schema are
    refused, as the HTTP API refuses them: a misspelled optional key would otherwise read as missing. A
    frame's or table's extra columns are ignored, as training ignores the columns its schema does not name.
    """
    frame = (
        _records_frame(events, spec, source)
        if isinstance(events, (list, tuple))
        else polars_frame(events, "events")
    )
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
    columns_in = [*s.event_columns, *([s.event_id] if s.event_id else [])]
    known = set(columns_in)
    unknown = Counter(k for r in records for k in r.keys() - known)
    if unknown:
        named = "; ".join(
            f"{k!r} in {n:,} event(s)" + did_you_mean(k, columns_in)
            for k, n in sorted(unknown.items(), key=lambda kv: str(kv[0]))
        )
        raise DataValidationError(
            f"{source}: unknown key(s) {named}. Keys are the model's columns: {columns_in}"
        )
    optional = {*s.categorical, *s.numerical, *s.entities}
    # Columns read as text, where an integer stands for its digits (as an integer column's values do in batch):
    # a request mixing 5 and "web" then scores as each would alone.
    textual: dict[str, tuple[type, ...]] = {
        **{c: (int,) for c in [*s.entities, *([s.event_id] if s.event_id else [])]},
        **{c: (int, bool) for c in (s.session_id, *s.categorical_fields)},  # as batch reads a Boolean column
    }
    columns = []
    for c in columns_in:
        if c not in optional and not any(c in r for r in records):
            continue  # a required column nobody sent: check_columns names it
        values = [r.get(c) for r in records]
        kinds = {type(v) for v in values if v is not None}
        # Polars' widest integer is Int128 (and str() stops at 4,300 digits): "cannot form one column" said no more.
        if c in textual and int in kinds:
            # Beside text an integer's digits would pass unseen: named as a column of them.
            if c in _keyed_ids(spec, spec.zero_padded_ids):
                refuse_integer_ids([c], spec.zero_padded_ids, source)
            huge = [i for i, v in enumerate(values) if type(v) is int and not INT128_MIN <= v <= INT128_MAX]
            if huge:
                raise DataValidationError(
                    f"{source}: column {c!r}: {len(huge):,} event(s) hold an integer outside the signed 128-bit "
                    f"range (first: event {huge[0]}, of {values[huge[0]].bit_length():,} bits); send such ids as text"
                )
        # A Float64 series reads True (numpy's too: review 130) as 1.0, where a Boolean column is refused.
        if c in s.numerical and kinds & {bool, np.bool_}:
            first = next(i for i, v in enumerate(values) if isinstance(v, (bool, np.bool_)))
            n = sum(isinstance(v, (bool, np.bool_)) for v in values)
            raise DataValidationError(
                f"{source}: column {c!r}: {n:,} event(s) hold a boolean (first: event {first}); expected a number"
            )
        if c in s.categorical_fields and bool in kinds:
            booleans = spec.boolean_text(c)  # as the vocabulary spells them, whatever else the column holds
            values = [text_value(v, booleans) if type(v) in textual[c] else v for v in values]
        elif c in textual and len(kinds) > 1:
            values = [text_value(v) if type(v) in textual[c] else v for v in values]
        try:
            columns.append(pl.Series(c, values, dtype=pl.Float64 if c in s.numerical else None))
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            types = Counter(type(v).__name__ for v in values if v is not None)
            rare = min(types, key=lambda t: types[t])
            first = next(i for i, v in enumerate(values) if type(v).__name__ == rare)
            nan = c not in s.numerical and any(isinstance(v, float) and math.isnan(v) for v in values)
            raise DataValidationError(
                f"{source}: column {c!r}: values of types {sorted(types)} cannot form one column"
                + (" (expected numbers)" if c in s.numerical else " (expected text or integers)")
                + f"; {types[rare]:,} event(s) hold a value of type {rare} (first: event {first})"
                + (
                    "; a NaN is pandas' missing value: send None, or convert with pl.from_pandas(df)"
                    if nan
                    else ""
                )
            ) from None
    return pl.DataFrame(columns)


def text_value(value: str | int | bool, booleans: tuple[str, str] = ("false", "true")) -> str:
    """A text column's value as batch reads it: an integer's digits, a boolean as ``booleans`` spell false and
    true (:meth:`~seqfraud.features.spec.Spec.boolean_text`)."""
    if isinstance(value, bool):
        return booleans[value]
    return str(value)


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


def normalized_events(
    lf: pl.LazyFrame, spec: Spec, source: str, *, keep_ids: bool = False, once: str | None = None
) -> pl.DataFrame:
    """Checked, cast and validated events (the training loader's contract, without labels). What it warns of is
    said once per ``once`` (default ``source``; a chunk's caller gives its file).

    The frame keeps normalize's timestamp flag columns: dropping them would cost a query per request; and with
    ``keep_ids`` the event ids (``__event_id``, text), which the online store keys its entity history by.
    """
    schema = spec.schema
    have = check_columns(lf, schema, source, with_label=False, missing_hint=SCORING_NAMES)
    refuse_integer_ids(integer_columns(have), _keyed_ids(spec, spec.zero_padded_ids), source)
    if booleans := [c for c in schema.categorical_fields if have[c] == pl.Boolean]:
        lf = lf.with_columns(
            pl.col(c).cast(pl.String).replace(dict(zip(("false", "true"), spec.boolean_text(c))))
            for c in booleans
        )
    unit = epoch_unit(have, spec, source)
    with reading(source):
        events = normalize(
            lf,
            schema,
            have,
            unit or "datetime",
            with_label=False,
            naive_flag=True,
            float32_decimal=spec.float32_decimal,
        ).collect()
    with BadRows(source) as bad:
        if n := events[S.SESSION_ID].null_count():
            bad.add(schema.session_id, n, "have a null session id")
        if n := int(events.select(blank(S.SESSION_ID).sum()).item()):
            bad.add(schema.session_id, n, BLANK_ID)
        for c in schema.entities:
            if n := int(events.select(blank(c, session=False).sum()).item()):
                bad.add(c, n, BLANK_ENTITY, first_bad(events, blank(c, session=False), lf, c))
        if n := events[schema.event_type].null_count():
            where = pl.col(schema.event_type).is_null()
            bad.add(schema.event_type, n, NULL_EVENT_TYPE, first_bad(events, where, lf, schema.event_type))
        n_null = events.height - int(events[S.TS_PRESENT].sum())
        if n_null:
            where = pl.col(S.TS_PRESENT).not_()
            bad.add(
                schema.timestamp,
                n_null,
                "have a null timestamp",
                first_bad(events, where, lf, schema.timestamp),
            )
        n_out = int(events[S.TS_OUT_OF_RANGE].sum())
        if n := int(events.select(TS_UNPARSED_ROWS.sum()).item()):
            bad.add(schema.timestamp, n, UNPARSED, first_bad(events, TS_UNPARSED_ROWS, lf, schema.timestamp))
        if n_out:
            bad.add(
                schema.timestamp,
                n_out,
                out_of_range_text(schema, unit, "the model's unit, fixed at training"),
                first_bad(events, pl.col(S.TS_OUT_OF_RANGE), lf, schema.timestamp),
            )
    renamed = {schema.session_id: S.SESSION_ID}
    if spec.integer_ids:
        textual = {
            renamed.get(c, c): c for c in _keyed_ids(spec, spec.integer_ids) if not have[c].is_integer()
        }
        refuse_rewritten_ids(events, textual, source, spec.integer_ids)
    if forms := spec.id_forms:  # zeros lost as text (dogfood 216), letters re-cased
        names = {renamed.get(c, c): c for c in _keyed_ids(spec, forms.columns())}
        for kind, said in forms.said(events, names, source):
            say_once(kind, once or source, said)
    # A float reading of integer ids (1008338.0), which a Parquet file's float column and the service refuse: a
    # model that records no integer ids (fitted before a model without entities recorded them, or on text ids)
    # scored them, under ids that join nothing (dogfood 108): said.
    decimal = pl.col(S.SESSION_ID).str.contains(DECIMAL_INTEGER)
    if (
        schema.session_id not in spec.integer_ids
        and not have[schema.session_id].is_integer()  # text, or pandas' category dtype
        and (n := int(events.select(decimal.sum()).item()))
    ):
        say_once(
            "decimal_ids",
            once or source,
            f"{source}: column {schema.session_id!r}: {n:,} row(s) hold an id written as a decimal (first: "
            f"{events.filter(decimal)[S.SESSION_ID][0]!r}), as integer ids read as floats come out (pandas turns an "
            "integer column with a gap into floats); the scores keep the ids as written, which join no table that "
            "writes them as integers: write them as their digits (dtype='Int64' in pandas)",
        )
    if S.TS_NAIVE in events.columns:
        naive = int(events[S.TS_NAIVE].sum())
        mixed = 0 < naive < events.height
        datetimes = isinstance(
            have[schema.timestamp], pl.Datetime
        )  # naive: an epoch-trained model's instants
        trained_zoned = spec.zoned_timestamps and not (spec.zoned_by_epochs and datetimes)
        if (mixed or (naive and trained_zoned)) and ("naive", once or source) not in _SAID:
            first = first_bad(events, pl.col(S.TS_NAIVE), lf, schema.timestamp)
            zoned = {} if mixed else {"zoned": TRAINED_ZONED}
            said = naive_said(source, schema.timestamp, naive, events.height, first, **zoned)
            say_once("naive", once or source, said)
        events = events.drop(S.TS_NAIVE)
    if spec.one_event_sessions and (n := events.height - events[S.SESSION_ID].n_unique()):
        repeated = events.filter(pl.col(S.SESSION_ID).is_duplicated())[S.SESSION_ID]
        say_once(
            "one_event",
            once or source,
            f"{source}: column {schema.session_id!r}: {n:,} row(s) repeat the id of another (first: "
            f"{repeated[0]!r}), where 99% of the model's training sessions had one event: if each row is its own "
            "transaction, their ids repeat, and each such pair is scored as one session",
        )
    if S.EVENT_ID in events.columns:
        refuse_repeated_ids(
            events.group_by(S.SESSION_ID).agg(repeated_event_ids()), source, str(schema.event_id)
        )
        if not keep_ids:
            events = events.drop(S.EVENT_ID)
    return events


# What normalized_events has said, by kind and source: once per file, and once for all of a service's requests.
_SAID: set[tuple[str, str]] = set()


def say_once(kind: str, source: str, message: str) -> None:
    if (kind, source) not in _SAID:
        _SAID.add((kind, source))
        log.warning("%s", message)


def left_out_said(where: str, field: str, of: str) -> str:
    """A field left out of ``of`` (a whole session, or every event online scoring took): most often a client that
    never sends it, scored on a token the model rarely saw, where batch scoring refuses the file (dogfood 108)."""
    return (
        f"{where}: field {field!r} was left out of {of} (read as null, which the model saw only where training's "
        "events had no value): if the client never sends it, its scores read sessions unlike training's; send it, "
        "null where an event has no value; said once"
    )


def cut_sessions_said(where: str, spec: Spec, short: int, sessions: int) -> str | None:
    """What to say where ``short`` of ``sessions`` have fewer events than 99% of the training sessions, three times
    training's share or more (and 10 or more): most often sessions cut at a file's edges (a month partition: 90 of
    822 runs cut, 33 of them one event, scored and monitored as whole ones, unsaid: dogfood 204); None otherwise."""
    if not spec.shortest_trained or short < 10 or short < 0.03 * sessions:
        return None
    return (
        f"{where}: {short:,} of its {sessions:,} sessions ({short / sessions:.1%}) have fewer events than 99% of "
        f"the training sessions (fewer than {spec.shortest_trained}), against 1% in training: sessions cut at a "
        "file's edges (a month partition, a day's folder) score as whole ones, which they are not; give each "
        "session's events whole (the files on both sides), or is this a new kind of short session?"
    )


def merged_sessions_said(where: str, spec: Spec, long: int, sessions: int) -> str | None:
    """What to say where ``long`` of ``sessions`` have more events than 99% of the training sessions, 3% or more
    (and 10 or more), as :func:`cut_sessions_said` says the short: two applications of two dealer systems under one
    id each, declined all 150 of them, unsaid (dogfood 250); None otherwise, and for specs that did not record
    training's."""
    if not spec.longest_trained or long < 10 or long < 0.03 * sessions:
        return None
    return (
        f"{where}: {long:,} of its {sessions:,} sessions ({long / sessions:.1%}) have more events than 99% of the "
        f"training sessions (more than {spec.longest_trained}), against 1% at most in training: the events of two sessions "
        "under one id (ids that collide between systems, a counter reset), or a new kind of long session?"
    )


# A share of sessions opening with rare types is said only where training's share would give as many this seldom:
# each 100 sessions begun online are judged, and traffic at 3.3% rare openers read three times that by chance in
# 1.8 of every 1,000 judgements (review 256).
OPENERS_CHANCE = 1e-6


def chance_of_as_many(n: int, sessions: int, share: float) -> float:
    """The chance of ``n`` or more of ``sessions`` where each is one with probability ``share`` (the binomial's
    upper tail, summed in logs from ``n`` until its terms no longer count: no scipy import on a request thread)."""
    if n <= 0:
        return 1.0
    if share <= 0 or n > sessions:
        return 0.0
    if share >= 1:
        return 1.0
    log_p, log_q, total = math.log(share), math.log1p(-share), 0.0
    for k in range(n, sessions + 1):
        term = math.exp(
            math.lgamma(sessions + 1)
            - math.lgamma(k + 1)
            - math.lgamma(sessions - k + 1)
            + k * log_p
            + (sessions - k) * log_q
        )
        total += term
        if k > sessions * share and term < total * 1e-12:
            break
    return min(total, 1.0)


def unopened_said(
    where: str,
    spec: Spec,
    firsts: Mapping[Any, int],
    sessions: int,
    recoded: bool = False,
    online: bool = False,
) -> str | None:
    """What to say where ``firsts`` (sessions per type of their first event, :func:`unopened_types`) count
    sessions that start with a type opening under :data:`OPENER_SHARE` of training's sessions three times as often
    as training's did or more (and 10, 1% of the ``sessions``): the ends of sessions begun in an earlier file
    (events delivered late) score as whole sessions (dogfood 238: 61 of 1,493, scores moved by up to 0.96, frauds
    to approve, unsaid), and so does a new first event. Where the event type was ``recoded`` (said so), the types
    the model never learnt are the recoding's (review 240: integer codes read as late events); None otherwise, and
    for specs that did not record training's. ``online``: sessions that began at the service, whose causes are a
    client's, not a file's."""
    openers = spec.opening_shares
    if openers is None:
        return None
    learnt = set(spec.vocab.get(spec.schema.event_type) or ())
    other = {
        str(t): n for t, n in firsts.items() if (not recoded or str(t) in learnt) and str(t) not in openers
    }
    n, trained = sum(other.values()), max(0.0, 1 - sum(openers.values()))
    if (
        n < 10
        or n < max(3 * trained, 0.01) * sessions
        or chance_of_as_many(n, sessions, trained) > OPENERS_CHANCE
    ):
        return None
    most = ", ".join(f"{t!r} {k:,}" for t, k in sorted(other.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    causes = (
        "is a client sending sessions without their first events (sent late, or not at all), or one whose clock "
        "runs ahead of the others' (a kiosk's, putting its event after the next), did the service start while they "
        "were open (an in-process store starts without the sessions it held), or is this a new first event? Each "
        "scores as though it were the session's start"
        if online
        else "are they the ends of sessions begun in an earlier file (events delivered late), or cut at the file's "
        "start? Each scores as a whole session, which it is not; give each session's events whole (the files on "
        "both sides), or is this a new first event?"
    )
    return (
        f"{where}: {n:,} of its {sessions:,} sessions ({n / sessions:.1%}) start with an event of a type that opens "
        f"under {OPENER_SHARE:.0%} of training's sessions ({most}), against {trained:.1%} in training: {causes}"
    )


def tied_said(where: str, spec: Spec, tied: int, events: int, after: bool = False) -> str | None:
    """What to say where ``tied`` of ``events`` have the time of an earlier event of their session
    (:func:`tied_rows`), ten times training's share or more: a sequence model reads them in the input's row
    order, and aggregates read the time between events. Timestamps written to the minute moved a GRU's scores by up
    to 0.62 with the rows' order, unsaid
    (dogfood 230: 48 events of 9,281, against 0.007% in training); 20 events and 0.2% at least, so that a few
    same-second clicks of a log that rarely had them are not said. None otherwise, and for specs that did not
    record training's. ``after``: ``events`` are those that follow another of their session (online, within a
    window), and training's share is read over its own such events."""
    trained, fit = spec.tied_share, spec.fit_info
    if trained is not None and after:
        trained *= fit["n_events"] / max(fit["n_events"] - fit["n_sessions"], 1)
    if trained is None or tied < 20 or tied < max(10 * trained, 0.002) * events:
        return None
    whose = "events that follow another of their session" if after else "events"
    return (
        f"{where}: {tied:,} of its {events:,} {whose} ({tied / events:.1%}) have the time of an earlier event of "
        f"their session and differ from it, against {trained:.2%} of training's: were the times written to a "
        "coarser precision (whole minutes or seconds), or a day delivered twice with values changed, or is it a "
        "burst of events within one tick (a bot)? A sequence model reads events of one time in the input's row "
        "order, and aggregates read the time between events, so scores move with both: send the times as "
        "training's were, or at least each session's rows in the order its events happened"
    )


# Times judged for their resolution from this many events on (:func:`resolution_said`).
RESOLUTION_EVENTS = 1_000


def resolution_said(where: str, spec: Spec, whole: int, events: int) -> str | None:
    """What to say where ``whole`` of ``events`` times are whole seconds, and the share of them with a fraction of a
    second a tenth of training's or less, where training's held one on half its events or more: a warehouse that
    cut its times to the second moved 660 of 3,500 scores and 19 bands, unsaid (dogfood 277), as the time between
    events, which the model reads, moved. None otherwise, and for specs that did not record training's."""
    trained = spec.whole_second_share
    if trained is None or events < RESOLUTION_EVENTS or 1 - trained < 0.5:
        return None
    if 1 - whole / events > (1 - trained) / 10:
        return None
    return (
        f"{where}: {whole:,} of its {events:,} timestamps ({whole / events:.1%}) are whole seconds, against "
        f"{trained:.1%} of training's: were the times cut to the second upstream (a warehouse's column type, an "
        "export's format)? The time between events, which the model reads, then moves, and scores with it: send "
        "the times as training's were"
    )


def event_us(events: pl.LazyFrame, spec: Spec, unit: str | None) -> pl.Expr:
    """The raw ``events``' times in epoch microseconds as training read them (``unit``: the epochs',
    :func:`epoch_unit`), null where they do not parse: for the checks that read a file before its chunks."""
    ts = spec.schema.timestamp
    return epoch_us(
        *epoch_value(ts, events.collect_schema()[ts], unit or "us"), timestamp_range_us(spec.schema)
    )[0]


def row_hashes(spec: Spec, have: pl.Schema, time: pl.Expr | None = None) -> list[pl.Expr]:
    """Each row's :data:`S.ROW_HASH` over the columns a model reads (and the event id, where the file holds it: two
    rows apart by it alone are two events, as training counts them), and with ``time`` (parsed: one instant written
    two ways is one time, review 239) :data:`S.TIME_HASH` over its session and instant: columns of the frame, so
    that the counts that read them hash each row once (hashed per count, the ties cost 0.55 s at 1.59M events)."""
    ids = spec.schema.event_id
    columns = [*spec.schema.event_columns, *([ids] if ids is not None and ids in have else [])]
    return [
        pl.struct(columns).hash(0).alias(S.ROW_HASH),
        *(
            []
            if time is None
            else [pl.struct(pl.col(spec.schema.session_id), time).hash(0).alias(S.TIME_HASH)]
        ),
    ]


def tied_rows() -> pl.Expr:
    """How many rows of a frame with :func:`row_hashes` have the instant of an earlier row of their session and
    differ from it (exact repeats are counted apart): the input's row order is then theirs."""
    return pl.col(S.ROW_HASH).n_unique() - pl.col(S.TIME_HASH).n_unique()


def row_counts(spec: Spec, have: pl.Schema, tied: bool, time: pl.Expr | None = None) -> list[pl.Expr]:
    """What :func:`say_rows` reads of a frame with :func:`row_hashes` (``have``: the file's columns): its rows
    repeated exactly where no event id tells them apart (a model without one, or a file that left its column out:
    dogfood 221, 500 doubled rows scored unsaid), and with ``tied``, where training recorded its share, its tied
    rows: for every model, a LightGBM's aggregates reading the time between events, which coarser times collapse
    (dogfood 248: times to the minute moved a stacker that kept LightGBM alone 20 bands, unsaid). With ``time``
    (the rows' epoch microseconds), where training recorded its share, the times that are whole seconds
    (:func:`resolution_said`)."""
    ids = spec.schema.event_id
    return [
        *(
            []
            if ids is not None and ids in have
            else [(pl.len() - pl.col(S.ROW_HASH).n_unique()).alias("repeated")]
        ),
        *([tied_rows().alias("tied")] if tied and spec.tied_share is not None else []),
        *(whole_seconds(time) if time is not None and spec.whole_second_share is not None else []),
    ]


def whole_seconds(time: pl.Expr) -> list[pl.Expr]:
    """The times (epoch microseconds) that are whole seconds, and the times counted: :func:`resolution_said`'s."""
    return [(time % 1_000_000 == 0).sum().alias("whole_seconds"), time.count().alias("timed")]


def say_rows(
    source: str, spec: Spec, counted: Mapping[str, Any], files: list[str], apart: Collection[str] = ()
) -> None:
    """Say what :func:`row_counts` counted (``counted``: those and ``len``), as training says repeats; the ties and
    the whole seconds too, but those of ``apart`` (their parts are said instead)."""
    if repeated := counted.get("repeated"):
        say_repeated_rows(source, repeated, same_contents(files), spec.schema.event_id)
    if (
        "tied" not in apart
        and "tied" in counted
        and (said := tied_said(source, spec, counted["tied"], counted["len"]))
    ):
        log.warning("%s", said)
    if (
        "whole_seconds" not in apart
        and "whole_seconds" in counted
        and (said := resolution_said(source, spec, counted["whole_seconds"], counted["timed"]))
    ):
        log.warning("%s", said)


class Unsent:
    """The schema's fields that no event taken yet has sent, said once :data:`ONLINE_CHECK_AFTER` events have
    come: per-event scoring's counterpart of ``/score``'s check of a whole session (dogfood 200: fares that a
    client left out moved 4 of 100 frauds from decline to review, unsaid). Its work ends once every field has
    come, or once said; concurrent requests take turns (review 205: said up to 8 times)."""

    def __init__(self, spec: Spec):
        self.fields = {*spec.schema.categorical, *spec.schema.numerical}
        self.taken = 0
        self._lock = threading.Lock()

    def take(self, records: Sequence[Mapping[str, Any]], where: str) -> None:
        if not self.fields:
            return
        with self._lock:
            for r in records:
                self.fields.difference_update(r.keys())
            self.taken += len(records)
            if self.fields and self.taken >= ONLINE_CHECK_AFTER:
                for field in sorted(self.fields):
                    log.warning(
                        "%s", left_out_said(where, field, f"every one of the first {self.taken:,} events")
                    )
                self.fields = set()


# Events online scoring takes before it says a field none of them sent (Unsent), and the events of a window Unlearnt
# judges: a field of rare events (sent on 1% of them, by a client that leaves null fields out) was said after 120
# (review 205), and a day's first sessions may be unlike the rest.
ONLINE_CHECK_AFTER = 1_000
# Unlearnt opens a window at every ONLINE_CHECK_EVERY-th event (its counts cost about 18 us a one-event request in a
# window, and those it makes at every event about 9 us between: BENCHMARKS.md), counts a session's first
# ONLINE_SESSION_CAP events of a window alone (a twentieth: one session's values never read as a unit change, nor its
# new category as a recoding), and says a finding again at most every ONLINE_RESAY_S while it lasts.
ONLINE_CHECK_EVERY, ONLINE_SESSION_CAP, ONLINE_RESAY_S = 10_000, 50, 3_600.0
# The windows' events over which ties are carried at most (:func:`tied_said` needs 20 of them): a file of as many.
ONLINE_TIED_EVENTS = 10_000
# Values of a categorical field a recoding is judged on (batch scoring's file, or a window of online events):
# fewer, all unseen, may be a few sessions of new categories.
RECODED_MIN_VALUES = 50
RECODED_SHARE_DROP = 0.1  # the share of known values this far below training's is said


def recoded_said(
    where: str, spec: Spec, field: str, values: int, known: int, new: Sequence[Any]
) -> str | None:
    """What to say of a categorical field whose ``values`` (non-null, ``known`` of them learnt; ``new``: the
    others, distinct, or the first two of them) read as a recoding upstream, or None: many values, several of them
    new, and none known
    (Y/N for true/false: dogfood 48; one new category alone is a new country's traffic: dogfood 50), or far fewer
    known than in training (one of two upstream systems recoded: dogfood 120)."""
    if values < RECODED_MIN_VALUES:
        return None
    if not known and len(new) >= 2:
        return (
            f"{where}: column {field!r} holds no value the model learnt (e.g. {new[0]!r}; it learnt "
            f"{spec.vocab[field][:5]}): every event reads it as an unknown value. Was the column recoded?"
        )
    trained = (spec.fit_info.get("vocab_coverage") or {}).get(field, 1.0)
    if known / values < trained - RECODED_SHARE_DROP:  # one new value on every event too
        return (
            f"{where}: column {field!r}: {100 * known / values:.0f}% of its values are ones the model learnt, "
            f"against {100 * trained:.0f}% in training: the rest read as unknown values. New traffic, or values "
            "recoded upstream?"
        )
    return None


# A numeric column's values past an end of its buckets are said from this share, where training held at most
# OFF_SCALE_TRAINED past that end (the quantile of its edge says how many).
OFF_SCALE_SHARE, OFF_SCALE_TRAINED = 0.5, 0.1
# Past an end that training's 1% or fewer lay past (a tail quantile), values are said from 5% and twenty times
# training's share, over SPREAD_SESSIONS sessions and SPREAD_VALUES values: one currency's amounts in cents put 11% of
# a file's past its top edge against training's 0.1%, and moved 18 bands unsaid (dogfood 243).
OFF_SCALE_TAIL_TRAINED, OFF_SCALE_TAIL, OFF_SCALE_TIMES = 0.01, 0.05, 20


def lowest_edge(edges: Sequence[float]) -> float:
    """What a value must lie below to lie below the lowest of ``edges`` (:func:`off_scale_said`): the edge less
    float32's rounding. Edges that a spec before version 6 fitted on widened float32 values
    (``Spec.float32_decimal``) sit up to a unit of 2**-24 from the decimal a CSV or JSON writes (0.30000001 for
    0.3), and a fixed fee at the lowest edge read as 18% of a clean month below it (dogfood 255); the tokens put both
    in the lowest bucket."""
    return edges[0] - abs(edges[0]) * 2.0**-23


def off_scale_said(
    where: str, spec: Spec, field: str, values: int, above: int, below: int, sessions: int | None = None
) -> str | None:
    """What to say of a numeric field whose ``values`` (finite ones) lie mostly past an end of its buckets,
    ``above`` the highest edge or ``below`` the lowest, or None: a unit changed upstream (pence for pounds, a score
    on 0-100 for 0-1) reads every value as the end bucket, unsaid (dogfood 210: PR-AUC 0.938 to 0.116). The edges
    are training's quantiles, so it held at most the share past each that the quantile gives: an end whose
    quantile leaves more (``features.n_buckets=2``: the median, half of any traffic past it, review 213) says
    nothing. With the file's ``sessions``, a share past a tail edge far above training's is said too
    (:data:`OFF_SCALE_TAIL`)."""
    edges, fit = spec.edges.get(field) or [], spec.fit_info
    if values < RECODED_MIN_VALUES or not edges or "n_buckets" not in fit:
        return None
    probs = quantile_probs(int(fit["n_buckets"]), tuple(fit.get("tail_quantiles") or ()))
    for count, side, edge, trained in (
        (above, "above the highest", edges[-1], 1 - probs[-1]),
        (below, "below the lowest", edges[0], probs[0]),
    ):
        if trained <= OFF_SCALE_TRAINED and count >= OFF_SCALE_SHARE * values:
            return (
                f"{where}: column {field!r}: {count / values:.0%} of its values lie {side} value its buckets "
                f"tell apart ({edge:g}, a quantile of training's values), so they read as one bucket. Was its unit "
                "changed upstream, or does it grow with time (a counter, a date as a number), past what training "
                "saw?"
            )
        if sessions is not None and past_tail(count, values, sessions, trained):
            # At most: the quantile's share, of which a point mass at the edge leaves less (dogfood 258: 0% below 0).
            return (
                f"{where}: column {field!r}: {count / values:.1%} of its values lie {side} value its buckets "
                f"tell apart ({edge:g}), against at most {trained:.1%} of training's: were some of its rows put in "
                "another unit upstream (one currency's amounts in cents), or is this new traffic of other values? "
                "They read as one bucket"
            )
    return None


# The values above a point mass are judged where TAIL_CARRIERS sessions or more carry those past the edge, not
# SPREAD_VALUES values: they are few (a month of 1,500 sessions with 150 fees, 60% of them /100, was said by none of
# score, monitor and /events: dogfood 261), and one session's many high fees read as a unit change (review 257),
# where a tail quantile's 1% of them falls on a session or two, not twenty.
TAIL_CARRIERS = 20


def past_tail(count: int, values: int, sessions: int, trained: float, carriers: int | None = None) -> bool:
    """Whether ``count`` of a number's ``values`` (finite ones, of ``sessions``) past an edge that at most ``trained``
    of training's values lay past (a tail quantile's) read as part of them in another unit (:data:`OFF_SCALE_TAIL`);
    ``carriers``: the sessions those ``count`` came from, where they are judged by them (:data:`TAIL_CARRIERS`)."""
    return (
        sessions >= SPREAD_SESSIONS
        and (values >= SPREAD_VALUES if carriers is None else carriers >= TAIL_CARRIERS)
        and trained <= OFF_SCALE_TAIL_TRAINED
        and count >= max(OFF_SCALE_TAIL, OFF_SCALE_TIMES * trained) * values
    )


def reference_mass_edges(spec: Spec, manifest: Mapping[str, Any]) -> dict[str, float]:
    """Per number, the :data:`MASS_EDGES` value the manifest records (artifacts exported since session 45), where it
    lies between the number's lowest and highest edges."""
    reference = manifest.get("reference")
    recorded = reference.get(MASS_EDGES) if isinstance(reference, dict) else None
    return {
        c: float(v)
        for c, v in (recorded.items() if isinstance(recorded, dict) else ())
        if c in spec.schema.numerical
        and spec.edges.get(c)
        and is_number(v)
        and is_finite(v)
        and spec.edges[c][0] < v < spec.edges[c][-1]  # inside the buckets, as export writes it (review 260)
    }


@dataclass(frozen=True)
class MassTails:
    """A number's values above a point mass at its lowest edge (:func:`holds_mass`), those of them below its mass
    edge (:data:`MASS_EDGES`) and those above its highest edge, and the sessions each of the two came from."""

    values: int
    below: int
    below_carriers: int
    above: int
    above_carriers: int


def mass_tail_said(
    where: str,
    spec: Spec,
    field: str,
    trained: np.ndarray,
    edge: float | None,
    sessions: int,
    tails: MassTails,
) -> str | None:
    """What to say of the tails of a number's values above a point mass at its lowest edge, by
    :func:`off_scale_said`'s tail rule over those values alone (``trained``: training's shares per token id): the
    mass takes the lowest quantiles' edges, and the values of part of the traffic /100 read into the lowest bucket
    above it, a PSI under the spread's line (dogfood 258: 60% of the donations /100 moved 9 bands, unsaid), below
    ``edge``, training's lowest quantile of such values; and it dilutes the share above the highest edge, where one
    channel's fees x100 read (dogfood 254)."""
    if not holds_mass(spec, field, trained):
        return None
    edges, low = spec.edges[field], lowest_prob(spec)
    above_mass = float(trained[FIRST_ID + 1 :].sum())
    for count, carriers, was, side in (
        (tails.below, tails.below_carriers, low, None if edge is None else f"below {edge:.3g}"),
        (tails.above, tails.above_carriers, float(trained[-1]) / above_mass, f"above {edges[-1]:g}"),
    ):
        if side is None or was is None or not past_tail(count, tails.values, sessions, was, carriers):
            continue
        return (
            f"{where}: column {field!r}: {count / tails.values:.1%} of its values above {edges[0]:g} lie {side}, "
            f"against at most {was:.1%} of training's such values: were some of its rows put in another unit "
            "upstream (one currency's amounts in cents), or is this new traffic of other values?"
        )
    return None


# A file (or a window of online events) whose values of a number spread over its buckets this far from training's
# (PSI) is said: four times the drift the monitor alerts on, far past what a month's traffic moves (dogfood 218's kWh
# for Wh read 4.96, 219's blanks written as 0 4.68); over SPREAD_SESSIONS sessions and SPREAD_VALUES values at least,
# as a session repeats its amount over several events: files of 10 to 25 unchanged sessions read past it by chance
# (review 225: 78% of them at 50 values, 12% at 100, none of 200 at 200).
SPREAD_PSI, SPREAD_SESSIONS, SPREAD_VALUES = 1.0, 100, 500


def reference_shares(
    spec: Spec, manifest: Mapping[str, Any], key: str = NUMERIC_SHARES
) -> dict[str, np.ndarray]:
    """Per numeric column (``key``: :data:`NUMERIC_SHARES`) or categorical field (:data:`CATEGORY_SHARES`), the
    training events' share of each token id that the manifest records (artifacts exported since sessions 40 and
    42), where it fits the spec's buckets or vocabulary: finite shares, at least 0 (an edited one failed scoring, or
    said a PSI of nan: review 225)."""
    reference = manifest.get("reference")
    recorded = reference.get(key) if isinstance(reference, dict) else None
    fields = spec.edges if key == NUMERIC_SHARES else spec.vocab
    out = {}
    for c, shares in recorded.items() if isinstance(recorded, dict) else ():
        size = spec.vocab_size(c) if c in fields else None
        if (
            size
            and isinstance(shares, list)
            and len(shares) == size
            and all(is_number(x) and is_finite(x) and x >= 0 for x in shares)
            and sum(shares) > 0
        ):
            out[c] = np.asarray(shares, np.float64)
    return out


def reference_transitions(spec: Spec, manifest: Mapping[str, Any]) -> dict[int, dict[int, float]]:
    """Per event type id, the shares of the types that followed it in training (:data:`TRANSITION_SHARES`) that
    the manifest records (artifacts exported since session 43), where each is a share of a type id in the
    vocabulary, an edited one left out."""
    reference = manifest.get("reference")
    recorded = reference.get(TRANSITION_SHARES) if isinstance(reference, dict) else None
    size = spec.vocab_size(spec.schema.event_type)

    def type_id(key: Any) -> int | None:
        # ASCII digits as str(int) writes them: "²" and 5,000 digits passed isdigit() and failed int() (review 246).
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 10):
            return None
        return int(key) if str(int(key)) == key and int(key) < size else None

    out = {}
    for prev, shares in recorded.items() if isinstance(recorded, dict) else ():
        if (
            (at := type_id(prev)) is not None
            and at >= FIRST_ID
            and isinstance(shares, dict)
            and shares
            and all(type_id(i) is not None for i in shares)
            and all(is_number(x) and is_finite(x) and 0 <= x <= 1 for x in shares.values())
            and sum(shares.values()) <= 1 + 1e-6
        ):
            out[at] = {cast(int, type_id(i)): float(x) for i, x in shares.items()}
    return out


# What follows an event type is said from a PSI of TRANSITION_PSI (the mix check's), where the file follows that type
# TRANSITION_PAIRS times (:mod:`seqfraud.features.drift`) and holds SPREAD_SESSIONS sessions: grouped in 21 bins, two
# windows of the same traffic stay near 0.1 at that count.
TRANSITION_PSI = 1.0


def commonest(counts: Counter[str], n: int) -> list[str]:
    """The ``n`` commonest of ``counts``, ties by value: as :func:`unlearnt_types` and batch scoring's modes name them
    (review 262: online named ties in the order first seen)."""
    return sorted(counts, key=lambda k: (-counts[k], k))[:n]


def unlearnt_types(spec: Spec) -> pl.Expr:
    """The two event types the model did not learn that the events hold most often, commonest first (ties by
    value), as a list: what :func:`transitions_said` names."""
    kind = spec.schema.event_type
    text = pl.col(kind).cast(pl.String)
    counts = text.filter(~text.is_in(spec.vocab[kind])).drop_nulls().value_counts()
    count, value = counts.struct.field("count"), counts.struct.field(kind)
    return counts.sort_by(count, value, descending=[True, False]).struct.field(kind).head(2).implode()


def transitions_said(
    where: str,
    spec: Spec,
    trained: Mapping[int, Mapping[int, float]],
    counts: Counter[int],
    sessions: int,
    reference: str = "training",
    ends: bool = True,
    unknown: Sequence[str] = (),
) -> str | None:
    """What to say of events whose types follow one another far otherwise than training's did (``counts``:
    :func:`~seqfraud.features.drift.transition_counts` of ``sessions`` sessions; ``trained``:
    :func:`reference_transitions`, or the ``reference`` window's), or None: two event types of like shares
    swapped upstream keep the mix and move what follows each (dogfood 241: PR-AUC 0.79 to 0.59, unsaid by score
    and monitor); so do a release that changed a flow, and events out of order. Without ``ends``, what follows
    alone, not the sessions' ends: where sessions are said cut, their ends read as a changed flow (review 246).
    ``unknown``: the event types the model did not learn that the events hold most often, named where they read as
    one (a release's new step, said as '<unknown>' alone: dogfoods 258, 259)."""
    if sessions < SPREAD_SESSIONS:
        return None
    kind = spec.schema.event_type
    found = []
    for prev, following in followers(counts, spec.vocab_size(kind)).items():
        if (shares := trained.get(prev)) is None:
            continue
        if not ends:  # the session's end left out of both, each read over the rest
            shares = {i: share for i, share in shares.items() if i != PAD}
            following = Counter({i: n for i, n in following.items() if i != PAD})
        if (total := following.total()) < TRANSITION_PAIRS or not shares:
            continue
        ids = list(shares)
        was = np.array([*shares.values(), max(0.0, 1 - sum(trained[prev].values()))])
        was /= was.sum()
        now = np.array([following[i] for i in ids] + [total - sum(following[i] for i in ids)], np.float64)
        if (index := psi(was, now)) >= TRANSITION_PSI:
            gained = int(np.argmax(now / total - was))  # the bin that gained most: a type, or the rest
            if gained < len(ids):
                moved, share, had = ids[gained], following[ids[gained]] / total, _share(was[gained])
            else:  # the type of the rest that follows most, which training's rest held at most
                n, moved = max((n, i) for i, n in following.items() if i not in shares)
                share, had = n / total, "none" if not was[gained] else f"at most {_share(was[gained])}"
            found.append((index, prev, total, moved, share, had))
    if not found:
        return None
    found.sort(key=itemgetter(0), reverse=True)
    index, prev, total, moved, share, had = found[0]

    def label(token: int) -> str:
        if token == UNKNOWN and unknown:
            return f"{UNKNOWN_LABEL!r} (types the model did not learn, most often {', '.join(map(repr, unknown))})"
        return "the session's end" if token == PAD else repr(token_label(spec, kind, token))

    more = (
        f" So does what comes after {len(found) - 1:,} more event type(s): "
        f"{', '.join(label(f[1]) for f in found[1:4])}{', ...' if len(found) > 4 else ''}."
        if len(found) > 1
        else ""
    )
    return (
        f"{where}: what comes after its {total:,} {label(prev)} events falls far otherwise than after {reference}'s "
        f"(PSI {index:.2f}): {label(moved)} comes after {_share(share)} of them against {had} in {reference}.{more} "
        "Were two event types swapped or renamed upstream, did a release change a flow, or are events out of order "
        "(another clock's times)?"
    )


def _share(x: float) -> str:
    """A share as a message says it: to a tenth of a percent under 10% (0.3% read as "0%": review 246)."""
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def reference_null_shares(spec: Spec, manifest: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per categorical, numeric and entity column of the spec, and per event type training learnt, the training
    events' share without a value that the manifest records (artifacts exported since session 41), where each is a
    share. The rare types training read as one unknown value are left out: an event type training did not learn
    says nothing of its nulls (review 233: a new type read as a client that stopped sending a field)."""
    reference = manifest.get("reference")
    recorded = reference.get(NULL_SHARES) if isinstance(reference, dict) else None
    columns = {*spec.schema.categorical, *spec.schema.numerical, *spec.schema.entities}
    return {
        c: {str(k): float(share) for k, share in by_kind.items() if k != UNKNOWN_LABEL}
        for c, by_kind in (recorded.items() if isinstance(recorded, dict) else ())
        if c in columns
        and isinstance(by_kind, dict)
        and by_kind
        and all(is_number(share) and is_finite(share) and 0 <= share <= 1 for share in by_kind.values())
    }


def learnt_kinds(nulls: Mapping[str, Mapping[str, float]]) -> set[str]:
    """The event types whose nulls :func:`reference_null_shares` records, of any field."""
    return {kind for shares in nulls.values() for kind in shares}


def null_pools(
    shares: Mapping[str, float],
    events: Mapping[str, int],
    nulls: Mapping[str, int],
    sessions: Mapping[str | None, int],
) -> list[tuple[str | None, int, int, float, int]]:
    """The pools of events a null check judges: every event of the types training learnt (None), then each such
    type alone, busiest first (dogfood 243: a field copied onto a type training never saw it on, 100% null there
    and 12.8% now, was averaged away over the pool, and moved 16 bands unsaid). Of each pool: the event type, its
    events and their nulls (``events``, ``nulls``: per event type), the nulls training's ``shares``
    (:func:`reference_null_shares`) give them, and its sessions (``sessions``, per pool). The recoding check reads
    the types training did not learn."""
    learnt = sorted((kind for kind in events if kind in shares), key=lambda kind: (-events[kind], kind))

    def pool(kinds: list[str]) -> tuple[int, int, float]:
        return (
            sum(events[kind] for kind in kinds),
            sum(nulls.get(kind, 0) for kind in kinds),
            sum(events[kind] * shares[kind] for kind in kinds),
        )

    return [
        (kind, *pool(learnt if kind is None else [kind]), sessions.get(kind, 0)) for kind in (None, *learnt)
    ]


# A field holding a value on under THINNED_SHARE of training's share of events is said: a placeholder written as
# empty, a client or an upstream job that stopped sending it (dogfood 227: a payee column nulled on one app's
# events moved scores by up to 0.86, a check result's 'na' written as empty by up to 0.15, unsaid); and one null
# on a tenth of training's share or less, where that was FILLED_FROM or more: blanks written as a value (dogfood
# 231: a watch time null on 40% of training's events written as 0, scores moved by up to 0.84, unsaid), or holding
# a value on ten times training's share and COPIED_FROM of the events at least, THINNED_VALUES more: a field copied
# onto events that never carried it (dogfood 243). Where the events (of a pool: :func:`null_pools`) are of THINNED_SESSIONS sessions, and training's
# share would have given THINNED_VALUES values (or nulls) at least.
THINNED_SHARE, FILLED_FROM, COPIED_FROM, THINNED_SESSIONS, THINNED_VALUES = 0.5, 0.2, 0.1, 100, 100
# And a field null on NULLS_RISEN more of the events than training's share and ten times it: an IP a release stopped
# sending on one channel's events, 34% of them against none in training, held a value on 66% (not under half), and
# an entity ring's PR-AUC fell from 0.87 to 0.64 unsaid (dogfood 280).
NULLS_RISEN = 0.2


def _of_pool(kind: str | None) -> tuple[str, str]:
    """The events of a pool (:func:`null_pools`), and training's of it, as a null check's message names them."""
    if kind is None:
        return "the events", "training's events of the same types"
    return f"the {kind!r} events", f"training's {kind!r} events"


def thinned_said(
    where: str,
    spec: Spec,
    field: str,
    rows: int,
    nulls: int,
    sessions: int,
    expected: float,
    kind: str | None = None,
) -> str | None:
    """What to say of ``field`` holding a value on far fewer of ``rows`` events (``nulls`` null, of ``sessions``
    sessions; of event type ``kind``, or of every learnt one) than training's events of the same types did
    (``expected`` nulls: :func:`null_pools`), or None."""
    if not rows:  # no event of a learnt type (review 236: a ZeroDivisionError online)
        return None
    had, has = 1 - expected / rows, 1 - nulls / rows
    # A rise of nulls is judged type by type (null_pools), not over every learnt type's events: pooled, a field one
    # type stopped sending read as thinned on all, and hid the type (dogfood 243).
    risen = kind is not None and had - has >= NULLS_RISEN and 1 - has >= 10 * (1 - had)
    if (
        sessions < THINNED_SESSIONS
        or rows - expected < THINNED_VALUES
        or (has >= THINNED_SHARE * had and not risen)
    ):
        return None
    events, trained = _of_pool(kind)
    return (
        f"{where}: column {field!r} holds a value on {has:.1%} of {events}, against {had:.1%} of {trained}: "
        "the rest read as missing"
        f"{' (as shared with no other session)' if field in spec.schema.entities else ''}. Did a client stop "
        "sending it, or an export write a value (a placeholder such as 'na') as empty?"
    )


def filled_said(
    where: str,
    spec: Spec,
    field: str,
    rows: int,
    nulls: int,
    sessions: int,
    expected: float,
    kind: str | None = None,
) -> str | None:
    """What to say of ``field`` null on far fewer of ``rows`` events than training's of the same types were (blanks
    written as a value, or a value copied onto them), as :func:`thinned_said`, or None."""
    if not rows:
        return None
    trained = expected / rows
    if sessions < THINNED_SESSIONS or expected < THINNED_VALUES or trained < FILLED_FROM:
        return None
    events, of_training = _of_pool(kind)
    if nulls / rows <= trained / 10:
        return (
            f"{where}: column {field!r} is null on {nulls / rows:.1%} of {events}, against {trained:.1%} of "
            f"{of_training}, whose nulls read as missing: did an export write its blanks as a value (0, 'na', '')?"
        )
    had, has = 1 - trained, 1 - nulls / rows
    # Not a trickle: 130 values on 98,240 events of a type that carried none passed the ten times alone (review 246).
    if has < max(COPIED_FROM, 10 * had) or expected - nulls < THINNED_VALUES:
        return None
    return (
        f"{where}: column {field!r} holds a value on {has:.1%} of {events}, against {had:.1%} of {of_training}: "
        "did a job copy the field onto events that never carried it, or a client start sending it there?"
    )


# Each null check, and when its counts can be judged (online windows carry them until then, each its own: one reset
# for both kept the blanks-as-0 check 41 windows behind the other, review 235): values expected enough, or none (no
# check), and nulls expected enough, or too few for the check to apply.
NULL_CHECKS = {
    "thinned": (thinned_said, lambda rows, expected: rows - expected >= THINNED_VALUES or expected >= rows),
    "filled": (
        filled_said,
        lambda rows, expected: expected >= THINNED_VALUES or expected < FILLED_FROM * rows,
    ),
}


def shares_apart(trained: np.ndarray, now: np.ndarray) -> tuple[float, int, float, float] | None:
    """The PSI of ``now`` (counts per token id) against ``trained`` (training's shares) over the field's own ids
    (the reserved ones are other checks': blanks, unknown values), with the id that gained most and its share now
    and in training, where the PSI reaches :data:`SPREAD_PSI`; None otherwise."""
    was = np.where(np.arange(len(trained)) < FIRST_ID, 0.0, trained)
    if not was.sum() or (index := psi(*psi_bins(was, now))) < SPREAD_PSI:
        return None
    was, shares = was / was.sum(), now / now.sum()
    moved = int(np.argmax(shares - was))
    return index, moved, float(shares[moved]), float(was[moved])


def spread_said(
    source: str,
    spec: Spec,
    column: str,
    trained: np.ndarray,
    sessions: int,
    read: list[int],
    whose: str = "the file's values",
) -> str | None:
    """What to say of a file whose values of ``column`` fall in its buckets far otherwise than training's events
    did, over its finite values alone (``read``: those, and those past each edge), or None: a unit changed within
    the range the edges span (kWh for Wh: every value in the lowest buckets, 43 sessions more in review, unsaid:
    dogfood 218), or blanks written as 0 (41.7% of the rows: scores moved by up to 0.83, unsaid: dogfood 219),
    where :func:`off_scale_said` reads the ends alone."""
    within = [*read, 0]  # the finite values past each edge, from none to all of them
    if sessions < SPREAD_SESSIONS or within[0] < SPREAD_VALUES:
        return None
    # Over the values alone: a file whose share of blanks differs (one kind of event) is no other scale.
    now = np.array([0] * FIRST_ID + [within[j] - within[j + 1] for j in range(len(read))], np.float64)
    if (apart := shares_apart(trained, now)) is None:
        return None
    index, moved, share, was = apart
    return (
        f"{source}: column {column!r}: its values fall in the model's buckets far otherwise than training's did "
        f"(PSI {index:.2f}; `seqfraud monitor` alerts on drift from 0.25): {token_label(spec, column, moved)} "
        f"holds {share:.0%} of {whose} against {was:.0%} of training's. A unit changed "
        "upstream (kWh for Wh), blanks written as 0, another field's values in this column, or far more of a "
        "kind of traffic whose values differ (one corridor's or product's share grown)? `seqfraud monitor "
        "--current` compares a file of such events with training's in full"
    )


# Online, the counts of a number that holds a point mass (:func:`holds_mass`) are carried until its values above the
# mass are enough, up to MASS_CARRIED values in all.
MASS_CARRIED = 100 * SPREAD_VALUES


def past_mass_said(
    where: str, spec: Spec, column: str, trained: np.ndarray, sessions: int, read: list[int]
) -> str | None:
    """What :func:`spread_said` says of a number's values above its lowest edge (``read``: as it reads them), where
    training held a point mass at that edge (:func:`holds_mass`): the mass dilutes the shares (dogfood 254: a fee
    of 0 on 84% of the events, all fees /100 moved 22 bands unsaid). Not the top's tail over them: one session's
    high fees read as a unit change (review 257)."""
    if not holds_mass(spec, column, trained) or len(read) < 2:
        return None
    others = trained.copy()
    others[FIRST_ID] = 0.0
    whose = (
        f"its values above {spec.edges[column][0]:g} (training's {mass_share(trained):.0%} at it or below)"
    )
    return spread_said(where, spec, column, others, sessions, read[1:2] + read[1:], whose)


# A categorical's mix is judged over MIX_SESSIONS sessions at least: a field constant within a session (a city, a
# device) varies by sessions, not events, and 100 sessions of heavy-tailed lengths read a PSI of 1.0 by chance in 10
# to 28% of clean samples (review 242). Nor where the file lacks over half of training's mix: a file of some kinds of
# event is another traffic, not a renumbering (a file of one stream read PSI 7.2: review 242).
MIX_SESSIONS, MIX_PRESENT = 500, 0.5
# A learnt value under VANISHED_FROM that all but vanished reads as renamed where this many of its events were due,
# and, of a field other than the event type, where the unlearnt value in its place came in RENAMED_SESSIONS sessions
# or more: a session's (an account's) country is one draw however many events carry it (a clean synthetic month's
# 'NG', on 1.4% of training's events, vanished beside a new 'CO' of about its share in 27 sessions, and read as
# renamed), where a reason code renamed on 588 events due comes in hundreds (review 279).
RENAMED_EVENTS, RENAMED_SESSIONS = 30, 50


def mix_said(
    source: str,
    spec: Spec,
    column: str,
    trained: np.ndarray,
    sessions: int,
    counts: Mapping[Any, int],
    carriers: Mapping[Any, int],
    values: int | None = None,
) -> str | None:
    """What to say of a file whose learnt values of a categorical ``column`` (``counts``: events per value as text)
    are mixed far otherwise than training's events' (PSI over the learnt values alone, as :func:`spread_said` reads
    a number's buckets; unknown values are :func:`recoded_said`'s, nulls the null checks'), or where an event type
    has all but vanished (:data:`VANISHED_FROM`), or None: integer event codes renumbered by a release (a new code
    at 2) kept every value learnt and moved PR-AUC from 0.754 to 0.382, unsaid (dogfood 241); an event type on 6.5%
    of the events that a release stopped logging read a PSI of 0.38, and moved 29 bands unsaid (dogfood 244). Two
    values swapped read a PSI of 0.37 there, unsaid. A value of any field that all but vanished where one the model
    did not learn took about its place reads as renamed (dogfood 263: a tier on 7% of the events renamed, unsaid).
    ``carriers``: the sessions of each unlearnt value of ``counts`` (:data:`RENAMED_SESSIONS`). ``values``: the
    non-null values counted, where ``counts`` holds only the commonest unlearnt ones (online)."""
    vocab = spec.vocab.get(column) or []
    now = np.zeros(len(trained), np.float64)
    for i, value in enumerate(vocab):
        now[FIRST_ID + i] = counts.get(value, 0)
    was_all = trained[FIRST_ID:] / max(trained[FIRST_ID:].sum(), 1e-12)  # training's mix of the learnt values
    if sessions < MIX_SESSIONS or now.sum() < SPREAD_VALUES:
        return None
    if said := respelt_said(source, spec, column, was_all, now[FIRST_ID:]):
        return said
    if was_all[now[FIRST_ID:] > 0].sum() < MIX_PRESENT:
        return None
    now_all = now[FIRST_ID:] / now[FIRST_ID:].sum()
    lost = int(np.argmax(was_all - now_all))
    if (apart := shares_apart(trained, now)) is None:
        # A value the model did not learn that took about a learnt one's place: a rename (review 246).
        learnt = set(vocab)
        held = sum(n for v, n in counts.items() if v is not None) if values is None else values
        new = max(((n, v) for v, n in counts.items() if v is not None and v not in learnt), default=None)

        def replaced(i: int) -> bool:
            """Whether an unlearnt value took about value ``i``'s place: half its share or more, and for a rarer one
            at most twice it (review 275: a step gone beside a new value on 12% of another's events read as
            renamed to it)."""
            share = new[0] / held if new is not None else 0.0
            return was_all[i] / 2 <= share and (was_all[i] >= VANISHED_FROM or share <= 2 * was_all[i])

        # Every event type that all but vanished, not only the one that lost most (review 246: views halved hid a
        # step no longer logged); other fields' values go with the traffic a file holds (one channel's left out),
        # unless an unlearnt value took their place. A rarer event type gone, or a rarer value renamed, where
        # RENAMED_EVENTS of it were due: the two steps of an account takeover, 0.3% of the events each, renamed by a
        # release, were unsaid (dogfood 272), as was a bank-details step dropped, 242 of its events due (review 275).
        gone = [
            i
            for i in range(len(vocab))
            if now_all[i] <= was_all[i] / 10
            and (
                was_all[i] >= VANISHED_FROM
                or (
                    was_all[i] * now.sum() >= RENAMED_EVENTS
                    and (
                        column == spec.schema.event_type
                        or (new is not None and carriers.get(new[1], 0) >= RENAMED_SESSIONS and replaced(i))
                    )
                )
            )
        ]
        if not gone:
            return None
        lost = max(gone, key=lambda i: was_all[i])
        said = (
            f"{source}: column {column!r}: {vocab[lost]!r} is {now_all[lost]:.1%} of its learnt values against "
            f"{was_all[lost]:.1%} of training's"
        )
        if new is not None and replaced(lost):
            return (
                f"{said}, where {new[1]!r}, a value the model did not learn, is {new[0] / held:.1%} of all its "
                "values: was it renamed upstream? The model reads those events as of an unknown value"
            )
        if column != spec.schema.event_type:
            return None
        return (
            f"{said}. Did the extract lose it (a collector's outage), a release stop sending it or merge it into "
            "another, or does the file hold other traffic (a kind of session left out)? The model reads these "
            "sessions without it"
        )
    index, moved, share, was = apart
    return (
        f"{source}: column {column!r}: its learnt values are mixed far otherwise than training's were (PSI "
        f"{index:.2f}; `seqfraud monitor` alerts on drift from 0.25): {vocab[moved - FIRST_ID]!r} is {share:.0%} "
        f"of them against {was:.0%} of training's, {vocab[lost]!r} {now_all[lost]:.0%} against {was_all[lost]:.0%}. "
        "Were codes renumbered upstream (a release that added a code), or has the traffic's mix changed (a "
        "promotion, a new market)? `seqfraud monitor --current` compares it with training's in full"
    )


# A file's learnt values are said to be respelt where this share of them are spellings training wrote rarely,
# and at least RESPELT_TIMES training's share of such spellings.
RESPELT_SHARE, RESPELT_TIMES = 0.5, 5


def respelt_said(source: str, spec: Spec, column: str, was: np.ndarray, now: np.ndarray) -> str | None:
    """What to say where most of a categorical's learnt values (``now``: counts per value of its vocabulary;
    ``was``: training's shares) are spellings of a value that training wrote otherwise far more often (another
    case, leading zeros: :func:`~seqfraud.features.fastpath.spelling`), or None. The model learns each spelling
    apart: a client that upper-cased its platform and category, spellings training held on 5% of its rows, moved
    PR-AUC from 0.509 to 0.494 and one typology's recall from 0.83 to 0.50, unsaid but by the monitor's PSI of 9.97
    (dogfood 272; dogfood 269 the same), as every value was learnt and the learnt ones present were too few of
    training's for :func:`mix_said`'s PSI."""
    vocab = spec.vocab[column]
    # Once: it reads the vocabulary (review 274: 15 s a call at 10,000 values).
    booleans = holds_booleans(spec, column)
    keys = [spelling(v, booleans) for v in vocab]
    usual: dict[str, int] = {}  # each spelling's key: training's commonest spelling of it
    for i, key in enumerate(keys):
        if key not in usual or was[i] > was[usual[key]]:
            usual[key] = i
    rare = np.array([usual[key] != i for i, key in enumerate(keys)])
    share, trained = float(now[rare].sum() / now.sum()), float(was[rare].sum())
    if share < RESPELT_SHARE or share < RESPELT_TIMES * trained:
        return None
    top = int(np.argmax(np.where(rare, now, -1)))
    commonest = usual[keys[top]]
    return (
        f"{source}: column {column!r}: {share:.0%} of its values are spellings training wrote rarely ({trained:.1%} "
        f"of its values), of values it wrote otherwise: {vocab[top]!r} is {now[top] / now.sum():.0%} of them, "
        f"against {was[top]:.1%} in training, which mostly wrote {vocab[commonest]!r} ({was[commonest]:.0%} of its "
        "values). The model learnt each spelling apart and reads these as the rarer one's: were they respelt "
        "upstream (a client release, an ETL's upper())?"
    )


def event_fields(events: EventColumns, i: int) -> tuple:
    """The values of event ``i``'s fields (None where null): a retry's are its first sending's."""
    return (
        *(values[i] for values in events.categorical.values()),
        *(None if null[i] else float(x[i]) for x, null in events.numeric.values()),
        *(values[i] for values in events.entities.values()),
    )


# Online, the unlearnt values of a categorical's mix kept at most (:class:`_Mix`).
MIX_OTHERS = 100


@dataclass
class _Mix:
    """A categorical's values in online windows, carried until judged (:func:`mix_said`): its learnt values'
    counts and their sessions, all its non-null values, and the commonest of the others, MIX_OTHERS at most
    (Misra-Gries: one on over 1/MIX_OTHERS of the values is kept, its count less at most that share). A request
    of unlearnt values alone was not counted (one event a request never said a rename), and a field of free text
    kept every distinct value until 500 sessions with a learnt one came (review 267: 105,185 of 120,000)."""

    learnt: Counter[str] = field(default_factory=Counter)
    sessions: set[str] = field(default_factory=set)
    values: int = 0
    others: Counter[str] = field(default_factory=Counter)
    # The sessions of each of the others, up to RENAMED_SESSIONS (all mix_said reads: a field renamed wholesale, never
    # judged, kept every session id: review 281).
    carriers: dict[str, set[str]] = field(default_factory=dict)

    def take(self, sent: list[str], vocab: frozenset[str], sessions: list[str], column: list[Any]) -> None:
        """Count ``sent`` (a request's non-null values of the field; ``column``: all its values, of ``sessions``)."""
        self.values += len(sent)
        unlearnt = dropped = False
        for v in sent:
            if v in vocab:
                self.learnt[v] += 1
                continue
            unlearnt = True
            if v in self.others or len(self.others) < MIX_OTHERS:
                self.others[v] += 1
            else:
                self.others -= Counter(dict.fromkeys(self.others, 1))  # Counter's minus drops what falls to 0
                dropped = True
        if dropped:
            self.carriers = {v: held for v, held in self.carriers.items() if v in self.others}
        if unlearnt:
            for s, v in zip(sessions, column):
                if v in self.others and len(held := self.carriers.setdefault(v, set())) < RENAMED_SESSIONS:
                    held.add(s)
        self.sessions.update(s for s, v in zip(sessions, column) if v in vocab)


def _capped(events: EventColumns, counted: Counter[str]) -> EventColumns:
    """``events`` less those past their session's first :data:`ONLINE_SESSION_CAP` in ``counted``, which counts them."""
    keep = []
    for i, sid in enumerate(events.session_ids):
        counted[sid] += 1
        if counted[sid] <= ONLINE_SESSION_CAP:
            keep.append(i)
    return events if len(keep) == len(events) else events.take(keep)


# The findings that Unlearnt counts over every event, a recoding (of values none or some of which are learnt: one
# finding, said once an hour as the others) and a number past its buckets' ends, which need ONLINE_CARRIERS
# sessions among those that sent the unlearnt values or the values past the end.
EVERY_EVENT = ("recoded", "off_scale")
ONLINE_CARRIERS = TAIL_CARRIERS


class Unlearnt:
    """Batch scoring's checks of a recoding (:func:`recoded_said`), a categorical's mix (:func:`mix_said`), a unit
    change (:func:`off_scale_said`), a number's spread over its buckets (:func:`spread_said`), what follows each
    event type (:func:`transitions_said`), ties (:func:`tied_said`, over pairs of a session's events in a window,
    carried up to :data:`ONLINE_TIED_EVENTS` events), the times' resolution (:func:`resolution_said`), the types that
    open sessions (:func:`unopened_said`, of every
    session online scoring says began: :meth:`opened`) and a field's nulls (:data:`NULL_CHECKS`, per pool of events;
    each carried over windows as the spread's counts are), online, over windows of :data:`ONLINE_CHECK_AFTER`
    events: the first events the process takes, then one from each :data:`ONLINE_CHECK_EVERY`-th (a change upstream
    after the first thousand events went unsaid, and a unit changed within the buckets' range was never said
    online). A number's bucket counts carry over windows until they hold the spread check's values and sessions (an
    amount sent on 15% of the events gave a window 94-195 values: review 229). A session counts for at most
    :data:`ONLINE_SESSION_CAP` events of a window (one busy session read as a unit change: review 229). A recoding
    and a number past its buckets' ends are counted over every event, not a window's alone, and judged over the
    events since the last judgement at each window's end, and between windows at every ONLINE_CHECK_AFTER-th event
    since then (:meth:`_count_values`, :meth:`_window`); a session counts for ONLINE_SESSION_CAP of them too. A
    finding is said when first judged, then at most every :data:`ONLINE_RESAY_S` while it lasts;
    concurrent requests take turns, and the log is written outside the lock."""

    def __init__(self, spec: Spec, manifest: Mapping[str, Any]):
        """``manifest``: the artifact's, whose reference shares (training's) the checks compare with."""
        self.spec = spec
        self.trained = reference_shares(spec, manifest)
        self.mass = reference_mass_edges(spec, manifest)
        self.trained_nulls = reference_null_shares(spec, manifest)
        # Per null check, field and pool of events (:func:`null_pools`): its events, their nulls, training's
        # expected nulls, sessions and first event, carried over windows until judged (a field on 1.4% of the
        # events never reached a window's gates: review 232).
        self.nulls: dict[tuple[str, str, str | None], tuple[int, int, float, int, int]] = {}
        self.learnt = learnt_kinds(self.trained_nulls)
        self.vocab = {f: frozenset(spec.vocab[f]) for f in spec.schema.categorical_fields}
        # Per numeric column with edges: its finite values, those above its highest edge and below its lowest.
        self.ends = {
            c: (lowest_edge(spec.edges[c]), spec.edges[c][-1])
            for c in spec.schema.numerical
            if spec.edges.get(c)
        }
        self.edges = {c: np.asarray(spec.edges[c], np.float64) for c in self.trained if c in self.ends}
        # The numbers whose tails above a point mass mass_tail_said judges: their carriers are counted, no other's.
        self.massive = {c for c in self.edges if holds_mass(spec, c, self.trained[c])}
        self.seen = 0  # events taken over the process's life
        self.window: int | None = 0  # the open window's first event; None between windows
        # Per column of the spread check: its bucket counts and their sessions, and the window they count from.
        # Per number: its values in each bucket, those strictly below the lowest edge (the lowest bucket holds the
        # values at the edge too) and those between it and its mass edge, the sessions they came from, and those
        # that the values below the mass edge and above the highest came from (mass_tail_said).
        self.spread = {
            c: (np.zeros(len(e) + 1, np.int64), np.zeros(2, np.int64), set[str](), (set[str](), set[str]()))
            for c, e in self.edges.items()
        }
        self.spread_from = dict.fromkeys(self.edges, 0)
        # Per categorical field with training's shares: its learnt values' counts and their sessions, carried as the
        # spread's are (renumbered event codes scored unsaid online too: dogfood 241).
        self.mixes = reference_shares(spec, manifest, CATEGORY_SHARES)
        self.mix = {f: _Mix() for f in self.mixes}
        self.mix_from = dict.fromkeys(self.mixes, 0)
        # What follows each event type, by type id as training's record reads it (two types swapped upstream:
        # dogfood 241; unsaid online: dogfoods 247, 248): pairs of a session's events within a window, and their
        # sessions, carried as the mix's counts are until a type has followed enough. A session's end is not
        # known online.
        self.follows = reference_transitions(spec, manifest)
        self.type_ids = token_tables(spec).vocab[spec.schema.event_type]
        self.n_types = spec.vocab_size(spec.schema.event_type)
        self.pairs: tuple[Counter[int], set[str]] = (Counter(), set())
        self.pairs_from = 0
        # Events at the time of their session's event before them in a window, the events that follow another of
        # their session there (the share's base: with many sessions open, a window holds one event of most: review
        # 256), and the window they count from (dogfood 248: times to the minute, said by score, unsaid by
        # /events); None where the spec did not record training's share.
        self.ties: list[int] | None = None if spec.tied_share is None else [0, 0, 0]
        # The windows' times that are whole seconds, the times counted and the window they count from, carried until
        # RESOLUTION_EVENTS (dogfood 277: times cut to the second); None where the spec did not record training's.
        self.whole: list[int] | None = None if spec.whole_second_share is None else [0, 0, 0]
        # The types of the events that opened sessions, judged at every SPREAD_SESSIONS sessions begun, windows or
        # not: sessions of tens of events open a few dozen in a window (dogfood 247: a kiosk clock an hour fast, its
        # opening event after the first top-ups, said by score alone); None where the spec did not record
        # training's openers.
        self.openers: Counter[str] | None = None if spec.opening_shares is None else Counter()
        self.said: dict[tuple[str, str], float] = {}  # (finding, field): when last said (monotonic)
        self._lock = threading.Lock()
        self._open_values()
        self._open()

    def _open_values(self) -> None:
        # Every event's categorical values since the last judgement (_count_values), each number's finite values,
        # those above its highest edge and below its lowest, and the sessions they came from; their sessions' events.
        self.values_from = self.seen
        self.values = dict.fromkeys(self.vocab, 0)
        self.known = dict.fromkeys(self.vocab, 0)
        self.new: dict[str, list[str]] = {f: [] for f in self.vocab}
        self.scale = {c: [0, 0, 0] for c in self.ends}
        self.scale_sessions: dict[str, set[str]] = {c: set() for c in self.ends}
        # The sessions that sent each field's unlearnt values, and each number's values above and below its ends: a
        # finding needs ONLINE_CARRIERS of them (review 271: one busy session of a field on 7% of the events read as
        # a unit change, three with a new grade as a recoding, both unsaid by batch scoring over the month).
        self.unlearnt_carriers: dict[str, set[str]] = {f: set() for f in self.vocab}
        self.past_carriers: dict[str, tuple[set[str], set[str]]] = {c: (set(), set()) for c in self.ends}
        self.value_sessions: Counter[str] = Counter()

    def _open(self) -> None:
        self.kinds: Counter[str] = Counter()  # the window's events counted, by event type
        # The window's sessions with an event of a learnt type (None), and of each learnt type.
        self.learnt_sessions: dict[str | None, set[str]] = {None: set()}
        self.window_nulls: dict[str, Counter[str]] = {c: Counter() for c in self.trained_nulls}
        self.per_session: Counter[str] = Counter()
        # Per session of the window, its latest event's time and type, and where it is (its fields are read where
        # the next has the same time and type).
        self.last_type: dict[str, tuple[int, int, EventColumns, int]] = {}

    def take(self, events: EventColumns, where: str) -> None:
        with self._lock:
            start, self.seen = self.seen, self.seen + len(events)
            self._count_values(events)
            said = self._window(events, where, start)
        for line in said:
            log.warning("%s", line)

    def _window(self, events: EventColumns, where: str, start: int) -> list[str]:
        """Count ``events`` (from event ``start`` on) into the open window, and what to say where it closes;
        between windows, what every event's counts say at each ONLINE_CHECK_AFTER-th event since they began (an
        amount sent in cents from event 3,000 on was said at the next window's end, 11,000: dogfood 272), their
        counts kept on where they say nothing."""
        if self.window is None:  # windows open at fixed events, whatever the requests' sizes (review 229)
            if (start - 1) // ONLINE_CHECK_EVERY == (self.seen - 1) // ONLINE_CHECK_EVERY:
                after = ONLINE_CHECK_AFTER
                if (start - self.values_from) // after == (self.seen - self.values_from) // after:
                    return []
                first = self.values_from
                try:
                    found = self._values_found(where)
                except Exception:
                    self._open_values()  # as a window closes: left, the counts failed every 1,000th request after
                    raise
                if not found:
                    return []
                self._open_values()
                return self._fresh(found, first)
            self.window = start
        self._count(events)
        if self.seen - self.window < ONLINE_CHECK_AFTER:
            return []
        try:
            return self._judge(where, self.window)
        finally:  # closed whatever the judging met: an error left it open, and every later request failed
            self.window = None
            self._open_values()
            self._open()

    def opened(self, kinds: Iterable[str], where: str) -> None:
        """Count the types of events that opened sessions (the online scorer knows which, once it took them), and
        judge them at every :data:`SPREAD_SESSIONS` sessions begun (recoded types as the recoding's while that is
        said)."""
        if self.openers is None:
            return
        said = None
        with self._lock:
            self.openers.update(kinds)
            if (opened := self.openers.total()) >= SPREAD_SESSIONS:
                kind = self.spec.schema.event_type
                recoded = ("recoded", kind) in self.said
                line = unopened_said(where, self.spec, self.openers, opened, recoded, online=True)
                now, self.openers = time.monotonic(), Counter()
                if line and now - self.said.get(("unopened", kind), -math.inf) >= ONLINE_RESAY_S:
                    self.said["unopened", kind] = now
                    said = f"{line} (the latest {opened:,} sessions begun online)"
        if said:
            log.warning("%s", said)

    def _count_values(self, events: EventColumns) -> None:
        """Every event's categorical values, learnt or not (:func:`recoded_said`), and numbers past their buckets'
        ends (:func:`off_scale_said`), a session's first :data:`ONLINE_SESSION_CAP` since the last judgement alone:
        windows read 1,000 of every 10,000 events, and an enum sent as its index for 3,600 events between two went
        unsaid (dogfood 263), as did a battery level sent as 0-1 on one channel, a field on 7% of the events, for a
        month's 21,429 events, which batch scoring said (dogfood 269)."""
        events = _capped(events, self.value_sessions)
        # In Python, not numpy, whose calls cost more on a request's one value or few.
        for c, (low, high) in self.ends.items():
            scale, sessions, (above, below) = self.scale[c], self.scale_sessions[c], self.past_carriers[c]
            for v, s in zip(events.numeric[c][0].tolist(), events.session_ids):
                if math.isfinite(v):
                    scale[0] += 1
                    sessions.add(s)
                    if v > high:
                        scale[1] += 1
                        above.add(s)
                    elif v < low:
                        scale[2] += 1
                        below.add(s)
        for f, vocab in self.vocab.items():  # loops in C where they can be: this runs at every online event
            values = events.categorical[f]
            sent, known = len(values) - values.count(None), sum(map(vocab.__contains__, values))
            self.values[f] += sent
            self.known[f] += known
            if known == sent:
                continue
            self.unlearnt_carriers[f].update(
                s for s, v in zip(events.session_ids, values) if v is not None and v not in vocab
            )
            if len(self.new[f]) < 2:
                new = [
                    v
                    for v in dict.fromkeys(values)
                    if v not in vocab and v is not None and v not in self.new[f]
                ]
                self.new[f] += new[: 2 - len(self.new[f])]

    def _count(self, events: EventColumns) -> None:
        events = _capped(events, self.per_session)
        kinds = cast(list[str], events.categorical[self.spec.schema.event_type])  # never null
        self.kinds.update(kinds)
        if self.ties is not None and not self.ties[1]:
            self.ties[2] = cast(int, self.window)
        if self.whole is not None:
            if not self.whole[1]:
                self.whole[2] = cast(int, self.window)
            # In Python: numpy's call costs 3.3 us, this 0.6 us for the one event of most requests.
            self.whole[0] += sum(t % 1_000_000 == 0 for t in events.ts_us.tolist())
            self.whole[1] += len(events.ts_us)
        if self.follows or self.ties is not None:
            pairs, sessions = self.pairs
            if not sessions:
                self.pairs_from = cast(int, self.window)
            last = self.last_type
            # In time order, as the service reads a session's events: a late event, or a retry (its time, type and
            # fields again), makes no pair (review 249: arrival order read as swapped types, a retry as a type
            # following itself); an event of the same time and type with other fields is one more, tied (dogfood
            # 255: a fleet's launches logged at one instant, said by score, unsaid online). Pairs after a type
            # training recorded alone: others were carried without end (review 249).
            for i in np.argsort(events.ts_us, kind="stable"):
                s, now = events.session_ids[i], (int(events.ts_us[i]), self.type_ids.get(kinds[i], UNKNOWN))
                if (prev := last.get(s)) is not None and (
                    now[0] < prev[0]
                    or now == prev[:2]
                    and event_fields(events, i) == event_fields(prev[2], prev[3])
                ):
                    continue
                if prev is not None and self.ties is not None:
                    self.ties[0] += now[0] == prev[0]
                    self.ties[1] += 1
                if prev is not None and prev[1] in self.follows:
                    pairs[prev[1] * self.n_types + now[1]] += 1
                    sessions.add(s)
                last[s] = (*now, events, int(i))
        if self.learnt:
            learnt = self.learnt_sessions
            for s, kind in zip(events.session_ids, kinds):
                if kind in self.learnt:
                    learnt[None].add(s)
                    learnt.setdefault(kind, set()).add(s)
        for c, nulls in self.window_nulls.items():
            if c in events.numeric:
                nulls.update(itertools.compress(kinds, events.numeric[c][1]))
            elif (values := events.categorical.get(c, events.entities.get(c))) is not None:
                nulls.update(kind for kind, v in zip(kinds, values) if v is None)
        for f, mix in self.mix.items():
            values, vocab = events.categorical[f], self.vocab[f]
            sent = [v for v in values if v is not None]
            if not mix.sessions and any(v in vocab for v in sent):
                self.mix_from[f] = cast(int, self.window)
            mix.take(sent, vocab, events.session_ids, values)
        for c, (low, high) in self.ends.items():
            x = events.numeric[c][0]
            finite = np.isfinite(x)
            x = x[finite]
            if c in self.edges and len(x):  # the buckets' ids, (lo, hi] as the tokens read them
                buckets, below, sessions, carriers = self.spread[c]
                if not sessions:
                    self.spread_from[c] = cast(int, self.window)
                buckets += np.bincount(np.searchsorted(self.edges[c], x), minlength=len(buckets))
                below[0] += int((x < low).sum())
                taken = list(itertools.compress(events.session_ids, finite))
                if c in self.massive:
                    tail = (x > self.edges[c][0]) & (x < self.mass.get(c, -math.inf))
                    below[1] += int(tail.sum())
                    carriers[0].update(itertools.compress(taken, tail))
                    carriers[1].update(itertools.compress(taken, x > high))
                sessions.update(taken)

    def _values_found(self, where: str) -> list[tuple[tuple[str, str], str, int]]:
        """What every event's counts say (:meth:`_count_values`): recodings, and numbers past their buckets' ends,
        each as its key, its line and the event its counts began at."""
        found = [
            (("recoded", f), line, self.values_from)
            for f in self.vocab
            if len(self.unlearnt_carriers[f]) >= ONLINE_CARRIERS
            and (line := recoded_said(where, self.spec, f, self.values[f], self.known[f], self.new[f]))
        ]
        for c, (finite, above, under) in self.scale.items():
            # An end's values count where ONLINE_CARRIERS sessions or more sent them.
            above, under = (
                n if len(held) >= ONLINE_CARRIERS else 0
                for n, held in zip((above, under), self.past_carriers[c])
            )
            if line := off_scale_said(where, self.spec, c, finite, above, under, len(self.scale_sessions[c])):
                found.append((("off_scale", c), line, self.values_from))
        return found

    def _judge(self, where: str, window: int) -> list[str]:
        """The findings of the window that began at event ``window`` not said yet (or not for an hour)."""
        found = self._values_found(where)
        recoded = {f for (check, f), _, _ in found if check == "recoded"}
        off_scale = {c for (check, c), _, _ in found if check == "off_scale"}
        for f, mix in self.mix.items():
            if mix.learnt.total() < SPREAD_VALUES or len(mix.sessions) < MIX_SESSIONS:
                continue  # carried to the next window
            if f not in recoded and (
                line := mix_said(
                    where,
                    self.spec,
                    f,
                    self.mixes[f],
                    len(mix.sessions),
                    mix.learnt + mix.others,
                    {v: len(held) for v, held in mix.carriers.items()},
                    mix.values,
                )
            ):
                found.append((("mix", f), line, self.mix_from[f]))
            self.mix[f] = _Mix()
        pairs, sessions = self.pairs
        if len(sessions) >= SPREAD_SESSIONS and followers(pairs, self.n_types):
            event_type = self.spec.schema.event_type
            if event_type not in recoded and (
                line := transitions_said(
                    where,
                    self.spec,
                    self.follows,
                    pairs,
                    len(sessions),
                    ends=False,
                    unknown=commonest(
                        Counter({k: n for k, n in self.kinds.items() if k not in self.vocab[event_type]}), 2
                    ),
                )
            ):
                found.append((("transitions", event_type), line, self.pairs_from))
            self.pairs = (Counter(), set())
        elif (
            len(sessions) >= 100 * SPREAD_SESSIONS
        ):  # recorded types that follow too seldom: not carried on and on
            self.pairs = (Counter(), set())
        if self.ties is not None:
            tied, counted, since = self.ties
            if said := tied_said(where, self.spec, tied, counted, after=True):
                found.append((("tied", self.spec.schema.timestamp), said, since))
            if said or counted >= ONLINE_TIED_EVENTS:
                self.ties = [0, 0, 0]
        if self.whole is not None and self.whole[1] >= RESOLUTION_EVENTS:
            whole, counted, since = self.whole
            if said := resolution_said(where, self.spec, whole, counted):
                found.append((("resolution", self.spec.schema.timestamp), said, since))
            self.whole = [0, 0, 0]
        pooled = {kind: len(held) for kind, held in self.learnt_sessions.items()}
        for c, shares in self.trained_nulls.items():
            lines = []  # one said a field, as batch scoring says: the first pool's, the first check's
            for kind, n, n_nulls, n_expected, n_sessions in null_pools(
                shares, self.kinds, self.window_nulls[c], pooled
            ):
                for check, (said_of, ready) in NULL_CHECKS.items():
                    rows, nulls, expected, held, first = self.nulls.get((check, c, kind), (0, 0, 0.0, 0, 0))
                    first = first if rows else window
                    rows, nulls, expected = rows + n, nulls + n_nulls, expected + n_expected
                    held += n_sessions  # at most the distinct sessions of the windows carried
                    self.nulls[check, c, kind] = (rows, nulls, expected, held, first)
                    if held >= THINNED_SESSIONS and ready(rows, expected):
                        if line := said_of(where, self.spec, c, rows, nulls, held, expected, kind):
                            lines.append(((check, c), line, first))
                        del self.nulls[check, c, kind]
            found += lines[:1]
        for c in self.edges:
            buckets, below, sessions, carriers = self.spread[c]
            if buckets.sum() < SPREAD_VALUES or len(sessions) < SPREAD_SESSIONS:
                continue  # carried to the next window
            # The finite values past each edge, from none to all of them.
            past = np.cumsum(buckets[::-1])[::-1].tolist()
            if c not in off_scale:  # one message a column, as batch scoring says: the ends' first
                # The tails past the end edges over the carried counts, as batch scoring reads a file's (dogfood
                # 248: a platform's amounts in cents, 17.7% past the top, unsaid online).
                said = (
                    off_scale_said(
                        where,
                        self.spec,
                        c,
                        int(buckets.sum()),
                        int(buckets[-1]),
                        int(below[0]),
                        len(sessions),
                    )
                    or spread_said(
                        where, self.spec, c, self.trained[c], len(sessions), past, "these events' values"
                    )
                    or past_mass_said(where, self.spec, c, self.trained[c], len(sessions), past)
                    or mass_tail_said(
                        where,
                        self.spec,
                        c,
                        self.trained[c],
                        self.mass.get(c),
                        len(sessions),
                        MassTails(past[1], int(below[1]), len(carriers[0]), past[-1], len(carriers[1])),
                    )
                )
                if said:
                    found.append((("spread", c), said, self.spread_from[c]))
                # Carried on while the values past a point mass are too few to judge (a fee on a sixth of the
                # events), up to MASS_CARRIED values.
                elif (
                    holds_mass(self.spec, c, self.trained[c])
                    and past[1] < SPREAD_VALUES
                    and past[0] < MASS_CARRIED
                ):
                    continue
            self.spread[c] = (np.zeros_like(buckets), np.zeros_like(below), set(), (set(), set()))
        return self._fresh(found, window)

    def _fresh(self, found: list[tuple[tuple[str, str], str, int]], window: int) -> list[str]:
        """The lines of ``found`` not said yet (or not for :data:`ONLINE_RESAY_S`), judged at event ``window``."""
        now, out = time.monotonic(), []
        for key, line, first in found:
            if now - self.said.get(key, -math.inf) >= ONLINE_RESAY_S:
                self.said[key] = now
                out.append(f"{line} ({self._span(first, window, key[0] in EVERY_EVENT)})")
        return out

    def _span(self, first: int, window: int, every: bool) -> str:
        """The events a finding read, from the window at event ``first`` to this one at ``window`` (``every``: each
        event from ``first`` on)."""
        if first == window == 0:
            return f"the first {self.seen:,} events online"
        read = (
            ""
            if first == window or every
            else f", {ONLINE_CHECK_AFTER:,} of every {ONLINE_CHECK_EVERY:,} read"
        )
        return f"events {first + 1:,} to {self.seen:,} this process took online{read}"


_RFC3339 = re.compile(RFC3339)
_DECIMAL = re.compile(DECIMAL_INTEGER)
_ZONED = re.compile(ZONED)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
INT128_MIN, INT128_MAX = -(1 << 127), (1 << 127) - 1
_NONE = type(None)


def _keyed_ids(spec: Spec, ids: Iterable[str]) -> list[str]:
    """The id columns among ``ids`` whose form a scored file must keep: the event id aside, which a file or a
    ``/score`` request reads only for its repeats (``POST /events``, which takes a resend by it, checks it:
    :func:`~seqfraud.scoring.online.refuse_misread_ids`)."""
    return [c for c in ids if c != spec.schema.event_id]


def _unsaid_form(forms: IdForms, column: str, values: list[Any], source: str) -> bool:
    """Whether a value of ``column`` is written otherwise than training's form where that is not said yet for
    ``source``: the full path says it once, and the fast path answers after (review 222: a new client's 'S0001'
    beside training's 's0001' took every request through Polars, 0.4 to 2.6 ms)."""
    unsaid = any((key, source) not in _SAID for key in forms.keys(column))
    return unsaid and any(forms.off(column, v) for v in values if type(v) is str)


_FLOAT32 = struct.Struct("f")


def float32_decimal(value: float) -> float:
    """:func:`~seqfraud.data.events.as_float64`'s rule on one double, for the online events that skip Polars
    (0.1 us a value, 0.66 us one a float32 holds, where numpy's array calls took 4 us). numpy prints the float32's
    shortest decimal too, by a call that its global print options leave alone (``str()`` under
    ``legacy="1.13"`` printed 12.3457 for 12.34567: review 262)."""
    try:
        narrow = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:  # past float32's range: none holds it
        return value
    if narrow != value or value.is_integer():
        return value
    return float(np.format_float_scientific(np.float32(narrow), unique=True))


def record_columns(records: Sequence[Any], spec: Spec, source: str = "request") -> EventColumns | None:
    """A few events as plain columns without Polars, for per-event online scoring; None unless every record is
    clean (known keys, the required ones set, one JSON type per column, timestamps that parse and lie in range).

    Where it answers, it answers exactly what :func:`normalized_events` gives (a property test holds it to
    that), and says what it says of naive times, once per ``source``; every other input goes through
    :func:`normalized_events`, which names what is wrong.
    """
    s = spec.schema
    names = s.event_columns
    # Loops in C where they can be (map, zip, set.union, `None in`): this runs at every online event.
    if not records or set(map(type, records)) != {dict} or not set().union(*records) <= set(names):
        return None
    column: dict[str, list[Any]]
    if set(map(len, records)) == {len(names)}:  # every record holds every column, as clients mostly send
        column = dict(zip(names, map(list, zip(*map(itemgetter(*names), records)))))
    else:
        column = {c: [r.get(c) for r in records] for c in names}
    if any(None in column[c] for c in (s.session_id, s.timestamp, s.event_type)):
        return None
    text: dict[str, list[str | None]] = {}
    padded, integer_typed, forms = (
        spec.zero_padded_ids,
        spec.integer_ids,
        spec.id_forms,
    )  # once a request
    form_columns = forms.columns()
    for c in (s.session_id, *s.categorical_fields, *s.entities):
        values = column[c]
        types = set(map(type, values)) - {_NONE}
        allowed = {str, int} if c in s.entities or c == s.session_id else {str, int, bool}
        if not types <= allowed or (int in types and c in padded):
            return None  # the full path names what is wrong
        if str in types and (
            (c in integer_typed and any(rewritten_id(v, integer_typed[c]) for v in values if type(v) is str))
            or (c in form_columns and _unsaid_form(forms, c, values, source))
        ):
            return None  # the full path names it
        if int in types and not all(
            v is None or type(v) is not int or _INT64_MIN <= v <= _INT64_MAX for v in values
        ):
            return None
        booleans = spec.boolean_text(c) if bool in types else ("false", "true")
        text[c] = (
            values if types <= {str} else [None if v is None else text_value(v, booleans) for v in values]
        )
    sids = set(cast(list[str], text[s.session_id]))
    if any(map(blank_id, sids)) or (s.session_id not in integer_typed and any(map(_DECIMAL.match, sids))):
        return None  # a blank or padded id (BLANK_ID), or one written as a decimal: the full path names it
    if any(
        v is not None and (blank_id(v, session=False) or null_text(v)) for c in s.entities for v in text[c]
    ):
        return None  # an entity value BLANK_ENTITY refuses: the full path names it
    numeric = {}
    for c in s.numerical:
        values = column[c]
        types = set(map(type, values))
        if not types <= {float, int, _NONE}:
            return None
        if int in types and not all(type(v) is not int or _INT64_MIN <= v <= _INT64_MAX for v in values):
            return None
        if spec.float32_decimal and float in types:
            values = [float32_decimal(v) if type(v) is float else v for v in values]
        if _NONE in types:
            x = np.array(values, dtype=object)
            null = np.equal(x, cast(Any, None))  # elementwise, in C
            x[null] = np.nan
            x = x.astype(np.float64)
        else:
            null, x = np.zeros(len(values), dtype=bool), np.array(values, dtype=np.float64)
        numeric[c] = (x, null)
    ts = _timestamps_us(column[s.timestamp], spec)
    if ts is None:
        return None
    if spec.zoned_timestamps and ("naive", source) not in _SAID:
        _say_naive_for_zoned(column[s.timestamp], cast(list[str], text[s.session_id]), spec, source)
    return EventColumns(
        cast(list[str], text[s.session_id]),
        ts,
        np.arange(len(records), dtype=np.int64),
        {c: text[c] for c in s.categorical_fields},
        numeric,
        {c: text[c] for c in s.entities},
    )


def _say_naive_for_zoned(stamps: list[Any], sids: list[str], spec: Spec, source: str) -> None:
    """Says naive times sent to a model trained on zoned ones, as :func:`normalized_events` does. Parsed times
    are all naive or all zoned (a mix takes the full path), so the first tells: one match a request, until said."""
    first = stamps[0]
    if isinstance(first, str) and not _ZONED.search(first):
        n, ts = len(stamps), spec.schema.timestamp
        example = f" (first: {first!r}, session {sids[0]!r})"
        say_once("naive", source, naive_said(source, ts, n, n, example, zoned=TRAINED_ZONED))


def timestamp_us(value: Any, spec: Spec) -> int | None:
    """One event time's epoch microseconds by :func:`_timestamps_us`'s rules; None where it would not pass them."""
    out = _timestamps_us([value], spec)
    return None if out is None else int(out[0])


def _timestamps_us(values: list[Any], spec: Spec) -> np.ndarray | None:
    """Epoch microseconds by :func:`~seqfraud.data.events.normalize`'s rules; None where any value would not
    pass them (the full path then says why)."""
    first, last = epoch_bounds("us", timestamp_range_us(spec.schema))
    types = {type(v) for v in values}
    if types == {str}:
        out = _one_layout_us(values) if len(values) >= _VECTOR_MIN else None
        out = _each_us(values) if out is None else out
        return out if out is not None and ((out >= first) & (out <= last)).all() else None
    out = np.empty(len(values), dtype=np.int64)
    unit = spec.epoch_unit
    if types != {int} or unit is None:
        return None
    low, high = epoch_bounds(unit, timestamp_range_us(spec.schema))
    for i, v in enumerate(values):
        if not low <= v <= high:
            return None
        out[i] = v // 1_000 if unit == "ns" else v * US_PER_UNIT[unit]
    return out


def _each_us(values: list[str]) -> np.ndarray | None:
    """RFC 3339 strings one at a time (any mix of layouts) to epoch microseconds; None where one does not parse,
    or where naive strings mix with ones that carry an offset, which the full path says (review 74)."""
    out = np.empty(len(values), dtype=np.int64)
    zoned = set()
    for i, v in enumerate(values):
        m = _RFC3339.match(v)
        if m is None:
            return None
        zoned.add(m["sign"] is not None or v[-1] in "Zz")
        if len(zoned) > 1:
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
        out[i] = us
    return out


_VECTOR_MIN = 8  # below this many timestamps, one at a time is faster
_ZEROS = str.maketrans("123456789", "000000000")
_NUMBERS = ("year", "month", "day", "hour", "minute", "second", "frac", "oh", "om")


@dataclass(frozen=True)
class _Layout:
    """Where an RFC 3339 layout keeps its digits, and the place value of each digit in each number."""

    digit: np.ndarray  # bool per character
    text: np.ndarray  # the code of every other character
    places: np.ndarray  # float64 [digits, numbers]: the digits times it give the numbers (exact below 2**53)
    frac_scale: int  # the fraction's digits times it give microseconds
    sign: str | None  # the offset's sign, None without one


@functools.lru_cache(maxsize=64)
def _layout(template: str) -> _Layout | None:
    """The layout of timestamps like ``template`` (its digits zeroed); None where it is not RFC 3339."""
    m = _RFC3339.match(template)
    if m is None or not template.isascii():
        return None
    t = m.start("time")
    spans = {"year": (0, 4), "month": (5, 7), "day": (8, 10), "hour": (t, t + 2), "minute": (t + 3, t + 5)}
    spans |= {"second": (t + 6, t + 8)} | {f: m.span(f) for f in ("frac", "oh", "om") if m[f] is not None}
    frac_scale = 1
    if "frac" in spans:
        start, end = spans["frac"]
        spans["frac"] = (start, min(end, start + 6))  # microseconds: digits past the sixth are cut
        frac_scale = 10 ** (6 - (spans["frac"][1] - start))
    codes = np.frombuffer(template.encode(), dtype=np.uint8).astype(np.int64)
    digit = (codes >= 48) & (codes <= 57)
    places = np.zeros((len(template), len(_NUMBERS)), dtype=np.float64)
    for j, name in enumerate(_NUMBERS):
        if name in spans:
            start, end = spans[name]
            places[start:end, j] = 10.0 ** np.arange(end - start - 1, -1, -1)
    return _Layout(digit, codes[~digit], places[digit], frac_scale, m["sign"])


def _one_layout_us(values: list[str]) -> np.ndarray | None:
    """Many RFC 3339 strings of one layout (one producer writes them all alike) to epoch microseconds at once,
    as :func:`_each_us` reads them; None where they do not share the first one's layout (or it does not parse),
    and :func:`_each_us` then decides. Same layout means: an ASCII digit wherever the first has one, and the
    same character wherever it has another."""
    width = len(values[0])
    layout = _layout(values[0].translate(_ZEROS))
    if layout is None or set(map(len, values)) != {width}:
        return None
    codes = np.array(values, dtype=f"<U{width}").view(np.uint32).reshape(len(values), width).astype(np.int64)
    digits = codes[:, layout.digit] - 48
    if digits.min() < 0 or digits.max() > 9 or (codes[:, ~layout.digit] != layout.text).any():
        return None
    year, month, day, hour, minute, second, frac, oh, om = (digits @ layout.places).astype(np.int64).T
    if hour.max() > 23 or minute.max() > 59 or second.max() > 59 or oh.max() > 23 or om.max() > 59:
        return None
    # A session's events fall on a few dates: each distinct one is checked and counted by date itself.
    dates, at = np.unique((year * 100 + month) * 100 + day, return_inverse=True)
    try:
        ordinals = [date(d // 10_000, d // 100 % 100, d % 100).toordinal() for d in dates.tolist()]
    except ValueError:
        return None
    days = np.array(ordinals, dtype=np.int64)[at] - _EPOCH_DAY
    us = ((((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000) + frac * layout.frac_scale
    offset = (oh * 60 + om) * 60_000_000
    return us - offset if layout.sign == "+" else us + offset
