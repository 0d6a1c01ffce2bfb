"""``seqfraud train [+experiment=NAME] [key=value ...]``: train a session-risk model under Hydra."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.config import SEQUENCE_FIT, TRANSFORMER_KEYS
from seqfraud.rundir import stacking_kept

log = logging.getLogger(__name__)


@hydra_command(config_path=CONFIG_PATH, config_name="train")
def train_task(cfg: DictConfig) -> float | None:
    """Returns the validation PR-AUC, the objective of a Hydra sweep (ranks other than 0 and pretraining runs,
    which have no PR-AUC, report nothing)."""
    # Imported once Hydra has composed the settings (hydra_main._job): Lightning's import takes 5 to 8 s.
    from seqfraud.training.train import keep_what_was_set, train

    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    if Path(cfg.paths.output_dir).resolve() != hydra_dir.resolve():
        # Two dogfoods set both and found their run in one place and its log in another.
        log.warning(
            "paths.output_dir=%s is not this run's Hydra directory %s: the run's outputs go to the first, its "
            "train.log and .hydra/ config to the second. Set hydra.run.dir alone: paths.output_dir follows it",
            cfg.paths.output_dir,
            hydra_dir,
        )
    overrides = HydraConfig.get().overrides.task
    if cfg.model.get("kind") == "lightgbm":  # ran without a word (dogfood 64)
        unread = [o for o in overrides if o.lstrip("+~").startswith(SEQUENCE_FIT)]
        if unread:
            log.warning("model=lightgbm fits no sequence model, so %s change(s) nothing", " ".join(unread))
    elif cfg.model.get("encoder") == "gru":  # an Optuna trial's model.local_kernel=3, unsaid (dogfood 196)
        transformer = tuple(f"model.{k}=" for k in TRANSFORMER_KEYS)
        unread = [o for o in overrides if o.lstrip("+~").startswith(transformer)]
        if unread:
            log.warning(
                "a GRU encoder reads no transformer setting, so %s change(s) nothing", " ".join(unread)
            )
    keep_what_was_set(cfg, overrides)
    metrics = train(cfg)
    if metrics and (swept := _unread_in_sweep()) and stacking_kept(cfg.paths.output_dir) == "aggregates":
        # Then the objective is LightGBM's alone: every job scores the same, and "best parameters" mean nothing; a
        # grid sweep's jobs too (dogfood 193: model.d_model=32,64 ranked both first, unsaid).
        log.warning(
            "the stacker kept the aggregates alone, so this job's validation PR-AUC does not depend on the "
            "sequence model's settings it sweeps (%s): sweep them with model=small (or another sequence preset), "
            "then train model=stacked with the best of them",
            swept,
        )
    return metrics["val"].get("pr_auc") if metrics else None


def _unread_in_sweep() -> str:
    """A sweep job's settings of the sequence model alone (an Optuna trial's searched ones, or a multirun job's
    overrides of them), which a stacker that kept the aggregates alone never reads; empty outside a sweep."""
    hydra = HydraConfig.get()
    if "optuna" in str(hydra.sweeper.get("_target_", "")).lower():
        return "hydra.sweeper.params"
    if hydra.mode != RunMode.MULTIRUN:
        return ""
    sequence = (*SEQUENCE_FIT, "model.")
    return " ".join(
        o
        for o in hydra.overrides.task
        if o.lstrip("+~").startswith(sequence)
        and not o.lstrip("+~").startswith(("model.stacking", "model.kind"))
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra(train_task, argv)
