"""The online state in Redis, so that every replica of the scoring service sees the same sessions, entity
history and labels.

Pointing the service at a Redis deployment is one URL (redis-py's forms):

- ``redis://host:6379/0``: plain TCP, database 0;
- ``rediss://host:6380/0``: TLS (``?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem`` to pin a CA);
- ``unix:///run/redis/redis.sock?db=0``: a Unix socket on the same host;
- ``redis://:password@host:6379/0`` or ``redis://user:password@host:6379/0`` (ACL user): credentials in the
  URL, percent-encoded where needed. Messages name the URL with the credentials redacted.

Every key starts with ``prefix`` (``seqfraud:`` by default), so services, or two deployments of this one,
can share one Redis by giving each its own prefix. The layout, for an operator's ``redis-cli``:
``{prefix}session:{id}`` (a session's state, expiring ``session_ttl_s`` after its last update),
``{prefix}held:{id}`` (empty, outliving that state by ``drops_kept_s``: its next event after an
expiry, or an eviction by ``maxmemory``, says it restarted),
``{prefix}rows:{id}`` (a hash: event key -> JSON ``[ts_us, values...]``), ``{prefix}ent:{column}:{value}``
(a set of session ids), ``{prefix}labels`` (a hash: session id -> JSON ``[label, label_time_us]``) and
``{prefix}seeded`` (set once a history is seeded: its absence tells a replica that Redis lost it),
``{prefix}history`` (a set: the seeded history's session ids) and
``{prefix}live`` (set by every replica at start: its absence says Redis came back empty, seeded or not).

What is atomic: :meth:`RedisStore.update` of one session with the entity rows of the events it took
(optimistic locking: WATCH, read, compute, then MULTI/EXEC, retried on a conflict), and each
:meth:`RedisStore.add_entity_rows` batch (one MULTI/EXEC: a reader sees all of it or none; Redis rolls back
no command that fails inside one, as on a key of another type: a damaged store). Reads across several sessions
are not one snapshot. The entity batch is one transaction over many keys, so this needs one Redis primary (with
replicas or Sentinel if wanted), not Redis Cluster.

A Redis that is down, hung, still loading or read-only (a replica after failover) surfaces as
:class:`~seqfraud.scoring.state.StoreUnavailable` within about ``timeout_s``, never as a hung request: the
service decides whether to degrade or fail closed.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from seqfraud.errors import json_value
from seqfraud.scoring.state import (
    Change,
    EntityRow,
    Label,
    Rows,
    SessionLocks,
    StateStore,
    StoreBusy,
    StoreCorrupt,
    StoreUnavailable,
    check_seconds,
)

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

SEED_LABELS_PER_CALL = 1_000  # labels one seeding script compares and writes

# state.supersedes in Redis: ARGV holds (field, [label, label_time_us]) pairs; a field held is replaced only by a
# label known later (null counts earliest), or as late and fraud where it is not. A held value that is not a
# label (damaged) is replaced. Returns the fields written.
SUPERSEDES_LUA = """
local written = 0
for i = 1, #ARGV, 2 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local take = not held
  if held and held ~= ARGV[i + 1] then
    local ok, h = pcall(cjson.decode, held)
    local new = cjson.decode(ARGV[i + 1])
    if not ok or type(h) ~= 'table' or h[1] == nil or h[2] == nil then
      take = true
    else
      local ht = (h[2] == cjson.null) and -1 or h[2]
      local nt = (new[2] == cjson.null) and -1 or new[2]
      take = nt > ht or (nt == ht and new[1] > h[1])
    end
  end
  if take then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    written = written + 1
  end
end
return written
"""


class RedisStore(StateStore):
    """The :class:`StateStore` of a Redis server, shared by every process pointed at the same URL and prefix.

    ``entity_retention_s`` (None: kept) is an approximation of :class:`~seqfraud.scoring.state.MemoryStore`'s:
    each entity key expires that long after its last write (by wall clock, not event time), so a value's set
    of sessions can outlive the rows of a session in it, and a busy value's set never expires.
    ``client``: an already configured ``redis.Redis`` (Sentinel, custom TLS or pool), used as it is, with its
    own timeouts; ``url`` then only names it in messages. :meth:`close` closes it either way.
    """

    BACKOFF_S = 0.001  # the first wait after a conflicting write, doubled at each conflict in a row
    BACKOFF_CAP_S = 0.05

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "seqfraud:",
        session_ttl_s: float = 3600.0,
        entity_retention_s: float | None = None,
        timeout_s: float = 0.05,
        max_retries: int = 20,
        client: redis.Redis | None = None,
        drops_kept_s: float = StateStore.DROPS_KEPT_S,
    ):
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise ImportError("the Redis state store needs redis-py: pip install 'seqfraud[serve]'") from e
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        check_seconds(
            session_ttl_s=session_ttl_s,
            timeout_s=timeout_s,
            entity_retention_s=entity_retention_s,
            drops_kept_s=drops_kept_s,
        )
        self.where = redact(url)
        self.max_retries = max_retries
        self._session_lock = SessionLocks()
        self._prefix = _bytes(prefix)
        self._labels_key = self._prefix + b"labels"
        self._seeded_key = self._prefix + b"seeded"
        self._history_key = self._prefix + b"history"
        self._live_key = self._prefix + b"live"
        self._marks_key = self._prefix + b"marks"
        self._live_mark: int | None = None  # the marks counter as this store last set it
        self._ttl_ms = max(1, round(session_ttl_s * 1000))
        self._held_ms = self._ttl_ms + round(drops_kept_s * 1000)
        self._retention_ms = None if entity_retention_s is None else max(1, round(entity_retention_s * 1000))
        # Connection errors (BusyLoadingError, a restarted Redis still loading, is one), timeouts, writes
        # refused by a replica, and answers that are not Redis's (the URL names another server: its traceback
        # stopped the service's start, dogfood 43): Redis cannot serve now, which is not a bug here.
        self._unreachable: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ReadOnlyError,
            redis.exceptions.InvalidResponse,
        )
        self._timeout_s, self._timed_out = timeout_s, redis.exceptions.TimeoutError
        self._conflict = redis.exceptions.WatchError
        self._refused = redis.exceptions.ResponseError  # e.g. WRONGTYPE: someone else's value under our key
        if client is None:
            # No retries inside redis-py either: a request waits one timeout at most, and the service decides.
            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry_on_timeout=False,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
        elif client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must answer bytes (decode_responses=False): states are bytes")
        self._client = client
        self._seed_labels = client.register_script(SUPERSEDES_LUA)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except self._unreachable as e:
            # A busy Redis, or a loaded host, is down to the service: the timeout is what to raise (dogfood 95).
            slow = (
                f" (no answer within {self._timeout_s} s: --redis-timeout)"
                if isinstance(e, self._timed_out)
                else ""
            )
            raise StoreUnavailable(f"Redis at {self.where}: {e}{slow}") from e
        except self._refused as e:
            # Redis's own reason (WRONGTYPE ...), without redis-py's prefix naming the command and its key.
            said = str(e).rpartition("caused error: ")[2]
            raise StoreCorrupt(
                f"Redis at {self.where}: {e}", public=f"Redis refused a command: {said}"
            ) from e

    def ping(self) -> None:
        """A write, not a PING: a Redis that refuses writes (a read-only replica, ``maxmemory`` with
        ``noeviction``) answers PING, and ``/readyz`` said ready while every ``/events`` answer was degraded
        (dogfood 43)."""
        with self._reachable():
            self._client.set(self._prefix + b"probe", b"1", px=60_000)

    def mark_live(self) -> None:
        """A counter that only grows while Redis keeps what it took: each replica's marks raise it. Beside it the
        marker that releases before it set and check, which set it to 1 at each start (review 172: a counter
        under its name read as rolled back at each of their starts, in a rolling deploy)."""
        with self._reachable():
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._live_key, b"1")
            pipe.incr(self._marks_key)
            self._live_mark = int(pipe.execute()[1])

    def lost_live(self) -> str | None:
        with self._reachable():
            held = self._client.get(self._marks_key)
        if held is None:
            return "came back empty (a Redis restarted without persistence?)"
        if self._live_mark is not None and not (held.isdigit() and int(held) >= self._live_mark):
            return "came back with an older state (a Redis restarted from a snapshot older than its last writes?)"
        return None

    def mark_seeded(self) -> None:
        """A marker key, whose absence later says Redis lost the history seeded."""
        with self._reachable():
            self._client.set(self._seeded_key, b"1")

    def holds_seed(self) -> bool:
        with self._reachable():
            return bool(self._client.exists(self._seeded_key))

    def _key(self, kind: bytes, name: str) -> bytes:
        return self._prefix + kind + _bytes(name)

    def update(self, session_id: str, change: Change, rows: Rows | None = None) -> bytes | None:
        """Optimistic locking, because ``change`` is Python (it scores the event) and cannot run inside Redis:
        WATCH makes EXEC fail when another writer got there first, and ``change`` then runs on the new state.

        Writers of one session in this process take turns (:class:`SessionLocks`), so conflicts come from other
        processes only; each is retried after a random wait that doubles up to :attr:`BACKOFF_CAP_S`, so that
        replicas taking one session's events at once fall out of step. Past ``max_retries``: :class:`StoreBusy`.
        """
        key = self._key(b"session:", session_id)
        with self._session_lock(session_id), self._reachable(), self._client.pipeline() as pipe:
            for attempt in range(1 + self.max_retries):
                try:
                    pipe.watch(key)
                    current = cast("bytes | None", pipe.get(key))
                    new = change(current)
                    if new is None:
                        return current  # leaving the pipeline's block UNWATCHes
                    added = [] if rows is None else rows()
                    pipe.multi()
                    pipe.set(key, new, px=self._ttl_ms)
                    pipe.set(self._key(b"held:", session_id), b"", px=self._held_ms)
                    self._queue_rows(pipe, added)
                    pipe.execute()
                    return new
                except self._conflict:  # another process wrote the session between our GET and EXEC
                    time.sleep(random.uniform(0, min(self.BACKOFF_CAP_S, self.BACKOFF_S * 2**attempt)))
        raise StoreBusy(
            f"Redis at {self.where}: session {session_id!r} changed under us {1 + self.max_retries} times in a "
            "row (other replicas writing it at once)"
        )

    def dropped(self, session_id: str) -> bool:
        """One round trip at a session's first event; each write sets the ``held:`` key again."""
        with self._reachable():
            return bool(self._client.exists(self._key(b"held:", session_id)))

    def get(self, session_id: str) -> bytes | None:
        with self._reachable():
            state = cast("bytes | None", self._client.get(self._key(b"session:", session_id)))
        return state

    def add_entity_rows(self, rows: list[EntityRow]) -> None:
        with self._reachable(), self._client.pipeline(transaction=True) as pipe:
            self._queue_rows(pipe, rows)
            pipe.execute()

    def _queue_rows(self, pipe: Pipeline, rows: list[EntityRow]) -> None:
        """The commands that store ``rows`` and index them by value, queued on a transaction's ``pipe``."""
        touched: set[bytes] = set()
        for row in rows:
            rows_key = self._key(b"rows:", row.session_id)
            pipe.hset(rows_key, _bytes(row.key), _json([row.ts_us, *row.values]))
            touched.add(rows_key)
            for column, value in enumerate(row.values):
                if value is not None:
                    index_key = self._key(b"ent:%d:" % column, value)
                    pipe.sadd(index_key, _bytes(row.session_id))
                    touched.add(index_key)
        if self._retention_ms is not None:
            for key in touched:
                pipe.pexpire(key, self._retention_ms)

    def add_history_sessions(self, session_ids: Sequence[str]) -> None:
        if not session_ids:
            return
        with self._reachable(), self._client.pipeline(transaction=True) as pipe:
            pipe.sadd(self._history_key, *map(_bytes, session_ids))
            if self._retention_ms is not None:
                pipe.pexpire(self._history_key, self._retention_ms)
            pipe.execute()

    def history_sessions(self, session_ids: Iterable[str]) -> set[str]:
        ids = list(session_ids)
        if not ids:
            return set()
        # SISMEMBER, pipelined: SMISMEMBER needs Redis 6.2, and an older one's "unknown command" read as an outage
        # skipped the check unsaid (review 205).
        with self._reachable(), self._client.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.execute_command("SISMEMBER", self._history_key, _bytes(sid))
            held = cast("list[int]", pipe.execute())
        return {sid for sid, member in zip(ids, held) if member}

    def sessions_with(self, values: Sequence[Iterable[str]]) -> set[str]:
        keys = [self._key(b"ent:%d:" % i, value) for i, column in enumerate(values) for value in column]
        if not keys:
            return set()
        with self._reachable():
            members = cast("set[bytes]", self._client.sunion(keys))
        try:
            return {_text(m) for m in members}
        except UnicodeDecodeError as e:
            # Not one this store wrote: a 500 at every event on the value (review 119).
            what = "an entity index holds a session id that is not UTF-8"
            raise StoreCorrupt(
                f"Redis at {self.where}: {what} (read from {len(keys)} keys)", public=what
            ) from e

    def entity_rows(self, session_ids: Iterable[str]) -> list[EntityRow]:
        keys = [(sid, self._key(b"rows:", sid)) for sid in session_ids]
        with self._reachable(), self._client.pipeline() as pipe:
            for _, key in keys:
                pipe.hgetall(key)
            hashes: list[dict[bytes, bytes]] = pipe.execute()
        found = [
            (sid, key, field, value)
            for (sid, key), fields in zip(keys, hashes)
            for field, value in fields.items()
        ]
        try:  # one parse for all (one per row cost more than the round trip), each row checked below
            decoded = json_value(b"[" + b",".join(f[3] for f in found) + b"]")
        except ValueError:
            decoded = None
        if not isinstance(decoded, list) or len(decoded) != len(found):  # a row that is not one JSON value
            decoded = [None] * len(found)  # parsed one by one: the first bad one is named
        return [self._row(*f, d) for f, d in zip(found, decoded)]

    def _row(self, session_id: str, key: bytes, field: bytes, value: bytes, decoded: Any) -> EntityRow:
        """Decoded and checked: anything else in our keys was written by someone else, and is refused."""
        try:
            ts_us, *values = json_value(value) if decoded is None else decoded
            if not all(v is None or isinstance(v, str) for v in values):
                raise ValueError("expected [ts_us, values...]")
            return EntityRow(_text(field), session_id, ts_us, tuple(values))  # which checks the time
        except (ValueError, TypeError) as e:
            # Its value, for the log alone: another session's entity values.
            what = f"{key!r} field {field!r} is not a seqfraud entity row"
            raise StoreCorrupt(f"Redis at {self.where}: {what}: {value[:80]!r}", public=what) from e

    def add_labels(self, labels: list[Label], *, seed: bool = False) -> int:
        latest = {_bytes(lb.session_id): _json([lb.label, lb.label_time_us]) for lb in labels}
        if not latest:
            return 0
        items = [part for pair in latest.items() for part in pair]
        with self._reachable():
            if not seed:
                self._client.hset(self._labels_key, items=items)
                return len(latest)
            # Compared and written inside Redis, a chunk at a time: a replica's live label between a read and a
            # write would be lost, and one script over a whole table would hold Redis for long.
            chunk = 2 * SEED_LABELS_PER_CALL
            return sum(
                int(self._seed_labels(keys=[self._labels_key], args=items[at : at + chunk]))
                for at in range(0, len(items), chunk)
            )

    def labels(self, session_ids: Iterable[str]) -> list[Label]:
        sids = list(session_ids)
        if not sids:
            return []
        with self._reachable():
            found = cast(
                "list[bytes | None]", self._client.hmget(self._labels_key, [_bytes(s) for s in sids])
            )
        return [self._label(sid, value) for sid, value in zip(sids, found) if value is not None]

    def _label(self, session_id: str, value: bytes) -> Label:
        try:
            label, label_time_us = json_value(value)
            return Label(session_id, label, label_time_us)
        except (ValueError, TypeError) as e:
            what = f"{self._labels_key!r} field {_bytes(session_id)!r} is not a seqfraud label"
            raise StoreCorrupt(f"Redis at {self.where}: {what}: {value[:80]!r}", public=what) from e

    def close(self) -> None:
        self._client.close()


def redact(url: str) -> str:
    """The URL without its credentials (user:password@, ?password=), fit for a log or an error message."""
    # Up to the last @: a password with an unencoded / ? # or @ must not show either (at worst, more is hidden).
    url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://).*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


# Ids and values are arbitrary strings, and a JSON request can carry a lone surrogate: surrogatepass makes
# every Python string a key that reads back as itself.
def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _json(value: list[Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
