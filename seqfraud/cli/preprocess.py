"""``seqfraud preprocess [key=value ...]``: validate, split and tokenize an event log into a run directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.config import check_keys, plain
from seqfraud.preprocess import preprocess


@hydra_command(config_path=CONFIG_PATH, config_name="preprocess")
def preprocess_task(cfg: DictConfig) -> None:
    # The training config's keys, checked as train.py checks them: an unknown one here was taken without a word.
    settings = OmegaConf.to_container(cfg, resolve=False)  # names, not values: nothing to resolve
    assert isinstance(settings, dict)
    check_keys({str(k): v for k, v in settings.items()})
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
