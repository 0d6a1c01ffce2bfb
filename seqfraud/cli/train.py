"""``seqfraud train [+experiment=NAME] [key=value ...]``: train a session-risk model under Hydra."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.config import SEQUENCE_FIT
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
    if cfg.model.get("kind") == "lightgbm":  # ran without a word (dogfood 64)
        unread = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith(SEQUENCE_FIT)]
        if unread:
            log.warning("model=lightgbm fits no sequence model, so %s change(s) nothing", " ".join(unread))
    keep_what_was_set(cfg, HydraConfig.get().overrides.task)
    metrics = train(cfg)
    if metrics and _searching() and stacking_kept(cfg.paths.output_dir) == "aggregates":
        # Then the objective is LightGBM's alone: every trial scores the same, and "best parameters" mean nothing.
        log.warning(
            "the stacker kept the aggregates alone, so this trial's validation PR-AUC does not depend on the "
            "sequence model's settings being searched: search them with model=small (or another sequence "
            "preset), then train model=stacked with the best of them"
        )
    return metrics["val"].get("pr_auc") if metrics else None


def _searching() -> bool:
    """Whether this run is a trial of an Optuna search (hparams_search=optuna)."""
    return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra(train_task, argv)
