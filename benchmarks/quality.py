"""Quality bar on the synthetic test split: sequence models vs the LightGBM aggregates baseline, and ablations.

    python benchmarks/quality.py --sessions 30000 --seeds 0 1 2 --out benchmarks/results/quality.md

Every model is trained through the same ``train(cfg)`` as ``python train.py +experiment=NAME``, on the same
generated data (fixed data seed) with different model seeds. Prints one Markdown table: test PR-AUC,
ROC-AUC and recall at 1% FPR overall, and recall at 1% FPR per fraud typology (each typology's positives
against all negatives), as mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from seqfraud.data.synthetic import TYPOLOGIES
from seqfraud.training.train import train

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["synthetic_transformer", "synthetic_gru", "synthetic_lightgbm", "ablation_shuffled_order",
               "ablation_no_time"]
RECALL = "recall_at_0.01_fpr"


def run(experiment: str, seed: int, sessions: int, work: Path, extra: list[str]) -> dict:
    overrides = [f"+experiment={experiment}", f"seed={seed}", f"data.synthetic.sessions={sessions}",
                 f"paths.data_dir={work / 'data'}", f"paths.output_dir={work / experiment / str(seed)}",
                 "logger=none", "trainer.enable_progress_bar=false", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    t0 = time.perf_counter()
    metrics = train(cfg)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def cell(values: list[float]) -> str:
    values = [v for v in values if v == v]
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
        row = [name, cell([t["pr_auc"] for t in tests]), cell([t["roc_auc"] for t in tests]),
               cell([t[RECALL] for t in tests])]
        row += [cell([t.get("per_typology", {}).get(ty, {}).get(RECALL, float("nan")) for t in tests])
                for ty in TYPOLOGIES]
        row.append(f"{statistics.median(r['seconds'] for r in runs):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/quality")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seed-major, so a partial run already compares every model
        for experiment in args.experiments:
            m = run(experiment, seed, args.sessions, args.work, args.overrides)
            results.setdefault(experiment, []).append(m)
            print(f"{experiment} seed={seed}: test PR-AUC {m['test']['pr_auc']:.3f} ({m['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    text = (f"{args.sessions} synthetic sessions (data seed 0), model seeds {args.seeds}; "
            f"test split = latest 15% of sessions.\n\n{table(results)}\n")
    print(text)
    (args.work / "quality.json").write_text(json.dumps(results, indent=2, default=str))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
