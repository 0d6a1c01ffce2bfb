"""Quality bar on the synthetic test split: sequence models vs the LightGBM aggregates baseline, and ablations.

    python benchmarks/quality.py --sessions 30000 --seeds 0 1 2 --out benchmarks/results/quality.md

Every model is trained through the same ``train(cfg)`` as ``python train.py +experiment=NAME``, on the same
generated data (fixed data seed) with different model seeds. Prints two Markdown tables, mean ± std over
seeds: test PR-AUC, ROC-AUC and recall at 1% FPR overall and per fraud typology (each typology's positives
against all negatives); and, per typology, the ROC-AUC of its true sessions against its own hard negatives
(the legitimate look-alikes that differ only in the typology's signal). The second table is the one that
says which signal a model reads: all-negatives recall can stay high by flagging look-alikes too, since
they are under 1% of traffic. ``--report-only`` rebuilds the tables from the run directories.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import polars as pl
from hydra import compose, initialize_config_dir
from sklearn.metrics import roc_auc_score

from seqfraud import schema as S
from seqfraud.data.synthetic import HARD_NEGATIVE_OF, TYPOLOGIES
from seqfraud.schema import SYNTHETIC
from seqfraud.training.train import train

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = [
    "synthetic_transformer",
    "synthetic_gru",
    "synthetic_lightgbm",
    "ablation_shuffled_order",
    "ablation_no_time",
]
RECALL = "recall_at_0.01_fpr"


def run_dir(work: Path, experiment: str, seed: int) -> Path:
    return work / experiment / str(seed)


def run(experiment: str, seed: int, sessions: int, work: Path, extra: list[str]) -> dict:
    overrides = [
        f"+experiment={experiment}",
        f"seed={seed}",
        f"data.synthetic.sessions={sessions}",
        f"paths.data_dir={work / 'data'}",
        f"paths.output_dir={run_dir(work, experiment, seed)}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    t0 = time.perf_counter()
    metrics = train(cfg)
    metrics["seconds"] = time.perf_counter() - t0
    (run_dir(work, experiment, seed) / "seconds.txt").write_text(f"{metrics['seconds']:.1f}")
    return metrics


def hard_negative_auc(directory: Path, typologies: pl.DataFrame) -> dict[str, float]:
    """Per typology: ROC-AUC of its true sessions against its hard negatives on the test split."""
    pred = pl.read_parquet(directory / "predictions/test.parquet").join(typologies, on=S.SESSION_ID)
    out = {}
    for typology, look_alike in HARD_NEGATIVE_OF.items():
        part = pred.filter(pl.col(S.TYPOLOGY).is_in([typology, look_alike]))
        truth = (part[S.TYPOLOGY] == typology).to_numpy()
        out[typology] = (
            float(roc_auc_score(truth, part[S.SCORE])) if 0 < truth.sum() < len(truth) else float("nan")
        )
    return out


def load_run(directory: Path, typologies: pl.DataFrame) -> dict:
    metrics = json.loads((directory / "metrics.json").read_text())
    metrics["seconds"] = float((directory / "seconds.txt").read_text())
    metrics["vs_hard_negatives"] = hard_negative_auc(directory, typologies)
    return metrics


def cell(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict[str, list[dict]]) -> str:
    head = ["model", "test PR-AUC", "ROC-AUC", "recall@1%FPR", *[f"{t} r@1%" for t in TYPOLOGIES], "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in results.items():
        tests = [r["test"] for r in runs]
        row = [
            name,
            cell([t["pr_auc"] for t in tests]),
            cell([t["roc_auc"] for t in tests]),
            cell([t[RECALL] for t in tests]),
        ]
        row += [
            cell([t.get("per_typology", {}).get(ty, {}).get(RECALL, float("nan")) for t in tests])
            for ty in TYPOLOGIES
        ]
        row.append(f"{statistics.median(r['seconds'] for r in runs):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    head = ["model", *[f"{t} vs {HARD_NEGATIVE_OF[t]}" for t in TYPOLOGIES]]
    lines += [
        "",
        "ROC-AUC of each typology against its own hard negatives (true typologies, test split):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, runs in results.items():
        row = [name, *[cell([r["vs_hard_negatives"][t] for r in runs]) for t in TYPOLOGIES]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/quality")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument("--report-only", action="store_true", help="tables from existing run directories")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    if not args.report_only:
        for seed in args.seeds:  # seed-major, so a partial run already compares every model
            for experiment in args.experiments:
                m = run(experiment, seed, args.sessions, args.work, args.overrides)
                print(
                    f"{experiment} seed={seed}: test PR-AUC {m['test']['pr_auc']:.3f} ({m['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    typologies = pl.read_parquet(args.work / "data/synthetic/typologies.parquet").rename(
        {SYNTHETIC.session_id: S.SESSION_ID}
    )
    results = {
        e: [
            load_run(run_dir(args.work, e, s), typologies)
            for s in args.seeds
            if (run_dir(args.work, e, s) / "seconds.txt").exists()
        ]
        for e in args.experiments
    }
    results = {e: runs for e, runs in results.items() if runs}
    text = (
        f"{args.sessions} synthetic sessions (data seed 0), model seeds {args.seeds}; "
        f"test split = latest 15% of sessions.\n\n{table(results)}\n"
    )
    print(text)
    (args.work / "quality.json").write_text(json.dumps(results, indent=2, default=str))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
