"""Training throughput (sequences per second) of a model preset, through the real training loop.

    python benchmarks/train_throughput.py --model small --sessions 20000 --epochs 2

Times every optimizer step (forward, backward, step, including batch collation) with a Lightning callback
and reports the median sequences/s and padding overhead over all steps after the first 10.
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


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []
        self.fill: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        n = len(batch["lengths"])
        self.rates.append(n / (time.perf_counter() - self._t0))
        self.fill.append(float(batch["lengths"].sum()) / batch["tokens"].shape[0] / batch["tokens"].shape[1])


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
        cfg = compose("train", overrides=[
            f"model={args.model}", f"data.synthetic.sessions={args.sessions}", f"trainer.max_epochs={args.epochs}",
            f"paths.data_dir={args.work / 'data'}", f"paths.output_dir={args.work / args.model}", "logger=none",
            "trainer.enable_progress_bar=false", "~callbacks.early_stopping", *args.overrides])
    train(cfg, extra_callbacks=[timer])
    steps = timer.rates[10:]
    print(f"model={args.model} batch={cfg.loader.batch_size} sessions={args.sessions} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} cpu={platform.processor() or platform.machine()}")
    print(f"median {statistics.median(steps):.0f} sequences/s over {len(steps)} steps "
          f"(p10 {statistics.quantiles(steps, n=10)[0]:.0f}, p90 {statistics.quantiles(steps, n=10)[-1]:.0f}); "
          f"median batch fill (real tokens / padded tokens) {statistics.median(timer.fill):.2f}")


if __name__ == "__main__":
    main()
