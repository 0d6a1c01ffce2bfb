"""Where the online scorer keeps what outlives a request: open sessions, entity history, labels.

One interface, :class:`StateStore`, and two backends: :class:`MemoryStore` (one process, the default; bounded,
snapshotted on shutdown) and :class:`~seqfraud.scoring.redis_store.RedisStore` (replicas share it). A session's
state is opaque bytes here (:mod:`seqfraud.scoring.online` encodes it); the store only promises that
:meth:`StateStore.update` is atomic per session. Entity history is one row per event (session, time, the
event's entity values), indexed by value, and the labels that have arrived, with the time each became known.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from filelock import FileLock, Timeout

from seqfraud.errors import UserError, is_finite, is_number
from seqfraud.export.artifact import strict_json

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "seqfraud.online-state"
# 2: its session states may be of format 5 (the model stamp), which releases that wrote version 1 cannot read:
# they answered every restored session with a 500 (dogfood 37, a rollback), and now refuse the file at start.
# Version 1 files are read: their states are rebuilt where their format is older (seqfraud.scoring.online).
SNAPSHOT_VERSION = 2
_READABLE_SNAPSHOTS = (1, SNAPSHOT_VERSION)


class Occasional:
    """A warning that may come at every request (a store outage, sessions dropped for room): logged at its first
    occurrence, then at most every ``every_s`` seconds with the count since, so that it is in the log without
    flooding it."""

    def __init__(self, logger: logging.Logger, what: str, every_s: float = 10.0):
        self.logger, self.what, self.every_s = logger, what, every_s
        self._lock = threading.Lock()
        self._count, self._logged_at = 0, float("-inf")
        self._cause: object = None

    def note(self, cause: object, n: int = 1) -> None:
        with self._lock:
            self._count += n
            now = time.monotonic()
            if now - self._logged_at < self.every_s:
                return
            count, self._count, self._logged_at = self._count, 0, now
        self.logger.warning("%s: %d since the last such line; %s", self.what, count, cause)
        self._cause = cause

    def flush(self) -> None:
        """Log the count not logged yet (at shutdown: 619 sessions dropped went unsaid: dogfood 203)."""
        with self._lock:
            count, self._count = self._count, 0
        if count:
            self.logger.warning("%s: %d since the last such line; %s", self.what, count, self._cause)


class StoreUnavailable(RuntimeError):
    """The store cannot be reached (Redis down or too slow): the service degrades or fails closed.

    The message may name the store's address, for the log; ``public`` is what a client may be told (None: only
    that the store is unavailable), since a 503's detail named the Redis address to anyone (dogfood 43).
    """

    def __init__(self, message: str, public: str | None = None):
        super().__init__(message)
        self.public = public


class StoreCorrupt(StoreUnavailable):
    """The store holds something under seqfraud's keys that it cannot read (written by someone else, damaged, or
    a state of another seqfraud version): the sessions that need it are answered as when the store is down,
    degraded or failed closed, with the key named, never as an internal error."""


class StoreBusy(RuntimeError):
    """The store is up, but a session's state kept changing under this writer (other replicas taking the same
    session's events at once): the request is refused for a retry (which event ids make safe), never answered
    from the session alone as if the store were down."""


class SessionLocks:
    """Locks striped over session ids: in one process, one session's updates apply one at a time (in arrival
    order), while other sessions update side by side."""

    def __init__(self, n: int = 64):
        self._locks = [threading.Lock() for _ in range(n)]

    def __call__(self, session_id: str) -> threading.Lock:
        return self._locks[hash(session_id) % len(self._locks)]


class SnapshotError(UserError, ValueError):
    """A snapshot file that cannot be restored (another format, or damaged), or whose folder cannot hold one."""


@dataclass(frozen=True)
class EntityRow:
    """One event's entry in the entity history: its session, time and entity values (null: none)."""

    key: str  # the event's key: a replayed event overwrites its own row, never adds one
    session_id: str
    ts_us: int
    values: tuple[str | None, ...]  # in the spec's entity column order

    def __post_init__(self) -> None:
        """Checked wherever one is made, so that a snapshot or a Redis value written by another hand is refused,
        not scored (review 103)."""
        _check_time(self.ts_us, "an entity row's time")


@dataclass(frozen=True)
class Label:
    session_id: str
    label: int
    label_time_us: int | None  # when the label became known; None: the label delay decides

    def __post_init__(self) -> None:
        """As :class:`EntityRow`'s: a snapshot's label 7 was scored and a label 0.9 restored as 0 (review 103)."""
        if type(self.label) is not int or self.label not in (0, 1):
            raise ValueError(f"a label is 0 or 1, got {str(self.label)[:40]!r}")
        if self.label_time_us is not None:
            _check_time(self.label_time_us, "a label's time")


def _check_time(value: Any, what: str) -> None:
    """Epoch microseconds, within 2^60 of the epoch (36,000 years; every path writes times of years 1 to 9999):
    a time past int64 answered every event of its entities 500 (review 103), and one near int64's ends would
    wrap in the windows' arithmetic."""
    if type(value) is not int or not -(1 << 60) < value < 1 << 60:
        raise ValueError(f"{what} is {str(value)[:40]!r}, not epoch microseconds")


Change = Callable[[bytes | None], bytes | None]
Rows = Callable[[], list["EntityRow"]]


def supersedes(new: Label, held: Label) -> bool:
    """Whether a seed's label replaces the one a store holds: it became known later (no label time counts as
    earliest), or as late and says fraud where the held one does not. A chargeback posted live then outlives a seed
    of an older table (a restart put the table's label back: dogfood 51), and a refreshed table's later chargeback
    still corrects a held label (review 52). :data:`~seqfraud.scoring.redis_store.SUPERSEDES_LUA` is this rule in
    Redis."""
    new_t, held_t = (-1 if t is None else t for t in (new.label_time_us, held.label_time_us))
    return new_t > held_t or (new_t == held_t and new.label > held.label)


class StateStore(ABC):
    """Sessions (atomic read-modify-write), the entity history and labels, shared by everything that scores."""

    @abstractmethod
    def update(self, session_id: str, change: Change, rows: Rows | None = None) -> bytes | None:
        """Apply ``change`` to the session's state atomically and return the state now held; ``change`` returns
        None to leave the state as it is. It may run more than once (a backend retries on a conflict).

        ``rows``, called once ``change`` gave a new state, are the entity rows of the events it took: stored in
        the same write, so that a session's taken event ids and their history rows are held together or not at
        all. As two writes, a timeout between them (or on the first's reply, which Redis had committed) lost the
        rows for good: a resend's events were repeats, which store nothing (dogfood 126)."""

    @abstractmethod
    def get(self, session_id: str) -> bytes | None: ...

    @abstractmethod
    def add_entity_rows(self, rows: list[EntityRow]) -> None: ...

    @abstractmethod
    def sessions_with(self, values: Sequence[Iterable[str]]) -> set[str]:
        """Sessions with an event whose entity column ``i`` (index in the spec) holds one of ``values[i]``, for
        any ``i``: one question, so one round trip to a remote store."""

    @abstractmethod
    def entity_rows(self, session_ids: Iterable[str]) -> list[EntityRow]:
        """The rows of these sessions, in no particular order (a backend with retention may have dropped some)."""

    @abstractmethod
    def add_history_sessions(self, session_ids: Sequence[str]) -> None:
        """Note the sessions of a seeded history (:func:`~seqfraud.scoring.online.seed`), whose events the store
        holds as context already."""

    @abstractmethod
    def history_sessions(self, session_ids: Iterable[str]) -> set[str]:
        """Those of ``session_ids`` that a seeded history holds."""

    @abstractmethod
    def add_labels(self, labels: list[Label], *, seed: bool = False) -> int:
        """Store ``labels``, each replacing its session's held one; with ``seed`` only where it
        :func:`supersedes` it (a seed's table may be older than a label posted since). The labels written."""

    @abstractmethod
    def labels(self, session_ids: Iterable[str]) -> list[Label]: ...

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` when the store cannot serve now (an in-process store always can)."""

    # How long past a drop a session's next event still says that it restarted, by default: an id used again later
    # is most often a new session (review 222: a month-old id reused on a quiet service read as restarted). The
    # service keeps drops as long as the training sessions' longest gap where that is longer (dogfood 224).
    DROPS_KEPT_S = 86_400.0

    def dropped(self, session_id: str) -> bool:
        """Whether the store dropped the session's state within its ``drops_kept_s``, for room or idle past its
        TTL: its next event starts it anew, which an answer says (dogfood 203: 67 of 439 sessions scored on their
        latest events alone, the answer as healthy as any; dogfood 210: applications open for days cut at every idle
        hour, unsaid). Asking forgets nothing: the store forgets the drop once it holds the session again, so a
        refused or failed write leaves it to be said by the resend (review 222). Asked where the store holds no state
        of the session. A store that drops none, or cannot tell, says False."""
        return False

    def mark_seeded(self) -> None:
        """Note that a batch history was put into the store (:func:`~seqfraud.scoring.online.seed`)."""

    def holds_seed(self) -> bool:
        """Whether the store still holds the history seeded into it: an in-process store cannot lose it, a Redis
        restarted without persistence can (it comes back empty, and entity features would read nothing)."""
        return True

    def mark_live(self) -> None:
        """Note in the store that a service keeps state in it, at start and at each of its checks."""

    def lost_live(self) -> str | None:
        """What the store lost since this service last marked it, or None: a Redis restarted without persistence
        comes back empty and healthy, and a replica without a seeded history answered the next event of every
        open session as its first, with no word (dogfood 32); one restarted from an older snapshot came back
        healthy with the state of then (dogfood 169: a fraud's session of six events read as one, approved)."""
        return None

    def check_restored(self, decode: Callable[[str, bytes], object], model: str, entity_columns: int) -> None:
        """Decode every session state restored from a file with ``model``'s reader (``decode(session_id, state)``
        raises ValueError on a damaged one, or one of another session), and check that every entity row restored
        holds ``model``'s ``entity_columns`` values, so that a damaged state is refused at start, not answered with
        an error at its session's every event."""

    def trusts(self, model: str) -> bool:
        """Whether every state of ``model`` read back is one this process encoded, or one ``model``'s reader checked
        at start (:meth:`check_restored`): its reads then skip the checks of its values. A shared store's never
        are: anyone who can write to Redis can write a state."""
        return False

    def close(self) -> None:
        """Release connections, and for an in-process store, write its snapshot."""


class MemoryStore(StateStore):
    """One process's store: at most ``max_sessions`` sessions, of ``max_session_bytes`` states together (the
    least recently updated go first), each expiring ``session_ttl_s`` after its last event; entity rows older than
    ``entity_retention_s`` (None: kept) are dropped, and so are labels of sessions without rows, that long after
    they came. With ``snapshot``, the
    whole state is read from that file at start (when it exists) and written to it on :meth:`close`, so a
    clean restart loses nothing (a crash writes no snapshot: the next start restores the last clean stop's).
    ``model`` (the artifact's model version) stamps the snapshot: one written for another model is refused when
    read, as its session states (a GRU's hidden state, the scores) belong to that model even where the shapes
    agree.

    Thread-safe: updates of one session are serialized by a lock striped over session ids, so sessions update
    side by side while one session's events apply in order.
    """

    RETIRE_EVERY_S = 60.0  # how often the retention sweep (a pass over every session's rows) may run

    def __init__(
        self,
        *,
        max_sessions: int = 100_000,
        max_session_bytes: int = 2 << 30,
        session_ttl_s: float = 3600.0,
        entity_retention_s: float | None = None,
        snapshot: str | os.PathLike | None = None,
        model: str | None = None,
        clock: Callable[[], float] = time.time,
        drops_kept_s: float = StateStore.DROPS_KEPT_S,
    ):
        if max_sessions < 1 or max_session_bytes < 1:
            raise ValueError("max_sessions and max_session_bytes must be at least 1")
        check_seconds(
            session_ttl_s=session_ttl_s, entity_retention_s=entity_retention_s, drops_kept_s=drops_kept_s
        )
        self.drops_kept_s = drops_kept_s
        self.max_sessions, self.session_ttl_s = max_sessions, session_ttl_s
        # A count alone bounds no memory: sessions of long text values took 433 kB each (dogfood 43).
        self.max_session_bytes = max_session_bytes
        self._session_bytes = 0
        # An operator saw a session answered as new (404, then n_events 1) with no word of why (dogfood 47).
        self._evictions = Occasional(log, "open sessions dropped for room, the least recently updated first")
        self.entity_retention_s = entity_retention_s
        # The link's target: beside a link, the lock let a second service take the same file, and the save
        # replaced the link with a file of its own, leaving the target (on a persistent volume) stale (review 119).
        self.snapshot = Path(snapshot).expanduser().resolve() if snapshot else None
        self.model = model
        self.clock = clock
        self._sessions: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # by last update, oldest first
        # Dropped for room or expired, to when: the latest max_sessions of the last drops_kept_s.
        self._dropped: OrderedDict[str, float] = OrderedDict()
        self._session_lock = SessionLocks()
        self._lock = threading.Lock()  # the dicts themselves
        self._rows: dict[str, dict[str, EntityRow]] = {}  # session -> event key -> row
        self._history: set[str] = set()  # sessions of the seeded history (seeded again at each start)
        self._index: dict[tuple[int, str], set[str]] = {}  # (column, value) -> sessions
        self._labels: dict[str, tuple[float, Label]] = {}  # session -> (when added, label)
        # Sessions labelled before any row of theirs came, oldest first: at most max_sessions of them are kept
        # (labels for sessions never seen grew the store without bound, whatever the retention: dogfood 44).
        self._unseen: OrderedDict[str, None] = OrderedDict()
        self._retired_at = float("-inf")
        self._restored = False  # session states read from a snapshot, which check_restored decodes
        self._checked: set[str] = set()  # the models whose reader decoded them
        self._snapshot_lock: FileLock | None = None
        if self.snapshot is not None:
            # A FIFO hung serve before it bound its port; /dev/zero was read until memory ran out (dogfood 137).
            if self.snapshot.exists() and not self.snapshot.is_file():
                raise SnapshotError(f"{self.snapshot}: not a regular file (a pipe, a device or a directory)")
            self._check_writable(self.snapshot)
            self._snapshot_lock = _claim(self.snapshot)
            try:
                if self.snapshot.exists():
                    self._restore(self.snapshot)
            except BaseException:
                self._snapshot_lock.release()
                raise

    @staticmethod
    def _check_writable(path: Path) -> None:
        """A snapshot that could not be written failed at stop, with a traceback, and the sessions were lost
        (dogfood 55): its folder is tried at start."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
                pass
        except OSError as e:
            raise SnapshotError(
                f"{path}: the snapshot cannot be written there ({e.strerror or e}): the state would be lost at "
                "stop; choose another --snapshot path"
            ) from None

    def update(self, session_id: str, change: Change, rows: Rows | None = None) -> bytes | None:
        with self._session_lock(session_id):
            current = self.get(session_id)
            new = change(current)
            if new is None:
                return current
            if rows is not None and (added := rows()):
                self.add_entity_rows(added)
            with self._lock:
                self._hold(session_id, (self.clock(), new))
                self._sessions.move_to_end(session_id)
                self._dropped.pop(session_id, None)  # held again: a drop meanwhile is over (review 207)
                if dropped := self._bound():
                    self._evictions.note(
                        f"max_sessions {self.max_sessions:,}, max_session_bytes {self.max_session_bytes:,} "
                        "(--max-sessions, --max-session-memory); their next event starts them anew",
                        dropped,
                    )
            return new

    def _hold(self, session_id: str, held: tuple[float, bytes]) -> None:
        before = self._sessions.get(session_id)
        self._session_bytes += len(held[1]) - (0 if before is None else len(before[1]))
        self._sessions[session_id] = held

    def _drop_oldest(self, expired: bool = False) -> None:
        """Drop the least recently updated session, noted in :meth:`dropped` as of when it went: its expiry's time,
        not the quiet hours' later request that found it expired."""
        session_id, (last, state) = self._sessions.popitem(last=False)
        self._session_bytes -= len(state)
        now = self.clock()
        self._dropped[session_id] = last + self.session_ttl_s if expired else now
        self._dropped.move_to_end(session_id)
        while self._dropped and (
            len(self._dropped) > self.max_sessions
            or next(iter(self._dropped.values())) < now - self.drops_kept_s
        ):
            self._dropped.popitem(last=False)

    def _bound(self) -> int:
        """Drop the least recently updated sessions past either bound (the newest stays); how many went."""
        dropped = 0
        while len(self._sessions) > 1 and (
            len(self._sessions) > self.max_sessions or self._session_bytes > self.max_session_bytes
        ):
            self._drop_oldest()
            dropped += 1
        return dropped

    def dropped(self, session_id: str) -> bool:
        with self._lock:
            when = self._dropped.get(session_id)
        return when is not None and when >= self.clock() - self.drops_kept_s

    def get(self, session_id: str) -> bytes | None:
        with self._lock:
            self._expire()
            held = self._sessions.get(session_id)
        return None if held is None else held[1]

    def _expire(self) -> None:
        """Drop sessions idle past the TTL (the oldest come first, so this stops at the first live one)."""
        cutoff = self.clock() - self.session_ttl_s
        while self._sessions:
            if next(iter(self._sessions.values()))[0] >= cutoff:
                break
            self._drop_oldest(expired=True)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def holds_rows(self) -> bool:
        """Whether any entity row is held (restored from a snapshot, or taken since)."""
        with self._lock:
            return bool(self._rows)

    def add_entity_rows(self, rows: list[EntityRow]) -> None:
        with self._lock:
            for row in rows:
                self._rows.setdefault(row.session_id, {})[row.key] = row
                self._unseen.pop(row.session_id, None)
                for column, value in enumerate(row.values):
                    if value is not None:
                        self._index.setdefault((column, value), set()).add(row.session_id)
            self._retire()

    def _retire(self) -> None:
        """Drop the entity rows of sessions whose latest event is older than the retention, and the labels of
        sessions without rows that came longer ago than that (labels for sessions never seen grew without
        bound)."""
        if self.entity_retention_s is None or self.clock() - self._retired_at < self.RETIRE_EVERY_S:
            return
        self._retired_at = self.clock()
        cutoff_us = (self.clock() - self.entity_retention_s) * 1e6
        old = [sid for sid, rows in self._rows.items() if max(r.ts_us for r in rows.values()) < cutoff_us]
        for sid in old:
            for row in self._rows.pop(sid).values():
                for column, value in enumerate(row.values):
                    if value is not None and (holders := self._index.get((column, value))) is not None:
                        holders.discard(sid)
                        if not holders:
                            del self._index[(column, value)]
        added_by = self.clock() - self.entity_retention_s
        for sid in [
            sid for sid, (added, _) in self._labels.items() if added < added_by and sid not in self._rows
        ]:
            del self._labels[sid]
            self._unseen.pop(sid, None)

    def sessions_with(self, values: Sequence[Iterable[str]]) -> set[str]:
        with self._lock:
            return set().union(
                *(self._index.get((i, v), set()) for i, column in enumerate(values) for v in column)
            )

    def entity_rows(self, session_ids: Iterable[str]) -> list[EntityRow]:
        with self._lock:
            return [row for sid in session_ids for row in self._rows.get(sid, {}).values()]

    def add_history_sessions(self, session_ids: Sequence[str]) -> None:
        with self._lock:
            self._history.update(session_ids)

    def history_sessions(self, session_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return self._history.intersection(session_ids)

    def add_labels(self, labels: list[Label], *, seed: bool = False) -> int:
        with self._lock:
            now = self.clock()
            if seed:
                held = self._labels
                labels = [
                    lb for lb in labels if lb.session_id not in held or supersedes(lb, held[lb.session_id][1])
                ]
            self._labels.update((label.session_id, (now, label)) for label in labels)
            for sid in (label.session_id for label in labels if label.session_id not in self._rows):
                self._unseen[sid] = None
                self._unseen.move_to_end(sid)
            dropped = 0
            while len(self._unseen) > self.max_sessions:
                del self._labels[self._unseen.popitem(last=False)[0]]
                dropped += 1
            if dropped:
                log.warning(
                    "%d label(s) of sessions the store holds no event of dropped, the oldest: at most max_sessions "
                    "(%d) such labels are kept",
                    dropped,
                    self.max_sessions,
                )
            self._retire()
            return len(labels)

    def labels(self, session_ids: Iterable[str]) -> list[Label]:
        with self._lock:
            return [self._labels[sid][1] for sid in session_ids if sid in self._labels]

    def close(self) -> None:
        self._evictions.flush()
        if self._snapshot_lock is None or not self._snapshot_lock.is_locked:
            return  # no snapshot, or closed already
        try:
            self.save(cast(Path, self.snapshot))
            log.info("saved %d session(s) to the snapshot %s", len(self._sessions), self.snapshot)
        finally:
            self._snapshot_lock.release()

    def save(self, path: str | os.PathLike) -> None:
        """The whole state as JSON (states base64), written to a temporary file and renamed over ``path``."""
        path = Path(path)
        with self._lock:
            self._expire()
            doc = {
                "format": SNAPSHOT_FORMAT,
                "version": SNAPSHOT_VERSION,
                "model": self.model,
                "saved_at": time.time(),  # the file's mtime is a copy's time after cp without -p (dogfood 116)
                "sessions": [
                    [sid, t, base64.b64encode(b).decode()] for sid, (t, b) in self._sessions.items()
                ],
                "entity_rows": [
                    [r.key, r.session_id, r.ts_us, list(r.values)]
                    for rows in self._rows.values()
                    for r in rows.values()
                ],
                "labels": [[lb.session_id, lb.label, lb.label_time_us] for _, lb in self._labels.values()],
            }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces the last one
        os.replace(tmp, path)

    def check_restored(self, decode: Callable[[str, bytes], object], model: str, entity_columns: int) -> None:
        """Once a model: ``serve`` checks before it binds its port, and the service's scorer then finds it done. A
        reader of one model checks another's states only as states it will rebuild: the other model's reader
        checks them again (review 96: a second scorer on one store read a damaged state of its own unchecked).
        A snapshot's entity rows must hold ``entity_columns`` values (the snapshot is of this model): one of
        another width answered 500 at every event that read it (review 119)."""
        if self.snapshot is None or model in self._checked:
            return
        with self._lock:
            widths = {len(r.values) for rows in self._rows.values() for r in rows.values()}
            held = list(self._sessions.items()) if self._restored else []
        if widths - {entity_columns}:
            raise SnapshotError(
                f"{self.snapshot}: cannot restore its entity rows: they hold {sorted(widths)} entity values, "
                f"where this model reads {entity_columns}. Start from another --snapshot file (or none)"
            )
        for sid, (_, state) in held:
            try:
                decode(sid, state)
            except ValueError as e:
                raise SnapshotError(
                    f"{self.snapshot}: cannot restore session {sid!r}: {e}. Start from another --snapshot "
                    "file (or none) and replay the open sessions' events (with event ids a replay is safe)"
                ) from None
        self._checked.add(model)

    def trusts(self, model: str) -> bool:
        return not self._restored or model in self._checked

    def _restore(self, path: Path) -> None:
        """A snapshot of :meth:`save`: plain JSON, checked field by field (a state's bytes are checked again
        when decoded), so a damaged or foreign file is refused, never half-read."""
        try:
            doc = strict_json(path.read_bytes())
            if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
                raise ValueError("not a seqfraud online-state snapshot")
            if doc.get("version") not in _READABLE_SNAPSHOTS:
                raise ValueError(
                    f"snapshot version {doc.get('version')!r}, this seqfraud reads {list(_READABLE_SNAPSHOTS)}"
                )
            # Version 1 files from before the stamp have no "model" key; every later file has one (None where a
            # store was made without a model), so one without it is damaged or edited, and not read as any model's.
            if "model" not in doc and doc["version"] > 1:
                raise ValueError("it names no model (damaged or edited)")
            written_by = doc.get("model")
            if None not in (written_by, self.model) and written_by != self.model:
                raise ValueError(
                    f"it holds the sessions of model {written_by!r}, not of this artifact's {self.model!r}: "
                    "serve that artifact with it, or start from an empty state (another --snapshot file)"
                )
            # An object iterates as its keys: {} read as no sessions, and the next stop overwrote the file (review 119).
            if wrong := [k for k in ("sessions", "entity_rows", "labels") if not isinstance(doc[k], list)]:
                raise ValueError(f"{wrong[0]!r} is not a list")
            now = self.clock()
            sessions = [
                (_text(sid), _touched(t, now), base64.b64decode(_text(b), validate=True))
                for sid, t, b in doc["sessions"]
            ]
            rows = [
                EntityRow(_text(k), _text(sid), ts, tuple(None if v is None else _text(v) for v in values))
                for k, sid, ts, values in doc["entity_rows"]
            ]
            labels = [Label(_text(sid), label, lt) for sid, label, lt in doc["labels"]]
            if len({sid for sid, _, _ in sessions}) != len(sessions):
                raise ValueError("a session is listed twice")
        except (OSError, ValueError, TypeError, KeyError, OverflowError) as e:
            raise SnapshotError(f"{path}: cannot restore the online state: {e}") from e
        for sid, t, state in sorted(sessions, key=lambda s: s[1]):
            self._hold(sid, (t, state))
        if dropped := self._bound():
            log.warning(
                "the snapshot %s holds %d sessions, over max_sessions (%d) or max_session_bytes (%d): the %d "
                "least recently updated are left out",
                path,
                len(sessions),
                self.max_sessions,
                self.max_session_bytes,
                dropped,
            )
        self._restored = bool(sessions)
        self.add_entity_rows(rows)
        self.add_labels(labels)
        # Written at the last clean stop: after a crash, what came since is not in it, and the age says so.
        saved = doc.get("saved_at")  # older files have none
        when = saved if is_number(saved) and 0 <= saved < 1e11 else path.stat().st_mtime
        written = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        log.info(
            "restored %d session(s), %d entity row(s) and %d label(s) from the snapshot %s, written %s",
            len(self._sessions),
            len(rows),
            len(labels),
            path,
            written,
        )


def check_seconds(**durations: float | None) -> None:
    """Each duration positive and finite, or None (unset): NaN passed ``<= 0`` and switched expiry off for good,
    and -1 dropped every entity row at the first retire (dogfood 137, review 156)."""
    for name, value in durations.items():
        if value is not None and not (is_number(value) and is_finite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")


def _claim(path: Path) -> FileLock:
    """One process a snapshot: two services on one file each restored it, and the last to stop overwrote the
    other's sessions without a word (review 103)."""
    # Not thread-local: the service closes the store from another thread than the one that made it.
    lock = FileLock(path.with_name(f".{path.name}.lock"), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SnapshotError(
            f"{path}: another process holds this snapshot (its lock {lock.lock_file}): the last to stop would "
            "overwrite the other's sessions; give each service its own --snapshot, or share the state in Redis "
            "(--state redis)"
        ) from None
    except OSError as e:  # a link planted at the lock's path is not followed (dogfood 137)
        raise SnapshotError(
            f"{path}: cannot take its lock {lock.lock_file}: {e.strerror}; remove it if it is a link or no file"
        ) from None
    return lock


def _touched(value: Any, now: float) -> float:
    """A restored session's last update time, no later than ``now``: expiry walks the sessions oldest first and
    stops at the first one still live, so one time in the future (a file's ``1e300``, or a clock that was ahead)
    kept every session after it from expiring (dogfood 43)."""
    if not is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"a session's last update time is {str(value)[:40]!r}, not a finite number")
    return min(float(value), now)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value
