"""Multi-process training: ``trainer=ddp`` launches its own ranks, cleans up after itself and survives multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from seqfraud import schema as S
from seqfraud.features.spec import SpecError
from seqfraud.training import launch
from seqfraud.training.train import train
from tests import conftest

ROOT = Path(__file__).resolve().parents[1]
ENV_KEYS = launch.ENV_KEYS


def compose_train(overrides: list[str]):
    return conftest.compose_train(["logger=none", "trainer.enable_progress_bar=false", *overrides])


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_outside_launchers_must_point_at_prepared_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = compose_train(["+experiment=smoke", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=r"rank 1 of 4 .*seqfraud preprocess .*prepared_dir="):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_prepared_dir_skips_preprocessing(trained_run, tmp_path, one_torch_thread):
    """The files the prepared data came from are the prepared run's: this run's own data config names other
    files (a docs audit's per-typology metrics came from another log, or failed after the fit; export read the
    events from the train command's config: dogfood 41)."""
    cfg = compose_train(
        [
            "+experiment=smoke",
            f"paths.output_dir={tmp_path}",
            f"prepared_dir={trained_run}",
            f"paths.data_dir={tmp_path / 'elsewhere'}",
            "trainer.max_epochs=1",
        ]
    )
    metrics = train(cfg)
    assert "ato_order" in metrics["test"]["per_typology"]
    from seqfraud.export.exporter import export_run

    # Uncalibrated: one epoch's model may rank validation below chance, which Platt scaling refuses.
    artifact = export_run(tmp_path, tmp_path / "artifact", formats="torchscript", calibration="none")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["parity"]["end_to_end"]["max_abs_diff"] <= 1e-5
    assert not (tmp_path / "data").exists()
    assert (tmp_path / "spec.json").read_text() == (trained_run / "spec.json").read_text()
    ours, theirs = (pl.read_parquet(d / "predictions/test.parquet") for d in (tmp_path, trained_run))
    assert (
        ours[S.SESSION_ID].to_list() == theirs[S.SESSION_ID].to_list() and metrics["test"]["n"] == ours.height
    )


def test_prepared_dir_of_another_schema_is_refused(trained_run, tmp_path):
    cfg = compose_train(
        [
            "+experiment=smoke",
            f"paths.output_dir={tmp_path}",
            f"prepared_dir={trained_run}",
            "data.schema.event_type=action",
        ]
    )
    with pytest.raises(SpecError, match="does not match the spec"):
        train(cfg)
    assert not (tmp_path / "spec.json").exists()


def test_a_failing_rank_is_reported_not_waited_for(trained_run, tmp_path, monkeypatch):
    """A child that dies before joining would leave rank 0 in an uninterruptible rendezvous for 30 minutes."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'child could not start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(launch.sys, "executable", str(fake))
    before = {k: os.environ.get(k) for k in ENV_KEYS}
    cfg = compose_train(
        [
            "+experiment=smoke",
            f"paths.output_dir={tmp_path / 'run'}",
            f"prepared_dir={trained_run}",
            "trainer=ddp",
        ]
    )
    with pytest.raises(launch.ChildFailed, match=r"rank 1 exited with 3(.|\n)*child could not start"):
        train(cfg)
    assert {k: os.environ.get(k) for k in ENV_KEYS} == before


def monitored_val_pr_auc(run_dir: Path) -> float:
    """The best ``val/pr_auc`` the checkpoint callback saw during the fit (under DDP: as the ranks logged it)."""
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    return float(state["best_model_score"])


def ddp_overrides(tmp_path: Path, name: str) -> list[str]:
    # Smoke-sized data leaves 6 fraud sessions in test: metrics there are noise. 12k sessions (48 in test),
    # 6 epochs at a higher rate and no early stop make both runs learn, so their metrics can be compared.
    return [
        "+experiment=smoke",
        f"paths.output_dir={tmp_path / name}",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.synthetic.sessions=12000",
        "trainer.max_epochs=6",
        "optim.lr=3e-3",
        "~callbacks.early_stopping",
    ]


@pytest.mark.slow  # 35-70 s: two training processes; make test-slow runs it
def test_two_ranks_learn_what_one_process_learns(tmp_path):
    """The issue's check, in the default run (26 s on the quiet 2-core box): 2 gloo processes vs 1."""
    single = train(compose_train(ddp_overrides(tmp_path, "single")))
    threads = torch.get_num_threads()
    before = {k: os.environ.get(k) for k in ENV_KEYS}
    # Per-device batch halved: the effective batch (32 x 2 ranks) matches the single run's 64.
    ddp = train(compose_train([*ddp_overrides(tmp_path, "ddp"), "trainer=ddp", "loader.batch_size=32"]))
    for name in ("single", "ddp"):
        assert json.loads((tmp_path / name / "metrics.json").read_text())["test"]["n"] == single["test"]["n"]
    assert (tmp_path / "ddp" / "ddp_rank1.log").is_file() and not (
        tmp_path / "single" / "ddp_rank1.log"
    ).exists()
    # The launcher leaves this process as it found it: no process group, environment, thread count.
    assert not torch.distributed.is_initialized()
    assert {k: os.environ.get(k) for k in ENV_KEYS} == before and torch.get_num_threads() == threads
    # The ranks see the data in another order, so the runs differ as two seeds do, not more. Measured (test
    # PR-AUC / ROC-AUC, single vs DDP), seed 42 (this test): 0.480/0.918 vs 0.561/0.926; seeds 1-3: 0.412/0.903
    # vs 0.528/0.899, 0.513/0.900 vs 0.475/0.914, 0.570/0.955 vs 0.611/0.937. Across seeds the single runs
    # alone spread by 0.16 PR-AUC and 0.055 ROC-AUC.
    for key, tol in (("pr_auc", 0.15), ("roc_auc", 0.05)):
        assert abs(ddp["test"][key] - single["test"][key]) <= tol, (
            key,
            single["test"][key],
            ddp["test"][key],
        )
    assert ddp["test"]["roc_auc"] > 0.85  # learned, far from chance
    # The monitor was computed on all ranks' outputs: it is the best checkpoint's PR-AUC on the whole val split.
    assert monitored_val_pr_auc(tmp_path / "ddp") == pytest.approx(ddp["val"]["pr_auc"], abs=1e-5)


@pytest.mark.slow
def test_pretraining_runs_on_two_ranks(tmp_path):
    """The local child rank runs the pretraining fit too (``run_child_rank``), on what rank 0 prepared."""
    run = tmp_path / "run"
    overrides = [
        "+experiment=smoke",
        "model=tiny",
        "+experiment@_global_=pretrain_masked",
        "trainer=ddp",
        "trainer.max_epochs=1",
        "data.synthetic.sessions=600",
        "loader.batch_size=32",
        f"paths.output_dir={run}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    before = {k: os.environ.get(k) for k in ENV_KEYS}
    metrics = train(compose_train(overrides))
    assert metrics["model"] == "pretrain" and 0 < metrics["val"]["loss"] < 10
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert "Traceback" not in (run / "ddp_rank1.log").read_text()
    assert not torch.distributed.is_initialized() and {k: os.environ.get(k) for k in ENV_KEYS} == before


@pytest.mark.slow  # 20-40 s: a multirun of DDP jobs; make test-slow runs it
def test_multirun_with_ddp_makes_one_run_per_job_and_no_strays(tmp_path):
    env = os.environ | {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "+experiment=smoke",
        "trainer=ddp",
        "seed=1,2",
        "trainer.max_epochs=1",
        "data.synthetic.sessions=800",
        "loader.batch_size=32",
        "logger=none",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "multirun"]  # children made no run dirs
    jobs = sorted(p for p in (tmp_path / "multirun").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for seed, job in zip((1, 2), jobs, strict=True):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["test"]["n"] > 0
        # One epoch: the monitor is that epoch's PR-AUC, gathered over both ranks' halves of val.
        assert monitored_val_pr_auc(job) == pytest.approx(metrics["val"]["pr_auc"], abs=1e-5)
        assert (job / "ddp_rank1.log").is_file()
        assert f"seed: {seed}\n" in (job / "config.yaml").read_text()
