"""Per-event online scoring: a fresh score after every event of an open session, from state that outlives a request.

**The parity rule.** The score after a session's k-th event equals what :meth:`Scorer.score` gives the first k
events, within 1e-5: the same validation, tokens, entity features, model, stacker, calibration and bands,
recency positions and truncation at ``max_len`` included. Tests hold every path below to it.

How each event is scored:

- Its tokens are computed once, when it arrives (the time delta from the session's previous event), and kept
  with the session: the events before it never change, so the session is never tokenized again. A stacker's
  aggregates are running totals (:class:`~seqfraud.baselines.RunningAggregates`): the event adds to them.
- A GRU artifact carries its hidden state (:class:`~seqfraud.models.sequence.GRUStep`, the artifact's
  ``step``): an event costs O(1). Past ``max_len`` events the window moves in hops
  (:meth:`~seqfraud.features.spec.Spec.window_start`), so it carries one state per multiple of ``hop`` in the
  window (:func:`carried_starts`), stepped together, and the oldest one gives the score: an event costs one
  batched step however long the session. A window of more than :data:`CARRIED_STATES` hops (``hop`` 1 among
  them, every spec before version 5) carries the session's start alone and reads the window again past
  ``max_len``.
- A transformer reads the kept tokens again: recency positions change with every event, so cached keys and
  values of earlier events would not stay valid (O(max_len) per event at most; BENCHMARKS.md measures it).
- An event older than the session's latest one (late delivery) rebuilds the session from its events.
- Entity features (:mod:`seqfraud.features.entities`) are computed at arrival from the store's entity history:
  the events of every other session that shares a value with the new events, and the labels that have
  arrived. That is exactly the batch features' input for those values, so live and batch features agree;
  :func:`~seqfraud.features.entities.point_features` reads the rule at the new events alone.

A repeated event (the same ``data.schema.event_id``) changes nothing; without an id column every event counts.
When the store is unreachable, ``on_store_error="degraded"`` scores the request's events as a session alone
(entity features missing) and flags the answer; ``"fail"`` raises :class:`StoreUnavailable`. Clean records skip
Polars (:func:`~seqfraud.scoring.prepare.record_columns`).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import numpy as np
import polars as pl
import torch

from seqfraud import schema as S
from seqfraud.baselines import AggregateLayout, RunningAggregates
from seqfraud.data.events import (
    LABEL_TIME_UNPARSED,
    UNPARSED,
    DataValidationError,
    label_day_end,
    label_delay_us,
    refuse_integer_ids,
    refuse_rewritten_ids,
    rewritten_id,
    usable_delay_us,
)
from seqfraud.data.split import from_epoch_us
from seqfraud.decisions import assign_bands
from seqfraud.errors import is_int, is_number, json_value
from seqfraud.export.artifact import Step
from seqfraud.features.entities import FIRST_SEEN, EntitySpec, point_features
from seqfraud.features.fastpath import EventColumns, column_sequences, time_delta_ids
from seqfraud.features.spec import GAP_QUANTILES, LONGEST_GAPS, Spec
from seqfraud.features.tokens import Sequences
from seqfraud.schema import Schema
from seqfraud.scoring.history import (
    FORMS,
    UNMET_VALUES,
    History,
    Recurrence,
    formed_said,
    unmet_said,
    value_forms,
)
from seqfraud.scoring.prepare import (
    ONLINE_CHECK_AFTER,
    ONLINE_RESAY_S,
    SPREAD_SESSIONS,
    Unlearnt,
    Unsent,
    as_frame,
    commonest,
    normalized_events,
    record_columns,
    say_once,
    timestamp_us,
)
from seqfraud.scoring.scorer import UNREAD_SCORE, Scorer, intra_op_threads
from seqfraud.scoring.state import (
    EntityRow,
    Label,
    Occasional,
    StateStore,
    StoreCorrupt,
    StoreUnavailable,
    supersedes,
)

log = logging.getLogger(__name__)

ON_STORE_ERROR = ("degraded", "fail")
# Events one open session may take: its state (event ids, and a stacker's events) grows with them, and one
# client's session of 188k events made each of its requests take seconds (review 103).
MAX_SESSION_EVENTS = 20_000
# 2: the columns a stacker reads; 3: the event keys outside the header; 4: records keyed, in time order, bounded;
# 5: the model version that scored it (a version-4 state is read as one of an unknown model, so rebuilt);
# 6: a stacker's running aggregates instead of its columns. 7: the hidden state is one per window start,
# [layers, starts, width] (an older one, the session start's, is not read: the next event reads the window).
STATE_VERSION = 7
_READABLE_VERSIONS = (4, 5, 6, STATE_VERSION)
# A GRU carries a state per window start where a window holds at most this many (max_len / hop): a step of 1, 8,
# 16 and 32 states together took 103, 132, 146 and 171 us (BENCHMARKS.md); a spec of hop 1 would need 256.
CARRIED_STATES = 16
# Formats whose events are read and nothing else: the state is rebuilt from them at its next event, as another
# model's is. An upgrade over a Redis of version-3 states answered every open session degraded, from its new
# event alone, and most of them `decline` (dogfood 37). A version 4 or 5 state that holds a stacker's columns is
# read so too: its aggregates are computed from its events.
_EVENTS_ONLY_VERSIONS = (3,)
_COLUMNS_VERSIONS = (4, 5)


def _json_time(value: Any) -> str:
    """A datetime in a record (in process: ``Scorer.score`` takes them) as the RFC 3339 text a rebuild reads back
    to the same time (naive means UTC on both sides)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One encoder for every line: json.dumps makes one a call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), default=_json_time)


@dataclass
class SessionState:
    """An open session: its events as sent (for a rebuild), their kept tokens, the carried GRU state, a stacker's
    running aggregates, and the latest score, with the model version that gave it."""

    session_id: str
    # The model that computed the tokens, hidden state and score. Replicas of two models share one Redis during a
    # rolling deploy: another model's tokens (its vocabulary, its buckets) and hidden state are not this model's,
    # even where the shapes agree, so such a state is read as its events alone and rebuilt (:meth:`decode`).
    model_version: str = ""
    # The ids of the events taken (with data.schema.event_id), each a JSON string between newlines: whether an
    # event was seen is one substring search, not a set built from a list at every event.
    keys: bytes = b""
    # The events taken, as sent, in time order (ties as they came): a line each, its key's JSON, a tab, its JSON
    # object. Without a stacker only the latest max_len + 1 are kept (what a rebuild reads: the kept events and
    # the one before them, for the first one's time delta), so an event's cost stops growing with the session.
    records: bytes = b""
    tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))  # the kept events'
    n_events: int = 0
    last_ts_us: int | None = None
    # [layers, starts, width], one per carried_starts; None: not carried (no step, a rebuild, or read again)
    hidden: np.ndarray | None = None
    # A stacker's aggregates of every event taken (None without a stacker, or still to compute from the events).
    aggregates: RunningAggregates | None = None
    score: float = float("nan")
    raw_score: float = float("nan")
    band: str = ""
    updated_at: float = 0.0

    def seen(self, entries: list[bytes]) -> list[bool]:
        """Whether each event key (:func:`key_entry`) was taken: a resend changes nothing. One key is a substring
        search; more, a set of the taken keys, made once (a search per key made a request of m events cost m
        passes over every id the session took: review 103)."""
        if len(entries) == 1:
            return [entries[0] in self.keys]
        taken = set(self.keys.split(b"\n"))
        return [e[1:-1] in taken for e in entries]

    def taken_as(self, entries: list[bytes]) -> list[dict[str, Any] | None]:
        """The events taken under seen keys, as they were sent; None where one is no longer kept. The held records
        are split once for them all, as :meth:`seen` does (a search per key over a stacker's 20,000 records took
        5.6 s for a resend of 4,096 events: review 107)."""
        held = dict(line.split(b"\t", 1) for line in self.records.split(b"\n")) if self.records else {}
        return [None if (line := held.get(e[1:-1])) is None else json_value(line) for e in entries]

    def add_keys(self, entries: list[bytes]) -> None:
        """Record event ids as :func:`key_entry` gives them."""
        if entries:
            self.keys = (self.keys or b"\n") + b"".join(e[1:] for e in entries)

    def record_list(self) -> list[dict[str, Any]]:
        """The kept events as they were sent, in time order: what a rebuild scores."""
        return (
            [json_value(line.split(b"\t", 1)[1]) for line in self.records.split(b"\n")]
            if self.records
            else []
        )

    def encode(self) -> bytes:
        """``[header length][JSON header][tokens][hidden][aggregates][keys][records]``: plain bytes, read back by
        :meth:`decode` without unpickling anything (raw little-endian arrays of the shapes the header gives, the
        aggregates' values outside the vocabularies as one JSON list, the keys as they are held, then the records
        as JSON lines, parsed only for a rebuild). The header stays small: nothing in it grows with the
        session."""
        meta = {k: getattr(self, k) for k in ("session_id", "model_version", "n_events", "last_ts_us")}
        meta |= {k: getattr(self, k) for k in ("score", "raw_score", "band", "updated_at")}
        aggregates, aggregates_meta = b"", None
        if self.aggregates is not None:
            aggregates, aggregates_meta = _encode_aggregates(self.aggregates)
        meta |= {
            "version": STATE_VERSION,
            "tokens": list(self.tokens.shape),
            "hidden": None if self.hidden is None else list(self.hidden.shape),
            "aggregates": aggregates_meta,
            "keys": len(self.keys),
            "records": len(self.records),
        }
        header = json.dumps(meta).encode()
        hidden = b"" if self.hidden is None else self.hidden.astype("<f4", copy=False).tobytes()
        parts = (self.tokens.astype("<i8", copy=False).tobytes(), hidden, aggregates, self.keys, self.records)
        return b"".join((len(header).to_bytes(4, "little"), header, *parts))

    @classmethod
    def decode(
        cls,
        data: bytes,
        n_fields: int,
        hidden_shape: tuple[int, int] | None,
        model_version: str,
        session_id: str,
        layout: AggregateLayout | None = None,
        check: bool = True,
    ) -> SessionState:
        """A state of :meth:`encode`, read under the key of ``session_id``. One that ``model_version`` scored is
        checked against the artifact's shapes and its stacker's ``layout``, and unless ``check`` is false, its
        values against what a GRU and the aggregates can hold (a damaged one is refused rather than scored); one
        of another model keeps its events, score and ``model_version`` but none of that model's
        tokens, hidden state or aggregates: :meth:`stale`. One of another session is refused: a state copied
        under another key (in Redis, or in a snapshot file) answered for that session with the other one's events
        (dogfood 43)."""
        try:
            size = int.from_bytes(data[:4], "little")
            meta = json_value(data[4 : 4 + size])
            if meta["session_id"] != session_id:
                raise ValueError(
                    f"it is the state of session {meta['session_id']!r}, kept under another's key"
                )
            _check_header(meta)
            version = meta.pop("version")
            if version in _EVENTS_ONLY_VERSIONS:
                return cls._events_only(data, meta, n_fields)
            if version not in _READABLE_VERSIONS:
                raise ValueError(
                    f"a state of another seqfraud version (format {version!r}; this one reads "
                    f"{[*_EVENTS_ONLY_VERSIONS, *_READABLE_VERSIONS]})"
                )
            tokens_shape, hidden_at, keys_size, records_size = (
                meta.pop("tokens"),
                meta.pop("hidden"),
                meta.pop("keys"),
                meta.pop("records"),
            )
            columns_meta = meta.pop("columns") if version in _COLUMNS_VERSIONS else None
            aggregates_meta = meta.pop("aggregates") if version >= 6 else None
            start = 4 + size
            end = start + 8 * tokens_shape[0] * tokens_shape[1]
            tokens = np.frombuffer(data[start:end], dtype="<i8").reshape(tokens_shape).astype(np.int64)
            hidden = None
            if hidden_at is not None:
                start, end = end, end + 4 * math.prod(hidden_at)
                # Format 6 and before carried the session's start alone: its next event reads the window again.
                if version == STATE_VERSION:
                    hidden = np.frombuffer(data[start:end], dtype="<f4").reshape(hidden_at).astype(np.float32)
            totals = None
            if aggregates_meta is not None:
                totals, end = _decode_aggregates(data, end, aggregates_meta)
            elif columns_meta is not None:  # skipped: its aggregates are computed from its events (_advance)
                end += int(columns_meta["n"]) * (16 + 9 * len(columns_meta["numeric"])) + int(
                    columns_meta["text"]
                )
            if len(data) != end + keys_size + records_size:
                raise ValueError(f"{len(data)} bytes where the header gives {end + keys_size + records_size}")
            keys, records = bytes(data[end : end + keys_size]), bytes(data[end + keys_size :])
            state = cls(tokens=tokens, hidden=hidden, keys=keys, records=records, **meta)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ValueError(f"unreadable session state: {e}") from e
        if state.stale(model_version):
            state.tokens, state.hidden = np.zeros((0, n_fields), dtype=np.int64), None
            return state
        if tokens.shape[1] != n_fields and len(tokens):
            raise ValueError(f"session {state.session_id!r}: its state holds tokens of another model")
        if hidden is not None and (
            hidden_shape is None or hidden.ndim != 3 or (hidden.shape[0], hidden.shape[2]) != hidden_shape
        ):
            raise ValueError(f"session {state.session_id!r}: its state holds a hidden state of another model")
        # A GRU's state mixes tanh outputs, from zeros: one outside [-1, 1] scored on, silently wrong
        # (dogfood 84).
        if check and hidden is not None and not (np.abs(hidden) <= 1 + 1e-6).all():
            raise ValueError(
                f"session {state.session_id!r}: its hidden state holds values a GRU cannot reach"
            )
        if totals is not None:
            try:
                if layout is None:
                    raise ValueError("this model has no stacker")
                state.aggregates = RunningAggregates(layout, *totals)
            except ValueError as e:
                raise ValueError(
                    f"session {state.session_id!r}: its state holds aggregates of another model"
                ) from e
        if check and state.aggregates is not None:
            try:
                state.aggregates.check()
                # The events held: all of them, unless a model without a stacker held the session before.
                held = state.records.count(b"\n") + 1 if state.records else 0
                if state.aggregates.counts[0] != held or state.aggregates.counts[2] != state.last_ts_us:
                    raise ValueError("they count other events than the state holds")
            except ValueError as e:
                raise ValueError(f"session {state.session_id!r}: its aggregates are damaged: {e}") from None
        return state

    @classmethod
    def _events_only(cls, data: bytes, meta: dict[str, Any], n_fields: int) -> SessionState:
        """A version-3 state as its events alone (:data:`_EVENTS_ONLY_VERSIONS`): its keys and records end the
        bytes as today, the records one JSON object a line, in arrival order and without keys. Each record gets a
        key of its own (its events' ids are in ``keys``, so resends still change nothing); the rebuild puts them
        in time order."""
        keys_size, records_size = int(meta["keys"]), int(meta["records"])
        if keys_size < 0 or records_size < 0 or keys_size + records_size > len(data):
            raise ValueError(f"{len(data)} bytes, fewer than the keys and records the header gives")
        records = bytes(data[len(data) - records_size :])
        lines = records.split(b"\n") if records else []
        for line in lines:
            if not isinstance(json_value(line), dict):
                raise TypeError("a record that is not a JSON object")
        keyed = b"\n".join(json.dumps(f"earlier:{i}").encode() + b"\t" + line for i, line in enumerate(lines))
        return cls(
            session_id=str(meta["session_id"]),
            keys=bytes(data[len(data) - records_size - keys_size : len(data) - records_size]),
            records=keyed,
            tokens=np.zeros((0, n_fields), dtype=np.int64),
            n_events=int(meta["n_events"]),
            last_ts_us=meta["last_ts_us"],
            score=float(meta["score"]),
            raw_score=float(meta["raw_score"]),
            band=str(meta["band"]),
            updated_at=float(meta["updated_at"]),
        )

    def stale(self, model_version: str) -> bool:
        """Scored by another model: its next event rebuilds it from its events, as a late event does."""
        return self.model_version != model_version

    def public(self) -> dict[str, Any]:
        """What ``GET /sessions/{id}`` shows."""
        return {
            S.SESSION_ID: self.session_id,
            S.SCORE: None if math.isnan(self.score) else self.score,
            S.BAND: self.band,
            S.RAW_SCORE: None if math.isnan(self.raw_score) else self.raw_score,
            "n_events": self.n_events,
            "updated_at": self.updated_at,
            "model_version": self.model_version,
        }


def _encode_aggregates(aggregates: RunningAggregates) -> tuple[bytes, dict[str, Any]]:
    """A stacker's running aggregates as raw arrays (counts, totals, gaps) and one JSON list of the values seen
    outside each vocabulary; the header part says their sizes."""
    text = json.dumps(aggregates.unknown).encode()
    meta = {"counts": len(aggregates.counts), "totals": len(aggregates.totals), "gaps": len(aggregates.gaps)}
    arrays = aggregates.counts.astype("<i8").tobytes() + aggregates.totals.astype("<f8").tobytes()
    return arrays + aggregates.gaps.astype("<f8").tobytes() + text, meta | {"text": len(text)}


class StateReader:
    """Reads stored states for one model (``spec``, its step's ``hidden_shape``, ``model_version``, its stacker's
    ``layout`` or None), as the service reads them at start (a snapshot's) and at each event."""

    def __init__(
        self,
        spec: Spec,
        hidden_shape: tuple[int, int] | None,
        model_version: str,
        layout: AggregateLayout | None,
    ):
        self.spec, self.hidden_shape, self.layout = spec, hidden_shape, layout
        self.model_version = model_version
        self.sizes = np.array([spec.vocab_size(f) for f in spec.fields], dtype=np.int64)

    def read(self, session_id: str, data: bytes, check: bool = True) -> SessionState:
        """What :meth:`SessionState.decode` checks, then (unless ``check`` is false: a state this process encoded,
        :meth:`StateStore.trusts`) the state's parts against each other: token ids within the model's
        vocabularies (ids past one failed the embedding at every event, dogfood 44); the events held against the
        count (a count that disagreed answered wrong lengths); the tokens against the events held; each held
        event's id among the ids taken, and no more ids than events (a listed id dropped that event when it came,
        an emptied list took a resend twice: both scored on, silently wrong, review 90)."""
        state = SessionState.decode(
            data, len(self.sizes), self.hidden_shape, self.model_version, session_id, self.layout, check
        )
        if not check:
            return state
        tokens = state.tokens
        if len(tokens) and not ((tokens >= 0) & (tokens < self.sizes)).all():
            raise ValueError(
                f"session {session_id!r}: its state holds tokens outside this model's vocabularies"
            )
        lines = state.records.split(b"\n") if state.records else []
        held, n, own = len(lines), state.n_events, not state.stale(self.model_version)
        # A model without a stacker keeps its latest max_len + 1 events; another model's (any max_len, review 96),
        # or a stacker's that took over such a session, may hold fewer than all.
        if (
            held > n
            or (n and not held)
            or (own and self.layout is None and held != min(n, self.spec.max_len + 1))
        ):
            raise ValueError(f"session {session_id!r}: its state holds {held} events of {n}")
        if own and len(tokens) != min(held, self.spec.max_len):
            raise ValueError(f"session {session_id!r}: its state holds tokens of {len(tokens)} events")
        if own and state.hidden is not None and state.hidden.shape[1] != len(carried_starts(self.spec, n)):
            raise ValueError(f"session {session_id!r}: its state holds {state.hidden.shape[1]} hidden states")
        taken = set(state.keys.split(b"\n")) - {b""}
        if len(taken) > n:
            raise ValueError(f"session {session_id!r}: its state lists {len(taken)} events taken of {n}")
        keys = [line.partition(b"\t")[0] for line in lines]
        if len(set(keys)) != held:  # one event held twice (review 96)
            raise ValueError(f"session {session_id!r}: its state holds an event twice")
        for key, line in zip(keys, lines):
            if not (
                len(key) < len(line) and key[:1] == b'"' and (key in taken or not key.startswith(b'"id:'))
            ):
                raise ValueError(
                    f"session {session_id!r}: its state holds an event whose id is not among those taken"
                )
        return state


def carried_starts(spec: Spec, n_events: int) -> range:
    """The window starts that a GRU carries a state of after a session's ``n_events``: every multiple of ``hop``
    from the window's start on, each of which may become the start (the window's own gives the score); with more
    than :data:`CARRIED_STATES` of them, the session's start alone, and none past ``max_len`` (read again)."""
    if _carries(spec):
        return range(spec.window_start(n_events), n_events, spec.hop)
    return range(1 if n_events <= spec.max_len else 0)


def _carries(spec: Spec) -> bool:
    """Whether a window holds few enough hops (:data:`CARRIED_STATES`) for a GRU to carry a state per start."""
    return spec.max_len <= CARRIED_STATES * spec.hop


def uncarried_note(spec: Spec) -> str | None:
    """What a GRU's online events cost past ``max_len`` where its window holds too many hops to carry, or None: a
    hop chosen for accuracy bought the slow path unsaid (dogfood 101)."""
    if _carries(spec):
        return None
    return (
        f"features.hop={spec.hop} with features.max_len={spec.max_len}: a window of more than {CARRIED_STATES} "
        "hops, too many for the online state to carry, so past max_len each event of a session reads its window "
        f"again (6.4 against 1.1 ms at max_len 256, BENCHMARKS.md); a hop of at least "
        f"{-(-spec.max_len // CARRIED_STATES)} carries them"
    )


def _check_header(meta: dict[str, Any]) -> None:
    """A state header's values of the types and ranges :meth:`SessionState.encode` writes: a NaN score made
    ``GET /sessions`` a 500, and a count written as text made ``/events`` one (dogfood 44)."""
    if not (is_int(meta["n_events"]) and meta["n_events"] >= 0):
        raise ValueError(f"n_events {meta['n_events']!r} is not a count")
    if not (meta["last_ts_us"] is None or is_int(meta["last_ts_us"])):
        raise ValueError(f"last_ts_us {meta['last_ts_us']!r} is not an integer time")
    for key in ("score", "raw_score"):  # NaN: not scored yet (public() shows null)
        if not (is_number(x := meta[key]) and (math.isnan(x) or 0 <= x <= 1)):
            raise ValueError(f"{key} {x!r} is not a probability")
    if not (
        isinstance(meta["band"], str) and is_number(meta["updated_at"]) and math.isfinite(meta["updated_at"])
    ):
        raise ValueError("its band or update time is of the wrong type")


def _decode_aggregates(
    data: bytes, at: int, meta: dict[str, Any]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]], int]:
    """The parts of :func:`_encode_aggregates` that start at byte ``at`` (what :class:`RunningAggregates` is
    built from, once the state is known to be this model's), and the byte after them."""

    def take(size: Any, dtype: str) -> np.ndarray:
        nonlocal at
        if not (is_int(size) and size >= 0 and at + size * np.dtype(dtype).itemsize <= len(data)):
            raise ValueError("the state's aggregates run past its end")
        out = np.frombuffer(data, dtype=dtype, count=size, offset=at)
        at += out.nbytes
        return out

    counts, totals = (
        take(meta["counts"], "<i8").astype(np.int64),
        take(meta["totals"], "<f8").astype(np.float64),
    )
    gaps = take(meta["gaps"], "<f8").astype(np.float64)
    text = bytes(take(meta["text"], "u1"))
    unknown = json_value(text)
    if not (
        isinstance(unknown, list)
        and all(isinstance(u, list) and all(isinstance(v, str) for v in u) for u in unknown)
    ):
        raise ValueError("the state's values outside the vocabularies are not lists of text")
    return (counts, totals, gaps, unknown), at


def key_entry(key: str) -> bytes:
    """An event key as :attr:`SessionState.keys` holds it: JSON (no raw newline) between newlines."""
    return b"\n" + json.dumps(key).encode() + b"\n"


def event_key(record: Mapping[str, Any], event_id: str | None, arrival: str) -> str:
    """The event's id where the log has one (``data.schema.event_id``): a resent event is the same key. Without
    one, two events with equal fields may both be real (a double click logged to the second), so every event
    counts: ``arrival`` makes its key unique."""
    if event_id is not None and record.get(event_id) is not None:
        return f"id:{record[event_id]}"
    return f"new:{arrival}"


# The subject of what the window checks say of the events a service took (a request's name read as one request's).
ONLINE_EVENTS = "online events"


@dataclass
class _Judged:
    """An entity column's online values counted since its last judgement: how many, of which sessions, how many met
    the seeded history (and one that did not, and the sessions of those that did not), and per rule of
    :data:`~seqfraud.scoring.history.FORMS` how many had a form none of the history's has (and one such form, and
    their sessions)."""

    values: int = 0
    sessions: set[str] = field(default_factory=set)
    met: int = 0
    unmet: str | None = None
    unmet_sessions: set[str] = field(default_factory=set)
    new: list[int] = field(default_factory=lambda: [0] * len(FORMS))
    new_sessions: list[set[str]] = field(default_factory=lambda: [set() for _ in FORMS])
    # The new forms by rule, counted: a window is named by its commonest, as batch scoring names a file's.
    examples: list[Counter[str]] = field(default_factory=lambda: [Counter() for _ in FORMS])


# The sessions a finding of the online entity checks comes from at least (:class:`Unmet`): one session of 150
# events from an IPv6 address read as 21.7% of a window's IPs written otherwise (review 267), where three long
# sessions of a reformatted channel are one (review 268).
UNMET_CARRIERS = 3


class Unmet:
    """Per entity column, the values of the events taken online that meet the seeded history (that another
    session's event showed by the history's latest time, as their first-seen feature says), and their forms,
    judged every :data:`~seqfraud.scoring.prepare.ONLINE_CHECK_AFTER` values, or sooner once they come from
    :data:`~seqfraud.scoring.prepare.SPREAD_SESSIONS` sessions (:data:`~seqfraud.scoring.history.UNMET_VALUES`
    values at least: a bank account sent on 7% of the events waited 14,000 events, dogfood 264), each session's
    findings from :data:`UNMET_CARRIERS` sessions or more, by batch scoring's rules
    (:func:`~seqfraud.scoring.history.unmet_said`, :func:`~seqfraud.scoring.history.formed_said`) against the
    :class:`~seqfraud.scoring.history.Recurrence` of the history the service was seeded with: values written
    otherwise upstream read as never seen, said by ``score`` and unsaid by ``/events`` (dogfood 258: 400 sessions
    of devices and IPs new to the history; dogfood 261: a port after one channel's IPs, scores up to 0.71 off)."""

    def __init__(self, recurring: Mapping[str, Recurrence]):
        self.recurring = dict(recurring)
        self._first_seen = {c: S.entity_feature(c, FIRST_SEEN) for c in self.recurring}
        self._lock = threading.Lock()
        self._counts = {c: _Judged() for c in self.recurring}
        self._said: dict[tuple[str, str], float] = {}

    def take(self, events: EventColumns) -> None:
        """Count ``events`` (a session's new events, with their entity features)."""
        if not self.recurring:
            return
        lines, times = [], events.ts_us.tolist()
        with self._lock:
            for c, recurring in self.recurring.items():
                since, never = events.numeric[self._first_seen[c]]
                # First seen by the history's end: a millisecond's slack for the seconds' float rounding. In Python:
                # numpy's calls cost 8 us a column on a request of one event.
                latest = recurring.last_us + 1_000
                judged = self._counts[c]
                for v, t, s, new, sid in zip(
                    events.entities[c], times, since.tolist(), never.tolist(), events.session_ids
                ):
                    if v is None:
                        continue
                    judged.values += 1
                    judged.sessions.add(sid)
                    if not new and t - s * 1e6 <= latest:
                        judged.met += 1
                    else:
                        judged.unmet_sessions.add(sid)
                        if judged.unmet is None:
                            judged.unmet = v
                    for k, (form, known) in enumerate(zip(value_forms(v), recurring.forms)):
                        if form not in known.known:
                            judged.new[k] += 1
                            judged.examples[k][form] += 1
                            judged.new_sessions[k].add(sid)
                if judged.values < ONLINE_CHECK_AFTER and (
                    judged.values < UNMET_VALUES or len(judged.sessions) < SPREAD_SESSIONS
                ):
                    continue
                self._counts[c] = _Judged()
                n, now = judged.values, time.monotonic()
                examples = [commonest(e, 1)[0] if e else None for e in judged.examples]
                # Of UNMET_CARRIERS sessions or more (one long session is no column written otherwise).
                formed = [
                    k if len(of) >= UNMET_CARRIERS else 0 for k, of in zip(judged.new, judged.new_sessions)
                ]
                met = judged.met if len(judged.unmet_sessions) >= UNMET_CARRIERS else n
                # Each rule said again apart: the values' unmet share does not hold back their forms (review 262).
                for rule, said in (
                    ("unmet", unmet_said(c, met / n, n, recurring, judged.unmet)),
                    ("forms", formed_said(c, n, recurring, formed, examples)),
                ):
                    if said and now - self._said.get((c, rule), -math.inf) >= ONLINE_RESAY_S:
                        self._said[(c, rule)] = now
                        lines.append(f"{ONLINE_EVENTS}: {said} (the latest {n:,} values online)")
                        break
        for line in lines:
            log.warning("%s", line)


class OnlineScorer:
    """:class:`Scorer` plus a :class:`StateStore`: events in, each touched session's updated score out."""

    def __init__(
        self,
        scorer: Scorer,
        store: StateStore,
        *,
        on_store_error: str = "degraded",
        seeded: bool = False,
        max_session_events: int = MAX_SESSION_EVENTS,
        recurring: Mapping[str, Recurrence] | None = None,
    ):
        if on_store_error not in ON_STORE_ERROR:
            raise ValueError(f"on_store_error must be one of {ON_STORE_ERROR}, got {on_store_error!r}")
        self.scorer, self.store, self.spec = scorer, store, scorer.spec
        step = scorer.step
        self.step: Step | None = step[0] if step is not None else None
        self.hidden_shape: tuple[int, int] | None = step[1] if step is not None else None
        self.on_store_error = on_store_error
        if max_session_events < 1:
            raise ValueError(f"max_session_events must be at least 1, got {max_session_events}")
        self.max_session_events = max_session_events
        # A store seeded with a history (serve --history-events) that an entity model reads: without it (a Redis
        # restarted empty, until the service seeds it again) the entity features would read an empty history.
        self.needs_seed = seeded and self.spec.entity is not None
        # Their events are not confirmed stored (a write whose reply timed out, or a request's runs before the
        # failure, may be): a session answered degraded counts them once they are sent again, or already.
        self._degraded = Occasional(
            log,
            "degraded answers (each request's events scored as a session alone, and not confirmed stored: send "
            "them again once the store answers; event ids make that safe)",
        )
        # A session a model without a stacker held (its latest max_len + 1 events, during a deploy of this one).
        self._partial = Occasional(
            log, "sessions whose stacker aggregates read only the events their state held"
        )
        # Answered restarted: expired ones most often mean a --session-ttl below the gaps of the sessions.
        self._restarts = Occasional(
            log,
            "sessions scored on their later events alone, the store having dropped their state (for room, or idle "
            "past --session-ttl: set it above the gaps between the events of your sessions)",
        )
        self._delta_field = self.spec.fields.index(S.TIME_DELTA)
        # A state's tokens are its latest max_len events', of which every window is a suffix (a rebuild's too).
        self._latest = replace(self.spec, hop=1)
        layout = None if scorer.stacker is None else scorer.stacker.layout
        self._reader = StateReader(self.spec, self.hidden_shape, scorer.model_version, layout)
        self._arrivals = itertools.count()
        self._unsent = Unsent(self.spec)
        self._unlearnt = Unlearnt(self.spec, scorer.manifest)
        self._unmet = Unmet(recurring or {})
        # Training's session openers, built once, not per request.
        self._openers = self.spec.opening_shares or {}
        store.check_restored(self._reader.read, scorer.model_version, len(self.spec.schema.entities))

    def events(self, records: list[dict[str, Any]], *, source: str = "request") -> list[dict[str, Any]]:
        """Take events of one or more open sessions; per touched session (in order of first appearance) its
        ``session_id, score, band, n_events, degraded, repeated, conflicting, restarted, shorter_than_training,
        longer_than_training, model_version`` (the model that gave that score)
        (``repeated``: this request's events whose id the session had already taken, which change nothing;
        ``conflicting``: those of them whose fields differ from the event taken under that id, which is kept;
        ``restarted``: the store had dropped the session's state (for room, or idle past its TTL), so it starts
        anew here;
        ``shorter_than_training``: the session has fewer events than 99% of the training sessions, so its score
        reads a kind of session the model hardly saw; ``longer_than_training``: it has more events than 99% of
        them). Every event is validated before any state changes, and one id twice in a session of the request is
        refused, as batch scoring refuses it."""
        schema = self.spec.schema
        arrival = f"{time.time_ns()}-{next(self._arrivals)}"
        keys = [event_key(r, schema.event_id, f"{arrival}-{i}") for i, r in enumerate(records)]
        if schema.event_id:
            ids = [r.get(schema.event_id) for r in records]
            refuse_misread_ids(ids, schema.event_id, schema.event_id, self.spec, source)
            records = [{k: v for k, v in r.items() if k != schema.event_id} for r in records]
        # Clean records skip Polars (its planning alone costs a millisecond); the full path names what is wrong.
        events = record_columns(records, self.spec, source)
        if events is None:
            frame = normalized_events(as_frame(records, self.spec, source).lazy(), self.spec, source)
            events = EventColumns.of_frame(frame, self.spec)
        try:
            lines = [_COMPACT.encode(r).encode() for r in records]
        except (TypeError, ValueError) as e:
            raise DataValidationError(f"{source}: online events must hold JSON values only: {e}") from None
        sids = events.session_ids
        if schema.event_id:
            _refuse_repeats(sids, keys, schema.event_id, source)
        elif self.spec.entity is not None:  # whichever replica seeded the store, if any did (review 205)
            self._refuse_history_sessions(sids, source)
        # What the window checks say spans many requests: said of the online events, not of this one (dogfood 259).
        self._unsent.take(records, ONLINE_EVENTS)
        # The last result of each session, in order of first appearance.
        results: dict[str, dict[str, Any]] = {}
        try:
            lost = self.needs_seed and not self.store.holds_seed()
        except StoreUnavailable:
            lost = False  # each session's update below meets the same outage and answers for it
        failed: set[str] = set()
        taken_here: dict[str, tuple[int, list[int]]] = {}  # per session, the events taken and its rows
        fresh: list[int] = []  # the rows of events taken here (a failed session's none: judged once resent)
        try:
            for sid, rows in segments(sids, self.spec.entity is not None):
                # Its answer is degraded, from all its events: a later run stored past a gap and was answered
                # healthy, hiding the events to resend (review 130).
                if sid in failed:
                    continue
                try:
                    if lost:
                        lost_seed = "the store lost the history seeded at start; the service seeds it again"
                        raise StoreUnavailable(lost_seed, public=lost_seed)
                    state, taken, conflicting, restarted = self._take(
                        sid,
                        [keys[i] for i in rows],
                        [records[i] for i in rows],
                        [lines[i] for i in rows],
                        _rows(events, rows),
                    )
                except StoreUnavailable as e:
                    if self.on_store_error == "fail":
                        raise
                    self._degraded.note(e)
                    mine = [records[i] for i, other in enumerate(sids) if other == sid]
                    results[sid] = self._alone(sid, mine, source)
                    failed.add(sid)
                    continue
                if restarted:
                    self._restarts.note(f"session {sid!r}")
                fresh += [rows[i] for i in taken]
                before, held = taken_here.get(sid, (0, []))
                taken_here[sid] = (before + len(taken), held + rows)
                earlier = results.get(sid, {})
                repeated = len(rows) - len(taken) + earlier.get("repeated", 0)
                conflicting += earlier.get("conflicting", 0)
                results[sid] = {
                    S.SESSION_ID: sid,
                    S.SCORE: state.score,
                    S.BAND: state.band,
                    "n_events": state.n_events,
                    "degraded": False,
                    "repeated": repeated,
                    "conflicting": conflicting,
                    "restarted": restarted or earlier.get("restarted", False),
                    **length_flags(self.spec, state.n_events),
                    # Whose score this is: a request of repeats only (a retry) leaves another model's state as it is.
                    "model_version": state.model_version,
                }
        finally:
            # Events judged once, as taken, also where a later session of the request fails (review 260): a retried
            # request's ties counted again, and a resend of an event with other fields read as tied with it (review
            # 256).
            if fresh:
                self._unlearnt.take(
                    events if len(fresh) == len(events) else events.take(sorted(fresh)), ONLINE_EVENTS
                )
        # The sessions this request began: all their events taken here, none read before a restart.
        if began := [
            taken_here[sid][1]
            for sid, r in results.items()
            if sid not in failed and not r["restarted"] and r["n_events"] == taken_here[sid][0]
        ]:
            kinds = cast(list[str], events.categorical[schema.event_type])  # never null
            self._unlearnt.opened(
                (opening_type(events.ts_us, kinds, rows, self._openers) for rows in began), ONLINE_EVENTS
            )
        if self.spec.one_event_sessions and (joined := [r for r in results.values() if r["n_events"] > 1]):
            say_once(
                "one_event",
                source,
                f"{source}: session {joined[0][S.SESSION_ID]!r} holds {joined[0]['n_events']} events, where 99% of "
                "the model's training sessions had one: if each event is its own transaction, its id repeats an "
                "earlier one's, and the two are scored as one session",
            )
        return list(results.values())

    def _refuse_history_sessions(self, sids: Sequence[str], source: str) -> None:
        """Refuse events of sessions the seeded history holds, where no event id tells their events apart: those
        events count already in the other sessions' entity features, and would count twice (dogfood 201: 516 of
        1,000 sessions scored off batch, by up to 0.190), as batch scoring refuses a history holding the scored
        sessions."""
        try:
            held = self.store.history_sessions(set(sids))
        except StoreUnavailable:
            return  # each session's update meets the same outage and answers for it
        if held:
            raise DataValidationError(
                f"{source}: {len(held):,} session(s) of the history the service was seeded with (--history-events), "
                f"e.g. {min(held)!r}: their events there count already in the other sessions' entity features, and "
                "sent again they would count twice, since the log has no event id (data.schema.event_id) to know "
                "them by. Seed the service with earlier sessions only, as seqfraud score refuses a history that "
                "holds the sessions it scores, or give the log an event id"
            )

    def labels(self, labels: list[Label], *, source: str = "request") -> int:
        """Store confirmed labels; one whose time is before its session's first known event is refused, as
        training refuses it. A session not seen yet, or expired from the history, cannot be checked: returns
        how many labels are such (:func:`live_features` ignores one whose time turns out to be too early)."""
        starts: dict[str, int] = {}
        for row in self.store.entity_rows(sorted({lb.session_id for lb in labels})):
            starts[row.session_id] = min(starts.get(row.session_id, row.ts_us), row.ts_us)
        early = [
            lb.session_id
            for lb in labels
            if lb.label_time_us is not None and lb.label_time_us < starts.get(lb.session_id, lb.label_time_us)
        ]
        if early:
            time_key = label_keys(self.spec.schema)[2]
            raise DataValidationError(
                f"{source}: {time_key!r}: {len(early):,} label(s) have a label time before the first event of "
                f"their session, e.g. session {min(early)!r}"
            )
        self.store.add_labels(labels)
        return sum(lb.session_id not in starts for lb in labels)

    def close(self) -> None:
        """Log what the occasional warnings counted since their last line (at shutdown), and close the store."""
        for said in (self._degraded, self._partial, self._restarts):
            said.flush()
        self.store.close()

    def session(self, session_id: str) -> SessionState | None:
        """An open session's state as the store holds it (``GET /sessions/{id}``); None once expired or unseen."""
        data = self.store.get(session_id)
        return None if data is None else self._decode(session_id, data)

    def _decode(self, session_id: str, data: bytes) -> SessionState:
        with _stored(session_id):
            return self._reader.read(session_id, data, check=not self.store.trusts(self.scorer.model_version))

    def _take(
        self,
        sid: str,
        keys: list[str],
        records: list[dict[str, Any]],
        lines: list[bytes],
        events: EventColumns,
    ) -> tuple[SessionState, list[int], int, bool]:
        """Apply a session's new events to its state and record them in the entity history, in one write;
        returns the state, which of the events were new, how many repeated an id with other fields, and whether
        the store had dropped the session's state (:meth:`StateStore.dropped`): it starts anew."""
        entries = [key_entry(k) for k in keys] if self.spec.schema.event_id is not None else None
        taken: list[int] = []
        conflicts: list[str] = []
        latest: list[SessionState] = []
        restarted: list[bool] = []
        advanced: list[EventColumns] = []

        def change(data: bytes | None) -> bytes | None:
            # Judged on the attempt that writes: a retry that finds another replica's state is no restart (review
            # 223: its held key read as a drop), and its events are counted once.
            restarted[:] = [data is None and self.store.dropped(sid)]
            advanced.clear()
            state = SessionState(sid, self.scorer.model_version) if data is None else self._decode(sid, data)
            latest[:] = [state]
            new = list(range(len(keys)))  # without ids every event is new
            if entries is not None:
                fresh: dict[bytes, int] = {}
                seen = state.seen(entries)
                again = [i for i, s in enumerate(seen) if s]
                with _stored(sid):
                    firsts = state.taken_as([entries[i] for i in again]) if again else []
                conflicts[:] = [
                    keys[i]
                    for i, first in zip(again, firsts)
                    if first is not None and self._text_times([first]) != self._text_times([records[i]])
                ]
                for i, e in enumerate(entries):
                    if not seen[i] and e not in fresh:
                        fresh[e] = i
                new = list(fresh.values())
                state.add_keys(list(fresh))
            taken[:] = new
            if not new:
                return None
            if state.n_events + len(new) > self.max_session_events:
                raise DataValidationError(
                    f"session {sid!r} holds {state.n_events:,} event(s): {len(new):,} more would pass "
                    f"{self.max_session_events:,}, the most one open session takes (--max-session-events); a "
                    "session that long is more likely a bot or a replay than a visit: start a new session id"
                )
            keyed = [json.dumps(keys[i]).encode() + b"\t" + lines[i] for i in new]
            advanced.append(self._advance(state, [keys[i] for i in new], keyed, _rows(events, new)))
            return state.encode()

        def history() -> list[EntityRow]:
            new = events.take(taken)
            values = zip(*(new.entities[c] for c in cast(EntitySpec, self.spec.entity).columns))
            return [EntityRow(keys[i], sid, ts, row) for i, ts, row in zip(taken, new.ts_us.tolist(), values)]

        self.store.update(sid, change, None if self.spec.entity is None else history)
        # Counted once the store holds them: a store's retry of the change read them twice (review 262).
        for taken_now in advanced:
            self._unmet.take(taken_now)
        state = latest[0]
        if conflicts:
            log.warning(
                "session %r: %d resent event(s) differ from the event first taken under their id, which is kept "
                "(first: %r)",
                sid,
                len(conflicts),
                conflicts[0][3:],
            )
        return state, taken, len(conflicts), any(restarted)

    def _advance(
        self, state: SessionState, keys: list[str], lines: list[bytes], new: EventColumns
    ) -> EventColumns:
        """The state after ``new`` (normalized events of the session not seen before, with their ``keys`` and
        keyed JSON ``lines``); returns ``new`` with their entity features."""
        ts = new.ts_us
        in_order = state.last_ts_us is None or int(ts.min()) >= state.last_ts_us
        by_time = np.lexsort((np.arange(len(lines)), ts)).tolist()
        earlier = state.records  # the events read before these
        state.records = b"\n".join(
            [*([state.records] if state.records else []), *(lines[i] for i in by_time)]
        )
        state.n_events += len(lines)
        stacker = self.scorer.stacker
        # A late event, a state another model scored, or one without the aggregates its stacker reads (an older
        # format's): the session as if scored whole.
        if (
            not in_order
            or len(lines) > self.spec.max_len
            or state.stale(self.scorer.model_version)
            or (stacker is not None and state.aggregates is None and state.n_events > len(lines))
        ):
            columns = self._columns(self._normalized(state), None)
            held = state.records.split(b"\n")
            state.records = b"\n".join(
                held[i] for i in columns.rows[np.lexsort((columns.rows, columns.ts_us))]
            )
            state.tokens, state.hidden = self._tokens(columns).tokens, None
            state.last_ts_us = int(columns.ts_us.max())
            added = state.tokens
            state.aggregates = None if stacker is None else RunningAggregates(stacker.layout).add(columns)
            read = earlier.count(b"\n") + 1 if earlier else 0  # as the rebuild numbers its rows
            judged = columns.take(np.flatnonzero(columns.rows >= read).tolist())
            if stacker is not None and len(columns) < state.n_events:
                self._partial.note(f"session {state.session_id!r}: {len(columns)} of {state.n_events} events")
        else:
            columns = judged = self._columns(new, keys)
            added = self._tokens(columns).tokens
            if state.last_ts_us is not None:
                gap = np.array([(int(ts.min()) - state.last_ts_us) / 1e6])
                added[0, self._delta_field] = time_delta_ids(gap, self.scorer.tables)[0]
            kept = np.concatenate([state.tokens.reshape(-1, added.shape[1]), added])
            state.tokens = kept[-self.spec.max_len :]
            state.last_ts_us = int(ts.max())
            if stacker is not None:
                if state.aggregates is None:
                    state.aggregates = RunningAggregates(stacker.layout)
                state.aggregates.add(columns)
        if stacker is None and state.n_events > self.spec.max_len + 1:  # a stacker's rebuild reads them all
            state.records = b"\n".join(state.records.split(b"\n")[-(self.spec.max_len + 1) :])
        raw = self._predict(state, added)
        if stacker is not None:
            raw = stacker.combine(cast(RunningAggregates, state.aggregates).row()[None], raw)
        score = self.scorer.calibrate(raw)
        state.raw_score, state.score = float(raw[0]), float(score[0])
        state.band = str(assign_bands(score, self.scorer.thresholds)[0])
        state.updated_at, state.model_version = time.time(), self.scorer.model_version
        return judged

    def _predict(self, state: SessionState, added: np.ndarray) -> np.ndarray:
        """The model's probability for the window: a step of the carried states where there are some."""
        n = state.n_events
        if not self.scorer.reads_sequence:  # a stacker that kept the aggregates alone
            state.hidden = None
            return np.full(1, UNREAD_SCORE, np.float32)
        starts = carried_starts(self.spec, n)
        if self.step is None or not starts:
            state.hidden = None
            window = state.tokens[-self.spec.window_length(n) :]
            return self.scorer.predict(Sequences([state.session_id], window, np.array([len(window)])))
        before = n - len(added)  # the events the carried states have read
        layers, width = cast(tuple[int, int], self.hidden_shape)
        if state.hidden is None:  # a rebuilt session: every state from the kept tokens
            before, added = n - len(state.tokens), state.tokens
            held = np.zeros((layers, 0, width), np.float32)
        else:  # the latest ones stay in the window (starts below `before`, oldest first)
            carried = len(range(starts.start, min(before, starts.stop), starts.step))
            held = state.hidden[:, state.hidden.shape[1] - carried :]
        fresh = [b - before for b in starts[held.shape[1] :]]  # the others, at their first added event
        if fresh and fresh[0] == 0:  # one that starts at the first added event reads what the carried ones do
            held, fresh = np.concatenate([held, np.zeros((layers, 1, width), np.float32)], axis=1), fresh[1:]
        jobs = [(0, held)] if held.shape[1] else []
        jobs += [(at, np.zeros((layers, 1, width), np.float32)) for at in fresh]
        probs, hidden = [], []
        with torch.inference_mode(), intra_op_threads(self.scorer.threads):
            for at, h in jobs:  # one call for an event of a session the state has carried
                tokens = torch.from_numpy(added[at:])[None].expand(h.shape[1], -1, -1)
                prob, out = self.step(tokens, torch.from_numpy(np.ascontiguousarray(h)))
                probs.append(prob[:1].numpy())
                hidden.append(out.numpy())
        state.hidden = hidden[0] if len(hidden) == 1 else np.concatenate(hidden, axis=1)
        return probs[0]  # the oldest start's: the window's

    def _normalized(self, state: SessionState) -> EventColumns:
        """The session's held events, read again (a rebuild). They were checked when taken: one that no longer
        reads, or is another session's, is the store's damage, not the request's (a 500 or a 422, review 90)."""
        where = f"session {state.session_id!r}"
        with _stored(state.session_id):
            frame = normalized_events(
                as_frame(self._text_times(state.record_list()), self.spec, where).lazy(), self.spec, where
            )
            columns = EventColumns.of_frame(frame, self.spec)
            if set(columns.session_ids) != {state.session_id}:
                raise ValueError("it holds events of another session")
        return columns

    def _text_times(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Events with each time as RFC 3339 text with its offset. Each request may send integer epochs or text,
        so a session may hold both, which cannot be read again as one column: the late event that rebuilt it was
        lost (dogfood 187). Read so, held events of any release rebuild, and an event resent in the other spelling
        is the same event (review 188)."""
        at = self.spec.schema.timestamp
        out = []
        for r in records:
            us = timestamp_us(r.get(at), self.spec) if isinstance(r, dict) else None  # damage: as_frame says
            out.append(r if us is None else r | {at: from_epoch_us(us)})
        return out

    def _columns(self, events: EventColumns, keys: list[str] | None) -> EventColumns:
        """One session's events with their entity features where the model has any (read from the live history;
        ``keys`` are the events' own, None when they are the whole session)."""
        if self.spec.entity is None:
            return events
        return live_features(self.store, events, keys, self.spec)

    def _tokens(self, events: EventColumns) -> Sequences:
        seqs = column_sequences(events, self._latest, self.scorer.tables)
        self.scorer.note_unseen_nan(seqs.tokens)
        self.scorer.note_unseen_inf(self.scorer.infinite_counts(events))  # np.isinf of the event's values
        self.scorer.note_respelt(events.categorical)
        if len(seqs) != 1:
            raise DataValidationError("online scoring takes the events of one session at a time")
        return seqs

    def _alone(self, sid: str, records: list[dict[str, Any]], source: str) -> dict[str, Any]:
        """A degraded answer: the request's events scored as a session on their own, entity features missing."""
        events = normalized_events(as_frame(records, self.spec, source).lazy(), self.spec, source)
        if self.spec.entity is not None:
            events = events.with_columns(
                pl.lit(None, pl.Float32).alias(c) for c in self.spec.entity.feature_names()
            )
        row = self.scorer.score_normalized(events).row(0, named=True)
        return {S.SESSION_ID: sid, S.SCORE: row[S.SCORE], S.BAND: row[S.BAND], "n_events": len(records)} | {
            "degraded": True,
            "repeated": 0,  # unknown: the session's taken ids are in the store that could not be read
            "restarted": False,
            "conflicting": 0,
            **length_flags(self.spec, len(records)),
            "model_version": self.scorer.model_version,
        }


@contextmanager
def _stored(session_id: str) -> Iterator[None]:
    """A session's stored state that does not read (damaged, another session's, another seqfraud's) as a store
    outage for that session: answered degraded or failed closed, never as an internal error."""
    try:
        yield
    except ValueError as e:
        # Why goes to the log alone: it may quote another session's id or values (a state copied across).
        public = f"the stored state of session {session_id!r} is unreadable"
        raise StoreCorrupt(
            f"{public} ({e})", public=f"{public}; delete it from the store to start the session again"
        ) from None


# The most a drop is kept for (a held key of Redis lives that long past each session's expiry), and the longest
# session TTL the service picks by itself.
DROPS_KEPT_MAX_S = 7 * 86_400.0
# The service's session TTL where the training sessions' gaps ask no longer one.
SESSION_TTL_S = 3600.0


def _past_training_gaps(spec: Spec, least_s: float) -> float:
    """``least_s``, or 99.9% of the training sessions' longest gaps between two events where longer, a week at
    most: the single longest gap of a sample (an id reused a month later) kept every drop a month (review 226)."""
    return min(max(least_s, spec.longest_gap_s(0.999)), DROPS_KEPT_MAX_S)


def drops_kept_s(spec: Spec) -> float:
    """How long past a drop the service's store says that a session restarted: a day, or the training sessions'
    gaps where longer (dogfood 224: members back after 26 to 60 idle hours were scored as new members, unflagged
    past the day)."""
    return _past_training_gaps(spec, StateStore.DROPS_KEPT_S)


def session_ttl_s(spec: Spec) -> float:
    """The service's ``--session-ttl`` where none is given: an hour, or the training sessions' gaps where longer.
    A fixed hour cut trade-ins open for days at every longer gap, and scored their later events alone, where the
    start only warned (dogfood 269)."""
    return _past_training_gaps(spec, SESSION_TTL_S)


def expiry_said(spec: Spec, session_ttl_s: float) -> str | None:
    """A warning where 0.1% or more of the training sessions of two events or more had a gap between events longer than
    ``session_ttl_s``: the service expires a session that long idle, and scores its later events as a new
    session's, from them alone (dogfood 210: 803 of 1,004 applications open for days; live PR-AUC 0.39 against
    0.91 in batch). None for specs fitted before the gaps were recorded."""
    gaps = spec.fit_info.get(LONGEST_GAPS)
    if not gaps:
        return None
    at = dict(zip(GAP_QUANTILES, gaps))
    if at[0.999] <= session_ttl_s:
        return None
    below = [q for q, gap in at.items() if gap <= session_ttl_s]
    above = next(q for q, gap in at.items() if gap > session_ttl_s)
    share = f"{1 - above:.1%} to {1 - below[-1]:.1%}" if below else f"over {1 - above:.1%}"
    return (
        f"--session-ttl {session_ttl_s:g} s: {share} of the training sessions of two events or more (a sample of them) had two "
        f"consecutive events further apart (their longest gaps: half under {at[0.5]:,.0f} s, 99% under "
        f"{at[0.99]:,.0f} s, the longest {at[1.0]:,.0f} s). Online such a session expires in between, and its "
        "later events are scored as a new session's, from them alone (answered restarted): "
        f"set --session-ttl above the gaps your sessions take (99.9% of training's were under {at[0.999]:,.0f} "
        "s), within the memory the open sessions may take (--max-session-memory, or Redis's)"
    )


def length_flags(spec: Spec, n_events: int) -> dict[str, bool]:
    """Whether a session is shorter than 99% of the training sessions, or longer than 99% of them: its score
    reads a kind of session the model hardly saw (0 in the spec: not recorded, never flagged)."""
    return {
        "shorter_than_training": n_events < spec.shortest_trained,
        "longer_than_training": 0 < spec.longest_trained < n_events,
    }


def _refuse_repeats(session_ids: list[str], keys: list[str], column: str, source: str) -> None:
    """One event id twice in a session of one request: a client error, not a retry (the state would keep the
    first and drop the other unseen), so refused as batch refuses it."""
    seen: set[tuple[str, str]] = set()
    repeats = []
    for sid, key in zip(session_ids, keys):
        if key.startswith("id:"):
            if (sid, key) in seen:
                repeats.append(key)
            seen.add((sid, key))
    if repeats:
        raise DataValidationError(
            f"{source}: column {column!r}: {len(repeats):,} event(s) repeat the id of an earlier event of their "
            f"session in this request (first: {repeats[0][3:]!r}); an id names one event: remove the repeats"
        )


def segments(session_ids: list[str], by_run: bool) -> list[tuple[str, list[int]]]:
    """A request's events as units of work, in request order: each session's events together, or, where sessions
    read each other (entity features), each run of one session's consecutive events, so that a request scores as
    its events sent one at a time would (a session's later event sees the other sessions' events before it)."""
    if not by_run:
        by_session: dict[str, list[int]] = {}
        for i, sid in enumerate(session_ids):
            by_session.setdefault(sid, []).append(i)
        return list(by_session.items())
    runs: list[tuple[str, list[int]]] = []
    for i, sid in enumerate(session_ids):
        if runs and runs[-1][0] == sid:
            runs[-1][1].append(i)
        else:
            runs.append((sid, [i]))
    return runs


def opening_type(ts_us: np.ndarray, kinds: list[str], rows: list[int], openers: Mapping[str, float]) -> str:
    """The type of the event that opened a session (``rows``: all its events): at its first instant, one of a
    type that opens training's sessions (``openers``) if any does, as batch scoring reads it (review 240: an opener
    tied with the next event, written after it, read as a session begun elsewhere)."""
    first = min(ts_us[i] for i in rows)
    at_first = [kinds[i] for i in rows if ts_us[i] == first]
    return next((kind for kind in at_first if kind in openers), at_first[0])


def _rows(events: EventColumns, at: list[int]) -> EventColumns:
    if len(at) == len(events) and at == list(range(len(at))):  # all of them, as most requests are
        return events
    return events.take(at)


def live_features(
    store: StateStore, events: EventColumns, keys: list[str] | None, spec: Spec
) -> EventColumns:
    """``events`` (one session's, with their event ``keys``; None: the whole session) with their entity features
    from the live history: every event of every other session that shares an entity value with them, the
    session's own earlier events (a pair of values first seen together there is not new when another session
    shows it), and the labels of the other sessions. Whole sessions come, so each one's end time (a label delay
    counts from it) is its own, as in batch."""
    entity = cast(EntitySpec, spec.entity)
    sid = events.session_ids[0]
    values = [events.entities[c] for c in entity.columns]
    sharing = store.sessions_with([{v for v in column if v is not None} for column in values])
    sharing.discard(sid)
    own, taken = ([], set()) if keys is None else ([sid], set(keys))
    rows = [
        r for r in store.entity_rows([*sorted(sharing), *own]) if r.session_id != sid or r.key not in taken
    ]
    if wrong := next((r for r in rows if len(r.values) != len(entity.columns)), None):
        # Written by another hand, or by a model of other entity columns: an IndexError, a 500 (review 119).
        what = (
            f"an entity row of session {wrong.session_id!r} holds {len(wrong.values)} entity value(s), where this "
            f"model reads {len(entity.columns)} ({', '.join(entity.columns)})"
        )
        raise StoreCorrupt(what, public=what)
    known, legit = _known(store, sharing, rows, spec) if entity.risk else ({}, {})
    context = [(r.session_id, r.ts_us, r.values) for r in rows]
    features = point_features(entity, sid, events.ts_us, values, context, known, legit)
    added = {name: (x.astype(np.float64), np.isnan(x)) for name, x in features.items()}
    return replace(events, numeric=events.numeric | added)


def _known(
    store: StateStore, sharing: set[str], rows: list[EntityRow], spec: Spec
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """The label and the time it became known of each labelled session of ``sharing``, and the time from which
    one known only after its end plus the delay reads as legitimate until then, as
    :func:`~seqfraud.data.events.label_known` gives them in batch (a label that is never known is left out)."""
    labels = store.labels(sorted(sharing))
    if spec.absent_is_negative:  # a session without a label is legitimate, known at its end plus the delay
        held = {lb.session_id for lb in labels}
        labels = [*labels, *(Label(s, 0, None) for s in sorted(sharing - held))]
    if not labels:
        return {}, {}
    # First and last event of the labelled sessions only: a busy value's rows are mostly unlabelled sessions'.
    labelled = {lb.session_id for lb in labels}
    first: dict[str, int] = {}
    end: dict[str, int] = {}
    for r in rows:
        if r.session_id in labelled:
            first[r.session_id] = min(first.get(r.session_id, r.ts_us), r.ts_us)
            end[r.session_id] = max(end.get(r.session_id, r.ts_us), r.ts_us)
    delay = label_delay_us(cast(EntitySpec, spec.entity).label_delay)
    if delay is not None:
        delay = usable_delay_us(delay, spec.schema)
    known, legit = {}, {}
    for lb in labels:
        if lb.session_id not in first:
            continue  # no event held: expired from the history, so it is context no more
        if lb.label_time_us is not None and lb.label_time_us < first[lb.session_id]:
            # Taken before its session's events arrived (or retention dropped the first ones): training would
            # refuse it, and it must not fail the requests of every session that shares an entity with it.
            _ignored_label(lb.session_id)
            continue
        at = lb.label_time_us if spec.schema.label_time else None
        final = None if delay is None else end[lb.session_id] + delay
        if at is None:
            at = final
        if at is not None:
            known[lb.session_id] = (lb.label, at)
            if spec.absent_is_negative and final is not None and at > final:
                legit[lb.session_id] = final
    return known, legit


@functools.lru_cache(maxsize=4096)
def _ignored_label(session_id: str) -> None:
    """Logs once per session (as long as it stays among the last 4,096), not at every request that reads it."""
    log.warning(
        "label of session %r ignored: its label time is before the first event held of the session",
        session_id,
    )


SEED_CHUNK = 10_000  # entity rows per store call while seeding: one Redis transaction each


def seed(store: StateStore, history: History, spec: Spec) -> tuple[int, int]:
    """Put a batch history (what ``seqfraud score --history-events/--history-labels`` reads) into the store's
    entity history and labels, without scoring: a replica then starts with the context its live features read,
    equal to batch scoring's with that history, where replaying a long history through the model takes hours.

    Rows are keyed as ``POST /events`` keys them: by event id where the log has one, so seeding again, or
    replaying a seeded event, changes nothing; else by their row in the history file, so only the same file
    seeds again without adding rows. Its sessions are closed: their events are context, and an event of one of
    them later opens a new session state. Returns the rows and the labels taken.
    """
    entity = cast(EntitySpec, spec.entity)
    events = history.events
    ids = events[S.EVENT_ID].to_list() if S.EVENT_ID in events.columns else [None] * events.height
    rows = [
        EntityRow(event_key({S.EVENT_ID: i}, S.EVENT_ID, f"history:{row}"), sid, ts, tuple(values))
        for i, row, sid, ts, *values in zip(
            ids,
            events[S.ROW_INDEX].to_list(),
            events[S.SESSION_ID].to_list(),
            events[S.TS_US].to_list(),
            *(events[c].cast(pl.String).to_list() for c in entity.columns),
        )
    ]
    for at in range(0, len(rows), SEED_CHUNK):
        store.add_entity_rows(rows[at : at + SEED_CHUNK])
    sessions = events[S.SESSION_ID].unique().to_list()
    for at in range(0, len(sessions), SEED_CHUNK):
        store.add_history_sessions(sessions[at : at + SEED_CHUNK])
    table = history.labels  # empty for a model without risk features
    times = table[S.LABEL_TIME_US].to_list() if S.LABEL_TIME_US in table.columns else [None] * table.height
    labels = [
        Label(sid, int(label), at)
        for sid, label, at in zip(table[S.SESSION_ID].to_list(), table[S.LABEL].to_list(), times)
    ]
    # A label held is replaced only by a later one (supersedes): a chargeback posted since the table was made
    # stays (a restart's seed put the table's label back: dogfood 51). Read first, for the log alone.
    held = {
        label.session_id: label
        for at in range(0, len(labels), SEED_CHUNK)
        for label in store.labels(lb.session_id for lb in labels[at : at + SEED_CHUNK])
    }
    if labels:
        store.add_labels(labels, seed=True)
    differ = [lb for lb in labels if lb.session_id in held and lb != held[lb.session_id]]
    if replaced := sum(supersedes(lb, held[lb.session_id]) for lb in differ):
        # An undated correction posted live (fraud back to legitimate) loses to a dated one: said (dogfood 53).
        log.warning(
            "seeding replaced %d label(s) the store held by the history's, known later (a label posted without a "
            "label time counts as known earliest: post a correction with its time)",
            replaced,
        )
    if kept := len(differ) - replaced:
        log.info(
            "seeding kept %d label(s) the store held, known later than the history's (POST /labels changes a label)",
            kept,
        )
    store.mark_seeded()
    return len(rows), len(labels)


def label_keys(schema: Schema) -> tuple[str, str, str]:
    """The keys of a ``POST /labels`` label: the label table's own column names (``data.schema.session_id``,
    ``label`` and ``label_time``), as ``/events`` takes the event table's; ``label_time`` where the model has no
    label-time column, so that a time sent to a label-delay model is refused with the reason."""
    return schema.session_id, schema.label, schema.label_time or "label_time"


def refuse_misread_ids(values: list[Any], column: str, key: str, spec: Spec, source: str) -> None:
    """A request's ids (``values``, sent under ``key``) of ``column`` in another form than training read them: an
    integer where the log wrote zero-padded text, or text that writes an integer otherwise than its digits where it
    held integers (:func:`~seqfraud.data.events.refuse_rewritten_ids`). An event id so written is another event's
    key: a resend would count as a new event (dogfood 102), said as such."""
    typed = spec.integer_ids  # built from fit_info at each read: once a call
    integers, width = column in typed, typed.get(column)
    if column == spec.schema.event_id:
        padded = column in spec.zero_padded_ids
        bad = [
            v
            for v in values
            if (padded and type(v) is int) or (integers and type(v) is str and rewritten_id(v, width))
        ]
        if bad:
            trained = "text that no integer spells" if padded else "integers, as their digits alone"
            raise DataValidationError(
                f"{source}: {key!r}: {len(bad):,} event id(s) in another form than the training log wrote them "
                f"({trained}; first: {bad[0]!r}): a resent event under another form of its id would count as a "
                "new event; send the ids as the log writes them"
            )
    else:
        if any(type(v) is int for v in values):
            refuse_integer_ids([column], spec.zero_padded_ids, source)
        if integers and any(type(v) is str and rewritten_id(v, width) for v in values):
            texts = [v for v in values if type(v) is str]
            refuse_rewritten_ids(pl.DataFrame({key: texts}), {key: key}, source, {key: width})
    # Said of the event id too: a resend whose id came re-cased counts as a new event (review 222).
    forms = spec.id_forms
    if column in forms.columns() and any(type(v) is str and forms.off(column, v) for v in values):
        texts = [v for v in values if type(v) is str]
        effect = (
            {"effect": "so a resend under it counts as a new event"} if column == spec.schema.event_id else {}
        )
        for kind, said in forms.said(pl.DataFrame({key: texts}), {key: column}, source, **effect):
            say_once(kind, source, said)


def read_labels(labels: list[Mapping[str, Any]], spec: Spec, source: str) -> list[Label]:
    """Labels as ``POST /labels`` sends them (:func:`label_keys`), with the label times read by the event
    timestamp's own rules (RFC 3339, or integer epochs in the training unit) or as a date alone, the end of that day,
    as label tables read them; refused when the model could not use them as batch training did. A model trained
    on a table of frauds without a label column (:attr:`~seqfraud.features.spec.Spec.labels_without_column`)
    reads a label without the label key as a fraud, as its training read that table."""
    s, entity = spec.schema, spec.entity
    if entity is None or not entity.risk:
        raise DataValidationError(f"{source}: this model reads no labels (it has no entity risk features)")
    session_key, label_key, time_key = label_keys(s)
    if spec.labels_without_column:  # a chargeback feed lists frauds, as its training table did (dogfood 200)
        labels = [lb if label_key in lb else {**lb, label_key: 1} for lb in labels]
    refuse_misread_ids([lb.get(session_key) for lb in labels], s.session_id, session_key, spec, source)
    times = [lb.get(time_key) for lb in labels]
    given = [i for i, t in enumerate(times) if t is not None]
    if given and not s.label_time:
        raise DataValidationError(
            f"{source}: {len(given):,} label(s) carry a {time_key!r}, but this model counts when a label is "
            f"known from the session's end plus its label delay ({entity.label_delay}); leave {time_key!r} out"
        )
    seen: dict[str, int] = {}
    conflicting = {
        sid for lb in labels if seen.setdefault(sid := str(lb[session_key]), lb[label_key]) != lb[label_key]
    }
    if conflicting:
        raise DataValidationError(
            f"{source}: {len(conflicting):,} session(s) listed with conflicting labels, e.g. {min(conflicting)!r} "
            "(a later request may correct a label)"
        )
    blind = sum(t is None and lb[label_key] == 1 for t, lb in zip(times, labels))
    if s.label_time and entity.label_delay is None and blind:
        raise DataValidationError(
            f"{source}: {blind:,} positive label(s) have no {time_key!r}, and this model has no label delay to "
            "fall back on, so they would never be known"
        )
    us: list[int | None] = [None] * len(labels)
    kinds = Counter(type(times[i]).__name__ for i in given)
    if len(kinds) > 1:  # one column, as a request's timestamps: the events' rule, in the labels' words
        rare = min(kinds, key=lambda k: kinds[k])
        first = next(i for i in given if type(times[i]).__name__ == rare)
        raise DataValidationError(
            f"{source}: {time_key!r}: label times of types {sorted(kinds)} in one request; {kinds[rare]:,} "
            f"label(s) hold a value of type {rare} (first: label {first}, session "
            f"{str(labels[first][session_key])!r}); send integer epochs or date-time text, not both"
        )
    if given:
        lt_spec = replace(spec, schema=replace(s, timestamp=time_key, label_time=None, event_id=None))
        # Each label's own session id: an error about its time names it.
        records = [
            {time_key: times[i], s.session_id: str(labels[i][session_key]), s.event_type: "-"} for i in given
        ]
        taken = as_frame(records, lt_spec, source)
        sent = taken[time_key]
        if taken.schema[time_key] == pl.String:  # a date alone, as label tables may give it
            taken = taken.with_columns(label_day_end(pl.col(time_key)))
        # The events' rules, in a label time's words: a date alone also parses.
        try:
            frame = normalized_events(taken.lazy(), lt_spec, source)
        except DataValidationError as e:
            said = str(e).replace(UNPARSED, LABEL_TIME_UNPARSED)
            # The time as sent, not its day's end: "2099-12-31" was quoted as '2100-01-01T00:00:00Z' (review 119).
            for read, given_as in zip(taken[time_key].to_list(), sent.to_list()):
                if read != given_as and f"(first: {read!r}" in said:
                    said = said.replace(f"(first: {read!r}", f"(first: {given_as!r}")
                    break
            raise DataValidationError(said) from None
        for i, t in zip(given, frame[S.TS_US].to_list()):
            us[i] = t
    # A session's label sent twice is one label, as a label table's repeated row is (it was counted twice:
    # review 170); at two times, as a table's, refused.
    once: dict[str, Label] = {}
    for lb, t in zip(labels, us):
        label = Label(str(lb[session_key]), int(lb[label_key]), t)
        if once.setdefault(label.session_id, label) != label:
            times_said = (
                "none" if x is None else from_epoch_us(x) for x in (once[label.session_id].label_time_us, t)
            )
            raise DataValidationError(
                f"{source}: session {label.session_id!r} listed with two label times ({' and '.join(times_said)}): "
                f"send one {time_key!r}, when it became known"
            )
    return list(once.values())
