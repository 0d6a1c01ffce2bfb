"""Drift monitoring: is today's traffic still like the data the exported model was trained on?

``python -m seqfraud.monitor --artifact A --current CUR [--reference REF] [--labels L] [--out DIR] [--fail-on-alert]``
compares a current window of raw events with a reference window, through the artifact's own spec and
model, and writes ``monitor.json``, ``monitor.html`` (self-contained) and ``monitor.png``:

- PSI per token field (vocabulary ids, numeric buckets, time-delta buckets; reserved ids are bins too);
- the unknown-token rate per categorical field, reference vs current;
- session length and inter-event time (quantiles, and PSI of the length distribution);
- PSI of the model's scores on fixed score bins;
- PR-AUC, ROC-AUC and recall at 1% FPR on the current window when its labels are known (they arrive late).

The reference is ``--reference`` (raw events) or, by default, the tokenized train dataset of the run the
artifact was exported from (the manifest records its directory). Each alert names the check, the field, the
value and the threshold; ``--fail-on-alert`` exits with status 1 when there is any (status 2: bad input, as
every command's user errors).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import DataValidationError, read_labels, scan_table
from seqfraud.data.shards import shard_files
from seqfraud.errors import UserError, command
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, PAD, UNKNOWN, Spec
from seqfraud.metrics import classification_metrics, recall_key
from seqfraud.scoring.prepare import Sequences, as_frame, normalized_events, polars_sequences
from seqfraud.scoring.scorer import Scorer

OUTPUT_FILES = ("monitor.json", "monitor.html", "monitor.png")
EXIT_ALERT = 1  # like diff: 1 means "differences found", 2 (a user error, see seqfraud.errors) means trouble
PSI_EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
SCORE_BINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
QUANTILES = (0.1, 0.5, 0.9, 0.99)
DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi_warn": 0.1,  # token field or session length PSI: warning from here
    "psi_alert": 0.25,  # ... alert from here
    "unknown_rate_alert": 0.001,  # alert when a field's unknown-token share of events rises by this much (absolute)
    "score_psi_alert": 0.25,  # alert on PSI of the score distribution
}
_RESERVED_NAMES = {PAD: "<pad>", UNKNOWN: "<unknown>", MISSING: "<missing>", NAN: "<nan>"}


class MonitorError(UserError, ValueError):
    """Inputs the monitor cannot compare: no reference, an empty window, unknown thresholds."""


@dataclass
class Window:
    """One period of traffic in model tokens, with raw inter-event seconds where raw events were given."""

    source: str
    seqs: Sequences
    deltas_s: np.ndarray | None  # seconds between consecutive events of a session; None from a tokenized dataset


# ---------------------------------------------------------------------------------------------- inputs


def check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    t = dict(DEFAULT_THRESHOLDS)
    unknown = sorted(set(thresholds or {}) - set(t))
    if unknown:
        raise MonitorError(f"unknown threshold(s) {unknown}; known thresholds are {sorted(t)}")
    t.update({k: float(v) for k, v in (thresholds or {}).items()})
    if not t["psi_warn"] <= t["psi_alert"]:
        raise MonitorError(f"psi_warn ({t['psi_warn']}) must not exceed psi_alert ({t['psi_alert']})")
    return t


def raw_window(events: Any, spec: Spec, source: str = "events") -> tuple[Window, pl.LazyFrame]:
    """Raw events (a path, or a frame in the training column names) through the spec, like the scorer reads them."""
    if isinstance(events, (str, Path)):
        lf, source = scan_table(events, spec.schema)
    else:
        lf = as_frame(events, spec, source).lazy()
    if lf.head(1).collect().height == 0:
        raise DataValidationError(f"{source}: no events")
    normalized = normalized_events(lf, spec, source)
    deltas = (
        normalized.lazy()
        .sort(S.SESSION_ID, S.TS_US, S.ROW_INDEX)
        .select((pl.col(S.TS_US).diff().over(S.SESSION_ID).cast(pl.Float64) / 1e6).alias("d"))
        .drop_nulls()
        .collect()["d"].to_numpy()
    )
    return Window(source, polars_sequences(normalized, spec), deltas), lf


def dataset_window(path: Path, spec: Spec) -> Window:
    """A tokenized dataset written by preprocessing (one row per session, a token list per field)."""
    try:
        files = shard_files(path)
    except FileNotFoundError:
        raise MonitorError(f"{path}: the run's tokenized train dataset is missing; pass --reference with raw "
                           "events of the training period") from None
    cols = [S.token_column(f) for f in spec.fields]
    data = pl.read_parquet(files, columns=[S.SESSION_ID, S.LENGTH, *cols])
    if data.height == 0:
        raise MonitorError(f"{path}: no sessions")
    tokens = data.select(pl.col(c).explode() for c in cols).to_numpy().astype(np.int64)
    return Window(str(path), Sequences(data[S.SESSION_ID].to_list(), tokens, data[S.LENGTH].to_numpy().astype(np.int64)),
                  None)


def default_reference(scorer: Scorer, artifact: str | Path) -> Window:
    """The training period the artifact records: its run's tokenized train dataset."""
    from seqfraud.preprocess import DATA_DIR

    run_dir = (scorer.manifest.get("source") or {}).get("run_dir")
    if not run_dir:
        raise MonitorError(f"{artifact}: the manifest records no training run (source.run_dir) and the artifact "
                           "holds no reference statistics; pass --reference with raw events of the training period")
    return dataset_window(Path(run_dir) / DATA_DIR / "train", scorer.spec)


def current_labels(labels: Any, events_lf: pl.LazyFrame, spec: Spec) -> pl.DataFrame | None:
    """``session_id, label`` from a label table (path or frame), else the events' label column, else None."""
    s = spec.schema
    if labels is None:
        if s.label not in events_lf.collect_schema():
            return None
        table = events_lf.select(pl.col(s.session_id).cast(pl.String).alias(S.SESSION_ID),
                                 pl.col(s.label).cast(pl.Float64).alias(S.LABEL)).drop_nulls().collect()
        return table.group_by(S.SESSION_ID).agg(pl.col(S.LABEL).max().cast(pl.Int8))
    if isinstance(labels, (str, Path)):
        return read_labels(str(labels), s)[0]
    missing = [c for c in (s.session_id, s.label) if c not in labels.columns]
    if missing:
        raise DataValidationError(f"labels: missing column(s) {missing}. Columns present: {labels.columns}")
    return labels.select(pl.col(s.session_id).cast(pl.String).alias(S.SESSION_ID),
                         pl.col(s.label).cast(pl.Int8).alias(S.LABEL))


# ---------------------------------------------------------------------------------------------- statistics


def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    r = np.maximum(np.asarray(reference, np.float64) / max(float(np.sum(reference)), 1e-12), eps)
    c = np.maximum(np.asarray(current, np.float64) / max(float(np.sum(current)), 1e-12), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def token_label(spec: Spec, field_name: str, token: int) -> str:
    if token in _RESERVED_NAMES:
        return _RESERVED_NAMES[token]
    if field_name in spec.vocab:
        return spec.vocab[field_name][token - FIRST_ID]
    edges, i = spec.edges[field_name], token - FIRST_ID
    lo = "-inf" if i == 0 else f"{edges[i - 1]:g}"
    hi = "inf" if i == len(edges) else f"{edges[i]:g}"
    return f"({lo}, {hi}]"


def length_edges(max_len: int) -> np.ndarray:
    """Session-length bins 1, 2, 3-4, 5-8, ... and ``max_len`` alone (truncated sessions)."""
    edges = [1]
    while edges[-1] * 2 < max_len:
        edges.append(edges[-1] * 2)
    return np.array([*edges, max_len, max_len + 1], dtype=np.float64)  # right-open bins [e_i, e_{i+1})


def quantiles(x: np.ndarray | None) -> dict[str, float] | None:
    if x is None or len(x) == 0:
        return None
    qs = np.quantile(np.asarray(x, np.float64), QUANTILES)
    return {"mean": float(np.mean(x)), **{f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)}}


def field_stats(spec: Spec, ref: Window, cur: Window) -> dict[str, dict[str, Any]]:
    out = {}
    for j, f in enumerate(spec.fields):
        size = spec.vocab_size(f)
        rc = np.bincount(ref.seqs.tokens[:, j], minlength=size)[:size]
        cc = np.bincount(cur.seqs.tokens[:, j], minlength=size)[:size]
        rs, cs = rc / max(rc.sum(), 1), cc / max(cc.sum(), 1)
        moved = np.argsort(-np.abs(cs - rs))[:5]
        out[f] = {
            "psi": psi(rc[1:], cc[1:]),  # PAD never occurs in kept events
            "unknown_rate": {"reference": float(rs[UNKNOWN]), "current": float(cs[UNKNOWN])}
            if f in spec.vocab else None,
            "missing_rate": {"reference": float(rs[MISSING]), "current": float(cs[MISSING])},
            "top_moves": [{"token": token_label(spec, f, int(t)), "reference": float(rs[t]), "current": float(cs[t])}
                          for t in moved if rs[t] != cs[t]],
        }
    return out


def performance(scores: pl.DataFrame, labels: pl.DataFrame | None, fpr: float = 0.01) -> dict[str, Any] | None:
    if labels is None:
        return None
    joined = scores.join(labels, on=S.SESSION_ID, how="inner")
    m = classification_metrics(joined[S.LABEL].to_numpy(), joined[S.SCORE].to_numpy(), fpr=fpr)
    keep = ("n", "positives", "pr_auc", "roc_auc", recall_key(fpr))
    return {k: (None if isinstance(m[k], float) and math.isnan(m[k]) else m[k]) for k in keep} | {
        "labelled_share": joined.height / max(scores.height, 1)}


# ---------------------------------------------------------------------------------------------- main entry


def monitor(artifact: str | Path, current: Any, reference: Any = None, labels: Any = None,
            thresholds: Mapping[str, float] | None = None, *, out: str | Path | None = None,
            fmt: str = "torchscript") -> dict[str, Any]:
    """Compare ``current`` raw events with ``reference`` (raw events; default: the run's train dataset).

    ``current``/``reference``: a Parquet/CSV path (file, directory or glob) or a frame in the training column
    names. ``labels``: a label table (path or frame) for the current window; by default the events' label
    column if they have one. Returns the report dict; with ``out`` also writes :data:`OUTPUT_FILES` there.
    """
    t = check_thresholds(thresholds)
    scorer = Scorer.load(artifact, fmt=fmt)
    spec = scorer.spec
    cur, cur_lf = raw_window(current, spec, "current")
    ref = default_reference(scorer, artifact) if reference is None else raw_window(reference, spec, "reference")[0]
    label_table = current_labels(labels, cur_lf, spec)

    fields = field_stats(spec, ref, cur)
    ref_scores = scorer.score_sequences(ref.seqs)[S.SCORE].to_numpy()  # the served score, calibration included
    cur_scored = scorer.score_sequences(cur.seqs)
    cur_scores = cur_scored[S.SCORE].to_numpy()
    bins = np.asarray(SCORE_BINS)
    len_bins = length_edges(spec.max_len)
    ref_len_counts = np.histogram(ref.seqs.lengths, len_bins)[0]
    cur_len_counts = np.histogram(cur.seqs.lengths, len_bins)[0]
    report: dict[str, Any] = {
        "artifact": str(artifact),
        "model_version": scorer.model_version,
        "reference": {"source": ref.source, "sessions": len(ref.seqs), "events": int(ref.seqs.lengths.sum())},
        "current": {"source": cur.source, "sessions": len(cur.seqs), "events": int(cur.seqs.lengths.sum())},
        "thresholds": t,
        "fields": fields,
        "session_length": {
            "psi": psi(ref_len_counts, cur_len_counts),
            "bins": len_bins[:-1].astype(int).tolist(),
            "reference": quantiles(ref.seqs.lengths) | {"truncated_share": float(np.mean(ref.seqs.lengths == spec.max_len))},
            "current": quantiles(cur.seqs.lengths) | {"truncated_share": float(np.mean(cur.seqs.lengths == spec.max_len))},
        },
        "inter_event_seconds": {"psi": fields[S.TIME_DELTA]["psi"], "reference": quantiles(ref.deltas_s),
                                "current": quantiles(cur.deltas_s)},
        "score": {
            "psi": psi(np.histogram(ref_scores, bins)[0], np.histogram(cur_scores, bins)[0]),
            "bins": list(SCORE_BINS),
            "reference": quantiles(ref_scores),
            "current": quantiles(cur_scores),
            "current_bands": dict(cur_scored[S.BAND].value_counts().iter_rows()),
        },
        "performance": performance(cur_scored, label_table),
    }
    report["alerts"], report["warnings"] = alerts(report, t)
    if out is not None:
        write_report(report, spec, ref, cur, ref_scores, cur_scores, Path(out))
    return report


def alerts(report: dict[str, Any], t: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """Each finding as ``{check, field, value, threshold}``: alerts at or above the alert levels, warnings below."""
    found, warned = [], []

    def psi_check(check: str, name: str, value: float) -> None:
        if value >= t["psi_alert"]:
            found.append({"check": check, "field": name, "value": value, "threshold": t["psi_alert"]})
        elif value >= t["psi_warn"]:
            warned.append({"check": check, "field": name, "value": value, "threshold": t["psi_warn"]})

    for name, stats in report["fields"].items():
        psi_check("psi", name, stats["psi"])
        u = stats["unknown_rate"]
        if u is not None and u["current"] - u["reference"] >= t["unknown_rate_alert"]:
            found.append({"check": "unknown_rate_increase", "field": name, "value": u["current"] - u["reference"],
                          "threshold": t["unknown_rate_alert"], "reference": u["reference"], "current": u["current"]})
    psi_check("psi", "session_length", report["session_length"]["psi"])
    if report["score"]["psi"] >= t["score_psi_alert"]:
        found.append({"check": "score_psi", "field": S.SCORE, "value": report["score"]["psi"],
                      "threshold": t["score_psi_alert"]})
    return found, warned


# ---------------------------------------------------------------------------------------------- outputs


def plot(report: dict[str, Any], spec: Spec, ref: Window, cur: Window, ref_scores: np.ndarray,
         cur_scores: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = report["thresholds"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    names = list(report["fields"])
    values = [report["fields"][f]["psi"] for f in names] + [report["session_length"]["psi"], report["score"]["psi"]]
    names += ["session_length", "score"]
    colors = ["tab:red" if v >= t["psi_alert"] else "tab:orange" if v >= t["psi_warn"] else "tab:blue" for v in values]
    ax.barh(names, values, color=colors)
    ax.axvline(t["psi_warn"], color="tab:orange", ls="--", lw=1, label=f"warn {t['psi_warn']:g}")
    ax.axvline(t["psi_alert"], color="tab:red", ls="--", lw=1, label=f"alert {t['psi_alert']:g}")
    ax.invert_yaxis()
    ax.set_title("PSI, current vs reference")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    bins = np.asarray(SCORE_BINS)
    x = np.arange(len(bins) - 1)
    _paired_shares(ax, x, np.histogram(ref_scores, bins)[0], np.histogram(cur_scores, bins)[0])
    ax.set_xticks(x, [f"{b:g}" for b in bins[:-1]], fontsize=7)
    ax.set_title(f"Score share per bin (PSI {report['score']['psi']:.3f})")
    ax.set_xlabel("score bin (lower edge)")

    ax = axes[1, 0]
    edges = length_edges(spec.max_len)
    x = np.arange(len(edges) - 1)
    _paired_shares(ax, x, np.histogram(ref.seqs.lengths, edges)[0], np.histogram(cur.seqs.lengths, edges)[0])
    ax.set_xticks(x, [f"{int(e)}" for e in edges[:-1]], fontsize=7)
    ax.set_title(f"Session length (PSI {report['session_length']['psi']:.3f})")
    ax.set_xlabel("events per session (bin lower edge; last: truncated)")

    ax = axes[1, 1]
    j = spec.fields.index(S.TIME_DELTA)
    size = spec.vocab_size(S.TIME_DELTA)
    ref_counts, cur_counts = (np.bincount(w.seqs.tokens[:, j], minlength=size)[1:size] for w in (ref, cur))
    _paired_shares(ax, np.arange(1, size), ref_counts, cur_counts)
    ax.set_title(f"Inter-event time bucket (PSI {report['fields'][S.TIME_DELTA]['psi']:.3f})")
    ax.set_xlabel("time-delta token id (2: first event; 4..: log-spaced seconds)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _paired_shares(ax, x: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray) -> None:
    """Reference and current shares per bin, side by side."""
    for shift, counts, label in ((-0.2, ref_counts, "reference"), (0.2, cur_counts, "current")):
        ax.bar(x + shift, counts / max(counts.sum(), 1), width=0.4, label=label)
    ax.legend(fontsize=8)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def write_report(report: dict[str, Any], spec: Spec, ref: Window, cur: Window, ref_scores: np.ndarray,
                 cur_scores: np.ndarray, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor.json").write_text(json.dumps(report, indent=2, default=float))
    png = out / "monitor.png"
    plot(report, spec, ref, cur, ref_scores, cur_scores, png)
    img = base64.b64encode(png.read_bytes()).decode("ascii")

    def table(head: Sequence[str], rows: list[list[Any]]) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{th}</tr>{trs}</table>"

    finding_rows = [[a["check"], a["field"], a["value"], a["threshold"]] for a in report["alerts"]]
    warn_rows = [[a["check"], a["field"], a["value"], a["threshold"]] for a in report["warnings"]]
    field_rows = [[f, s["psi"], *((s["unknown_rate"] or {}).get(k) for k in ("reference", "current")),
                   s["missing_rate"]["reference"], s["missing_rate"]["current"]] for f, s in report["fields"].items()]
    q_rows = []
    for name, key in (("session length", "session_length"), ("inter-event seconds", "inter_event_seconds"),
                      ("score", "score")):
        for side in ("reference", "current"):
            q = report[key][side] or {}
            q_rows.append([name, side, *(q.get(k) for k in ("mean", "p10", "p50", "p90", "p99"))])
    perf = report["performance"]
    perf_html = table(list(perf), [list(perf.values())]) if perf else "<p>No labels for the current window.</p>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>seqfraud monitor</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#eee}}</style></head><body>
<h1>Is today's traffic still like the training data?</h1>
<p>Model {_fmt(report['model_version'])}. Reference: {_fmt(report['reference']['source'])}
({report['reference']['sessions']:,} sessions); current: {_fmt(report['current']['source'])}
({report['current']['sessions']:,} sessions).</p>
<h2>Alerts ({len(finding_rows)})</h2>{table(["check", "field", "value", "threshold"], finding_rows) if finding_rows else "<p>None.</p>"}
<h2>Warnings ({len(warn_rows)})</h2>{table(["check", "field", "value", "threshold"], warn_rows) if warn_rows else "<p>None.</p>"}
<h2>Token fields</h2>{table(["field", "PSI", "unknown ref", "unknown cur", "missing ref", "missing cur"], field_rows)}
<h2>Distributions</h2>{table(["quantity", "window", "mean", "p10", "p50", "p90", "p99"], q_rows)}
<p>Session length PSI {_fmt(report['session_length']['psi'])}; score PSI {_fmt(report['score']['psi'])}.</p>
<h2>Performance on the current window</h2>{perf_html}
<img alt="PSI per field, score, session length and inter-event time distributions" src="data:image/png;base64,{img}">
</body></html>
"""
    (out / "monitor.html").write_text(page)


# ---------------------------------------------------------------------------------------------- CLI


def _threshold(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


@command
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqfraud.monitor",
                                description="Compare a current window of raw events with the training period of an "
                                            "artifact.")
    p.add_argument("--artifact", required=True, help="artifact directory written by export.py")
    p.add_argument("--current", required=True, help="current raw events: Parquet/CSV file, directory or glob")
    p.add_argument("--reference", help="reference raw events (default: the artifact's run train dataset)")
    p.add_argument("--labels", help="label table for the current window (default: the events' label column, if any)")
    p.add_argument("--out", default="monitor", help="output directory (default: ./monitor)")
    p.add_argument("--threshold", action="append", type=_threshold, default=[], metavar="NAME=VALUE",
                   help=f"override an alert threshold; defaults {DEFAULT_THRESHOLDS}")
    p.add_argument("--format", default="torchscript", choices=("torchscript", "pt2"))
    p.add_argument("--fail-on-alert", action="store_true", help=f"exit with status {EXIT_ALERT} on any alert")
    args = p.parse_args(argv)
    report = monitor(args.artifact, args.current, args.reference, args.labels, dict(args.threshold),
                     out=args.out, fmt=args.format)
    for a in report["alerts"]:
        print(f"ALERT {a['check']} {a['field']}: {a['value']:.4g} (threshold {a['threshold']:g})")
    for a in report["warnings"]:
        print(f"warning {a['check']} {a['field']}: {a['value']:.4g} (threshold {a['threshold']:g})")
    print(f"{len(report['alerts'])} alert(s), {len(report['warnings'])} warning(s) -> {Path(args.out) / 'monitor.html'}")
    return EXIT_ALERT if args.fail_on_alert and report["alerts"] else 0


if __name__ == "__main__":
    sys.exit(main())
