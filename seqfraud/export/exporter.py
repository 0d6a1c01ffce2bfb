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
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from seqfraud import reports, rundir
from seqfraud import schema as S
from seqfraud.baselines import STACKER_BLEND, STACKER_FILE, STACKER_FORMAT, Stacker
from seqfraud.calibration import Calibration, CalibrationError, fit_calibration
from seqfraud.config import plain
from seqfraud.data.events import DataValidationError, scan_table
from seqfraud.decisions import DecisionError, choose_thresholds
from seqfraud.errors import UserError, first_line
from seqfraud.export.artifact import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    CALIBRATION_FILE,
    COMPILED_STEP_FILE,
    EMBED_FILES,
    FORMATS,
    MANIFEST_FILE,
    RELIABILITY_FILE,
    SPEC_FILE,
    STEP_FILES,
    CompiledStep,
    canonical_json,
    file_entries,
    input_schema,
    load_compiled_step,
    open_artifact,
    save_compiled_step,
    save_step,
    say_unsigned_artifact,
    sha256,
    sign_artifact,
)
from seqfraud.export.signing import SigningKeyError, load_private_key
from seqfraud.features.fastpath import numpy_sequences, token_tables
from seqfraud.features.spec import Spec
from seqfraud.metrics import classification_metrics, expected_calibration_error
from seqfraud.models.sequence import GRUStep, SessionClassifier, can_step
from seqfraud.preprocess import load_prepared, training_shares
from seqfraud.provenance import versions
from seqfraud.scoring.batch import iter_scores
from seqfraud.scoring.history import History
from seqfraud.scoring.online import CARRIED_STATES, uncarried_note
from seqfraud.scoring.prepare import normalized_events
from seqfraud.scoring.scorer import Scorer
from seqfraud.training.data import collate, read_sessions
from seqfraud.training.module import SessionRiskModule

log = logging.getLogger(__name__)

PARITY_BATCH = 64
# Band thresholds when none are given: review at 1% FPR, decline at 0.1% FPR on validation.
DEFAULT_THRESHOLDS = {"review": {"policy": "fpr", "fpr": 0.01}, "decline": {"policy": "fpr", "fpr": 0.001}}


class ExportError(UserError, RuntimeError):
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


class EmbeddingModel(nn.Module):
    """The exported session embedding (artifact ``embed``): the encoder's pooled state, what the classifier head
    reads and what ``session_embeddings`` gives from the run.

    ``forward(tokens, lengths) -> float32 [B, d_model]``, the inputs of :class:`ProbabilityModel`.
    """

    def __init__(self, net: SessionClassifier):
        super().__init__()
        self.embed, self.encoder = net.embed, net.encoder

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.encoder(self.embed(tokens), lengths)


class ProbabilityStep(nn.Module):
    """The exported step contract of a GRU model (artifact ``step``), for per-event online scoring.

    ``forward(tokens, hidden) -> (probabilities, hidden)``: ``tokens`` int64 ``[B, k, F]`` are ``k`` new events
    of each session, ``hidden`` float32 ``[layers, B, width]`` the state after its earlier events (zeros before
    the first); the probabilities equal :class:`ProbabilityModel`'s on the whole session so far, up to
    ``max_len`` events.
    """

    def __init__(self, net: SessionClassifier):
        super().__init__()
        self.step = GRUStep(net)

    def forward(self, tokens: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        logit, hidden = self.step(tokens, hidden)
        return torch.sigmoid(logit), hidden


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] | None = None,
    thresholds: Mapping[str, Mapping[str, Any]] | None = None,
    calibration: str = "platt",
    tolerance: float = 1e-5,
    parity_sessions: int = 1024,
    events: str | None = None,
    overwrite: bool = False,
    sign_key: str | Path | None = None,
    compiled_step: bool | None = None,
) -> Path:
    """Export ``run_dir`` to the artifact directory ``out`` and return its path.

    Fails with :class:`ExportError` unless every format matches the eager model on validation batches
    and the scorer, fed the raw events of the test sessions (``events``, default the run's
    ``data.events``), reproduces the raw scores of ``predictions/test.parquet``, both within ``tolerance``.

    ``formats`` (names of :data:`FORMATS`; the first is scored end to end): None writes every format the
    model can be saved in, and logs and records in the manifest's ``skipped_formats`` why it skipped
    the others; a format asked for by name that cannot hold the model is an error naming the others.

    ``calibration`` (``isotonic``, ``platt`` or ``none``) is fitted on the validation predictions; the
    band ``thresholds`` (one policy per band, see :func:`seqfraud.decisions.choose_thresholds`; default
    :data:`DEFAULT_THRESHOLDS`) are chosen on the calibrated validation scores, the scale the scorer returns.

    Each format also holds the session embedding (:class:`EmbeddingModel`, the manifest's ``embed``, for
    ``seqfraud embed --artifact``), checked against the eager encoder like the model.

    ``sign_key``, an Ed25519 private key file (``seqfraud sign keygen``), signs the
    manifest; without one the artifact is unsigned, and scorers that require signatures refuse it.

    ``compiled_step``: a GRU model's step also compiled to native code for online events (about 20 s, needs a
    C++ compiler); None where it can be and is run (skipped with a logged reason otherwise), True or an error, False
    never.
    """
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    requested = formats is not None
    # One name is one format: list("torchscript") asked for its letters (dogfood 40).
    formats = list(FORMATS) if formats is None else [formats] if isinstance(formats, str) else list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(f"unknown or no model formats {list(formats)}; formats are {sorted(FORMATS)}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; choose another out or set overwrite=true")
    # Only an earlier artifact, or an empty folder, is replaced: a scores file was lost (dogfood 55).
    empty = out.is_dir() and not any(out.iterdir())
    if out.exists() and not empty and not (out / MANIFEST_FILE).is_file():
        raise ExportError(
            f"{out} is not an artifact (it holds no {MANIFEST_FILE}): overwrite=true replaces an earlier artifact "
            "only; choose another out"
        )
    try:
        private_key = load_private_key(sign_key) if sign_key else None
    except SigningKeyError as e:
        raise ExportError(f"sign_key: {e}") from e
    spec, module, ckpt_sha = read_run(run_dir)
    metrics = json.loads((run_dir / rundir.METRICS_FILE).read_text())
    val = pl.read_parquet(rundir.predictions(run_dir, "val"))
    test = pl.read_parquet(rundir.predictions(run_dir, "test"))
    try:
        calib = fit_calibration(
            calibration, val[S.LABEL].to_numpy(), val[S.SCORE].cast(pl.Float32).to_numpy()
        )
    except CalibrationError as e:
        raise ExportError(f"calibration: {e}") from e
    warn_if_labelled_sample(run_dir, val.height)
    policies = {k: dict(v) for k, v in (thresholds or DEFAULT_THRESHOLDS).items()}
    amounts = session_amounts(policies, val, run_dir, spec, events)
    try:
        chosen = choose_thresholds(val[S.LABEL].to_numpy(), calibrated(calib, val), policies, amounts=amounts)
    except DecisionError as e:
        raise ExportError(f"thresholds: {e}") from e
    run_id = f"{run_dir.resolve().name}-{ckpt_sha[:12]}"
    model = ProbabilityModel(module.net).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is for a serving user to read
        (tmp / SPEC_FILE).write_text(spec.to_json())
        report = calibration_report(calib, val, test)
        warn_if_calibration_hurt(calib, report)
        warn_if_calibration_steps(calib, val)
        (tmp / CALIBRATION_FILE).write_text(
            json.dumps(calib.to_dict() | {"report": report}, indent=2, allow_nan=False)
        )
        plot_reliability(calib, val, test, tmp / RELIABILITY_FILE)
        # An export of the default model ran minutes with nothing said between its first lines and its last
        # (dogfood 273): each step that takes long says what it does.
        log.info("saving the model as %s and checking each against the eager model", ", ".join(formats))
        formats, skipped = save_formats(model, spec, tmp, formats, requested)
        stacker = None
        if (run_dir / STACKER_FILE).exists():  # a model=stacked run: its LightGBM travels as text
            shutil.copyfile(run_dir / STACKER_FILE, tmp / STACKER_FILE)
            # Which candidate it is, a stacker's trees, LightGBM's alone or a blend's, is the run's stacking.json's
            # to say: without it a blend's trees exported as LightGBM alone (review 256).
            if not (run_dir / rundir.STACKING_REPORT).is_file():
                raise ExportError(
                    f"{run_dir}: holds {STACKER_FILE} without {rundir.STACKING_REPORT}, which says how its trees "
                    "combine with the sequence model (a stacker, LightGBM alone, or a blend): export the run "
                    "directory as training left it"
                )
            # Runs before the blend wrote no "chosen" (a stacker's trees, or LightGBM's alone, either way).
            if (kept := rundir.stacking_kept(run_dir)) not in (None, "stacked", "aggregates", "blend"):
                raise ExportError(
                    f"{run_dir / rundir.STACKING_REPORT}: 'chosen' is {kept!r}, which keeps no trees; a run that "
                    f"kept its sequence model alone writes no {STACKER_FILE}"
                )
            stacker = Stacker.from_text((tmp / STACKER_FILE).read_text(), spec, kept == "blend")
            if not stacker.reads_sequence:  # the files below are still written, for embeddings and checks
                log.info(
                    "the stacker kept LightGBM alone: scoring this artifact never runs its sequence model%s",
                    "" if compiled_step else ", whose step is not compiled to native code",
                )
                # Compiling it took 30 s to 2 min of a 3-minute export, and every load warned of the native
                # file (dogfood 177); compiled_step=true still compiles it.
                compiled_step = compiled_step or False
        loaded = {
            fmt: FORMATS[fmt].load(tmp / FORMATS[fmt].file)[0] for fmt in formats
        }  # written just now, by this process
        embedding = EmbeddingModel(module.net).eval()
        embed = save_embeddings(embedding, module.net.config.d_model, spec, tmp, formats)
        parity: dict[str, Any] = {
            "tolerance": tolerance,
            "validation": check_model_parity(model, loaded, run_dir, spec, tolerance, parity_sessions),
            "embed": check_model_parity(
                embedding,
                {fmt: FORMATS[fmt].load(tmp / name)[0] for fmt, name in embed["formats"].items()},
                run_dir,
                spec,
                tolerance,
                parity_sessions,
                what="session embedding",
            ),
        }
        step = save_steps(module.net, spec, tmp, formats, compiled_step) if can_step(module.net) else None
        if step is not None:
            start = torch.zeros(step["layers"], 1, step["width"])
            steps: dict[str, Any] = {
                fmt: FORMATS[fmt].load(tmp / name)[0] for fmt, name in step["formats"].items()
            }
            if "compiled" in step:
                steps["compiled"] = CompiledStep(
                    load_compiled_step((tmp / COMPILED_STEP_FILE).read_bytes()),
                    next(iter(steps.values())),
                    step["compiled"]["max_batch"],
                )
            parity["step"] = {
                name: check_step_parity(model, stepper, start, run_dir, spec, tolerance)
                for name, stepper in steps.items()
            }
            if (stacker is None or stacker.reads_sequence) and (note := uncarried_note(spec)):
                log.warning("%s", note)
        scorer = Scorer(
            loaded[formats[0]],
            spec,
            {k: chosen[k] for k in ("review", "decline")},
            model_version=run_id,
            calibration=calib,
            stacker=stacker,
        )
        log.info(
            "scoring the raw events of the run's %s test sessions as the artifact%s, to match its predictions",
            f"{test.height:,}",
            "" if spec.entity is None else ", against a history of the log's other sessions",
        )
        parity["end_to_end"], featured = check_end_to_end(scorer, run_dir, events, tolerance)
        parity["end_to_end"]["format"] = formats[0]
        early = by_events_seen(scorer, featured, test, run_metrics_config(run_dir) or {})
        train_only = {"train": load_prepared(rundir.prepared_dir(run_dir)).datasets["train"]}
        manifest = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "run_id": run_id,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # How the run was made (threads, its libraries, its inputs' digests: None for runs from before they were
            # recorded); "versions" are the exporting environment's.
            "source": {
                "run_dir": str(run_dir.resolve()),
                "checkpoint_sha256": ckpt_sha,
                "training": metrics.get("provenance"),
            },
            "versions": versions(),
            "input_schema": input_schema(spec),
            "model": dict(module.hparams["model"]),
            "formats": {fmt: FORMATS[fmt].file for fmt in formats},
            "skipped_formats": skipped,
            "embed": embed,
            "metrics": _finite(
                {split: metrics[split] for split in ("val", "test")} | {"test_by_events_seen": early}
            ),
            "metrics_config": run_metrics_config(
                run_dir
            ),  # the operating points (metrics.fpr) the monitor reuses
            # The training events' shares of each number's buckets and of each field's nulls, that scoring
            # compares a file's (or a window's of online events) with.
            "reference": training_shares(train_only, spec),
            "calibration": {
                "method": calib.method,
                "file": CALIBRATION_FILE,
                "reliability_diagram": RELIABILITY_FILE,
                **report,
            },
            "thresholds": chosen,
            "parity": parity,
            "files": file_entries(
                tmp,
                [
                    SPEC_FILE,
                    CALIBRATION_FILE,
                    RELIABILITY_FILE,
                    *(FORMATS[fmt].file for fmt in formats),
                    *embed["formats"].values(),
                    *([STACKER_FILE] if stacker else []),
                    *(step["formats"].values() if step else []),
                    *([COMPILED_STEP_FILE] if step and "compiled" in step else []),
                ],
            ),
        }
        if step is not None:
            manifest["step"] = step
        if stacker is not None:
            manifest["stacker"] = {"file": STACKER_FILE, "format": STACKER_FORMAT} | (
                {"combine": STACKER_BLEND} if stacker.blend else {}
            )
        (tmp / MANIFEST_FILE).write_bytes(canonical_json(manifest))
        if private_key is not None:
            sign_artifact(tmp, private_key)
        # What serving will do, before anyone can see the artifact (an unsigned one is said of `out`, below: its
        # warning named the temporary folder, gone once the export ends: dogfood 125).
        artifact = open_artifact(
            tmp,
            verify_key=private_key.public_key() if private_key is not None else None,
            require_signed=private_key is not None,
            say_unsigned=False,
        )
        for fmt in formats:
            artifact.load_model(fmt)
            artifact.load_embedding(fmt)
        artifact.load_stacker()
        for fmt in step["formats"] if step else []:
            artifact.load_step(fmt)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if artifact.signer is None:
        say_unsigned_artifact(out)
    log.info(
        "exported %s to %s (formats %s%s, end-to-end max |diff| %.2g, %s)",
        run_id,
        out,
        list(formats),
        f", skipped {sorted(skipped)}" if skipped else "",
        parity["end_to_end"]["max_abs_diff"],
        f"signed by key {artifact.signer}" if artifact.signer else "unsigned",
    )
    return out


def read_run(run_dir: Path) -> tuple[Spec, SessionRiskModule, str]:
    """The spec, the best checkpoint's module in eval mode, and the checkpoint's SHA-256."""
    if not run_dir.is_dir():  # said as missing, not as a run without a checkpoint (review 113)
        raise ExportError(f"{run_dir}: no such run directory")
    ckpt = run_dir / rundir.CHECKPOINT
    config = run_dir / rundir.CONFIG_FILE
    run_cfg = OmegaConf.load(config) if config.is_file() else OmegaConf.create()
    if OmegaConf.select(run_cfg, "model.kind") == "lightgbm":
        raise ExportError(
            f"{run_dir}: a model=lightgbm run holds no sequence model to export (nor does one with "
            "model.embeddings, which trains offline only). To serve LightGBM on the aggregates, train model=stacked: "
            "its LightGBM keeps the sequence model's score only where it helps on validation, and it exports and "
            "serves like any run"
        )
    if OmegaConf.select(run_cfg, "pretrain"):
        raise ExportError(
            f"{run_dir}: a pretraining run holds an encoder, not a classifier: fine-tune it "
            f"(python train.py init_from={run_dir} ...) and export that run; `seqfraud embed --run` reads it as is"
        )
    for needed in (
        ckpt,
        run_dir / rundir.SPEC_FILE,
        run_dir / rundir.METRICS_FILE,
        run_dir / rundir.CONFIG_FILE,
        *(rundir.predictions(run_dir, split) for split in ("val", "test")),
    ):
        if not needed.is_file():
            raise ExportError(
                f"{run_dir}: no {needed.relative_to(run_dir)}; export needs a finished "
                "sequence-model run (python train.py ...)"
            )
    if OmegaConf.select(run_cfg, "features.shuffle_order", default=False):
        raise ExportError(
            f"{run_dir}: an order-shuffled ablation (features.shuffle_order=true) is not a servable "
            "model: it was trained and evaluated on sessions with their events shuffled, and a scorer "
            "reads events in time order; export a run trained with features.shuffle_order=false"
        )
    spec = Spec.load(run_dir / rundir.SPEC_FILE)
    with rundir.checkpoint_read(ckpt, ExportError):
        module = SessionRiskModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    if Spec.from_dict(module.hparams["spec"], source=str(ckpt)).to_dict() != spec.to_dict():
        raise ExportError(
            f"{ckpt}: the checkpoint was trained with another spec than {run_dir / rundir.SPEC_FILE}"
        )
    return spec, module, sha256(ckpt)


def save_formats(
    model: nn.Module, spec: Spec, root: Path, formats: list[str], requested: bool
) -> tuple[list[str], dict[str, str]]:
    """Save ``model`` in each format; the formats written and, unless ``requested``, why the others were skipped.

    Some models cannot be saved in some formats (scripting or tracing refuses them); a format the caller
    named must work, a default one may be skipped as long as one format remains.
    """
    skipped = {}
    for fmt in formats:
        try:
            FORMATS[fmt].save(model, spec, root / FORMATS[fmt].file)
        except Exception as e:  # tracing and scripting fail with their own error types
            reason = first_line(e)
            if requested:
                others = [f for f in FORMATS if f != fmt]
                raise ExportError(
                    f"cannot export the model to {fmt}: {reason}; export formats=[{','.join(others)}] "
                    "instead, or leave formats unset to write every format the model supports"
                ) from e
            log.warning("skipping format %s: cannot export the model to it: %s", fmt, reason)
            (root / FORMATS[fmt].file).unlink(missing_ok=True)  # whatever a failed save left
            skipped[fmt] = reason
    saved = [fmt for fmt in formats if fmt not in skipped]
    if not saved:
        raise ExportError(f"cannot export the model to any format: {skipped}")
    return saved, skipped


def run_metrics_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics`` config (``fpr``, ``recall``): the operating points its metrics were reported at."""
    metrics = OmegaConf.select(OmegaConf.load(run_dir / rundir.CONFIG_FILE), "metrics")
    return plain(metrics)


def calibrated(calib: Calibration, pred: pl.DataFrame) -> np.ndarray:
    """Calibrated float32 scores of a predictions frame, exactly as the scorer computes them."""
    return calib.apply(pred[S.SCORE].cast(pl.Float32).to_numpy()).astype(np.float32)


def calibration_report(calib: Calibration, val: pl.DataFrame, test: pl.DataFrame) -> dict[str, Any]:
    """Brier score and expected calibration error before and after calibration, on val (in sample) and test."""
    out: dict[str, Any] = {"bins": 10}
    for split, pred in (("val", val), ("test", test)):
        y = pred[S.LABEL].to_numpy().astype(np.float64)
        raw = pred[S.SCORE].cast(pl.Float32).to_numpy().astype(np.float64)
        cal = calibrated(calib, pred).astype(np.float64)
        out[split] = {
            "sessions": len(y),
            "positives": int(y.sum()),
            **{
                f"{name}_{stage}": _finite(value)
                for stage, p in (("raw", raw), ("calibrated", cal))
                for name, value in (
                    ("brier", float(np.mean((p - y) ** 2)) if len(y) else math.nan),
                    ("ece", expected_calibration_error(y, p)),
                )
            },
        }
    out["val"]["note"] = "in sample: the calibration was fitted on these predictions"
    return out


def warn_if_calibration_hurt(calib: Calibration, report: dict[str, Any]) -> None:
    """Say when the calibration fitted on validation made the test split's probabilities worse (Brier score):
    a dogfood's Platt fit on 8 validation frauds raised it from 0.0104 to 0.0136 (ECE 0.0018 to 0.0115), and only
    calibration.json showed it. Said, not acted on: choosing the calibration by test would spend the test split.
    Worse by both: a Brier score higher in its fifth decimal, beside an ECE that fell from 0.0117 to 0.0042, was
    said to be worse with both scores printed 0.0113, and advised serving the worse-calibrated one (dogfood 204)."""
    test = report["test"]
    raw, cal = test.get("brier_raw"), test.get("brier_calibrated")
    ece_raw, ece_cal = test.get("ece_raw"), test.get("ece_calibrated")
    ece_worse = ece_raw is None or ece_cal is None or ece_cal >= ece_raw
    if calib.method != "none" and raw is not None and cal is not None and cal > raw * 1.01 and ece_worse:
        log.warning(
            "calibration=%s, fitted on %s validation session(s) with %s fraud(s), made the test split's "
            "probabilities worse: Brier %.4f raw, %.4f calibrated (ECE %.4f, %.4f; %s); to serve the model's own "
            "probabilities, export with calibration=none",
            calib.method,
            f"{report['val']['sessions']:,}",
            f"{report['val']['positives']:,}",
            raw,
            cal,
            test.get("ece_raw") or math.nan,
            test.get("ece_calibrated") or math.nan,
            CALIBRATION_FILE,
        )


# A calibrated score that jumps this much between two neighbouring validation sessions, and this many times their
# gap in raw score (an isotonic fit's steps over wide gaps are none).
STEP_JUMP, STEP_RATIO = 0.5, 20


def warn_if_calibration_steps(calib: Calibration, val: pl.DataFrame) -> None:
    """Say when the calibration is a step where the validation sessions lie: between two sessions next to each
    other in raw score the calibrated score jumps by :data:`STEP_JUMP` or more, and by :data:`STEP_RATIO` times
    their raw gap, so a sliver of the raw score decides the band (dogfood 193: a Platt fit on 7 validation frauds
    read a raw 0.0198 as 0.006 and 0.0232 as 0.97, and nothing said so)."""
    if calib.method == "none":
        return
    raw = np.unique(val[S.SCORE].cast(pl.Float32).to_numpy().astype(np.float64))
    jumps = np.diff(calib.apply(raw))
    steep = np.flatnonzero((jumps >= STEP_JUMP) & (jumps >= STEP_RATIO * np.diff(raw)))
    if len(steep):
        i = int(steep[jumps[steep].argmax()])
        low, high = calib.apply(raw[i : i + 2])
        log.warning(
            "calibration=%s, fitted on %s validation fraud(s), is a step: between two validation sessions next to "
            "each other in raw score (%.4g and %.4g) the calibrated score jumps from %.3f to %.3f, so a sliver of "
            "the raw score decides the band; see %s, and consider calibration=none (the model's own probabilities)",
            calib.method,
            f"{int(val[S.LABEL].sum()):,}",
            raw[i],
            raw[i + 1],
            low,
            high,
            RELIABILITY_FILE,
        )


def plot_reliability(calib: Calibration, val: pl.DataFrame, test: pl.DataFrame, path: Path) -> None:
    """Reliability diagram of the raw and calibrated scores, val (in sample) and test (out of sample)."""
    reports.reliability_png(
        {
            split: (
                pred[S.LABEL].to_numpy(),
                {
                    "raw": pred[S.SCORE].cast(pl.Float32).to_numpy(),
                    f"calibrated ({calib.method})": calibrated(calib, pred),
                },
            )
            for split, pred in (("val (in sample)", val), ("test (out of sample)", test))
        },
        path,
    )


def warn_if_labelled_sample(run_dir: Path, labelled: int) -> None:
    """Log when validation left out unlabelled sessions: calibration and every threshold policy are fitted on
    the labelled ones alone, so where labels are a biased sample of traffic (review queues label suspected
    fraud more often) calibrated rates and capacity thresholds do not hold on all of it (a dogfood's capacity of
    30 per 1,000 flagged 11 per 1,000 of its traffic, and a mean calibrated score of 0.14 met a rate of 0.08)."""
    if left := rundir.unlabelled_val_dropped(run_dir):
        log.warning(
            "calibration and the thresholds are fitted on the %d labelled validation sessions; %d unlabelled ones "
            "were left out. Where labels are a biased sample of traffic, calibrated scores and capacity "
            "thresholds will not hold on all of it: check them on all traffic (docs/risk.md)",
            labelled,
            left,
        )


def session_amounts(
    policies: Mapping[str, Mapping[str, Any]],
    val: pl.DataFrame,
    run_dir: Path,
    spec: Spec,
    events: str | None,
) -> np.ndarray | None:
    """Per validation session, the sum (or the largest: ``amount_of``) of the numerical column a cost policy names
    as ``amount`` (else None)."""
    costs = [p for p in policies.values() if p.get("policy") == "cost" and p.get("amount")]
    if not costs:
        return None
    names = {(str(p["amount"]), p.get("amount_of") or "sum") for p in costs}
    if len(names) > 1:
        raise ExportError(f"thresholds: the cost policies read different amounts {sorted(names)}")
    ((amount, amount_of),) = names
    if amount not in spec.schema.numerical:
        raise ExportError(
            f"thresholds: amount {amount!r} is not a numerical column of the run "
            f"({list(spec.schema.numerical)})"
        )
    path = events or run_input(run_dir, "events") or ""  # none recorded: the error asks for events=PATH
    try:
        raw, _ = scan_table(path, spec.schema, float32_decimal=spec.float32_decimal)
    except DataValidationError as e:
        raise ExportError(f"thresholds: {e}; pass events=PATH to point at the run's raw events") from e
    sid = spec.schema.session_id
    sums = (
        raw.select(pl.col(sid).cast(pl.String).alias(S.SESSION_ID), pl.col(amount).cast(pl.Float64))
        .filter(pl.col(S.SESSION_ID).is_in(val[S.SESSION_ID].implode()))
        .group_by(S.SESSION_ID)
        .agg(
            pl.col(amount).fill_null(0.0).max() if amount_of == "max" else pl.col(amount).fill_null(0.0).sum()
        )
        .collect()
    )
    joined = val.select(S.SESSION_ID).join(sums, on=S.SESSION_ID, how="left")
    # Read as 0, every session's fraud cost nothing, and the thresholds flagged no score (dogfood 120).
    if n := joined[amount].null_count():
        first = joined.filter(pl.col(amount).is_null())[S.SESSION_ID][0]
        raise ExportError(
            f"thresholds: cost policy amount {amount!r}: {n:,} of the {val.height:,} validation sessions have no "
            f"event in {path} (first: {first!r}), so their amounts are unknown: pass events=PATH to the events "
            "the run trained on"
        )
    bad = joined.filter(~pl.col(amount).is_finite() | (pl.col(amount) < 0))
    if bad.height:  # decisions' own check named no column and counted nothing (dogfood 120: a signed ledger)
        raise ExportError(
            f"thresholds: cost policy amount {amount!r}: {bad.height:,} validation session(s) sum to an amount "
            f"below 0 or not finite (first: {bad[S.SESSION_ID][0]!r}, {bad[amount][0]}): the policy reads the "
            "amount at stake, at or above 0; name a column of such amounts (a signed ledger's absolute value)"
        )
    return joined[amount].to_numpy()


def save_embeddings(
    embedding: EmbeddingModel, width: int, spec: Spec, root: Path, formats: list[str]
) -> dict[str, Any]:
    """The session embedding in each of the model's formats (a part of the model, so every format that holds the
    model holds it), and its manifest entry."""
    for fmt in formats:
        try:
            FORMATS[fmt].save(embedding, spec, root / EMBED_FILES[fmt])
        except Exception as e:  # scripting and tracing fail with their own error types
            raise ExportError(f"cannot export the session embedding to {fmt}: {first_line(e)}") from e
    return {"formats": {fmt: EMBED_FILES[fmt] for fmt in formats}, "width": width}


@torch.inference_mode()
def check_model_parity(
    eager: nn.Module,
    loaded: dict[str, Any],
    run_dir: Path,
    spec: Spec,
    tolerance: float,
    n_sessions: int,
    what: str = "model",
) -> dict[str, Any]:
    """Every loaded format of ``what`` against the eager module on real validation sessions.

    Batches of mixed lengths (padding), plus single-session batches of the shortest and longest.
    """
    val = load_prepared(rundir.prepared_dir(run_dir)).datasets["val"]
    ds = read_sessions(val, spec.fields, n_sessions)
    if len(ds) == 0:
        raise ExportError(f"{val}: no validation sessions to check parity on")
    idx = list(range(len(ds)))
    by_length = sorted(idx, key=lambda i: ds.lengths[i])
    groups = [idx[s : s + PARITY_BATCH] for s in range(0, len(idx), PARITY_BATCH)]
    groups += [[by_length[0]], [by_length[-1]]]
    worst = dict.fromkeys(loaded, 0.0)
    for group in groups:
        batch = collate([ds[i] for i in group])
        ref = eager(batch["tokens"], batch["lengths"])
        for fmt, model in loaded.items():
            worst[fmt] = max(worst[fmt], float((model(batch["tokens"], batch["lengths"]) - ref).abs().max()))
    bad = {fmt: d for fmt, d in worst.items() if not d <= tolerance}
    if bad:
        raise ExportError(
            f"exported {what}(s) differ from the eager {what} on validation batches by more than "
            f"{tolerance}: {bad}"
        )
    return {
        "sessions": len(idx),
        "batches": len(groups),
        "lengths": [int(ds.lengths[by_length[0]]), int(ds.lengths[by_length[-1]])],
        "max_abs_diff": worst,
    }


def save_steps(
    net: SessionClassifier, spec: Spec, root: Path, formats: list[str], compiled: bool | None
) -> dict[str, Any]:
    """The step function in each of the model's formats (a format that cannot hold it is skipped with a
    warning: the kept events are then read again for each event), compiled too unless ``compiled`` is False
    (see :func:`export_run`), and its manifest entry."""
    stepper = ProbabilityStep(net).eval()
    layers, width = stepper.step.layers, stepper.step.width
    saved = {}
    for fmt in formats:
        try:
            save_step(stepper, spec, root, fmt, layers, width)
            saved[fmt] = STEP_FILES[fmt]
        except Exception as e:  # noqa: BLE001  # scripting and tracing fail with their own error types
            log.warning("no %s step function: %s", fmt, first_line(e))
            (root / STEP_FILES[fmt]).unlink(missing_ok=True)
    entry: dict[str, Any] = {"formats": saved, "layers": layers, "width": width}
    if compiled and not saved:
        raise ExportError(
            "compiled_step=true: no model format holds the step to compile (see the warnings above)"
        )
    if saved and compiled is not False:
        log.info("compiling the step for online events (compiled_step=false skips it)")
        try:  # an event steps a state per window start in its window, all in one call
            entry["compiled"] = save_compiled_step(stepper, spec, root, layers, width, CARRIED_STATES)
        except Exception as e:  # inductor and the C++ compiler fail with their own error types
            (root / COMPILED_STEP_FILE).unlink(missing_ok=True)
            why = first_line(e)
            if compiled:
                raise ExportError(f"compiled_step=true: the step cannot be compiled here: {why}") from e
            log.warning(
                "no compiled step (online events step through the %s step, slower): %s; it needs a C++ compiler "
                "at export (g++, or $CXX) on x86-64 (docs/serving.md)",
                next(iter(saved)),
                why,
            )
    return entry


def check_step_parity(
    eager: nn.Module,
    step: Any,
    start: Tensor,
    run_dir: Path,
    spec: Spec,
    tolerance: float,
    n_sessions: int = 16,
) -> dict[str, Any]:
    """The step function, fed one event at a time, against the eager model on every prefix of validation
    sessions (the online parity rule: the score after event k is the score of the first k events); ``start`` is
    the state before a session's first event."""
    val = load_prepared(rundir.prepared_dir(run_dir)).datasets["val"]
    ds = read_sessions(val, spec.fields, n_sessions)
    worst, prefixes = 0.0, 0
    with torch.inference_mode():
        for i in range(len(ds)):
            tokens = collate([ds[i]])["tokens"]
            hidden = start
            for k in range(tokens.shape[1]):
                prob, hidden = step(tokens[:, k : k + 1], hidden)
                ref = eager(tokens[:, : k + 1], torch.tensor([k + 1]))
                worst = max(worst, float((prob - ref).abs().max()))
                prefixes += 1
    if not worst <= tolerance:
        raise ExportError(
            f"the step function differs from the whole-session model by {worst:.3g} > {tolerance} on "
            "validation prefixes"
        )
    return {"sessions": len(ds), "prefixes": prefixes, "max_abs_diff": worst}


def run_input(run_dir: Path, key: str) -> str | None:
    """The run's ``data.events`` or ``data.labels``: as its preprocessing recorded them (absolute; a run on a
    ``prepared_dir``, the prepared run's), else, for a run from before that record, as ``config.yaml`` names
    them. The config held the train command's own data settings, which a run on a prepared_dir need not repeat,
    and paths relative to where it ran (dogfoods 39, 41)."""
    prepared = load_prepared(rundir.prepared_dir(run_dir))
    if prepared.inputs_recorded:
        return prepared.input(key)
    return OmegaConf.load(run_dir / rundir.CONFIG_FILE).data.get(key)


def check_end_to_end(
    scorer: Scorer, run_dir: Path, events: str | None, tolerance: float
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Score the raw events of the run's test sessions and compare with ``predictions/test.parquet``; returns
    the check's figures and those events, normalized, with their entity features where the model reads any."""
    expected = pl.read_parquet(rundir.predictions(run_dir, "test"))
    if expected.is_empty():
        raise ExportError(f"{rundir.predictions(run_dir, 'test')}: no test predictions to check against")
    path = events or run_input(run_dir, "events") or ""  # none recorded: the error asks for events=PATH
    try:
        raw, source = scan_table(path, scorer.spec.schema, float32_decimal=scorer.spec.float32_decimal)
    except DataValidationError as e:
        raise ExportError(f"end-to-end check: {e}; pass events=PATH to point at the run's raw events") from e
    sid = pl.col(scorer.spec.schema.session_id).cast(pl.String)
    test_ids = sid.is_in(expected[S.SESSION_ID].implode())
    if scorer.spec.entity is not None:
        # Entity features: the history is every other session of the run's log, and the run's labels, the test
        # sessions' included (those on the events too).
        labels = run_input(run_dir, "labels")
        try:  # a run trained on values its history refuses (review 199: padded entity values, refused since)
            scorer.history = History.from_frame(
                raw.filter(~test_ids),
                source,
                labels,
                scorer.spec,
                labelled=raw,
                scored=expected[S.SESSION_ID],
            )
        except DataValidationError as e:
            raise ExportError(f"end-to-end check: the history of the run's other sessions: {e}") from e
    raw = raw.filter(test_ids)
    # Both token paths: Polars (batch scoring) and numpy (the real-time path of every small request).
    featured = scorer.in_context(normalized_events(raw, scorer.spec, source))
    paths = {
        "polars": pl.concat(list(iter_scores(scorer, raw, source, progress=False))),
        "numpy": scorer.score_sequences(
            numpy_sequences(featured, scorer.spec, token_tables(scorer.spec)), featured
        ),
    }
    diffs = {}
    for name, got in paths.items():
        # The run's predictions are the model's raw probabilities: compare the scorer's raw_score.
        joined = expected.join(
            got.select(S.SESSION_ID, pl.col(S.RAW_SCORE).alias("artifact")), on=S.SESSION_ID, how="left"
        )
        if n := joined["artifact"].null_count():
            raise ExportError(
                f"end-to-end check: {n:,} of {expected.height:,} test sessions have no events in {source}"
            )
        diffs[name] = float((joined[S.SCORE] - joined["artifact"]).abs().max())
        if not diffs[name] <= tolerance:
            raise ExportError(
                f"end-to-end check: scoring the raw test events of {source} ({name} token path) "
                f"differs from {rundir.PREDICTIONS_DIR}/test.parquet by up to {diffs[name]:.3g} "
                f"(> {tolerance}): train/serve skew"
            )
    return {
        "sessions": expected.height,
        "max_abs_diff": max(diffs.values()),
        "token_paths": diffs,
        "events": str(path),
    }, featured


EVENTS_SEEN = (1, 2, 4, 8, 16)
FALSE_DECLINE_WARNING = 0.05
FALSE_REVIEW_WARNING = 0.5  # half the legitimate sessions sent to review: a queue no team can work


def by_events_seen(
    scorer: Scorer, featured: pl.DataFrame, test: pl.DataFrame, points: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The test sessions scored after their first k events, as ``POST /events`` scores them then (the parity
    rule), per k of :data:`EVENTS_SEEN` below the longest session, and whole: ranking, and what the bands do to
    legitimate sessions (``review_fpr``, ``decline_fpr``) and to fraud (``decline_recall``). Models learn from
    whole sessions, so a short prefix may read as a kind of session they hardly saw; a fraud team decides from
    this table at which event a score can act. Warns where the decline band would take more than
    :data:`FALSE_DECLINE_WARNING` of the legitimate sessions, or the review band more than
    :data:`FALSE_REVIEW_WARNING`."""
    spec, tables = scorer.spec, token_tables(scorer.spec)
    ranked = featured.with_columns(
        pl.int_range(pl.len()).over(S.SESSION_ID, order_by=[S.TS_US, S.ROW_INDEX]).alias("_seen")
    )
    longest = int(ranked.select(pl.col("_seen").max()).item()) + 1
    review, decline = scorer.thresholds["review"], scorer.thresholds["decline"]
    rows: list[dict[str, Any]] = []
    for k in [*(k for k in EVENTS_SEEN if k < longest), None]:
        part = (ranked if k is None else ranked.filter(pl.col("_seen") < k)).drop("_seen")
        scored = scorer.score_sequences(numpy_sequences(part, spec, tables), part)
        joined = test.join(
            scored.select(S.SESSION_ID, pl.col(S.SCORE).alias("now"), pl.col(S.RAW_SCORE).alias("raw_now")),
            on=S.SESSION_ID,
        )
        y, p = joined[S.LABEL].to_numpy(), joined["now"].to_numpy()
        legit, fraud = p[y == 0], p[y == 1]
        # Ranked by the raw scores, as the run's test metrics are (isotonic calibration's ties read the whole
        # sessions' PR-AUC as 0.125 against the run's 0.108: review 156); the bands by the calibrated ones.
        metrics = classification_metrics(y, joined["raw_now"].to_numpy(), **points)
        rows.append(
            {
                "events": "all" if k is None else k,
                "pr_auc": metrics["pr_auc"],
                **{name: v for name, v in metrics.items() if name.startswith("recall_at")},
                "review_fpr": float((legit >= review).mean()) if len(legit) else None,
                "decline_fpr": float((legit >= decline).mean()) if len(legit) else None,
                "decline_recall": float((fraud >= decline).mean()) if len(fraud) else None,
            }
        )
    # What would learn the prefixes: a stacker's LightGBM learns from whole sessions whatever loader.prefix_share,
    # which the README's remedy named alone (dogfood 218: the stacker kept LightGBM, and nothing changed).
    prefixes = (
        "a stacked model's LightGBM learns from whole sessions, whatever loader.prefix_share: to act before a "
        "session ends, train the sequence model alone on prefixes too (model=gru loader.prefix_share=0.5) and "
        "compare its table"
        if scorer.stacker is not None
        else "loader.prefix_share=0.5 trains the sequence model on prefixes too"
    )
    # Whole sessions past the limit are the band's own doing, which prefixes do not mend (dogfood 244: a cost
    # policy's amount summed over a funnel's repeated price set the decline band at 0.0025).
    whole = (
        "sessions scored whole are the threshold's own doing, which prefixes do not mend: see the band's policy "
        "(a cost policy's amount summed over a value repeated on several events of a session: amount_of: max; an "
        "fpr set on few validation sessions)"
    )
    for band, limit in (("decline", FALSE_DECLINE_WARNING), ("review", FALSE_REVIEW_WARNING)):
        # Every point past the limit, not the first alone (dogfood 193: 48% after 1 event was said, 7.6% after 2 not).
        if early := [r for r in rows if r[f"{band}_fpr"] is not None and r[f"{band}_fpr"] > limit]:
            log.warning(
                "the %s band takes %s of the legitimate test sessions: do not act on the scores so read (manifest "
                "metrics.test_by_events_seen); %s",
                band,
                ", ".join(
                    f"{100 * r[f'{band}_fpr']:.0f}% "
                    + (
                        "scored whole"
                        if r["events"] == "all"
                        else f"after their first {r['events']} event(s)"
                    )
                    for r in early
                ),
                "; ".join(
                    [prefixes] * any(r["events"] != "all" for r in early)
                    + [whole] * (early[-1]["events"] == "all")
                ),
            )
    return rows


def _finite(value: Any) -> Any:
    """NaN metrics (one-class slices) become null: the manifest is strict JSON. Lists too: a test split without a
    fraud failed the export on its per-prefix metrics with a traceback (dogfood 55)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
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
