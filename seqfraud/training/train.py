"""``train(cfg)``: preprocess, fit, evaluate the best checkpoint out of time, and write the run directory.

The run directory then holds everything later steps need: ``spec.json``, ``checkpoints/best.ckpt``,
``metrics.json``, ``predictions/{val,test}.parquet`` and ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seqfraud import schema as S
from seqfraud.metrics import classification_metrics, per_group_metrics
from seqfraud.models.sequence import ModelConfig, SessionClassifier
from seqfraud.preprocess import preprocess, resolve_data_config
from seqfraud.training.data import LoaderConfig, TokenDataset, collate, make_loader
from seqfraud.training.module import SessionRiskModule

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/best.ckpt"
METRICS_FILE = "metrics.json"
PREDICTIONS_DIR = "predictions"


@torch.no_grad()
def predict_proba(net: SessionClassifier, ds: TokenDataset, batch_size: int = 1024) -> np.ndarray:
    """Probabilities in dataset order."""
    net.eval()
    loader = make_loader(ds, LoaderConfig(eval_batch_size=batch_size), train=False, seed=0)
    out = np.zeros(len(ds), dtype=np.float32)
    for batch in loader:
        out[batch["index"].numpy()] = torch.sigmoid(net(batch["tokens"], batch["lengths"]).float()).numpy()
    return out


def model_config(model_cfg: dict, spec, exclude: list[str]) -> ModelConfig:
    """Sizes from the preset, vocabulary sizes and field list from the fitted spec."""
    unknown = sorted(set(exclude) - set(spec.fields))
    if unknown:
        raise ValueError(f"features.exclude names unknown field(s) {unknown}; fields are {list(spec.fields)}")
    return ModelConfig(
        vocab_sizes=[spec.vocab_size(f) for f in spec.fields], max_len=spec.max_len,
        use_fields=[f not in exclude for f in spec.fields], **model_cfg,
    )


def load_typologies(path: str | None) -> pl.DataFrame | None:
    if not path or not Path(path).exists():
        return None
    return pl.read_parquet(path).select(pl.col(S.SESSION_ID).cast(pl.String), pl.col(S.TYPOLOGY))


def evaluate(pred: pl.DataFrame, metrics_cfg: dict, typologies: pl.DataFrame | None) -> dict[str, Any]:
    """Overall metrics, plus per-typology ones when the generator's typologies are known."""
    out: dict[str, Any] = classification_metrics(pred[S.LABEL], pred[S.SCORE], **metrics_cfg)
    if typologies is not None:
        joined = pred.join(typologies, on=S.SESSION_ID, how="left").with_columns(pl.col(S.TYPOLOGY).fill_null("?"))
        out["per_typology"] = per_group_metrics(joined[S.LABEL], joined[S.SCORE], joined[S.TYPOLOGY], **metrics_cfg)
    return out


def build_logger(cfg: DictConfig, run_dir: Path):
    if not cfg.get("logger"):
        return False
    return instantiate(cfg.logger)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model; returns the metrics dict (``val/pr_auc`` is what sweeps optimize)."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    data_cfg = resolve_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    features = OmegaConf.to_container(cfg.features, resolve=True)
    prepared = preprocess(data_cfg, features, run_dir)
    spec = prepared.spec
    datasets = {
        name: TokenDataset(path, spec.fields, shuffle_order=features.get("shuffle_order", False), seed=cfg.seed)
        for name, path in prepared.datasets.items()
    }
    model_cfg = model_config(OmegaConf.to_container(cfg.model, resolve=True), spec, features.get("exclude", []))
    metrics_cfg = OmegaConf.to_container(cfg.metrics, resolve=True)
    module = SessionRiskModule(model=model_cfg.to_dict(), optim=OmegaConf.to_container(cfg.optim, resolve=True),
                               loss=OmegaConf.to_container(cfg.loss, resolve=True), metrics=metrics_cfg,
                               spec=spec.to_dict())
    loader_cfg = LoaderConfig(**OmegaConf.to_container(cfg.loader, resolve=True))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = build_logger(cfg, run_dir)
    trainer = L.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger, callbacks=callbacks,
                        default_root_dir=str(run_dir))
    trainer.fit(module, make_loader(datasets["train"], loader_cfg, train=True, seed=cfg.seed),
                make_loader(datasets["val"], loader_cfg, train=False, seed=cfg.seed))

    best_path = run_dir / CHECKPOINT
    best = SessionRiskModule.load_from_checkpoint(best_path, map_location="cpu") if best_path.exists() else module
    typologies = load_typologies(data_cfg.get("typologies"))
    (run_dir / PREDICTIONS_DIR).mkdir(exist_ok=True)
    metrics: dict[str, Any] = {"epochs": trainer.current_epoch, "best_checkpoint": str(best_path)}
    predictions = {}
    for name in ("val", "test"):
        ds = datasets[name]
        pred = pl.DataFrame({S.SESSION_ID: ds.session_ids, S.LABEL: ds.labels.astype(np.int8),
                             S.SCORE: predict_proba(best.net.cpu(), ds, loader_cfg.eval_batch_size)})
        pred.write_parquet(run_dir / PREDICTIONS_DIR / f"{name}.parquet")
        predictions[name] = pred
        metrics[name] = evaluate(pred, metrics_cfg, typologies)
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    log.info("val PR-AUC %.4f, test PR-AUC %.4f", metrics["val"]["pr_auc"], metrics["test"]["pr_auc"])
    if logger:
        from seqfraud.training.wandb_report import log_run

        log_run(logger, metrics, predictions, run_dir)
    return metrics
