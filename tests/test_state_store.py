"""The online state's contract, held by both backends alike: MemoryStore, and RedisStore on a real redis-server.

Then what is one backend's own: MemoryStore's bound and snapshot; Redis down or hung, prefixes, retention,
contention and foreign data in its keys.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from seqfraud.scoring.redis_store import RedisStore, redact
from seqfraud.scoring.state import (
    EntityRow,
    Label,
    MemoryStore,
    SnapshotError,
    StateStore,
    StoreBusy,
    StoreCorrupt,
    StoreUnavailable,
)
from tests.redis_server import redis_server

ODD_IDS = ["s1", "", "a:b:c", "rows:x", "ünï cødé 🙂", "lone \ud800 surrogate", "nul\x00byte"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """One server for the module's contract tests (each starts from an empty database)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


class Backend:
    """Makes one backend's stores, closes them at the end, and lets their time pass."""

    def __init__(self, redis_url: str | None = None):
        self.redis_url = redis_url
        self.now = time.time()  # MemoryStore's clock; Redis keeps its own, so time passes by sleeping
        self.stores: list[StateStore] = []

    def make(self, **kwargs: Any) -> StateStore:
        store: StateStore
        if self.redis_url is None:
            store = MemoryStore(clock=lambda: self.now, **kwargs)
        else:
            store = RedisStore(self.redis_url, max_retries=10_000, **kwargs)
        self.stores.append(store)
        return store

    def advance(self, seconds: float) -> None:
        if self.redis_url is None:
            self.now += seconds
        else:
            time.sleep(seconds)


@pytest.fixture(params=["memory", "redis"])
def backend(request) -> Iterator[Backend]:
    if request.param == "memory":
        made = Backend()
    else:
        url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        made = Backend(url)
    yield made
    for store in made.stores:
        store.close()


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.make()


def increment(state: bytes | None) -> bytes:
    return str(int(state or b"0") + 1).encode()


def by_key(rows: list[EntityRow]) -> list[EntityRow]:
    return sorted(rows, key=lambda r: (r.session_id, r.key))


# --- the contract -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("session_id", ODD_IDS)
def test_update_and_get_round_trip_any_bytes(store: StateStore, session_id: str):
    assert store.get(session_id) is None
    seen: list[bytes | None] = []

    def to(new: bytes | None):
        def change(current: bytes | None) -> bytes | None:
            seen.append(current)
            return new

        return change

    assert store.update(session_id, to(b"\x00\xff")) == b"\x00\xff"
    assert store.get(session_id) == b"\x00\xff"
    assert store.update(session_id, to(None)) == b"\x00\xff"  # None: left as it is, and that is returned
    assert store.get(session_id) == b"\x00\xff"
    assert store.update(session_id, to(b"")) == b""  # empty is a state, not "none"
    assert store.get(session_id) == b""
    assert seen == [None, b"\x00\xff", b"\x00\xff"]
    assert store.update("never-set", to(None)) is None
    assert store.get("never-set") is None


def test_update_is_atomic_under_concurrency(store: StateStore):
    """8 threads x 50 read-modify-writes of one session: no increment lost (Redis: WATCH conflicts retried)."""
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(50):
            store.update("hot", increment)

    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(work) for _ in range(8)]:
            done.result()  # a thread's exception, raised here
    assert store.get("hot") == b"400"


def test_session_expires_after_inactivity(backend: Backend):
    store = backend.make(session_ttl_s=0.4)
    store.update("s", increment)
    backend.advance(0.25)
    store.update("s", increment)  # an update restarts the TTL
    backend.advance(0.25)
    assert store.get("s") == b"2"  # 0.5 s after the first update, 0.25 s after the last
    backend.advance(0.3)
    assert store.get("s") is None
    # Its next event says it restarted (dogfood 210: sessions open for days cut at every idle hour, unsaid); one
    # never held did not. Asking forgets nothing: a refused write's resend still says it (review 222).
    assert store.dropped("s") is True and store.dropped("s") is True and store.dropped("never") is False
    assert store.update("s", increment) == b"1"  # a new session starts from nothing
    backend.advance(0.5)
    assert store.get("s") is None and store.dropped("s") is True


def test_a_drop_is_said_for_drops_kept_s(backend: Backend):
    """An id used again long after its session expired is most often a new session (review 222: a month-old id
    on a quiet service read as restarted): a drop is said for the store's drops_kept_s past the expiry (a day by
    default; the service's, the training sessions' longest gap where longer), counted from the expiry, not from
    the later request that found it expired."""
    store = backend.make(session_ttl_s=0.3, drops_kept_s=1.0)
    store.update("s", increment)
    backend.advance(0.5)
    assert store.get("s") is None and store.dropped("s") is True
    backend.advance(1.0)  # 1.2 s past its expiry
    assert store.dropped("s") is False
    quiet = backend.make(session_ttl_s=0.3, drops_kept_s=1.0)  # nothing asked of it until long after
    quiet.update("q", increment)
    backend.advance(1.5)
    assert quiet.get("q") is None and quiet.dropped("q") is False


def test_entity_rows_replay_index_and_nulls(store: StateStore):
    rows = [
        EntityRow("e1", "s1", 10, ("card-1", "dev:1")),
        EntityRow("e2", "s1", 20, ("card-2", None)),
        EntityRow("e3", "s2", 30, ("card-1", None)),
        EntityRow("e4", "s3", 40, (None, "dev:1")),
        EntityRow("e5", "lone \ud800 surrogate", 50, ("ünï 🙂", None)),
    ]
    store.add_entity_rows(rows)
    store.add_entity_rows([rows[0], rows[2]])  # replayed events: their own rows again, no new ones
    store.add_entity_rows([])

    assert store.sessions_with([["card-1", "card-2"]]) == {"s1", "s2"}
    assert store.sessions_with([[], ["dev:1"]]) == {"s1", "s3"}
    assert store.sessions_with([["ünï 🙂"]]) == {"lone \ud800 surrogate"}
    assert store.sessions_with([[], ["card-1"]]) == set()  # the column is part of the index
    assert store.sessions_with([["card-2"], ["dev:1"]]) == {"s1", "s3"}  # any column
    assert store.sessions_with([["unseen"]]) == set()
    assert store.sessions_with([[]]) == set()

    assert by_key(store.entity_rows(["s1", "s2", "s3", "lone \ud800 surrogate", "unseen"])) == by_key(rows)
    assert by_key(store.entity_rows(["s1"])) == rows[:2]
    assert store.entity_rows([]) == []
    # A seeded history's sessions, which /events refuses events of where no event id tells them apart.
    store.add_history_sessions(["s1", "lone \ud800 surrogate"])
    store.add_history_sessions(["s1"])
    store.add_history_sessions([])
    assert store.history_sessions(["s1", "s2", "lone \ud800 surrogate"]) == {"s1", "lone \ud800 surrogate"}
    assert store.history_sessions([]) == set()


def test_a_states_entity_rows_are_written_with_it_or_not_at_all(store: StateStore):
    """``update``'s rows are stored with the new state (dogfood 126), not where ``change`` leaves the state as it
    is, and not at all where they cannot be made (review 130: the contract on both backends)."""
    row = EntityRow("e1", "s1", 10, ("card-1",))
    assert store.update("s1", lambda _: b"x", lambda: [row]) == b"x"
    assert store.entity_rows(["s1"]) == [row] and store.sessions_with([["card-1"]]) == {"s1"}
    other = EntityRow("e2", "s1", 20, ("card-2",))
    assert store.update("s1", lambda _: None, lambda: [other]) == b"x"  # nothing new: no row
    assert store.entity_rows(["s1"]) == [row]

    def broken() -> list[EntityRow]:
        raise ValueError("no rows")

    with pytest.raises(ValueError, match="no rows"):
        store.update("s2", lambda _: b"y", broken)
    assert store.get("s2") is None and store.entity_rows(["s2"]) == []


def test_labels_round_trip_and_latest_wins(store: StateStore):
    store.add_labels([Label("s1", 1, None), Label("s2", 0, 123), Label("s3", 0, 1), Label("s3", 1, 2)])
    store.add_labels([])
    assert store.labels(["s1", "s2", "s3", "unseen"]) == [
        Label("s1", 1, None),
        Label("s2", 0, 123),
        Label("s3", 1, 2),
    ]
    assert store.add_labels([Label("s1", 0, 999)]) == 1
    assert store.labels(["s1"]) == [Label("s1", 0, 999)]
    assert store.labels([]) == []
    # A seed replaces a held label only by one known later, or as late and fraud: a chargeback posted live was
    # reverted by the history's older label at every restart that seeded again (dogfood 51), and a refreshed
    # table's later chargeback must still correct a held label (review 52). Both stores alike.
    store.add_labels([Label("s5", 1, None), Label("s6", 0, None)])
    seeded = [
        Label("s1", 1, 5),  # known before the held one: kept out
        Label("s4", 1, 7),  # none held: written
        Label("s5", 0, None),  # as late, and not fraud: kept out
        Label("s6", 1, None),  # as late, and fraud: written
        Label("s3", 1, 2),  # the same as held: nothing to write
    ]
    assert store.add_labels(seeded, seed=True) == 2
    assert store.labels(["s1", "s3", "s4", "s5", "s6"]) == [
        Label("s1", 0, 999),
        Label("s3", 1, 2),
        Label("s4", 1, 7),
        Label("s5", 1, None),
        Label("s6", 1, None),
    ]
    assert store.add_labels([Label("s1", 1, 1_000)], seed=True) == 1  # a later chargeback corrects it
    assert store.labels(["s1"]) == [Label("s1", 1, 1_000)]


# --- MemoryStore ----------------------------------------------------------------------------------------------


def test_memory_retention_bounds_labels_of_sessions_without_rows():
    """A dogfood posted 153,000 labels for sessions the service never saw: kept for good, +168 MB. With the
    retention they go once they are that old and their session has no rows; a seen session's stays with its rows."""
    now = [1_000_000.0]
    store = MemoryStore(entity_retention_s=3600, clock=lambda: now[0])
    store.add_entity_rows([EntityRow("e", "seen", int(now[0] * 1e6), ("v",))])
    store.add_labels([Label("seen", 1, None), Label("ghost", 1, None)])
    now[0] += 1800 + MemoryStore.RETIRE_EVERY_S
    store.add_labels([Label("later", 0, None)])
    assert {lb.session_id for lb in store.labels(["seen", "ghost", "later"])} == {"seen", "ghost", "later"}
    now[0] += 1800 + MemoryStore.RETIRE_EVERY_S  # the ghost's label is past the retention, the later one not
    store.add_entity_rows([EntityRow("e2", "seen", int(now[0] * 1e6), ("v",))])  # the seen session goes on
    assert {lb.session_id for lb in store.labels(["seen", "ghost", "later"])} == {"seen", "later"}
    assert MemoryStore(clock=lambda: now[0]).labels([]) == []  # without a retention nothing is swept


def test_memory_bound_evicts_least_recently_updated():
    store = MemoryStore(max_sessions=2)
    for sid in ["a", "b", "a", "c"]:
        store.update(sid, increment)
    assert len(store) == 2
    assert (store.get("a"), store.get("b"), store.get("c")) == (b"2", None, b"1")


def test_a_snapshots_states_are_trusted_only_by_a_model_whose_reader_checked_them(tmp_path: Path):
    """A second scorer on one store read a damaged state of its own unchecked: the first scorer's reader had
    checked it only as another model's, which it would rebuild (review 96)."""
    path = tmp_path / "online.json"
    first = MemoryStore(snapshot=path)
    first.update("a-session", lambda _: b"a")
    first.update("b-session", lambda _: b"damaged")
    assert first.trusts("a") and first.trusts("b")  # nothing restored: every state is this process's own
    first.close()
    store = MemoryStore(snapshot=path)
    assert not store.trusts("a") and not store.trusts("b")

    def reader_of_a(sid: str, state: bytes) -> None:
        return None  # b's states are another model's to it: rebuilt from their events, values unread

    def reader_of_b(sid: str, state: bytes) -> None:
        if state == b"damaged":
            raise ValueError("its hidden state holds values a GRU cannot reach")

    store.check_restored(reader_of_a, "a", 0)
    assert store.trusts("a") and not store.trusts("b")
    with pytest.raises(SnapshotError, match="cannot restore session 'b-session': its hidden state"):
        store.check_restored(reader_of_b, "b", 0)
    assert not store.trusts("b")


def test_a_snapshots_entity_rows_must_hold_the_models_entity_columns(tmp_path: Path):
    """A row of another width answered 500 at every event on its value, for as long as the service ran (review
    119): refused at start, for a model without entity columns too."""
    path = tmp_path / "online.json"
    first = MemoryStore(snapshot=path)
    first.add_entity_rows([EntityRow("e1", "s1", 10, ("c",))])
    first.close()
    for width in (0, 3):
        store = MemoryStore(snapshot=path)
        with pytest.raises(
            SnapshotError, match=rf"they hold \[1\] entity values, where this model reads {width}"
        ):
            store.check_restored(lambda sid, state: None, "m", width)
        store.close()
    store = MemoryStore(snapshot=path)
    store.check_restored(lambda sid, state: None, "m", 1)
    assert store.sessions_with([["c"]]) == {"s1"}
    store.close()


def test_a_restored_session_in_the_future_does_not_stop_expiry(tmp_path: Path):
    """Expiry walks the sessions oldest first and stops at the first one live: a snapshot time of 1e300 kept
    every later session from expiring (dogfood 43)."""
    path, now = tmp_path / "online.json", [1000.0]
    first = MemoryStore(snapshot=path, clock=lambda: now[0])
    first.update("old", lambda _: b"o")
    first.close()
    doc = json.loads(path.read_text())
    doc["sessions"][0][1] = 1e300
    path.write_text(json.dumps(doc))
    second = MemoryStore(snapshot=path, session_ttl_s=10, clock=lambda: now[0])
    second.update("fresh", lambda _: b"f")
    now[0] = 1011.0
    assert (second.get("old"), second.get("fresh")) == (None, None)


def test_a_snapshot_over_max_sessions_keeps_the_latest(tmp_path: Path, caplog):
    path, now = tmp_path / "online.json", [0.0]
    first = MemoryStore(snapshot=path, clock=lambda: now[0])
    for sid in ["a", "b", "c"]:
        now[0] += 1
        first.update(sid, lambda _: b"x")
    first.close()
    second = MemoryStore(snapshot=path, max_sessions=2, clock=lambda: now[0])
    assert len(second) == 2 and second.get("a") is None
    assert "holds 3 sessions, over max_sessions (2) or max_session_bytes" in caplog.text
    assert "the 1 least recently updated are left out" in caplog.text


def test_labels_of_sessions_never_seen_are_bounded(caplog):
    """100,000 labels of sessions the service never saw grew its memory without bound (dogfood 44): at most
    max_sessions of them stay, the oldest go; a labelled session with rows is not one of them."""
    store = MemoryStore(max_sessions=3)
    store.add_entity_rows([EntityRow("e", "seen", 1, ("v",))])
    store.add_labels([Label("seen", 1, None)] + [Label(f"u{i}", 0, None) for i in range(5)])
    assert [lb.session_id for lb in store.labels(["seen", *(f"u{i}" for i in range(5))])] == [
        "seen",
        "u2",
        "u3",
        "u4",
    ]
    assert "2 label(s) of sessions the store holds no event of dropped" in caplog.text
    store.add_entity_rows([EntityRow("e", "u2", 2, ("v",))])  # its events came: no longer unseen
    store.add_labels([Label("u5", 0, None), Label("u6", 0, None)])
    assert [lb.session_id for lb in store.labels(["u2", "u3", "u4", "u5", "u6"])] == ["u2", "u4", "u5", "u6"]


def test_memory_bound_holds_the_states_bytes_too(caplog):
    """A count bounds no memory: a client's sessions of 1 kB text values took 433 kB each (dogfood 43). What
    goes for room is logged: an operator saw a session answered as new with no word of why (dogfood 47)."""
    store = MemoryStore(max_session_bytes=250)
    for sid in ["a", "b", "c"]:
        store.update(sid, lambda _: b"x" * 100)
    assert (store.get("a"), len(store)) == (None, 2)  # 300 bytes: the oldest went
    assert "open sessions dropped for room, the least recently updated first: 1 since the last" in caplog.text
    store.update("b", lambda _: b"x" * 10)  # smaller: "b" is now the newest, 110 bytes in all
    store.update("d", lambda _: b"x" * 100)
    assert [store.get(sid) is not None for sid in "bcd"] == [True, True, True]
    store.update("e", lambda _: b"x" * 1000)  # larger than the bound alone: it stays, as the newest
    assert [store.get(sid) is not None for sid in "bcde"] == [False, False, False, True]


def test_memory_snapshot_restores_everything(tmp_path: Path):
    path = tmp_path / "state" / "online.json"
    rows = [EntityRow("e1", "s1", 10, ("c", None)), EntityRow("e2", "s2", 20, (None, "d"))]
    labels = [Label("s1", 1, None), Label("s2", 0, 5)]
    first = MemoryStore(snapshot=path)
    for sid, state in [("s1", b"\x00\xff"), ("s2", b""), ("ünï", b"x")]:
        first.update(sid, lambda _, state=state: state)
    first.add_entity_rows(rows)
    first.add_labels(labels)
    first.close()

    second = MemoryStore(snapshot=path)
    assert [second.get(sid) for sid in ["s1", "s2", "ünï"]] == [b"\x00\xff", b"", b"x"]
    assert len(second) == 3
    assert by_key(second.entity_rows(["s1", "s2"])) == rows
    assert second.sessions_with([[], ["d"]]) == {"s2"}
    assert second.labels(["s1", "s2"]) == labels


def test_a_snapshot_says_when_it_was_saved_not_when_it_was_copied(tmp_path: Path, caplog):
    """The restore line gave the file's modification time, a copy's after cp without -p, and the docs ask to
    resend the events since then: too few (dogfood 116). The snapshot records when it was saved."""
    path = tmp_path / "online.json"
    store = MemoryStore(snapshot=path)
    store.update("s1", lambda _: b"x")
    store.close()
    os.utime(path, (946_684_800, 946_684_800))  # copied: 2000-01-01
    with caplog.at_level(logging.INFO, logger="seqfraud.scoring.state"):
        MemoryStore(snapshot=path).close()
    assert "written 2000-01-01" not in caplog.text
    assert f"written {time.strftime('%Y-%m-%d', time.gmtime())}" in caplog.text


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"format": "seqfraud.online-state", "version": 1, "sessions": [', "Expecting"),
        (  # an object iterates as its keys: read as no sessions, then overwritten at stop (review 119)
            json.dumps(
                {
                    "format": "seqfraud.online-state",
                    "version": 1,
                    "sessions": {},
                    "entity_rows": [],
                    "labels": [],
                }
            ),
            "'sessions' is not a list",
        ),
        (
            json.dumps({"format": "other", "version": 1, "sessions": [], "entity_rows": [], "labels": []}),
            "not a",
        ),
        (
            json.dumps(
                {
                    "format": "seqfraud.online-state",
                    "version": 1,
                    "sessions": [["s1", 1.0, "not base64!"]],
                    "entity_rows": [],
                    "labels": [],
                }
            ),
            "cannot restore",
        ),
        (
            (
                '{"format": "seqfraud.online-state", "version": 1, "sessions": [], "sessions": [], '
                '"entity_rows": [], "labels": []}'
            ),
            "key 'sessions' appears more than once",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            json.dumps(
                {
                    "format": "seqfraud.online-state",
                    "version": 1,
                    "sessions": [["s1", float("inf"), ""]],
                    "entity_rows": [],
                    "labels": [],
                }
            ),
            "not JSON",
        ),
        (
            json.dumps(
                {
                    "format": "seqfraud.online-state",
                    "version": 1,
                    "sessions": [["s1", "1e300", ""]],
                    "entity_rows": [],
                    "labels": [],
                }
            ),
            "last update time is '1e300', not a finite number",
        ),
        (
            '{"format": "seqfraud.online-state", "version": 1, "sessions": [["s1", 1'
            + "0" * 4000
            + ', ""]], '
            '"entity_rows": [], "labels": []}',
            "an integer of 4,001 digits, past what a number holds",
        ),
        (
            json.dumps(
                {
                    "format": "seqfraud.online-state",
                    "version": 1,
                    "sessions": [["s1", 1.0, ""], ["s1", 2.0, ""]],
                    "entity_rows": [],
                    "labels": [],
                }
            ),
            "a session is listed twice",
        ),
        *(
            (
                json.dumps(
                    {
                        "format": "seqfraud.online-state",
                        "version": 1,
                        "sessions": [],
                        "entity_rows": rows,
                        "labels": labels,
                    }
                ),
                says,
            )
            # A tampered label 7 was scored, 0.9 restored as 0 (review 103); times past int64 were taken too.
            for rows, labels, says in [
                ([], [["s1", 7, None]], "a label is 0 or 1, got '7'"),
                ([], [["s1", 0.9, None]], "a label is 0 or 1, got '0.9'"),
                ([], [["s1", "1", None]], "a label is 0 or 1, got '1'"),
                ([], [["s1", 1, 10**30]], "a label's time is '1000000000000000000000000000000', not epoch"),
                ([], [["s1", 1, -(2**62)]], "a label's time is '-4611686018427387904', not epoch"),
                (
                    [["k", "s1", 10**40, ["a"]]],
                    [],
                    "an entity row's time is '1000000000000000000000000000000",
                ),
                ([["k", "s1", 1.5e15, ["a"]]], [], "an entity row's time is '1500000000000000.0', not epoch"),
            ]
        ),
    ],
    # A repeated key: the last "sessions" won and emptied the state silently (dogfood 43); deep nesting was a
    # RecursionError's traceback.
    ids=[
        "bad-json",
        "sessions-not-a-list",
        "wrong-format",
        "bad-base64",
        "repeated-key",
        "deep",
        "infinite-time",
        "text-time",
        "huge-time",
        "twice",
        *(
            "label-7",
            "label-0.9",
            "label-text",
            "label-time",
            "label-time-int64",
            "row-time",
            "row-float-time",
        ),
    ],
)
def test_memory_damaged_snapshot_is_refused(tmp_path: Path, text: str, says: str):
    path = tmp_path / "online.json"
    path.write_text(text)
    with pytest.raises(SnapshotError, match=says) as caught:
        MemoryStore(snapshot=path)
    assert str(path) in str(caught.value)


def test_a_snapshot_that_cannot_be_written_is_refused_at_start(tmp_path: Path):
    """Found only at stop, with a traceback, and every session lost (dogfood 55)."""
    with pytest.raises(SnapshotError, match="/proc/nosuch/online.json: the snapshot cannot be written there"):
        MemoryStore(snapshot="/proc/nosuch/online.json")
    MemoryStore(snapshot=tmp_path / "new" / "online.json").close()
    assert (tmp_path / "new" / "online.json").is_file()
    assert [p.name for p in (tmp_path / "new").iterdir() if p.name.startswith(".")] == [".online.json.lock"]


def test_a_store_refuses_durations_that_are_no_positive_finite_number():
    """NaN passed ``<= 0`` and kept every entity row for good; -1 dropped them all at the first retire (review
    156); True is no duration (review 158). Checked by the stores themselves, which create_app takes."""
    for bad in (float("nan"), float("inf"), -1, 0, True, 10**400):
        with pytest.raises(ValueError, match="entity_retention_s must be positive and finite"):
            MemoryStore(entity_retention_s=bad)
        with pytest.raises(ValueError, match="session_ttl_s must be positive and finite"):
            MemoryStore(session_ttl_s=bad)
    MemoryStore(entity_retention_s=None, session_ttl_s=60).close()


def test_a_snapshot_that_is_no_file_or_whose_lock_is_a_link_is_refused_at_start(tmp_path: Path):
    """A FIFO hung serve before it bound its port, a link to /dev/zero was read until memory ran out (and left a
    lock file in /dev), and a link planted at the lock's path ended in filelock's traceback (dogfood 137)."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    for path, named in ((fifo, fifo), (zero, Path("/dev/zero"))):
        with pytest.raises(SnapshotError, match=f"{named}: not a regular file"):
            MemoryStore(snapshot=path)
    assert not Path("/dev/.zero.lock").exists()
    path = tmp_path / "online.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("kept")
    (tmp_path / ".online.json.lock").symlink_to(victim)
    with pytest.raises(SnapshotError, match=f"{path}: cannot take its lock .*online.json.lock: .*remove it"):
        MemoryStore(snapshot=path)
    assert victim.read_text() == "kept"


def test_one_process_a_snapshot(tmp_path: Path):
    """Two services on one --snapshot each restored it, and the last to stop overwrote the other's sessions
    without a word (review 103): the second is refused while the first holds it, and starts once it stopped."""
    path = tmp_path / "online.json"
    first = MemoryStore(snapshot=path)
    first.update("a", lambda _: b"state a")
    with pytest.raises(SnapshotError, match=f"{path}: another process holds this snapshot"):
        MemoryStore(snapshot=path)
    first.close()
    first.close()  # closed already: nothing written again
    second = MemoryStore(snapshot=path)
    assert second.get("a") == b"state a"
    second.close()
    # A start refused for a damaged snapshot holds nothing.
    path.write_text("{}")
    with pytest.raises(SnapshotError, match="not a seqfraud online-state snapshot"):
        MemoryStore(snapshot=path)
    path.unlink()
    MemoryStore(snapshot=path).close()
    # Through a link (to a persistent volume): the same file, and the link stays one (review 119).
    link = tmp_path / "link.json"
    link.symlink_to(path)
    first = MemoryStore(snapshot=path)
    with pytest.raises(SnapshotError, match="another process holds this snapshot"):
        MemoryStore(snapshot=link)
    first.close()
    second = MemoryStore(snapshot=link)
    second.update("b", lambda _: b"state b")
    second.close()
    third = MemoryStore(snapshot=path)
    assert link.is_symlink() and third.get("b") == b"state b"
    third.close()


# --- RedisStore -----------------------------------------------------------------------------------------------


def test_a_server_that_is_not_redis_is_unavailable_not_a_crash():
    """--redis-url naming another server (here one that answers as HTTP does) stopped the service's start with
    redis-py's protocol error as a traceback (dogfood 43); it is a store that cannot serve, as a stopped one."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_as_http() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.recv(1024)
                conn.sendall(b"<html>not redis</html>\r\n")
                conn.close()

    threading.Thread(target=answer_as_http, daemon=True).start()
    try:
        with pytest.raises(StoreUnavailable, match=f"Redis at redis://127.0.0.1:{port}/0: Protocol error"):
            RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=2.0).ping()
    finally:
        listener.close()


def test_a_redis_that_refuses_writes_is_not_ready(tmp_path: Path):
    """A Redis full under ``noeviction`` answers PING: /readyz said ready while every /events was degraded."""
    with redis_server(tmp_path) as server:
        store = RedisStore(server.url)
        store.ping()
        redis.Redis.from_url(server.url).config_set("maxmemory", 1)
        with pytest.raises(StoreUnavailable, match="command not allowed when used memory"):
            store.ping()


@pytest.mark.parametrize("failure", ["stopped", "hung"])
def test_redis_unavailable_fails_fast_and_recovers(tmp_path: Path, failure: str):
    with redis_server(tmp_path) as server:
        store = RedisStore(server.url)
        store.update("s", increment)
        if failure == "stopped":
            server.stop()
        else:
            server.pause()
        calls = {
            "get": lambda: store.get("s"),
            "update": lambda: store.update("s", increment),
            "add_entity_rows": lambda: store.add_entity_rows([EntityRow("e", "s", 1, ("v",))]),
            "sessions_with": lambda: store.sessions_with([["v"]]),
            "entity_rows": lambda: store.entity_rows(["s"]),
            "labels": lambda: store.labels(["s"]),
        }
        for name, call in calls.items():
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.port}") as caught:
                call()
            assert time.monotonic() - began < 1.0, name
            # A hung (or merely slow) Redis names the setting to raise (dogfood 95: a loaded host's 0.05 s).
            assert ("no answer within 0.05 s: --redis-timeout" in str(caught.value)) is (failure == "hung")
        if failure == "stopped":
            server.start()  # the same port: the pool's dead connections are replaced, nothing to restart here
        else:
            server.resume()
        assert store.update("s", increment) == (b"1" if failure == "stopped" else b"2")
        store.close()


def test_redis_error_never_shows_the_password(tmp_path: Path):
    with redis_server(tmp_path) as server:
        port = server.port
    store = RedisStore(f"redis://:secret@127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailable) as caught:
        store.get("s")
    message = str(caught.value)
    assert "secret" not in message and f"***@127.0.0.1:{port}" in message
    assert "secret" not in str(caught.value.__cause__)
    store.close()


def test_redact():
    assert redact("redis://user:p%40ss@host:6379/0") == "redis://***@host:6379/0"
    assert (
        redact("rediss://:pw@host:6380/1?ssl_cert_reqs=required")
        == "rediss://***@host:6380/1?ssl_cert_reqs=required"
    )
    assert redact("unix:///run/redis.sock?db=2&password=pw") == "unix:///run/redis.sock?db=2&password=***"
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact("redis://:p@ss#w/rd@host:6379/0") == "redis://***@host:6379/0"


def test_redis_prefixes_keep_stores_apart(redis_url: str):
    ours, theirs = (RedisStore(redis_url, prefix=f"{uuid.uuid4()}:{name}:") for name in ["ours", "theirs"])
    ours.update("s", increment)
    ours.add_entity_rows([EntityRow("e", "s", 1, ("v",))])
    ours.add_labels([Label("s", 1, None)])
    assert theirs.get("s") is None
    assert theirs.sessions_with([["v"]]) == set()
    assert theirs.entity_rows(["s"]) == []
    assert theirs.labels(["s"]) == []
    assert ours.get("s") == b"1"
    ours.close()
    theirs.close()


def test_redis_entity_retention(redis_url: str):
    store = RedisStore(redis_url, prefix=f"{uuid.uuid4()}:", entity_retention_s=0.3)
    store.add_entity_rows([EntityRow("e", "s", 1, ("v", None))])
    assert store.sessions_with([["v"]]) == {"s"}
    time.sleep(0.4)
    assert store.sessions_with([["v"]]) == set()
    assert store.entity_rows(["s"]) == []
    store.close()


def test_redis_contention_gives_up(redis_url: str):
    """Another writer beats every attempt: after max_retries the store says it is busy (a retry, not an outage:
    a degraded answer would score the session's events alone) instead of spinning."""
    prefix = f"{uuid.uuid4()}:"
    store = RedisStore(redis_url, prefix=prefix, max_retries=2)
    rival = RedisStore(redis_url, prefix=prefix, max_retries=0)
    attempts = []

    def contended(current: bytes | None) -> bytes:
        attempts.append(current)
        rival.update("s", increment)  # between our WATCH and EXEC
        return b"ours"

    with pytest.raises(StoreBusy, match="changed under us 3 times in a row"):
        store.update("s", contended)
    assert attempts == [None, b"1", b"2"]
    assert store.get("s") == b"3"
    store.close()
    rival.close()


def test_redis_refuses_foreign_data(redis_url: str):
    """As an outage of the sessions that read it (degraded or 503, the key named), not an internal error."""
    prefix = f"{uuid.uuid4()}:"
    store = RedisStore(redis_url, prefix=prefix)
    with redis.Redis.from_url(redis_url) as client:
        client.hset(f"{prefix}rows:s", "e", b"\xff not json")
        client.hset(f"{prefix}labels", "s", "[1]")
    with pytest.raises(StoreCorrupt, match=f"{prefix}rows:s"):
        store.entity_rows(["s"])
    # Rows are parsed together: a value that is two rows, or half of one, must not shift the others'.
    store.add_entity_rows([EntityRow("ok", "t", 1, ("v",))])
    for bad in (b'[2,"v"],[3,"w"]', b'[2,"'):
        with redis.Redis.from_url(redis_url) as client:
            client.hset(f"{prefix}rows:t", "bad", bad)
        with pytest.raises(StoreCorrupt, match=f"{prefix}rows:t.*field b'bad'"):
            store.entity_rows(["t"])
    with pytest.raises(StoreCorrupt, match=f"{prefix}labels"):
        store.labels(["s"])
    # An index member that no seqfraud wrote (not UTF-8) was a UnicodeDecodeError, a 500 (review 119).
    with redis.Redis.from_url(redis_url) as client:
        client.sadd(f"{prefix}ent:0:v", b"\xff\xfe")
    with pytest.raises(StoreCorrupt, match="an entity index holds a session id that is not UTF-8"):
        store.sessions_with([["v"]])
    # Shaped like a label, but not one: 7 and -5 were read as labels and scored (review 103).
    for bad in (b"[7, null]", b"[-5, 1772361000000000]", b"[1, 1e300]", b"[1, 100000000000000000000]"):
        with redis.Redis.from_url(redis_url) as client:
            client.hset(f"{prefix}labels", "s", bad)
        with pytest.raises(StoreCorrupt, match=f"{prefix}labels"):
            store.labels(["s"])
    with redis.Redis.from_url(redis_url) as client:
        client.hset(f"{prefix}rows:t", "bad", b'[100000000000000000000, "v"]')
    with pytest.raises(StoreCorrupt, match=f"{prefix}rows:t.*field b'bad'"):
        store.entity_rows(["t"])
    # A key of another type: what a client may read names Redis's reason, not the command and its key (dogfood 44).
    with redis.Redis.from_url(redis_url) as client:
        client.set(f"{prefix}rows:u", "a string")
    with pytest.raises(StoreCorrupt, match=f"HGETALL {prefix}rows:u") as caught:
        store.entity_rows(["u"])
    assert caught.value.public is not None and caught.value.public.startswith(
        "Redis refused a command: WRONGTYPE"
    )
    assert prefix not in caught.value.public
    store.close()


def test_redis_refuses_a_decoding_client(redis_url: str):
    with (
        redis.Redis.from_url(redis_url, decode_responses=True) as client,
        pytest.raises(ValueError, match="decode_responses"),
    ):
        RedisStore(redis_url, client=client)
