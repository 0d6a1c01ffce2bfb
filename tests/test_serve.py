"""The HTTP service: answers, every kind of bad request as a 4xx naming the field, limits, and no crashes."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient
from starlette.concurrency import run_in_threadpool

from seqfraud import schema as S
from seqfraud.export.artifact import MANIFEST_FILE
from seqfraud.scoring import ArtifactError, Scorer
from seqfraud.scoring.service import Limits, create_app
from tests.conftest import service_client

LIMITS = Limits(
    max_events_per_session=200,
    max_sessions_per_batch=5,
    max_body_bytes=200_000,
    max_session_body_bytes=200_000,
    max_batch_in_flight=1,  # a worker process each (see service_client): requests come one at a time
    max_explain_in_flight=1,
)
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(exported_artifact):
    with service_client(exported_artifact, limits=LIMITS) as c:
        assert c.portal.call(run_in_threadpool, torch.get_num_threads) == 1  # what a scoring thread gets
        yield c


@pytest.fixture(scope="module")
def scorer(exported_artifact) -> Scorer:
    return Scorer.load(exported_artifact)


@pytest.fixture(scope="module")
def sessions(test_period_events, scorer) -> list[list[dict]]:
    """Three test sessions as JSON-ready event lists (ISO timestamps)."""
    s = scorer.spec.schema
    events = test_period_events.with_columns(pl.col(s.timestamp).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"))
    ids = events[s.session_id].unique().sort()[:3]
    return [events.filter(pl.col(s.session_id) == i).to_dicts() for i in ids]


def _json_safe(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if v is not None} for e in events]  # left-out fields are nulls


def test_healthz_and_metadata(client, exported_artifact, scorer):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {
        "status": "ok",
        "model_version": scorer.model_version,
    }
    manifest = json.loads((exported_artifact / MANIFEST_FILE).read_text())
    metadata = client.get("/metadata")
    # Paths on the exporting machine are not shown: the run directory, the log the parity check read, and the
    # files training read (their digests are).
    manifest["source"].pop("run_dir")
    manifest["parity"]["end_to_end"].pop("events")
    for read in manifest["source"]["training"]["inputs"].values():
        if read is not None:
            read.pop("path")
    thresholds = {band: manifest["thresholds"][band] for band in ("review", "decline")}
    assert metadata.json() == manifest | {"serving": {"thresholds": thresholds}}

    def strings(x):
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        return (
            [s for v in x for s in strings(v)] if isinstance(x, list) else [x] if isinstance(x, str) else []
        )

    assert not [s for s in strings(metadata.json()) if s.startswith("/")], "a host path in /metadata"


def test_score_one_session(client, scorer, sessions):
    r = client.post("/score", json={"events": _json_safe(sessions[0])})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = scorer.score(sessions[0]).row(0, named=True)
    assert set(body) == {S.SESSION_ID, S.SCORE, S.BAND, "model_version", "latency_ms"}
    assert body[S.SESSION_ID] == expected[S.SESSION_ID] and body[S.BAND] == expected[S.BAND]
    assert body[S.SCORE] == pytest.approx(expected[S.SCORE], abs=1e-6)
    assert body["model_version"] == scorer.model_version and body["latency_ms"] > 0


def test_an_integer_session_id_and_its_digits_are_one_session(client, scorer, sessions):
    """/events and batch scoring took 7 and "7" as one session, /score as two (a dogfood found it)."""
    sid = scorer.spec.schema.session_id
    events = [e | {sid: 7 if i % 2 else "7"} for i, e in enumerate(_json_safe(sessions[0]))]
    r = client.post("/score", json={"events": events})
    assert r.status_code == 200, r.text
    same = client.post("/score", json={"events": [e | {sid: "7"} for e in events]}).json()
    assert r.json()[S.SESSION_ID] == "7" and r.json()[S.SCORE] == pytest.approx(same[S.SCORE], abs=1e-6)


def test_score_batch_in_request_order(client, scorer, sessions):
    ordered = sessions[::-1]
    r = client.post("/score/batch", json={"sessions": [{"events": _json_safe(e)} for e in ordered]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = scorer.score([e for events in ordered for e in events])
    by_id = {row[S.SESSION_ID]: row for row in expected.iter_rows(named=True)}
    assert [x[S.SESSION_ID] for x in results] == [str(e[0][scorer.spec.schema.session_id]) for e in ordered]
    for x in results:
        assert x[S.SCORE] == pytest.approx(by_id[x[S.SESSION_ID]][S.SCORE], abs=1e-6)
        assert x[S.BAND] == by_id[x[S.SESSION_ID]][S.BAND]


def test_unseen_categories_are_fine_and_integer_epochs_need_a_trained_unit(client, scorer, sessions):
    s = scorer.spec.schema
    events = [
        e | {s.event_type: "never-seen", s.categorical[0]: "martian-device"} for e in _json_safe(sessions[0])
    ]
    r = client.post("/score", json={"events": events})
    assert r.status_code == 200, r.text
    assert 0 <= r.json()[S.SCORE] <= 1
    # The model was trained on datetimes with timestamp_unit=auto: no epoch unit travels with it, so none is guessed.
    r = client.post(
        "/score", json={"events": [e | {s.timestamp: 1_772_000_000 + i} for i, e in enumerate(events)]}
    )
    assert r.status_code == 422 and f"column '{s.timestamp}' holds integer epochs" in r.json()["detail"], (
        r.text
    )


def _case(name: str, sessions, s) -> tuple[str, object, int, str]:
    """(path, JSON body or raw bytes, expected status, text the message must contain)."""
    e = _json_safe(sessions[0])
    amount, device = s.numerical[0], s.categorical[0]
    cases = {
        "missing field": (
            "/score",
            {"events": [{k: v for k, v in e[0].items() if k != s.timestamp}]},
            422,
            f"events[0].{s.timestamp}: Field required",
        ),
        "wrong type number": ("/score", {"events": [e[0] | {amount: "12.5"}]}, 422, f"events[0].{amount}"),
        "wrong type category": ("/score", {"events": [e[0] | {device: 1.5}]}, 422, f"events[0].{device}"),
        "wrong type id": (
            "/score",
            {"events": [e[0] | {s.session_id: True}]},
            422,
            f"events[0].{s.session_id}",
        ),
        "null required": (
            "/score",
            {"events": [e[0] | {s.event_type: None}]},
            422,
            f"events[0].{s.event_type}",
        ),
        "unknown field": (
            "/score",
            {"events": [e[0] | {"colour": "red"}]},
            422,
            f"events[0]: unknown field(s) ['colour']; this request takes ['{s.session_id}', '{s.timestamp}'",
        ),
        "unknown top-level field": ("/score", {"events": e, "colour": "red"}, 422, "takes ['events']"),
        "empty session": ("/score", {"events": []}, 422, "events: List should have at least 1 item"),
        "empty batch session": (
            "/score/batch",
            {"sessions": [{"events": e}, {"events": []}]},
            422,
            "sessions[1].events",
        ),
        "bad timestamp": (
            "/score",
            {"events": [e[0] | {s.timestamp: "yesterday-ish"}]},
            422,
            f"'{s.timestamp}': 1 row(s) have a timestamp that does not parse",
        ),
        "timestamp beyond int64": (
            "/score",
            {"events": [e[0] | {s.timestamp: 2**70}]},
            422,
            f"'{s.timestamp}'",
        ),
        "NaN amount": (
            "/score",
            b'{"events": [%s]}'
            % json.dumps(e[0] | {amount: 0}).replace(f'"{amount}": 0', f'"{amount}": NaN').encode(),
            422,
            f"events[0].{amount}: Input should be a finite",
        ),
        "inf amount": (
            "/score",
            b'{"events": [%s]}'
            % json.dumps(e[0] | {amount: 0}).replace(f'"{amount}": 0', f'"{amount}": -Infinity').encode(),
            422,
            f"events[0].{amount}",
        ),
        "overflowing amount": (
            "/score",
            b'{"events": [%s]}'
            % json.dumps(e[0] | {amount: 0}).replace(f'"{amount}": 0', f'"{amount}": 1e999').encode(),
            422,
            f"events[0].{amount}",
        ),
        "empty session id": (
            "/score",
            {"events": [r | {s.session_id: ""} for r in e]},
            422,
            f"events[0].{s.session_id}: expected a non-blank id without control or invisible characters",
        ),
        "blank session id": (
            "/events",
            {"events": [r | {s.session_id: "   "} for r in e]},
            422,
            f"events[0].{s.session_id}: expected a non-blank id",
        ),
        "session id padded with a space": (
            "/score",
            {"events": [r | {s.session_id: "s1 "} for r in e]},
            422,
            f"events[0].{s.session_id}: expected a non-blank id without control or invisible characters or spaces at its ends",
        ),
        "control character in session id": (
            "/score/batch",
            {"sessions": [{"events": [r | {s.session_id: "s\u0000x"} for r in e]}]},
            422,
            f"sessions[0].events[0].{s.session_id}: expected a non-blank id",
        ),
        "zero-width space in session id": (  # another session than s1, that looks the same (dogfood 191)
            "/score",
            {"events": [r | {s.session_id: "s1\u200b"} for r in e]},
            422,
            f"events[0].{s.session_id}: expected a non-blank id without control or invisible characters",
        ),
        # A gateway that reads the first of two keys checks another request than the one scored.
        "a key twice": (
            "/score/batch",
            b'{"sessions": [{"events": [%s]}]}'
            % json.dumps(e[0] | {amount: 1})
            .replace(f'"{amount}": 1', f'"{amount}": 1, "{amount}": 1e9')
            .encode(),
            400,
            f"malformed JSON: key '{amount}' appears more than once in one object",
        ),
        # Though either reading fails validation: the 422 described one reading of the two (dogfood 54).
        "a key twice, both invalid": (
            "/score",
            b'{"events": [], "events": []}',
            400,
            "malformed JSON: key 'events' appears more than once in one object",
        ),
        "malformed JSON": ("/score", b'{"events": [', 400, "malformed JSON"),
        "not JSON": ("/score", b"\xff\xfe garbage", 400, "malformed JSON"),
        "not an object": ("/score", [1, 2], 422, "body: Input should be an object"),
        "wrong top-level key": ("/score", {"event": e}, 422, "events: Field required"),
        "event not an object": ("/score", {"events": [1]}, 422, "events[0]"),
        "two sessions": ("/score", {"events": e + _json_safe(sessions[1])}, 422, "one session per request"),
        "duplicate batch sessions": (
            "/score/batch",
            {"sessions": [{"events": e}, {"events": e}]},
            422,
            "sessions[1]: session id",
        ),
        "too many events": (
            "/score",
            {"events": [e[0]] * (LIMITS.max_events_per_session + 1)},
            422,
            "events: List should have at most 200 items after validation, not 201 (--max-events-per-session, which bounds a POST /events request's events too, whatever its sessions)",
        ),
        "too many sessions": (
            "/score/batch",
            {"sessions": [{"events": [e[0]]}] * (LIMITS.max_sessions_per_batch + 1)},
            422,
            "sessions: List should have at most 5 items after validation, not 6 (--max-sessions-per-batch)",
        ),
        "body too large": ("/score", b" " * (LIMITS.max_body_bytes + 1), 413, "exceeds the limit"),
    }
    return cases[name]


BAD = [
    "missing field",
    "wrong type number",
    "wrong type category",
    "wrong type id",
    "null required",
    "unknown field",
    "unknown top-level field",
    "empty session",
    "empty batch session",
    "bad timestamp",
    "timestamp beyond int64",
    "empty session id",
    "blank session id",
    "control character in session id",
    "zero-width space in session id",
    "NaN amount",
    "inf amount",
    "overflowing amount",
    "a key twice",
    "a key twice, both invalid",
    "malformed JSON",
    "not JSON",
    "not an object",
    "wrong top-level key",
    "event not an object",
    "two sessions",
    "duplicate batch sessions",
    "too many events",
    "too many sessions",
    "body too large",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_requests_get_a_4xx_naming_the_field(client, sessions, scorer, name):
    path, body, status, needle = _case(name, sessions, scorer.spec.schema)
    r = (
        client.post(path, content=body, headers=JSON)
        if isinstance(body, bytes)
        else client.post(path, json=body)
    )
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert client.get("/healthz").status_code == 200  # still serving


def test_a_body_of_many_errors_is_answered_with_a_few(client, sessions, scorer):
    """Each error costs a few bytes of body and far more to build and answer: one event of 5,000 unknown keys was
    answered with each of them, and a batch of empty events listed three errors an event of every session, 8 s and
    5 GB in pydantic at the 8 MB limit (review 211)."""
    event = _json_safe(sessions[0])[0]
    r = client.post("/score", json={"events": [event | {f"col{i}": 0 for i in range(5000)}]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "unknown field(s) ['col0', 'col1'" in detail and "'col19'] and at least 980 more" in detail, detail
    assert "(5,000 errors in all; the first 1,000 are said)" in detail
    assert len(r.json()["errors"]) == 100 and len(r.content) < 20_000
    # Counts of an error's repeats are of the errors read, past which they are "at least" (review 215).
    r = client.post("/score", json={"events": [{"a": 1, "b": 2, "c": 3}] * LIMITS.max_events_per_session})
    assert "(and in at least " in r.json()["detail"] and "(1,200 errors in all;" in r.json()["detail"], (
        r.json()
    )
    # A batch stops at its first refused session; that session's events are said together, with how often.
    s = scorer.spec.schema
    bad = {"events": [{}] * 3}
    r = client.post("/score/batch", json={"sessions": [bad, {"events": _json_safe(sessions[1])}, bad]})
    assert r.status_code == 422, r.text
    assert {e["loc"].split(".")[0] for e in r.json()["errors"]} == {"sessions[0]"}, r.json()
    assert f"sessions[0].events[0].{s.session_id}: Field required" in r.json()["detail"]
    assert "(and in 2 more like it)" in r.json()["detail"]


def test_streamed_body_over_the_limit_is_refused_without_a_length(client):
    chunks = (b" " * 50_000 for _ in range(5))  # chunked: no Content-Length to refuse up front
    r = client.post("/score", content=chunks, headers=JSON)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]


def test_unknown_routes_and_methods_are_4xx(client):
    assert client.get("/score").status_code == 405
    assert client.post("/nope", json={}).status_code == 404
    # No redirect built from the client's Host header: a client that follows it re-posts its events to that host
    # (review 211).
    r = client.post("/score/", json={}, headers={"host": "elsewhere.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_an_internal_error_is_a_500_json_and_the_server_goes_on(client, sessions, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(client.app.state.scorer, "score", broken)
    r = client.post("/score", json={"events": _json_safe(sessions[0])})
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    # Answered without the error leaving the app: Starlette's handler raised it again after its 500, and uvicorn
    # then closed the connection, so the client's next request on it failed (dogfood 109).
    from fastapi.testclient import TestClient

    strict = TestClient(client.app, raise_server_exceptions=True)  # raises what escapes; the app as started
    assert strict.post("/score", json={"events": _json_safe(sessions[0])}).status_code == 500
    monkeypatch.undo()
    assert client.post("/score", json={"events": _json_safe(sessions[0])}).status_code == 200


def test_the_model_loads_once(client, sessions):
    scorer = client.app.state.scorer
    for _ in range(3):
        client.post("/score", json={"events": _json_safe(sessions[0])})
    assert client.app.state.scorer is scorer


@pytest.mark.usefixtures("one_torch_thread")  # start-up sets torch's threads before it fails; restore them
def test_a_corrupt_artifact_stops_the_service_from_starting(exported_artifact, tmp_path):
    shutil.copytree(exported_artifact, tmp_path / "a")
    (tmp_path / "a" / "model.ts").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="model.ts"), TestClient(create_app(tmp_path / "a")):
        pass


def test_a_field_left_out_of_every_event_of_a_session_is_said_once(
    client, sessions, scorer, caplog, monkeypatch
):
    """Leaving a field out of an event is a null; leaving it out of a whole session scored it on a token the model
    rarely saw, without a word, where batch scoring refuses the file (dogfood 108)."""
    from seqfraud.scoring import prepare

    monkeypatch.setattr(prepare, "_SAID", set())  # once a process: whatever an earlier test sent
    field = scorer.spec.schema.categorical[0]
    events = [{k: v for k, v in e.items() if k != field} for e in _json_safe(sessions[0])]
    for _ in range(2):
        assert client.post("/score", json={"events": events}).status_code == 200
    said = f"events: field {field!r} was left out of every event of a session"
    assert caplog.text.count(said) == 1
    caplog.clear()
    monkeypatch.setattr(prepare, "_SAID", set())
    events[0][field] = None  # sent as null on one event: the client knows the field
    assert client.post("/score", json={"events": events}).status_code == 200
    assert "left out of every event" not in caplog.text


def test_metadata_names_the_thresholds_the_service_applies(exported_artifact):
    """serve --review/--decline replaced the manifest's bands, and /metadata still showed the manifest's: no
    response said which were in force (review 113)."""
    with service_client(exported_artifact, thresholds={"review": 0.3, "decline": 0.8}) as c:
        served = c.get("/metadata").json()
        assert served["serving"] == {"thresholds": {"review": 0.3, "decline": 0.8}}
        assert served["thresholds"]["review"] != 0.3  # the manifest's own, as exported
