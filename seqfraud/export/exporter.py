"""``export_run``: a trained run directory to a serving artifact that has shown it scores like the run.

The artifact is built in a temporary directory beside ``out`` and renamed into place only after every
check passed, so a failed export leaves nothing half-written. This module reads the checkpoint through
Lightning; serving never imports it (see :mod:`seqfraud.export.artifact`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from seqfraud import __version__
from seqfraud import schema as S
from seqfraud.data.events import DataValidationError, scan_table
from seqfraud.export.artifact import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    FORMATS,
    MANIFEST_FILE,
    SPEC_FILE,
    file_entries,
    input_schema,
    open_artifact,
    sha256,
)
from seqfraud.features.spec import Spec
from seqfraud.preprocess import DATA_DIR
from seqfraud.scoring.batch import iter_scores
from seqfraud.scoring.scorer import Scorer
from seqfraud.training.data import TokenDataset, collate
from seqfraud.training.module import SessionRiskModule
from seqfraud.training.train import CHECKPOINT, METRICS_FILE, PREDICTIONS_DIR

log = logging.getLogger(__name__)

PARITY_BATCH = 64


class ExportError(RuntimeError):
    """The run cannot be exported, or the exported model does not reproduce it."""


class ProbabilityModel(nn.Module):
    """The exported forward contract, the same in every format.

    ``forward(tokens, lengths) -> probabilities``:

    - ``tokens``: int64 ``[B, L, F]``; ``tokens[b, t, f]`` is the id of field ``f`` (the spec's field order,
      ``input_schema.token_fields`` in the manifest) of session ``b``'s ``t``-th kept event, oldest first,
      right-padded with 0 after ``lengths[b]``;
    - ``lengths``: int64 ``[B]``, ``1 <= lengths[b] <= L <= max_len``;
    - returns float32 ``[B]``: ``sigmoid`` of the classifier's logit, so no runtime adds math of its own.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return torch.sigmoid(self.net(tokens, lengths))


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] = tuple(FORMATS),
    review_fpr: float = 0.01,
    decline_fpr: float = 0.001,
    tolerance: float = 1e-5,
    parity_sessions: int = 1024,
    events: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``run_dir`` to the artifact directory ``out`` and return its path.

    Fails with :class:`ExportError` unless every format matches the eager model on validation batches
    and the scorer, fed the raw events of the test sessions (``events``, default the run's
    ``data.events``), reproduces ``predictions/test.parquet``, both within ``tolerance``.
    """
    run_dir, out = Path(run_dir), Path(out)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(f"unknown or no model formats {list(formats)}; formats are {sorted(FORMATS)}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; choose another out or set overwrite=true")
    spec, module, ckpt_sha = read_run(run_dir)
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    thresholds = decision_thresholds(pl.read_parquet(run_dir / PREDICTIONS_DIR / "val.parquet"),
                                     review_fpr, decline_fpr)
    run_id = f"{run_dir.resolve().name}-{ckpt_sha[:12]}"
    model = ProbabilityModel(module.net).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is for a serving user to read
        (tmp / SPEC_FILE).write_text(spec.to_json())
        for fmt in formats:
            try:
                FORMATS[fmt].save(model, spec, tmp / FORMATS[fmt].file)
            except Exception as e:  # tracing and scripting fail with their own error types
                raise ExportError(f"cannot export the model to {fmt}: {str(e).strip().splitlines()[0]} "
                                  f"(export other formats with formats=[...])") from e
        loaded = {fmt: FORMATS[fmt].load(tmp / FORMATS[fmt].file)[0] for fmt in formats}
        parity = {"tolerance": tolerance,
                  "validation": check_model_parity(model, loaded, run_dir, spec, tolerance, parity_sessions)}
        scorer = Scorer(loaded[formats[0]], spec, {k: thresholds[k] for k in ("review", "decline")},
                        model_version=run_id)
        parity["end_to_end"] = check_end_to_end(scorer, run_dir, events, tolerance) | {"format": formats[0]}
        manifest = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "run_id": run_id,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {"run_dir": str(run_dir.resolve()), "checkpoint_sha256": ckpt_sha},
            "versions": {"seqfraud": __version__, "torch": torch.__version__, "polars": pl.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "input_schema": input_schema(spec),
            "model": dict(module.hparams["model"]),
            "formats": {fmt: FORMATS[fmt].file for fmt in formats},
            "metrics": _finite({split: metrics[split] for split in ("val", "test")}),
            "thresholds": thresholds,
            "parity": parity,
            "files": file_entries(tmp, [SPEC_FILE, *(FORMATS[fmt].file for fmt in formats)]),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, allow_nan=False))
        artifact = open_artifact(tmp)  # what serving will do, before anyone can see the artifact
        for fmt in formats:
            artifact.load_model(fmt)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to %s (formats %s, end-to-end max |diff| %.2g)", run_id, out, list(formats),
             parity["end_to_end"]["max_abs_diff"])
    return out


def read_run(run_dir: Path) -> tuple[Spec, SessionRiskModule, str]:
    """The spec, the best checkpoint's module in eval mode, and the checkpoint's SHA-256."""
    ckpt = run_dir / CHECKPOINT
    for needed in (ckpt, run_dir / SPEC_FILE, run_dir / METRICS_FILE, run_dir / "config.yaml",
                   *(run_dir / PREDICTIONS_DIR / f"{split}.parquet" for split in ("val", "test"))):
        if not needed.is_file():
            raise ExportError(f"{run_dir}: no {needed.relative_to(run_dir)}; export needs a finished "
                              "sequence-model run (python train.py ...)")
    spec = Spec.load(run_dir / SPEC_FILE)
    module = SessionRiskModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    if Spec.from_dict(module.hparams["spec"], source=str(ckpt)).to_dict() != spec.to_dict():
        raise ExportError(f"{ckpt}: the checkpoint was trained with another spec than {run_dir / SPEC_FILE}")
    return spec, module, sha256(ckpt)


def decision_thresholds(val: pl.DataFrame, review_fpr: float, decline_fpr: float) -> dict[str, Any]:
    """Band thresholds at target false-positive rates on the validation negatives.

    Each threshold is the lowest score at which at most ``fpr`` of the validation negatives score at or
    above it: just above the ``floor(fpr * n_negatives) + 1``-th highest negative score.
    """
    if not 0 < decline_fpr <= review_fpr < 1:
        raise ExportError(f"thresholds need 0 < decline_fpr <= review_fpr < 1, got {decline_fpr}, {review_fpr}")
    scores = val[S.SCORE].cast(pl.Float32).to_numpy()
    labels = val[S.LABEL].to_numpy()
    neg, pos = np.sort(scores[labels == 0])[::-1], scores[labels == 1]
    if len(neg) == 0:
        raise ExportError("the validation predictions hold no negatives to set thresholds on")

    def at(fpr: float) -> tuple[float, dict[str, Any]]:
        k = math.floor(fpr * len(neg))
        t = float(np.nextafter(neg[k], np.float32(np.inf))) if k < len(neg) else 0.0
        return t, {"target_fpr": fpr, "fpr": float(np.mean(neg >= t)),
                   "recall": float(np.mean(pos >= t)) if len(pos) else None,
                   "flagged_share": float(np.mean(scores >= t))}

    review, review_stats = at(review_fpr)
    decline, decline_stats = at(decline_fpr)
    return {
        "review": review,
        "decline": decline,
        "bands": "approve: score < review; review: review <= score < decline; decline: score >= decline",
        "method": "lowest score whose false-positive rate on the validation negatives is at most the target",
        "validation": {"negatives": len(neg), "positives": len(pos),
                       "review": review_stats, "decline": decline_stats},
    }


@torch.inference_mode()
def check_model_parity(eager: nn.Module, loaded: dict[str, Any], run_dir: Path, spec: Spec, tolerance: float,
                       n_sessions: int) -> dict[str, Any]:
    """Every loaded format against the eager model on real validation sessions.

    Batches of mixed lengths (padding), plus single-session batches of the shortest and longest.
    """
    ds = TokenDataset(run_dir / DATA_DIR / "val.parquet", spec.fields)
    if len(ds) == 0:
        raise ExportError(f"{run_dir / DATA_DIR / 'val.parquet'}: no validation sessions to check parity on")
    idx = list(range(min(len(ds), n_sessions)))
    by_length = sorted(idx, key=lambda i: ds.lengths[i])
    groups = [idx[s:s + PARITY_BATCH] for s in range(0, len(idx), PARITY_BATCH)]
    groups += [[by_length[0]], [by_length[-1]]]
    worst = dict.fromkeys(loaded, 0.0)
    for group in groups:
        batch = collate([ds[i] for i in group])
        ref = eager(batch["tokens"], batch["lengths"])
        for fmt, model in loaded.items():
            worst[fmt] = max(worst[fmt], float((model(batch["tokens"], batch["lengths"]) - ref).abs().max()))
    bad = {fmt: d for fmt, d in worst.items() if not d <= tolerance}
    if bad:
        raise ExportError(f"exported model(s) differ from the eager model on validation batches by more than "
                          f"{tolerance}: {bad}")
    return {"sessions": len(idx), "batches": len(groups),
            "lengths": [int(ds.lengths[by_length[0]]), int(ds.lengths[by_length[-1]])],
            "max_abs_diff": worst}


def check_end_to_end(scorer: Scorer, run_dir: Path, events: str | None, tolerance: float) -> dict[str, Any]:
    """Score the raw events of the run's test sessions and compare with ``predictions/test.parquet``."""
    expected = pl.read_parquet(run_dir / PREDICTIONS_DIR / "test.parquet")
    if expected.is_empty():
        raise ExportError(f"{run_dir / PREDICTIONS_DIR / 'test.parquet'}: no test predictions to check against")
    path = events or OmegaConf.load(run_dir / "config.yaml").data.events
    try:
        raw, source = scan_table(path)
    except DataValidationError as e:
        raise ExportError(f"end-to-end check: {e}; pass events=PATH to point at the run's raw events") from e
    sid = pl.col(scorer.spec.schema.session_id).cast(pl.String)
    raw = raw.filter(sid.is_in(expected[S.SESSION_ID].implode()))
    got = pl.concat(list(iter_scores(scorer, raw, source, progress=False)))
    joined = expected.join(got.select(S.SESSION_ID, pl.col(S.SCORE).alias("artifact")), on=S.SESSION_ID,
                           how="left")
    if n := joined["artifact"].null_count():
        raise ExportError(f"end-to-end check: {n:,} of {expected.height:,} test sessions have no events in {source}")
    diff = float((joined[S.SCORE] - joined["artifact"]).abs().max())
    if not diff <= tolerance:
        raise ExportError(f"end-to-end check: scoring the raw test events of {source} differs from "
                          f"{PREDICTIONS_DIR}/test.parquet by up to {diff:.3g} (> {tolerance}): train/serve skew")
    return {"sessions": expected.height, "max_abs_diff": diff, "events": str(path)}


def _finite(value: Any) -> Any:
    """NaN metrics (one-class slices) become null: the manifest is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished artifact into place; an old one at ``out`` is replaced only then."""
    old = None
    if out.exists():
        old = tmp.with_name(tmp.name.replace(".partial-", ".old-"))
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
