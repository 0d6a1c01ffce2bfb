"""``seqfraud embed --artifact``: the artifact's session embedding equals the run's, one row per session of the
events; artifacts without one (exported before, or never a sequence model) are refused with what to do."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seqfraud import schema as S
from seqfraud.cli.embed import main as embed
from seqfraud.errors import ConfigError
from seqfraud.export.artifact import (
    EMBED_FILES,
    MANIFEST_FILE,
    SPEC_FILE,
    ArtifactError,
    canonical_json,
    open_artifact,
)
from seqfraud.features.spec import Spec
from seqfraud.scoring import Scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_embeddings(trained_run) -> pl.DataFrame:
    from seqfraud.training.embeddings import session_embeddings

    return session_embeddings(trained_run)


@pytest.fixture
def events_file(test_period_events, tmp_path) -> Path:
    path = tmp_path / "events.parquet"
    test_period_events.write_parquet(path)
    return path


def _embed(artifact: Path, events: Path, out: Path, *extra: str) -> pl.DataFrame:
    embed(["--artifact", str(artifact), "--events", str(events), "--out", str(out), "--no-progress", *extra])
    return pl.read_parquet(out)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_artifact_embeddings_equal_the_runs_one_row_per_session(
    fmt, exported_artifact, run_embeddings, test_period_events, events_file, tmp_path, capsys
):
    manifest = json.loads((exported_artifact / MANIFEST_FILE).read_text())
    width = manifest["model"]["d_model"]
    assert manifest["embed"] == {"formats": EMBED_FILES, "width": width}
    assert max(manifest["parity"]["embed"]["max_abs_diff"].values()) <= 1e-5

    # Small chunks on two workers: the batch path's chunks and threads change nothing.
    got = _embed(
        exported_artifact,
        events_file,
        tmp_path / "emb.parquet",
        "--format",
        fmt,
        "--chunk-events",
        "500",
        "--workers",
        "2",
    )
    dims = [S.embedding_column(j) for j in range(width)]
    assert got.columns == [S.SESSION_ID, *dims]
    sessions = test_period_events[Spec.load(exported_artifact / SPEC_FILE).schema.session_id].n_unique()
    assert got.height == got[S.SESSION_ID].n_unique() == sessions
    assert f"{got.height:,} sessions, {width} dimensions" in capsys.readouterr().out
    # What made them: a classifier's encoder (it read its training labels), of these events.
    from seqfraud.provenance import EMBEDDING_METADATA, files_digest

    record = json.loads(pl.read_parquet_metadata(tmp_path / "emb.parquet")[EMBEDDING_METADATA])
    fit_info = Spec.load(exported_artifact / SPEC_FILE).fit_info
    assert record == {
        "labels_read": True,
        "train_labels": None,  # an artifact records no training labels' count
        "val_start": fit_info["val_start"],
        "test_start": fit_info["test_start"],
        "events_sha256": files_digest([str(events_file)]),
    }

    joined = got.join(run_embeddings.filter(pl.col(S.SPLIT) == "test"), on=S.SESSION_ID, suffix="_run")
    assert joined.height == got.height
    diff = np.abs(joined.select(dims).to_numpy() - joined.select(f"{d}_run" for d in dims).to_numpy())
    assert float(diff.max()) <= 1e-5
    assert float(joined.select(dims).to_numpy().std(axis=0).mean()) > 0  # sessions differ


def test_an_artifact_exported_before_embeddings_scores_and_refuses_to_embed(
    exported_artifact, test_period_events, events_file, tmp_path, capsys
):
    old = shutil.copytree(exported_artifact, tmp_path / "old")
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    for name in manifest.pop("embed")["formats"].values():
        del manifest["files"][name]
        (old / name).unlink()
    del manifest["parity"]["embed"]
    (old / MANIFEST_FILE).write_bytes(canonical_json(manifest))

    events = test_period_events.head(300)
    assert Scorer.load(old).score(events).equals(Scorer.load(exported_artifact).score(events))
    with pytest.raises(ArtifactError, match="no session embedding in this artifact.*re-export the run"):
        open_artifact(old).load_embedding()
    with pytest.raises(SystemExit) as refused:
        _embed(old, events_file, tmp_path / "emb.parquet")
    assert refused.value.code == 2 and "re-export the run" in capsys.readouterr().err
    assert not (tmp_path / "emb.parquet").exists()


@pytest.mark.integration
def test_a_lightgbm_run_has_no_encoder_to_export_or_embed(tmp_path, capsys):
    """No artifact without a sequence model exists: export refuses the run, so embed never meets one."""
    from conftest import train_into

    from seqfraud.export.exporter import ExportError, export_run

    run = train_into(tmp_path / "lgbm", "+experiment=smoke", "model=lightgbm")
    with pytest.raises(
        ExportError, match="a model=lightgbm run holds no sequence model.*train model=stacked"
    ):
        export_run(run, tmp_path / "artifact")
    with pytest.raises(SystemExit) as refused:
        embed(["--run", str(run), "--out", str(tmp_path / "emb.parquet")])
    assert (
        refused.value.code == 2
        and "embeddings come from a finished pretraining or sequence-model run" in (capsys.readouterr().err)
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "x.parquet"], "one of the arguments --run --artifact is required"),
        (["--run", "r", "--artifact", "a", "--out", "x.parquet"], "not allowed with argument"),
        (["--artifact", "a", "--out", "x.parquet"], "--artifact needs --events"),
        (
            ["--run", "r", "--events", "e", "--out", "x.parquet"],
            "--events and --history-\\* go with --artifact",
        ),
        (
            ["--run", "r", "--out", "x.csv"],
            "--out is a Parquet file, so its name ends in .parquet: got x.csv",
        ),
    ],
)
def test_embed_takes_exactly_one_source(argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        embed(argv)
    assert refused.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_hybrids_embeddings_of_other_events_or_of_unknown_making_are_warned_about(tmp_path, caplog):
    """An artifact's embeddings carry no labels to compare: a file of another log whose ids matched trained
    silently (dogfood 49). Its record's events digest says so; a file without a record says nothing is checked."""
    from types import SimpleNamespace

    from seqfraud.provenance import embedding_record
    from seqfraud.training.embeddings import check_embedding_record

    fit_info = {"val_start": "2026-03-01T00:00:00+00:00", "test_start": "2026-04-01T00:00:00+00:00"}
    from seqfraud.preprocess import Prepared

    report = {"inputs": {"events": {"sha256": "a" * 64}}}
    prepared = Prepared(SimpleNamespace(fit_info=fit_info), {}, report, None, None)
    frame = pl.DataFrame({S.SESSION_ID: ["s"], S.embedding_column(0): [0.5]})
    cases = {
        # A supervised encoder's training vectors are fitted to their own labels: read in sample by the hybrid, which
        # scored 0.697 against LightGBM alone's 0.769 (dogfood 247).
        "ours": (
            embedding_record(fit_info, labels_read=True, events_sha256="a" * 64),
            "its encoder learnt from labels (a supervised run): the vectors of the training sessions",
        ),
        "other log": (
            embedding_record(fit_info, labels_read=True, events_sha256="b" * 64),
            "it embedded other events",
        ),
        "no record": (None, "records nothing of the model that embedded it"),
        "a pretraining of this split": (
            embedding_record(fit_info, labels_read=False, events_sha256="a" * 64),
            None,
        ),
    }
    for name, (metadata, warning) in cases.items():
        path = tmp_path / f"{name}.parquet"
        frame.write_parquet(path, metadata=metadata)
        caplog.clear()
        with caplog.at_level("WARNING", logger="seqfraud.training.embeddings"):
            check_embedding_record(path, prepared)
        assert (warning in caplog.text) if warning else not caplog.text, name
    # A pretraining whose split ends later read this run's test sessions (their events, no labels), which would
    # then judge a hybrid fitted to them: refused as a supervised encoder's labels are (review 104).
    later = fit_info | {"test_start": "2026-04-20T00:00:00+00:00"}
    frame.write_parquet(
        tmp_path / "late.parquet", metadata=embedding_record(later, labels_read=False, events_sha256="a" * 64)
    )
    # A supervised encoder's vectors, to a run that holds labels back: they may carry them (dogfood 105).
    caplog.clear()
    with caplog.at_level("WARNING", logger="seqfraud.training.embeddings"):
        check_embedding_record(tmp_path / "ours.parquet", prepared, label_fraction=0.1)
    assert "holds back 90% of its training labels (label_fraction=0.1)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="seqfraud.training.embeddings"):
        check_embedding_record(tmp_path / "a pretraining of this split.parquet", prepared, label_fraction=0.1)
    assert not caplog.text
    # A supervised encoder of more training labels than this run reads, held back by a sparse label table, not
    # label_fraction: said as init_from's is (dogfood 157: a hybrid of 104 labels read a run of 2,628, unsaid).
    train = tmp_path / "train.parquet"
    pl.DataFrame({S.LABEL: [1, 0, None]}).write_parquet(train)
    fuller = embedding_record(
        fit_info, labels_read=True, events_sha256="a" * 64, train_labels={"n": 2628, "positives": 220}
    )
    frame.write_parquet(tmp_path / "fuller.parquet", metadata=fuller)
    sparse = Prepared(SimpleNamespace(fit_info=fit_info), {"train": train}, report, None, None)
    caplog.clear()
    with caplog.at_level("WARNING", logger="seqfraud.training.embeddings"):
        check_embedding_record(tmp_path / "fuller.parquet", sparse)
    assert (
        "its encoder is of a supervised run that read 2,628 training labels (220 frauds), where this fit reads 2"
        in caplog.text
    )
    says = "its encoder learnt from the sessions (their events; no labels) up to test_start=2026-04-20"
    with pytest.raises(ConfigError, match=re.escape(says)):
        check_embedding_record(tmp_path / "late.parquet", prepared)


def test_init_from_a_run_whose_split_ends_later_is_refused(tmp_path):
    """Fine-tuning from a pretraining that read this run's validation or test sessions passed wherever the two
    specs' vocabularies and edges happened to agree (review 104)."""
    from dataclasses import replace

    from seqfraud.schema import Schema
    from seqfraud.training.train import check_same_tokens

    ours = Spec(
        schema=Schema(),
        timestamp_unit="us",
        max_len=4,
        vocab={"event_type": ["pay"]},
        edges={S.TIME_DELTA: [0.0, 1.0]},
        fit_info={"val_start": "2026-03-01T00:00:00+00:00", "test_start": "2026-04-01T00:00:00+00:00"},
    )
    ours.save(tmp_path / "spec.json")
    assert check_same_tokens(tmp_path, ours).fit_info == ours.fit_info
    earlier = replace(ours, fit_info={**ours.fit_info, "val_start": "2026-02-01T00:00:00+00:00"})
    with pytest.raises(ConfigError, match=r"that run's val_start \(2026-03-01T00:00:00\+00:00\) is later"):
        check_same_tokens(tmp_path, earlier)


def test_embed_reads_a_run_under_the_home_folder(trained_run, tmp_path, monkeypatch):
    """``seqfraud embed --run=~/run`` embedded every session, then failed on ``~/run/metrics.json`` (review 158)."""
    from seqfraud.training.embeddings import write_session_embeddings

    shutil.copytree(trained_run, tmp_path / "run")
    monkeypatch.setenv("HOME", str(tmp_path))
    frame = write_session_embeddings("~/run", tmp_path / "emb.parquet")
    assert frame.height > 0 and pl.read_parquet(tmp_path / "emb.parquet").height == frame.height
    # A supervised run's file records how many training labels its encoder read, which a hybrid compares.
    from seqfraud.provenance import EMBEDDING_METADATA

    record = json.loads(pl.read_parquet_metadata(tmp_path / "emb.parquet")[EMBEDDING_METADATA])
    fit = json.loads((trained_run / "metrics.json").read_text())["train"]
    assert record["labels_read"] and record["train_labels"] == {"n": fit["n"], "positives": fit["positives"]}
    # A FIFO named as the embeddings hung the fit (review 156).
    from seqfraud.training.embeddings import check_embedding_record

    os.mkfifo(tmp_path / "fifo.parquet")
    with pytest.raises(ConfigError, match="fifo.parquet: not a regular file"):
        check_embedding_record(tmp_path / "fifo.parquet", None)  # type: ignore[arg-type]


def test_a_damaged_checkpoint_is_named_by_embed_and_export(trained_run, tmp_path):
    """A truncated checkpoint was torch's ``Invalid argument`` naming no file, and one of other bytes its advice to
    load with weights_only=False, which runs the file's code (dogfood 157)."""
    from seqfraud.export.exporter import ExportError, export_run
    from seqfraud.training.embeddings import session_embeddings

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = run / "checkpoints" / "best.ckpt"
    for damage in (ckpt.read_bytes()[:1000], b"not a checkpoint at all" * 40):
        ckpt.write_bytes(damage)
        with pytest.raises(ConfigError, match=f"{ckpt}: not a readable checkpoint") as caught:
            session_embeddings(run)
        assert "weights_only" not in str(caught.value)
        with pytest.raises(ExportError, match=f"{ckpt}: not a readable checkpoint"):
            export_run(run, tmp_path / "artifact")


def test_embeddings_of_an_artifact_whose_stacker_kept_lightgbm_alone_are_said(
    exported_artifact, events_file, tmp_path, caplog, monkeypatch
):
    """`seqfraud embed` of the default artifact gave its sequence model's embeddings, unsaid, where the stacker kept
    LightGBM alone and the scores never read that model (dogfood 227)."""
    from seqfraud.export.artifact import open_artifact
    from seqfraud.scoring.batch import embed_file
    from seqfraud.scoring.scorer import Scorer

    artifact = open_artifact(exported_artifact)
    said = "the stacker kept LightGBM alone: these embeddings are its sequence model's"
    for reads in (True, False):
        monkeypatch.setattr(Scorer, "reads_sequence", property(lambda self, reads=reads: reads))
        caplog.clear()
        with caplog.at_level("WARNING", logger="seqfraud.scoring.batch"):
            embed_file(
                Scorer.of_artifact(artifact, "torchscript"),
                artifact.load_embedding("torchscript"),
                events_file,
                tmp_path / "emb.parquet",
                progress=False,
            )
        assert (said in caplog.text) == (not reads)
