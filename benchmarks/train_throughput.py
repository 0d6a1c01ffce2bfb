"""Training throughput (sequences per second) of a model preset, through the real training loop.

    python benchmarks/train_throughput.py --model small --sessions 20000 --epochs 2

Times every training step (forward, backward, optimizer step) with a Lightning callback, on rank 0 under
DDP (all ranks step through equal batch counts, so the total is world size x rank 0's). Reports, per
epoch, sequences / summed step time (batches are length-bucketed, so single steps range from a few long
sessions to many short ones and only the epoch total is a fair rate), the median over epochs, and the
batch fill (real tokens / padded tokens). Also the whole epoch's rate: training sequences / wall time from
the epoch's start to its end, validation and batch loading included, which is what a user waits for.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from seqfraud.training.train import train

ROOT = Path(__file__).resolve().parents[1]


def _sync(module) -> None:
    """GPU steps run asynchronously: wait for them, or the timer measures only the kernel launches."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.epochs: list[tuple[int, float, int, int]] = []  # sequences, seconds, real tokens, padded tokens
        self.walls: list[float] = []  # seconds from each epoch's start to its end, validation included
        self._t0 = self._epoch_t0 = 0.0
        self.world_size = 1

    def on_train_epoch_start(self, trainer, module) -> None:
        self.world_size = (
            trainer.world_size
        )  # every rank steps through as many equal-sized batches as this one
        self.epochs.append((0, 0.0, 0, 0))
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        _sync(module)
        self.walls.append(time.perf_counter() - self._epoch_t0)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        _sync(module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        _sync(module)
        n, secs, real, padded = self.epochs[-1]
        self.epochs[-1] = (
            n + len(batch["lengths"]),
            secs + time.perf_counter() - self._t0,
            real + int(batch["lengths"].sum()),
            padded + batch["tokens"].shape[0] * batch["tokens"].shape[1],
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/throughput")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    timer = StepTimer()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"model={args.model}",
                f"data.synthetic.sessions={args.sessions}",
                f"trainer.max_epochs={args.epochs}",
                f"paths.data_dir={args.work / 'data'}",
                f"paths.output_dir={args.work / args.model}",
                "logger=none",
                "trainer.enable_progress_bar=false",
                "~callbacks.early_stopping",
                *args.overrides,
            ],
        )
    train(cfg, extra_callbacks=[timer])
    rates = [timer.world_size * n / secs for n, secs, _, _ in timer.epochs]
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or platform.machine()
    )
    print(
        f"model={args.model} batch={cfg.loader.batch_size} sessions={args.sessions} torch={torch.__version__} "
        f"threads={torch.get_num_threads()} processes={timer.world_size} precision={cfg.trainer.precision} "
        f"device={device}"
    )
    print("per epoch sequences/s: " + ", ".join(f"{r:.0f}" for r in rates))
    whole = [timer.world_size * n / wall for (n, _, _, _), wall in zip(timer.epochs, timer.walls)]
    print(
        "per epoch sequences/s, whole epoch (loading and validation included): "
        + ", ".join(f"{r:.0f}" for r in whole)
        + f"; median {statistics.median(whole):.0f}"
    )
    print(
        f"median {statistics.median(rates):.0f} sequences/s; batch fill (real / padded tokens) "
        f"{sum(e[2] for e in timer.epochs) / sum(e[3] for e in timer.epochs):.2f}"
    )


if __name__ == "__main__":
    main()
