"""The real-time HTTP service: a FastAPI app around one :class:`Scorer`, loaded once at start-up.

Requests are checked against validators built from the artifact's own schema, so a bad request gets a 4xx
that names the field before anything is scored. Work never queues: each route class (``/score``,
``/score/batch``, ``/explain``) has its own :class:`Capacity`, and a request that finds it full gets 503 with
``Retry-After`` at once, so batches and explanations cannot starve ``/score``. ``/score`` is scored in a worker
thread, off the event loop (and so is the validation of a large body). Batches and explanations run in worker
processes at a lower OS priority: a 60k-event batch holds the GIL through about 0.3 s of validation and
conversion, which in a thread would stall every other request for as long. The connection-level limits
(timeouts, header caps, open connections) are the server's: :mod:`seqfraud.scoring.server`.
"""

import asyncio
import copy
import functools
import gc
import json
import logging
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    with_config,
)
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect
from typing_extensions import NotRequired, Required, TypedDict

from seqfraud import schema as S
from seqfraud.data.events import DataValidationError, blank_id, null_text, rewritten_id
from seqfraud.decisions import BANDS
from seqfraud.export.artifact import Artifact, open_artifact, strict_json, unique_keys, verification_settings
from seqfraud.features.spec import NAN_VALUES, Spec
from seqfraud.scoring.explain import flat_note, scored_occlusion, unlisted, unread_note
from seqfraud.scoring.history import HistoryRequired, Recurrence, refuse_to_serve
from seqfraud.scoring.online import (
    MAX_SESSION_EVENTS,
    OnlineScorer,
    drops_kept_s,
    label_keys,
    length_flags,
    read_labels,
    segments,
    session_ttl_s,
)
from seqfraud.scoring.prepare import (
    INT128_MAX,
    INT128_MIN,
    as_frame,
    left_out_said,
    normalized_events,
    say_once,
)
from seqfraud.scoring.scorer import Scorer
from seqfraud.scoring.state import MemoryStore, Occasional, StateStore, StoreBusy, StoreUnavailable

log = logging.getLogger(__name__)

# Bodies above this size are validated in a worker thread: 64 KiB validate in about 2 ms, a full batch in 200 ms.
OFF_LOOP_BYTES = 64 * 1024
HEAVY_NICE = 10  # OS priority offset of the batch and explain worker processes: the CPU goes to /score first


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (what one request may cost in memory and time) and requests in flight per route."""

    max_events_per_session: int = 4096
    # Events one open session takes over all its /events requests.
    max_session_events: int = MAX_SESSION_EVENTS
    max_sessions_per_batch: int = 1000
    max_sessions_per_events: int = 256  # sessions of one /events request (entity models: runs), each rescored
    max_body_bytes: int = 8 * 1024 * 1024  # /score/batch
    max_session_body_bytes: int = 2 * 1024 * 1024  # /score and /explain
    max_explain_events: int = 256  # kept events of an /explain session: its cost grows with their square
    max_score_in_flight: int = 32
    max_batch_in_flight: int = 2
    max_explain_in_flight: int = 2
    max_body_memory: int = 64 * 1024 * 1024  # body bytes held at once, per route class
    max_value_chars: int = 1024  # one string value: the store keeps ids and entity values, answers echo ids
    worker_timeout_s: float = 60.0  # one /score/batch or /explain in its worker; past it, the workers restart
    retry_after_s: int = 1


def unservable_values(spec: Spec, max_chars: int) -> list[str]:
    """What to say, at start, of values the model learnt that a request cannot send: strings longer than
    ``max_chars``, refused with 422 at every request carrying one (a user agent of 2,013 characters: dogfood 166),
    and NaN, which JSON lacks, so a request's null reads as missing where a batch file's NaN reads as NaN (510
    bands moved between a log's NaN prices and the same log with nulls, unsaid after training: dogfood 191)."""
    notes = []
    longest = {f: max(map(len, vocab)) for f, vocab in spec.vocab.items() if vocab}
    if over := {f: n for f, n in longest.items() if n > max_chars}:
        named = ", ".join(f"{f!r} up to {n:,} characters" for f, n in sorted(over.items()))
        notes.append(
            f"the model learnt values longer than a request may send (--max-value-chars {max_chars}): {named}; "
            f"requests carrying them are refused with 422: serve with --max-value-chars {max(over.values())}"
        )
    if nan := {c: n for c, n in (spec.fit_info.get(NAN_VALUES) or {}).items() if n}:
        notes.append(
            f"the model learnt NaN values, which JSON cannot send, as a token of their own (training events: "
            f"{nan}): a request's null reads as missing, so such events score here as batch scores a null, not a NaN"
        )
    return notes


class RequestError(Exception):
    """A request refused with ``status`` (4xx, or 503 when busy) and a message that names what is wrong."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers

    def __reduce__(self) -> tuple:  # raised in a worker process, re-raised in the server's
        return RequestError, (self.status, self.detail, self.errors, self.headers)


class Capacity:
    """One route class's share of the service: requests in flight, and body bytes held; past either, a 503.

    A slot is taken once the body is in, so a client that stalls its upload holds no slot, only the bytes it
    did send (until the server's body timeout). A request that finds the slots full is refused before its
    body is read. All counting happens on the event loop's one thread, with no await between a check and
    its count, so it needs no lock.
    """

    def __init__(self, route: str, slots: int, body_bytes: int, retry_after_s: int):
        self.route, self.slots, self.body_bytes, self.retry_after_s = route, slots, body_bytes, retry_after_s
        self.in_flight = self.held_bytes = 0

    def _busy(self, what: str) -> RequestError:
        return RequestError(
            503,
            f"{self.route} is busy ({what}); retry after {self.retry_after_s} s",
            headers={"Retry-After": str(self.retry_after_s)},
        )

    def refuse_if_full(self) -> None:
        if self.in_flight >= self.slots:
            raise self._busy(f"{self.slots} requests in flight")

    @contextmanager
    def body(self) -> Iterator[Callable[[int], None]]:
        """A function that counts ``n`` more body bytes held (503 past the budget); all are released at exit."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            if self.held_bytes + n > self.body_bytes:
                raise self._busy(f"{self.body_bytes:,} bytes of request bodies held")
            self.held_bytes += n
            taken += n

        try:
            yield take
        finally:
            self.held_bytes -= taken

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.refuse_if_full()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


# A value's type in the client's words: "got NoneType" was Python's (dogfood 108).
_JSON_TYPES = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a number with a fraction or exponent",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _typed(expected: str, *types: type, nullable: bool = False, max_chars: int) -> Any:
    """A strict JSON type check with one readable message (a union would report once per member); a string
    longer than ``max_chars`` is refused: the service keeps ids and entity values, and echoes ids."""

    def check(value: Any) -> Any:
        if (value is None and nullable) or (
            isinstance(value, types) and (bool in types or not isinstance(value, bool))
        ):
            if isinstance(value, str) and len(value) > max_chars:
                raise PydanticCustomError(
                    "value_too_long",
                    "a string of {n} characters; at most {limit} (--max-value-chars)",
                    {"n": f"{len(value):,}", "limit": f"{max_chars:,}"},
                )
            # An integer past what Polars reads (Int128) is no id or code: a 4,000-digit event id was stored
            # (review 119).
            if type(value) is int and not INT128_MIN <= value <= INT128_MAX:
                raise PydanticCustomError(
                    "too_large",
                    "an integer of {bits} bits, outside the signed 128-bit range; send such a value as a string",
                    {"bits": f"{value.bit_length():,}"},
                )
            return value
        raise PydanticCustomError(
            "wrong_type",
            "expected {expected}, got {got}",
            {"expected": expected, "got": _JSON_TYPES.get(type(value), type(value).__name__)},
        )

    json_types = {str: "string", int: "integer", bool: "boolean"}
    schema = {"type": [json_types[t] for t in types] + (["null"] if nullable else []), "maxLength": max_chars}
    return Annotated[Any, PlainValidator(check), WithJsonSchema(schema)]


def _usable_id(code: str, expected: str, *, session: bool, entity: bool = False) -> Callable[[Any], Any]:
    """A check of ids by :data:`~seqfraud.data.events.BLANK_ID`'s rule: session ids, which training and batch
    scoring refuse alike and ``GET /sessions/{id}`` must name, entity values, where ``""`` or the text ``"null"``
    would link every session that sent it into one entity (dogfoods 26, 277; ``null`` says the event has none), and
    event ids, where ``" 7"`` beside ``"7"`` took a retry as a new event (review 103)."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and (blank_id(value, session=session) or (entity and null_text(value))):
            raise PydanticCustomError(code, expected)
        return value

    return check


_session_id = _usable_id(
    "session_id",
    "expected a non-blank id without control or invisible characters or spaces at its ends",
    session=True,
)
_optional_id = _usable_id(
    "id",
    "expected null (the event has none) or a non-blank id without control characters or spaces at its ends",
    session=False,
)
_entity_value = _usable_id(
    "id",
    "expected null (the event has none) or a non-blank id without control characters or spaces at its ends, "
    "not a text that spells no value ('null', 'None', 'NaN', 'NA', '<NA>', 'n/a', '\\N', 'undefined' and the like)",
    session=False,
    entity=True,
)


def _label(value: Any) -> int:
    """0 or 1, or a boolean, as training's label tables take them."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return int(value)
    raise PydanticCustomError("label", "expected 0 or 1 (or a boolean), got {got}", {"got": repr(value)[:40]})


LABEL: Any = Annotated[
    Any,
    PlainValidator(_label),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 1}, {"type": "boolean"}]}),
]


@dataclass(frozen=True)
class ValueTypes:
    """The JSON types of a request's values, each string at most ``max_chars`` long (:attr:`Limits.max_value_chars`)."""

    ident: Any
    session: Any
    timestamp: Any
    category: Any
    optional_id: Any  # an event id: null where the event has none
    entity: Any  # an entity value: null where the event has none

    @classmethod
    @functools.cache
    def of(cls, max_chars: int) -> "ValueTypes":
        ident = _typed("a string or an integer", str, int, max_chars=max_chars)
        return cls(
            ident=ident,
            session=Annotated[
                ident,
                AfterValidator(_session_id),
                WithJsonSchema(
                    {
                        "type": ["string", "integer"],
                        "minLength": 1,
                        "maxLength": max_chars,
                        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]+$",
                        "description": "not blank, and no spaces at its start or end",
                    }
                ),
            ],
            timestamp=Annotated[
                ident,
                WithJsonSchema(
                    {
                        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
                        "description": "RFC 3339, or an integer epoch in the unit training read",
                    }
                ),
            ],
            category=_typed(
                "a string, an integer, a boolean or null", str, int, bool, nullable=True, max_chars=max_chars
            ),
            optional_id=Annotated[
                _typed("a string, an integer or null", str, int, nullable=True, max_chars=max_chars),
                AfterValidator(_optional_id),
            ],
            entity=Annotated[
                _typed("a string, an integer or null", str, int, nullable=True, max_chars=max_chars),
                AfterValidator(_entity_value),
            ],
        )


NUMBER = Annotated[float | None, Field(strict=True, allow_inf_nan=False)]  # NaN, inf and 1e400 are refused
FORBID = ConfigDict(extra="forbid")
# TypedDicts whose keys are only known at run time (the spec's columns, the schema's constants): pydantic reads
# them, a static checker cannot, so they are built through an untyped alias of the functional form.
_dynamic_typed_dict: Any = TypedDict


def event_fields(spec: Spec, types: ValueTypes) -> dict[str, Any]:
    """An event's keys and their JSON types, from the spec's column roles: the log's event id too, where it has
    one, so that one payload serves ``/score`` and ``/events`` (entity columns are for ``/events`` only)."""
    s = spec.schema
    return {
        s.session_id: Required[types.session],
        s.timestamp: Required[types.timestamp],
        s.event_type: Required[types.ident],
        **{c: NotRequired[types.category] for c in s.categorical},
        **{c: NotRequired[NUMBER] for c in s.numerical},
        **({s.event_id: NotRequired[types.ident]} if s.event_id else {}),
    }


def request_models(spec: Spec, limits: Limits) -> tuple[TypeAdapter, TypeAdapter]:
    """Validators of ``POST /score`` and ``POST /score/batch`` bodies, from the spec's column roles.

    The session id, timestamp (RFC 3339 string or integer epoch) and event type are required; other
    fields may be null or left out, which is a null, exactly as a null in training. Unknown fields are
    refused. TypedDicts keyed by the column names themselves (any string) validate straight to the
    dicts the scorer takes; their JSON schemas are the request bodies of the OpenAPI document.
    """
    types = ValueTypes.of(limits.max_value_chars)
    strict_event: Any = with_config(FORBID)(_dynamic_typed_dict("Event", event_fields(spec, types)))
    events: Any = Annotated[list[strict_event], Field(min_length=1, max_length=limits.max_events_per_session)]
    session: Any = with_config(FORBID)(_dynamic_typed_dict("ScoreRequest", {"events": Required[events]}))
    # Stops at the first refused session: 8 MB of empty events listed 8.4M errors, 8 s and 5 GB in pydantic alone
    # (review 211), where a session's own events are said together, with how often.
    sessions: Any = Annotated[
        list[session], Field(min_length=1, max_length=limits.max_sessions_per_batch, fail_fast=True)
    ]
    batch = with_config(FORBID)(_dynamic_typed_dict("BatchRequest", {"sessions": Required[sessions]}))
    return TypeAdapter(session), TypeAdapter(batch)


def online_request_models(spec: Spec, limits: Limits) -> tuple[TypeAdapter, TypeAdapter]:
    """Validators of ``POST /events`` (events of any open sessions, each with its ``data.schema.event_id``
    when the log has one) and ``POST /labels`` (a session's label and when it became known)."""
    s = spec.schema
    types = ValueTypes.of(limits.max_value_chars)
    # An entity column is required (null: the event has none): a client that leaves it out by mistake would
    # otherwise get scores without the shared-entity context the model was trained to read, and no error. So is
    # the event id (null: this event has none): without it a retry counts its events again (dogfood 36).
    fields = event_fields(spec, types) | {c: Required[types.entity] for c in s.entities}
    if s.event_id:
        fields[s.event_id] = Required[types.optional_id]
    event: Any = with_config(FORBID)(_dynamic_typed_dict("OnlineEvent", fields))
    session_key, label_key, time_key = label_keys(s)
    label_time: Any = types.timestamp | None  # no default: a default makes even a Required key optional
    if not s.label_time and spec.entity is not None:
        # Read to be refused with the reason (online.read_labels), and said to be no field of this model's: the
        # schema and the unknown-field error listed it as one, which the request then found refused (dogfood 109).
        label_time = Annotated[
            label_time,
            WithJsonSchema(
                {
                    "not": {},
                    "description": "not taken: this model counts a label known from its session's end plus "
                    f"its label delay ({spec.entity.label_delay})",
                }
            ),
        ]
    events: Any = Annotated[list[event], Field(min_length=1, max_length=limits.max_events_per_session)]
    # Where labels and their times are read, the key is required (null: not known), as an entity column is: a feed
    # that left it out had its frauds read by the risk features a label delay late, unsaid (dogfood 126); its
    # description goes into the 422 (dogfood 132: a bare "Field required" to a client of an earlier release).
    timed = bool(s.label_time) and spec.entity is not None and spec.entity.risk
    if timed:
        label_time = Annotated[
            label_time,
            Field(description="when the label became known; null where it is not known: this model reads it"),
        ]
    label: Any = with_config(FORBID)(
        _dynamic_typed_dict(
            "Label",
            {
                session_key: Required[types.session],
                # A frauds-only feed may leave the label out, as its training table did (online.read_labels).
                label_key: NotRequired[LABEL] if spec.labels_without_column else Required[LABEL],
                time_key: Required[label_time] if timed else NotRequired[label_time],
            },
        )
    )
    labels: Any = Annotated[list[label], Field(min_length=1, max_length=limits.max_sessions_per_batch)]
    return (
        TypeAdapter(with_config(FORBID)(_dynamic_typed_dict("EventsRequest", {"events": Required[events]}))),
        TypeAdapter(with_config(FORBID)(_dynamic_typed_dict("LabelsRequest", {"labels": Required[labels]}))),
    )


# Response bodies, for the OpenAPI document.
ScoreResult: Any = _dynamic_typed_dict(
    "ScoreResult", {S.SESSION_ID: str, S.SCORE: float, S.BAND: Literal[BANDS]}
)
ScoreResponse = _dynamic_typed_dict(
    "ScoreResponse", {**ScoreResult.__annotations__, "model_version": str, "latency_ms": float}
)
BatchResponse = TypedDict(
    "BatchResponse", {"results": list[ScoreResult], "model_version": str, "latency_ms": float}
)
ExplainedEvent: Any = _dynamic_typed_dict(
    "ExplainedEvent",
    {
        S.POSITION: int,
        S.EVENT: str,
        S.EVENT_TIME: str,
        S.CONTRIBUTION: float,
        S.FIELDS: dict[str, Any] | None,
    },
)
ExplainResponse = _dynamic_typed_dict(
    "ExplainResponse",
    {
        **ScoreResponse.__annotations__,
        S.RAW_SCORE: float,  # the scale contributions are in (score is calibrated)
        "events": list[ExplainedEvent],
        "n_events": int,
        "note": str | None,
    },
)
FieldError = TypedDict("FieldError", {"loc": str, "msg": str})
ErrorResponse = TypedDict("ErrorResponse", {"detail": Required[str], "errors": NotRequired[list[FieldError]]})
Health = TypedDict("Health", {"status": str, "model_version": str})
EventResult: Any = _dynamic_typed_dict(
    "EventResult",
    {
        **ScoreResult.__annotations__,
        "n_events": int,
        "degraded": bool,
        "repeated": int,
        "conflicting": int,
        "restarted": bool,
        "shorter_than_training": bool,
        "longer_than_training": bool,
        "model_version": str,
    },
)
EventsResponse = TypedDict(
    "EventsResponse", {"results": list[EventResult], "model_version": str, "latency_ms": float}
)
LabelsResponse = TypedDict("LabelsResponse", {"accepted": int, "unseen": int})
SessionResponse: Any = _dynamic_typed_dict(
    "SessionResponse",
    {
        **ScoreResult.__annotations__,
        S.RAW_SCORE: float,
        "n_events": int,
        "shorter_than_training": bool,
        "longer_than_training": bool,
        "updated_at": float,
        "model_version": str,
    },
)


def request_examples(spec: Spec) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid ``/score`` body and a valid ``/score/batch`` body, for the OpenAPI document (and its fuzzer)."""
    s = spec.schema
    event_type = spec.vocab[s.event_type][0] if spec.vocab.get(s.event_type) else "login"

    def session(sid: str) -> dict[str, Any]:
        return {
            "events": [
                {s.session_id: sid, s.timestamp: f"2026-03-01T10:00:0{i}Z", s.event_type: event_type}
                for i in range(2)
            ]
        }

    return session("s1"), {"sessions": [session("s1"), session("s2")]}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    words = {
        400: "malformed JSON",
        413: "body too large",
        404: "no such open session",
        415: "not application/json",
        422: "a field is missing, mistyped, unknown or out of range",
        501: "a Transfer-Encoding other than chunked",
        503: "busy: retry after Retry-After seconds",
    }
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": words[code]} for code in statuses
    }
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer"}}}
    return out


# The request lists whose length a flag bounds (pydantic's "too_long": a list's max_length).
_LIST_LIMITS = {
    # /events takes several sessions' events under the same bound: said so (dogfood 214: 5,000 events of 5,000
    # sessions were told of a per-session limit none of them passed).
    "events": "--max-events-per-session, which bounds a POST /events request's events too, whatever its sessions",
    "sessions": "--max-sessions-per-batch",
    "labels": "--max-sessions-per-batch",
}


def _where(loc: tuple) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return path or "body"


# A refused body's errors read, and listed in the answer: each costs a few bytes of body and hundreds of bytes and
# microseconds in Python (review 211: a 1.9 MB event of 200,000 unknown keys took 1.2 s of the event loop and
# answered 14.6 MB).
ERRORS_READ, ERRORS_LISTED, NAMES_SAID = 1000, 100, 20


def first_errors(e: ValidationError) -> list[dict[str, Any]]:
    """The first :data:`ERRORS_READ` errors, as ``e.errors()`` gives them (``loc`` a tuple), read from pydantic's
    own JSON of them one by one: ``e.errors()`` builds every one in Python, 0.65 s for 200,000."""
    text = e.json(include_url=False, include_context=False, include_input=False)
    decoder, at = json.JSONDecoder(), 1  # past the list's "["
    errors: list[dict[str, Any]] = []
    while len(errors) < ERRORS_READ and text[at] != "]":
        err, at = decoder.raw_decode(text, at)
        errors.append(err | {"loc": tuple(err["loc"])})
        at += text[at] == ","
    return errors


def parse(validator: TypeAdapter, body: bytes) -> dict[str, Any]:
    """The validated body; 400 for malformed JSON or a key repeated in one object (a gateway that reads the
    first of two ``amount`` keys checked another request than the one scored, which took the last)."""
    try:
        parsed = validator.validate_json(body)
    except ValidationError as e:
        errors, total = first_errors(e), e.error_count()
        if errors[0]["type"] == "json_invalid":
            raise RequestError(400, f"malformed JSON: {errors[0]['msg']}") from None
        # First: the 422 would describe one reading of an ambiguous body (dogfood 54).
        try:
            json.loads(body, object_pairs_hook=unique_keys)
        except ValueError as e:
            raise RequestError(400, f"malformed JSON: {e}") from None
        except RecursionError:  # nested deeper than Python parses: the 422 below tells it
            pass
        # Each error is said once per place in the schema: a client that sends its raw rows has the same few extra
        # columns, or the same float ids, on every event (dogfood 108: one clause an event). Unknown fields are
        # said together, with what the place takes.
        at_least = "at least " if total > len(errors) else ""  # the counts below are of the errors read
        groups: dict[tuple, list[Any]] = {}
        for err in errors:
            place = tuple(p if isinstance(p, str) else 0 for p in err["loc"])
            unknown = err["type"] == "extra_forbidden"
            key = (unknown, place[:-1]) if unknown else (unknown, place, err["msg"])
            groups.setdefault(key, []).append(err)
        said = []
        for (unknown, *_), group in groups.items():
            if unknown:
                names = list(dict.fromkeys(str(err["loc"][-1]) for err in group))
                places = len({err["loc"][:-1] for err in group})
                known = _known_fields(validator, group[0]["loc"][:-1])
                listed = f"{names[:NAMES_SAID]}" + (
                    f" and {at_least}{len(names) - NAMES_SAID:,} more" if len(names) > NAMES_SAID else ""
                )
                said.append(
                    f"{_where(group[0]['loc'][:-1])}: unknown field(s) {listed}"
                    + (f" (and in {at_least}{places - 1} more like it)" if places > 1 else "")
                    + (f"; this request takes {known}" if known else "")
                )
            else:
                more_like = f" (and in {at_least}{len(group) - 1} more like it)" if len(group) > 1 else ""
                # A list past its limit names the flag that sets it, as a long value does (dogfood 128).
                why = None
                if group[0]["type"] == "too_long":
                    why = _LIST_LIMITS.get(group[0]["loc"][-1])
                elif group[0]["type"] == "missing":  # a required field says what it is for (dogfood 132)
                    field = (
                        _node(validator, group[0]["loc"][:-1]).get("properties", {}).get(group[0]["loc"][-1])
                    )
                    why = (field or {}).get("description")
                said.append(
                    f"{_where(group[0]['loc'])}: {group[0]['msg']}{f' ({why})' if why else ''}{more_like}"
                )
        more = len(said) - 10
        detail = "; ".join(said[:10]) + (f" (and {more} more)" if more > 0 else "")
        if total > len(errors):
            detail += f" ({total:,} errors in all; the first {len(errors):,} are said)"
        raise RequestError(
            422, detail, [{"loc": _where(err["loc"]), "msg": err["msg"]} for err in errors[:ERRORS_LISTED]]
        ) from None
    try:
        strict_json(body)
    except ValueError as e:  # valid JSON otherwise, as it validated
        raise RequestError(400, f"malformed JSON: {e}") from None
    return parsed


@functools.cache
def _schema(validator: TypeAdapter) -> dict[str, Any]:
    return validator.json_schema()


def _node(validator: TypeAdapter, loc: tuple) -> dict[str, Any]:
    """The request schema's node at ``loc``, references followed."""
    root = _schema(validator)
    node = root
    for step in (*loc, None):
        while "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        if step is None:
            break
        node = node.get("items", {}) if isinstance(step, int) else node.get("properties", {}).get(step, {})
    return node


def _known_fields(validator: TypeAdapter, loc: tuple) -> list[str]:
    """The fields the request's schema allows at ``loc``, for the error of an unknown one (a label time sent
    to a model that counts a label delay, a column under its name in another log)."""
    fields = _node(validator, loc).get("properties", {})
    return [k for k, v in fields.items() if "not" not in v]  # "not": a field read only to refuse it


def check_json_content_type(request: Request) -> None:
    """Refuse (415) a body that is not ``application/json`` (UTF-8): a browser form can post no JSON cross-site.
    Each header once: of two, the first was read alone, so a gzip behind an identity passed (review 119)."""
    for name in ("content-type", "content-encoding"):
        if len(request.headers.getlist(name)) > 1:
            raise RequestError(400, f"the {name.title()} header is sent more than once: send it once")
    declared = request.headers.get("content-type", "")
    media, *params = [p.strip().lower() for p in declared.split(";")]
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    if media != "application/json" or any(c not in ("utf-8", "utf8") for c in charsets):
        raise RequestError(415, f"Content-Type must be application/json, got {declared[:100]!r}")
    # A compressed body would not parse, and a plain one labelled compressed is not what the client meant.
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise RequestError(
            415, f"Content-Encoding {encoding[:100]!r} is not supported: send the body uncompressed"
        )
    # The server undoes chunked alone: a body sent "gzip, chunked" was read as plain JSON, where a proxy that
    # honours the coding checks another (review 211). RFC 9112 answers a coding not understood with 501.
    codings = [c.strip().lower() for v in request.headers.getlist("transfer-encoding") for c in v.split(",")]
    if (
        codings and request.scope.get("http_version") == "1.0"
    ):  # HTTP/1.0 has no transfer codings (RFC 9112 6.1)
        raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request: send a Content-Length")
    if any(c not in ("chunked", "") for c in codings):
        raise RequestError(
            501,
            f"Transfer-Encoding {', '.join(codings)[:100]!r} is not supported: send the body chunked alone",
        )


async def read_body(request: Request, limit: int, take: Callable[[int], None]) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed); ``take`` counts them."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared):,} bytes exceeds the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body exceeds the limit of {limit:,} bytes")
        take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def one_session(events: list[dict[str, Any]], spec: Spec, where: str) -> list[dict[str, Any]]:
    """The events, refused unless they all carry one session id."""
    # An integer id stands for its digits, as in /events and batch scoring.
    ids = {str(e[spec.schema.session_id]) for e in events}
    if len(ids) > 1:
        raise RequestError(
            422,
            f"{where}.{spec.schema.session_id}: one session per request, got {len(ids)} session ids "
            "(/score/batch scores several at once; /explain takes them one by one)",
        )
    # A field may be left out of an event (null), but not, unsaid, out of a whole session (left_out_said).
    present = set().union(*events)
    for c in (*spec.schema.categorical, *spec.schema.numerical):
        if c not in present:
            say_once("left_out", c, left_out_said(where, c, "every event of a session"))
    return events


def few_sessions(events: list[dict[str, Any]], spec: Spec, limit: int) -> list[dict[str, Any]]:
    """The events, refused when they touch more sessions than ``limit``: each touched session is rescored (with
    live entity features, milliseconds each, and once per run of its events), and the work cannot stop once it
    starts."""
    n = len(segments([str(e[spec.schema.session_id]) for e in events], spec.entity is not None))
    if n > limit:
        again = " (with entity features, a session counts again where its events resume after another's)"
        raise RequestError(
            422,
            f"events.{spec.schema.session_id}: /events takes events of at most {limit:,} sessions per request"
            f"{again if spec.entity is not None else ''}, got {n:,}; split the request",
        )
    return events


def batch_scores(scorer: Scorer, validator: TypeAdapter, body: bytes) -> list[dict[str, Any]]:
    """A ``/score/batch`` body to its results in request order: validation, checks and scoring in one call."""
    batch = parse(validator, body)
    sessions = [
        one_session(s["events"], scorer.spec, f"sessions[{i}].events")
        for i, s in enumerate(batch["sessions"])
    ]
    ids = [str(records[0][scorer.spec.schema.session_id]) for records in sessions]
    seen: set[str] = set()
    for i, sid in enumerate(ids):
        if sid in seen:
            raise RequestError(422, f"sessions[{i}]: session id {sid!r} appears in more than one session")
        seen.add(sid)
    result = scorer.score([r for records in sessions for r in records], source="request")
    by_id = {
        row[S.SESSION_ID]: row for row in result.select(S.SESSION_ID, S.SCORE, S.BAND).iter_rows(named=True)
    }
    return [by_id[sid] for sid in ids]


def explained_session(scorer: Scorer, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One session's score and band, as ``/score`` gives them, and its events' contributions, tokenized once."""
    events = normalized_events(as_frame(records, scorer.spec, "request").lazy(), scorer.spec, "request")
    scores, explained = scored_occlusion(scorer, events)
    events = explained.select(
        S.POSITION,
        S.EVENT,
        pl.col(S.EVENT_TIME).dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
        S.CONTRIBUTION,
        S.FIELDS,
    )
    stacked = scorer.stacker is not None
    row = scores.select(S.SESSION_ID, S.SCORE, S.BAND, S.RAW_SCORE).row(0, named=True)
    # The command's notes, in one: why no event stands out, and which events the model did not read.
    hidden = unlisted(len(records), scorer.spec, stacked)
    said = [
        flat_note(
            explained[S.CONTRIBUTION].to_numpy(),
            row
            | {
                "stacked": stacked,
                "blend": scorer.stacker is not None and scorer.stacker.blend,
                "unlisted": hidden,
            },
            scorer.calibrate,
        )
    ]
    said.append(unread_note(len(records), scorer.spec, scorer.stacker))
    note = "; ".join(n for n in said if n) or None
    return row | {
        "events": events.to_dicts(),
        "n_events": len(records),
        "note": note,
    }


def stateless(scorer: Scorer) -> None:
    """``/score``, ``/score/batch`` and ``/explain`` read the request alone: an entity-aware model needs the
    history that only ``/events`` keeps."""
    try:
        refuse_to_serve(scorer.spec)
    except HistoryRequired as e:
        raise RequestError(422, str(e)) from None


# Where the manifest names paths on the exporting machine: (section, key) pairs that /metadata leaves out.
HOST_PATHS = (
    ("source", "run_dir"),
    ("parity", "end_to_end", "events"),
    *(("source", "training", "inputs", name, "path") for name in ("events", "labels", "typologies")),
)


def public_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as ``/metadata`` shows it: without :data:`HOST_PATHS`, which name the exporting machine's
    directories."""
    out = copy.deepcopy(manifest)
    for *where, key in HOST_PATHS:
        section: Any = out
        for step in where:
            section = section.get(step) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(key, None)
    return out


_worker: tuple[Scorer, TypeAdapter] | None = None  # in a worker process: its scorer and batch validator


def _start_worker(
    artifact: str | Path,
    fmt: str,
    thresholds: Mapping[str, float] | None,
    limits: Limits,
    threads: int,
    manifest_sha256: str,
) -> None:
    """A worker process's start: a lower OS priority, torch's threads, its own copy of the artifact, which must
    be the one the service verified, manifest for manifest (workers start again after one dies): its keys
    need not be in the worker's environment, and one rewritten since is refused."""
    global _worker
    with suppress(AttributeError, OSError):  # not on every OS; an unchanged priority only costs latency
        os.setpriority(os.PRIO_PROCESS, 0, HEAVY_NICE)
    torch.set_num_threads(threads)
    # The service warned at its start about an artifact it cannot verify; each worker would say it again.
    logging.getLogger("seqfraud.export.artifact").setLevel(logging.ERROR)
    verified = open_artifact(artifact, say_unsigned=False, manifest_sha256=manifest_sha256)
    scorer = Scorer.of_artifact(verified, fmt, thresholds, threads=threads)
    scorer.warmup()
    _worker = scorer, request_models(scorer.spec, limits)[1]


class Workers:
    """The processes of ``/score/batch`` and ``/explain``. A worker that dies (the OOM killer's ``kill -9``)
    breaks its whole pool, which then failed every later request with 500 while ``/readyz`` said ready (dogfood
    43); one that hangs held its request, and its route's slot, for good (dogfood 44). The broken pool is
    replaced, a call past ``timeout_s`` kills the pool's processes first, and the requests it held answer 503
    with ``Retry-After``."""

    def __init__(
        self, start: Callable[[], ProcessPoolExecutor], workers: int, timeout_s: float, retry_after_s: int
    ):
        self._start, self._workers = start, workers
        self._timeout_s, self._retry_after_s = timeout_s, retry_after_s
        self.pool = start()
        self._started: asyncio.Future | None = None
        self._stopped: dict[int, str] = {}  # id of a pool replaced -> why, for the requests it still held
        self.cannot_start = False  # a new pool's workers failed to start: /readyz says so, nothing restarts

    async def ready(self) -> None:
        """Every worker started (the artifact loaded and warmed up), outside any request's time limit: a new
        pool's cold start counted against its first request's, and a tight --worker-timeout then restarted the
        pool at every request, for good (dogfood 47). Workers that cannot start (the artifact changed on disk)
        leave the service unready, answering 503, rather than start a pool at every request."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start_all(self.pool))
        try:
            await asyncio.shield(self._started)  # a request cancelled meanwhile must not cancel it for all
        except BrokenProcessPool:
            self.cannot_start = True
            raise RequestError(
                503,
                "the workers of /score/batch and /explain cannot start (the service's log says why): restart the "
                "service",
                headers={"Retry-After": str(self._retry_after_s)},
            ) from None

    async def _start_all(self, pool: ProcessPoolExecutor) -> None:
        """Until each of the pool's processes has answered (one that is up would take every call of a round),
        for at most 600 rounds."""
        loop, seen = asyncio.get_running_loop(), set()
        for _ in range(600):
            calls = [loop.run_in_executor(pool, _worker_ready) for _ in range(self._workers)]
            seen |= set(await asyncio.gather(*calls))
            if len(seen) >= self._workers:
                return

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        await self.ready()
        pool = self.pool
        try:
            call = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            return await asyncio.wait_for(call, self._timeout_s)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
            late = f"took longer than {self._timeout_s:g} s in its worker process (--worker-timeout)"
            why = self._restart(pool, late, f"was stopped with the workers: another request {late}")
        except BrokenProcessPool:
            died = "lost its worker process, which died (killed, or out of memory)"
            why = self._restart(pool, died, died)
        raise RequestError(
            503,
            f"this request {why}; the workers are starting again: retry",
            headers={"Retry-After": str(self._retry_after_s)},
        )

    def _restart(self, pool: ProcessPoolExecutor, why: str, others: str) -> str:
        """Replace ``pool`` once, for ``why``; what each request it held is told: ``why``, ``others`` for the rest
        (``/score/batch`` and ``/explain`` share the workers: a timeout's restart stopped the other route's
        requests, which were told their worker had died: dogfood 47)."""
        if pool is not self.pool:  # another request restarted the workers already
            return self._stopped.get(id(pool), why)
        log.error("a request %s: starting the workers again", why)
        self._stopped[id(pool)] = others
        self.pool, self._started = self._start(), None
        # A hung worker would hold its slot for good: killed, as shutdown() alone waits for it (Python 3.14's
        # kill_workers() is the public way).
        for process in list((pool._processes or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        return why

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)  # else they would outlive this process


def _loaded_worker() -> tuple[Scorer, TypeAdapter]:
    if _worker is None:
        raise RuntimeError("not a scoring worker process: _start_worker has not run here")
    return _worker


def _worker_ready() -> int:
    """This worker's pid, once its artifact is loaded; after a short wait, so that the other calls of a round go
    to the other workers, not all to the first one up."""
    _loaded_worker()
    time.sleep(0.05)
    return os.getpid()


def _worker_batch(body: bytes) -> list[dict[str, Any]]:
    scorer, validator = _loaded_worker()
    return batch_scores(scorer, validator, body)


def _worker_explain(records: list[dict[str, Any]]) -> dict[str, Any]:
    return explained_session(_loaded_worker()[0], records)


class InternalErrors:
    """A bug's 500, answered here: Starlette's own handler of ``Exception`` sends its response and then raises the
    error again, and uvicorn, meeting an error after a response began, closes the connection, so the client's next
    request on it failed with a reset (dogfood 109). An error after the response began still reaches uvicorn."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await JSONResponse({"detail": "internal error"}, status_code=500)(scope, receive, send)


def create_app(
    artifact: str | Path | Artifact,
    *,
    fmt: str = "torchscript",
    thresholds: Mapping[str, float] | None = None,
    limits: Limits = Limits(),
    threads: int = 1,
    store: StateStore | None = None,
    on_store_error: str = "degraded",
    reseed: Callable[[], object] | None = None,
    seed_check_s: float = 10.0,
    recurring: Mapping[str, Recurrence] | None = None,
) -> FastAPI:
    """The service for one artifact; the model is verified and loaded when the app starts, not per request
    (an :class:`Artifact` already opened, as ``serve`` opens it to refuse a bad one before binding, is verified
    once: opened again, an unsigned one was warned of twice).

    ``threads`` is torch's intra-op thread count: 1 keeps single-request latency low and lets requests
    run side by side on the other cores. ``store`` keeps the open sessions, entity history and labels of
    ``/events`` and ``/labels`` (:mod:`seqfraud.scoring.online`; default a :class:`MemoryStore`), closed
    (and so snapshotted) at shutdown; ``on_store_error`` is ``degraded`` or ``fail`` when it is unreachable.
    Every ``seed_check_s`` seconds the service checks that the store has not come back empty (a Redis restarted
    without persistence), and says so when it has. ``reseed`` seeds the store with its history again: with it,
    the service also checks that the store still holds that history, and seeds it again when a restart emptied it.
    ``recurring``: that history's :meth:`~seqfraud.scoring.history.History.recurrences`, which the online events'
    entity values are judged by (:class:`~seqfraud.scoring.online.Unmet`).
    """

    async def watch_store(store: StateStore, reseed: Callable[[], object] | None) -> None:
        """A Redis restarted without persistence comes back empty and healthy: without this, open sessions
        started again at their next event, and entity features read an empty history, unnoticed."""
        marked = False  # not reachable at start: the first check that reaches it marks it, saying nothing
        with suppress(StoreUnavailable):
            await run_in_threadpool(store.mark_live)
            marked = True
        unreachable = not marked  # at the last check: the first check that reaches it again says so
        while True:
            await asyncio.sleep(seed_check_s)
            try:
                lost = await run_in_threadpool(store.lost_live)
                if unreachable:
                    log.info("the state store answers again")
                    unreachable = False
                if lost and marked:
                    log.warning(
                        "the state store %s: the events of open sessions, entity rows and labels it took since "
                        "are gone; the next event of such a session reads from what the store still holds (its "
                        "first, where it holds none) until its events are sent again",
                        lost,
                    )
                await run_in_threadpool(store.mark_live)  # at each check: a later snapshot holds a later mark
                marked = True
                if reseed is None or await run_in_threadpool(store.holds_seed):
                    continue
                log.warning(
                    "the state store lost the history seeded at start (restarted empty?): seeding again"
                )
                await run_in_threadpool(reseed)
                log.info("seeded the state store again")
            except StoreUnavailable as e:  # /readyz says so meanwhile; the next check tries again
                unreachable = True
                log.warning(
                    "could not check or seed the state store: %s (tried again every %g s; meanwhile /events "
                    "answers degraded, or 503 with --on-store-error fail, and /readyz 503)",
                    e,
                    seed_check_s,
                )
            except Exception:  # a history file gone or damaged since start: say so, and try again
                log.exception("could not seed the state store again")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(threads)
        verified = (
            artifact if isinstance(artifact, Artifact) else open_artifact(artifact, **verification_settings())
        )
        scorer = Scorer.of_artifact(verified, fmt, thresholds, threads=threads)
        for said in unservable_values(scorer.spec, limits.max_value_chars):
            log.warning("%s", said)
        scorer.warmup()
        gc.collect()
        gc.freeze()  # a full collection over torch's and Polars' objects stops every thread for ~150 ms
        app.state.scorer = scorer
        app.state.validators = request_models(scorer.spec, limits)
        app.state.online = OnlineScorer(
            scorer,
            # As `seqfraud serve` makes it (review 274: an app made without a store kept the hour).
            store
            if store is not None
            else MemoryStore(
                session_ttl_s=session_ttl_s(scorer.spec), drops_kept_s=drops_kept_s(scorer.spec)
            ),
            on_store_error=on_store_error,
            seeded=reseed is not None,
            max_session_events=limits.max_session_events,
            recurring=recurring,
        )
        app.state.online_validators = online_request_models(scorer.spec, limits)
        app.state.reseed = reseed
        watching = asyncio.create_task(watch_store(app.state.online.store, reseed))
        # One worker process per batch and explain slot: a request its Capacity admits never waits for one.
        # forkserver: workers fork from a clean process (never from this one's threads), with the imports done.
        workers = limits.max_batch_in_flight + limits.max_explain_in_flight
        context: multiprocessing.context.BaseContext
        if "forkserver" in multiprocessing.get_all_start_methods():
            forkserver = multiprocessing.get_context("forkserver")
            forkserver.set_forkserver_preload([__name__])
            context = forkserver
        else:
            context = multiprocessing.get_context("spawn")
        initargs = (verified.path, fmt, thresholds, limits, threads, verified.manifest_sha256)
        app.state.workers = Workers(
            lambda: ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=initargs),
            workers,
            limits.worker_timeout_s,
            limits.retry_after_s,
        )
        try:
            try:  # start them all now, not on the first requests
                await app.state.workers.ready()
            except RequestError:
                raise RuntimeError("the scoring workers did not start: see the error above") from None
            log.info("serving %s (%s) from %s", scorer.model_version, fmt, verified.path)
            yield
        finally:
            watching.cancel()
            app.state.workers.shutdown()
            del app.state.workers
            app.state.online.close()
            gc.collect()  # the pool's queues sit in a reference cycle: free their semaphores now, not as "leaked"

    # No trailing-slash redirect: its Location named the client's Host header, where a client that follows it
    # re-posts the events (review 211).
    app = FastAPI(title="seqfraud scoring", lifespan=lifespan, redirect_slashes=False)
    capacity = {
        route: Capacity(route, slots, limits.max_body_memory, limits.retry_after_s)
        for route, slots in [
            ("/score", limits.max_score_in_flight),
            ("/score/batch", limits.max_batch_in_flight),
            ("/explain", limits.max_explain_in_flight),
            ("/events", limits.max_score_in_flight),
            ("/labels", limits.max_batch_in_flight),
        ]
    }

    @asynccontextmanager
    async def admitted(request: Request, route: str, max_bytes: int) -> AsyncIterator[bytes]:
        """The body, read and held while its route has room for it: 415, 413 or 503 (never a wait) otherwise."""
        check_json_content_type(request)
        room = capacity[route]
        room.refuse_if_full()
        with room.body() as take:
            body = await read_body(request, max_bytes, take)
            with room.slot():
                yield body

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        body = {"detail": exc.detail} | ({"errors": exc.errors} if exc.errors else {})
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(DataValidationError)
    async def data_error(request: Request, exc: DataValidationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        client = f"{request.client.host}:{request.client.port}" if request.client else "client"
        log.info(
            "%s: %s %s: the connection closed before the body was in (client abort or --body-timeout)",
            client,
            request.method,
            request.url.path,
        )
        return JSONResponse({"detail": "client disconnected"}, status_code=400)  # nobody is left to read it

    app.add_middleware(InternalErrors)
    store_refusals = Occasional(log, "answered 503, the state store unavailable")

    def store_down(e: StoreUnavailable) -> RequestError:
        """503, saying why as far as :attr:`StoreUnavailable.public` allows; the whole reason goes to the log."""
        store_refusals.note(e)
        why = f": {e.public}" if e.public else "; the service's log says why"
        return RequestError(
            503, f"the state store is unavailable{why}", headers={"Retry-After": str(limits.retry_after_s)}
        )

    @app.get("/healthz", response_model=Health)
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model_version": request.app.state.scorer.model_version})

    @app.get("/readyz", response_model=Health, responses=_errors(503))
    async def readyz(request: Request) -> JSONResponse:
        """``/healthz`` plus the state store: 503 while it cannot be reached (``/events`` then answers degraded
        or 503, ``/labels`` and ``/sessions`` 503), or while it lacks the history seeded at start; and 503 for good
        once the batch and explain workers cannot start again."""
        if request.app.state.workers.cannot_start:
            raise RequestError(
                503, "the workers of /score/batch and /explain cannot start: restart the service"
            )
        store = request.app.state.online.store
        try:
            await run_in_threadpool(store.ping)
            lost = request.app.state.reseed is not None and not await run_in_threadpool(store.holds_seed)
        except StoreUnavailable as e:
            raise store_down(e) from None
        if lost:
            lost_seed = "it lost the history seeded at start (restarted empty?); seeding again"
            raise store_down(StoreUnavailable(lost_seed, public=lost_seed))
        return JSONResponse({"status": "ok", "model_version": request.app.state.scorer.model_version})

    @app.get("/metadata", response_model=dict[str, Any])
    async def metadata(request: Request) -> JSONResponse:
        """The artifact's manifest, less host paths, and the band thresholds in force: ``serve --review/--decline``
        replaces the manifest's, which /metadata alone showed (review 113)."""
        scorer: Scorer = request.app.state.scorer
        return JSONResponse(
            public_manifest(scorer.manifest) | {"serving": {"thresholds": dict(scorer.thresholds)}}
        )

    async def read_session(request: Request, body: bytes) -> tuple[Scorer, list[dict[str, Any]]]:
        """The scorer and one session's validated event records, as ``/score`` and ``/explain`` take them."""
        scorer: Scorer = request.app.state.scorer
        stateless(scorer)
        session_validator, _ = request.app.state.validators
        if len(body) > OFF_LOOP_BYTES:
            parsed = await run_in_threadpool(parse, session_validator, body)
        else:
            parsed = parse(session_validator, body)
        return scorer, one_session(parsed["events"], scorer.spec, "events")

    @app.post("/score", response_model=ScoreResponse, responses=_errors(400, 413, 415, 422, 501, 503))
    async def score(request: Request) -> JSONResponse:
        """One session's events: ``{"events": [{column: value, ...}, ...]}``."""
        t0 = time.perf_counter()
        async with admitted(request, "/score", limits.max_session_body_bytes) as body:
            scorer, records = await read_session(request, body)
            result = await run_in_threadpool(scorer.score, records, source="request")
        result = result.select(S.SESSION_ID, S.SCORE, S.BAND)
        return JSONResponse(
            result.row(0, named=True)
            | {
                "model_version": scorer.model_version,
                "latency_ms": round((time.perf_counter() - t0) * 1e3, 3),
            }
        )

    @app.post("/explain", response_model=ExplainResponse, responses=_errors(400, 413, 415, 422, 501, 503))
    async def explain(request: Request) -> JSONResponse:
        """One session, as for ``/score``: its score and band plus each kept event's ``contribution`` (by occlusion)."""
        t0 = time.perf_counter()
        async with admitted(request, "/explain", limits.max_session_body_bytes) as body:
            scorer, records = await read_session(request, body)
            kept = scorer.spec.window_length(len(records))
            if kept > limits.max_explain_events:
                raise RequestError(
                    422,
                    f"events: /explain takes sessions of at most {limits.max_explain_events} "
                    f"events (--max-explain-events), got {kept}; an explanation costs one forward "
                    f"pass per event",
                )
            result = await app.state.workers.run(_worker_explain, records)
        return JSONResponse(
            result
            | {
                "model_version": scorer.model_version,
                "latency_ms": round((time.perf_counter() - t0) * 1e3, 3),
            }
        )

    @app.post("/score/batch", response_model=BatchResponse, responses=_errors(400, 413, 415, 422, 501, 503))
    async def score_batch(request: Request) -> JSONResponse:
        """Many sessions: ``{"sessions": [{"events": [...]}, ...]}``; results in request order."""
        t0 = time.perf_counter()
        scorer: Scorer = request.app.state.scorer
        stateless(scorer)
        async with admitted(request, "/score/batch", limits.max_body_bytes) as body:
            results = await app.state.workers.run(_worker_batch, body)
        return JSONResponse(
            {
                "results": results,
                "model_version": scorer.model_version,
                "latency_ms": round((time.perf_counter() - t0) * 1e3, 3),
            }
        )

    @app.post("/events", response_model=EventsResponse, responses=_errors(400, 413, 415, 422, 501, 503))
    async def events(request: Request) -> JSONResponse:
        """Events of open sessions, ``{"events": [{column: value, ...}, ...]}``: each touched session's score
        after them (a repeated event changes nothing); ``degraded`` when the store could not be reached."""
        t0 = time.perf_counter()
        online: OnlineScorer = request.app.state.online
        async with admitted(request, "/events", limits.max_session_body_bytes) as body:
            validator = request.app.state.online_validators[0]
            if len(body) > OFF_LOOP_BYTES:
                parsed = await run_in_threadpool(parse, validator, body)
            else:
                parsed = parse(validator, body)
            records = few_sessions(parsed["events"], online.spec, limits.max_sessions_per_events)
            try:
                results = await run_in_threadpool(online.events, records, source="request")
            except StoreUnavailable as e:
                raise store_down(e) from None
            except StoreBusy as e:  # the store is up: the answer waits for a retry, which event ids make safe
                log.warning("%s", e)
                raise RequestError(
                    503, f"{e}; retry", headers={"Retry-After": str(limits.retry_after_s)}
                ) from None
        return JSONResponse(
            {
                "results": results,
                "model_version": online.scorer.model_version,
                "latency_ms": round((time.perf_counter() - t0) * 1e3, 3),
            }
        )

    @app.post("/labels", response_model=LabelsResponse, responses=_errors(400, 413, 415, 422, 501, 503))
    async def labels(request: Request) -> JSONResponse:
        """Confirmed labels, ``{"labels": [{SESSION: ..., LABEL: 0 | 1, LABEL_TIME: ...}]}`` in the label table's
        column names (:func:`~seqfraud.scoring.online.label_keys`): the entity risk features count each one from
        the time it became known."""
        online: OnlineScorer = request.app.state.online
        async with admitted(request, "/labels", limits.max_session_body_bytes) as body:
            parsed = await run_in_threadpool(parse, request.app.state.online_validators[1], body)
            taken = read_labels(parsed["labels"], online.spec, "request")
            try:
                unseen = await run_in_threadpool(online.labels, taken)
            except StoreUnavailable as e:
                raise store_down(e) from None
        return JSONResponse({"accepted": len(taken), "unseen": unseen})

    # A path parameter: an id may hold "/", which the service accepts as training does.
    @app.get("/sessions/{session_id:path}", response_model=SessionResponse, responses=_errors(404, 503))
    async def session(request: Request, session_id: str) -> JSONResponse:
        """An open session's latest score and state; 404 once it expired, or before its first event."""
        online: OnlineScorer = request.app.state.online
        try:
            state = await run_in_threadpool(online.session, session_id)
        except StoreUnavailable as e:
            raise store_down(e) from None
        if state is None:
            shown = (
                session_id
                if len(session_id) <= 100
                else f"{session_id[:100]}... ({len(session_id):,} characters)"
            )
            said = f"no open session {shown!r} (never seen, or expired)"
            spec = online.spec
            if (
                shown == session_id
                and spec.schema.session_id in spec.integer_ids
                and rewritten_id(session_id, spec.integer_ids[spec.schema.session_id])
            ):
                # /events refuses such a form of an integer id, so none is held under it (dogfood 187).
                plain = int(Decimal(session_id))
                said += (
                    f"; the model's session ids are integers, held as their digits alone: /sessions/{plain}"
                )
            elif shown == session_id and (forms := spec.id_forms).off(spec.schema.session_id, session_id):
                # Held as /events took it: a zero-padded id that lost its zeros (dogfood 270), or another case.
                width = forms.widths.get(spec.schema.session_id)
                case = forms.cases.get(spec.schema.session_id)
                said += (
                    f"; the model's session ids are {width} digits, zero-padded: /sessions/{session_id.zfill(width)}"
                    if width and session_id.isdigit()
                    else f"; the model's session ids are written in {case} case: /sessions/"
                    + (session_id.upper() if case == "upper" else session_id.lower())
                )
            raise RequestError(404, said)
        # The flags /events answers with, so that a reader of the state knows the score's footing (dogfood 120).
        return JSONResponse(state.public() | length_flags(online.spec, state.n_events))

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the request bodies, from the validators of the loaded artifact's schema."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            session_validator, batch_validator = app.state.validators
            events_validator, labels_validator = app.state.online_validators
            session_example, batch_example = request_examples(app.state.scorer.spec)
            schema = app.state.scorer.spec.schema
            # A model that counts a label delay takes no label time: its example sent one (review 130).
            label = ("s1", 1, "2026-03-20T00:00:00Z")[: 3 if schema.label_time else 2]
            examples = {
                "session": session_example,
                "batch": batch_example,
                "events": session_example,
                "labels": {"labels": [dict(zip(label_keys(schema), label))]},
            }
            refs, defs = TypeAdapter.json_schemas(
                [
                    ("session", "validation", session_validator),
                    ("batch", "validation", batch_validator),
                    ("events", "validation", events_validator),
                    ("labels", "validation", labels_validator),
                ],
                ref_template="#/components/schemas/{model}",
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            for path, key in [
                ("/score", "session"),
                ("/explain", "session"),
                ("/score/batch", "batch"),
                ("/events", "events"),
                ("/labels", "labels"),
            ]:
                doc["paths"][path]["post"]["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": refs[(key, "validation")], "example": examples[key]}
                    },
                }
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook for a custom OpenAPI document
    return app
