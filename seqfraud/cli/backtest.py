"""``seqfraud backtest [+experiment=NAME] backtest.windows=K backtest.window_days=D ...``: retrain per window."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command


@hydra_command(config_path=CONFIG_PATH, config_name="backtest")
def backtest_task(cfg: DictConfig) -> None:
    from seqfraud.backtest import RESULT_FILES, run_backtest  # once composed (hydra_main._job)

    run_backtest(cfg)
    out = Path(cfg.paths.output_dir)
    print((out / "backtest.md").read_text())
    print(f"backtest: {', '.join(str(out / f) for f in RESULT_FILES)}")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra(backtest_task, argv)
