"""Self-supervised pretraining (seqfraud.models.pretrain) and fine-tuning from it (init_from, freeze_epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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


def test_pretraining_writes_a_checkpoint_that_starts_a_classifier(pretrained, tmp_path) -> None:
    metrics = json.loads((pretrained / "metrics.json").read_text())
    assert metrics["model"] == "pretrain" and metrics["objectives"] == ["masked"]
    assert 0 < metrics["val"]["loss"] < 10
    encoder = {
        k: v
        for k, v in torch.load(pretrained / "checkpoints" / "best.ckpt", weights_only=True)[
            "state_dict"
        ].items()
        if k.startswith(("net.embed.", "net.encoder."))
    }
    # One epoch with the encoder frozen: the classifier's encoder is the pretrained one, its head has learnt.
    tuned = train_into(tmp_path, *SMALL, f"init_from={pretrained}", "freeze_epochs=1")
    after = torch.load(tuned / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert encoder and all(torch.equal(after[k], v) for k, v in encoder.items())
    assert json.loads((tuned / "metrics.json").read_text())["test"]["pr_auc"] > 0


def test_init_from_refuses_a_run_with_another_spec(pretrained, tmp_path) -> None:
    from seqfraud.errors import ConfigError

    with pytest.raises(ConfigError, match="another spec"):
        train_into(tmp_path, *SMALL, f"init_from={pretrained}", "features.n_buckets=8")
    with pytest.raises(ConfigError, match="no checkpoints"):
        train_into(tmp_path / "b", *SMALL, f"init_from={tmp_path}")


def test_embeddings_of_a_run_feed_the_lightgbm_hybrid(pretrained, tmp_path) -> None:
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
    hybrid = train_into(tmp_path / "hybrid", *SMALL, "model=lightgbm", f"model.embeddings={out}")
    assert json.loads((hybrid / "metrics.json").read_text())["test"]["pr_auc"] > 0
    # A file without the sessions this run trains on is refused, not joined to nulls.
    table.filter(pl.col("split") != "test").write_parquet(tmp_path / "partial.parquet")
    from seqfraud.errors import ConfigError

    with pytest.raises(ConfigError, match="test session"):
        train_into(
            tmp_path / "bad", *SMALL, "model=lightgbm", f"model.embeddings={tmp_path / 'partial.parquet'}"
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


def test_label_fraction_trains_on_one_fixed_share_of_the_training_labels(tmp_path) -> None:
    import polars as pl

    from seqfraud.errors import ConfigError

    runs = [train_into(tmp_path / m, *SMALL, "model=lightgbm", "label_fraction=0.3") for m in ("a", "b")]
    subsets = [pl.read_parquet(r / "labelled" / "train")["session_id"].sort().to_list() for r in runs]
    everyone = pl.read_parquet(runs[0] / "data" / "train")["session_id"]
    assert subsets[0] == subsets[1] and 0.2 < len(subsets[0]) / len(everyone) < 0.4
    with pytest.raises(ConfigError, match="label_fraction"):
        train_into(tmp_path / "c", *SMALL, "model=lightgbm", "label_fraction=0")
