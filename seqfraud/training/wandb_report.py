"""End-of-run logging: final metrics to any logger; PR curve, histogram and artifacts to W&B."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger
from sklearn.metrics import precision_recall_curve

from seqfraud import rundir
from seqfraud import schema as S
from seqfraud.baselines import STACKER_FILE
from seqfraud.errors import ConfigError, is_number, one_line

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")  # wandb.Settings' own


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger, minus the ``anonymous=None`` it always passes: wandb warns on every run that
    the setting has no effect."""

    def __init__(self, **kwargs: Any):
        # A typo in WANDB_MODE was said to be an online run that could not start, then failed in wandb's own
        # settings check with a traceback (dogfood 106).
        if (mode := kwargs.get("mode")) not in WANDB_MODES:
            raise ConfigError(
                f"logger.mode is {mode!r} (from WANDB_MODE, where set): W&B takes one of {list(WANDB_MODES)}"
            )
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)
        # Offline for the whole process, not for wandb.init alone (W&B's own threads still looked a host up and
        # posted to it: behind a proxy that never answered each run waited 10 s more, dogfood 175), where the
        # user set no mode; put back by finish() (review 176: later runs of the process read it as theirs).
        self.set_mode = mode == "offline" and "WANDB_MODE" not in os.environ
        if self.set_mode:
            os.environ["WANDB_MODE"] = "offline"

    def start(self) -> None:
        """Start the W&B run now. An online run that cannot start (no API key; no network, past the settings'
        ``init_timeout``) logs a warning and runs offline instead, to sync later: it failed the whole run after
        preprocessing (dogfood 28), or blocked it for a minute."""
        try:
            self.experiment  # noqa: B018 - the property starts the run
        except Exception as e:  # wandb's UsageError (no key), CommError (no network)
            if self._wandb_init.get("mode") == "offline":
                raise
            log.warning(
                "W&B could not start an online run (%s): logging offline instead; sync it later with "
                "wandb sync",
                one_line(e),
            )
            self._wandb_init["mode"] = "offline"
            self._experiment = None
            self.experiment  # noqa: B018


def finish(logger, *, error: BaseException | None = None) -> None:
    """End the W&B run whether training succeeded or not: every multirun job must be its own W&B run, and a
    failed job is marked failed instead of staying open, with its one-line ``error`` in the run's summary (a
    backtest's skipped window, or a sweep's failed job, read as an empty run without it: dogfood 106)."""
    if isinstance(logger, _LightningWandbLogger):
        import wandb

        if error is not None and wandb.run is not None:
            wandb.run.summary["error"] = (
                f"{type(error).__name__}: {one_line(error)}"  # KeyError('label'): 'label'
            )
        wandb.finish(exit_code=1 if error is not None else 0)
        if getattr(logger, "set_mode", False):
            os.environ.pop("WANDB_MODE", None)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + "/")
        elif is_number(v):
            out[key] = float(v)
    return out


def log_run(logger, metrics: dict[str, Any], predictions: dict[str, pl.DataFrame], run_dir: Path) -> None:
    flat = {f"final/{k}": v for k, v in flatten({s: metrics[s] for s in ("val", "test")}).items()}
    logger.log_metrics(flat)
    if not isinstance(logger, _LightningWandbLogger):
        logger.finalize("success")
        return
    import wandb

    run = logger.experiment
    # WANDB_MODE=disabled: the artifact below still copied the checkpoint into $HOME (dogfood 49).
    if getattr(run, "disabled", False):
        return
    test = predictions["test"]
    y = test[S.LABEL].to_numpy()
    p = test[S.SCORE].to_numpy()
    precision, recall, _ = precision_recall_curve(y, p)
    keep = np.unique(np.linspace(0, len(recall) - 1, min(len(recall), 500)).astype(int))
    table = wandb.Table(
        data=[[float(recall[i]), float(precision[i])] for i in keep], columns=["recall", "precision"]
    )
    run.log(
        {
            "test/pr_curve": wandb.plot.line(table, "recall", "precision", title="test PR curve"),
            "test/score_histogram": wandb.Histogram(p.tolist()),
        }
    )
    # The kept model's, where a stacked run's sequence part logged its epochs' (dogfood 175: a sweep sorted by
    # val/pr_auc ranked stacked runs by a part they may not keep).
    run.summary.update(flat | {"val/pr_auc": metrics["val"]["pr_auc"]})
    artifact = wandb.Artifact(
        f"model-{run.id}", type="model", metadata={"val_pr_auc": metrics["val"]["pr_auc"]}
    )
    # A stacked run's LightGBM and its choice too (dogfood 175: the default model's artifact held the GRU alone).
    for name in (
        rundir.SPEC_FILE,
        rundir.CHECKPOINT,
        rundir.METRICS_FILE,
        STACKER_FILE,
        rundir.STACKING_REPORT,
    ):
        if (run_dir / name).exists():
            artifact.add_file(str(run_dir / name), name=name)
    run.log_artifact(artifact)
