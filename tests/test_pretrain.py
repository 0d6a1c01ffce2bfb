"""Self-supervised pretraining (seqfraud.models.pretrain) and fine-tuning from it (init_from, freeze_epochs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seqfraud.provenance import files_digest
from tests.conftest import train_into

SMALL = ["+experiment=smoke", "model=tiny", "trainer.max_epochs=1", "data.synthetic.sessions=600"]


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 13, (8,), generator=g)
    tokens = torch.randint(4, 10, (8, 12, 3), generator=g)
    tokens[torch.arange(12)[None] >= lengths[:, None]] = 0
    return tokens, lengths


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_objectives_train_the_encoder(encoder) -> None:
    from seqfraud.models.pretrain import PretrainNet
    from seqfraud.models.sequence import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_sizes=[10, 20, 30], max_len=16, encoder=encoder, d_model=32, n_layers=1, n_heads=2
    )
    net = PretrainNet(cfg, ["masked", "contrastive"])
    tokens, lengths = batch()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    first = None
    for _ in range(40):
        losses = net(tokens, lengths)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in losses.items()}
    last = {k: float(v.detach()) for k, v in net(tokens, lengths).items()}
    assert last["masked"] < first["masked"] and last["contrastive"] < first["contrastive"]
    assert all(p.grad is not None for p in net.encoder.parameters() if p.requires_grad)


def test_crops_are_contiguous_slices_of_their_session() -> None:
    from seqfraud.models.pretrain import PretrainNet
    from seqfraud.models.sequence import ModelConfig

    net = PretrainNet(ModelConfig(vocab_sizes=[10, 20, 30], max_len=16), ["contrastive"], crop=(0.3, 0.8))
    tokens, lengths = batch(1)
    for _ in range(20):
        cropped, kept = net._crop(tokens, lengths)
        for b in range(len(lengths)):
            k, n = int(kept[b]), int(lengths[b])
            assert 1 <= k <= n and bool((cropped[b, k:] == 0).all())
            windows = [tokens[b, s : s + k] for s in range(n - k + 1)]
            assert any(torch.equal(cropped[b, :k], w) for w in windows)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return train_into(tmp_path_factory.mktemp("pre"), *SMALL, "+experiment@_global_=pretrain_masked")


def test_pretraining_writes_a_checkpoint_that_starts_a_classifier(pretrained, tmp_path, caplog) -> None:
    metrics = json.loads((pretrained / "metrics.json").read_text())
    assert metrics["model"] == "pretrain" and metrics["objectives"] == ["masked"]
    assert 0 < metrics["val"]["loss"] < 10
    # The figures are the kept checkpoint's epoch, not the last one's (dogfood 24).
    kept = torch.load(pretrained / "checkpoints" / "best.ckpt", weights_only=False)
    best = next(v for k, v in kept["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert metrics["epoch"] == kept["epoch"] + 1
    assert metrics["val"]["loss"] == pytest.approx(float(best["best_model_score"]), rel=1e-6)
    encoder = {
        k: v
        for k, v in torch.load(pretrained / "checkpoints" / "best.ckpt", weights_only=True)[
            "state_dict"
        ].items()
        if k.startswith(("net.embed.", "net.encoder."))
    }
    # One epoch with the encoder frozen: the classifier's encoder is the pretrained one, its head has learnt.
    with caplog.at_level("INFO"):
        tuned = train_into(tmp_path, *SMALL, f"init_from={pretrained}", "freeze_epochs=1")
    # Said by the fit, whose epochs small_split may set (dogfood 77: "every one of trainer.max_epochs=8" of 20).
    assert "freeze_epochs=1 holds the encoder fixed for every one of this fit's 1 epochs" in caplog.text
    assert "epoch 1: the pretrained embedding and encoder stay fixed while the head learns" in caplog.text
    assert "the checkpoint kept is epoch" not in caplog.text  # every epoch frozen: a linear probe, said above
    # Which pretraining it started from: one pretrained again in place read alike (dogfood 157).
    started = json.loads((tuned / "metrics.json").read_text())["provenance"]["inputs"]["init_from"]
    ckpt = pretrained / "checkpoints" / "best.ckpt"
    assert started == {"path": str(ckpt.resolve()), "sha256": files_digest([str(ckpt)])}
    # A tie on the checkpoint's metric keeps the earliest epoch, a frozen one: the fine-tuned encoder is thrown
    # away, and said (dogfood 105: PR-AUC 1.0 on 10 validation frauds). Here no weight can move (lr 1e-30).
    tie = ["trainer.max_epochs=2", "optim.lr=1e-30"]
    with caplog.at_level("WARNING"):
        train_into(tmp_path / "tie", *SMALL, f"init_from={pretrained}", "freeze_epochs=1", *tie)
    assert (
        "the checkpoint kept is epoch 1, one of the freeze_epochs=1 in which the encoder stayed"
        in caplog.text
    )
    # No epoch limit (the steps end it): no warning to make, and no failure in making it (review 78).
    unlimited = ["trainer.max_epochs=null", "+trainer.limit_train_batches=2", "+trainer.max_steps=4"]
    train_into(tmp_path / "unlimited", *SMALL, f"init_from={pretrained}", "freeze_epochs=1", *unlimited)
    after = torch.load(tuned / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert encoder and all(torch.equal(after[k], v) for k, v in encoder.items())
    assert json.loads((tuned / "metrics.json").read_text())["test"]["pr_auc"] > 0
    assert "pretrained with the masked objective alone" in caplog.text  # which the README warns against


def test_masked_heads_start_at_the_training_tokens_log_frequencies(pretrained) -> None:
    """From a uniform start the encoder learnt the skewed token frequencies itself, one direction shared by every
    session, and a classifier fine-tuned from it started from a near-constant pooled state."""
    import numpy as np

    from seqfraud.features.spec import Spec
    from seqfraud.models.sequence import ModelConfig
    from seqfraud.training.data import token_counts

    spec = Spec.load(pretrained / "spec.json")
    checkpoint = torch.load(pretrained / "checkpoints" / "best.ckpt", weights_only=True)
    state, model = checkpoint["state_dict"], ModelConfig(**checkpoint["hyper_parameters"]["model"])
    fields = [spec.fields[i] for i in model.token_fields()]
    counts = token_counts(pretrained / "data" / "train", fields, [spec.vocab_size(f) for f in fields])
    spread = []
    for j, (field, count) in enumerate(zip(fields, counts)):
        prior = np.log((count + 1.0) / (count + 1.0).sum())
        bias = state[f"net.predict.{j}.bias"].double().numpy()
        # One epoch of a few steps moves a bias little next to the several nats its prior spans.
        assert np.abs(bias - prior).max() < 0.3, field
        spread.append(prior.max() - prior.min())
    assert max(spread) > 3


def test_a_pretraining_run_is_not_exported_but_says_what_to_do(pretrained, tmp_path) -> None:
    from seqfraud.export.exporter import ExportError, export_run

    with pytest.raises(
        ExportError, match="a pretraining run holds an encoder, not a classifier: fine-tune it"
    ):
        export_run(pretrained, tmp_path / "artifact")


def test_init_from_a_supervised_run_of_more_labels_is_said(pretrained, tmp_path, caplog) -> None:
    """A supervised run of the whole label table, fine-tuned on a share of it, read labels the label-scarce run
    does not have, unsaid (dogfood 123); a pretraining run reads none."""
    supervised = train_into(tmp_path / "s", *SMALL)
    with caplog.at_level("WARNING", logger="seqfraud.training.embeddings"):
        train_into(tmp_path / "f", *SMALL, f"init_from={supervised}", "label_fraction=0.5")
        assert f"init_from={supervised} is of a supervised run that read" in caplog.text
        caplog.clear()
        train_into(tmp_path / "p", *SMALL, f"init_from={pretrained}", "label_fraction=0.5")
        train_into(tmp_path / "same", *SMALL, f"init_from={supervised}")
    assert "is of a supervised run that read" not in caplog.text


def test_init_from_refuses_a_run_with_another_spec(pretrained, tmp_path) -> None:
    from seqfraud.errors import ConfigError

    with pytest.raises(ConfigError, match="another spec"):
        train_into(tmp_path, *SMALL, f"init_from={pretrained}", "features.n_buckets=8")
    with pytest.raises(ConfigError, match="no checkpoints"):
        train_into(tmp_path / "b", *SMALL, f"init_from={tmp_path}")
    # Another width: the setting that differs, not torch's size-mismatch dump of every tensor.
    with pytest.raises(
        ConfigError, match="does not fit this model: model.d_model=16 there, 32 here; fine-tune with"
    ):
        train_into(tmp_path / "c", *SMALL, f"init_from={pretrained}", "model.d_model=32")
    # Another head count keeps every weight's shape, so it loaded and meant something else; now refused, and
    # before any preprocessing (which a large log spends long on): nothing was generated or written.
    with pytest.raises(ConfigError, match="model.n_heads=2 there, 4 here"):
        train_into(tmp_path / "d", *SMALL, f"init_from={pretrained}", "model.n_heads=4")
    assert not (tmp_path / "d" / "data").exists() and not (tmp_path / "d" / "run").exists()
    # A damaged checkpoint too: found at the fit, it was after a rerun into one folder had cleared the earlier
    # run's outputs (review 158); named, never with torch's advice to load it with weights_only=False.
    damaged = tmp_path / "damaged"
    shutil.copytree(pretrained, damaged)
    ckpt = damaged / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=f"{ckpt}: not a readable checkpoint") as caught:
        train_into(tmp_path / "e", *SMALL, f"init_from={damaged}")
    assert "weights_only" not in str(caught.value)
    assert not (tmp_path / "e" / "data").exists() and not (tmp_path / "e" / "run").exists()
    # A field left out is another embedding: the setting, not a state_dict's size mismatch (dogfood 105).
    with pytest.raises(ConfigError, match=r"features.exclude=\[\] there, \['time_delta'\] here; fine-tune"):
        train_into(tmp_path / "x", *SMALL, f"init_from={pretrained}", "features.exclude=[time_delta]")
    # The default model's GRU from a transformer's pretraining: the encoder alone is named, not the heads a GRU
    # has none of (review 80).
    with pytest.raises(ConfigError, match=r"model.encoder='transformer' there, 'gru' here; fine-tune with"):
        train_into(tmp_path / "e", *SMALL, f"init_from={pretrained}", "model=stacked")
    # Vocabularies of the same sizes in another order (a pretraining run on another log): the weights would read
    # other tokens. Only the sizes were compared, and it trained (dogfood 49).
    other = shutil.copytree(pretrained, tmp_path / "other")
    spec = json.loads((other / "spec.json").read_text())
    vocab = spec["vocab"]["event_type"]
    vocab[0], vocab[1] = vocab[1], vocab[0]
    (other / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"another spec \(vocabularies differ\)"):
        train_into(tmp_path / "e", *SMALL, f"init_from={other}")
    assert (other / "checkpoints" / "best.ckpt").is_file()
    # A run cut short (Ctrl-C) keeps a half-trained checkpoint and no metrics: it trained from it (dogfood 49).
    cut = shutil.copytree(pretrained, tmp_path / "cut")
    (cut / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="no metrics.json; point it at the directory of a finished"):
        train_into(tmp_path / "g", *SMALL, f"init_from={cut}")
    from seqfraud.training.embeddings import session_embeddings

    with pytest.raises(ConfigError, match="no metrics.json; embeddings come from a finished"):
        session_embeddings(cut)
    # Into its own directory: the run's clean-up removed the checkpoint it was to start from (dogfood 49).
    own = shutil.copytree(pretrained, tmp_path / "f" / "run")
    with pytest.raises(ConfigError, match="is this run's own directory"):
        train_into(tmp_path / "f", *SMALL, f"init_from={own}")
    assert (own / "checkpoints" / "best.ckpt").is_file() and (own / "metrics.json").is_file()


def test_embeddings_of_a_run_feed_the_lightgbm_hybrid(pretrained, tmp_path, caplog) -> None:
    """``seqfraud embed`` writes every session's embedding; the baseline trains on its aggregates plus them."""
    import polars as pl

    from seqfraud.cli.embed import main as embed

    out = tmp_path / "embeddings.parquet"
    embed(["--run", str(pretrained), "--out", str(out)])
    table = pl.read_parquet(out)
    dims = [c for c in table.columns if c.startswith("emb_")]
    assert len(dims) == 16 and set(table["split"]) == {"train", "val", "test"}  # model=tiny: d_model 16
    assert (
        table["session_id"].n_unique() == table.height and table[dims].null_count().sum_horizontal()[0] == 0
    )
    assert float(table[dims].std().mean_horizontal()[0]) > 0  # sessions differ
    from seqfraud.provenance import EMBEDDING_METADATA

    record = json.loads(pl.read_parquet_metadata(out)[EMBEDDING_METADATA])
    report = json.loads((pretrained / "preprocess_report.json").read_text())
    spec = json.loads((pretrained / "spec.json").read_text())
    assert record == {
        "labels_read": False,  # a pretraining run's encoder
        "train_labels": None,
        "val_start": spec["fit_info"]["val_start"],
        "test_start": spec["fit_info"]["test_start"],
        "events_sha256": report["inputs"]["events"]["sha256"],
    }
    with caplog.at_level("INFO"):
        hybrid = train_into(tmp_path / "hybrid", *SMALL, "model=lightgbm", f"model.embeddings={out}")
    metrics = json.loads((hybrid / "metrics.json").read_text())
    # The hybrid says so, in its log and its metrics (dogfood 77 found it in neither).
    assert metrics["test"]["pr_auc"] > 0 and metrics["embeddings"] == str(out)
    # Its provenance holds the file's digest and the record of the encoder that wrote it (dogfood 105).
    given = metrics["provenance"]["inputs"]["embeddings"]
    assert given["path"] == str(out.resolve()) and len(given["sha256"]) == 64 and given["record"] == record
    assert f"LightGBM on the aggregates and {len(dims)} embedding columns of {out}" in caplog.text
    from seqfraud.compare import load_run, model_label

    # compare's leaderboard tells it apart
    assert model_label(load_run(hybrid, "hybrid")) == "lightgbm+embeddings"
    # An encoder that learnt from labels of sessions this run validates or tests on (its periods end later) is
    # refused: a supervised run's embeddings of every test session were taken silently (review 50).
    from datetime import datetime, timedelta

    later = (datetime.fromisoformat(record["val_start"]) + timedelta(days=1)).isoformat()
    leaky = tmp_path / "leaky.parquet"
    table.write_parquet(
        leaky, metadata={EMBEDDING_METADATA: json.dumps(record | {"labels_read": True, "val_start": later})}
    )
    from seqfraud.errors import ConfigError

    with pytest.raises(
        ConfigError, match="its encoder learnt from labels up to val_start=.* after this run's"
    ):
        train_into(tmp_path / "leak", *SMALL, "model=lightgbm", f"model.embeddings={leaky}")
    # A file without the sessions this run trains on is refused, not joined to nulls.
    table.filter(pl.col("split") != "test").write_parquet(tmp_path / "partial.parquet")

    with pytest.raises(ConfigError, match="test session"):
        train_into(
            tmp_path / "bad", *SMALL, "model=lightgbm", f"model.embeddings={tmp_path / 'partial.parquet'}"
        )
    # Embeddings of another log whose ids match (here: the labels say so) are refused, not joined (dogfood 24).
    other = table.with_columns(
        pl.when(pl.col("split") == "val").then(1 - pl.col("label")).otherwise(pl.col("label")).alias("label")
    )
    other.write_parquet(tmp_path / "other.parquet")
    with pytest.raises(ConfigError, match="val session.s. carry another label there than here"):
        train_into(tmp_path / "o", *SMALL, "model=lightgbm", f"model.embeddings={tmp_path / 'other.parquet'}")


def test_embeddings_of_an_artifact_join_by_the_logs_id_column(tmp_path, caplog) -> None:
    """``seqfraud embed --artifact`` writes the log's id column in its own type (``sess``, Int64), which the
    hybrid refused as not a file of seqfraud embed (dogfood 24); ids are read as text, as everywhere."""
    from types import SimpleNamespace

    import polars as pl

    from seqfraud.errors import ConfigError
    from seqfraud.preprocess import Prepared
    from seqfraud.training.embeddings import with_embeddings

    prepared = Prepared(SimpleNamespace(fit_info={}), {}, {}, None, None)  # the run: nothing to check against
    frames = {"train": pl.DataFrame({"session_id": ["7", "8"], "x": [1.0, 2.0]})}
    pl.DataFrame({"sess": [8, 7], "emb_0": [0.8, 0.7]}).write_parquet(tmp_path / "e.parquet")
    joined = with_embeddings(frames, tmp_path / "e.parquet", "sess", prepared)["train"]
    assert joined["emb_0"].to_list() == [0.7, 0.8]
    with pytest.raises(ConfigError, match=r"not a file of seqfraud embed \(session_id or visit, emb_0"):
        with_embeddings(frames, tmp_path / "e.parquet", "visit", prepared)
    # A log's id column named like an embedding is the join key, not a dimension (dogfood 105).
    pl.DataFrame({"emb_key": ["8", "7"], "emb_0": [0.8, 0.7]}).write_parquet(tmp_path / "k.parquet")
    keyed = with_embeddings(frames, tmp_path / "k.parquet", "emb_key", prepared)["train"]
    assert keyed.columns == ["session_id", "x", "emb_0"] and keyed["emb_0"].to_list() == [0.7, 0.8]
    # Two files concatenated: a session twice failed the join with a traceback, or trained twice (dogfood 105).
    pl.DataFrame({"sess": [8, 7, 8], "emb_0": [0.8, 0.7, 0.9]}).write_parquet(tmp_path / "twice.parquet")
    with pytest.raises(ConfigError, match=r"column 'sess': 1 row\(s\) repeat a session id \(first: '8'\)"):
        with_embeddings(frames, tmp_path / "twice.parquet", "sess", prepared)
    # A session this run tests on that the embedding model trained on (its split column says so): refused, record
    # or none (dogfood 115: a log shifted in time passed the periods, a notebook rewrite dropped the record, and
    # the hybrid scored test PR-AUC 1.000).
    frames = {
        "train": frames["train"],
        "val": pl.DataFrame({"session_id": ["9"]}),
        "test": pl.DataFrame({"session_id": ["5"]}),
    }
    for split_of_5, refused in (("train", True), ("val", True), ("test", False)):
        pl.DataFrame(
            {
                "session_id": ["7", "8", "9", "5"],
                "split": ["train", "train", "val", split_of_5],
                "emb_0": [0.7, 0.8, 0.9, 0.5],
            }
        ).write_parquet(tmp_path / "s.parquet")
        if refused:
            with pytest.raises(
                ConfigError,
                match=f"1 of this run's test session.s. were in the train or val split .*'5', {split_of_5} there",
            ):
                with_embeddings(frames, tmp_path / "s.parquet", "sess", prepared)
        else:
            assert with_embeddings(frames, tmp_path / "s.parquet", "sess", prepared)["test"].columns == [
                "session_id",
                "emb_0",
            ]
    # A supervised run of a fuller label table: it labels sessions this run reads unlabelled (dogfood 123).
    kept = {
        "train": pl.DataFrame(
            {"session_id": ["7", "8"], "label": [None, 1]}, schema_overrides={"label": pl.Int8}
        )
    }
    pl.DataFrame({"session_id": ["7", "8"], "label": [0, 1], "emb_0": [0.7, 0.8]}).write_parquet(
        tmp_path / "l.parquet"
    )
    with caplog.at_level("WARNING", logger="seqfraud.training.embeddings"):
        with_embeddings(kept, tmp_path / "l.parquet", "sess", prepared)
    assert "it labels 1 of this run's train sessions that this run reads without a label" in caplog.text
    # Without a record, the warning says whether a split column checks anything (--artifact files have none).
    assert (
        "nothing checks that its encoder read none of this run's validation or test sessions" in caplog.text
    )


@pytest.mark.slow
def test_train_command_runs_a_contrastive_pretraining(tmp_path) -> None:
    """``python train.py +experiment=pretrain_contrastive`` end to end, through Hydra and the command's exit code."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *SMALL,
        "+experiment@_global_=pretrain_contrastive",
        "logger=none",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer.enable_progress_bar=false",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["objectives"] == ["contrastive"] and metrics["val"]["contrastive"] > 0


def test_label_fraction_trains_on_one_fixed_share_of_the_training_labels(tmp_path, caplog) -> None:
    import polars as pl

    from seqfraud.errors import ConfigError

    with caplog.at_level("INFO", logger="seqfraud.training.train"):
        runs = [train_into(tmp_path / m, *SMALL, "model=lightgbm", "label_fraction=0.3") for m in ("a", "b")]
    subsets = [pl.read_parquet(r / "labelled" / "train")["session_id"].sort().to_list() for r in runs]
    everyone = pl.read_parquet(runs[0] / "data" / "train")["session_id"]
    assert subsets[0] == subsets[1] and 0.2 < len(subsets[0]) / len(everyone) < 0.4
    # metrics.json says how many labelled sessions and frauds the fit read (a dogfood found them in the log only).
    labelled = pl.read_parquet(runs[0] / "labelled" / "train")
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["train"] == {"n": labelled.height, "positives": int(labelled["label"].sum())}
    # The log names the labels the share held back (dogfood 77: "fit on 97 of 3468", no word of 107 held).
    held = everyone.len() - labelled.height
    assert f"(0 have no label; label_fraction=0.3 held back {held:,} labels)" in caplog.text
    with pytest.raises(ConfigError, match="label_fraction"):
        train_into(tmp_path / "c", *SMALL, "model=lightgbm", "label_fraction=0")
    # A share with few frauds is said: a 5% draw held one, and every model of the run learnt from it, unsaid in the
    # log (dogfood 115).
    from seqfraud.data.shards import shard_name
    from seqfraud.training.train import FEW_POSITIVES, labelled_train

    n = FEW_POSITIVES - 1
    shard = tmp_path / "few" / "train"
    shard.mkdir(parents=True)
    pl.DataFrame(
        {"session_id": [f"s{i}" for i in range(200)], "label": [1] * n + [0] * (200 - n)}
    ).write_parquet(shard / shard_name(0))
    caplog.clear()
    labelled_train(shard, 0.9999999, 42, tmp_path / "few" / "labelled")
    assert (
        f"the supervised fit reads {n} fraud session(s) of 200 labelled ones (label_fraction=0.9999999"
        in (caplog.text)
    )
    caplog.clear()  # every label, none held back: said too, with advice that fits (review 117)
    assert labelled_train(shard, 1.0, 42, tmp_path / "few" / "all") == shard
    assert f"reads {n} fraud session(s) of 200 labelled ones: every model" in caplog.text
    assert "train on a longer log" in caplog.text and "label_fraction" not in caplog.text


def old_contrastive_loss(net, tokens, lengths) -> torch.Tensor:
    """The contrastive loss before entity positives, verbatim: the reference that session positives keep."""
    import torch.nn.functional as F

    a, b = net._crop(tokens, lengths), net._crop(tokens, lengths)
    za = F.normalize(net.project(net.embed_sessions(*a)).float(), dim=-1)
    zb = F.normalize(net.project(net.embed_sessions(*b)).float(), dim=-1)
    logits = za @ zb.T / net.temperature
    target = torch.arange(len(za))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_contrastive_loss_without_shared_groups_is_the_session_loss() -> None:
    from seqfraud.models.pretrain import PretrainNet
    from seqfraud.models.sequence import ModelConfig

    net = PretrainNet(ModelConfig(vocab_sizes=[10, 20, 30], max_len=16), ["contrastive"])
    tokens, lengths = batch(2)
    losses = []
    for group in (None, None, torch.arange(8) * 5):  # reference, no groups, every group distinct
        torch.manual_seed(3)  # the same crops
        losses.append(
            old_contrastive_loss(net, tokens, lengths)
            if not losses
            else net.contrastive_loss(tokens, lengths, group)
        )
    assert torch.equal(losses[0], losses[1])
    torch.testing.assert_close(losses[2], losses[0])


def test_sessions_of_one_group_are_each_others_positives() -> None:
    """Multi-positive InfoNCE against a hand computation: sessions 0 and 1 share a group, session 2 is alone."""
    import math

    from seqfraud.models.pretrain import info_nce

    za = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    zb = [[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]]
    t, positives = 0.5, [[0, 1], [0, 1], [2]]

    def direction(anchors, others) -> float:
        total = 0.0
        for i, anchor in enumerate(anchors):
            logits = [sum(x * y for x, y in zip(anchor, other)) / t for other in others]
            log_z = math.log(sum(math.exp(v) for v in logits))
            total += -sum(logits[j] - log_z for j in positives[i]) / len(positives[i])
        return total / len(anchors)

    expected = (direction(za, zb) + direction(zb, za)) / 2
    got = info_nce(torch.tensor(za), torch.tensor(zb), t, torch.tensor([4, 4, 9]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() != pytest.approx(info_nce(torch.tensor(za), torch.tensor(zb), t).item())


def test_grouped_stream_batches_a_groups_sessions_together(tmp_path) -> None:
    """Same-group sessions share a batch (each group splits at most at a batch boundary), every batch names their
    group, and two ranks still read disjoint shares that cover the split."""
    import numpy as np

    from seqfraud.training.data import SessionStream
    from tests.test_streaming import FIELDS, N, write_shards

    path = write_shards(tmp_path / "train")
    groups = (np.arange(N) * 7) % 25  # 110 sessions, 4-5 a group, scattered over the file
    read = []
    for rank in (0, 1):
        plain, grouped = (
            SessionStream(
                path,
                FIELDS,
                8,
                shuffle=True,
                seed=1,
                shuffle_buffer=5,
                pool_batches=100,
                rank=rank,
                world_size=2,
                session_groups=session_groups,
            )
            for session_groups in (None, groups)
        )
        for _ in range(2):  # epochs
            unlike, batches = list(plain), list(grouped)
            assert "group" not in unlike[0]
            assert all(torch.equal(b["group"], torch.from_numpy(groups[b["index"].numpy()])) for b in batches)
            where: dict[int, set[int]] = {}  # group -> the batches holding its sessions
            for k, b in enumerate(batches):
                for g in b["group"].tolist():
                    where.setdefault(g, set()).add(k)
            assert sum(len(ks) - 1 for ks in where.values()) <= len(batches) - 1
            indices = sorted(i for b in batches for i in b["index"].tolist())
            # The rank's own sessions, grouped or not.
            assert indices == sorted(i for b in unlike for i in b["index"].tolist())
        read += indices
    assert sorted(read) == list(range(N))


def test_entity_groups_take_each_sessions_first_entity_value(tmp_path) -> None:
    from datetime import datetime, timedelta

    import polars as pl

    from seqfraud.schema import Schema
    from seqfraud.training.data import entity_groups
    from tests.test_streaming import write_shards

    path = write_shards(tmp_path / "train", sizes=[5], row_group=2)  # sessions s0000 .. s0004
    t0 = datetime(2024, 1, 1)
    rows = [  # (session, minutes, account): s0000's first account is b (by time, not file order)
        ("s0000", 5, "a"),
        ("s0000", 1, None),
        ("s0000", 2, "b"),
        ("s0001", 0, "a"),
        ("s0002", 0, None),
        ("s0003", 3, "b"),
        ("s0003", 3, "c"),  # same time: the earlier row wins
        ("s0004", 0, None),
        ("s9999", 0, "z"),  # not in the dataset
    ]
    events = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "sid": [r[0] for r in rows],
            "ts": [t0 + timedelta(minutes=r[1]) for r in rows],
            "kind": ["x"] * len(rows),
            "y": [0] * len(rows),
            "acct": [r[2] for r in rows],
        }
    ).write_parquet(events)
    schema = Schema(session_id="sid", timestamp="ts", event_type="kind", label="y", entities=("acct",))
    got = entity_groups(str(events), None, schema, "acct", {"train": path})["train"]
    assert got.tolist() == [1, 0, 4, 1, 6]  # a=0, b=1; a session with none: 2 + its position, a group alone


def test_entity_positives_config_errors() -> None:
    from seqfraud.errors import ConfigError
    from seqfraud.schema import Schema
    from seqfraud.training.train import pretrain_entity

    schema = Schema(entities=("account_id", "ip"))
    contrastive = {"objectives": ["contrastive"]}
    assert pretrain_entity(contrastive, schema) is None
    assert pretrain_entity(contrastive | {"positives": "entity", "entity": "ip"}, schema) == "ip"
    for pretrain, message in [
        ({"positives": "account"}, r"pretrain.positives must be one of \['session', 'entity'\]"),
        (
            {"positives": "entity"},
            r"pretrain.entity must be one of data.schema.entities \['account_id', 'ip'\]",
        ),
        ({"positives": "entity", "entity": "device_id"}, "got 'device_id'"),
        ({"entity": "ip"}, "needs pretrain.positives=entity"),
        (
            {"positives": "entity", "entity": "ip", "objectives": ["masked"]},
            "needs the contrastive objective",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            pretrain_entity(contrastive | pretrain, schema)
    # Before any data is read (dogfood 77: after the whole preprocessing).
    from seqfraud.training.train import check_settings
    from tests.conftest import compose_train

    with pytest.raises(ConfigError, match="got 'device_id'"):
        check_settings(
            compose_train(
                [
                    "+experiment=pretrain_contrastive",
                    "data.schema.entities=[account_id]",
                    "pretrain.positives=entity",
                    "pretrain.entity=device_id",
                ]
            )
        )


@pytest.mark.integration  # it trains
def test_entity_positives_pretraining_sees_entity_pairs(tmp_path) -> None:
    run = train_into(
        tmp_path,
        *SMALL,
        "+experiment@_global_=pretrain_contrastive",
        "data.schema.entities=[account_id]",
        "features.entity.risk=false",
        "features.entity.windows=[1d]",
        "pretrain.positives=entity",
        "pretrain.entity=account_id",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["positives"] == "entity" and metrics["entity"] == "account_id"
    assert metrics["train"]["entity_pairs"] > 0 and metrics["val"]["entity_pairs"] > 0
    assert metrics["val"]["contrastive"] > 0


def test_a_run_reports_the_epoch_its_checkpoint_kept() -> None:
    """A pretraining run said val loss 0.2095, its last epoch's, while best.ckpt (what init_from and embed read)
    held epoch 2 at 0.1817 (dogfood 24): the figures come from the epoch the checkpoint's monitor picked."""
    from types import SimpleNamespace

    from seqfraud.training.callbacks import EpochLog, best_epoch

    log = EpochLog()
    log.history = [
        {"epoch": 1, "val/loss": 0.30},
        {"epoch": 2, "val/loss": 0.1817},
        {"epoch": 3, "val/loss": 0.2095},
    ]
    trainer = SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor="val/loss", mode="min"))
    assert best_epoch(trainer, [log]) == {"epoch": 2, "val/loss": 0.1817}
    trainer.checkpoint_callback.mode = "max"
    assert best_epoch(trainer, [log])["epoch"] == 1
    assert best_epoch(trainer, []) is None  # no epoch log: the caller falls back to the last epoch


def test_the_contrastive_validation_loss_does_not_depend_on_the_eval_batch_size(tmp_path) -> None:
    """Each session is set against the rest of its batch: validation in batches of another size read another
    task (one checkpoint's loss 0.785 at 64, 1.147 at 128: dogfood 77), so it runs in training's batches."""
    losses = [
        json.loads((run / "metrics.json").read_text())["val"]["loss"]
        for run in (
            train_into(
                tmp_path / str(size),
                *SMALL,
                "+experiment@_global_=pretrain_contrastive",
                f"loader.eval_batch_size={size}",
            )
            for size in (16, 128)
        )
    ]
    assert losses[0] == losses[1] > 0


def test_the_readmes_pretraining_of_the_default_models_gru_fits_it() -> None:
    """``+experiment=pretrain_contrastive model.encoder=gru`` pretrains the encoder ``model=stacked`` holds, so
    that ``model=stacked init_from=RUN`` fine-tunes it (README, Self-supervised pretraining)."""
    from omegaconf import OmegaConf

    from seqfraud.training.train import encoder_settings
    from tests.conftest import compose_train

    pretraining = compose_train(["+experiment=pretrain_contrastive", "model.encoder=gru"])
    default = compose_train([])
    assert default.model.kind == "stacked" and default.model.encoder == "gru"
    assert encoder_settings(OmegaConf.to_container(pretraining.model)) == encoder_settings(
        OmegaConf.to_container(default.model)
    )


def test_the_default_model_fine_tunes_every_fit_from_a_pretraining_of_its_gru(tmp_path, caplog) -> None:
    """The README's recipe end to end: each sequence fit of ``model=stacked`` (its folds and the refit) starts
    from the pretrained GRU, and the run scores its test split."""
    pretrained = train_into(
        tmp_path / "pre",
        *SMALL,
        "+experiment@_global_=pretrain_contrastive",
        "model.encoder=gru",
        "model=stacked",
    )
    with caplog.at_level("INFO", logger="seqfraud.training.train"):
        tuned = train_into(tmp_path / "tuned", *SMALL, "model=stacked", f"init_from={pretrained}")
    from tests.conftest import compose_train

    folds = int(compose_train(["model=stacked"]).model.stacking.folds)
    assert caplog.text.count("initialized the embedding and encoder from") == folds + 1
    assert json.loads((tuned / "metrics.json").read_text())["test"]["pr_auc"] > 0
