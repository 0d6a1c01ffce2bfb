"""A thin LightningModule around :class:`SessionClassifier`: loss, optimizer schedule and metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from seqfraud.errors import ConfigError
from seqfraud.metrics import classification_metrics
from seqfraud.models.pretrain import PretrainNet
from seqfraud.models.sequence import ModelConfig, SessionClassifier

LOSSES = ("bce", "focal")


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = torch.exp(-bce)
    weight = alpha * labels + (1 - alpha) * (1 - labels)
    return (weight * (1 - p_t) ** gamma * bce).mean()


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class SessionRiskModule(pl.LightningModule):
    """Hyperparameters are plain dicts, so a checkpoint alone rebuilds the model (no nn.Module in hparams)."""

    def __init__(self, model: dict, optim: dict, loss: dict, metrics: dict, spec: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = SessionClassifier(ModelConfig(**model))
        self._outputs: dict[str, list] = {}

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(tokens, lengths)

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.hparams["loss"]
        if cfg["name"] not in LOSSES:
            raise ValueError(f"loss.name must be one of {LOSSES}, got {cfg['name']!r}")
        if cfg["name"] == "focal":
            return focal_loss(logits, labels, cfg.get("gamma", 2.0), cfg.get("alpha", 0.25))
        pos_weight = torch.tensor(float(cfg.get("pos_weight", 1.0)), device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)

    def model_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["tokens"], batch["lengths"])
        loss = self.loss_fn(logits.float(), batch["labels"])
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=stage == "train",
            batch_size=len(logits),
            on_step=stage == "train",
            on_epoch=True,
            sync_dist=True,
        )
        if stage != "train":
            out = self._outputs.setdefault(stage, [])
            out.append((torch.sigmoid(logits.float()).detach().cpu(), batch["labels"].cpu()))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def _epoch_metrics(self, stage: str) -> None:
        """Metrics of the whole split: under DDP every rank gathers all ranks' outputs, so the checkpoint and
        early-stopping monitor is the global value, identical on every rank."""
        outputs = self._outputs.pop(stage, [])
        if self.trainer.sanity_checking:
            return
        prob, lab = (torch.cat(t).numpy() for t in zip(*outputs)) if outputs else (np.zeros(0), np.zeros(0))
        if self.trainer.world_size > 1:
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, (prob, lab))  # pickled: gloo-safe, sizes may differ
            prob, lab = (np.concatenate(t) for t in zip(*gathered))
        if not len(lab):
            return
        # Scores that are not numbers: sklearn's metrics failed on them with "Input contains NaN" (dogfood 125).
        if not np.isfinite(prob).all():
            raise ConfigError(
                f"training diverged: {int((~np.isfinite(prob)).sum()):,} of the {len(prob):,} {stage} scores are "
                f"not numbers after epoch {self.current_epoch}: lower optim.lr (now {self.hparams['optim']['lr']})"
                + (
                    ""
                    if str(self.trainer.precision).startswith(("32", "64"))
                    else f", or train in full precision (trainer.precision=32-true, not {self.trainer.precision})"
                )
            )
        metrics = classification_metrics(lab, prob, **self.hparams["metrics"])
        for k, v in metrics.items():
            if k not in ("n", "positives"):
                # Already identical on every rank: "max" syncs without changing the value.
                self.log(f"{stage}/{k}", v, prog_bar=k == "pr_auc", sync_dist=True, reduce_fx="max")

    def on_validation_epoch_start(self) -> None:
        self._outputs.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def configure_optimizers(self) -> Any:
        return adamw_warmup_cosine(self, self.hparams["optim"])


def adamw_warmup_cosine(module: pl.LightningModule, cfg: dict) -> dict[str, Any]:
    """AdamW (no decay on biases, norms, embeddings and positions), linear warm-up, then cosine to a floor."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        (no_decay if p.ndim < 2 or "embed" in name or "position" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.get("weight_decay", 0.01)},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg["lr"],
        betas=tuple(cfg.get("betas", (0.9, 0.98))),
    )
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    warmup = int(cfg.get("warmup_fraction", 0.05) * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, warmup, total, cfg.get("min_lr_ratio", 0.05))
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class PretrainModule(pl.LightningModule):
    """:class:`~seqfraud.models.pretrain.PretrainNet` under Lightning: labels are never read; ``val/loss`` (the
    objectives' sum on the validation sessions) is what checkpoints and early stopping watch. Batches that carry
    ``group`` (``pretrain.positives=entity``) also count their entity positives: ``{stage}/entity_pairs``, the
    pairs of distinct sessions of one group, summed over the epoch and the ranks."""

    def __init__(self, model: dict, optim: dict, pretrain: dict, spec: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        # positives and entity choose the batches' groups: the data's business, not the network's.
        options = {k: v for k, v in pretrain.items() if k not in ("objectives", "positives", "entity")}
        if "crop" in options:
            options["crop"] = tuple(options["crop"])
        self.net = PretrainNet(ModelConfig(**model), list(pretrain["objectives"]), **options)

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        group = batch.get("group")
        losses = self.net(batch["tokens"], batch["lengths"], group)
        if group is not None:
            # Pairs from the equality matrix, not unique(): no host sync on an accelerator.
            pairs = ((group[:, None] == group[None, :]).sum() - len(group)) / 2
            self.log(
                f"{stage}/entity_pairs",
                pairs,
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                sync_dist=True,
                batch_size=len(group),
            )
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                prog_bar=name == "loss",
                batch_size=len(batch["lengths"]),
                on_step=stage == "train",
                on_epoch=True,
                sync_dist=True,
            )
        return losses["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.step(batch, "val")

    def configure_optimizers(self) -> Any:
        return adamw_warmup_cosine(self, self.hparams["optim"])
