"""The run directory's layout: the one place that names its files.

Preprocessing writes ``spec.json``, ``data/{split}/``, ``preprocess_report.json`` and, with entity
columns, ``entity_features/``; training adds
``launch.json`` (first), ``config.yaml``, ``checkpoints/best.ckpt``, ``metrics.json`` and
``predictions/{val,test}.parquet``.
A run trained with ``prepared_dir=`` keeps its tokenized data there, and its ``config.yaml`` says so.
Every other module asks this one, so that a file is renamed in one place. Imports nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seqfraud.errors import UserError, first_line

SPEC_FILE = "spec.json"
DATA_DIR = "data"
REPORT_FILE = "preprocess_report.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT = "checkpoints/best.ckpt"
METRICS_FILE = "metrics.json"
STACKING_REPORT = "stacking.json"  # model=stacked: which stacker was kept, and why
PREDICTIONS_DIR = "predictions"
LAUNCH_FILE = "launch.json"  # the latest training launch into the directory, written before any input is read
TRAIN_LOG = "train.log"  # Hydra's job log (train.py's task name): every run has one, finished or not
FOLDS_DIR = "folds"  # model=stacked: the out-of-fold fits, removed once the stacker is fitted
# Per-event entity features of the prepared events, one directory per entity column.
ENTITY_DIR = "entity_features"


def unfinished(run_dir: str | Path) -> list[str]:
    """Which of a trained run's checkpoint, spec and metrics ``run_dir`` lacks: metrics come last, when the fit
    ends, so a run cut short (Ctrl-C) keeps a half-trained checkpoint without them."""
    return [name for name in (CHECKPOINT, SPEC_FILE, METRICS_FILE) if not (Path(run_dir) / name).is_file()]


def dataset(prepared: str | Path, split: str) -> Path:
    """The directory of one split's tokenized shards in a preprocessing output."""
    return Path(prepared) / DATA_DIR / split


def predictions(run_dir: str | Path, split: str) -> Path:
    """A split's ``session_id, label, score`` table, written by training."""
    return Path(run_dir) / PREDICTIONS_DIR / f"{split}.parquet"


def stacking_kept(run_dir: str | Path) -> str | None:
    """Which candidate a stacked run kept (``stacked``, ``aggregates``: LightGBM's scores whatever its sequence
    model's settings, ``sequence``: its sequence model's alone, or ``blend``: the mean of both logits); None for
    other runs."""
    report = Path(run_dir) / STACKING_REPORT
    return json.loads(report.read_text()).get("chosen") if report.is_file() else None


def unlabelled_val_dropped(run_dir: str | Path) -> int:
    """How many unlabelled validation sessions preprocessing left out of the run's validation split (and so of
    its validation predictions, which calibration, the thresholds and the monitor's default score reference read)."""
    report = Path(run_dir) / REPORT_FILE
    return (
        int(json.loads(report.read_text()).get("unlabeled_val_sessions_dropped", 0))
        if report.is_file()
        else 0
    )


def kept_label(model: str, kept: str | None) -> str:
    """The model's name; a stacked run that kept one part alone, or their blend (:func:`stacking_kept`), says
    which, since its scores are that part's: LightGBM's when its sequence model did not win on validation, the
    sequence model's when that beat the stacker."""
    kept_part = {
        "aggregates": "LightGBM alone",
        "sequence": "sequence model alone",
        "blend": "LightGBM blended with its sequence model",
    }.get(kept or "")
    return f"{model} ({kept_part})" if kept_part else model


def prepared_dir(run_dir: str | Path) -> Path:
    """Where a run's spec and tokenized data live: its ``prepared_dir`` if it was trained on one, else itself."""
    from omegaconf import OmegaConf  # a run directory's config is Hydra's; the serving path never calls this

    config = Path(run_dir) / CONFIG_FILE
    prepared = OmegaConf.select(OmegaConf.load(config), "prepared_dir") if config.is_file() else None
    return Path(prepared) if prepared else Path(run_dir)


@contextmanager
def checkpoint_read(path: Path, error: type[UserError]) -> Iterator[None]:
    """Loading a run's checkpoint, where one that does not load (truncated, another file) is ``error`` naming it:
    torch said `Invalid argument` naming no file, or advised loading with ``weights_only=False``, which runs the
    file's code (dogfood 157)."""
    try:
        yield
    except MemoryError:
        raise
    except Exception as e:  # torch and Lightning raise their own types for a damaged file
        why = type(e).__name__ if "weights_only" in str(e) else first_line(e)
        raise error(
            f"{path}: not a readable checkpoint ({why}): damaged, or not a seqfraud run's; train the run again"
        ) from e
