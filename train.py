"""Train a session-risk model: ``python train.py [+experiment=NAME] [key=value ...]``."""

from omegaconf import DictConfig

from seqfraud.errors import hydra_command
from seqfraud.training.train import train


@hydra_command(config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics["val"]["pr_auc"] if metrics else None  # ranks other than 0 report nothing


if __name__ == "__main__":
    main()
