"""Serve an artifact over HTTP: ``seqfraud serve --artifact A --port P [--threads N]``."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import fields

# Requests are a few hundred rows: one Polars thread does them fastest, and an idle pool's spinning threads
# would take CPU the requests need. Set before Polars is imported; an explicit setting wins.
os.environ.setdefault("POLARS_MAX_THREADS", "1")

from seqfraud.baselines import AggregateLayout
from seqfraud.cli import (
    add_history_arguments,
    add_verification_arguments,
    apply_verification_arguments,
    count,
    history_of,
)
from seqfraud.decisions import DecisionError, check_thresholds
from seqfraud.errors import command, is_finite
from seqfraud.export.artifact import open_artifact, verification_settings
from seqfraud.scoring.history import History
from seqfraud.scoring.online import StateReader, drops_kept_s, expiry_said, seed, session_ttl_s
from seqfraud.scoring.redis_store import RedisStore
from seqfraud.scoring.server import ConnectionLimits, run, unbindable
from seqfraud.scoring.service import Limits, create_app
from seqfraud.scoring.state import MemoryStore, StateStore, StoreUnavailable

log = logging.getLogger(__name__)
SEED_TIMEOUT_S = 30.0


def holds_context(store: StateStore) -> bool:
    """Whether a store holds entity context at start: rows restored from a snapshot, or a history that a replica
    seeded into a shared Redis (unreachable: not known, and said already)."""
    if isinstance(store, MemoryStore):
        return store.holds_rows()
    try:
        return store.holds_seed()
    except StoreUnavailable:
        return True


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default, where it has one its help does not say already: ``(default: None)`` followed an
    unset option's own words (dogfood 192: "(default: all) (default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


@command
def main(argv: list[str] | None = None) -> None:
    defaults, conn = Limits(), ConnectionLimits()
    p = argparse.ArgumentParser(
        prog="seqfraud serve",
        description="Real-time scoring service (FastAPI + uvicorn).",
        formatter_class=_Defaults,
    )
    p.add_argument("--artifact", required=True, help="artifact directory written by export.py")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--format", default="torchscript", choices=("torchscript", "pt2"), help="the model file to load"
    )
    p.add_argument("--threads", type=count, default=1, help="torch intra-op threads per request (default 1)")
    p.add_argument("--review", type=float, help="override the artifact's review threshold (with --decline)")
    p.add_argument("--decline", type=float, help="override the artifact's decline threshold (with --review)")
    p.add_argument(
        "--max-events-per-session",
        type=int,
        default=defaults.max_events_per_session,
        help="events of one session in a request, and of one /events request whatever its sessions (more is a 422)",
    )
    p.add_argument(
        "--max-session-events",
        type=int,
        default=defaults.max_session_events,
        help="events one open session takes over all its /events requests; the request that would pass it is a "
        "422 (its earlier sessions are taken)",
    )
    p.add_argument(
        "--max-sessions-per-batch",
        type=int,
        default=defaults.max_sessions_per_batch,
        help="sessions of one /score/batch request (more is a 422)",
    )
    p.add_argument(
        "--max-sessions-per-events",
        type=int,
        default=defaults.max_sessions_per_events,
        help="sessions of one /events request (with entity features, each run of one session's consecutive "
        "events counts); more is a 422",
    )
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="a /score/batch body")
    p.add_argument(
        "--max-session-body-bytes",
        type=int,
        default=defaults.max_session_body_bytes,
        help="a /score or /explain body",
    )
    p.add_argument(
        "--max-explain-events",
        type=int,
        default=defaults.max_explain_events,
        help="kept events of an /explain session; more is a 422",
    )
    for route, default in [
        ("score", defaults.max_score_in_flight),
        ("batch", defaults.max_batch_in_flight),
        ("explain", defaults.max_explain_in_flight),
    ]:
        p.add_argument(
            f"--max-{route}-in-flight",
            type=int,
            default=default,
            help=f"{route} requests at work at once; more get 503 with Retry-After",
        )
    p.add_argument(
        "--max-value-chars",
        type=int,
        default=defaults.max_value_chars,
        help="characters of one string value (an id, a category, an entity value); longer is a 422",
    )
    p.add_argument(
        "--worker-timeout",
        dest="worker_timeout_s",
        type=float,
        default=defaults.worker_timeout_s,
        help="seconds one /score/batch or /explain may take in its worker process; past it the workers restart "
        "and the request gets 503",
    )
    p.add_argument(
        "--max-body-memory",
        type=int,
        default=defaults.max_body_memory,
        help="request body bytes held at once per route class; more get 503",
    )
    p.add_argument(
        "--retry-after",
        dest="retry_after_s",
        type=int,
        default=defaults.retry_after_s,
        help="seconds, in the Retry-After of a 503",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=conn.header_timeout,
        help="seconds from connecting (or a request's first byte) to the end of its headers",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=conn.body_timeout,
        help="seconds to receive a request body, or to hand over a response the client does not read",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=conn.keep_alive_timeout,
        help="seconds an idle connection stays open between requests",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=conn.max_connections,
        help="open connections; more get 503 (kept below the open-file limit)",
    )
    p.add_argument(
        "--max-header-bytes",
        type=int,
        default=conn.max_header_bytes,
        help="request line and headers; more is a 431",
    )
    p.add_argument("--max-headers", type=int, default=conn.max_headers, help="header fields; more is a 431")
    p.add_argument(
        "--max-pipelined",
        type=int,
        default=conn.max_pipelined,
        help="requests a client sends ahead of unread answers (HTTP pipelining); more closes the connection",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    online = p.add_argument_group("online state (POST /events, /labels, GET /sessions/ID; docs/serving.md)")
    online.add_argument("--state", default="memory", choices=("memory", "redis"), help="where sessions live")
    online.add_argument("--redis-url", default="redis://localhost:6379/0", help="with --state redis")
    online.add_argument("--redis-prefix", default="seqfraud:", help="key prefix, to share one Redis")
    online.add_argument(
        "--redis-timeout", type=float, default=0.05, help="seconds before Redis counts as down"
    )
    online.add_argument(
        "--session-ttl",
        type=float,
        help="seconds a session lives after its last event (default: an hour, or 99.9%% of the training sessions' "
        "longest gaps between two events where longer, a week at most)",
    )
    online.add_argument(
        "--max-sessions", type=int, default=100_000, help="open sessions held (--state memory)"
    )
    online.add_argument(
        "--max-session-memory",
        type=int,
        default=2 << 30,
        help="bytes of open sessions' states held together (--state memory); the least recently updated go first",
    )
    online.add_argument(
        "--entity-retention", type=float, default=None, help="seconds entity history is kept (default: all)"
    )
    online.add_argument(
        "--snapshot", help="file the memory state is restored from at start and saved to at stop"
    )
    online.add_argument(
        "--on-store-error",
        default="degraded",
        choices=("degraded", "fail"),
        help="when the store is down: score the request's events alone and flag it, or answer 503",
    )
    add_history_arguments(
        online,
        "artifacts with entity features: put this history (as seqfraud score reads it) into the store at start, "
        "so that the first events' entity features read it; without it a fresh store starts empty",
    )
    add_verification_arguments(p)
    args = p.parse_args(argv)
    if (args.review is None) != (args.decline is None):
        p.error("--review and --decline go together")
    if args.review is not None:
        try:  # here, not in the app's start, which told it as a traceback (dogfood 54)
            check_thresholds({"review": args.review, "decline": args.decline})
        except DecisionError as e:
            p.error(f"--review, --decline: {e}")
    # A limit of 0 serves nothing: --worker-timeout 0 answered every batch with 503, --max-pipelined 0 closed any
    # connection that sent two requests at once (dogfood 47). NaN passed `<= 0` and switched the slow-client
    # deadlines and session expiry off; inf ended Redis's connect in a traceback (dogfood 137).
    flags = {a.dest: a.option_strings[0] for a in p._actions if a.option_strings}
    store_limits = ("max_sessions", "max_session_memory", "session_ttl", "redis_timeout", "entity_retention")
    for name in [*(f.name for f in (*fields(Limits), *fields(ConnectionLimits))), *store_limits]:
        # Unset: --entity-retention keeps all; --session-ttl is read from the spec below.
        if (value := getattr(args, name)) is None:
            continue
        least, wanted = (value >= 0, "at least 0") if name == "retry_after_s" else (value > 0, "positive")
        if not (least and is_finite(value)):
            p.error(f"{flags[name]} must be {wanted} and finite, got {value}")

    if 0 < args.port <= 65535 and (busy := unbindable(args.host, args.port)):
        p.error(f"--port {args.port}: {busy}")

    # Before anything logs: a snapshot's restore line (its age, what it held) was dropped (dogfood 32).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_verification_arguments(args)  # Scorer.load runs in the app's startup
    # Refused before binding a port: an artifact that fails verification, a history that cannot be read.
    artifact = open_artifact(args.artifact, **verification_settings(None, None))
    artifact.calibration  # noqa: B018  # read and checked here: a refused one was a startup traceback (dogfood 116)
    spec = artifact.spec
    if args.session_ttl is None:
        args.session_ttl = session_ttl_s(spec)
        log.info("sessions expire %.0f s after their last event (--session-ttl)", args.session_ttl)
    if said := expiry_said(spec, args.session_ttl):
        log.warning("%s", said)
    log.info(
        "a session dropped (idle past --session-ttl, or for room) is answered restarted at its next event within "
        "%.0f s of the drop",
        drops_kept_s(spec),
    )
    history = history_of(args, spec)
    if args.state == "redis" and args.snapshot:
        p.error("--snapshot is for --state memory; Redis keeps the state itself")

    def redis_store(timeout_s: float) -> RedisStore:
        return RedisStore(
            args.redis_url,
            prefix=args.redis_prefix,
            session_ttl_s=args.session_ttl,
            entity_retention_s=args.entity_retention,
            timeout_s=timeout_s,
            drops_kept_s=drops_kept_s(spec),
        )

    store: StateStore
    if args.state == "redis":
        store = redis_store(args.redis_timeout)
    else:
        store = MemoryStore(
            max_sessions=args.max_sessions,
            max_session_bytes=args.max_session_memory,
            session_ttl_s=args.session_ttl,
            entity_retention_s=args.entity_retention,
            snapshot=args.snapshot,  # read here, so that a snapshot of another model is refused before the port
            model=artifact.run_id,
            drops_kept_s=drops_kept_s(spec),
        )
        # And each session's state checked here too: a damaged one then stops start-up with one line, not a
        # traceback from the service's start.
        layout = AggregateLayout(spec) if "stacker" in artifact.manifest else None
        reader = StateReader(spec, artifact.step_shape(args.format), artifact.run_id, layout)
        store.check_restored(reader.read, artifact.run_id, len(spec.schema.entities))

    if isinstance(store, RedisStore):
        try:
            store.ping()
            log.info("state store: Redis at %s", store.where)
        except StoreUnavailable as e:  # it may come up later: /events answers degraded (or 503) until then
            log.warning("state store: %s (/readyz answers 503 until it can be reached)", e)

    def seed_store(history: History) -> None:
        # Thousands of rows a transaction: a bulk load, not a request, so a connection with a bulk timeout.
        target = redis_store(max(args.redis_timeout, SEED_TIMEOUT_S)) if args.state == "redis" else store
        try:
            rows, labels = seed(target, history, spec)
        finally:
            if target is not store:
                target.close()
        log.info(
            "seeded the store from %s: %s entity rows and %s labels (rows it held already are written again, "
            "not added; a label it held is replaced only by one known later)",
            history.source,
            f"{rows:,}",
            f"{labels:,}",
        )

    if spec.entity is not None and history is None and not holds_context(store):
        # The docs said so, the start did not (dogfood 63: live scores 0.018 from batch's with a history; dogfood
        # 95: a replica on a Redis that no replica had seeded, 0.55 for a ring's device where seeded ones gave 0.87).
        log.warning(
            "this model reads entity context (%s) and starts with none: until live events fill its windows (the "
            "longest is %s), its scores differ from batch scoring with a history; give --history-events (and "
            "--history-labels)%s",
            ", ".join(spec.entity.columns),
            max(zip(spec.entity.window_us, spec.entity.windows))[1],
            ", or --snapshot"
            if isinstance(store, MemoryStore)
            else " to this replica or another on the same Redis",
        )
    if history is not None:
        try:
            seed_store(history)
        except StoreUnavailable as e:  # as without a history: serve, and seed once the store can be reached
            log.warning(
                "--history-events: could not seed the state store: %s (entity models answer /events degraded, or "
                "503 with --on-store-error fail, and /readyz 503, until the service seeds it: it tries every 10 s)",
                e,
            )
    app = create_app(
        artifact,
        fmt=args.format,
        threads=args.threads,
        thresholds=None if args.review is None else {"review": args.review, "decline": args.decline},
        limits=Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)}),
        store=store,
        on_store_error=args.on_store_error,
        # Redis may restart empty under a running replica; the files are read again, as at start.
        reseed=None
        if history is None or args.state != "redis"
        else lambda: seed_store(history_of(args, spec)),
        recurring=None if history is None else history.recurrences(spec),
    )
    if not 0 <= args.port <= 65535:  # 99999 bound port 34463 (the number modulo 65536), unsaid: dogfood 54
        p.error(f"--port must be a TCP port, 0 (any free one) to 65535, got {args.port}")
    run(
        app,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        limits=ConnectionLimits(**{f.name: getattr(args, f.name) for f in fields(ConnectionLimits)}),
    )
