"""The real-time HTTP service: a FastAPI app around one :class:`Scorer`, loaded once at start-up.

Requests are checked against validators built from the artifact's own schema, so a bad request gets a 4xx
that names the field before anything is scored. Scoring runs in a worker thread, off the event loop.
"""

import logging
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, Required, TypedDict

from seqfraud import schema as S
from seqfraud.data.events import DataValidationError
from seqfraud.features.spec import Spec
from seqfraud.scoring.scorer import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Per-request bounds: what one request may cost the service in memory and time."""

    max_events_per_session: int = 4096
    max_sessions_per_batch: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024


class RequestError(Exception):
    """A request refused with ``status`` (4xx) and a message that names what is wrong."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


def _typed(expected: str, *types: type, nullable: bool = False) -> Any:
    """A strict JSON type check with one readable message (a union would report once per member)."""

    def check(value: Any) -> Any:
        if (value is None and nullable) or (isinstance(value, types) and (bool in types or not isinstance(value, bool))):
            return value
        raise PydanticCustomError("wrong_type", "expected {expected}, got {got}",
                                  {"expected": expected, "got": type(value).__name__})

    return Annotated[Any, PlainValidator(check)]


IDENT = _typed("a string or an integer", str, int)
CATEGORY = _typed("a string, an integer, a boolean or null", str, int, bool, nullable=True)
NUMBER = Annotated[float | None, Field(strict=True, allow_inf_nan=False)]  # NaN, inf and 1e400 are refused
FORBID = ConfigDict(extra="forbid")


def request_models(spec: Spec, limits: Limits) -> tuple[TypeAdapter, TypeAdapter]:
    """Validators of ``POST /score`` and ``POST /score/batch`` bodies, from the spec's column roles.

    The session id, timestamp (ISO-8601 string or integer epoch) and event type are required; other
    fields may be null or left out, which is a null, exactly as a null in training. Unknown fields are
    refused. TypedDicts keyed by the column names themselves (any string) validate straight to the
    dicts the scorer takes.
    """
    s = spec.schema
    event = TypedDict("Event", {s.session_id: Required[IDENT], s.timestamp: Required[IDENT], s.event_type: Required[IDENT],
                                **{c: NotRequired[CATEGORY] for c in s.categorical},
                                **{c: NotRequired[NUMBER] for c in s.numerical}})
    events = Annotated[list[with_config(FORBID)(event)],
                       Field(min_length=1, max_length=limits.max_events_per_session)]
    session = with_config(FORBID)(TypedDict("ScoreRequest", {"events": Required[events]}))
    sessions = Annotated[list[session], Field(min_length=1, max_length=limits.max_sessions_per_batch)]
    batch = with_config(FORBID)(TypedDict("BatchRequest", {"sessions": Required[sessions]}))
    return TypeAdapter(session), TypeAdapter(batch)


def _where(loc: tuple) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return path or "body"


def parse(validator: TypeAdapter, body: bytes) -> dict[str, Any]:
    try:
        return validator.validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_context=False, include_input=False)
        if errors[0]["type"] == "json_invalid":
            raise RequestError(400, f"malformed JSON: {errors[0]['msg']}") from None
        detail = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise RequestError(422, detail + more, [{"loc": _where(err["loc"]), "msg": err["msg"]} for err in errors]) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared):,} bytes exceeds the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def one_session(events: list[dict[str, Any]], spec: Spec, where: str) -> list[dict[str, Any]]:
    """The events, refused unless they all carry one session id."""
    ids = {e[spec.schema.session_id] for e in events}
    if len(ids) > 1:
        raise RequestError(422, f"{where}.{spec.schema.session_id}: one session per request, got {len(ids)} "
                                f"session ids; send several sessions to /score/batch")
    return events


def create_app(artifact: str | Path, *, fmt: str = "torchscript", thresholds: Mapping[str, float] | None = None,
               limits: Limits = Limits(), threads: int = 1) -> FastAPI:
    """The service for one artifact; the model is verified and loaded when the app starts, not per request.

    ``threads`` is torch's intra-op thread count: 1 keeps single-request latency low and lets requests
    run side by side on the other cores.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(threads)
        scorer = Scorer.load(artifact, fmt=fmt, thresholds=thresholds)
        scorer.warmup()
        app.state.scorer = scorer
        app.state.validators = request_models(scorer.spec, limits)
        log.info("serving %s (%s) from %s", scorer.model_version, fmt, artifact)
        yield

    app = FastAPI(title="seqfraud scoring", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        body = {"detail": exc.detail} | ({"errors": exc.errors} if exc.errors else {})
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(DataValidationError)
    async def data_error(request: Request, exc: DataValidationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, str]:
        return {"status": "ok", "model_version": request.app.state.scorer.model_version}

    @app.get("/metadata")
    async def metadata(request: Request) -> dict[str, Any]:
        return request.app.state.scorer.manifest

    async def read_session(request: Request) -> tuple[Scorer, list[dict[str, Any]]]:
        """The scorer and one session's validated event records, as ``/score`` and ``/explain`` take them."""
        scorer: Scorer = request.app.state.scorer
        session_validator, _ = request.app.state.validators
        body = parse(session_validator, await read_body(request, limits.max_body_bytes))
        return scorer, one_session(body["events"], scorer.spec, "events")

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        """One session's events: ``{"events": [{column: value, ...}, ...]}``."""
        t0 = time.perf_counter()
        scorer, records = await read_session(request)
        result = await run_in_threadpool(scorer.score, records, source="request")
        result = result.select(S.SESSION_ID, S.SCORE, S.BAND)
        return JSONResponse(result.row(0, named=True) | {
            "model_version": scorer.model_version, "latency_ms": round((time.perf_counter() - t0) * 1e3, 3)})

    @app.post("/explain")
    async def explain(request: Request) -> JSONResponse:
        """One session, as for ``/score``: its score and band plus each kept event's ``contribution`` (by occlusion)."""
        t0 = time.perf_counter()
        scorer, records = await read_session(request)
        result = await run_in_threadpool(scorer.score, records, source="request")
        explained = await run_in_threadpool(scorer.explain, records, source="request")
        events = explained.select(S.POSITION, S.EVENT, pl.col(S.EVENT_TIME).dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
                                  S.CONTRIBUTION)
        return JSONResponse(result.select(S.SESSION_ID, S.SCORE, S.BAND).row(0, named=True) | {
            "events": events.to_dicts(), "model_version": scorer.model_version,
            "latency_ms": round((time.perf_counter() - t0) * 1e3, 3)})

    @app.post("/score/batch")
    async def score_batch(request: Request) -> JSONResponse:
        """Many sessions: ``{"sessions": [{"events": [...]}, ...]}``; results in request order."""
        t0 = time.perf_counter()
        scorer: Scorer = request.app.state.scorer
        _, batch_validator = request.app.state.validators
        batch = parse(batch_validator, await read_body(request, limits.max_body_bytes))
        sessions = [one_session(s["events"], scorer.spec, f"sessions[{i}].events") for i, s in enumerate(batch["sessions"])]
        ids = [str(records[0][scorer.spec.schema.session_id]) for records in sessions]
        seen: set[str] = set()
        for i, sid in enumerate(ids):
            if sid in seen:
                raise RequestError(422, f"sessions[{i}]: session id {sid!r} appears in more than one session")
            seen.add(sid)
        result = await run_in_threadpool(scorer.score, [r for records in sessions for r in records], source="request")
        by_id = {row[S.SESSION_ID]: row for row in result.select(S.SESSION_ID, S.SCORE, S.BAND).iter_rows(named=True)}
        return JSONResponse({"results": [by_id[sid] for sid in ids], "model_version": scorer.model_version,
                             "latency_ms": round((time.perf_counter() - t0) * 1e3, 3)})

    return app
