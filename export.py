"""Export a trained run to a serving artifact: ``python export.py run_dir=RUN out=ARTIFACT``."""

import hydra
from omegaconf import DictConfig

from seqfraud.export.exporter import export_run


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    out = export_run(
        cfg.run_dir, cfg.out, formats=list(cfg.formats), overwrite=cfg.overwrite, events=cfg.events,
        tolerance=cfg.tolerance, parity_sessions=cfg.parity_sessions,
        review_fpr=cfg.thresholds.review_fpr, decline_fpr=cfg.thresholds.decline_fpr,
    )
    print(out)


if __name__ == "__main__":
    main()
