"""Backtesting: retrain window by window and test on the next period, to see how a model holds up as fraud evolves.

A single out-of-time split says how a model does on one future period. Fraud changes: a new scheme shows up
with event types the model never saw, and what matters is how far recall drops and whether retraining brings
it back. Window k trains on everything before its validation period, validates on the ``val_days`` before
``t_k`` and tests on ``[t_k, t_k + window_days)``; the next window starts where this one ends. Each window is
a plain ``train(cfg)`` run in its own run directory, so ``python -m seqfraud.compare`` reads them too.

``python -m seqfraud.backtest [+experiment=X] [model=...] backtest.windows=K backtest.window_days=D`` writes
``backtest.json``, ``backtest.md`` and ``backtest.png`` into the backtest's run directory.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from seqfraud import schema as S
from seqfraud.compare import fmt, recall_label, typology_columns
from seqfraud.data.events import load_events
from seqfraud.data.split import from_epoch_us, to_epoch_us
from seqfraud.metrics import recall_key
from seqfraud.preprocess import ensure_synthetic, resolve_data_config
from seqfraud.schema import Schema
from seqfraud.training.train import train

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
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
        return {"val_start": from_epoch_us(self.val_start), "test_start": from_epoch_us(self.test_start),
                "test_end": from_epoch_us(self.test_end)}


def plan_windows(first_us: int, last_us: int, *, windows: int, window_days: float, val_days: float,
                 first_test_start: str | None = None) -> list[Window]:
    """Back-to-back test windows over session start times ``first_us..last_us``.

    Without ``first_test_start`` the last window ends at the day boundary after the latest session, so the
    windows cover the most recent data and start on day boundaries.
    """
    if windows < 1 or window_days <= 0 or val_days <= 0:
        raise ValueError(f"backtest: need windows >= 1, window_days > 0 and val_days > 0, "
                         f"got {windows}, {window_days}, {val_days}")
    width, val = round(window_days * DAY_US), round(val_days * DAY_US)
    t1 = (to_epoch_us(first_test_start) if first_test_start
          else (last_us // DAY_US + 1) * DAY_US - windows * width)
    out = [Window(k + 1, t - val, t, t + width) for k, t in enumerate(t1 + k * width for k in range(windows))]
    if out[0].val_start <= first_us:
        raise ValueError(f"backtest: window 1 validates from {from_epoch_us(out[0].val_start)}, but the data starts "
                         f"at {from_epoch_us(first_us)}, which leaves nothing to train on; use fewer or shorter "
                         "windows or a later backtest.first_test_start")
    if out[-1].test_start > last_us:
        raise ValueError(f"backtest: window {out[-1].index} starts at {from_epoch_us(out[-1].test_start)}, after the "
                         f"latest session ({from_epoch_us(last_us)}); use fewer windows or an earlier first_test_start")
    return out


def session_range(data: dict[str, Any]) -> tuple[int, int]:
    """Earliest and latest session start (epoch microseconds) of a resolved data config."""
    ensure_synthetic(data)
    loaded = load_events(data["events"], Schema.from_config(data["schema"]), data.get("labels"),
                         **(data.get("policy") or {}))
    starts = loaded.sessions[S.START_TIME]
    return int(starts.min()), int(starts.max())


def model_presets(cfg: DictConfig) -> dict[str, DictConfig]:
    """Name -> model config: the presets in ``backtest.models`` (each as ``model=NAME`` gives it), else the composed model."""
    names = cfg.backtest.models
    if not names:
        return {cfg.model.encoder: cfg.model}
    available = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"backtest.models: unknown model preset(s) {unknown}; presets are {available}")
    return {n: OmegaConf.load(CONF_DIR / "model" / f"{n}.yaml") for n in names}


def window_config(cfg: DictConfig, window: Window, model: DictConfig, run_dir: Path) -> DictConfig:
    """The backtest config turned into one ``train()`` run: this window's split, this model, its own directory."""
    run = copy.deepcopy(cfg)
    with open_dict(run):
        run.model = copy.deepcopy(model)
        run.data.split.update(window.split())
        run.paths.output_dir = str(run_dir)
    return run


def run_backtest(cfg: DictConfig) -> dict[str, Any]:
    """Train and test every model on every window; writes and returns the per-window results."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bt = cfg.backtest
    data = resolve_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    windows = plan_windows(*session_range(data), windows=int(bt.windows), window_days=float(bt.window_days),
                           val_days=float(bt.val_days), first_test_start=bt.first_test_start)
    models = model_presets(cfg)
    rows = []
    for w in windows:
        for name, model in models.items():
            run_dir = out / f"window{w.index:02d}" / name
            log.info("window %d/%d, %s: test %s .. %s", w.index, len(windows), name,
                     from_epoch_us(w.test_start), from_epoch_us(w.test_end))
            metrics = train(window_config(cfg, w, model, run_dir))
            rows.append({"window": w.index, "model": name, **w.split(), "run_dir": str(run_dir.relative_to(out)),
                         "val_pr_auc": metrics["val"]["pr_auc"], "test": metrics["test"]})
    result = {
        "windows": int(bt.windows), "window_days": float(bt.window_days), "val_days": float(bt.val_days),
        "models": list(models), "fpr": float(cfg.metrics.fpr), "highlight_typology": bt.highlight_typology,
        "typologies": typology_columns(t for r in rows for t in r["test"].get("per_typology", {})), "rows": rows,
    }
    (out / "backtest.json").write_text(json.dumps(result, indent=2))
    (out / "backtest.md").write_text(markdown(result))
    plot(result, out / "backtest.png")
    return result


def _when(iso: str) -> str:
    t = datetime.fromisoformat(iso).astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d") if t.time() == datetime.min.time() else t.strftime("%Y-%m-%d %H:%M")


def typology_recall(row: dict, typology: str, fpr: float) -> tuple[float, int]:
    """Recall at ``fpr`` of one typology in one window, and its number of positives (NaN, 0 when absent)."""
    m = row["test"].get("per_typology", {}).get(typology)
    return (m[recall_key(fpr)], int(m["positives"])) if m else (float("nan"), 0)


def markdown(result: dict) -> str:
    """One row per window and model; a typology cell reads 'recall (positives)'."""
    fpr, key = result["fpr"], recall_key(result["fpr"])
    recall = recall_label(fpr)
    head = ["window", "model", "test period", "sessions", "positives", "PR-AUC", "ROC-AUC", recall,
            *[f"{t} {recall}" for t in result["typologies"]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        t = r["test"]
        cells = [str(r["window"]), r["model"], f"{_when(r['test_start'])} – {_when(r['test_end'])}",
                 f"{int(t['n']):,}", f"{int(t['positives']):,}", fmt(t["pr_auc"]), fmt(t["roc_auc"]), fmt(t[key])]
        for ty in result["typologies"]:
            v, n = typology_recall(r, ty, fpr)
            cells.append(f"{fmt(v)} ({n})" if n else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return (f"Backtest: {result['windows']} windows of {result['window_days']:g} days, validation on the "
            f"{result['val_days']:g} days before each, retrained per window.\n\n" + "\n".join(lines) + "\n")


def plot(result: dict, path: Path) -> None:
    """Test PR-AUC and recall per window per model, plus the highlighted typology's recall where it occurs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, key, rows = result["fpr"], recall_key(result["fpr"]), result["rows"]
    recall = recall_label(fpr)
    highlight = result["highlight_typology"]
    show_highlight = bool(highlight) and any(typology_recall(r, highlight, fpr)[1] for r in rows)
    panels = [("test PR-AUC", lambda r: r["test"]["pr_auc"]), (f"test {recall}", lambda r: r["test"][key])]
    if show_highlight:
        panels.append((f"{highlight} {recall}", lambda r: typology_recall(r, highlight, fpr)[0]))
    windows = sorted({r["window"] for r in rows})
    starts = {r["window"]: _when(r["test_start"]) for r in rows}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (title, value) in zip(axes[0], panels):
        for model in result["models"]:
            mine = [r for r in rows if r["model"] == model]
            ax.plot([r["window"] for r in mine], [value(r) for r in mine], marker="o", label=model)
        ax.set_title(title)
        ax.set(ylim=(-0.03, 1.03), xlim=(windows[0] - 0.4, windows[-1] + 0.4))
        ax.set_xticks(windows, [f"{w}\n{starts[w]}" for w in windows], fontsize=8)
        ax.set_xlabel("window (test start)")
        ax.grid(alpha=0.3)
    if show_highlight:
        ax = axes[0][-1]
        for w in windows:
            n = typology_recall(next(r for r in rows if r["window"] == w), highlight, fpr)[1]
            ax.annotate(f"n={n}", (w, 0.0), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Backtest: {result['windows']} windows of {result['window_days']:g} days, retrained per window",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from seqfraud.errors import hydra_command

    @hydra_command(config_path="../conf", config_name="backtest")
    def _run(cfg: DictConfig) -> None:
        run_backtest(cfg)
        out = Path(cfg.paths.output_dir)
        print((out / "backtest.md").read_text())
        print(f"backtest: {', '.join(str(out / f) for f in RESULT_FILES)}")

    _run()


if __name__ == "__main__":
    main()
