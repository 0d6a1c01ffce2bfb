"""``seqfraud preprocess [key=value ...]``: validate, split and tokenize an event log into a run directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.config import plain
from seqfraud.preprocess import preprocess


@hydra_command(config_path=CONFIG_PATH, config_name="preprocess")
def preprocess_task(cfg: DictConfig) -> None:
    # The training config, checked as train.py checks it (an unknown key, a test_fraction of 0, a pretrain.entity
    # that is no entity column were taken without a word); imported here, so that --help needs no Lightning.
    from seqfraud.training.train import check_settings

    check_settings(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    # What train.py would refuse of these splits, refused here too, before a prepared_dir is written.
    supervised = not cfg.get("pretrain")
    prepared = preprocess(
        plain(cfg.data), plain(cfg.features), out, plain(cfg.preprocess), supervised=supervised
    )
    print(json.dumps(prepared.report, indent=2))


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra(preprocess_task, argv)


if __name__ == "__main__":  # spark-submit runs a file, not a module: docs/scale.md
    main()
