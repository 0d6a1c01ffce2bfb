"""``model=stacked``: the sequence model's out-of-fold scores, then LightGBM on aggregates plus that score.

The ``stacking`` section of ``model`` is the stacker's; the rest of it is the sequence model's.

1. The training sessions are split into ``model.stacking.folds`` folds by a hash of their id. For each fold,
   the sequence model is fitted on the other folds, early-stopped on the validation split, and scores the
   fold: every training session gets a score from a model that never saw its label.
2. The sequence model is fitted once more on all the training sessions: the model that is exported and scores
   validation, test and production sessions.
3. LightGBM (:class:`seqfraud.baselines.Stacker`) is fitted on the training sessions' aggregates (the
   baseline's own, :func:`~seqfraud.baselines.session_aggregates`) and out-of-fold scores, early-stopped on the
   validation split's aggregates and refit scores; and once more with the score held constant (the baseline).
4. The baseline is kept unless another candidate (``model.stacking.candidates``: the stacker with the score,
   the refit sequence model alone, and their blend: the mean of the baseline's and the sequence model's logits)
   beats it on validation PR-AUC in at least ``model.stacking.confidence`` (0.95) of paired bootstrap
   resamples; of those that do, the blend is kept unless another beats it too at that confidence, and then the
   one best on validation. Where there are
   out-of-fold scores, they must also rank the training frauds above chance at that confidence (a one-sided
   Mann-Whitney test), or the baseline is kept. A stacker, or the blend's trees (the baseline's), is
   saved as ``stacker.txt``; the sequence model alone saves none, so the run exports as a plain sequence model.

Costs ``folds + 1`` sequence fits, one when the stacker is not a candidate (steps 1 and 3's first fit are then
skipped). ``stacking.json`` in the run directory records each part's metrics.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from omegaconf import DictConfig, open_dict

from seqfraud import rundir
from seqfraud import schema as S
from seqfraud.baselines import STACKER_FILE, Stacker, fit_lightgbm, session_aggregates, with_logit
from seqfraud.config import plain
from seqfraud.data.shards import ROW_GROUP_SESSIONS, shard_files, shard_name
from seqfraud.errors import ConfigError
from seqfraud.metrics import chance_p_value, classification_metrics, paired_win_share
from seqfraud.preprocess import Prepared
from seqfraud.rundir import STACKING_REPORT
from seqfraud.training.launch import launcher_rank_and_world

log = logging.getLogger(__name__)

FitSequence = Callable[..., "dict[str, np.ndarray] | None"]


def sequence_config(cfg: DictConfig, output_dir: Path | None = None) -> DictConfig:
    """The run's config for its sequence model: ``model`` without ``stacking`` (and another output dir)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.model.pop("stacking")
        out.model.kind = "sequence"
        if output_dir is not None:
            out.paths.output_dir = str(output_dir)
    return out


def fold_datasets(train: Path, folds: int, seed: int, out: Path) -> list[tuple[Path, Path]]:
    """(fit, held out) dataset directories per fold: the training shards split by a hash of the session id."""
    scan = pl.scan_parquet(shard_files(train))
    fold = pl.col(S.SESSION_ID).hash(seed=seed) % folds
    pairs = []
    for k in range(folds):
        pair = (out / f"fold{k}" / "fit", out / f"fold{k}" / "held_out")
        for path, keep in zip(pair, (fold != k, fold == k)):
            path.mkdir(parents=True, exist_ok=True)
            scan.filter(keep).sink_parquet(path / shard_name(0), row_group_size=ROW_GROUP_SESSIONS)
        pairs.append(pair)
    return pairs


def session_order(path: Path) -> pl.DataFrame:
    return pl.read_parquet(shard_files(path), columns=[S.SESSION_ID, S.LABEL])


def _without_score(rows: np.ndarray) -> np.ndarray:
    held = rows.copy()
    held[:, -1] = 0.0
    return held


def aggregate_frames(prepared: Prepared) -> dict[str, pl.DataFrame]:
    """Per split, the baseline's aggregates with the label, in the dataset's session order."""
    if prepared.events is None:
        raise ConfigError(
            "the aggregates read the raw events through Polars, which neither prepared_dir nor "
            "preprocess.engine=spark keeps: run model=lightgbm or model=stacked with the polars engine and no "
            "prepared_dir"
        )
    aggregates = session_aggregates(prepared.events, prepared.spec).collect(engine="streaming")
    return {
        name: session_order(path).join(aggregates, on=S.SESSION_ID, how="left", maintain_order="left")
        for name, path in prepared.datasets.items()
    }


def check_stacking(cfg: DictConfig) -> None:
    """What ``model=stacked`` cannot run with, refused before any data is read."""
    folds = int(cfg.model.stacking.get("folds", 3))
    if folds < 2:
        raise ConfigError(f"model.stacking.folds must be at least 2, got {folds}")
    stacking_candidates(plain(cfg.model.stacking))
    devices = cfg.trainer.get("devices", 1)
    if launcher_rank_and_world()[1] > 1 or (isinstance(devices, int) and devices > 1):
        raise ConfigError("model=stacked fits its folds one after another in one process: run it without DDP")


def out_of_fold_scores(
    cfg: DictConfig, prepared: Prepared, fit_sequence: FitSequence, folds: int
) -> np.ndarray:
    """Each training session's score from a sequence model fitted on the other folds, in dataset order."""
    run_dir, datasets = Path(cfg.paths.output_dir), prepared.datasets
    train_order = session_order(datasets["train"])
    oof = np.full(train_order.height, np.nan, dtype=np.float32)
    position = {sid: i for i, sid in enumerate(train_order[S.SESSION_ID].to_list())}
    for k, (fit, held_out) in enumerate(
        fold_datasets(datasets["train"], folds, cfg.seed, run_dir / rundir.FOLDS_DIR)
    ):
        log.info("stacking: sequence model of fold %d of %d", k + 1, folds)
        fold_cfg = sequence_config(cfg, run_dir / rundir.FOLDS_DIR / f"fold{k}")
        fold_data = replace(prepared, datasets={"train": fit, "val": datasets["val"], "test": held_out})
        scores = fit_sequence(fold_cfg, fold_data, False)
        assert scores is not None  # one process, as checked above
        at = [position[sid] for sid in session_order(held_out)[S.SESSION_ID].to_list()]
        oof[at] = scores["test"]
    shutil.rmtree(
        run_dir / rundir.FOLDS_DIR
    )  # copies of the training data and checkpoints no one reads again
    if np.isnan(oof).any():
        raise RuntimeError(f"stacking: {int(np.isnan(oof).sum())} training sessions got no out-of-fold score")
    return oof


def fit_stacked(
    cfg: DictConfig, prepared: Prepared, logger, extra_callbacks: list | None, fit_sequence: FitSequence
) -> dict[str, np.ndarray]:
    """Out-of-fold sequence scores, the refit sequence model, and the LightGBM stacker; probabilities of the
    kept candidate on val and test in dataset order."""
    run_dir = Path(cfg.paths.output_dir)
    stacking = plain(cfg.model.stacking)
    folds = int(stacking.get("folds", 3))
    allowed = stacking_candidates(stacking)
    # Only the stacker reads out-of-fold scores: without it as a candidate, no fold is fitted.
    oof = out_of_fold_scores(cfg, prepared, fit_sequence, folds) if "stacked" in allowed else None
    log.info("stacking: sequence model on all training sessions")
    refit = fit_sequence(sequence_config(cfg), prepared, logger, extra_callbacks)
    assert refit is not None  # one process, as checked above
    frames = aggregate_frames(prepared)
    names = [c for c in frames["train"].columns if c not in (S.SESSION_ID, S.LABEL)]
    # Without out-of-fold scores the training rows' score column is held constant, as the baseline's is.
    scores = {"train": np.zeros(frames["train"].height, np.float32) if oof is None else oof, **refit}
    rows = {name: with_logit(frames[name].select(names).to_numpy(), scores[name]) for name in frames}
    labels = {name: frames[name][S.LABEL].to_numpy() for name in frames}
    metrics_cfg = plain(cfg.metrics)

    def ap(name: str, probability: np.ndarray) -> dict[str, Any]:
        return classification_metrics(labels[name], probability, **metrics_cfg)

    # LightGBM with the sequence score, and the baseline: without it (the score column held constant, so no tree
    # splits on it and the artifact's inputs stay the same).
    candidates = {}
    for kind, use_score in (("stacked", True), ("aggregates", False)):
        if use_score and oof is None:  # no out-of-fold scores to learn the score from: no stacker to fit
            continue
        fit_rows = {
            name: rows[name] if use_score else _without_score(rows[name]) for name in ("train", "val")
        }
        booster = fit_lightgbm(
            fit_rows["train"],
            labels["train"],
            fit_rows["val"],
            labels["val"],
            [*names, "sequence_logit"],
            params=stacking.get("params"),
            num_boost_round=int(stacking.get("num_boost_round", 1000)),
            early_stopping=int(stacking.get("early_stopping", 50)),
            seed=int(cfg.seed),
            what=f"stacking: the {kind} candidate's LightGBM",
        )
        text = booster.model_to_string(num_iteration=booster.best_iteration)
        stacker = Stacker.from_text(text, prepared.spec)  # the saved trees score, as the artifact's will
        candidates[kind] = (
            text,
            booster.best_iteration,
            {name: stacker.combine(rows[name][:, :-1], scores[name]) for name in ("val", "test")},
        )
        if not use_score and "blend" in allowed:
            blend = Stacker.from_text(text, prepared.spec, blend=True)
            candidates["blend"] = (
                text,
                booster.best_iteration,
                {name: blend.combine(rows[name][:, :-1], scores[name]) for name in ("val", "test")},
            )
    # The sequence model alone is a candidate too: the stacker learns from out-of-fold scores of models fitted on
    # less data, which can be far weaker than the refit model it is served (a dogfood GRU's folds reached
    # validation PR-AUC 0.11 to 0.89, the refit 1.0), so it can weigh the score too little.
    candidates["sequence"] = (None, None, {name: refit[name] for name in ("val", "test")})
    val_ap = {kind: ap("val", c[2]["val"])["pr_auc"] for kind, c in candidates.items()}
    confidence, resamples = float(stacking.get("confidence", 0.95)), int(stacking.get("resamples", 500))
    # Validation chose the candidates' checkpoints and trees, so it flatters them (a dogfood's stacker stopped at 2
    # trees kept a score whose out-of-fold ROC-AUC was 0.45 on 8 validation frauds, and lost to LightGBM on test):
    # the score must also carry signal where nothing was chosen, out of fold on the training sessions, ranking
    # frauds above chance at the same confidence as a candidate must beat the baseline.
    oof_p = None if oof is None else chance_p_value(labels["train"], oof)
    chosen, win_share, over_blend = choose_candidate(
        labels["val"],
        {kind: c[2]["val"] for kind, c in candidates.items()},
        val_ap,
        allowed,
        confidence=confidence,
        resamples=resamples,
        seed=int(cfg.seed),
    )
    if oof is not None and oof_p is not None and not oof_p <= 1 - confidence:  # a NaN keeps the baseline too
        log.warning(
            "stacking: the sequence model's out-of-fold scores rank the training frauds no surer than chance "
            "(ROC-AUC %.3f, one-sided p = %.3g, over the %.2g that model.stacking.confidence=%g allows): no "
            "evidence the score carries signal, so the baseline (LightGBM on the aggregates) is kept",
            ap("train", oof)["roc_auc"],
            oof_p,
            1 - confidence,
            confidence,
        )
        chosen = "aggregates"
    text, best_iteration, kept = candidates[chosen]
    if text is not None:
        (run_dir / STACKER_FILE).write_text(text)
    report = {
        "folds": folds,
        "inputs": len(names) + 1,
        "chosen": chosen,
        "best_iteration": best_iteration,
        "candidates_val_pr_auc": val_ap,
        "win_share": win_share,
        "win_share_over_blend": over_blend,
        "confidence": confidence,
        "validation_frauds": int(np.sum(labels["val"])),
        "frauds_needed": frauds_needed(confidence),
        "sequence_out_of_fold": None if oof is None else {"train": ap("train", oof), "chance_p_value": oof_p},
        "sequence": {name: ap(name, refit[name]) for name in ("val", "test")},
        "kept": {name: ap(name, kept[name]) for name in ("val", "test")},
    }
    (run_dir / STACKING_REPORT).write_text(json.dumps(report, indent=2, default=float))
    # Validation's figures, which chose: a rejected candidate's test figure beside the kept one invited choosing on
    # test (dogfood 57); stacking.json keeps both.
    # With the rule that chose: a kept baseline below a candidate's PR-AUC read as the lowest kept (dogfood 63).
    log.info(
        "stacking: kept %s; validation PR-AUC %s; a candidate replaces the baseline when it beats it in %g of "
        "paired resamples (model.stacking.confidence): %s%s",
        chosen,
        ", ".join(f"{kind} {value:.4f}" for kind, value in val_ap.items()),
        confidence,
        ", ".join(f"{kind} {share:.3f}" for kind, share in win_share.items()),
        "; over the blend, which another replaces only so surely: "
        + ", ".join(f"{kind} {share:.3f}" for kind, share in over_blend.items())
        if over_blend
        else "",
    )
    if chosen == "aggregates" and (prefixes := float(cfg.loader.get("prefix_share") or 0)):
        log.warning(
            "stacking: kept LightGBM on the aggregates alone, which learns from whole sessions: "
            "loader.prefix_share=%g trained the sequence model on prefixes, which this model's per-event scores do "
            "not read (dogfood 218: nothing changed); for decisions before a session ends, train the sequence "
            "model alone with it (model=gru) and compare metrics.test_by_events_seen",
            prefixes,
        )
    if chosen == "aggregates" and not chance_p_value(labels["val"], kept["val"]) <= 1 - confidence:
        # The fallback kept was itself at chance, unsaid: "never loses" held because both were useless (dogfood 57).
        log.warning(
            "stacking: the kept baseline ranks the validation frauds no surer than chance (ROC-AUC %.3f): no model "
            "found this log's signal at these settings. A sequence model still improving at its last epoch may "
            "need more (trainer.max_epochs)",
            report["kept"]["val"]["roc_auc"],
        )
    return kept


# In order of preference on a tie, the simpler first: both at validation PR-AUC 1.0, the stacker's trees on noise
# aggregates ranked a legitimate session above every fraud on test, 0.83 against the sequence model's 1.0 on two
# of six seeds of a helper's log (dogfood 135).
CANDIDATES = ("sequence", "blend", "stacked")


def stacking_candidates(stacking: dict[str, Any]) -> list[str]:
    """``model.stacking.candidates``: what may replace the baseline, in order of preference on a tie (checked
    before any data is read)."""
    given = stacking.get("candidates", list(CANDIDATES))
    if (
        not isinstance(given, list)
        or not given
        or len(set(given)) < len(given)
        or set(given) - set(CANDIDATES)
    ):
        raise ConfigError(
            f"model.stacking.candidates must be a non-empty list without repeats of {list(CANDIDATES)} (the "
            f"baseline, LightGBM on the aggregates alone, is always one; for it alone, model=lightgbm), got {given!r}"
        )
    return given


def choose_candidate(
    y: np.ndarray,
    val: dict[str, np.ndarray],
    val_ap: dict[str, float],
    allowed: list[str],
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[str, dict[str, float], dict[str, float]]:
    """The kept candidate, each allowed one's win share against the baseline (``aggregates``), and, where the blend
    beat it, each other sure candidate's win share against the blend.

    A candidate must beat the baseline with confidence, not on this one sample: the refit sequence model kept its
    best checkpoint by validation and LightGBM stopped early on it, so validation flatters both, and a few dozen
    validation frauds can rank either way by chance. Of those that do, the blend is kept unless another beats it
    with the same confidence; else the better on validation (on a tie, the first in ``allowed``). Without
    :func:`frauds_needed` validation frauds, none is.
    """
    win_share = {
        kind: paired_win_share(y, val[kind], val["aggregates"], resamples=resamples, seed=seed)
        for kind in allowed
    }
    if (frauds := int(np.sum(y))) < (needed := frauds_needed(confidence)):
        log.warning(
            "stacking: validation holds %d fraud(s), fewer than the %d that model.stacking.confidence=%g needs for "
            "a candidate to beat the baseline surely (the resamples redraw these frauds alone: their win shares "
            "compare as few rankings): the baseline (LightGBM on the aggregates) is kept; validate on more frauds "
            "(an earlier data.split.val_start or a larger val_fraction; a longer backtest.val_days in a backtest)",
            frauds,
            needed,
            confidence,
        )
        return "aggregates", win_share, {}
    sure = [kind for kind in allowed if win_share[kind] >= confidence]
    if "blend" not in sure:
        return max(sure, key=lambda kind: val_ap[kind], default="aggregates"), win_share, {}
    # The blend hedges between the two it averages: the sequence model alone, best on validation by 0.048 on a
    # festival log (a 0.956 win share over the baseline, 0.922 over the blend), lost to LightGBM on test, 0.758
    # against 0.769, where the blend scored 0.774 (dogfood 247).
    over_blend = {
        kind: paired_win_share(y, val[kind], val["blend"], resamples=resamples, seed=seed)
        for kind in sure
        if kind != "blend"
    }
    beyond = [kind for kind, share in over_blend.items() if share >= confidence]
    return max(beyond, key=lambda kind: val_ap[kind], default="blend"), win_share, over_blend


def frauds_needed(confidence: float) -> int:
    """The validation frauds a candidate needs before its win share can replace the baseline: as many as a sign test
    at ``confidence`` does, each fraud ranked better by chance half the time. A share of 1.0 on one fraud kept a
    sequence model that lost to LightGBM on test (dogfood 181: its resamples all compared that fraud's rank). At
    confidence 1, which no count reaches, as at 1 - 1e-9: 30."""
    return math.ceil(-math.log2(max(1 - confidence, 1e-9)))
