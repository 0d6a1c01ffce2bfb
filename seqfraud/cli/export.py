"""``seqfraud export run_dir=RUN out=ARTIFACT [key=value ...]``: export a trained run to a serving artifact."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from seqfraud.cli import CONFIG_PATH, run_hydra
from seqfraud.cli.hydra_main import hydra_command
from seqfraud.config import out_of_range, packaged, plain, unknown_key
from seqfraud.errors import ConfigError


@hydra_command(config_path=CONFIG_PATH, config_name="export")
def export_task(cfg: DictConfig) -> None:
    settings = plain(cfg)
    # A misspelt key was taken without a word: +calibrations=isotonic exported Platt's, +sign_keys=K an unsigned
    # artifact (dogfood 159). Thresholds' keys are their policies' own, checked where they are read.
    reference = {k: v for k, v in packaged("export.yaml").items() if k != "hydra"} | {"thresholds": None}
    if wrong := unknown_key(settings, reference) or out_of_range(settings):
        raise ConfigError(wrong)  # parity_sessions=0 blamed the validation split (dogfood 55)
    if not (isinstance(cfg.compiled_step, bool) or cfg.compiled_step == "auto"):
        raise ConfigError(f"compiled_step must be auto, true or false, got {cfg.compiled_step!r}")
    from seqfraud.export.exporter import export_run  # after the checks (hydra_main._job)

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
