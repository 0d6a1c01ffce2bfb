"""Export a trained run to a serving artifact: ``python export.py run_dir=RUN out=ARTIFACT``."""

from omegaconf import DictConfig, OmegaConf

from seqfraud.errors import hydra_command
from seqfraud.export.exporter import export_run


@hydra_command(config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    out = export_run(
        cfg.run_dir, cfg.out, formats=list(cfg.formats), overwrite=cfg.overwrite, events=cfg.events,
        tolerance=cfg.tolerance, parity_sessions=cfg.parity_sessions,
        thresholds=OmegaConf.to_container(cfg.thresholds, resolve=True), calibration=cfg.calibration,
        sign_key=cfg.sign_key,
    )
    print(out)


if __name__ == "__main__":
    main()
