"""Leaderboard of run directories, read from the directories alone (no W&B server needed).

``seqfraud compare RUN_DIR... [--out DIR]`` takes run directories, or directories holding runs (a
multirun sweep, a backtest), and ranks the runs by validation PR-AUC; :func:`seqfraud.reports.write_leaderboard`
renders ``leaderboard.md``, ``leaderboard.html`` (self-contained) and ``pr_curves.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from omegaconf import OmegaConf

from seqfraud import schema as S
from seqfraud.config import SEQUENCE_FIT, SMALL_SPLIT_OWN, TRANSFORMER_KEYS, plain
from seqfraud.errors import UserError
from seqfraud.metrics import PR_AUC_DECIMALS, precision_key, recall_key
from seqfraud.rundir import (
    CONFIG_FILE,
    LAUNCH_FILE,
    METRICS_FILE,
    PREDICTIONS_DIR,
    TRAIN_LOG,
    kept_label,
    predictions,
    stacking_kept,
)

log = logging.getLogger(__name__)

OUTPUT_FILES = ("leaderboard.md", "leaderboard.html", "pr_curves.png")


@dataclass
class Run:
    name: str
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]


def recall_label(fpr: float) -> str:
    return f"recall@{fpr * 100:g}%FPR"


def fmt(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3f}"


def typology_columns(seen) -> list[str]:
    """Typologies worth a column: every reported group except the synthetic generator's legitimate kinds."""
    from seqfraud.data.synthetic import KINDS, TYPOLOGIES

    seen = list(dict.fromkeys(seen))
    return [t for t in TYPOLOGIES if t in seen] + [t for t in seen if t not in KINDS]


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Each path is a run directory (it holds metrics.json) or holds run directories somewhere below it.

    A directory without any, beside others that hold runs, is left out with a warning: a glob such as
    ``outputs/train/*/*`` also matches the run that failed or is still training, and pretraining runs, which
    predict nothing, are left out so too. Alone, they are an error, as is a path that does not exist."""
    if not paths:  # an IndexError from Python (the command takes one path at least: dogfood 60)
        raise UserError("no run directory given")
    found: list[Path] = []
    empty: list[Path] = []
    for p in map(Path, paths):
        if (p / METRICS_FILE).is_file():
            found.append(p)
            continue
        if p.is_file():  # a glob of a multirun directory matches Hydra's multirun.yaml beside the runs
            log.warning("%s: a file, not a run directory: left out", p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such run directory")
        below = sorted(m.parent for m in p.rglob(METRICS_FILE))
        empty += [] if below else [p]
        found += below
        # Jobs of a sweep that failed wrote their log and no metrics: said, not silently left out (dogfood 28).
        failed = sorted({log_file.parent for log_file in p.rglob(TRAIN_LOG)} - set(below))
        if below and failed:
            log.warning(
                "%s: %d run directory(ies) with a %s and no %s (failed or unfinished runs): left out: %s",
                p,
                len(failed),
                TRAIN_LOG,
                METRICS_FILE,
                [str(f.relative_to(p)) for f in failed[:10]],
            )
    if not found:
        raise FileNotFoundError(
            f"{(empty or list(map(Path, paths)))[0]}: no {METRICS_FILE} in it or below it, so it is not a run "
            "directory (train.py writes one per run)"
        )
    predicting = [p for p in found if predictions(p, "test").is_file()]
    if not predicting:
        load_run(found[0], found[0].name)  # says what is missing
    for p in empty:
        log.warning("%s: no %s in it or below it (a failed or unfinished run?): left out", p, METRICS_FILE)
    for p in found:
        if p not in predicting:
            log.warning("%s: no test predictions (a pretraining run, or an unfinished one): left out", p)
    runs = [p for p in dict.fromkeys(p.resolve() for p in predicting) if not relaunched(p)]
    if not runs:
        raise UserError(f"{paths[0]}: no run whose results are its latest launch's (see the warnings above)")
    warn_of_earlier_sweeps(runs)
    return runs


def relaunched(run: Path) -> bool:
    """Whether the latest training launch into ``run`` is not the one whose results it holds, said: a launch
    that fails on its input leaves the earlier run's results in place, and a sweep rerun into the same
    ``hydra.sweep.dir`` whose every job failed was ranked by the earlier sweep's results, as its own (dogfood
    175). Runs that recorded no launch (older ones) are taken as they are."""
    launch = run / LAUNCH_FILE
    try:
        latest = json.loads(launch.read_text())["id"] if launch.is_file() else None
        recorded = json.loads((run / METRICS_FILE).read_text()).get("launch")
    except (ValueError, KeyError, TypeError):  # cut short while writing: load_run says so
        return False
    if latest is None or recorded is None or latest == recorded:
        return False
    log.warning(
        "%s: its latest training launch left no results (it failed or is still running: see its %s); those "
        "there are of an earlier run: left out",
        run,
        TRAIN_LOG,
    )
    return True


# A sweep's jobs finish after its multirun.yaml is written; a copy without its times (cp -r) writes them all
# within seconds, in any order. An earlier sweep's job finished more than this before.
SWEEP_SLACK_S = 60.0


def warn_of_earlier_sweeps(runs: list[Path]) -> None:
    """A sweep rerun into a fixed ``hydra.sweep.dir`` rewrites its jobs' directories and Hydra's
    ``multirun.yaml``, and keeps the earlier sweep's other jobs: ranked beside the new ones, they read as this
    sweep's (dogfood 106). A run that finished well before its directory's ``multirun.yaml`` was written is such
    a one (``runs``: resolved, once each)."""
    by_sweep: dict[Path, list[Path]] = {}
    for run in runs:
        sweep = run.parent / "multirun.yaml"
        if sweep.is_file() and (run / METRICS_FILE).stat().st_mtime < sweep.stat().st_mtime - SWEEP_SLACK_S:
            by_sweep.setdefault(run.parent, []).append(run)
    for sweep_dir, older in by_sweep.items():
        log.warning(
            "%s: %d run(s) finished before the sweep that wrote its multirun.yaml began, so they are an earlier "
            "sweep's into the same hydra.sweep.dir, ranked here as well: %s (remove them, or sweep into a new "
            "directory)",
            sweep_dir,
            len(older),
            [r.name for r in older[:10]],
        )


def load_run(path: Path, name: str) -> Run:
    test = predictions(path, "test")
    if not test.is_file():
        raise FileNotFoundError(
            f"{path}: no {PREDICTIONS_DIR}/test.parquet, so it is not a complete run directory"
        )
    try:
        metrics = json.loads((path / METRICS_FILE).read_text())
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path / METRICS_FILE}: not JSON ({e}); is the run still writing it, or cut short?"
        ) from None
    for split in ("val", "test"):
        if split not in metrics:
            raise ValueError(f"{path / METRICS_FILE}: no {split!r} metrics")
    config = plain(OmegaConf.load(path / CONFIG_FILE)) if (path / CONFIG_FILE).is_file() else {}
    return Run(name=name, path=path, metrics=metrics, config=config)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def config_differences(runs: list[Run]) -> list[str]:
    """Per run, the config values that differ between the runs (what a sweep varied) and that the run reads; run
    paths and logging left out, and a path under the run's own data directory written from it, ``${paths.data_dir}``
    (data.synthetic.dir was listed for every run on a log of its own: dogfood 72)."""
    # The schedule a small split's fit used, not the config's it replaced (review 113: batch_size=128 shown for a
    # run that trained in batches of 16).
    flat = [_flat(r.config) | (r.metrics.get("small_split") or {}) for r in runs]
    # A value set on the command line is copied to its small_split key: one setting, said once (dogfood 187).
    for f in flat:
        for key, copy in SMALL_SPLIT_OWN.items():
            if key in f and f.get(f"small_split.{copy}") == f[key]:
                del f[f"small_split.{copy}"]
    # The hybrid's embeddings by their contents too: one path rewritten between two runs read alike (dogfood 105).
    for f, r in zip(flat, runs):
        given = ((r.metrics.get("provenance") or {}).get("inputs") or {}).get("embeddings") or {}
        if f.get("model.embeddings") and given.get("sha256"):
            f["model.embeddings"] = f"{f['model.embeddings']}@{given['sha256'][:8]}"
    own = [str(f.get("paths.output_dir", "\0")) for f in flat]
    # A value that differs only by each run's own data directory is the same setting.
    for f in flat:
        data_dir = str(f.get("paths.data_dir") or "\0")
        for k, v in f.items():
            if not k.startswith("paths.") and isinstance(v, str) and data_dir in v:
                f[k] = v.replace(data_dir, "${paths.data_dir}")
    # Where a run writes and logs is no setting of its model (logger.mode took a leaderboard's legend: dogfood 73).
    keys = dict.fromkeys(k for f in flat for k in f if not k.startswith(("paths.", "logger.")))

    def varies(key: str) -> bool:
        """Values that differ where the runs hold the key, or a run of a model kind that holds it lacking it: a
        key only one kind of model has (model.d_model beside a LightGBM run) is that kind's, said by the model
        column, and was listed whole for every sequence run (dogfood 64)."""
        having = [f for f in flat if key in f]
        kinds = {f.get("model.kind") for f in having}
        return len({repr(f[key]) for f in having}) > 1 or any(
            key not in f and f.get("model.kind") in kinds for f in flat
        )

    varying = [k for k in keys if varies(k) and not any(o in str(f.get(k)) for f, o in zip(flat, own))]
    # A null is a setting too: a run trained from scratch (init_from=null) beside fine-tuned ones said nothing.
    return [
        " ".join(
            f"{k}={'null' if f[k] is None else f[k]}"
            for k in varying
            if k in f
            and not (f.get("model.kind") == "lightgbm" and k.startswith(SEQUENCE_FIT))
            and not (f.get("model.encoder") == "gru" and k.removeprefix("model.") in TRANSFORMER_KEYS)
            # Entity settings where the run reads no entity (dogfood 227: windows listed for runs of none).
            and not (k.startswith("features.entity.") and not f.get("data.schema.entities"))
        )
        for f in flat
    ]


def model_label(run: Run) -> str:
    """The run's model, with the part a stacked run kept alone (:func:`~seqfraud.rundir.kept_label`); the LightGBM
    hybrid as ``lightgbm+embeddings``."""
    model = str(run.metrics.get("model", "")) + ("+embeddings" if run.metrics.get("embeddings") else "")
    return kept_label(model, stacking_kept(run.path))


def leaderboard(
    runs: list[Run], fpr: float = 0.01, recall: float = 0.5, sets: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per run, best validation PR-AUC first (runs without one last); with ``sets`` (run name -> the
    name of the sessions it was tested on), ranked within each set, since figures do not compare across them."""
    rk, pk = recall_key(fpr), precision_key(recall)
    typologies = typology_columns(t for r in runs for t in r.metrics["test"].get("per_typology", {}))
    rows = []
    for run, differs in zip(runs, config_differences(runs)):
        val, test = run.metrics["val"], run.metrics["test"]
        # Another metrics.fpr/recall (a sweep over them): n/a in those columns, where the whole leaderboard was
        # refused, whichever --fpr it was given (dogfood 106).
        if missing := [k for k in (rk, pk) if k not in test]:
            log.warning(
                "%s: no %s (the run used other metrics.fpr/recall): n/a in those columns; --fpr/--recall choose them",
                run.path / METRICS_FILE,
                missing,
            )
        nan = float("nan")
        per = test.get("per_typology", {})
        rows.append(
            {
                "run": run.name,
                "experiment": run.metrics.get("experiment", ""),
                "model": model_label(run),
                "config": differs,
                "val_pr_auc": val["pr_auc"],
                "test_pr_auc": test["pr_auc"],
                "test_roc_auc": test["roc_auc"],
                rk: test.get(rk, nan),
                pk: test.get(pk, nan),
                "test_brier": test["brier"],
                # How many sessions and frauds the test figures rest on (a dogfood's ranking rested on 13-19).
                "test_sessions": test.get("n"),
                "test_positives": test.get("positives"),
                "sequence_reads": (run.metrics.get("sequence_reads") or {}).get("events"),
                "per_typology": {t: per.get(t, {}).get(rk, nan) for t in typologies},
                "path": str(run.path),
                "test_set": (sets or {}).get(run.name, ""),
            }
        )
    rows.sort(key=lambda r: -r["val_pr_auc"] if not math.isnan(r["val_pr_auc"]) else math.inf)
    return sorted(rows, key=lambda r: r["test_set"])  # stable: each set keeps its order


def curve_label(row: dict[str, Any], width: int = 60) -> str:
    """A run's name in the PR-curve legend: its directory alone is a multirun's job number ("0", "1"), so the
    test set, model and the settings that differ come with it, then its test PR-AUC."""
    set_of = f"[{row['test_set']}]" if row["test_set"] else ""
    text = " ".join(p for p in (set_of, row["run"], row["model"], row["config"]) if p)
    return f"{text if len(text) <= width else text[: width - 1] + '…'} ({fmt(row['test_pr_auc'])})"


def leaderboard_table(rows: list[dict], fpr: float, recall: float) -> tuple[list[str], list[list[str]]]:
    """The leaderboard as header and string cells, the one layout of the Markdown, HTML and terminal tables."""
    rk, pk = recall_key(fpr), precision_key(recall)
    typologies = list(rows[0]["per_typology"]) if rows else []
    sets = any(r["test_set"] for r in rows)
    head = [
        *(["test set"] if sets else []),
        "rank",
        "run",
        "experiment",
        "model",
        "config",
        "val PR-AUC",
        "test PR-AUC",
        "ROC-AUC",
        recall_label(fpr),
        f"precision@{recall * 100:g}%recall",
        "Brier",
        "test sessions (frauds)",
        "events the sequence model reads",
        *[f"{t} {recall_label(fpr)}" for t in typologies],
    ]

    def val(row: dict) -> float:
        """Rounded as metrics rounds it now: a run's metrics.json from before kept 0.9999999999999999."""
        return -math.inf if math.isnan(row["val_pr_auc"]) else round(row["val_pr_auc"], PR_AUC_DECIMALS)

    body = [
        [
            *([r["test_set"]] if sets else []),
            # Ranked within its set; equal validation PR-AUCs share a rank (a dogfood's tie read as 1 and 2).
            str(1 + sum(other["test_set"] == r["test_set"] and val(other) > val(r) for other in rows)),
            r["run"],
            r["experiment"],
            r["model"],
            r["config"],
            fmt(r["val_pr_auc"]),
            fmt(r["test_pr_auc"]),
            fmt(r["test_roc_auc"]),
            fmt(r[rk]),
            fmt(r[pk]),
            fmt(r["test_brier"]),
            counted(r["test_sessions"], r["test_positives"]),
            "" if r["sequence_reads"] is None else f"{100 * r['sequence_reads']:.0f}%",
            *[fmt(r["per_typology"][t]) for t in typologies],
        ]
        for r in rows
    ]
    return head, body


def counted(sessions: float | None, positives: float | None) -> str:
    """``2,400 (49)``; blank for a run whose metrics predate the counts."""
    if sessions is None or positives is None:
        return ""
    return f"{int(sessions):,} ({int(positives):,})"


def rank_runs(
    paths: Sequence[str | Path], fpr: float = 0.01, recall: float = 0.5
) -> tuple[list[Run], list[dict], Path]:
    """The runs under ``paths``, their leaderboard rows (best validation PR-AUC first) and the runs' common parent."""
    dirs = find_runs(paths)
    common = Path(os.path.commonpath([d.parent for d in dirs]))
    runs = [load_run(d, str(d.relative_to(common))) for d in dirs]
    sets = None
    if len(groups := session_sets(runs, "test")) > 1:
        log.warning(
            "the runs were tested on %d different sets of sessions, so their test figures do not compare across "
            "them (another log, split or backtest window), and each set is ranked on its own: %s",
            len(groups),
            "; ".join(", ".join(names) for names in groups),
        )
        sets = {name: chr(ord("A") + i) for i, names in enumerate(groups) for name in names}
    warn_of_other_files(runs, groups)
    by_name = {r.name: r for r in runs}
    for names in groups:
        # Ranked by validation PR-AUC, on the same test set: two validation periods (a sweep over val_start), or
        # one of a single fraud, ranked first with no word (dogfood 106).
        if len(validated := session_sets([by_name[n] for n in names], "val")) > 1:
            log.warning(
                "runs ranked together were validated on different sessions, so the validation PR-AUC they are "
                "ranked by compares different sets: %s",
                "; ".join(
                    ", ".join(names) + f" ({_sessions_of(by_name[names[0]], 'val')})" for names in validated
                ),
            )
    return runs, leaderboard(runs, fpr, recall, sets), common


def _sessions_of(run: Run, split: str) -> str:
    m = run.metrics[split]
    return f"{int(m.get('n', 0)):,} sessions, {int(m.get('positives', 0)):,} fraud"


def session_sets(runs: list[Run], split: str) -> list[list[str]]:
    """The runs' names grouped by the sessions of their ``split`` predictions and their labels: a run on the same
    sessions with another label table was ranked beside the first (dogfood 53)."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        test = pl.read_parquet(predictions(run.path, split), columns=[S.SESSION_ID, S.LABEL]).sort(
            S.SESSION_ID
        )
        pairs = (f"{sid}\t{label}" for sid, label in test.iter_rows())
        key = hashlib.sha256("\n".join(pairs).encode()).hexdigest()
        groups.setdefault(key, []).append(run.name)
    return list(groups.values())


def warn_of_other_files(runs: list[Run], groups: list[list[str]]) -> None:
    """Say when runs ranked together read event or label files of other bytes (``provenance.inputs``): another
    log whose ids and split matched ranked beside the first, unsaid (dogfood 49). Said, not split apart: the same
    log as CSV and as Parquet differs in bytes too (dogfood 50)."""
    inputs = {r.name: (r.metrics.get("provenance") or {}).get("inputs") or {} for r in runs}
    digest = {
        name: tuple((given.get(k) or {}).get("sha256") for k in ("events", "labels"))
        for name, given in inputs.items()
    }
    for names in groups:
        kinds: dict[tuple, list[str]] = {}
        for name in names:
            if digest[name][0] is not None:  # a run from before the record: nothing to compare
                kinds.setdefault(digest[name], []).append(name)
        if len(kinds) > 1:
            log.warning(
                "runs tested on the same session ids read event or label files of other contents (%s): unless "
                "they are one log in other files or formats, their figures do not compare",
                "; ".join(", ".join(group) for group in kinds.values()),
            )
