"""``data.policy.on_unlabeled=keep`` end to end: supervised fits read only the labelled training sessions (one
labelled copy of the train split), while pretraining and embeddings read every session."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import pytorch_lightning as L

from seqfraud import schema as S
from seqfraud.data import synthetic
from seqfraud.data.shards import shard_files
from seqfraud.training import train as training
from tests.conftest import train_into

pytestmark = pytest.mark.integration  # every test trains

SMALL = ["+experiment=smoke", "model=tiny", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


class Seen(L.Callback):
    """What the fit read: training sessions, and how many of them came without a label (NaN)."""

    def __init__(self) -> None:
        self.sessions = self.unlabelled = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sessions += len(batch["labels"])
        self.unlabelled += int(batch["labels"].isnan().sum())


def split(run: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(shard_files(run / "data" / name), columns=[S.SESSION_ID, S.LABEL])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    """Overrides for 600 synthetic sessions of which a third of the legitimate ones never get a label row."""
    out = tmp_path_factory.mktemp("unlabelled")
    generated = synthetic.generate(600, seed=3)
    generated.events.write_parquet(out / "events.parquet")
    never = (pl.col(S.LABEL) == 0) & (pl.col(S.SESSION_ID).hash(1) % 3 == 0)
    generated.labels.filter(~never).write_parquet(out / "labels.parquet")
    return [
        f"data.events={out / 'events.parquet'}",
        f"data.labels={out / 'labels.parquet'}",
        "data.typologies=null",
        "data.policy.on_unlabeled=keep",
    ]


@pytest.fixture(scope="module")
def supervised(data, tmp_path_factory) -> tuple[Path, Seen]:
    seen = Seen()
    return train_into(tmp_path_factory.mktemp("supervised"), *SMALL, *data, callbacks=[seen]), seen


def test_a_supervised_fit_reads_the_labelled_training_sessions_only(supervised) -> None:
    run, seen = supervised
    report = json.loads((run / "preprocess_report.json").read_text())
    train = split(run, "train")
    labelled = train.filter(pl.col(S.LABEL).is_not_null())
    assert train[S.LABEL].null_count() == report["unlabeled_sessions_kept"] > 50
    assert report["unlabeled_sessions_dropped"] > 0  # val and test keep only what they can evaluate
    assert all(split(run, name)[S.LABEL].null_count() == 0 for name in ("val", "test"))
    copy = pl.read_parquet(shard_files(run / training.LABELLED_TRAIN), columns=[S.SESSION_ID, S.LABEL])
    assert copy.sort(S.SESSION_ID).equals(labelled.sort(S.SESSION_ID))
    assert (seen.sessions, seen.unlabelled) == (labelled.height, 0)
    assert json.loads((run / "metrics.json").read_text())["test"]["pr_auc"] > 0


def test_lightgbm_reads_the_labelled_share_of_the_labelled_sessions(data, supervised, tmp_path, monkeypatch):
    """``label_fraction`` on top: its share is of the sessions that have a label."""
    fits = []
    lightgbm = training.fit_predict_lightgbm

    def spy(train, val, tests, **options):
        fits.append(train)
        return lightgbm(train, val, tests, **options)

    monkeypatch.setattr(training, "fit_predict_lightgbm", spy)
    run = train_into(tmp_path, *SMALL, *data, "model=lightgbm", "label_fraction=0.5")
    (frame,) = fits
    labelled = split(supervised[0], "train").filter(pl.col(S.LABEL).is_not_null())
    assert frame[S.LABEL].null_count() == 0 and 0.35 < frame.height / labelled.height < 0.65
    assert set(frame[S.SESSION_ID]) <= set(labelled[S.SESSION_ID])
    assert json.loads((run / "metrics.json").read_text())["test"]["pr_auc"] > 0


def test_the_stacker_reads_the_labelled_training_sessions_only(data, tmp_path) -> None:
    """Its folds, out-of-fold scores and trees all come from the one labelled copy."""
    from seqfraud.rundir import STACKING_REPORT

    tiny = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.field_dim=4"]
    stacked, seen = ["model=stacked", "model.stacking.folds=2", *tiny], Seen()
    run = train_into(tmp_path, *SMALL, *data, *stacked, callbacks=[seen])
    labelled = split(run, "train").filter(pl.col(S.LABEL).is_not_null()).height
    report = json.loads((run / STACKING_REPORT).read_text())
    assert report["sequence_out_of_fold"]["train"]["n"] == labelled
    assert (seen.sessions, seen.unlabelled) == (labelled, 0)  # the refit on all labelled training sessions


def test_pretraining_and_embeddings_read_every_session(data, supervised, tmp_path) -> None:
    from seqfraud.cli.embed import main as embed

    prepared, seen = supervised[0], Seen()
    pretrain = ["+experiment@_global_=pretrain_masked", f"prepared_dir={prepared}"]
    run = train_into(tmp_path, *SMALL, *data, *pretrain, callbacks=[seen])
    train = split(prepared, "train")
    assert (seen.sessions, seen.unlabelled) == (train.height, train[S.LABEL].null_count())
    assert not (run / training.LABELLED_TRAIN).exists()
    embed(["--run", str(run), "--out", str(tmp_path / "embeddings.parquet")])
    table = pl.read_parquet(tmp_path / "embeddings.parquet")
    every = pl.concat([split(prepared, name) for name in S.SPLITS])
    assert table.height == every.height == table[S.SESSION_ID].n_unique()
    assert table.filter(pl.col(S.LABEL).is_null())[S.SPLIT].unique().to_list() == ["train"]
    assert table[S.LABEL].null_count() == train[S.LABEL].null_count()


@pytest.mark.slow
def test_a_local_ddp_rank_reads_the_labelled_copy_rank_0_wrote(data, supervised, tmp_path) -> None:
    """The child rank (``run_child_rank``) must read the sessions rank 0 reads: an unlabelled one would make
    the shared gradients NaN, and a different count would leave the ranks with different numbers of batches."""
    ddp = ["trainer=ddp", "loader.batch_size=32", f"prepared_dir={supervised[0]}"]
    run = train_into(tmp_path, *SMALL, *data, *ddp)
    assert (run / "ddp_rank1.log").is_file() and (run / training.LABELLED_TRAIN).is_dir()
    assert json.loads((run / "metrics.json").read_text())["test"]["pr_auc"] > 0
