"""``model=stacked``: out-of-fold sequence scores, LightGBM on aggregates plus that score, one artifact."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from seqfraud import schema as S
from seqfraud.baselines import STACKER_FILE
from seqfraud.data.shards import shard_files
from seqfraud.export.artifact import (
    COMPILED_STEP_FILE,
    MANIFEST_FILE,
    ArtifactError,
    canonical_json,
    file_entries,
    open_artifact,
)
from seqfraud.rundir import STACKING_REPORT
from seqfraud.scoring.prepare import normalized_events
from seqfraud.training.stacking import fold_datasets
from tests.conftest import compose_train, service_client, single_torch_thread, train_into


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory) -> Path:
    """The smoke experiment as ``model=stacked`` (two folds of a tiny sequence model); read-only."""
    tiny = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.field_dim=4"]
    return train_into(
        tmp_path_factory.mktemp("stacked"),
        "+experiment=smoke",
        "model=stacked",
        "model.stacking.folds=2",
        *tiny,
        "trainer.max_epochs=1",
    )


@pytest.fixture(scope="module")
def stacked_artifact(stacked_run, tmp_path_factory) -> Path:
    from seqfraud.export.exporter import export_run

    with single_torch_thread():
        return export_run(
            stacked_run, tmp_path_factory.mktemp("export") / "artifact", formats=["torchscript"]
        )


def served_as_the_run(run: Path, scorer) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The run's test sessions' events, the run's test scores, and the artifact's scores of those events: its raw
    scores are the run's."""
    from omegaconf import OmegaConf

    expected = pl.read_parquet(run / "predictions" / "test.parquet")
    events = pl.read_parquet(OmegaConf.load(run / "config.yaml").data.events)
    scored = events.filter(pl.col("session_id").cast(pl.String).is_in(expected[S.SESSION_ID].implode()))
    got = scorer.score(scored)
    joined = expected.join(got, on=S.SESSION_ID, suffix="_served")
    assert joined.height == expected.height
    np.testing.assert_allclose(joined["raw_score"], joined[S.SCORE], atol=1e-5)
    return scored, expected, got


@pytest.mark.integration
def test_model_gru_is_the_default_models_sequence_model():
    """``model=gru`` and the ``sequence`` a stacked run fits are one model, as metrics name both ``gru`` (dogfood
    253: ``model=gru`` was a one-layer GRU, beside the default's two)."""
    from omegaconf import OmegaConf

    from seqfraud.training.train import SEQUENCE_KEYS

    gru, stacked = (OmegaConf.to_container(compose_train([f"model={m}"]).model) for m in ("gru", "stacked"))
    assert (gru["kind"], stacked["kind"]) == ("sequence", "stacked")
    assert {k: gru.get(k) for k in SEQUENCE_KEYS} == {k: stacked.get(k) for k in SEQUENCE_KEYS}
    assert gru["n_layers"] == 2


def test_stacked_run_scores_with_lightgbm_over_out_of_fold_scores(stacked_run):
    report = json.loads((stacked_run / STACKING_REPORT).read_text())
    assert report["folds"] == 2 and report["best_iteration"] >= 1
    assert report["chosen"] in (
        "stacked",
        "aggregates",
        "blend",
    )  # this run's stacker (a tiny model, one epoch)
    assert report["confidence"] == 0.95 and set(report["win_share"]) == {"stacked", "sequence", "blend"}
    frauds = int(pl.read_parquet(stacked_run / "predictions" / "val.parquet")[S.LABEL].sum())
    assert (report["validation_frauds"], report["frauds_needed"]) == (frauds, 5)
    signal = report["sequence_out_of_fold"]["chance_p_value"] <= 1 - report["confidence"]
    sure = [k for k, share in report["win_share"].items() if signal and share >= report["confidence"]]
    val = report["candidates_val_pr_auc"]
    over_blend = report["win_share_over_blend"]
    assert set(over_blend) == (set(sure) - {"blend"} if "blend" in sure else set())
    beyond = [k for k, share in over_blend.items() if share >= report["confidence"]]
    assert report["chosen"] == (
        max(beyond, key=val.get, default="blend")
        if "blend" in sure
        else max(sure, key=val.get, default="aggregates")
    )
    assert report["kept"]["val"]["pr_auc"] == pytest.approx(val[report["chosen"]])
    assert val["sequence"] == pytest.approx(report["sequence"]["val"]["pr_auc"])
    test = pl.read_parquet(stacked_run / "predictions" / "test.parquet")
    metrics = json.loads((stacked_run / "metrics.json").read_text())
    assert metrics["model"] == "stacked"
    assert metrics["test"]["pr_auc"] == pytest.approx(report["kept"]["test"]["pr_auc"])
    assert (
        report["sequence_out_of_fold"]["train"]["n"]
        == pl.read_parquet(shard_files(stacked_run / "data" / "train")).height
    )
    booster = lgb.Booster(model_file=str(stacked_run / STACKER_FILE))
    assert booster.feature_name()[-1] == f"{booster.num_feature() - 1}_sequence_logit"
    assert test[S.SCORE].n_unique() > 10
    assert not (stacked_run / "folds").exists()  # fold data and checkpoints are removed


@pytest.mark.integration
def test_a_stacked_runs_sequence_model_is_the_one_its_sequence_config_alone_fits(stacked_run, tmp_path):
    """Its refit came after the folds' fits, from the random state they left: a run of the default's sequence model
    alone, same seed and config, scored up to 0.036 test PR-AUC apart from it (dogfood 253). Each fit starts from
    the run's seed."""
    report = json.loads((stacked_run / STACKING_REPORT).read_text())
    tiny = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.field_dim=4"]
    alone = train_into(
        tmp_path, "+experiment=smoke", "model=small", "model.encoder=gru", *tiny, "trainer.max_epochs=1"
    )
    metrics = json.loads((alone / "metrics.json").read_text())
    for split in ("val", "test"):
        assert report["sequence"][split]["pr_auc"] == pytest.approx(metrics[split]["pr_auc"], abs=1e-9), split


@pytest.mark.integration
def test_out_of_fold_scores_without_signal_leave_the_baseline_whatever_validation_says(
    tmp_path, monkeypatch, caplog
):
    """Validation chose the candidates' trees and checkpoints, so it flatters them: a dogfood's stacker (2 trees,
    8 validation frauds) was kept over a score whose out-of-fold ROC-AUC was 0.45, and lost to LightGBM on
    test. Out-of-fold scores that are noise keep the baseline, here where validation surely preferred the
    sequence model."""
    from seqfraud.training import stacking

    def noise(cfg, prepared, fit_sequence, folds):  # no fold fitted: each training session a random score
        n = stacking.session_order(prepared.datasets["train"]).height
        return np.random.default_rng(0).random(n).astype(np.float32)

    def validation_prefers_the_sequence(y, val, val_ap, allowed, **kw):
        return "sequence", {kind: 1.0 for kind in allowed}, {}

    monkeypatch.setattr(stacking, "out_of_fold_scores", noise)
    monkeypatch.setattr(stacking, "choose_candidate", validation_prefers_the_sequence)
    tiny = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.field_dim=4"]
    with caplog.at_level("INFO", logger="seqfraud.training.stacking"):
        run = train_into(
            tmp_path,
            "+experiment=smoke",
            "model=stacked",
            *tiny,
            "trainer.max_epochs=1",
            "small_split.min_batches=50",
            "loader.prefix_share=0.5",
        )
    report = json.loads((run / STACKING_REPORT).read_text())
    assert report["chosen"] == "aggregates" and report["sequence_out_of_fold"]["chance_p_value"] > 0.05
    # Prefixes the kept LightGBM never learnt: said (dogfood 218: the README's remedy changed nothing, unsaid).
    assert "loader.prefix_share=0.5 trained the sequence model on prefixes, which this model's" in caplog.text
    assert report["win_share"] == {"stacked": 1.0, "blend": 1.0, "sequence": 1.0}
    # It never runs its sequence model: no share of events read (dogfood 118: compare showed 100%).
    assert "sequence_reads" not in json.loads((run / "metrics.json").read_text())
    assert "no evidence the score carries signal" in caplog.text
    # The log line gives the rule beside the figures: a baseline below a candidate's PR-AUC read as kept for no
    # reason (dogfood 63).
    assert "(model.stacking.confidence): sequence 1.000, blend 1.000, stacked 1.000" in caplog.text
    # The baseline kept carries this log's signal: not said to be at chance (dogfood 57's warning).
    assert "the kept baseline ranks the validation frauds no surer than chance" not in caplog.text
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["pr_auc"] == pytest.approx(report["kept"]["test"]["pr_auc"])
    # The baseline kept is model=lightgbm's very model (dogfood 253: the stacker's rows were snapped, LightGBM's
    # alone were not, and scores moved by up to 0.108).
    alone = train_into(tmp_path / "lightgbm", "+experiment=smoke", "model=lightgbm")
    kept, lightgbm = (pl.read_parquet(r / "predictions" / "test.parquet") for r in (run, alone))
    assert kept[S.SESSION_ID].to_list() == lightgbm[S.SESSION_ID].to_list()
    np.testing.assert_allclose(kept[S.SCORE], lightgbm[S.SCORE], atol=1e-6)
    # The small split's schedule, where it left the config's: recorded (the epochs set here stay).
    n = metrics["train"]["n"]
    assert metrics["small_split"] == {"loader.batch_size": n // 50, "callbacks.early_stopping.patience": 6}
    # Its GRU's step is never run: not compiled to native code (2 minutes of a dogfood's 3.6-minute export, and
    # every load of the artifact warned of the native file: dogfood 177).
    from seqfraud.export.exporter import export_run

    with single_torch_thread(), caplog.at_level("INFO", logger="seqfraud.export.exporter"):
        artifact = export_run(run, tmp_path / "artifact", formats=["torchscript"])
    assert "never runs its sequence model, whose step is not compiled to native code" in caplog.text
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    assert "compiled" not in manifest["step"] and not (artifact / COMPILED_STEP_FILE).exists()


@pytest.mark.integration
def test_a_stacked_run_that_keeps_its_sequence_model_alone_exports_as_that_model(tmp_path, monkeypatch):
    """The stacker is not kept when the refit sequence model alone does better (its folds can be far weaker than
    it): then no stacker.txt, the run's scores are the sequence model's, and the artifact serves them alone."""
    from seqfraud.export.exporter import export_run
    from seqfraud.scoring.scorer import Scorer
    from seqfraud.training import stacking

    tiny = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.field_dim=4"]
    # Left by an earlier run into the same directory: export took it as this run's stacker (a dogfood).
    (tmp_path / "run" / "run").mkdir(parents=True)
    (tmp_path / "run" / "run" / STACKER_FILE).write_text("tree\n")
    # The one allowed candidate is kept, whatever validation says of a 1-epoch model.
    monkeypatch.setattr(stacking, "choose_candidate", lambda *_, **__: ("sequence", {"sequence": 1.0}, {}))
    run = train_into(
        tmp_path / "run",
        "+experiment=smoke",
        "model=stacked",
        "model.stacking.folds=2",
        "model.stacking.candidates=[sequence]",
        *tiny,
        "trainer.max_epochs=1",
    )
    report = json.loads((run / STACKING_REPORT).read_text())
    assert report["chosen"] == "sequence" and set(report["win_share"]) == {"sequence"}
    assert not (run / STACKER_FILE).exists() and report["best_iteration"] is None
    assert report["sequence_out_of_fold"] is None  # without the stacker as a candidate no fold is fitted
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["pr_auc"] == pytest.approx(report["sequence"]["test"]["pr_auc"])
    # Uncalibrated: a one-epoch model may rank validation below chance, which Platt scaling refuses. Its step
    # compiled to native code is test_online's (20 s of g++ here).
    with single_torch_thread():
        artifact = export_run(
            run, tmp_path / "artifact", formats=["torchscript"], compiled_step=False, calibration="none"
        )
    assert "stacker" not in json.loads((artifact / MANIFEST_FILE).read_text())
    scorer = Scorer.load(artifact)
    assert scorer.stacker is None
    served_as_the_run(run, scorer)


@pytest.mark.integration
def test_a_stacked_run_that_keeps_the_blend_exports_it_and_scores_it_like_the_run(tmp_path, monkeypatch):
    """The blend (the mean of the baseline's and the sequence model's logits) travels as the baseline's trees with
    ``combine`` in the manifest: batch, records and per-event scores are the run's, and an unknown way to
    combine is refused."""

    from seqfraud.export.exporter import export_run
    from seqfraud.scoring.scorer import Scorer
    from seqfraud.training import stacking
    from tests.test_online import replay_matches_whole_sessions, session_records, without_ids

    tiny = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.field_dim=4"]
    monkeypatch.setattr(stacking, "choose_candidate", lambda *_, **__: ("blend", {"blend": 1.0}, {}))
    run = train_into(
        tmp_path / "run",
        "+experiment=smoke",
        "model=stacked",
        "model.stacking.candidates=[blend]",
        *tiny,
        "trainer.max_epochs=1",
    )
    report = json.loads((run / STACKING_REPORT).read_text())
    assert report["chosen"] == "blend" and report["sequence_out_of_fold"] is None  # no fold fitted
    assert report["kept"]["val"]["pr_auc"] == pytest.approx(report["candidates_val_pr_auc"]["blend"])
    booster = lgb.Booster(model_file=str(run / STACKER_FILE))
    assert booster.feature_importance("split")[-1] == 0  # the baseline's trees
    with single_torch_thread():
        artifact = export_run(run, tmp_path / "artifact", formats=["torchscript"], compiled_step=False)
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    assert manifest["stacker"] == {"file": STACKER_FILE, "format": "lightgbm-text", "combine": "mean-logit"}
    assert manifest["parity"]["end_to_end"]["max_abs_diff"] <= 1e-5
    scorer = Scorer.load(artifact)
    assert scorer.stacker is not None and scorer.stacker.blend and scorer.reads_sequence
    scored, _, got = served_as_the_run(run, scorer)
    # Neither part alone: the blend's scores are the mean of their logits.
    from seqfraud.baselines import Stacker

    parts = []
    for stacker in (None, Stacker(booster, scorer.spec)):  # the sequence model's, the trees' alone
        scorer.stacker = stacker
        parts.append(scorer.score(scored).sort(S.SESSION_ID)[S.RAW_SCORE].to_numpy().astype(np.float64))
    scorer.stacker = Stacker(booster, scorer.spec, blend=True)
    logit = [np.log(p / (1 - p)) for p in parts]
    mean = 1 / (1 + np.exp(-(logit[0] + logit[1]) / 2))
    np.testing.assert_allclose(got.sort(S.SESSION_ID)[S.RAW_SCORE], mean, atol=1e-5)
    assert np.abs(mean - parts[0]).max() > 1e-3 and np.abs(mean - parts[1]).max() > 1e-3
    with single_torch_thread():
        assert replay_matches_whole_sessions(scorer, without_ids(session_records(run, 2, min_events=5))) >= 10
    unknown = tmp_path / "unknown"
    shutil.copytree(artifact, unknown)
    (unknown / MANIFEST_FILE).write_bytes(
        canonical_json(manifest | {"stacker": manifest["stacker"] | {"combine": "max"}})
    )
    with pytest.raises(ArtifactError, match="'stacker'"):
        open_artifact(unknown)


def test_stacking_candidates_other_than_a_list_of_known_ones_are_refused_before_any_data_is_read():
    """A bare `sequence` was split into its letters, and null raised a TypeError (a dogfood)."""
    from omegaconf import OmegaConf

    from seqfraud.errors import ConfigError
    from seqfraud.training.stacking import check_stacking

    for given in (["sequence", "lightgbm"], "sequence", None, [], ["sequence", "sequence"]):
        cfg = OmegaConf.create({"model": {"stacking": {"candidates": given}}, "trainer": {}})
        with pytest.raises(
            ConfigError, match=r"model.stacking.candidates must be a non-empty list without repeats"
        ):
            check_stacking(cfg)


@pytest.mark.integration
def test_stacked_artifact_scores_records_without_polars_and_event_by_event(
    stacked_run, stacked_artifact, caplog
):
    """A request's records take the Polars-free path, aggregates included, and online scoring keeps the
    session's running aggregates: both score as the Polars path scores the whole session."""
    from seqfraud.scoring.online import OnlineScorer
    from seqfraud.scoring.scorer import Scorer
    from seqfraud.scoring.state import MemoryStore
    from tests.test_online import replay_matches_whole_sessions, session_records, without_ids

    scorer = Scorer.load(stacked_artifact)
    records = without_ids(session_records(stacked_run, 3, min_events=20))
    fast = scorer.score(records, source="records")
    full = scorer.score_normalized(normalized_events(pl.DataFrame(records).lazy(), scorer.spec, "frame"))
    assert fast[S.SESSION_ID].to_list() == full[S.SESSION_ID].to_list() and fast.height == 3
    np.testing.assert_allclose(fast[S.RAW_SCORE], full[S.RAW_SCORE], atol=1e-6)
    with single_torch_thread():
        assert replay_matches_whole_sessions(scorer, records) >= 60
        # An upgrade over states of format 5, which kept the session's columns where the running aggregates are
        # now: such a state is read, and its next event computes the aggregates from the session's events.
        session = [r for r in records if r[S.SESSION_ID] == records[0][S.SESSION_ID]]
        session, more, sid = session[:-2], session[-2:], records[0][S.SESSION_ID]
        store = MemoryStore()
        online = OnlineScorer(scorer, store)
        online.events(session[:-1])
        store.update(sid, version_5_state)
        assert online.session(sid).aggregates is None
        (result,) = online.events(session[-1:])
        # A model without a stacker holds a session's latest events only (max_len + 1): taken over by this one
        # (a deploy of the default model), the aggregates read the events held, and its later events score on,
        # where the count's check refused every one of them as damaged (review 87).
        state = online.session(sid)
        state.records = b"\n".join(state.records.split(b"\n")[-5:])
        state.aggregates, state.model_version = None, "a model without a stacker"
        store.update(sid, lambda _: state.encode())
        got = [online.events([r])[0] for r in more]
    whole = scorer.score(session, source="test").row(0, named=True)
    assert result["n_events"] == len(session) and abs(result[S.SCORE] - whole[S.SCORE]) <= 1e-5
    held = scorer.score([*session[-5:], *more], source="test").row(0, named=True)
    assert not any(g["degraded"] for g in got) and abs(got[-1][S.SCORE] - held[S.SCORE]) <= 1e-5
    assert (
        f"read only the events their state held: 1 since the last such line; session {sid!r}: 6 of"
        in caplog.text
    )


def version_5_state(data: bytes | None) -> bytes:
    """A state as format 5 wrote it: the session's plain columns where format 6 has its running aggregates
    (their layout and sizes; the values are not read)."""
    assert data is not None
    size = int.from_bytes(data[:4], "little")
    meta = json.loads(data[4 : 4 + size])
    aggregates, n, hidden = meta.pop("aggregates"), meta["n_events"], meta["hidden"]
    tokens_end = 4 + size + 8 * meta["tokens"][0] * meta["tokens"][1]
    start = tokens_end + (0 if hidden is None else 4 * math.prod(hidden))
    end = start + 8 * (aggregates["counts"] + aggregates["totals"] + aggregates["gaps"]) + aggregates["text"]
    text = json.dumps([[None] * n]).encode()
    columns = bytes(n * (16 + 9)) + text  # times, rows, one number column and its nulls, one text column
    meta |= {
        "version": 5,
        "columns": {"n": n, "numeric": ["amount"], "categorical": ["device"], "text": len(text)},
        "hidden": None if hidden is None else hidden[1:],  # the first window start's: [layers, width]
    }
    first = b"" if hidden is None else data[tokens_end : tokens_end + 4 * math.prod(hidden[1:])]
    header = json.dumps(meta).encode()
    return (
        len(header).to_bytes(4, "little")
        + header
        + data[4 + size : tokens_end]
        + first
        + columns
        + data[end:]
    )


@pytest.mark.integration
def test_stacked_artifact_scores_like_the_run_and_refuses_a_changed_stacker(
    stacked_run, stacked_artifact, tmp_path
):

    from seqfraud.scoring.scorer import Scorer

    manifest = json.loads((stacked_artifact / MANIFEST_FILE).read_text())
    assert manifest["stacker"] == {"file": STACKER_FILE, "format": "lightgbm-text"}
    assert manifest["parity"]["end_to_end"]["max_abs_diff"] <= 1e-5
    scorer = Scorer.load(stacked_artifact)
    assert scorer.stacker is not None
    events, expected, _ = served_as_the_run(stacked_run, scorer)

    session = events.filter(pl.col("session_id") == expected[S.SESSION_ID][0]).select(
        scorer.spec.schema.event_columns
    )
    payload = session.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")).to_dicts()
    with service_client(stacked_artifact) as client:
        r = client.post(
            "/score", json={"events": [{k: v for k, v in e.items() if v is not None} for e in payload]}
        )
    assert r.status_code == 200, r.text
    assert r.json()[S.SCORE] == pytest.approx(scorer.score(session)[S.SCORE][0], abs=1e-6)

    explained = scorer.explain(session)
    assert explained.height == min(session.height, scorer.spec.max_len)
    assert explained[S.CONTRIBUTION].is_finite().all()
    # Events count through the sequence model (masked) and the aggregates (left out), so they count whichever
    # candidate won. When the baseline's won, the score is held constant: an event's contribution is then
    # exactly the score change from leaving it out of the session.
    assert explained[S.CONTRIBUTION].abs().max() > 0
    chosen = json.loads((stacked_run / STACKING_REPORT).read_text())["chosen"]
    if chosen == "aggregates" and session.height <= scorer.spec.max_len:
        raw = scorer.score(session)[S.RAW_SCORE][0]
        in_order = session.with_row_index("_i").sort("timestamp", "_i", maintain_order=True)
        for j in range(min(4, session.height - 1)):
            without = in_order.filter(pl.col("_i") != in_order["_i"][j]).drop("_i")
            left_out = raw - scorer.score(without)[S.RAW_SCORE][0]
            assert explained[S.CONTRIBUTION][j] == pytest.approx(left_out, abs=1e-6), j

    changed = tmp_path / "changed"
    shutil.copytree(stacked_artifact, changed)
    text = (changed / STACKER_FILE).read_text()
    at = text.index("leaf_value=") + len("leaf_value=") + 1  # a leaf's value, one digit changed in place
    digit = next(i for i in range(at, len(text)) if text[i].isdigit())
    swapped = "1" if text[digit] != "1" else "2"
    (changed / STACKER_FILE).write_text(text[:digit] + swapped + text[digit + 1 :])
    with pytest.raises(ArtifactError, match="SHA-256"):
        open_artifact(changed)
    # Hashes rewritten to match: the text itself must still be a stacker. A byte added to a tree aborted the process
    # in LightGBM (dogfood 272), a split on an input past the rows or a child past the nodes read and wrote memory
    # past them (a segfault at load or at the first prediction), and a child that points back walked for ever.
    first_split = re.search(r"num_leaves=([2-9]|\d\d)", text)
    assert first_split is not None, "the stacker holds a tree with a split"
    split_tree = text[text.rindex("Tree=", 0, first_split.start()) :]
    tree_name = split_tree.split("\n", 1)[0]
    for garbled_text, said in [
        ("tree\nversion=v4\nnot a model\n", "cannot load the stacker"),
        (text.replace("\nleaf_value=", "\n9leaf_value=", 1), "holds the line '9leaf_value="),
        # Text LightGBM reads otherwise than a check would (review 274): its line ends, a key after a character
        # Python's splitlines() ends a line at, a class count of 0 (LightGBM divides by it), tree sizes after a
        # carriage return (LightGBM then reads in parallel), a last line without "=" (read past the text's end).
        (text.replace("\n", "\r\n"), "its first line is not 'tree'"),
        (text.replace("\nleaf_value=", "\nx\x1cleaf_value=", 1), "holds the line 'x\\x1cleaf_value="),
        (
            text.replace("num_tree_per_iteration=1", "num_tree_per_iteration=0"),
            "its num_tree_per_iteration is '0'",
        ),
        (text.replace("\ntree_sizes=", "\rtree_sizes=", 1), "its feature_infos hold"),
        (text[: text.index("\nend of trees")] + "\nxyz", "no line 'end of trees'"),
        (
            text.replace(
                split_tree, re.sub(r"split_feature=\d+", "split_feature=99999", split_tree, count=1)
            ),
            f"{tree_name} splits on input 99999",
        ),
        (
            text.replace(split_tree, re.sub(r"left_child=-?\d+", "left_child=0", split_tree, count=1)),
            f"{tree_name}: node 0's child 0 is neither a later node nor one of its",
        ),
    ]:
        garbled = tmp_path / "garbled"
        shutil.rmtree(garbled, ignore_errors=True)
        shutil.copytree(stacked_artifact, garbled)
        (garbled / STACKER_FILE).write_text(garbled_text)
        rehashed = json.loads((garbled / MANIFEST_FILE).read_text())
        rehashed["files"][STACKER_FILE] = file_entries(garbled, [STACKER_FILE])[STACKER_FILE]
        (garbled / MANIFEST_FILE).write_bytes(canonical_json(rehashed))
        with pytest.raises(ArtifactError, match="cannot load the stacker") as refused:
            Scorer.load(garbled)
        assert said in str(refused.value)
    # A run directory whose stacker.txt lost its stacking.json cannot say how its trees combine (review 256: a
    # blend's exported as LightGBM alone, and failed its parity check as train/serve skew).
    from seqfraud.export.exporter import ExportError, export_run

    bare = tmp_path / "bare_run"
    shutil.copytree(stacked_run, bare)
    (bare / STACKING_REPORT).unlink()
    with (
        single_torch_thread(),
        pytest.raises(ExportError, match=f"holds {STACKER_FILE} without {STACKING_REPORT}"),
    ):
        export_run(bare, tmp_path / "bare_artifact", formats=["torchscript"], compiled_step=False)
    (bare / STACKING_REPORT).write_text(json.dumps({"chosen": "Blend"}))  # a hand's typo: no candidate
    with single_torch_thread(), pytest.raises(ExportError, match="'chosen' is 'Blend', which keeps no trees"):
        export_run(bare, tmp_path / "bare_artifact", formats=["torchscript"], compiled_step=False)
    mislabeled = tmp_path / "mislabeled"
    shutil.copytree(stacked_artifact, mislabeled)
    bad = manifest | {"stacker": {"file": "model.ts", "format": "lightgbm-text"}}
    (mislabeled / MANIFEST_FILE).write_bytes(canonical_json(bad))
    with pytest.raises(ArtifactError, match="'stacker'"):
        open_artifact(mislabeled)


@pytest.mark.integration
def test_a_stacked_artifact_explains_the_events_before_its_window(stacked_run, stacked_artifact):
    """The stacker's aggregates read every event: one early event decided a dogfood's score (0.957 with it, 0.002
    without), and explain listed the window alone, every event at 0.000 (dogfood 45). The events before the
    window are listed at positions below 0, each with the score drop that leaving it out causes."""
    from omegaconf import OmegaConf

    from seqfraud.scoring.explain import unread_note
    from seqfraud.scoring.scorer import Scorer

    scorer = Scorer.load(stacked_artifact)
    first = pl.read_parquet(stacked_run / "predictions" / "test.parquet")[S.SESSION_ID][0]
    events = pl.read_parquet(OmegaConf.load(stacked_run / "config.yaml").data.events)
    session = events.filter(pl.col("session_id") == first).select(scorer.spec.schema.event_columns)
    spec = scorer.spec
    assert spec.hop > 1  # the default, max_len // 8
    # This run's stacker kept LightGBM alone, whose trees read no sequence score; a second scorer stands for a
    # stacker that reads nothing else, over a "model" whose score is a hash of the window's tokens: a variant
    # built from the wrong events, or with a wrong time delta, cannot match the session without the event.
    fingerprinted = Scorer.load(stacked_artifact)

    def fingerprint(seqs):
        windows = np.split(seqs.tokens, np.cumsum(seqs.lengths)[:-1])
        digests = [hashlib.sha256(w.tobytes()).digest()[:4] for w in windows]
        return np.array([int.from_bytes(d, "little") / 2**32 for d in digests], np.float32)

    fingerprinted.predict = fingerprint
    fingerprinted.stacker.reads_sequence = True
    fingerprinted.stacker.combine = lambda aggregates, probability: np.asarray(probability, np.float32)
    # A window at its shortest, two hops after the session's start (leaving out an event moves it a hop earlier:
    # the events before the hop's first come in, and the hop's own, but for the one left out), and a window one
    # event longer (it loses its first event).
    for n in (spec.max_len + spec.hop + 1, spec.max_len + 2):
        long = pl.concat([session] * (n // session.height + 1))[:n].with_columns(
            pl.col("timestamp").min() + pl.duration(seconds=pl.int_range(pl.len()) ** 2)
        )
        unread = spec.window_start(n)
        in_order = long.with_row_index("_i").sort("timestamp", "_i")
        for scoring in (scorer, fingerprinted):
            with single_torch_thread():
                explained = scoring.explain(long)
                assert explained[S.POSITION].to_list() == list(range(-unread, n - unread))
                raw = scoring.score(long)[S.RAW_SCORE][0]
                for j in [*range(unread), unread, unread + 1, n - 1]:  # every unread event, and three kept
                    without = in_order.filter(pl.col("_i") != in_order["_i"][j]).drop("_i")
                    left_out = raw - scoring.score(without)[S.RAW_SCORE][0]
                    assert explained[S.CONTRIBUTION][j] == pytest.approx(left_out, abs=1e-6), (n, j)
        assert (
            f"the {unread} earlier ones count through the stacker's aggregates, and are listed at positions below 0"
            in (unread_note(n, spec, fingerprinted.stacker) or "")
        )
        # The stacker that kept LightGBM alone reads no window: said of it, the note misled (dogfood 177).
        assert unread_note(n, spec, scorer.stacker) == (
            f"the stacker kept LightGBM alone, whose aggregates read all {n:,} events; the earliest {unread:,} are "
            "listed at positions below 0"
        )


def test_monitor_scores_a_stacked_artifact_from_the_events(stacked_run, stacked_artifact, tmp_path):
    """The default model's LightGBM reads aggregates of the raw events: the monitor passes the current window's
    events, and with the default reference (the run's tokens, no events) takes the run's validation predictions,
    calibrated, as the reference scores."""
    from omegaconf import OmegaConf

    from seqfraud.monitoring import monitor
    from seqfraud.scoring import Scorer

    events = pl.read_parquet(OmegaConf.load(stacked_run / "config.yaml").data.events)
    test_ids = pl.read_parquet(stacked_run / "predictions" / "test.parquet")[S.SESSION_ID].implode()
    current = events.filter(pl.col("session_id").cast(pl.String).is_in(test_ids))
    report = monitor(stacked_artifact, current, out=tmp_path / "monitor")
    scorer = Scorer.load(stacked_artifact)
    served = scorer.score(current)[S.SCORE].to_numpy()
    assert report["score"]["current"]["p50"] == pytest.approx(float(np.quantile(served, 0.5)), abs=1e-6)
    val = pl.read_parquet(stacked_run / "predictions" / "val.parquet")[S.SCORE].to_numpy().astype(np.float32)
    reference = scorer.calibrate(val)
    assert report["score"]["reference"]["p50"] == pytest.approx(float(np.quantile(reference, 0.5)), abs=1e-6)


def test_folds_split_the_training_sessions_without_overlap(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    ids = [f"s{i:03d}" for i in range(200)]
    pl.DataFrame({S.SESSION_ID: ids, S.LABEL: [i % 7 == 0 for i in range(200)]}).write_parquet(
        train / "part-00000.parquet"
    )
    pairs = fold_datasets(train, 3, seed=5, out=tmp_path / "folds")
    held = [set(pl.read_parquet(shard_files(h))[S.SESSION_ID]) for _, h in pairs]
    fits = [set(pl.read_parquet(shard_files(f))[S.SESSION_ID]) for f, _ in pairs]
    assert set().union(*held) == set(ids) and sum(map(len, held)) == len(ids)
    for fit, out in zip(fits, held):
        assert fit.isdisjoint(out) and fit | out == set(ids) and len(out) > 30


def test_lightgbms_own_text_is_read_anew_bit_for_bit():
    """LightGBM writes ``inf`` for a split that sends the missing values alone one way, and for a range of values
    that holds one: a stacked run on data with gaps died at its end, its stacker refused (review 275). What
    LightGBM writes (another binary objective, a monotone constraint) is written anew to predict the same to the
    bit; a number it cannot hold is refused."""
    from seqfraud.baselines import checked_trees, fit_lightgbm

    rng = np.random.default_rng(2)
    x, y = rng.random((6000, 12)), (rng.random(6000) < 0.04).astype(float)
    for j in range(12):
        x[rng.random(6000) < (0.3 if j % 3 == 0 else 0.05), j] = np.nan
    x[(y == 1) & (rng.random(6000) < 0.3), 0] = np.nan  # a missing value that tells: a split of it alone
    x[rng.random(6000) < 0.01, 5] = np.inf
    seen = set()
    for params in ({}, {"objective": "cross_entropy"}, {"monotone_constraints": [1] + [0] * 11}):
        booster = fit_lightgbm(
            x[:4000], y[:4000], x[4000:], y[4000:], [f"f{i}" for i in range(12)], params=params, seed=2
        )
        text = booster.model_to_string()
        seen |= {key for key in ("threshold", "feature_infos") if re.search(rf"\n{key}=[^\n]*inf", text)}
        anew = lgb.Booster(model_str=checked_trees(text, 12))
        for raw in (False, True):
            assert np.array_equal(anew.predict(x, raw_score=raw), booster.predict(x, raw_score=raw))
    assert seen == {"threshold", "feature_infos"}
    # An integer past 32 bits, of hundreds of digits (it overflowed a float check into a traceback: review 275).
    for huge in ("9" * 400, str(2**31)):
        with pytest.raises(ValueError, match="split_feature holds a value that is not a number it can hold"):
            checked_trees(re.sub(r"\nsplit_feature=\d+", f"\nsplit_feature={huge}", text, count=1), 12)


def test_stacker_reads_the_baselines_aggregates_and_the_logit(tmp_path):
    from seqfraud.baselines import Stacker, aggregate_matrix, session_aggregates, with_logit
    from seqfraud.data import synthetic
    from seqfraud.data.events import load_events
    from seqfraud.features.tokens import fit_spec
    from seqfraud.schema import SYNTHETIC

    data = synthetic.generate(300, seed=2)
    data.events.write_parquet(tmp_path / "e.parquet")
    data.labels.write_parquet(tmp_path / "l.parquet")
    loaded = load_events(str(tmp_path / "e.parquet"), SYNTHETIC, str(tmp_path / "l.parquet"))
    spec = fit_spec(loaded.events, SYNTHETIC, timestamp_unit=loaded.timestamp_unit, min_count=1)
    events = loaded.events.collect()
    ids = loaded.sessions[S.SESSION_ID].to_list()[::-1]  # any order: rows follow the ids given
    rows = aggregate_matrix(events, spec, ids)
    frame = session_aggregates(events.lazy(), spec).collect()
    first = frame.filter(pl.col(S.SESSION_ID) == ids[0]).drop(S.SESSION_ID).to_numpy()[0]
    np.testing.assert_array_equal(rows[0], first.astype(np.float64))
    probability = np.linspace(0.01, 0.99, len(ids))
    x = with_logit(rows, probability)
    assert x[:, -1] == pytest.approx(np.log(probability / (1 - probability)))
    label = loaded.sessions.select(S.SESSION_ID, S.LABEL)
    y = (
        pl.DataFrame({S.SESSION_ID: ids})
        .join(label, on=S.SESSION_ID, maintain_order="left")[S.LABEL]
        .to_numpy()
    )
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(x, y), 5)
    stacker = Stacker.from_text(booster.model_to_string(), spec)
    assert stacker.combine(stacker.aggregates(events, ids), probability) == pytest.approx(
        booster.predict(x), abs=1e-6
    )
    held = x.copy()
    held[:, -1] = 0.0  # the baseline candidate: the score held constant, so no tree reads it
    baseline = Stacker.from_text(
        lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(held, y), 5).model_to_string(), spec
    )
    assert baseline.combine(rows, probability) == pytest.approx(baseline.combine(rows, probability[::-1]))
    # The blend: the mean of the baseline trees' raw score and the logit, one row as many.
    blend = Stacker.from_text(baseline.booster.model_to_string(), spec, blend=True)
    assert blend.reads_sequence and not baseline.reads_sequence
    raw = baseline.booster.predict(held, raw_score=True)
    mean = 1 / (1 + np.exp(-(raw + x[:, -1]) / 2))
    np.testing.assert_allclose(blend.combine(rows, probability), mean, rtol=1e-6)
    assert [blend.combine(rows[i : i + 1], probability[i : i + 1])[0] for i in range(5)] == blend.combine(
        rows[:5], probability[:5]
    ).tolist()
    telling = with_logit(rows, np.where(y == 1, 0.9, 0.1))  # a score no tree can leave out
    reads = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 1}, lgb.Dataset(telling, y), 5
    )
    with pytest.raises(ValueError, match="a blend's trees must be the baseline's"):
        Stacker.from_text(reads.model_to_string(), spec, blend=True)
    narrow = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x[:, :3], y), 2)
    with pytest.raises(ValueError, match="not a stacker over [0-9]+ inputs: its max_feature_idx is .2., not"):
        Stacker.from_text(narrow.model_to_string(), spec).aggregates(events, ids)


def test_one_row_predicts_as_the_booster_does_to_the_bit_from_any_thread():
    from concurrent.futures import ThreadPoolExecutor

    from seqfraud.baselines import OneRow

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take the trees' default branch
    x[rng.random(x.shape) < 0.1] = 0.0
    y = (np.nan_to_num(x[:, 0]) + rng.normal(size=400) > 0.5).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(x, y), 20)
    one = OneRow(booster)
    rows = np.vstack([x[:50], [[1e308, -1e308, 5e-324, np.inf, -np.inf, np.nan]]])
    expected = booster.predict(rows)
    assert [one(r) for r in rows] == expected.tolist()
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, [r for r in rows for _ in range(20)])) == np.repeat(expected, 20).tolist()
    for bad in (x[0, :5], x[:2]):  # LightGBM would read past a shorter row's end
        with pytest.raises(ValueError, match="one row of 6 inputs"):
            one(bad)


@pytest.mark.integration
def test_a_stacker_that_kept_the_aggregates_alone_skips_the_sequence_model(
    stacked_run, stacked_artifact, tmp_path, caplog
):
    """A stacker whose trees never split on the sequence score (stacking's "aggregates": the score held
    constant) gives the same scores without it: batch, per event and explanations skip the model (a dogfood's
    default model ran its GRU at every event, 1.1-2.3 ms, for a score no tree read)."""
    from omegaconf import OmegaConf

    from seqfraud.baselines import Stacker
    from seqfraud.scoring.batch import score_file
    from seqfraud.scoring.online import OnlineScorer
    from seqfraud.scoring.scorer import Scorer
    from seqfraud.scoring.state import MemoryStore
    from tests.test_online import session_records, without_ids

    scorer = Scorer.load(stacked_artifact)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, scorer.stacker.layout.width + 1))
    score = rng.normal(size=400)
    y = (x[:, 0] + score > 1).astype(int)
    boosters = {}
    for reads, column in ((False, np.zeros(400)), (True, score)):  # the score held constant, and as it is
        x[:, -1] = column
        boosters[reads] = lgb.train(
            {"verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(x, y), num_boost_round=5
        )
        assert Stacker(boosters[reads], scorer.spec).reads_sequence is reads
    scorer.stacker = Stacker(boosters[False], scorer.spec)
    records = without_ids(session_records(stacked_run, 2, min_events=5))
    scorer.stacker.reads_sequence = True  # the model runs, and no tree reads it
    expected = dict(scorer.score(records, source="test").select(S.SESSION_ID, S.SCORE).iter_rows())
    scorer.stacker.reads_sequence = False

    def refuse(*args, **kwargs):
        raise AssertionError("the sequence model ran")

    scorer.predict, scorer.step = refuse, None if scorer.step is None else (refuse, scorer.step[1])
    assert dict(scorer.score(records, source="test").select(S.SESSION_ID, S.SCORE).iter_rows()) == expected
    online = OnlineScorer(scorer, MemoryStore())
    for r in records:
        (result,) = online.events([r])
    assert result[S.SCORE] == pytest.approx(expected[records[-1]["session_id"]], abs=1e-6)
    events = pl.read_parquet(OmegaConf.load(stacked_run / "config.yaml").data.events)
    session = events.filter(pl.col("session_id") == records[0]["session_id"])
    assert scorer.explain(session.select(scorer.spec.schema.event_columns))[S.CONTRIBUTION].is_finite().all()
    # A batch of long sessions says what the window leaves out where the window counts, and not where it does not.
    n = scorer.spec.max_len + 1
    long = pl.concat([session] * (n // session.height + 1))[:n].with_columns(
        pl.col("timestamp").min() + pl.duration(seconds=pl.int_range(pl.len()))
    )
    long.write_parquet(tmp_path / "long.parquet")
    window = f"reads {scorer.spec.window_said} events of each, as in training; the stacker's aggregates read them all"
    for reads in (False, True):
        scorer.stacker.reads_sequence = reads
        scorer.predict = Scorer.load(stacked_artifact).predict
        caplog.clear()
        with caplog.at_level("WARNING"):
            score_file(scorer, tmp_path / "long.parquet", tmp_path / "scores.parquet", progress=False)
        assert (window in caplog.text) is reads and (
            "longer than the model's max_len" in caplog.text
        ) is reads


def test_a_booster_that_stops_at_its_first_tree_says_so(caplog) -> None:
    """A validation every model ranked perfectly (15 frauds) kept one tree, whose scores took 5 values, unsaid
    (dogfood 198): the fit says it stopped at its first tree, and how many frauds validation held."""
    import logging

    from seqfraud.baselines import fit_lightgbm

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(np.int64)
    x = np.column_stack([y + rng.normal(0, 0.01, 400), rng.normal(size=400)])  # one feature separates alone
    with caplog.at_level(logging.WARNING, logger="seqfraud.baselines"):
        booster = fit_lightgbm(x[:300], y[:300], x[300:], y[300:], ["a", "b"], early_stopping=5)
    assert booster.best_iteration == 1
    said = "LightGBM stopped at its first tree: validation average precision 1.0 after one tree"
    assert (
        said in caplog.text
        and f"A validation of {int(y[300:].sum())} fraud(s) that one tree ranks perfectly" in caplog.text
    )
    caplog.clear()
    noisy = np.column_stack([y + rng.normal(0, 0.6, 400), y + rng.normal(0, 0.6, 400), rng.normal(size=400)])
    with caplog.at_level(logging.WARNING, logger="seqfraud.baselines"):
        booster = fit_lightgbm(noisy[:300], y[:300], noisy[300:], y[300:], ["a", "b", "c"], early_stopping=5)
    assert booster.best_iteration > 1 and "first tree" not in caplog.text
    # Nor where one tree is all there is to keep on a log without signal (5 of 20 such fits warned: review 202),
    # and the fit's name is no setting of model=lightgbm.
    from seqfraud.training.train import MODEL_KEYS

    for seed in range(10):
        rng = np.random.default_rng(seed)
        flat, coin = rng.normal(size=(400, 3)), (rng.random(400) < 0.1).astype(np.int64)
        with caplog.at_level(logging.WARNING, logger="seqfraud.baselines"):
            fit_lightgbm(flat[:300], coin[:300], flat[300:], coin[300:], ["a", "b", "c"], early_stopping=5)
    assert "first tree" not in caplog.text
    assert "what" not in MODEL_KEYS["lightgbm"]
