"""The HTTP server: uvicorn's httptools protocol plus the connection limits it lacks.

uvicorn times out only a kept-alive connection between two requests. A connection that sends nothing, or
half its headers, or half its body, is held forever, headers are neither size- nor count-limited, and every
connection is accepted until the process runs out of file descriptors. :class:`GuardedProtocol` adds a
deadline for each request's headers and one for its body (and for a response the client does not read), caps
on header bytes and count, and a cap on open connections: past it, the connection that has waited longest for
its client is closed with 503 and ``Retry-After``, so stalled clients cannot lock a new one out. Requests in flight are capped per route by the app (:mod:`seqfraud.scoring.service`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
from contextlib import suppress
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# Descriptors left to the process itself (model files, logs, threads) and to connections refused at the cap.
FD_RESERVE = 256


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may hold: time (seconds), header bytes and count, and how many connections at once."""

    header_timeout: float = 5.0  # from the connection (or the request's first byte) to the end of its headers
    body_timeout: float = (
        10.0  # to receive a request body, and to hand over a response the client stopped reading
    )
    keep_alive_timeout: float = 5.0  # an idle connection between two requests
    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024  # request line and headers
    max_headers: int = 64
    max_pipelined: int = 16  # requests a client has sent ahead of the answers it has not read; more closes it
    retry_after_s: int = 1


class _StopParsing(Exception):
    """Raised in a parser callback: httptools stops reading the data at hand, uvicorn then calls
    ``send_400_response``."""


def _response(status: int, detail: str, *headers: str) -> bytes:
    """A complete JSON error response that closes the connection, for refusals made before the app runs."""
    body = json.dumps({"detail": detail}).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def _shed_app(retry_after_s: int) -> Any:
    """The ASGI app a connection over the cap gets: 503 with Retry-After, then the connection closes."""
    body = json.dumps({"detail": f"too many open connections; retry after {retry_after_s} s"}).encode()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after_s).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class GuardedProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with :class:`ConnectionLimits` (set on a subclass by :func:`protocol`).

    A read timer runs for the headers from the moment the connection opens (or, on a kept-alive connection, a
    request's first byte arrives), then for the body, and stops when the body is in; a write timer runs while
    the client leaves a response unread. Connections that are waiting for a client (headers, body, or the next
    request) are kept in ``reading``, oldest first: a new connection over the cap closes the oldest of them,
    with a 503, so that stalled clients can never lock out a new one. Only when every open connection has a
    request at work is the new one refused: its headers are read (for at most a second) and answered 503.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    reading: ClassVar[dict[GuardedProtocol, None]] = {}  # one per server, set by protocol()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._reading_headers, self._received, self._too_large = True, 0, False
        self._cycles: list[Any] = []  # requests at work or queued: _shut tells them the connection is gone
        header_timeout = self.limits.header_timeout
        if len(self.connections) > self.limits.max_connections:
            if self.reading:
                next(iter(self.reading))._close(
                    503,
                    "the server is full and this connection waited longest",
                    f"retry-after: {self.limits.retry_after_s}",
                )
            else:
                self.app = _shed_app(self.limits.retry_after_s)
                header_timeout = min(header_timeout, 1.0)
                log.info(
                    "%s: answered 503: %d connections open, all at work (--max-connections)",
                    self._peer(),
                    len(self.connections) - 1,
                )
        self._read_timer = self._timer(header_timeout, "headers not received")
        self._waiting(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting(False)
        for timer in (self._read_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._received += len(data)  # httptools buffers a header line whole: cap what waits for its end
        super().data_received(data)
        if (
            self._reading_headers
            and self._received > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes, self._headers, self._too_large = 0, 0, False
        if (
            self._read_timer is None
        ):  # a kept-alive connection's next request; the first is timed from connect
            self._read_timer = self._timer(self.limits.header_timeout, "headers not received")

    def on_url(self, url: bytes) -> None:
        self._count_header(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value), 1)
        super().on_header(name, value)

    def _count_header(self, size: int, fields: int) -> None:
        self._header_bytes += size
        self._headers += fields
        if self._header_bytes > self.limits.max_header_bytes or self._headers > self.limits.max_headers:
            self._too_large = True
            raise _StopParsing

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = self._timer(self.limits.body_timeout, "body not received")
        self._waiting(True)  # the body's wait starts now
        super().on_headers_complete()
        self._cycles = [c for c in self._cycles if not c.response_complete] + [self.cycle]
        if len(self.pipeline) > self.limits.max_pipelined:
            # uvicorn queues pipelined requests without a bound, and reads on after each answer, so a client
            # that sends without reading grew the server by gigabytes (dogfood 43). Answers go out in order, so
            # none can be sent ahead of the queue: close, without one.
            log.info(
                "%s: closed: more than %d pipelined requests wait for answers (--max-pipelined)",
                self._peer(),
                self.limits.max_pipelined,
            )
            self._waiting(False)
            self._shut()
            raise _StopParsing

    def on_message_complete(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = None
        self._reading_headers, self._received = True, 0  # what comes next is the next request
        self._waiting(False)  # at work
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._waiting(True)  # for the next request

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_headers()
        elif not self.transport.is_closing():
            super().send_400_response(msg)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self._timer(self.limits.body_timeout, "response not read")

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _waiting(self, on: bool) -> None:
        self.reading.pop(self, None)
        if on:
            self.reading[self] = None  # to the end: the newest wait

    def _refuse_headers(self) -> None:
        lim = self.limits
        self._close(431, f"request headers exceed {lim.max_header_bytes} bytes or {lim.max_headers} fields")

    def _timer(self, seconds: float, what: str) -> asyncio.TimerHandle:
        return self.loop.call_later(seconds, self._close, 408, f"{what} within {seconds:g} s")

    def _close(self, status: int, detail: str, *headers: str) -> None:
        """Answer ``status`` (unless the app has begun a response) and close; log it, unless the app will."""
        if self.transport.is_closing():
            return
        self._waiting(False)
        answered = self.cycle is not None and self.cycle.response_started
        if self._reading_headers or answered:  # an upload cut short is logged by the app, as one line
            log.info("%s: closed with %d: %s", self._peer(), status, detail)
        if not answered:
            self.transport.write(_response(status, detail, *headers))
        self._shut()

    def _shut(self) -> None:
        """Close, and mark this connection's requests disconnected at once, as uvicorn does only once the close is
        done: an answer written in between met a closed transport (uvloop raises where asyncio ignores it), and
        each left a traceback in the log (dogfood 44)."""
        self.transport.close()
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"


def protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "reading": {}})


def fit_to_open_files(limits: ConnectionLimits) -> ConnectionLimits:
    """``limits`` with ``max_connections`` below the open-file limit, after raising that limit as far as needed
    and the hard limit allows.

    Past the limit the kernel refuses ``accept`` and every client waits in the backlog: a lock-out. Below
    it, a connection over the cap is still accepted and answered with 503.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with suppress(ValueError, OSError):  # past the kernel's own ceiling: keep the limit there is
            resource.setrlimit(
                resource.RLIMIT_NOFILE,
                (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard),
            )
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limits
    fitted = max(1, soft - FD_RESERVE)
    log.warning(
        "--max-connections %d lowered to %d: the open-file limit is %d (ulimit -n)",
        limits.max_connections,
        fitted,
        soft,
    )
    return replace(limits, max_connections=fitted)


def unbindable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (another process holds it, an address not this machine's), or None.
    Asked before the artifact loads: uvicorn said it once the model had loaded, 16 s in, and exited 3 (dogfood
    273). Every address the host names is bound as asyncio's server binds it (uvicorn's), and closed again."""
    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return f"cannot listen on {where}: {e.strerror or e}"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as e:
                return f"cannot listen on {where}: {e.strerror or e}"
    return None


def run(
    app: Any, *, host: str, port: int, limits: ConnectionLimits = ConnectionLimits(), access_log: bool = False
) -> None:
    """Serve ``app`` with uvicorn until interrupted, under ``limits``."""
    limits = fit_to_open_files(limits)
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol(limits),
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn annotates int; it only feeds loop.call_later, which takes a float
        proxy_headers=False,
        access_log=access_log,
        log_level="info",
    )  # X-Forwarded-For is not trusted
