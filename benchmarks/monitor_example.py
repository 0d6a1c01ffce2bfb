"""The drift monitor's example in docs/risk.md ("Is today's traffic still like the training data?").

    WANDB_MODE=disabled OMP_NUM_THREADS=1 .venv/bin/python benchmarks/monitor_example.py \\
        --artifact ARTIFACT --work outputs/benchmarks/monitor_example

ARTIFACT is the smoke model of the README's quick path (``seqfraud synthetic --sessions 3000 --out
data/synthetic_smoke``, ``seqfraud train +experiment=smoke``, ``seqfraud export run_dir=RUN out=ARTIFACT``).

Data: a fresh log of the built-in generator, ``generate(2000, seed=11)``, on the smoke run's calendar. Its
sessions are split by the time of their first event at ``--cut`` (default 2026-05-10 00:00 UTC, the day the
gift-card event types ``add_gift_card`` and ``redeem_gift_card``, never in training, begin:
:func:`seqfraud.data.synthetic.late_period_start` is 14:24 that day). The sessions before it, ordered by start,
give the reference (the first half) and the ``early`` window (the second half); the sessions from it on are
the ``late`` window. Each window is monitored
against that reference with the default thresholds and no labels, as ``seqfraud monitor --artifact ARTIFACT
--current WORK/WINDOW.parquet --reference WORK/reference.parquet --out WORK/monitor_WINDOW`` does (the windows
are written there, so the command reruns them). Prints the doc's table, each window's alerts and warnings,
and the share of late events that are gift-card events.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from seqfraud import schema as S
from seqfraud.data import synthetic
from seqfraud.monitoring import monitor

GIFT_CARD = ("add_gift_card", "redeem_gift_card")


def psi_cell(value: float, report: dict) -> str:
    t = report["thresholds"]
    note = " (alert)" if value >= t["psi_alert"] else " (warning)" if value >= t["psi_warn"] else ""
    return f"{value:.3f}{note}"


def alert_cell(report: dict) -> str:
    names = [
        f"`{a['check']}` {a['field']}" + (f" {a['category']}" if "category" in a else "")
        for a in report["alerts"]
    ]
    return ", ".join(names) or "none"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="the smoke model's artifact (README quick path)")
    p.add_argument("--work", default="outputs/benchmarks/monitor_example", help="windows and reports go here")
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--cut", default="2026-05-10", help="late window: sessions starting from then on (UTC)")
    args = p.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cut = datetime.fromisoformat(args.cut).replace(tzinfo=timezone.utc)
    events = synthetic.drift_windows(synthetic.generate(args.sessions, seed=args.seed), cut)
    for name, frame in events.items():
        frame.write_parquet(work / f"{name}.parquet")
    s = S.SYNTHETIC
    reports = {
        name: monitor(
            args.artifact, events[name], reference=events["reference"], out=work / f"monitor_{name}"
        )
        for name in ("early", "late")
    }

    sessions = {name: frame[s.session_id].n_unique() for name, frame in events.items()}
    print(f"sessions: {sessions}")
    print()
    print(
        "| window | event_type unknown rate | event_type PSI | country PSI | session length PSI | score PSI | alerts |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in reports.items():
        f = r["fields"]
        print(
            f"| {name} | {f[s.event_type]['unknown_rate']['current']:.4f} | {psi_cell(f[s.event_type]['psi'], r)} "
            f"| {psi_cell(f['country']['psi'], r)} | {psi_cell(r['session_length']['psi'], r)} "
            f"| {psi_cell(r['score']['psi'], r)} | {alert_cell(r)} |"
        )
    for name, r in reports.items():
        print(f"\n{name}:")
        for a in r["alerts"]:
            print(f"  alert: {a['message']}")
        for w in r["warnings"]:
            print(f"  warning: {w['message'] if isinstance(w, dict) else w}")
    late = events["late"]
    gift = late.filter(pl.col(s.event_type).is_in(GIFT_CARD)).height
    print(f"\ngift-card events: {gift} of {late.height} late events ({gift / late.height:.2%})")


if __name__ == "__main__":
    main()
