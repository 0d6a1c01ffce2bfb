"""``model=stacked``: out-of-fold sequence scores, LightGBM on aggregates plus that score, one artifact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import torch

from seqfraud import schema as S
from seqfraud.data.shards import shard_files
from seqfraud.export.artifact import MANIFEST_FILE, ArtifactError, canonical_json, open_artifact
from seqfraud.features.spec import PAD
from seqfraud.models.stacking import STACKER_FILE, Stacker, StackInputs
from seqfraud.training.stacking import STACKING_REPORT, fold_datasets
from tests.conftest import ROOT, service_client, single_torch_thread


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory) -> Path:
    """The smoke experiment as ``model=stacked`` (two folds of a tiny sequence model); read-only."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    from hydra import compose, initialize_config_dir

    from seqfraud.training.train import train

    base = tmp_path_factory.mktemp("stacked")
    tiny = ["d_model=16", "n_layers=1", "n_heads=2", "field_dim=4"]
    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "+experiment=smoke",
                "model=stacked",
                "model.folds=2",
                *(f"model.sequence.{kv}" for kv in tiny),
                "trainer.max_epochs=1",
                f"paths.output_dir={base / 'run'}",
                f"paths.data_dir={base / 'data'}",
                "logger=none",
            ],
        )
    with single_torch_thread():
        train(cfg)
    return base / "run"


@pytest.fixture(scope="module")
def stacked_artifact(stacked_run, tmp_path_factory) -> Path:
    from seqfraud.export.exporter import export_run

    with single_torch_thread():
        return export_run(
            stacked_run, tmp_path_factory.mktemp("export") / "artifact", formats=["torchscript"]
        )


@pytest.mark.integration
def test_stacked_run_scores_with_lightgbm_over_out_of_fold_scores(stacked_run):
    report = json.loads((stacked_run / STACKING_REPORT).read_text())
    assert report["folds"] == 2 and report["best_iteration"] >= 1
    test = pl.read_parquet(stacked_run / "predictions" / "test.parquet")
    metrics = json.loads((stacked_run / "metrics.json").read_text())
    assert metrics["model"] == "stacked"
    assert metrics["test"]["pr_auc"] == pytest.approx(report["stacked"]["test"]["pr_auc"])
    assert (
        report["sequence_out_of_fold"]["train"]["n"]
        == pl.read_parquet(shard_files(stacked_run / "data" / "train")).height
    )
    booster = lgb.Booster(model_file=str(stacked_run / STACKER_FILE))
    assert booster.feature_name()[-1] == f"{booster.num_feature() - 1}_sequence_logit"
    assert test[S.SCORE].n_unique() > 10
    assert not (stacked_run / "folds").exists()  # fold data and checkpoints are removed


@pytest.mark.integration
def test_stacked_artifact_scores_like_the_run_and_refuses_a_changed_stacker(
    stacked_run, stacked_artifact, tmp_path
):
    from omegaconf import OmegaConf

    from seqfraud.scoring.scorer import Scorer

    manifest = json.loads((stacked_artifact / MANIFEST_FILE).read_text())
    assert manifest["stacker"] == {"file": STACKER_FILE, "format": "lightgbm-text"}
    assert manifest["parity"]["end_to_end"]["max_abs_diff"] <= 1e-5
    scorer = Scorer.load(stacked_artifact)
    assert scorer.stacker is not None
    expected = pl.read_parquet(stacked_run / "predictions" / "test.parquet")
    events = pl.read_parquet(OmegaConf.load(stacked_run / "config.yaml").data.events)
    ids = expected[S.SESSION_ID].implode()
    got = scorer.score(events.filter(pl.col("session_id").cast(pl.String).is_in(ids)))
    joined = expected.join(got, on=S.SESSION_ID, suffix="_served")
    assert joined.height == expected.height
    np.testing.assert_allclose(joined["raw_score"], joined[S.SCORE], atol=1e-5)

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

    changed = tmp_path / "changed"
    shutil.copytree(stacked_artifact, changed)
    text = (changed / STACKER_FILE).read_text()
    at = text.index("leaf_value=") + len("leaf_value=") + 1  # a leaf's value, one digit changed in place
    digit = next(i for i in range(at, len(text)) if text[i].isdigit())
    swapped = "1" if text[digit] != "1" else "2"
    (changed / STACKER_FILE).write_text(text[:digit] + swapped + text[digit + 1 :])
    with pytest.raises(ArtifactError, match="SHA-256"):
        open_artifact(changed)
    mislabeled = tmp_path / "mislabeled"
    shutil.copytree(stacked_artifact, mislabeled)
    bad = manifest | {"stacker": {"file": "model.ts", "format": "lightgbm-text"}}
    (mislabeled / MANIFEST_FILE).write_bytes(canonical_json(bad))
    with pytest.raises(ArtifactError, match="'stacker'"):
        open_artifact(mislabeled)


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


@pytest.fixture(scope="module")
def spec():
    import tempfile

    from seqfraud.data import synthetic
    from seqfraud.data.events import load_events
    from seqfraud.features.tokens import fit_spec
    from seqfraud.schema import SYNTHETIC

    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic.generate(80, seed=2)
        data.events.write_parquet(Path(tmp) / "e.parquet")
        data.labels.write_parquet(Path(tmp) / "l.parquet")
        loaded = load_events(str(Path(tmp) / "e.parquet"), SYNTHETIC, str(Path(tmp) / "l.parquet"))
        return fit_spec(loaded.events, SYNTHETIC, timestamp_unit=loaded.timestamp_unit, min_count=1)


def batch(spec, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = list(spec.vocab_sizes().values())
    tokens = torch.stack([torch.randint(1, v, (len(lengths), max(lengths)), generator=g) for v in sizes], -1)
    for row, n in enumerate(lengths):
        tokens[row, n:] = PAD
    return tokens, torch.tensor(lengths)


def test_stack_inputs_do_not_depend_on_the_batch_a_session_is_padded_in(spec):
    inputs = StackInputs(spec)
    tokens, lengths = batch(spec, [3, 17, 9, 1], seed=0)
    probability = np.array([0.1, 0.5, 0.9, 0.01])
    together = inputs(tokens, lengths, probability)
    assert together.shape == (4, inputs.width)
    for i, n in enumerate(lengths.tolist()):
        alone = inputs(tokens[i : i + 1, :n], lengths[i : i + 1], probability[i : i + 1])
        assert np.array_equal(alone[0], together[i])
    assert together[:, -1] == pytest.approx(np.log(probability / (1 - probability)))


def test_stacker_text_round_trip_and_width_check(spec):
    inputs = StackInputs(spec)
    rng = np.random.default_rng(0)
    rows = np.concatenate([inputs(*batch(spec, [5, 8, 2, 12], seed=s), rng.random(4)) for s in range(60)])
    label = (rows[:, -1] > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(rows, label), 5
    )
    stacker = Stacker.from_text(booster.model_to_string(), spec)
    tokens, lengths = batch(spec, [4, 6], seed=99)
    probability = np.array([0.2, 0.7])
    expected = booster.predict(inputs(tokens, lengths, probability))
    assert stacker.predict(tokens, lengths, probability) == pytest.approx(expected, abs=1e-6)
    narrow = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(rows[:, :3], label), 2)
    with pytest.raises(ValueError, match="reads 3 inputs"):
        Stacker.from_text(narrow.model_to_string(), spec)
