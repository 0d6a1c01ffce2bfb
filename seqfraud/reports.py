"""Every report seqfraud renders (HTML pages, PNG charts, Markdown tables), from results computed elsewhere.

The monitor's page and chart, the export's reliability diagram, the backtest's table and chart, the
explained-session timeline, and the compare leaderboard. matplotlib is imported only when a chart is drawn, so nothing that scores
pays for it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.calibration import reliability_curve
from seqfraud.compare import OUTPUT_FILES, Run, curve_label, fmt, leaderboard_table, rank_runs, recall_label
from seqfraud.metrics import expected_calibration_error, recall_key
from seqfraud.rundir import kept_label, predictions


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _embedded_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------- monitor


def monitor_png(report: dict[str, Any], hist: Mapping[str, Sequence[np.ndarray]], path: Path) -> None:
    """PSI per field, and reference against current shares of scores, session lengths and time deltas.

    ``hist``: reference and current counts per bin of ``score`` (the report's score bins), ``session_length``
    (its length bins, the last one the truncated sessions) and the time-delta token ids from 1.
    """
    plt = _pyplot()
    t = report["thresholds"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    names = list(report["fields"])
    values = [report["fields"][f]["psi"] for f in names] + [
        report["session_length"]["psi"],
        report["score"]["psi"],
    ]
    names += ["session_length", "score"]
    colors = [
        "tab:red" if v >= t["psi_alert"] else "tab:orange" if v >= t["psi_warn"] else "tab:blue"
        for v in values
    ]
    ax.barh(names, values, color=colors)
    ax.axvline(t["psi_warn"], color="tab:orange", ls="--", lw=1, label=f"warn {t['psi_warn']:g}")
    ax.axvline(t["psi_alert"], color="tab:red", ls="--", lw=1, label=f"alert {t['psi_alert']:g}")
    ax.invert_yaxis()
    ax.set_title("PSI, current vs reference")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    bins = report["score"]["bins"]
    x = np.arange(len(bins) - 1)
    _paired_shares(ax, x, *hist["score"])
    ax.set_xticks(x, [f"{b:g}" for b in bins[:-1]], fontsize=7)
    ax.set_title(f"Score share per bin (PSI {report['score']['psi']:.3f})")
    ax.set_xlabel("score bin (lower edge)")

    ax = axes[1, 0]
    edges = report["session_length"]["bins"]
    x = np.arange(len(edges))
    _paired_shares(ax, x, *hist["session_length"])
    ax.set_xticks(x, [str(e) for e in edges], fontsize=7)
    ax.set_title(f"Session length (PSI {report['session_length']['psi']:.3f})")
    ax.set_xlabel("events in a session's window (bin lower edge; cut sessions from max_len - hop + 1)")

    ax = axes[1, 1]
    ref_td, cur_td = hist[S.TIME_DELTA]
    _paired_shares(ax, np.arange(1, len(ref_td) + 1), ref_td, cur_td)
    ax.set_title(f"Inter-event time bucket (PSI {report['fields'][S.TIME_DELTA]['psi']:.3f})")
    ax.set_xlabel("time-delta token id (2: first event; 4..: log-spaced seconds)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _paired_shares(ax: Any, x: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray) -> None:
    """Reference and current shares per bin, side by side."""
    for shift, counts, label in ((-0.2, ref_counts, "reference"), (0.2, cur_counts, "current")):
        ax.bar(x + shift, counts / max(counts.sum(), 1), width=0.4, label=label)
    ax.legend(fontsize=8)


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _table(head: Sequence[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


FIELD_COLUMNS = [
    "field",
    "PSI",
    "PSI of present values",
    "unknown ref",
    "unknown cur",
    "missing ref",
    "missing cur",
]


def monitor_html(report: dict[str, Any], png: Path) -> str:
    """The monitor's self-contained page: alerts, warnings, fields, new categories, distributions, performance."""
    finding_rows = [[a["message"]] for a in report["alerts"]]
    warn_rows = [[a["message"]] for a in report["warnings"]]
    field_rows = [
        [
            f if s.get("alerted", True) else f"{f} (not alerted: {s['why']})",
            s["psi"],
            s.get("psi_present"),
            *((s["unknown_rate"] or {}).get(k) for k in ("reference", "current")),
            s["missing_rate"]["reference"],
            s["missing_rate"]["current"],
        ]
        for f, s in report["fields"].items()
    ]
    new_rows = [
        [f, v["value"], v["sessions"], v["events"], ", ".join(v["example_sessions"])]
        for f, new in report["new_categories"].items()
        for v in new["values"]
    ]
    q_rows = []
    for name, key in (
        ("session length", "session_length"),
        ("inter-event seconds", "inter_event_seconds"),
        ("score", "score"),
    ):
        for side in ("reference", "current"):
            q = report[key][side] or {}
            q_rows.append([name, side, *(q.get(k) for k in ("mean", "p10", "p50", "p90", "p99"))])
    perf = report["performance"]
    perf_html = (
        _table(list(perf), [list(perf.values())]) if perf else "<p>No labels for the current window.</p>"
    )
    none = "<p>None.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>seqfraud monitor</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#eee}}</style></head><body>
<h1>Is today's traffic still like the training data?</h1>
<p>Model {_cell(report["model_version"])}. Reference: {_cell(report["reference"]["source"])}
({report["reference"]["sessions"]:,} sessions); current: {_cell(report["current"]["source"])}
({report["current"]["sessions"]:,} sessions).</p>
<h2>Alerts ({len(finding_rows)})</h2>
{_table(["alert"], finding_rows) if finding_rows else none}
<h2>Warnings ({len(warn_rows)})</h2>{_table(["warning"], warn_rows) if warn_rows else none}
{"".join(f"<p>{_cell(note)}</p>" for note in report["notes"])}
<h2>Token fields</h2>{_table(FIELD_COLUMNS, field_rows)}
<h2>Categories the model never learned ({sum(n["count"] for n in report["new_categories"].values()):,})</h2>
{_table(["field", "value", "sessions", "events", "example sessions"], new_rows) if new_rows else none}
<h2>Distributions</h2>{_table(["quantity", "window", "mean", "p10", "p50", "p90", "p99"], q_rows)}
<p>Session length PSI {_cell(report["session_length"]["psi"])}; score PSI {_cell(report["score"]["psi"])}.</p>
<h2>Performance on the current window</h2>{perf_html}
<img alt="PSI per field, score, session length and inter-event time distributions" src="{_embedded_png(png)}">
</body></html>
"""


# ---------------------------------------------------------------------------------------------- export


def reliability_png(splits: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], path: Path) -> None:
    """Reliability diagram: observed fraud rate against mean score per bin, one panel per split.

    ``splits``: panel title -> (labels, {curve label: scores}), e.g. raw and calibrated scores.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 4), sharey=True, squeeze=False)
    for ax, (title, (y, curves)) in zip(axes[0], splits.items()):
        for (label, p), marker in zip(curves.items(), "osd^"):
            if len(y):
                mean_p, rate, _ = reliability_curve(y, p)
                ax.plot(
                    mean_p, rate, marker=marker, label=f"{label}, ECE {expected_calibration_error(y, p):.3f}"
                )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(title=title, xlabel="mean score in bin", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    axes[0][0].set_ylabel("observed fraud rate")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- backtest


def _when(iso: str) -> str:
    t = datetime.fromisoformat(iso).astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d") if t.time() == datetime.min.time() else t.strftime("%Y-%m-%d %H:%M")


def typology_recall(row: dict, typology: str, fpr: float) -> tuple[float, int]:
    """Recall at ``fpr`` of one typology in one window, and its number of positives (NaN, 0 when absent)."""
    m = row["test"].get("per_typology", {}).get(typology)
    return (m[recall_key(fpr)], int(m["positives"])) if m else (float("nan"), 0)


def backtest_markdown(result: dict) -> str:
    """One row per window and model; a typology cell reads 'recall (positives)'."""
    fpr, key = result["fpr"], recall_key(result["fpr"])
    recall = recall_label(fpr)
    head = [
        "window",
        "model",
        "test period",
        "sessions",
        "positives",
        "PR-AUC",
        "ROC-AUC",
        recall,
        *[f"{t} {recall}" for t in result["typologies"]],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        t = r["test"]
        cells = [
            str(r["window"]),
            kept_label(r["model"], r.get("kept")),
            f"{_when(r['test_start'])} – {_when(r['test_end'])}",
            f"{int(t['n']):,}",
            f"{int(t['positives']):,}",
            fmt(t["pr_auc"]),
            fmt(t["roc_auc"]),
            fmt(t[key]),
        ]
        for ty in result["typologies"]:
            v, n = typology_recall(r, ty, fpr)
            cells.append(f"{fmt(v)} ({n})" if n else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [
        f"- window {r['window']}, {r['model']} (test {_when(r['test_start'])} – {_when(r['test_end'])}): skipped, "
        f"{r['why']}"
        for r in result.get("skipped", [])
    ]
    # Said where the figures are read, not in a log line alone (review 104): a retrain at the window's test start
    # could not have had these labels, so the window's figures read better than production would.
    # Of the split's sessions where the run records them: counts alone read as training sizes that shrank as the
    # windows moved on (dogfood 228).
    late = {
        r["window"]: (r["labels_known_after_test_start"], r.get("splits") or {})
        for r in result["rows"]
        if r.get("labels_known_after_test_start")
    }
    unknown = [
        f"- window {w}: "
        + ", ".join(
            f"{c['sessions']:,} {_of(whole.get(split), 'sessions')}{split} sessions ({c['positives']:,} "
            f"{_of(whole.get(split), 'positives')}positive)"
            for split, c in splits.items()
        )
        for w, (splits, whole) in sorted(late.items())
    ]
    return (
        f"Backtest: {result['windows']} windows of {result['window_days']:g} days, validation on the "
        f"{result['val_days']:g} days before each, retrained per window.\n\n"
        + "\n".join(lines)
        + "\n"
        + ("\nSkipped:\n\n" + "\n".join(skipped) + "\n" if skipped else "")
        + (
            "\nTrained and validated on labels known only after the window's test start, which a retrain then "
            "could not have had (data.split.label_cutoff=test_start leaves them out):\n\n"
            + "\n".join(unknown)
            + "\n"
            if unknown
            else ""
        )
    )


def _of(whole: Mapping[str, int] | None, key: str) -> str:
    """``of N `` where a split's whole count is known, for the late labels' lines."""
    return f"of {whole[key]:,} " if whole and key in whole else ""


def backtest_legend(model: str, rows: list[dict]) -> str:
    """A model's line in the backtest plot: with the part a stacked model kept alone when every window kept the
    same (:func:`~seqfraud.rundir.kept_label`), else that the windows differ (the table says which)."""
    kept = {r.get("kept") for r in rows}
    return kept_label(model, kept.pop()) if len(kept) == 1 else f"{model} (kept varies by window)"


def backtest_png(result: dict, path: Path) -> None:
    """Test PR-AUC and recall per window per model, plus the highlighted typology's recall where it occurs."""
    plt = _pyplot()
    fpr, key, rows = result["fpr"], recall_key(result["fpr"]), result["rows"]
    recall = recall_label(fpr)
    highlight = result["highlight_typology"]
    show_highlight = bool(highlight) and any(typology_recall(r, highlight, fpr)[1] for r in rows)
    panels: list[tuple[str, Callable[[dict], float]]] = [
        ("test PR-AUC", lambda r: r["test"]["pr_auc"]),
        (f"test {recall}", lambda r: r["test"][key]),
    ]
    if show_highlight:
        panels.append((f"{highlight} {recall}", lambda r: typology_recall(r, highlight, fpr)[0]))
    windows = sorted({r["window"] for r in rows})
    starts = {r["window"]: _when(r["test_start"]) for r in rows}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (title, value) in zip(axes[0], panels):
        for model in result["models"]:
            mine = [r for r in rows if r["model"] == model]
            label = backtest_legend(model, mine)
            ax.plot([r["window"] for r in mine], [value(r) for r in mine], marker="o", label=label)
        ax.set_title(title)
        ax.set(ylim=(-0.03, 1.03), xlim=(windows[0] - 0.4, windows[-1] + 0.4))
        ax.set_xticks(windows, [f"{w}\n{starts[w]}" for w in windows], fontsize=8)
        ax.set_xlabel("window (test start)")
        ax.grid(alpha=0.3)
    if show_highlight:
        ax = axes[0][-1]
        for w in windows:
            n = typology_recall(next(r for r in rows if r["window"] == w), highlight, fpr)[1]
            ax.annotate(
                f"n={n}", (w, 0.0), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7
            )
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"Backtest: {result['windows']} windows of {result['window_days']:g} days, retrained per window",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- explain


def _shade(c: float, scale: float) -> str:
    """Red for events that raised the score, blue for those that lowered it; stronger for larger shares."""
    a = min(abs(c) / scale, 1.0) * 0.85 if scale > 0 else 0.0
    return f"rgba(214,39,40,{a:.3f})" if c > 0 else f"rgba(31,119,180,{a:.3f})"


def _fields_text(fields: dict | None) -> str:
    """An event's other values, ``amount=4500.5, days=1251, device=ios``: an amount that is the whole signal is
    shown. Numeric columns are read as floats, and a whole number is written as one: ``days=1251.0`` read as a
    fraction of a day to an investigator (dogfood 198)."""

    def text(v: Any) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else str(v)

    return ", ".join(f"{k}={text(v)}" for k, v in (fields or {}).items() if v is not None)


def session_html(explained: pl.DataFrame, scored: dict, model_version: str) -> str:
    """One session's events in time order, each shaded by its contribution to the score."""
    scale = float(np.abs(explained[S.CONTRIBUTION].to_numpy()).max(initial=0.0))
    rows = "\n".join(
        f'<tr style="background:{_shade(r[S.CONTRIBUTION], scale)}"><td>{r[S.POSITION]}</td>'
        f"<td>{html.escape(str(r[S.EVENT_TIME]))}</td><td>{html.escape(str(r[S.EVENT]))}</td>"
        f"<td class=n>{r[S.CONTRIBUTION]:+.4f}</td><td>{html.escape(_fields_text(r.get(S.FIELDS)))}</td></tr>"
        for r in explained.iter_rows(named=True)
    )
    sid = html.escape(str(scored[S.SESSION_ID]))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>seqfraud: session {sid}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}td.n{{text-align:right;font-family:monospace}}
.legend span{{padding:2px 8px;margin-right:8px}}</style></head><body>
<h2>Session {sid}</h2>
<p>score <b>{scored[S.SCORE]:.4f}</b> (model {scored[S.RAW_SCORE]:.4f}), band <b>{html.escape(scored[S.BAND])}</b>,
model {html.escape(model_version)}</p>
{"".join(f"<p><b>Note:</b> {html.escape(note)}</p>" for note in scored.get("notes", []))}
<p class="legend"><span style="background:{_shade(1, 1)}">raised the score</span>
<span style="background:{_shade(-1, 1)}">lowered it</span>
contribution = model probability minus the probability without that event</p>
<table><tr><th>#</th><th>time (UTC)</th><th>event</th><th>contribution</th><th>fields</th></tr>
{rows}
</table></body></html>
"""


# A session's bar chart shows at most this many events: a 608-event session drew a chart 16,524 pixels tall.
PNG_EVENTS = 40


def session_png(explained: pl.DataFrame, scored: dict, path: str | Path) -> None:
    """The same timeline as a bar chart, first event on top; of a longer session, the :data:`PNG_EVENTS` events
    of largest contribution (either sign), in time order, as the title says (the HTML lists them all)."""
    plt = _pyplot()
    n = explained.height
    if n > PNG_EVENTS:
        top = np.argsort(-np.abs(explained[S.CONTRIBUTION].to_numpy()), kind="stable")[:PNG_EVENTS]
        explained = explained[np.sort(top)]
    c = explained[S.CONTRIBUTION].to_list()
    labels = [f"{p}  {e}" for p, e in zip(explained[S.POSITION].to_list(), explained[S.EVENT].to_list())]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(c) + 1.2), dpi=90)
    ax.barh(range(len(c)), c, color=["#d62728" if x > 0 else "#1f77b4" for x in c])
    ax.set_yticks(range(len(c)), labels, fontsize=8)
    ax.invert_yaxis()  # first event on top: read it as a timeline
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("contribution: model probability minus that without the event")
    # Both scales, as the HTML gives them: the bars are on the model's, and a steep calibration makes the served
    # score move several times as much (dogfood 24: bars of 0.02 under a title of 0.941).
    # The id on a line of its own, cut past 60 characters: a uuid's cut the band off the figure (dogfood 193).
    sid = str(scored[S.SESSION_ID])
    ax.set_title(
        f"session {sid if len(sid) <= 60 else sid[:57] + '...'}\n"
        f"score {scored[S.SCORE]:.3f} (model {scored[S.RAW_SCORE]:.3f}), band {scored[S.BAND]}"
        + (
            f"\nthe {PNG_EVENTS} events of largest contribution of its {n:,} (all in the HTML)"
            if n > len(c)
            else ""
        ),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- leaderboard


def plot_pr_curves(runs: list[Run], rows: list[dict], path: Path) -> None:
    """Test PR curves of all runs in leaderboard order; the legend gives each run's test PR-AUC."""
    from sklearn.metrics import precision_recall_curve

    plt = _pyplot()

    by_name = {r.name: r for r in runs}
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    colors = [cmap(i) for i in range(cmap.N)]
    for i, row in enumerate(rows):
        pred = pl.read_parquet(predictions(by_name[row["run"]].path, "test"), columns=[S.LABEL, S.SCORE])
        if not 0 < pred[S.LABEL].sum() < pred.height:
            continue
        precision, rec, _ = precision_recall_curve(pred[S.LABEL].to_numpy(), pred[S.SCORE].to_numpy())
        ax.plot(
            rec,
            precision,
            drawstyle="steps-post",
            color=colors[i % len(colors)],
            lw=1.3,
            label=curve_label(row),
        )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="test PR curves (PR-AUC)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_leaderboard_markdown(rows: list[dict], fpr: float, recall: float, path: Path) -> None:
    head, body = leaderboard_table(rows, fpr, recall)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    path.write_text(
        "Leaderboard, best validation PR-AUC first; test metrics on the out-of-time test split.\n\n"
        + "\n".join(lines)
        + f"\n\n![test PR curves]({OUTPUT_FILES[2]})\n"
    )


def write_leaderboard_html(rows: list[dict], fpr: float, recall: float, png: Path, path: Path) -> None:
    """One file to mail around: the PR-curve PNG is embedded as base64."""
    head, body = leaderboard_table(rows, fpr, recall)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>seqfraud leaderboard</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(-n+5),th{{text-align:left}}
tr:nth-child(even){{background:#f6f6f6}}</style></head><body>
<h1>Leaderboard</h1><p>Best validation PR-AUC first; test metrics on the out-of-time test split.</p>
<table><tr>{th}</tr>
{trs}
</table>
<h2>Test PR curves</h2><img alt="test PR curves" src="{_embedded_png(png)}">
</body></html>
""")


def write_leaderboard(
    paths: Sequence[str | Path], out_dir: str | Path | None = None, *, fpr: float = 0.01, recall: float = 0.5
) -> list[dict[str, Any]]:
    """Rank the runs under ``paths`` and write the leaderboard files into ``out_dir`` (default: their common parent)."""
    runs, rows, common = rank_runs(paths, fpr, recall)
    out = Path(out_dir) if out_dir else common
    out.mkdir(parents=True, exist_ok=True)
    md, page, png = (out / f for f in OUTPUT_FILES)
    plot_pr_curves(runs, rows, png)
    write_leaderboard_markdown(rows, fpr, recall, md)
    write_leaderboard_html(rows, fpr, recall, png, page)
    return rows
