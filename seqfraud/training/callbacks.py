"""Lightning callbacks of our own, and the known-harmless warnings every run would otherwise print."""

from __future__ import annotations

import logging
import time
import warnings

import pytorch_lightning as L
from torch import nn

log = logging.getLogger(__name__)


class EpochLog(L.Callback):
    """One log line per epoch (train loss, validation metrics, sequences per second), so a run whose output goes
    to a file shows progress: the progress bar renders there only at the end."""

    def __init__(self) -> None:
        self._start = 0.0
        self._sequences = 0
        self.history: list[dict[str, float]] = []  # each epoch's logged metrics (rank 0), ``epoch`` from 1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._sequences = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        self._sequences += len(batch["lengths"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._start  # validation included: what a user waits per epoch
        got = trainer.callback_metrics
        keys = ["train/loss_epoch", *sorted(k for k in got if k.startswith("val/"))]
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        parts += [f"{key} {float(got[key]):.4f}" for key in keys if key in got]
        self.history.append(
            {"epoch": trainer.current_epoch + 1} | {k: float(got[k]) for k in keys if k in got}
        )
        parts.append(f"{self._sequences / seconds:,.0f} seq/s on this rank")
        log.info(", ".join(parts))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Warn of a fit that ran out of epochs while its checkpoint's metric still improved (by 1% or more at the
        last epoch): a dogfood's sequence model was kept from the default that way, its validation ROC-AUC rising
        from 0.57 to 0.76, unsaid; at 30 epochs it caught the fraud LightGBM could not (dogfood 57)."""
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None)
        values = [h[monitor] for h in self.history if monitor in h]
        if not trainer.is_global_zero or len(values) < 2 or len(self.history) < (trainer.max_epochs or 0):
            return
        better = max if getattr(checkpoint, "mode", "min") == "max" else min
        # A rise of under 1% is a fit stuck, not one cut short (dogfood 69: 0.0615 to 0.0619, flat for 11 epochs).
        if abs(values[-1] - values[-2]) > 0.01 * abs(values[-2]) and better(values) == values[-1]:
            log.warning(
                "%s still improved at the last of trainer.max_epochs=%d epochs (%.4f, from %.4f the epoch before): "
                "the model may be undertrained; raise trainer.max_epochs (early stopping then decides)",
                monitor,
                trainer.max_epochs,
                values[-1],
                values[-2],
            )


def silence_known_warnings() -> None:
    """Warnings every run printed that say nothing about this run; each was checked to be harmless here."""
    # SessionStream gives every (rank, worker) slot an exact share, so its length is right with any workers.
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # Lightning's own pytree helper on a newer torch; nothing of ours uses LeafSpec.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning_fabric.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NO_TIPS)


class _NoTips(logging.Filter):
    """Lightning's advertisement for its cloud logger, printed on every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


_NO_TIPS = _NoTips()  # one instance: adding it again is then a no-op


class FreezeEncoder(L.Callback):
    """A pretrained embedding and encoder held fixed for the first ``epochs`` epochs of fine-tuning, so the new
    head learns on stable features before the encoder moves (``freeze_epochs``)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainable = trainer.current_epoch >= self.epochs
        if trainer.current_epoch in (0, self.epochs):  # the log says when it froze and when it let go
            log.info(
                "epoch %d: the pretrained embedding and encoder %s (freeze_epochs=%d)",
                trainer.current_epoch + 1,
                "learn from here" if trainable else "stay fixed while the head learns",
                self.epochs,
            )
        net = pl_module.net
        assert isinstance(net, nn.Module)
        for name, p in net.named_parameters():
            if name.startswith(("embed.", "encoder.")):
                p.requires_grad_(trainable)


def best_epoch(trainer: L.Trainer, callbacks: list) -> dict[str, float] | None:
    """The logged metrics of the epoch the checkpoint kept (by its monitor and mode): what a run that reads
    ``best.ckpt`` should report, not the last epoch's (a pretraining run said val loss 0.2095, its last, while
    its checkpoint held epoch 2 at 0.1817). None without an :class:`EpochLog` or a monitored checkpoint."""
    checkpoint = trainer.checkpoint_callback
    history = next((c.history for c in callbacks if isinstance(c, EpochLog)), [])
    monitor = getattr(checkpoint, "monitor", None)
    seen = [h for h in history if monitor in h]
    if monitor is None or not seen:
        return None
    pick = min if getattr(checkpoint, "mode", "min") == "min" else max
    return pick(seen, key=lambda h: h[monitor])
