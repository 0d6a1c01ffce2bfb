"""A session scores the same whatever it is sent with: alone, in any batch, over HTTP and through batch scoring.

Hypothesis draws a session, its neighbours, a few timestamp styles per session (RFC 3339 with ``Z``, offsets
from -12:00 to +14:00 with or without the colon, no offset (UTC), ``T``, ``t`` or a space, 0 to 9 fraction
digits) and an interleaving of their events. The session's score must equal its score alone from native
datetimes on every path; with a spec whose integer epochs are milliseconds, the same holds for epochs.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqfraud import schema as S
from seqfraud.scoring import Scorer
from seqfraud.scoring.batch import score_file
from tests.conftest import service_client

N_SESSIONS = 8
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# One way to write a time: (separator, zone, fraction digits, colon in the offset); zone is "naive", "Z",
# "z" or minutes east of UTC.
STYLE = st.tuples(
    st.sampled_from(["T", " ", "t"]),
    st.one_of(st.sampled_from(["naive", "Z", "z"]), st.integers(-12 * 4, 14 * 4).map(lambda q: q * 15)),
    st.sampled_from([0, 3, 6, 9]),
    st.booleans(),
)


def render(t, style) -> str:
    """``t`` (an aware datetime) as an RFC 3339 string in ``style``, the same instant to the microsecond."""
    sep, zone, digits, colon = style
    offset = zone if isinstance(zone, int) else 0
    local = t + timedelta(minutes=offset)
    micro = f"{local.microsecond:06d}"
    needed = 0 if local.microsecond == 0 else 3 if micro.endswith("000") else 6
    digits = max(digits, needed)
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + ("." + (micro + "000")[:digits] if digits else "")
    if zone == "naive":
        return text
    if isinstance(zone, str):
        return text + zone
    hours, minutes = divmod(abs(offset), 60)
    return text + ("-" if offset < 0 else "+") + f"{hours:02d}{':' if colon else ''}{minutes:02d}"


@pytest.fixture(scope="module")
def scorer(exported_artifact) -> Scorer:
    return Scorer.load(exported_artifact)


@pytest.fixture(scope="module")
def ms_scorer(scorer) -> Scorer:
    """The same model behind a spec whose integer epochs are milliseconds (as data.schema.timestamp_unit=ms makes)."""
    return Scorer(
        scorer.model,
        replace(scorer.spec, timestamp_unit="ms"),
        scorer.thresholds,
        model_version=scorer.model_version,
        calibration=scorer.calibration,
    )


@pytest.fixture(scope="module")
def sessions(test_period_events, scorer) -> list[pl.DataFrame]:
    """A few test sessions, each as its rows with native datetimes, in input order."""
    sid = scorer.spec.schema.session_id
    ids = test_period_events[sid].unique().sort()[:N_SESSIONS]
    return [test_period_events.filter(pl.col(sid) == i) for i in ids]


@pytest.fixture(scope="module")
def alone(scorer, sessions) -> list[tuple[float, str]]:
    """Each session's score and band scored alone from its native datetimes: the reference."""
    return [scorer.score(s).select(S.SCORE, S.BAND).row(0) for s in sessions]


@pytest.fixture(scope="module")
def client(exported_artifact):
    with service_client(exported_artifact) as c:
        yield c


def interleave(parts: list[list[dict]], seed: int) -> list[dict]:
    """The events of all parts in a random interleaving that keeps each part's own order (its tie-break)."""
    owners = np.random.default_rng(seed).permutation(
        np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    )
    cursors = [iter(p) for p in parts]
    return [next(cursors[i]) for i in owners]


def assert_same(got: dict[str, tuple[float, str]], sid: str, expected: tuple[float, str], path: str) -> None:
    score, band = got[sid]
    assert score == pytest.approx(expected[0], abs=1e-6), path
    assert band == expected[1], path


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_session_scores_the_same_alone_in_any_batch_over_http_and_in_batch_files(
    data, scorer, ms_scorer, sessions, alone, client, tmp_path
):
    s = scorer.spec.schema
    target = data.draw(st.integers(0, len(sessions) - 1), label="target")
    others = data.draw(
        st.lists(
            st.integers(0, len(sessions) - 1).filter(lambda i: i != target),
            unique=True,
            max_size=len(sessions) - 1,
        ),
        label="neighbours",
    )
    chosen = [target, *others]
    styles = {i: data.draw(st.lists(STYLE, min_size=1, max_size=3), label=f"styles of {i}") for i in chosen}
    seed = data.draw(st.integers(0, 2**32 - 1), label="interleaving")
    chunk_events = data.draw(st.integers(20, 2_000), label="chunk_events")
    sid = str(sessions[target][s.session_id][0])

    def records(i: int) -> list[dict]:
        """Session i as JSON-ready events, each time in one of its styles; null fields left out, as JSON may."""
        rows = [
            r | {s.timestamp: render(r[s.timestamp], styles[i][n % len(styles[i])])}
            for n, r in enumerate(sessions[i].to_dicts())
        ]
        return [{k: v for k, v in r.items() if v is not None} for r in rows]

    parts = {i: records(i) for i in chosen}
    batch = interleave([parts[i] for i in chosen], seed)

    def by_id(frame: pl.DataFrame) -> dict[str, tuple[float, str]]:
        return {r[0]: (r[1], r[2]) for r in frame.select(S.SESSION_ID, S.SCORE, S.BAND).iter_rows()}

    # In process: alone in its styles, then in the interleaved batch.
    assert_same(by_id(scorer.score(parts[target])), sid, alone[target], "alone, strings")
    assert_same(by_id(scorer.score(batch)), sid, alone[target], "in process")

    # Over HTTP: alone, and in a batch of sessions in random order.
    r = client.post("/score", json={"events": parts[target]})
    assert r.status_code == 200, r.text
    assert_same({r.json()[S.SESSION_ID]: (r.json()[S.SCORE], r.json()[S.BAND])}, sid, alone[target], "/score")
    order = [chosen[k] for k in np.random.default_rng(seed + 1).permutation(len(chosen))]
    r = client.post("/score/batch", json={"sessions": [{"events": parts[i]} for i in order]})
    assert r.status_code == 200, r.text
    assert_same(
        {x[S.SESSION_ID]: (x[S.SCORE], x[S.BAND]) for x in r.json()["results"]},
        sid,
        alone[target],
        "/score/batch",
    )

    # Batch scoring of a Parquet file, in chunks of whole sessions.
    columns = {**sessions[target].schema, s.timestamp: pl.String}
    pl.DataFrame(batch, schema=columns).write_parquet(tmp_path / "events.parquet")
    score_file(
        scorer,
        tmp_path / "events.parquet",
        tmp_path / "scores.parquet",
        chunk_events=chunk_events,
        progress=False,
    )
    assert_same(by_id(pl.read_parquet(tmp_path / "scores.parquet")), sid, alone[target], "batch file")

    # Integer epochs in the spec's unit (milliseconds), in process and in a batch file.
    epochs = [sessions[i].with_columns(pl.col(s.timestamp).dt.epoch("ms")) for i in chosen]
    shuffled = pl.DataFrame(interleave([e.to_dicts() for e in epochs], seed), schema=epochs[0].schema)
    assert_same(by_id(ms_scorer.score(shuffled)), sid, alone[target], "epochs in process")
    shuffled.write_parquet(tmp_path / "epochs.parquet")
    score_file(
        ms_scorer,
        tmp_path / "epochs.parquet",
        tmp_path / "epoch_scores.parquet",
        chunk_events=chunk_events,
        progress=False,
    )
    assert_same(
        by_id(pl.read_parquet(tmp_path / "epoch_scores.parquet")), sid, alone[target], "epochs in a file"
    )
