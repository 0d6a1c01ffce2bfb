"""Per-event explanations: occlusion lines up with the scored tokens, is the score drop it claims, finds the
event a model keys on, and is served, validated and drawn like the scores."""

from __future__ import annotations

import html
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from seqfraud import schema as S
from seqfraud.features.spec import MISSING
from seqfraud.scoring import Scorer
from seqfraud.scoring.explain import top_events
from seqfraud.scoring.service import Limits
from tests.conftest import service_client

LIMITS = Limits(
    max_events_per_session=200,
    max_sessions_per_batch=5,
    max_body_bytes=200_000,
    max_session_body_bytes=200_000,
    max_batch_in_flight=1,  # a worker process each (see service_client): requests come one at a time
    max_explain_in_flight=1,
)


@pytest.fixture(scope="module")
def scorer(exported_artifact) -> Scorer:
    return Scorer.load(exported_artifact)


@pytest.fixture(scope="module")
def few(test_period_events, scorer) -> pl.DataFrame:
    s = scorer.spec.schema
    ids = test_period_events[s.session_id].unique().sort()[:4]
    return test_period_events.filter(pl.col(s.session_id).is_in(ids.implode()))


def test_one_row_per_kept_event_in_time_order(scorer, few, one_torch_thread):
    s = scorer.spec.schema
    explained = scorer.explain(few)
    assert explained.columns == [S.SESSION_ID, S.POSITION, S.EVENT, S.EVENT_TIME, S.CONTRIBUTION, S.FIELDS]
    # Each event's other values, in the log's names: an amount that was the whole signal was nowhere shown.
    amount = s.numerical[0]
    shown = explained.filter(pl.col(S.SESSION_ID) == explained[S.SESSION_ID][0])[S.FIELDS].struct.field(
        amount
    )
    first = few.filter(pl.col(s.session_id).cast(pl.String) == explained[S.SESSION_ID][0]).sort(s.timestamp)
    assert shown.to_list() == first[amount].cast(pl.Float64).to_list()[-len(shown) :]
    lengths = dict(
        scorer.score(few)
        .join(few.group_by(pl.col(s.session_id).cast(pl.String).alias(S.SESSION_ID)).len(), on=S.SESSION_ID)
        .select(S.SESSION_ID, pl.col("len").clip(upper_bound=scorer.spec.max_len))
        .iter_rows()
    )
    for sid, group in explained.group_by(S.SESSION_ID):
        assert group[S.POSITION].to_list() == list(range(lengths[sid[0]]))
        assert group[S.EVENT_TIME].is_sorted()


def test_both_token_paths_explain_alike(exported_artifact, few, one_torch_thread):
    fast = Scorer.load(exported_artifact).explain(few)
    slow = Scorer.load(exported_artifact, fast_path_max_events=0).explain(few)
    assert fast.drop(S.CONTRIBUTION).equals(slow.drop(S.CONTRIBUTION))
    np.testing.assert_allclose(fast[S.CONTRIBUTION].to_numpy(), slow[S.CONTRIBUTION].to_numpy(), atol=1e-5)


def _without(session: pl.DataFrame, scorer: Scorer, position: int) -> pl.DataFrame:
    """The session's raw events without the one at ``position`` in time order (ties in input order)."""
    s = scorer.spec.schema
    in_order = session.with_row_index("__row").sort(s.timestamp, "__row")
    return in_order.filter(pl.int_range(pl.len()) != position).drop("__row")


def test_contribution_is_the_score_drop_without_the_event(scorer, few, one_torch_thread):
    """Each contribution is the raw score less the raw score of the session with that event left out, as the
    scorer scores it, in a session longer than max_len too: the window of a session an event shorter then
    starts where it does, or, from a window at its shortest, a hop earlier (those events come in). Masking the
    event instead made a GRU read a new session's start and credit harmless later events (dogfood 30)."""
    s, spec = scorer.spec.schema, scorer.spec
    assert spec.hop > 1  # the default, max_len // 8: both kinds of window below
    session = few.filter(pl.col(s.session_id) == few[s.session_id].unique().sort()[0])
    cases = [(session, range(min(session.height, 6)))]
    for n in (spec.max_len + 1, spec.max_len + 3):  # a window at its shortest, and one 2 events longer
        long = pl.concat([session] * (n // session.height + 1))[:n].with_columns(
            pl.col(s.timestamp).min() + pl.duration(seconds=pl.int_range(pl.len()) ** 2)
        )
        kept = n - spec.window_start(n)
        cases.append((long, (0, 1, 5, kept - 1)))
    for events, positions in cases:
        explained = scorer.explain(events)
        full = scorer.score(events)[S.RAW_SCORE][0]
        cut = spec.window_start(events.height)  # events before the kept window
        for pos in positions:
            without = scorer.score(_without(events, scorer, pos + cut))[S.RAW_SCORE][0]
            assert explained[S.CONTRIBUTION][pos] == pytest.approx(full - without, abs=1e-5)


def test_contributions_hold_for_a_window_of_one_hop_and_of_single_events(
    exported_artifact, few, one_torch_thread
):
    """hop as wide as max_len (a cut session's window may hold one event) and hop 1 (every spec before version 5):
    each contribution is still the score drop without the event."""
    base = Scorer.load(exported_artifact)
    s, spec = base.spec.schema, base.spec
    session = few.filter(pl.col(s.session_id) == few[s.session_id].unique().sort()[0])
    for hop in (spec.max_len, 1):
        scorer = Scorer.load(exported_artifact)
        scorer.spec = replace(spec, hop=hop)
        for n in (spec.max_len + 1, 2 * spec.max_len + 1):
            long = pl.concat([session] * (n // session.height + 1))[:n].with_columns(
                pl.col(s.timestamp).min() + pl.duration(seconds=pl.int_range(pl.len()) ** 2)
            )
            explained = scorer.explain(long)
            cut = scorer.spec.window_start(n)
            assert explained.height == n - cut
            full = scorer.score(long)[S.RAW_SCORE][0]
            for pos in sorted({0, explained.height // 2, explained.height - 1}):
                without = scorer.score(_without(long, scorer, pos + cut))[S.RAW_SCORE][0]
                assert explained[S.CONTRIBUTION][pos] == pytest.approx(full - without, abs=1e-5), (
                    hop,
                    n,
                    pos,
                )


def test_leaving_out_the_top_events_lowers_the_score_most(scorer, few, one_torch_thread):
    """Fidelity: leaving out the three events ranked highest moves the score more than the three lowest."""
    s = scorer.spec.schema
    explained = scorer.explain(few)
    tested = 0
    for sid, session in few.group_by(pl.col(s.session_id).cast(pl.String)):
        if session.height < 6 or session.height > scorer.spec.max_len:
            continue  # the top three and the bottom three must be different events
        c = explained.filter(pl.col(S.SESSION_ID) == sid[0])[S.CONTRIBUTION].to_numpy()
        order = np.argsort(-c, kind="stable")
        full = scorer.score(session)[S.RAW_SCORE][0]
        dropped = []
        for rows in (order[:3], order[-3:]):
            in_order = session.with_row_index("__row").sort(s.timestamp, "__row")
            rest = in_order.filter(~pl.int_range(pl.len()).is_in(rows.tolist())).drop("__row")
            dropped.append(full - scorer.score(rest)[S.RAW_SCORE][0])
        assert dropped[0] > dropped[1]
        tested += 1
    assert tested


def test_truncated_sessions_explain_only_the_kept_events(scorer, few, one_torch_thread):
    s = scorer.spec.schema
    first = few.filter(pl.col(s.session_id) == few[s.session_id][0])
    n = scorer.spec.max_len + 5
    long = pl.concat([first[:1]] * n).with_columns(
        pl.col(s.timestamp) + pl.duration(seconds=pl.int_range(pl.len()))
    )
    explained = scorer.explain(long)
    cut = scorer.spec.hop  # the window moves in hops: the oldest hop of events is truncated away
    assert 5 <= cut and explained.height == n - cut
    assert explained[S.EVENT_TIME][0] == long[s.timestamp][cut]


def test_a_truncated_session_says_which_events_it_leaves_out(
    exported_artifact, client, scorer, few, tmp_path, capsys
):
    """A dogfood fraud burst sat at event 754 of 2,143: the explanation listed events 0-255 and said nothing of
    the rest. The CLI line, the page and /explain's answer now say how many the model did not read."""
    from seqfraud.cli.explain import main

    s = scorer.spec.schema
    first = few.filter(pl.col(s.session_id) == few[s.session_id].unique().sort()[0])[:1]
    n = scorer.spec.max_len + 5
    long = pl.concat([first] * n).with_columns(
        pl.col(s.timestamp) + pl.duration(seconds=pl.int_range(pl.len()))
    )
    kept = n - scorer.spec.hop
    note = (
        f"reads the last {kept:,} of the session's {n:,} events (features.max_len, features.hop): "
        f"the {scorer.spec.hop} earlier"
    )
    long.write_parquet(tmp_path / "long.parquet")
    args = ["--artifact", str(exported_artifact), "--events", str(tmp_path / "long.parquet")]
    main([*args, "--session", str(first[s.session_id][0]), "--out", str(tmp_path / "long.html")])
    assert note in capsys.readouterr().out and html.escape(note) in (tmp_path / "long.html").read_text()
    body = client.post("/explain", json={"events": _records(long, scorer)}).json()
    assert body["n_events"] == n and len(body["events"]) == kept and note in body["note"]
    assert ("stacker" in body["note"]) == (scorer.stacker is not None)


class KeysOnOneToken(torch.nn.Module):
    """Scores 0.9 when the event-type field holds ``token`` anywhere in the session, else 0.1."""

    def __init__(self, token: int):
        super().__init__()
        self.token = token

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
        hit = ((tokens[:, :, 0] == self.token) & valid).any(dim=1)
        return torch.where(hit, torch.tensor(0.9), torch.tensor(0.1))


def test_the_event_a_model_keys_on_ranks_first(scorer, few):
    """By construction only the one keyed event matters: it gets +0.8, every other event 0."""
    s = scorer.spec.schema
    assert scorer.spec.fields[0] == s.event_type
    session = few.filter(pl.col(s.session_id) == few[s.session_id].unique().sort()[0]).sort(s.timestamp)
    target_pos = session.height // 2
    target = str(session[s.event_type][target_pos])
    others = session.filter(pl.col(s.event_type) != target)
    session = pl.concat(
        [others[:target_pos], session[target_pos : target_pos + 1], others[target_pos:]]
    ).with_columns(pl.col(s.timestamp).first() + pl.duration(seconds=pl.int_range(pl.len())))  # in this order
    token = scorer.tables.vocab[s.event_type][target]
    toy = Scorer(
        torch.jit.script(KeysOnOneToken(token)),
        scorer.spec,
        {"review": 0.5, "decline": 0.95},
        model_version="toy",
    )
    explained = toy.explain(session)
    top = explained.sort(S.CONTRIBUTION, descending=True).row(0, named=True)
    assert top[S.EVENT] == target and top[S.POSITION] == target_pos
    assert top[S.CONTRIBUTION] == pytest.approx(0.8)
    assert explained.filter(pl.col(S.POSITION) != target_pos)[S.CONTRIBUTION].abs().max() == pytest.approx(
        0.0
    )
    # A session of that one event is compared with a session of one all-missing event.
    assert toy.explain(session[target_pos : target_pos + 1])[S.CONTRIBUTION][0] == pytest.approx(0.8)
    assert MISSING != token


@pytest.fixture(scope="module")
def client(exported_artifact):
    with service_client(exported_artifact, limits=LIMITS) as c:
        yield c


def _records(events: pl.DataFrame, scorer: Scorer) -> list[dict]:
    s = scorer.spec.schema
    events = events.with_columns(pl.col(s.timestamp).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"))
    return [{k: v for k, v in e.items() if v is not None} for e in events.to_dicts()]


def test_explain_endpoint(client, scorer, few):
    s = scorer.spec.schema
    session = few.filter(pl.col(s.session_id) == few[s.session_id].unique().sort()[0])
    r = client.post("/explain", json={"events": _records(session, scorer)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        S.SESSION_ID,
        S.SCORE,
        S.BAND,
        S.RAW_SCORE,
        "events",
        "n_events",
        "note",
        "model_version",
        "latency_ms",
    }
    assert body["n_events"] == session.height == len(body["events"]) and body["note"] is None
    assert body[S.SCORE] == pytest.approx(scorer.score(session)[S.SCORE][0], abs=1e-6)
    # The scale of the contributions: the calibrated score alone made +0.95 look larger than the score.
    assert body[S.RAW_SCORE] == pytest.approx(scorer.score(session)[S.RAW_SCORE][0], abs=1e-6)
    expected = scorer.explain(session)
    assert [e[S.EVENT] for e in body["events"]] == expected[S.EVENT].to_list()
    assert [e[S.POSITION] for e in body["events"]] == expected[S.POSITION].to_list()
    np.testing.assert_allclose(
        [e[S.CONTRIBUTION] for e in body["events"]], expected[S.CONTRIBUTION].to_numpy(), atol=1e-6
    )
    assert body["events"][0][S.EVENT_TIME].endswith("Z")
    assert body["events"][0][S.FIELDS] == expected[S.FIELDS][0]


def test_explain_endpoint_refuses_bad_requests_like_score(client, scorer, few):
    s = scorer.spec.schema
    ids = few[s.session_id].unique().sort()
    e = _records(few.filter(pl.col(s.session_id) == ids[0]), scorer)
    other = _records(few.filter(pl.col(s.session_id) == ids[1]), scorer)
    cases = [
        ({"events": []}, 422, "at least 1 item"),
        ({"events": [e[0] | {"colour": "red"}]}, 422, "events[0]: unknown field(s) ['colour']"),
        ({"events": e + other}, 422, "one session per request"),
        ({"events": [e[0]] * (LIMITS.max_events_per_session + 1)}, 422, "at most 200 items"),
        ({"events": [e[0] | {s.timestamp: "yesterday-ish"}]}, 422, s.timestamp),
    ]
    for body, status, needle in cases:
        r = client.post("/explain", json=body)
        assert r.status_code == status and needle in r.json()["detail"], (body, r.text)
    r = client.post(
        "/explain",
        content=b" " * (LIMITS.max_session_body_bytes + 1),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def _cli_session(exported_artifact, few, scorer, tmp_path) -> tuple[str, list[str]]:
    """The first session of ``few`` and the ``seqfraud explain`` arguments that pick it, less ``--out``."""
    sid = str(few[scorer.spec.schema.session_id].unique().sort()[0])
    few.write_parquet(tmp_path / "events.parquet")
    return sid, [
        "--artifact",
        str(exported_artifact),
        "--events",
        str(tmp_path / "events.parquet"),
        "--session",
        sid,
    ]


def test_cli_writes_html_and_png(exported_artifact, few, scorer, tmp_path, capsys):
    from seqfraud.cli.explain import main, moved_most

    s = scorer.spec.schema
    sid, args = _cli_session(exported_artifact, few, scorer, tmp_path)
    # Into folders not made yet, as score writes (dogfood 206: a bare "No such file or directory").
    main([*args, "--out", str(tmp_path / "new" / "view.html"), "--png", str(tmp_path / "png" / "view.png")])
    printed = capsys.readouterr().out
    assert "no single event explains this score" not in printed
    mine = few.filter(pl.col(s.session_id) == sid)
    flagged = scorer.score(mine)[S.BAND][0] != "approve"
    assert printed.strip().endswith(
        f"events that moved the score most: {moved_most(scorer.explain(mine), flagged=flagged)}"
    )
    # The events that moved the score most, either way: one that lowered it most was left out (dogfood 97).
    made = pl.DataFrame(
        {
            S.POSITION: [0, 1, 2, 3],
            S.EVENT: ["login", "logout", "add_card", "view"],
            S.CONTRIBUTION: [0.006, -0.033, 0.004, 0.001],
        }
    )
    # Each by its row of the page too (dogfood 251: an integer event code alone read as a row number).
    assert moved_most(made) == "#1 logout (-0.033), #0 login (+0.006), #2 add_card (+0.004)"
    # Of a flagged session, the reason asked for: what raised it first (dogfood 221: three that lowered a review's
    # score were named, not the one that raised it most).
    assert moved_most(made, flagged=True) == "#0 login (+0.006), #2 add_card (+0.004), #3 view (+0.001)"
    assert moved_most(made.head(2), flagged=True) == "#0 login (+0.006), #1 logout (-0.033)"
    # One that prints as 0.000 is no reason (dogfood 99).
    assert moved_most(made.with_columns(pl.col(S.CONTRIBUTION) / 20)) == "#1 logout (-0.002)"
    assert (
        moved_most(made.with_columns(pl.col(S.CONTRIBUTION) / 1000))
        == "none (every event's contribution is 0.000)"
    )
    page = (tmp_path / "new" / "view.html").read_text()
    assert page.startswith("<!doctype html>") and sid in page and "<script" not in page
    for event in scorer.explain(few.filter(pl.col(s.session_id) == few[s.session_id].unique().sort()[0]))[
        S.EVENT
    ]:
        assert event in page
    assert (tmp_path / "png" / "view.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as exit_:  # a user error: one line, exit status 2
        main(
            [
                "--artifact",
                str(exported_artifact),
                "--events",
                str(tmp_path / "events.parquet"),
                "--session",
                "no-such-session",
                "--out",
                str(tmp_path / "x.html"),
            ]
        )
    assert exit_.value.code == 2
    assert "no events of session 'no-such-session'" in capsys.readouterr().err
    # A file without a column the model reads is named, where the error said 'events' (dogfood 97).
    other = tmp_path / "other.parquet"
    pl.read_parquet(tmp_path / "events.parquet").drop(s.categorical[0]).write_parquet(other)
    with pytest.raises(SystemExit):
        main(
            [
                "--artifact",
                str(exported_artifact),
                "--events",
                str(other),
                "--session",
                sid,
                "--out",
                "x.html",
            ]
        )
    assert f"error: {other}: missing column(s) '{s.categorical[0]}'" in capsys.readouterr().err


ACCOUNT_CHANGES = {"change_email", "change_password", "add_payment_method"}
ATO_PREFIX = {"login", "view_account", *ACCOUNT_CHANGES}  # the takeover part of an ato_order session


@pytest.mark.slow
def test_ato_order_sessions_are_explained_by_their_account_changes(tmp_path):
    """A small transformer that learned the order-only typology points at the account changes after login.

    On the sessions it flags, an account change is among the three top events of at least 80% and the top
    event belongs to the takeover prefix (login, view_account, the account changes) in at least 75%.

    Trains the default experiment (about 1-2 minutes on CPU), so it is kept out of the default run.
    """
    import os

    from hydra import compose, initialize_config_dir

    from seqfraud.data.synthetic import ATO_ORDER
    from seqfraud.export.exporter import export_run
    from seqfraud.training.train import train
    from tests.conftest import ROOT, single_torch_thread

    os.environ.setdefault("WANDB_MODE", "disabled")
    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "+experiment=synthetic_transformer",
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.data_dir={tmp_path / 'data'}",
                "logger=none",
                "trainer.enable_progress_bar=false",
            ],
        )
    with single_torch_thread():
        train(cfg)
        artifact = export_run(tmp_path / "run", tmp_path / "artifact", formats=["torchscript"])
        scorer = Scorer.load(artifact)
        data = tmp_path / "data" / "synthetic"
        test_ids = pl.read_parquet(tmp_path / "run" / "predictions" / "test.parquet")[S.SESSION_ID]
        typologies = pl.read_parquet(data / "typologies.parquet").with_columns(
            pl.col(S.SESSION_ID).cast(pl.String)
        )
        ato = typologies.filter(
            (pl.col(S.TYPOLOGY) == ATO_ORDER) & pl.col(S.SESSION_ID).is_in(test_ids.implode())
        )
        ato = ato[S.SESSION_ID].to_list()
        events = pl.read_parquet(data / "events.parquet")
        events = events.filter(pl.col(scorer.spec.schema.session_id).cast(pl.String).is_in(ato))
        flagged = scorer.score(events).filter(pl.col(S.RAW_SCORE) >= 0.5)[S.SESSION_ID]
        assert len(flagged) >= 5, "the model did not learn the ato_order typology"
        explained = scorer.explain(
            events.filter(pl.col(scorer.spec.schema.session_id).cast(pl.String).is_in(flagged.implode()))
        )
    top3 = top_events(explained, 3).group_by(S.SESSION_ID).agg(pl.col(S.EVENT))
    assert top3[S.EVENT].list.eval(pl.element().is_in(list(ACCOUNT_CHANGES))).list.any().mean() >= 0.8, top3
    top1 = top_events(explained, 1)
    assert top1[S.EVENT].is_in(list(ATO_PREFIX)).mean() >= 0.75, top1


def test_cli_says_when_no_single_event_moves_the_score(
    exported_artifact, few, scorer, tmp_path, capsys, monkeypatch
):
    """Every contribution 0 (a stacked model's trees that no one event's removal crosses), or a largest one that
    is a sliver of the score (+0.008 of a 0.977 on a dogfood log, LightGBM alone), reads as a broken explanation,
    or a wrong one, unless the command says what it means."""
    import seqfraud.cli.explain as cli

    _, args = _cli_session(exported_artifact, few, scorer, tmp_path)
    real_explain, real_score = Scorer.explain, Scorer.score
    for contribution, raw in ((0.0, 0.5), (0.008, 0.977)):

        def explained(self, *a, contribution=contribution, **k):
            return real_explain(self, *a, **k).with_columns(pl.lit(contribution).alias(S.CONTRIBUTION))

        def flagged(self, *a, raw=raw, **k):
            return real_score(self, *a, **k).with_columns(
                pl.lit(raw).alias(S.RAW_SCORE), pl.lit("decline").alias(S.BAND)
            )

        monkeypatch.setattr(Scorer, "explain", explained)
        monkeypatch.setattr(Scorer, "score", flagged)
        cli.main([*args, "--out", str(tmp_path / "flat.html")])
        out = capsys.readouterr().out
        assert "note: no single event explains this score" in out
        assert f"the largest rise of its raw score of {raw:.3f} is {contribution:.3f}" in out
        # The page says it too, where the command alone did (dogfood 120).
        assert "no single event explains this score" in (tmp_path / "flat.html").read_text()
        # Trees are named only where a stacker made the score (it was said of every model).
        assert ("a stacked model's trees" in out) == (scorer.stacker is not None)
    # Events that count and are not listed (too many before a stacked window) may hold the reason: one of them
    # moved a dogfood's raw score from 0.737 to 0.165, while the note said no single event explains it.
    from seqfraud.scoring.explain import flat_note

    flat = {S.RAW_SCORE: 0.5, S.SCORE: 0.5, S.BAND: "review", "stacked": True}
    assert "a stacked model's trees" in flat_note(np.zeros(62), flat)
    # Half of a blend's logit is the sequence model's, smooth in each event (review 256).
    blended = flat_note(np.zeros(62), flat | {"blend": True})
    assert "half of a blend's logit is LightGBM's" in blended and "a stacked model's" not in blended
    said = flat_note(np.zeros(62), {S.RAW_SCORE: 0.737, S.BAND: "decline", "stacked": True, "unlisted": 1352})
    assert said is not None and "the session as a whole" not in said
    assert said.startswith(
        "no listed event explains this score (the largest rise of its raw score of 0.737 is 0.000)"
    )
    assert (
        "the 1,352 earlier events count through the stacker's aggregates unlisted, and one of them may"
        in said
    )
    # Nor is it "the session as a whole" where its entity context moved it more than any event (dogfood 131),
    # and unlisted events keep their note beside the context's (review 134); a shift that shows as no move is none.
    ring = {S.RAW_SCORE: 0.988, S.BAND: "decline", "stacked": True, "context_shift": 0.987}
    assert flat_note(np.zeros(5), ring) == (
        "no single event explains this score (the largest rise of its raw score of 0.988 is 0.000): its entity "
        "context moves it more"
    )
    # Events that lower a flagged session's score are no reason for it (dogfood 136: a declined 0.994 listed three
    # falls with no note); for an approved one any move counts.
    falls = np.array([-0.102, -0.075, -0.067])
    declined = flat_note(falls, {S.RAW_SCORE: 0.994, S.BAND: "decline", "stacked": False})
    assert declined is not None and declined.startswith(
        "no single event explains this score (the largest rise of its raw score of 0.994 is 0.000): it comes from "
        "the session as a whole"
    )
    assert flat_note(falls, {S.RAW_SCORE: 0.2, S.BAND: "approve", "stacked": False}) is None
    # A steep calibration makes a sliver of the raw score much of the score the bands read (dogfood 193: raw moves
    # of 0.001 took a declined 0.972 to 0.767, "from the session as a whole"); a flat one keeps the note.
    sliver = np.array([0.001, -0.0005, 0.0003], dtype=np.float32)
    steep_row = {S.RAW_SCORE: 0.0232, S.SCORE: 0.96, S.BAND: "decline", "stacked": False}
    steep = flat_note(sliver, steep_row, lambda r: np.clip((r - 0.02) * 300, 0, 1))
    assert steep == (
        "the events move its raw score of 0.023 by 0.001 at most, but the calibration is steep there: without one "
        "of them its score of 0.960 moves by 0.300; the contributions are raw-score moves: read them as an order"
    )
    assert "the session as a whole" in flat_note(sliver, steep_row | {S.SCORE: 0.0232}, lambda r: r)
    # An approved session's moves of 5e-4 under a mild slope are no steepness (review 197).
    mild = {S.RAW_SCORE: 0.2, S.SCORE: 0.26, S.BAND: "approve", "stacked": False}
    assert "steep" not in flat_note(np.full(3, 3e-4), mild, lambda r: 1.3 * r)
    # Nor is a context that lowers a flagged session's score its reason (review 156).
    lowered = flat_note(np.zeros(5), ring | {"context_shift": -0.3})
    assert lowered is not None and "its entity context" not in lowered and "the session as a whole" in lowered
    long_ring = flat_note(np.zeros(5), ring | {"unlisted": 1352})
    assert long_ring is not None and long_ring.endswith(
        "one of them may; its entity context moves it by 0.987"
    )
    still = flat_note(np.zeros(5), ring | {"context_shift": 0.0003})
    assert still is not None and "the session as a whole" in still
    # The context's note decides on what it prints: the score, or its band (review 134: a calibration's steps).
    from seqfraud.scoring.explain import context_note

    row = {S.SCORE: 0.040, S.BAND: "approve", S.RAW_SCORE: 0.30}
    assert context_note(row, row | {S.RAW_SCORE: 0.25}, ["device"]) is None  # a flat step of the calibration
    across = context_note(row | {S.SCORE: 0.600, S.BAND: "review"}, row | {S.RAW_SCORE: 0.2997}, ["device"])
    assert across == (
        "its entity context, the other sessions on its device, moves its score from 0.040 (approve) without them "
        "to 0.600 (review); the events listed are the session's own"
    )


def test_a_session_id_without_its_leading_zeros_is_pointed_at_the_ids_that_have_them(tmp_path):
    """Ids compare as text, so '663553' is not '0663553': the error names the ids the file does hold."""
    from seqfraud.data.events import DataValidationError
    from seqfraud.features.spec import Spec
    from seqfraud.schema import Schema
    from seqfraud.scoring.explain import session_events

    spec = Spec(schema=Schema(), timestamp_unit="us", max_len=4, vocab={"event_type": ["pay"]}, edges={})
    (tmp_path / "e.csv").write_text(
        "session_id,timestamp,event_type\n0663553,2026-01-01T00:00:00Z,pay\n7,2026-01-01T00:00:01Z,pay\n"
        "S0100594,2026-01-01T00:00:02Z,pay\n"
    )
    found, others = session_events(tmp_path / "e.csv", spec, "0663553")
    assert found.height == 1 and others.collect()["session_id"].to_list() == ["7", "S0100594"]
    with pytest.raises(DataValidationError, match=r"no events of session '663553' \(ids compare as text; "):
        session_events(tmp_path / "e.csv", spec, "663553")
    # As a spreadsheet writes an integer id (dogfood 196).
    with pytest.raises(
        DataValidationError, match=r"no events of session '7.0' \(ids compare as text; .*\['7'\]"
    ):
        session_events(tmp_path / "e.csv", spec, "7.0")
    with pytest.raises(DataValidationError, match=r"no events of session 'x'$"):
        session_events(tmp_path / "e.csv", spec, "x")
    # In another case (dogfood 230: no hint for 's0100594').
    with pytest.raises(DataValidationError, match=r"'s0100594' \(ids compare as text; .*\['S0100594'\]"):
        session_events(tmp_path / "e.csv", spec, "s0100594")


def test_a_long_sessions_chart_shows_its_largest_contributions(tmp_path, monkeypatch):
    """A 608-event session drew a bar chart 16,524 pixels tall (dogfood 71): a long session's chart keeps the
    PNG_EVENTS events of largest contribution, in time order."""
    from matplotlib.axes import Axes

    from seqfraud import reports

    drawn = []
    barh = Axes.barh
    monkeypatch.setattr(
        Axes, "barh", lambda ax, y, width, **k: drawn.append(list(width)) or barh(ax, y, width, **k)
    )
    monkeypatch.setattr(reports, "PNG_EVENTS", 5)
    contributions = [0.01, -0.3, 0.0, 0.2, 0.05, -0.02, 0.4, 0.001, -0.1, 0.03]
    explained = pl.DataFrame({S.POSITION: range(10), S.EVENT: ["view"] * 10, S.CONTRIBUTION: contributions})
    scored = {S.SESSION_ID: "s", S.SCORE: 0.5, S.RAW_SCORE: 0.5, S.BAND: "review"}
    reports.session_png(explained, scored, tmp_path / "long.png")
    reports.session_png(explained.head(4), scored, tmp_path / "short.png")
    assert drawn == [[-0.3, 0.2, 0.05, 0.4, -0.1], [0.01, -0.3, 0.0, 0.2]]
    tall = [int.from_bytes((tmp_path / f).read_bytes()[20:24], "big") for f in ("long.png", "short.png")]
    assert tall[0] > tall[1]  # five bars and a second title line against four bars
    # The id on a line of its own, cut past 60 characters: a uuid's title ran off the figure (dogfood 193).
    titles = []
    set_title = Axes.set_title
    monkeypatch.setattr(
        Axes, "set_title", lambda ax, text, **k: titles.append(text) or set_title(ax, text, **k)
    )
    for sid in ("67e7ae0b-5c1f-4a5e-9c1e-0d5b2f8e4a11", "x" * 200):
        reports.session_png(explained.head(4), scored | {S.SESSION_ID: sid}, tmp_path / "id.png")
    assert titles[0].split("\n") == [
        "session 67e7ae0b-5c1f-4a5e-9c1e-0d5b2f8e4a11",
        "score 0.500 (model 0.500), band review",
    ]
    assert titles[1].split("\n")[0] == "session " + "x" * 57 + "..."


def test_the_report_writes_a_whole_number_as_one() -> None:
    """Numeric columns are read as floats: an integer column's ``1251`` read ``PolicyAgeDays=1251.0`` in the
    report (dogfood 198), while a fraction keeps its digits."""
    from datetime import datetime, timezone

    from seqfraud.reports import session_html

    fields = {"days": 1251.0, "amount": 4500.25, "device": "ios", "note": None}
    explained = pl.DataFrame(
        {
            S.POSITION: [0],
            S.EVENT_TIME: [datetime(2026, 5, 1, tzinfo=timezone.utc)],
            S.EVENT: ["login"],
            S.CONTRIBUTION: [0.1],
            S.FIELDS: [fields],
        }
    )
    scored = {S.SESSION_ID: "c-1", S.SCORE: 0.5, S.RAW_SCORE: 0.5, S.BAND: "review"}
    assert "days=1251, amount=4500.25, device=ios</td>" in session_html(explained, scored, "v1")
