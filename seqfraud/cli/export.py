"""``seqfraud export run_dir=RUN out=ARTIFACT [key=value ...]``: export a trained run to a serving artifact."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.config import out_of_range, plain
from seqfraud.errors import ConfigError
from seqfraud.export.exporter import export_run


@hydra_command(config_path=CONFIG_PATH, config_name="export")
def export_task(cfg: DictConfig) -> None:
    if wrong := out_of_range(plain(cfg)):  # parity_sessions=0 blamed the validation split (dogfood 55)
        raise ConfigError(wrong)
    if not (isinstance(cfg.compiled_step, bool) or cfg.compiled_step == "auto"):
        raise ConfigError(f"compiled_step must be auto, true or false, got {cfg.compiled_step!r}")
    out = export_run(
        cfg.run_dir,
        cfg.out,
        formats=None if cfg.formats is None else list(cfg.formats),
        overwrite=cfg.overwrite,
        events=cfg.events,
        tolerance=cfg.tolerance,
        parity_sessions=cfg.parity_sessions,
        thresholds=plain(cfg.thresholds),
        calibration=cfg.calibration,
        sign_key=cfg.sign_key,
        compiled_step=None if cfg.compiled_step == "auto" else cfg.compiled_step,
    )
    print(out)


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra(export_task, argv)
