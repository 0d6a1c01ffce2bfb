"""Training: configs compose, the model ignores padding, a smoke run writes its run directory, seeds repeat."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import polars as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seqfraud import schema as S
from seqfraud.config import TRANSFORMER_KEYS
from seqfraud.data.events import DataValidationError
from seqfraud.errors import ConfigError
from seqfraud.features.spec import Spec
from seqfraud.models.sequence import ModelConfig, SessionClassifier
from seqfraud.training.module import SessionRiskModule
from seqfraud.training.train import check_settings, checked_model, model_config, train
from tests.conftest import compose_train, train_into

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "seqfraud" / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def smoke_run(trained_run):
    """conftest's ``+experiment=smoke`` run (its data beside it, in ``data``) and the metrics it saved."""
    return trained_run, json.loads((trained_run / "metrics.json").read_text())


def test_experiment_list_is_what_the_docs_promise():
    assert {
        "synthetic_transformer",
        "synthetic_gru",
        "synthetic_lightgbm",
        "smoke",
        "ablation_shuffled_order",
        "ablation_no_time",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, smoke_run, tmp_path):
    cfg = compose_train([f"+experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.experiment_name == experiment
    for callback in cfg.callbacks.values():
        instantiate(callback)
    if cfg.logger:
        instantiate(cfg.logger)
    spec = Spec.load(smoke_run[0] / "spec.json")
    if cfg.model.kind == "lightgbm":
        return
    model_cfg = model_config(OmegaConf.to_container(cfg.model), spec, list(cfg.features.exclude))
    net = SessionClassifier(model_cfg).eval()
    tokens = torch.full((2, 5, len(spec.fields)), 4, dtype=torch.long)
    assert net(tokens, torch.tensor([5, 3])).shape == (2,)


def test_experiments_compose_as_one_list_each_over_the_ones_before():
    """The advice for two +experiment= (one list), tested: a third as +experiment@_global_= was refused again
    (dogfood 204)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=[smoke,synthetic_gru,ablation_no_time]"])
    # The smoke log (the first's data), and the last's name and its time field left out.
    assert (
        cfg.data.events.endswith("synthetic_smoke/events.parquet")
        and cfg.experiment_name == "ablation_no_time"
    )
    assert list(cfg.features.exclude) == ["time_delta"]


def test_optuna_search_composes_with_its_sweeper():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hparams_search=optuna", "paths.output_dir=x"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert (
        sweeper._target_.endswith("OptunaSweeper")
        and sweeper.direction == "maximize"
        and sweeper.storage is None
    )
    assert "optim.lr" in sweeper.params and cfg.hydra.mode.name == "MULTIRUN"
    # Only keys both encoders read: the default's GRU ignored model.local_kernel (dogfood 203). A transformer's
    # search adds it as the search's comment says.
    assert not {k.removeprefix("model.") for k in sweeper.params} & set(TRANSFORMER_KEYS)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        added = '+hydra.sweeper.params={model.local_kernel:"choice(1,3)"}'
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna", "paths.output_dir=x", added],
            return_hydra_config=True,
        )
    assert (
        cfg.hydra.sweeper.params["model.local_kernel"] == "choice(1,3)"
        and "optim.lr" in cfg.hydra.sweeper.params
    )
    # Optuna's alembic logs a line a plugin at its import (dogfood 106); the sweep test below sees them only where it
    # imports Optuna first in its process, so the setting that quiets them is held here too.
    assert cfg.hydra.hydra_logging.loggers.alembic.level == "WARNING"


def test_a_search_whose_stacker_keeps_the_aggregates_alone_says_it_searches_nothing(
    tmp_path, monkeypatch, capfd
):
    """Every trial of hparams_search=optuna on the default model scored alike on a dogfood log, and Hydra named
    "best parameters": the stacker kept LightGBM alone, whose validation PR-AUC the sequence settings cannot move.
    Each such trial says so (train is stood in for: what is tested is the sweep's reading of the run)."""
    import json

    from hydra.core.hydra_config import HydraConfig

    import seqfraud.cli.train as cli
    import seqfraud.training.train as training
    from seqfraud.rundir import STACKING_REPORT

    def fitted(cfg):
        Path(HydraConfig.get().runtime.output_dir, STACKING_REPORT).write_text(
            json.dumps({"chosen": "aggregates"})
        )
        return {"val": {"pr_auc": 0.5}}

    monkeypatch.setattr(training, "train", fitted)  # which the command imports when it runs
    cli.main(
        ["hparams_search=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}", "logger=none"]
    )
    logged = capfd.readouterr().out  # Hydra's job logging writes to stdout
    said = "the stacker kept the aggregates alone, so this job's validation PR-AUC does not depend"
    assert said in logged and "settings it sweeps (hydra.sweeper.params)" in logged
    # A grid sweep's jobs too (dogfood 193: model.d_model=32,64 ranked both first, unsaid); one of the stacker's
    # own settings moves what it kept, and is not said.
    cli.main(["-m", "model.d_model=32,64", f"hydra.sweep.dir={tmp_path / 'grid'}", "logger=none"])
    logged = capfd.readouterr().out
    assert logged.count(said) == 2 and "settings it sweeps (model.d_model=32)" in logged
    cli.main(
        ["-m", "model.stacking.params.num_leaves=4,31", f"hydra.sweep.dir={tmp_path / 'own'}", "logger=none"]
    )
    assert said not in capfd.readouterr().out
    # A transformer's setting given to the GRU encoder (a search that samples model.local_kernel, which the
    # default's GRU ignores: dogfood 196).
    cli.main(["model.local_kernel=3", f"hydra.run.dir={tmp_path / 'gru'}", "logger=none"])
    out = capfd.readouterr().out
    assert "a GRU encoder reads no transformer setting, so model.local_kernel=3 change(s) nothing" in out
    # Optuna's alembic logged a line a plugin, at its import (dogfood 106): seen where this test imports it first.
    assert "setup plugin alembic" not in logged


def test_an_optuna_search_with_failed_trials_ends_with_the_first_error(tmp_path, monkeypatch, capsys):
    """The Optuna sweeper records a failed trial and goes on: a search with failed trials exited 0, and one whose
    every trial failed ended in Optuna's "No trials are completed yet" traceback (dogfood 106). Both end as a grid
    sweep does, with the first trial's error in one line and exit status 2 (train is stood in for)."""
    import seqfraud.cli.train as cli
    import seqfraud.training.train as training
    from seqfraud.errors import ConfigError

    calls = []

    def fitted(cfg):
        calls.append(len(calls))
        if calls[-1] == 0 or fail_all:
            raise ConfigError(f"trial {calls[-1]} cannot run")
        return {"val": {"pr_auc": 0.5}}

    monkeypatch.setattr(training, "train", fitted)  # which the command imports when it runs
    for fail_all in (False, True):
        calls.clear()
        with pytest.raises(SystemExit) as ended:
            cli.main(
                [
                    "hparams_search=optuna",
                    "hydra.sweeper.n_trials=2",
                    f"hydra.sweep.dir={tmp_path / str(fail_all)}",
                    "logger=none",
                ]
            )
        err = capsys.readouterr().err
        assert ended.value.code == 2 and len(calls) == 2, fail_all
        assert (
            err.strip().splitlines()[-1] == "error: trial 0 cannot run"
            and "No trials are completed" not in err
        )


def test_ablation_configs_change_what_they_claim():
    shuffled = compose_train(["+experiment=ablation_shuffled_order", "paths.output_dir=x"])
    no_time = compose_train(["+experiment=ablation_no_time", "paths.output_dir=x"])
    base = compose_train(["+experiment=synthetic_transformer", "paths.output_dir=x"])
    assert shuffled.features.shuffle_order and not base.features.shuffle_order
    assert list(no_time.features.exclude) == [S.TIME_DELTA] and list(base.features.exclude) == []
    assert OmegaConf.to_container(shuffled.model) == OmegaConf.to_container(base.model)


@pytest.mark.parametrize(("encoder", "local_kernel"), [("transformer", 1), ("transformer", 3), ("gru", 1)])
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_scores_do_not_depend_on_padding(encoder, local_kernel, fusion):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_sizes=[12, 9, 20, 28],
        max_len=32,
        encoder=encoder,
        fusion=fusion,
        d_model=32,
        n_layers=2,
        n_heads=4,
        local_kernel=local_kernel,
    )
    net = SessionClassifier(cfg).eval()
    if local_kernel > 1:  # it starts at zero, which reads nothing: give it weights that would show a leak
        torch.nn.init.normal_(net.encoder.local.conv.weight, std=0.3)
    lengths = torch.tensor([7, 3, 1, 5])
    tokens = torch.randint(4, 9, (4, 7, 4))
    for row, n in enumerate(lengths):
        tokens[row, n:] = 0
    base = net(tokens, lengths)
    for extra in (1, 9, 25):
        padded = torch.cat([tokens, torch.zeros(4, extra, 4, dtype=torch.long)], dim=1)
        torch.testing.assert_close(net(padded, lengths), base, atol=1e-5, rtol=0)
    # and each session alone, with no padding at all, scores the same as in the batch
    for row, n in enumerate(lengths):
        torch.testing.assert_close(
            net(tokens[row : row + 1, :n], lengths[row : row + 1]), base[row : row + 1], atol=1e-5, rtol=0
        )


def test_recency_positions_align_sessions_cut_from_the_front():
    from seqfraud.models.sequence import recency_positions

    assert recency_positions(torch.tensor([3, 1]), 4).tolist() == [[2, 1, 0, 0], [0, 0, 0, 0]]


def test_smoke_run_writes_the_run_directory(smoke_run):
    run_dir, _ = smoke_run
    for name in (
        "metrics.json",
        "predictions/val.parquet",
        "predictions/test.parquet",
        "spec.json",
        "checkpoints/best.ckpt",
        "config.yaml",
    ):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("pr_auc", "roc_auc", "recall_at_0.01_fpr", "precision_at_0.5_recall", "brier"):
        assert 0.0 <= saved["test"][key] <= 1.0
    from seqfraud.data.synthetic import KINDS

    assert saved["test"]["per_typology"] and set(saved["test"]["per_typology"]) <= set(KINDS)
    test = pl.read_parquet(run_dir / "predictions/test.parquet")
    assert test.columns == [S.SESSION_ID, S.LABEL, S.SCORE]
    assert test[S.SCORE].is_between(0, 1).all() and test.height == saved["test"]["n"]


def test_checkpoint_and_spec_rebuild_the_model_without_yaml(smoke_run):
    run_dir, _ = smoke_run
    module = SessionRiskModule.load_from_checkpoint(
        run_dir / "checkpoints/best.ckpt", map_location="cpu", weights_only=True
    )
    spec = Spec.from_dict(module.hparams.spec)
    assert spec.to_dict() == Spec.load(run_dir / "spec.json").to_dict()
    from seqfraud.training.train import predict_proba

    scores = predict_proba(module.net, run_dir / "data/test", spec.fields)
    expected = pl.read_parquet(run_dir / "predictions/test.parquet")[S.SCORE].to_numpy()
    assert abs(scores - expected).max() < 1e-6


def test_same_seed_same_metrics(smoke_run, tmp_path):
    """The smoke run again, with the default logger: the metrics it returns are the ones it saves, and the
    smoke run's (torch threads: OMP_NUM_THREADS=1, set in conftest, for both)."""
    run_dir, metrics = smoke_run
    cfg = compose_train(
        [
            "+experiment=smoke",
            f"paths.output_dir={tmp_path / 'again'}",
            f"paths.data_dir={run_dir.parent / 'data'}",
        ]
    )
    import random

    # A state no fit leaves (the fixture's run left its own, which an identical fit would leave again).
    torch.use_deterministic_algorithms(False)
    random.seed(1234)
    torch.manual_seed(1234)
    os.environ.pop("PL_GLOBAL_SEED", None)

    torch.backends.cudnn.benchmark = True

    def process() -> tuple:
        flags = (
            torch.get_num_threads(),
            torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.benchmark,
        )
        return (*flags, os.environ.get("PL_GLOBAL_SEED"), random.getstate()), torch.get_rng_state()

    before = process()
    again = train(cfg)
    # A notebook's train(cfg) left deterministic mode on and the generators seeded (dogfood 40).
    after = process()
    assert after[0] == before[0] and torch.equal(after[1], before[1])
    saved = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["val"] == saved["val"] and again["test"] == saved["test"]
    assert again["val"] == metrics["val"] and again["test"] == metrics["test"]
    # What makes the run again is recorded, and is the same: the data's digest, threads, seed and libraries
    # (dogfood 38 told two runs on different files apart only by their paths).
    from seqfraud.provenance import files_digest

    made = saved["provenance"]
    assert made == metrics["provenance"] and made["threads"] == 1 and made["seed"] == cfg.seed
    assert made["versions"]["torch"] == torch.__version__ and made["versions"]["lightgbm"]
    events = made["inputs"]["events"]
    assert events["files"] == 1 and events["sha256"] == files_digest([events["path"]])


def test_the_model_preset_decides_the_model_not_an_experiments_keys(tmp_path, caplog):
    """An experiment file's ``model.*`` keys merge into whichever preset ``model=`` picks: the stacker's folds
    turned ``model=small`` into the stacked model, and broke ``model=lightgbm`` with a TypeError."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  d_model: 32\n  stacking:\n    folds: 2\n"
    )
    mine = [f"hydra.searchpath=[file://{tmp_path}]", "+experiment=mine"]
    stacked = checked_model(compose_train(mine))
    assert (
        stacked.model.kind == "stacked" and stacked.model.stacking.folds == 2 and stacked.model.d_model == 32
    )
    small = checked_model(compose_train([*mine, "model=small"]))
    assert small.model.kind == "sequence" and "stacking" not in small.model and small.model.d_model == 32
    assert "model.kind=sequence does not read ['model.stacking']" in caplog.text
    lightgbm = checked_model(compose_train([*mine, "model=lightgbm"]))
    assert set(lightgbm.model) == {"kind", "embeddings", "num_boost_round", "early_stopping", "params"}
    with pytest.raises(ConfigError, match=r"model.num_leaf: no model reads \['num_leaf'\]"):
        checked_model(compose_train(["model=lightgbm", "+model.num_leaf=3"]))
    # The stacker and LightGBM read the raw events, which a prepared_dir run never loads: refused before any fit.
    for model in ("stacked", "lightgbm"):
        with pytest.raises(ConfigError, match=f"model.kind={model} reads the baseline's aggregates"):
            checked_model(compose_train([f"model={model}", "prepared_dir=/some/run"]))
    assert checked_model(compose_train(["model=small", "prepared_dir=/some/run"])).model.kind == "sequence"
    with pytest.raises(ConfigError, match="model.kind must be one of"):
        checked_model(compose_train(["~model.kind"]))
    with pytest.raises(ConfigError, match="model.stacking.folds must be at least 2, got 1"):
        checked_model(compose_train(["model=stacked", "model.stacking.folds=1"]))
    with pytest.raises(ConfigError, match="without DDP"):
        checked_model(compose_train(["model=stacked", "trainer.devices=2"]))


def test_a_setting_nothing_reads_is_refused_before_any_data(tmp_path, caplog):
    """Keys an experiment file adds merge silently: a dogfood's ``optim.learning_rate`` trained at the default
    rate, ``loss.name: nonsense`` trained with BCE, ``trainer.max_epoch`` failed after preprocessing with a
    TypeError, ``model.n_heads=3`` with a traceback. Each is refused by its key, with what that level takes."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\noptim:\n  learning_rate: 0.5\n")
    mine = [f"hydra.searchpath=[file://{tmp_path}]", "+experiment=mine"]
    with pytest.raises(
        ConfigError, match=r"optim.learning_rate: no such setting; optim takes \['betas', 'lr'"
    ):
        check_settings(compose_train(mine))
    cases = {
        "+trainer.max_epoch=5": r"trainer.max_epoch: no such setting \(did you mean 'max_epochs'\?\)",
        "+lr=0.5": r"lr: no such setting; the top level takes \['callbacks'",
        "+features.time_delta.n_bucket=3": r"features.time_delta.n_bucket: no such setting \(did you mean",
        # A misspelt split boundary fell back to val_fraction, moving the split unsaid (dogfood 159).
        "+data.split.valstart=2026-04-02": r"data.split.valstart: no such setting \(did you mean 'val_start'",
        "+data.policy.label_dealy=30d": r"data.policy.label_dealy: no such setting \(did you mean 'label_delay'",
        "+data.eventz=e.csv": r"data.eventz: no such setting \(did you mean 'events'",
        "loss.name=nonsense": r"loss.name must be one of \['bce', 'focal'\], got 'nonsense'",
        "+callbacks.early_stopping.patiense=3": r"callbacks.early_stopping.patiense: no such setting \(did you mean 'patience'",
        "+callbacks.early_stop.patience=3": r"callbacks.early_stop: a callback needs _target_",
        "label_fraction=2": r"label_fraction must be in \(0, 1\], got 2",
        # Values of the wrong kind failed with tracebacks, some after preprocessing (dogfood 49).
        "optim.lr=fast": r"optim.lr must be a number \(as its default, 0.001\), got 'fast'",
        "optim.lr=-1": "optim.lr must be positive, got -1",
        "optim.lr=inf": "optim.lr must be positive and finite, got inf",  # as NaN is not (review 156)
        "loader.batch_size=0": "loader.batch_size must be at least 1, got 0",
        "trainer.max_epochs=two": "trainer.max_epochs must be an integer",
        "loader.batch_size=2.5": r"loader.batch_size must be an integer \(as its default, 128\), got 2.5",
        "trainer.enable_progress_bar=3": "trainer.enable_progress_bar must be true or false",
        # Settings that did nothing, silently: a freeze without a pretrained encoder, or for the whole run.
        "freeze_epochs=1": "freeze_epochs=1 freezes a pretrained encoder: it needs init_from=RUN",
        "freeze_epochs=-1": "freeze_epochs must be at least 0, got -1",
        # Numbers out of range failed deep in torch, Polars or Lightning, or ran meaninglessly (dogfoods 53, 55).
        "metrics.fpr=2": r"metrics.fpr must be in \(0, 1\), got 2",
        "trainer.max_epochs=0": r"trainer.max_epochs must be at least 1 \(or -1: no limit\), got 0",
        "features.n_buckets=0": "features.n_buckets must be at least 1, got 0",
        "features.max_len=0": "features.max_len must be at least 1, got 0",
        "loader.pool_batches=0": "loader.pool_batches must be at least 1, got 0",
        "model.stacking.confidence=1.5": r"model.stacking.confidence must be in \[0.5, 1\], got 1.5",
        # A candidate validation says is worse was kept (dogfood 163).
        "model.stacking.confidence=0.3": r"model.stacking.confidence must be in \[0.5, 1\], got 0.3",
        "preprocess.partitions=-3": "preprocess.partitions must be at least 1, got -3",
        "data.split.test_fraction=0": r"data.split.test_fraction must be in \(0, 1\), got 0",
        "callbacks.early_stopping.monitor=val/prauc": r"callbacks.early_stopping.monitor: 'val/prauc' is not a metric",
        "data.split.val_fraction=0.9": r"val_fraction \+ data.split.test_fraction must be below 1 .* 0.9 \+ 0.15",
        # Lists of numbers failed with a TypeError, a ValueError or an IndexError traceback (review 185).
        "features.tail_quantiles=0.99": r"features.tail_quantiles must be a list of numbers \(as its default",
        "features.tail_quantiles=[abc]": r"features.tail_quantiles must be a list of numbers .* got \['abc'\]",
        "features.tail_quantiles=[0.5,1.2]": r"each of features.tail_quantiles must be in \(0, 1\), got \[0.5, 1.2\]",
        "optim.betas=[1.5,0.9]": r"each of optim.betas must be in \[0, 1\), got \[1.5, 0.9\]",
        "optim.betas=[0.9]": r"optim.betas must hold two numbers, AdamW's, got \[0.9\]",
        "optim.betas=[]": r"optim.betas must hold two numbers, AdamW's, got \[\]",
        "optim.betas=null": "optim.betas must hold two numbers, AdamW's, got None",
    }
    # A label-scarce run's risk features read the labels it hides (review 50); without risk it may run.
    with pytest.raises(
        ConfigError, match="label_fraction=0.05 hides training labels .* entity risk features"
    ):
        check_settings(compose_train(["+experiment=synthetic_entities", "label_fraction=0.05"]))
    check_settings(
        compose_train(["+experiment=synthetic_entities", "label_fraction=0.05", "features.entity.risk=false"])
    )
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            check_settings(compose_train([override]))
    check_settings(compose_train(["optim.betas=[0.9,${optim.min_lr_ratio}]"]))  # checked once resolved
    for overrides, message in (
        (
            ["model=small", "model.n_heads=3"],
            r"model.d_model \(64\) must be divisible by model.n_heads \(3\)",
        ),
        (["model=gru", "model.encoder=lstm"], "model.encoder must be 'transformer' or 'gru', got 'lstm'"),
        (["model=small", "model.dropout=abc"], r"model.dropout must be a number \(as its default, 0.1\)"),
        (["model=small", "model.n_layers=1.5"], r"model.n_layers must be an integer \(as its default, 2\)"),
        (["model=small", "model.n_layers=0"], "model.n_layers must be at least 1, got 0"),
        (["model=small", "model.n_heads=0"], "model.n_heads must be at least 1, got 0"),
        (["model=gru", "model.dropout=1.5"], r"model.dropout must be in \[0, 1\), got 1.5"),
        # LightGBM ignored a misspelt parameter with a printed warning; a bad value failed after preprocessing.
        (
            ["model=lightgbm", "+model.params.num_leave=5"],
            r"model.params.num_leave: not a LightGBM parameter \(did you mean 'num_leaves'",
        ),
        (
            ["model=lightgbm", "model.params.num_leaves=abc"],
            "model.params: LightGBM refuses them: .*num_leaves",
        ),
        (
            ["model=stacked", "model.stacking.params.learning_rate=-1"],
            "model.stacking.params: LightGBM refuses",
        ),
        # Stackers an artifact cannot read, or whose raw score the blend misreads, were found after training
        # (reviews 275, 276); the baseline may take them.
        (
            ["model=stacked", "+model.stacking.params.objective=cross_entropy_lambda"],
            "model.stacking.params: an artifact could not read the stacker they make: not a stacker: .* a binary",
        ),
        (
            ["model=stacked", "+model.stacking.params.linear_tree=true"],
            "model.stacking.params: an artifact could not read the stacker .* holds the line 'leaf_const=",
        ),
        (
            ["model=stacked", "+model.stacking.params.boosting=rf"],
            "model.stacking.params: a random forest's raw score sums its trees",
        ),
        # Found after every sequence fit (dogfood 53), and a pretraining's init_from that nothing read.
        (["model=stacked", "model.stacking.confidence=fast"], "model.stacking.confidence must be a number"),
        (["+experiment=pretrain_masked", f"init_from={tmp_path}"], "pretraining itself starts fresh"),
        (["model=lightgbm", f"init_from={tmp_path}"], "model=lightgbm has none"),
    ):
        with pytest.raises(ConfigError, match=message):
            checked_model(compose_train(overrides))
    for overrides, message in (
        # An unset shell variable trained from scratch; a bad pretraining value, or a classifier's metric watched by
        # a pretraining, failed after preprocessing with a traceback (dogfood 157).
        (["init_from="], r"init_from is empty \(an unset shell variable\?\)"),
        (
            ["+experiment=pretrain_masked", "pretrain.mask_prob=1.5"],
            r"pretrain.mask_prob must be in \(0, 1\), got 1.5",
        ),
        (
            ["+experiment=pretrain_contrastive", "pretrain.crop=[0.9,0.5]"],
            r"pretrain.crop must be \[low, high\]",
        ),
        (
            ["+experiment=pretrain_contrastive", "pretrain.temperature=0"],
            "pretrain.temperature must be positive",
        ),
        (
            ["+experiment=pretrain_contrastive", "pretrain.objectives=[]"],
            "pretrain.objectives must be a list of",
        ),
        (
            ["+experiment=pretrain_contrastive", "callbacks.early_stopping.monitor=val/pr_auc"],
            "'val/pr_auc' is not a metric a pretraining logs",
        ),
        # A typo was a TypeError after preprocessing, a width of 0 trained a constant loss (review 158).
        (
            ["+experiment=pretrain_contrastive", "+pretrain.temprature=0.5"],
            r"pretrain.temprature: no such setting \(did you mean 'temperature'",
        ),
        (
            ["+experiment=pretrain_contrastive", "pretrain.projection_dim=0"],
            "pretrain.projection_dim must be",
        ),
        (
            ["+experiment=pretrain_contrastive", "pretrain.objectives=[[masked]]"],
            "pretrain.objectives must be",
        ),
        (["optim.lr=1" + "0" * 400], "optim.lr must be positive and finite"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_settings(compose_train(overrides))
    # What the packaged presets and Lightning take passes, free-form maps too (spark.conf holds spark.* keys).
    check_settings(compose_train([f"init_from={tmp_path}", "freeze_epochs=1", "trainer.max_epochs=1"]))
    for overrides in (
        ["+experiment=pretrain_masked"],
        # What Lightning names a pretraining's losses per step and epoch (review 158).
        ["+experiment=pretrain_contrastive", "callbacks.early_stopping.monitor=train/contrastive_epoch"],
        ["+trainer.limit_train_batches=3", "+preprocess.spark.conf.x=1"],
        # Lightning's devices and deterministic take text too; a number default may take a fraction.
        ["trainer.devices=auto", "trainer.deterministic=warn", "preprocess.memory_gb=2.5", "optim.lr=1"],
        ["features.entity.smoothing=2.5", "features.time_delta.max_seconds=3600.5"],
        # Lightning's names of the training loss, and fractions a boundary date makes unused (review 58).
        ["callbacks.model_checkpoint.monitor=train/loss", "callbacks.early_stopping.monitor=train/loss_step"],
        ["data.split.val_start=2024-01-10", "data.split.test_start=2024-01-20", "data.split.val_fraction=0"],
        ["trainer.max_epochs=-1"],
    ):
        check_settings(compose_train(overrides))
    # What the real fit takes: early stopping reads its validation set, a list one value per feature (review 58).
    for overrides in (
        [
            "model=lightgbm",
            "+model.params.early_stopping_round=10",
            "+model.params.monotone_constraints=[1,0,0]",
        ],
        ["model=stacked", "+model.stacking.params.early_stopping_round=5"],
    ):
        checked_model(compose_train(overrides))


def test_lightgbm_baseline_trains_on_the_same_splits(smoke_run, tmp_path, caplog):
    """Also: trained into the directory of an earlier sequence run, nothing of that run is left to speak for this
    one (its checkpoint was uploaded as the LightGBM run's W&B model: dogfood 28)."""
    run_dir, _ = smoke_run
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "stacker.txt").write_text("tree\n")
    cfg = compose_train(
        [
            "+experiment=smoke",
            "model=lightgbm",
            f"paths.output_dir={tmp_path}",
            f"paths.data_dir={run_dir.parent / 'data'}",
            "model.num_boost_round=30",
            "+model.d_model=8",  # the sequence model's, as an experiment file may set it: not LightGBM's
        ]
    )
    # A rerun that fails on its input leaves the earlier run as it was (its checkpoint was removed first).
    broken = cfg.copy()
    broken.data.events = str(tmp_path / "none.parquet")
    with pytest.raises(DataValidationError):
        train(broken)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and "holds an earlier run's" not in caplog.text
    assert (tmp_path / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    metrics = train(cfg)
    assert metrics["model"] == "lightgbm" and 0 <= metrics["test"]["pr_auc"] <= 1
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "stacker.txt").exists()
    assert (
        "holds an earlier run's ['checkpoints', 'metrics.json', 'predictions', 'stacker.txt']" in caplog.text
    )
    ours = pl.read_parquet(tmp_path / "predictions/test.parquet")
    theirs = pl.read_parquet(run_dir / "predictions/test.parquet")
    assert ours[S.SESSION_ID].to_list() == theirs[S.SESSION_ID].to_list()


@pytest.mark.slow
def test_multirun_of_two_jobs_makes_two_runs(tmp_path):
    """Also: W&B runs land in WANDB_DIR, not where training was started; one log line per epoch reaches the job's
    log file; and none of the warnings every run used to print."""
    started_in = tmp_path / "elsewhere"
    started_in.mkdir()
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "+experiment=smoke",
        "model.d_model=8,16",
        "trainer.max_epochs=1",
        "data.synthetic.sessions=800",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(
        cmd, cwd=started_in, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "multirun").glob("[0-9]*/metrics.json"))
    assert len(jobs) == 2
    assert {json.loads(p.read_text())["model"] for p in jobs} == {"transformer"}
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and runs[0].name.split("-")[-1] != runs[1].name.split("-")[-1]
    assert list(started_in.iterdir()) == []
    for job in jobs:
        log_text = (job.parent / "train.log").read_text()
        assert re.search(
            r"epoch 1/1, train/loss_epoch [0-9.]+, .*val/pr_auc [0-9.]+.*, [0-9,]+ seq/s", log_text
        )
    output = result.stdout + result.stderr
    for noise in ("anonymous setting", "`IterableDataset` has `__len__`", "LeafSpec", "litlogger"):
        assert noise not in output


@pytest.mark.integration
def test_a_disabled_wandb_run_stages_nothing_outside_the_run(tmp_path, monkeypatch):
    """With WANDB_MODE=disabled the model artifact still copied the checkpoint, spec and metrics into W&B's
    staging folder under $HOME, read-only and never cleared (dogfood 49)."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    cfg = compose_train(
        [
            "+experiment=smoke",
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "data.synthetic.sessions=300",
            "trainer.max_epochs=1",
        ]
    )
    assert cfg.logger._target_.endswith("WandbLogger")
    train(cfg)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert not [p for p in (tmp_path / "wandb_data").rglob("*") if p.is_file()]


@pytest.mark.integration  # W&B offline starts its service process
def test_a_failed_training_still_finishes_its_wandb_run(tmp_path, monkeypatch):
    import wandb

    import seqfraud.training.train as training

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")

    def broken(*args, **kwargs):
        raise RuntimeError("the fit broke")

    monkeypatch.setattr(training, "fit_sequence_model", broken)
    summaries, finish = [], wandb.finish

    def finished(*args, **kwargs):
        summaries.append(dict(wandb.run.summary))
        finish(*args, **kwargs)

    monkeypatch.setattr(wandb, "finish", finished)
    cfg = compose_train(
        [
            "+experiment=smoke",
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "data.synthetic.sessions=300",
        ]
    )
    with pytest.raises(RuntimeError, match="the fit broke"):
        train(cfg)
    assert wandb.run is None
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert (run / f"run-{run.name.split('-')[-1]}.wandb").exists()
    # Its error is in the run's summary: a sweep's failed job, or a backtest's skipped window, read as an empty run.
    assert summaries == [{"error": "RuntimeError: the fit broke"}]


def test_training_threads_follow_the_setting_the_environment_and_the_machine(monkeypatch):
    from seqfraud.training.launch import training_threads

    assert training_threads(3) == 3
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ConfigError, match="threads must be"):  # one line, not a traceback (dogfood 53)
            training_threads(bad)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert training_threads("auto") == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert training_threads("auto") == 4
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert training_threads("auto") == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert training_threads("auto") == 1


def test_unusable_splits_are_refused_before_the_fit(smoke_run, tmp_path, caplog):
    """An empty test split failed only after the whole fit, and a validation split without positives trained to a
    NaN PR-AUC that picked the checkpoint and the stacker (dogfood 22): both are refused before any fit, naming
    the split; pretraining, which reads no label, takes the same validation split."""
    run_dir, _ = smoke_run
    data = f"paths.data_dir={run_dir.parent / 'data'}"
    empty = compose_train(
        [
            "+experiment=smoke",
            data,
            "data.split.test_start='2099-01-01'",
            f"paths.output_dir={tmp_path / 'e'}",
        ]
    )
    with pytest.raises(
        ConfigError,
        match=r"the test split holds no session \(validation from .*test from 2099.*; the log's sessions start "
        r"from 20\d\d-.* to 20\d\d-",
    ):
        train(empty)
    assert not (tmp_path / "e" / "checkpoints").exists()

    from seqfraud.data.split import check_splits

    report = json.loads((run_dir / "preprocess_report.json").read_text())
    no_fraud = report | {"splits": report["splits"] | {"val": {"sessions": 40, "positives": 0}}}
    with pytest.raises(
        ConfigError, match="validation keeps 0 positive and 40 negative label.s., and needs both"
    ):
        check_splits(no_fraud, None, supervised=True)
    check_splits(no_fraud, None, supervised=False)
    # A cutoff that held back every validation label empties validation: said as the cutoff's doing, not as a
    # split to move (a backtest, whose data.split keys are not read, said to move them: dogfood 42).
    no_val = report | {"splits": report["splits"] | {"val": {"sessions": 0, "positives": 0}}}
    with pytest.raises(
        ConfigError, match="the val split holds no session with a label known by data.split.label_cutoff"
    ) as info:
        check_splits(no_val, "test_start", supervised=True)
    # A plain run is told what to set, not a backtest's setting (dogfood 264: backtest.val_days offered to train).
    assert "start validation a labels' delay or more before the cutoff (data.split.val_start)" in str(
        info.value
    )
    assert "backtest" not in str(info.value)
    # A validation period whose sessions are all unlabelled (chargebacks still to come) is said as such, for a
    # pretraining too: "move val_start" beside a span that held it read as a contradiction (dogfood 105).
    unlabelled = no_val | {"unlabeled_val_sessions_dropped": 640}
    with pytest.raises(
        ConfigError, match="the val split's 640 session.s. are all unlabelled .*start validation"
    ):
        check_splits(unlabelled, None, supervised=False)
    with pytest.raises(ConfigError, match="the val split holds no session .*move data.split.val_start"):
        check_splits(no_val, None, supervised=False)
    with pytest.raises(ConfigError, match="the train split holds no positive label"):
        check_splits(
            report | {"splits": report["splits"] | {"train": {"sessions": 9, "positives": 0}}},
            None,
            supervised=True,
        )
    few = report | {"splits": report["splits"] | {"val": {"sessions": 40, "positives": 2}}}
    with caplog.at_level("WARNING", logger="seqfraud.data.split"):
        check_splits(few, None, supervised=True)
    assert "validation holds 2 positive session(s)" in caplog.text


def test_a_training_that_diverges_is_said_as_such(tmp_path):
    """Scores that are not numbers ended in sklearn's "Input contains NaN" and a traceback (dogfood 125): a user
    error, naming the learning rate."""
    from seqfraud.errors import ConfigError

    overrides = ["+experiment=smoke", "model=small", "optim.lr=1e6", "data.synthetic.sessions=300"]
    with pytest.raises(
        ConfigError,
        match=r"training diverged: \d+ of the \d+ val scores are not numbers after epoch 0: "
        r"lower optim.lr \(now 1000000",
    ) as said:
        train_into(tmp_path, *overrides, "trainer.max_epochs=1")
    assert "precision" not in str(said.value)  # it trained in full precision (review 130)


def test_a_logger_given_as_a_value_is_refused_before_preprocessing(tmp_path):
    """``logger: none`` in an experiment file's body (not its defaults list) failed in Hydra's instantiate, after
    the whole preprocessing, naming neither the key nor the fix (dogfood 21)."""
    from omegaconf import open_dict

    cfg = compose_train(["+experiment=smoke", f"paths.output_dir={tmp_path / 'run'}"])
    with open_dict(cfg):
        cfg.logger = "none"
    with pytest.raises(ConfigError, match="logger: 'none' is a value.*override /logger: none"):
        train(cfg)
    assert not (tmp_path / "run" / "preprocess_report.json").exists()


def test_a_config_composed_in_a_notebook_is_told_to_name_its_run_directory():
    """Outside a Hydra run, paths.output_dir has no Hydra directory to follow: a raw OmegaConf interpolation
    error said so (dogfood 40)."""
    cfg = compose_train(["+experiment=smoke", "logger=none"])
    with pytest.raises(ConfigError, match="compose it with paths.output_dir=DIR"):
        train(cfg)
    # ~ is not expanded there: Python made ./~ and Polars wrote under $HOME (dogfood 41).
    cfg = compose_train(["+experiment=smoke", "logger=none", "paths.output_dir='~/runs/a'"])
    with pytest.raises(ConfigError, match=r"write '\$\{oc.env:HOME\}/runs/a'"):
        train(cfg)


def test_the_source_commit_is_seqfrauds_own_or_none(tmp_path):
    """Installed inside another project's git repository, seqfraud took that project's commit as its own
    (dogfood 41): a commit is recorded only where the repository's top is seqfraud's checkout."""
    from seqfraud.provenance import source_commit

    ours = source_commit()
    assert ours is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", ours)
    lib = tmp_path / "project" / "lib"
    shutil.copytree(Path(__file__).resolve().parents[1] / "seqfraud", lib / "seqfraud", dirs_exist_ok=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "project")], check=True)
    (tmp_path / "project" / "README").write_text("another project\n")
    git = ["git", "-C", str(tmp_path / "project"), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "theirs"], check=True)
    got = subprocess.run(
        [
            sys.executable,
            "-c",
            "import seqfraud.provenance as p; print(p.__file__); print(p.source_commit())",
        ],
        cwd=lib,
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONPATH": str(lib)},
    )
    assert got.stdout.split() == [str(lib / "seqfraud" / "provenance.py"), "None"], got.stderr


def test_a_prepared_dir_without_datasets_says_what_it_takes(tmp_path):
    """An exported artifact given as prepared_dir was told it had "no dataset shards" (dogfood 55)."""
    from seqfraud.errors import ConfigError
    from seqfraud.preprocess import load_prepared

    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(
        ConfigError, match="no data/ of tokenized datasets in it: a prepared_dir is the output of"
    ):
        load_prepared(tmp_path)


@pytest.mark.parametrize("course", ["rising", "peaked", "creeping"])
def test_a_fit_still_improving_at_its_last_epoch_is_warned(course, tmp_path, caplog):
    """A dogfood's sequence model ran out of epochs with its validation ROC-AUC still rising, and the default
    kept LightGBM at chance, unsaid (dogfood 57): a fit whose checkpoint metric improved at its last epoch says
    so; one that peaked earlier does not, nor one that crept up by under 1% (dogfood 69: 0.0615 to 0.0619 on a
    fit stuck since its 9th epoch was told to train longer)."""
    import pytorch_lightning as L
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    from seqfraud.training.callbacks import EpochLog

    class Toy(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            return (self.w - batch["lengths"]).pow(2).sum()

        def validation_step(self, batch, _):
            epoch = self.current_epoch
            value = {"rising": epoch, "peaked": -abs(epoch - 1), "creeping": 1 + 0.001 * epoch}[course]
            self.log("val/pr_auc", float(value))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader([{"lengths": torch.ones(2)}] * 2, batch_size=None)
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[EpochLog(), ModelCheckpoint(dirpath=tmp_path, monitor="val/pr_auc", mode="max")],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with caplog.at_level("WARNING", logger="seqfraud.training.callbacks"):
        trainer.fit(Toy(), data, data)
    assert ("val/pr_auc still improved at the last of trainer.max_epochs=3 epochs" in caplog.text) == (
        course == "rising"
    )
    assert ("(2.0000, from 1.0000" in caplog.text) == (course == "rising")


def test_a_run_on_a_prepared_dir_may_not_set_other_splits_policies_or_inputs(smoke_run, tmp_path):
    """With prepared_dir, data.split, data.policy (and features.*) overrides were ignored while config.yaml and compare's
    leaderboard recorded them: a label_cutoff believed applied was not (dogfood 61); and so were a newer label
    table's labels, in a fine-tune on its pretraining's prepared_dir (dogfood 77)."""
    import copy
    import shutil

    from seqfraud.errors import ConfigError
    from seqfraud.preprocess import PREPARED_WITH, check_prepared_settings, load_prepared

    run_dir, _ = smoke_run
    prepared = load_prepared(run_dir)
    made, inputs = prepared.report[PREPARED_WITH], copy.deepcopy(prepared.report["inputs"])
    files = {"events": inputs["events"]["path"], "labels": inputs["labels"]["path"]}
    same = {"split": dict(made["split"]), "policy": dict(made["policy"])} | files
    features = dict(made["features"]) | {"exclude": ["time_delta"]}  # what the model reads: not the spec's
    check_prepared_settings(prepared, same, str(run_dir), features)
    # The same contents elsewhere, or the same files by a glob, are the same inputs.
    copy_of_labels = shutil.copy(files["labels"], tmp_path / "labels.parquet")
    glob = str(Path(files["events"]).parent / "event*.parquet")
    check_prepared_settings(
        prepared, same | {"labels": str(copy_of_labels), "events": glob}, str(run_dir), features
    )
    newer = tmp_path / "newer.parquet"
    pl.read_parquet(files["labels"]).with_columns(pl.col("label").reverse()).write_parquet(newer)
    for given, says in (
        ({"labels": str(newer)}, f"data.labels ({files['labels']!r} there, {str(newer)!r} here, with other"),
        ({"labels": None}, f"data.labels ({files['labels']!r} there, None here)"),
        (
            {"events": str(newer)},
            f"data.events ({files['events']!r} there, {str(newer)!r} here: other files)",
        ),
        ({"labels": str(tmp_path / "typo.parquet")}, "typo.parquet' names no file"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            check_prepared_settings(prepared, same | given, str(run_dir), features)
    # The built-in synthetic data under another paths.data_dir (a DDP launch's default) is generated, not named;
    # another file that is not there is still refused beside it.
    elsewhere = {
        "events": str(tmp_path / "none" / "events.parquet"),
        "synthetic": {"dir": str(tmp_path / "none")},
    }
    check_prepared_settings(prepared, same | elsewhere, str(run_dir), features)
    relative = {
        "events": "./none/synthetic/events.parquet",
        "synthetic": {"dir": "none/synthetic"},
    }  # one path
    check_prepared_settings(prepared, same | relative, str(run_dir), features)
    with pytest.raises(ConfigError, match="typo.parquet' names no file"):
        check_prepared_settings(
            prepared, same | elsewhere | {"labels": str(tmp_path / "typo.parquet")}, str(run_dir), features
        )
    # A part added since (as the record counts) is other files; a log removed since cannot be compared, unless
    # the run names it, as the prepared_dir holds it.
    prepared.report["inputs"] = inputs | {"events": inputs["events"] | {"files": 2}}
    with pytest.raises(ConfigError, match="here: other files"):
        check_prepared_settings(prepared, same, str(run_dir), features)
    gone = str(tmp_path / "gone.parquet")
    prepared.report["inputs"] = inputs | {"events": {"path": gone, "files": 1, "sha256": "0" * 64}}
    with pytest.raises(ConfigError, match="here: other files"):
        check_prepared_settings(prepared, same, str(run_dir), features)
    check_prepared_settings(prepared, same | {"events": gone}, str(run_dir), features)
    prepared.report["inputs"] = inputs
    other = same | {"split": same["split"] | {"label_cutoff": "test_start"}}
    with pytest.raises(ConfigError, match=r"data.split.label_cutoff \(None there, 'test_start' here\)"):
        check_prepared_settings(prepared, other, str(run_dir), features)
    # The spec's settings too: a features.max_len=64 on a prepared_dir of 16 read 16 events a session (dogfood 105).
    longer = features | {"max_len": made["features"]["max_len"] * 4}
    with pytest.raises(ConfigError, match=r"features.max_len \(64 there, 256 here\)"):
        check_prepared_settings(prepared, same, str(run_dir), longer)
    # Written otherwise, or not read, alike: hop null is max_len // 8, 60m is 1h, and a log without entities reads
    # no entity settings (review 107).
    hop = made["features"]["max_len"] // 8
    entity = dict(made["features"]["entity"]) | {"windows": ["60m", "24h", "7d", "30d"], "smoothing": 99}
    check_prepared_settings(prepared, same, str(run_dir), features | {"hop": hop, "entity": entity})
    fitted = made.pop("features")  # made before the features' record: the data's settings alone are compared
    check_prepared_settings(prepared, same, str(run_dir), longer)
    made["features"] = fitted
    # Settings written otherwise, or not read, change nothing: taken (they were refused: review 62).
    made["split"] |= {"val_start": "2026-05-10", "test_start": "2026-06-04"}
    made["policy"] |= {"label_delay": "60d", "on_unlabeled": "keep"}
    alike = files | {
        "split": made["split"] | {"val_start": "2026-05-10T00:00:00", "val_fraction": 0.3},
        "policy": made["policy"] | {"label_delay": "1440h", "on_unlabeled": "error"},
    }
    check_prepared_settings(prepared, alike, str(run_dir), features)
    # Without val_start, validation starts test_fraction + val_fraction before the end: both are read.
    made["split"] |= {"val_start": None}
    read = files | {"split": made["split"] | {"test_fraction": 0.3}, "policy": made["policy"]}
    with pytest.raises(ConfigError, match="data.split.test_fraction"):
        check_prepared_settings(prepared, read, str(run_dir), features)
    # A fraction read on one side alone is said so: "(0.15 there, 0.15 here)" read as a contradiction (dogfood 115).
    dated = files | {"split": made["split"] | {"val_start": "2026-05-01"}, "policy": made["policy"]}
    fraction = made["split"]["val_fraction"]
    with pytest.raises(
        ConfigError,
        match=re.escape(f"data.split.val_fraction ({fraction!r} there, {fraction!r}, not read here)"),
    ):
        check_prepared_settings(prepared, dated, str(run_dir), features)
    negative = alike | {"policy": alike["policy"] | {"on_unlabeled": "negative"}}
    with pytest.raises(ConfigError, match="data.policy.on_unlabeled"):
        check_prepared_settings(prepared, negative, str(run_dir), features)
    prepared.report.pop(PREPARED_WITH)  # made before the record: taken as it is
    check_prepared_settings(prepared, other, str(run_dir), features)


def test_a_small_training_split_trains_longer_in_smaller_batches(tmp_path, caplog):
    """A few thousand sessions in batches of 128 made some 25 optimizer steps an epoch, and the sequence model
    stopped barely trained (BENCHMARKS.md, small splits): such a split gets small_split's schedule, a setting
    chosen on purpose stays, and a split large enough, or small_split.min_batches=0, keeps the config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqfraud.data.shards import shard_name
    from seqfraud.training.train import (
        MIN_BATCH,
        keep_what_was_set,
        main_fit_changes,
        small_split,
        with_changes,
        with_small_split,
    )

    def schedule(n: int, *overrides: str) -> tuple[int, int, int]:
        train = tmp_path / f"train{n}"  # a training split of n sessions, as its shards' metadata counts them
        if not train.exists():
            train.mkdir()
            pq.write_table(pa.table({S.SESSION_ID: [str(i) for i in range(n)]}), train / shard_name(0))
        got = with_small_split(compose_train(list(overrides)), train)
        return got.loader.batch_size, got.trainer.max_epochs, got.callbacks.early_stopping.patience

    with caplog.at_level("INFO", logger="seqfraud.training.train"):
        assert schedule(3_500) == (35, 20, 6)
    assert (
        "a small training split (3,500 sessions): loader.batch_size=35, trainer.max_epochs=20, "
        "callbacks.early_stopping.patience=6" in caplog.text
    )
    assert small_split(compose_train([]), tmp_path / "train3500") == {
        "loader.batch_size": 35,
        "trainer.max_epochs": 20,
        "callbacks.early_stopping.patience": 6,
    }
    assert schedule(1_000) == (MIN_BATCH, 20, 6)
    assert schedule(12_800) == (128, 8, 3)  # 100 batches of 128 an epoch: not small
    assert schedule(3_500, "trainer.max_epochs=3") == (35, 3, 6)  # chosen on purpose: kept
    assert schedule(3_500, "callbacks.early_stopping.patience=30") == (35, 20, 30)
    assert schedule(3_500, "small_split.min_batches=0") == (128, 8, 3)
    assert schedule(3_500, "loader.batch_size=16") == (16, 8, 3)  # 16 already gives 100 batches an epoch
    # The packaged values given on the command line are kept too (dogfood 71: an explicit 8 became 20).
    given = ["trainer.max_epochs=8", "++callbacks.early_stopping.patience=3"]
    cfg = compose_train(given)
    keep_what_was_set(cfg, [*given, "seed=1"])
    assert (cfg.small_split.max_epochs, cfg.small_split.patience) == (8, 3)
    caplog.clear()
    with caplog.at_level("INFO", logger="seqfraud.training.train"):
        got = with_small_split(cfg, tmp_path / "train3500")
    assert (got.loader.batch_size, got.trainer.max_epochs, got.callbacks.early_stopping.patience) == (
        35,
        8,
        3,
    )
    assert "a small training split (3,500 sessions): loader.batch_size=35 (small_split" in caplog.text
    # What the run's logger (W&B) is given: the schedule the fit used, for a classifier alone (dogfood 73).
    prepared = cast(Any, SimpleNamespace(datasets={"train": tmp_path / "train3500"}))
    effective = with_changes(compose_train([]), main_fit_changes(compose_train([]), prepared))
    assert (effective.loader.batch_size, effective.trainer.max_epochs) == (35, 20)
    for other in ("model=lightgbm", "+experiment=pretrain_contrastive"):
        assert main_fit_changes(compose_train([other]), prepared) == {}
    # Unset, as the packaged value (a traceback: dogfood 108); set below the small split's, said once a run.
    assert schedule(3_500, "~trainer.max_epochs") == (35, 20, 6)
    for given in (["trainer.max_epochs=4"], []):  # on the command line, or in an experiment file
        cfg = compose_train(["trainer.max_epochs=4"])
        keep_what_was_set(cfg, given)
        caplog.clear()
        assert "trainer.max_epochs" not in main_fit_changes(cfg, prepared)
        said = "trainer.max_epochs=4, as set, stays below the 20 epochs a training split this small gets"
        assert said in caplog.text and "lose to the aggregates" in caplog.text, given
    # A sequence model alone has no aggregates to lose to (dogfood 191).
    caplog.clear()
    main_fit_changes(compose_train(["model=small", "trainer.max_epochs=4"]), prepared)
    assert said in caplog.text and "aggregates" not in caplog.text


def test_a_mistyped_wandb_mode_is_a_config_error(tmp_path):
    """WANDB_MODE=ofline was said to be an online run that could not start, then failed in wandb's own settings
    check with a traceback (dogfood 106): the logger refuses it, naming the modes."""
    from seqfraud.errors import ConfigError
    from seqfraud.training.wandb_report import WandbLogger

    with pytest.raises(
        ConfigError, match=r"logger.mode is 'ofline' \(from WANDB_MODE, where set\): W&B takes one"
    ):
        WandbLogger(project="p", mode="ofline", save_dir=str(tmp_path))
    WandbLogger(project="p", mode="disabled", save_dir=str(tmp_path))


def test_an_offline_wandb_logger_is_offline_for_the_whole_process(tmp_path, monkeypatch):
    """Offline was passed to wandb.init alone, and W&B's own threads still looked a host up and posted to it: a
    run behind a proxy that never answered took 10 s more (dogfood 175)."""
    import os

    from seqfraud.training.wandb_report import WandbLogger, finish

    monkeypatch.setenv("WANDB_MODE", "disabled")  # restored after the test
    monkeypatch.delenv("WANDB_MODE")
    logger = WandbLogger(project="p", mode="offline", save_dir=str(tmp_path))
    assert os.environ["WANDB_MODE"] == "offline"
    # Put back at the run's end, and a mode the user set is left alone (review 176: a later run read it as its own).
    finish(logger)
    assert "WANDB_MODE" not in os.environ
    monkeypatch.setenv("WANDB_MODE", "online")
    finish(WandbLogger(project="p", mode="offline", save_dir=str(tmp_path)))
    assert os.environ["WANDB_MODE"] == "online"
