"""``seqfraud train [+experiment=NAME] [key=value ...]``: train a session-risk model under Hydra."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.training.train import train


@hydra_command(config_path=CONFIG_PATH, config_name="train")
def train_task(cfg: DictConfig) -> float | None:
    """Returns the validation PR-AUC, the objective of a Hydra sweep (ranks other than 0 and pretraining runs,
    which have no PR-AUC, report nothing)."""
    metrics = train(cfg)
    return metrics["val"].get("pr_auc") if metrics else None


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra(train_task, argv)
