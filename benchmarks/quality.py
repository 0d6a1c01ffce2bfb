"""Quality bar on the synthetic test split: sequence models vs the LightGBM aggregates baseline, and ablations.

    python benchmarks/quality.py --sessions 30000 --seeds 0 1 2 --out benchmarks/results/quality.md

Every model is trained through the same ``train(cfg)`` as ``python train.py +experiment=NAME``, on the same
generated data (fixed data seed) with different model seeds. Prints two Markdown tables, mean ± std over
seeds: test PR-AUC, ROC-AUC and recall at 1% FPR overall and per fraud typology (each typology's positives
against all negatives); and, per typology, the ROC-AUC of its true sessions against its own hard negatives
(the legitimate look-alikes that differ only in the typology's signal). The second table is the one that
says which signal a model reads: all-negatives recall can stay high by flagging look-alikes too, since
they are under 1% of traffic. ``fit s`` is the median wall time of ``train(cfg)`` less its
preprocessing (sequence models of one data setting share the first run's preprocessing). A run whose directory
is complete is kept, not run again; ``--report-only`` only rebuilds the tables from the run directories.

``--variants`` runs each experiment in several settings, one table row each (:data:`VARIANTS`): ``plain``
(no entity features), ``entities`` (account, device and IP context, labels used from their chargeback date or
60 days after the session: ``+experiment@_global_=synthetic_entities``), ``leaky`` (the same features with the
label delay ignored: every label usable 1 s after its session ends, an upper bound no production system
reaches), and ``linear`` and ``tokens`` (entity features as one numeric side input, the presets' default, or
as one embedded token each: ``model.entity_input``)::

    OMP_NUM_THREADS=1 python benchmarks/quality.py --sessions 20000 --seeds 0 1 \
        --experiments synthetic_transformer synthetic_gru synthetic_lightgbm --variants plain entities leaky
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import polars as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from seqfraud import rundir
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
PREP_KEY = "prep_key.txt"  # in a run directory that preprocessed: the hash of its data and feature config
ENTITIES = ["+experiment@_global_=synthetic_entities"]
# The overrides of each variant, on top of the experiment; a variant's rows read ``experiment+variant``.
VARIANTS = {
    "plain": [],
    "entities": ENTITIES,
    "leaky": [*ENTITIES, "data.schema.label_time=null", "data.policy.label_delay=1s"],
    "linear": [*ENTITIES, "model.entity_input=linear"],
    "tokens": [*ENTITIES, "model.entity_input=tokens"],
}


def row_name(experiment: str, variant: str) -> str:
    return experiment if variant == "plain" else f"{experiment}+{variant}"


def run_dir(work: Path, name: str, seed: int) -> Path:
    return work / name / str(seed)


def run(experiment: str, variant: str, seed: int, sessions: int, work: Path, extra: list[str]) -> dict:
    name = row_name(experiment, variant)
    overrides = [
        f"+experiment={experiment}",
        *VARIANTS[variant],
        f"seed={seed}",
        f"data.synthetic.sessions={sessions}",
        f"paths.data_dir={work / 'data'}",
        f"paths.output_dir={run_dir(work, name, seed)}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    # Sequence models on the same data and features share one preprocessing (the first such run's directory);
    # LightGBM and the stacker read the raw events, so they always preprocess.
    inputs = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "features", "preprocess")}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    prepared = [p.parent for p in sorted(work.glob(f"*/*/{PREP_KEY}")) if p.read_text() == key]
    if prepared and cfg.model.kind == "sequence":
        cfg.prepared_dir = str(prepared[0])
    t0 = time.perf_counter()
    metrics = train(cfg)
    metrics["seconds"] = time.perf_counter() - t0
    if not cfg.prepared_dir:  # the fit alone, comparable whether or not this run preprocessed
        report = json.loads((run_dir(work, name, seed) / rundir.REPORT_FILE).read_text())
        metrics["seconds"] -= report["seconds"]
    (run_dir(work, name, seed) / "seconds.txt").write_text(f"{metrics['seconds']:.1f}")
    if not cfg.prepared_dir and cfg.model.kind == "sequence":
        (run_dir(work, name, seed) / PREP_KEY).write_text(key)
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
    head = ["model", "test PR-AUC", "ROC-AUC", "recall@1%FPR", *[f"{t} r@1%" for t in TYPOLOGIES], "fit s"]
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


def test_counts(work: Path, results: dict[str, list[dict]], typologies: pl.DataFrame) -> str:
    """How many test sessions each typology has (its positives behind every per-typology figure)."""
    name = next(iter(results), None)
    seeds = [p for p in (work / name).iterdir() if (p / "seconds.txt").exists()] if name else []
    if not seeds:
        return "no runs"
    test = pl.read_parquet(seeds[0] / "predictions/test.parquet").join(typologies, on=S.SESSION_ID)
    counts = dict(test.group_by(S.TYPOLOGY).len().iter_rows())
    return f"{len(test)} sessions; " + ", ".join(f"{t} {counts.get(t, 0)}" for t in TYPOLOGIES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["plain"])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/quality")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument("--report-only", action="store_true", help="tables from existing run directories")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(1)  # tiny models on a shared CPU: intra-op threads only add barriers
    names = {row_name(e, v): (e, v) for e in args.experiments for v in args.variants}
    if not args.report_only:
        for seed in args.seeds:  # seed-major, so a partial run already compares every model
            for name, (experiment, variant) in names.items():
                if (run_dir(args.work, name, seed) / "seconds.txt").exists():
                    print(f"{name} seed={seed}: kept", file=sys.stderr, flush=True)
                    continue
                m = run(experiment, variant, seed, args.sessions, args.work, args.overrides)
                print(
                    f"{name} seed={seed}: test PR-AUC {m['test']['pr_auc']:.3f} ({m['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    typologies = pl.read_parquet(args.work / "data/synthetic/typologies.parquet").rename(
        {SYNTHETIC.session_id: S.SESSION_ID}
    )
    results = {
        name: [
            load_run(run_dir(args.work, name, s), typologies)
            for s in args.seeds
            if (run_dir(args.work, name, s) / "seconds.txt").exists()
        ]
        for name in names
    }
    results = {name: runs for name, runs in results.items() if runs}
    text = (
        f"{args.sessions} synthetic sessions (data seed 0), model seeds {args.seeds}; "
        f"test split = latest 15% of sessions ({test_counts(args.work, results, typologies)}).\n\n"
        f"{table(results)}\n"
    )
    print(text)
    (args.work / "quality.json").write_text(json.dumps(results, indent=2, default=str))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
