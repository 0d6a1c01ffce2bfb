"""Backtesting: retrain window by window and test on the next period, to see how a model holds up as fraud evolves.

A single out-of-time split says how a model does on one future period. Fraud changes: a new scheme shows up
with event types the model never saw, and what matters is how far recall drops and whether retraining brings
it back. Window k trains on everything before its validation period, validates on the ``val_days`` before
``t_k`` and tests on ``[t_k, t_k + window_days)``; the next window starts where this one ends. Each window is
a plain ``train(cfg)`` run in its own run directory, so ``seqfraud compare`` reads them too.

``seqfraud backtest [+experiment=X] [model=...] backtest.windows=K backtest.window_days=D`` writes
``backtest.json``, ``backtest.md`` and ``backtest.png`` into the backtest's run directory.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, open_dict

from seqfraud import reports
from seqfraud import schema as S
from seqfraud.compare import typology_columns
from seqfraud.config import packaged, plain
from seqfraud.data.events import label_delay_us, load_events
from seqfraud.data.split import LABEL_UNKNOWN_BY_CUTOFF, EmptySplit, from_epoch_us, setting_time
from seqfraud.errors import ConfigError, first_line, is_finite
from seqfraud.preprocess import ensure_synthetic, resolve_data_config
from seqfraud.rundir import REPORT_FILE, stacking_kept
from seqfraud.schema import Schema
from seqfraud.training.train import check_settings, model_name, train

log = logging.getLogger(__name__)

DAY_US = 86_400 * 1_000_000
RESULT_FILES = ("backtest.json", "backtest.md", "backtest.png")


@dataclass(frozen=True)
class Window:
    """One backtest step, boundaries in epoch microseconds: val [val_start, test_start), test [test_start, test_end)."""

    index: int
    val_start: int
    test_start: int
    test_end: int

    def split(self) -> dict[str, str]:
        """The ``data.split`` keys that make ``train()`` run this window."""
        return {
            "val_start": from_epoch_us(self.val_start),
            "test_start": from_epoch_us(self.test_start),
            "test_end": from_epoch_us(self.test_end),
        }


def plan_windows(
    first_us: int,
    last_us: int,
    *,
    windows: int,
    window_days: float,
    val_days: float,
    first_test_start: str | None = None,
) -> list[Window]:
    """Back-to-back test windows over session start times ``first_us..last_us``.

    Without ``first_test_start`` the last window ends at the day boundary after the latest session, so the
    windows cover the most recent data and start on day boundaries.
    """
    if windows < 1 or not (
        window_days > 0 and val_days > 0 and is_finite(window_days) and is_finite(val_days)
    ):
        raise ConfigError(
            f"backtest: need windows >= 1, window_days > 0 and val_days > 0, "
            f"got {windows}, {window_days}, {val_days}"
        )
    width, val = round(window_days * DAY_US), round(val_days * DAY_US)
    t1 = (
        setting_time("backtest.first_test_start", first_test_start)
        if first_test_start
        else (last_us // DAY_US + 1) * DAY_US - windows * width
    )
    out = [Window(k + 1, t - val, t, t + width) for k, t in enumerate(t1 + k * width for k in range(windows))]
    if out[0].val_start <= first_us:
        raise ConfigError(
            f"backtest: window 1 validates from {from_epoch_us(out[0].val_start)}, but the data starts "
            f"at {from_epoch_us(first_us)}, which leaves nothing to train on; use fewer or shorter "
            "windows or a later backtest.first_test_start"
        )
    if out[-1].test_start > last_us:
        raise ConfigError(
            f"backtest: window {out[-1].index} starts at {from_epoch_us(out[-1].test_start)}, after the "
            f"latest session ({from_epoch_us(last_us)}); use fewer windows or an earlier first_test_start"
        )
    return out


def session_range(data: dict[str, Any]) -> tuple[int, int]:
    """Earliest and latest session start (epoch microseconds) of a resolved data config."""
    ensure_synthetic(data)
    loaded = load_events(
        data["events"], Schema.from_config(data["schema"]), data.get("labels"), **(data.get("policy") or {})
    )
    starts = loaded.sessions[S.START_TIME]
    return int(starts.min()), int(starts.max())  # type: ignore[arg-type]  # an Int64 column's min is an int


def model_presets(cfg: DictConfig) -> dict[str, Any]:
    """Name -> model config: each preset in ``backtest.models`` composed as ``model=NAME`` with this run's other
    overrides composes it (the user's search path and the experiment's ``model.*`` keys included, which
    ``train`` then checks against the preset's kind), else the composed model."""
    names = cfg.backtest.models
    if not names:
        return {model_name(cfg.model): cfg.model}
    if not GlobalHydra.instance().is_initialized() or not HydraConfig.initialized():
        raise ConfigError(
            "backtest.models composes each preset with Hydra: run it as `seqfraud backtest ...`"
        )
    run = HydraConfig.get()
    searchpath = [o for o in run.overrides.hydra if o.startswith("hydra.searchpath=")]
    overrides = [*searchpath, *(o for o in run.overrides.task if o.split("=", 1)[0].lstrip("+~") != "model")]
    models = {}
    for name in names:
        try:
            composed = compose(run.job.config_name, overrides=[*overrides, f"model={name}"])
        except ConfigCompositionException as e:  # no such preset, or a model.* override it has no key for
            first = first_line(e)
            hint = (
                " (a key this preset lacks: write the override as ++KEY=VALUE, which adds it, and each model then "
                "keeps what it reads: docs/risk.md)"
                if first.startswith("Could not override")
                else ""
            )
            raise ConfigError(f"backtest.models: model={name} does not compose: {first}{hint}") from None
        models[str(name)] = composed.model
    return models


def window_config(cfg: DictConfig, window: Window, model: DictConfig, run_dir: Path) -> DictConfig:
    """The backtest config turned into one ``train()`` run: this window's split, this model, its own directory."""
    run = copy.deepcopy(cfg)
    with open_dict(run):
        del run["backtest"]  # a train() config: train.yaml's sections only
        run.model = copy.deepcopy(model)
        run.data.split.update(window.split())
        run.paths.output_dir = str(run_dir)
        if isinstance(run.get("logger"), DictConfig) and "name" in run.logger and not run.logger.name:
            # train names a W&B run by its directory's last two parts, window and model, the same in every
            # backtest: the backtest's directory tells them apart.
            run.logger.name = "/".join(run_dir.parts[-3:])
    return run


def clear_other_windows(out: Path, ours: set[Path]) -> None:
    """Remove the window runs of an earlier backtest into ``out`` that this one does not write: windows count back
    from the log's end, so a rerun with fewer windows or models left runs of other test periods under the same
    window names, which compare then ranked beside this backtest's (dogfood 106)."""
    stale = [p for p in sorted(out.glob("window*/*")) if p.is_dir() and p not in ours]
    if stale:
        log.warning(
            "%s holds %d run(s) of an earlier backtest that this one does not write (%s): removed, so that "
            "compare and the report read this backtest's alone",
            out,
            len(stale),
            ", ".join(str(p.relative_to(out)) for p in stale[:4]) + (", ..." if len(stale) > 4 else ""),
        )
    for path in stale:
        shutil.rmtree(path)
    for window in out.glob("window*"):
        if window.is_dir() and not any(window.iterdir()):
            window.rmdir()


def run_backtest(cfg: DictConfig) -> dict[str, Any]:
    """Train and test every model on every window; writes and returns the per-window results."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bt = cfg.backtest
    check_settings(cfg, sections={"backtest": packaged("backtest.yaml")["backtest"]})
    models = model_presets(cfg)  # a config error before any data is read
    data = resolve_data_config(plain(cfg.data))
    windows = plan_windows(
        *session_range(data),
        windows=int(bt.windows),
        window_days=float(bt.window_days),
        val_days=float(bt.val_days),
        first_test_start=bt.first_test_start,
    )
    # A label cutoff at each test start with a delay as long as validation leaves it no final label: val_days alone
    # cures it, and the message named four settings (dogfood 106). Refused before any window where every label
    # waits for the delay (no label times); said after them otherwise, where some label time may come sooner.
    delay, cutoff = (
        (data.get("policy") or {}).get("label_delay"),
        (data.get("split") or {}).get("label_cutoff"),
    )
    short = (
        f"; with data.split.label_cutoff={cutoff}, data.policy.label_delay={delay} leaves a validation of "
        f"backtest.val_days={float(bt.val_days):g} days no label final by its test start: lengthen val_days past "
        "the delay where the log is long enough, or leave data.split.label_cutoff out (labels as known today)"
        if cutoff is not None and (label_delay_us(delay and str(delay)) or 0) >= float(bt.val_days) * DAY_US
        else ""
    )
    if short and cutoff == "test_start" and not (data.get("schema") or {}).get("label_time"):
        raise ConfigError(f"backtest: every window would be skipped{short}")
    own = {
        k: v
        for k, v in (data.get("split") or {}).items()
        if k in ("val_start", "test_start", "test_end") and v
    }
    if own:  # the windows set them (window_config): said, not silently replaced (dogfood 27)
        log.warning("backtest: each window sets its own split; data.split %s is not used", own)
    clear_other_windows(out, {out / f"window{w.index:02d}" / name for w in windows for name in models})
    rows, skipped = [], []
    for w in windows:
        warned = False  # the same labels for every model of a window: said once
        for name, model in models.items():
            run_dir = out / f"window{w.index:02d}" / name
            log.info(
                "window %d/%d, %s: test %s .. %s",
                w.index,
                len(windows),
                name,
                from_epoch_us(w.test_start),
                from_epoch_us(w.test_end),
            )
            try:
                metrics = train(window_config(cfg, w, model, run_dir))
            except EmptySplit as e:  # a gap in the log, or a window without frauds: the others still count
                why = e.lacking
                skipped.append({"window": w.index, "model": name, **w.split(), "why": why})
                log.warning(
                    "window %d (validation from %s, test %s .. %s), %s: skipped, %s; each window sets its own "
                    "split: choose others with backtest.windows, window_days, val_days or first_test_start",
                    w.index,
                    from_epoch_us(w.val_start),
                    from_epoch_us(w.test_start),
                    from_epoch_us(w.test_end),
                    name,
                    why,
                )
                continue
            report = json.loads((run_dir / REPORT_FILE).read_text())
            late = report.get("labels_known_after_test_start")
            if late and not warned:
                warned = True
                log.warning(
                    "window %d trained and validated on labels known only after its test start (%s); a retrain "
                    "then could not have: data.split.label_cutoff=test_start leaves them out",
                    w.index,
                    late,
                )
            rows.append(
                {
                    "window": w.index,
                    "model": name,
                    **w.split(),
                    "run_dir": str(run_dir.relative_to(out)),
                    "kept": stacking_kept(run_dir),  # a stacked run's choice, window by window
                    "labels_known_after_test_start": late or {},
                    "splits": report.get("splits") or {},  # what the late labels are of (dogfood 228)
                    "labels_known_after_cutoff": report.get("labels_known_after_cutoff") or {},
                    "val_pr_auc": metrics["val"]["pr_auc"],
                    "test": metrics["test"],
                }
            )
    if not rows:  # each reason with its windows: the first alone read as the only one (dogfood 181)
        windows_of: dict[str, list[str]] = {}
        for skip in skipped:
            if (index := str(skip["window"])) not in (listed := windows_of.setdefault(str(skip["why"]), [])):
                listed.append(index)
        why = "; ".join(f"{y} in window{'s' * (len(ws) > 1)} {', '.join(ws)}" for y, ws in windows_of.items())
        if (
            not short
            and cutoff == "test_start"
            and all(y.startswith(LABEL_UNKNOWN_BY_CUTOFF) for y in windows_of)
        ):
            # Claims referred 30-120 days late against 7-day validations: the four settings named, where only
            # val_days cures it (dogfood 198).
            short = (
                f"; a validation of backtest.val_days={float(bt.val_days):g} days ends at its test start, and no "
                "label of its sessions was known by then: lengthen val_days past how late "
                "most labels come after their sessions"
            )
        raise ConfigError(
            f"backtest: every window was skipped ({why}): choose others with backtest.windows, window_days, "
            f"val_days or first_test_start{short}"
        )
    result = {
        "windows": int(bt.windows),
        "window_days": float(bt.window_days),
        "val_days": float(bt.val_days),
        "models": list(models),
        "fpr": float(cfg.metrics.fpr),
        "highlight_typology": bt.highlight_typology,
        "typologies": typology_columns(t for r in rows for t in r["test"].get("per_typology", {})),
        "rows": rows,
        "skipped": skipped,
    }
    (out / "backtest.json").write_text(json.dumps(result, indent=2))
    (out / "backtest.md").write_text(reports.backtest_markdown(result))
    reports.backtest_png(result, out / "backtest.png")
    return result
