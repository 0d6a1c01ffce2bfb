"""Label-scarce (issue 15): pretrained then fine-tuned, against supervised only and LightGBM, with few labels.

    WANDB_MODE=disabled OMP_NUM_THREADS=2 python benchmarks/label_scarce.py --sessions 6000 \\
        --fractions 0.01 0.05 0.25 1.0 --seeds 0 1 2 --out outputs/benchmarks/label_scarce.md

Per seed, on the built-in generator (``--sessions``), one pretraining run on every training session
(``--pretrain``, default ``+experiment=pretrain_contrastive``; labels unused), and its embeddings
(``seqfraud embed``). Then per label fraction
(``label_fraction``: that share of the training sessions keeps its label, picked by session-id hash, the same for
every model of the seed; validation and test keep all theirs):

- ``supervised``: the small transformer from scratch;
- ``pretrained``: the same model initialized from the pretraining run (``init_from``), its encoder frozen for the
  first epoch;
- ``lightgbm``: LightGBM on session aggregates;
- ``lightgbm+emb``: LightGBM on aggregates plus the pretrained embeddings;
- ``stacked``: the default model (``model=stacked``: LightGBM on the aggregates and the sequence model's
  out-of-fold score) with the pretraining's encoder as its sequence model, from scratch;
- ``stacked+pretrained``: the same with every fit of its sequence model initialized from the pretraining run.

The sequence models, the pretraining's included, are small GRUs, the default model's encoder since session 24
(``--encoder transformer``: the small transformer, which the tables before session 25 measured).

``--models`` picks some of them (the stacked pair costs four sequence fits each).

Reports test PR-AUC and recall at 1% FPR (mean ± std over seeds), and the pretraining's sequences per second.
The generator is a test bed, not a target: read the figures as a check that the machinery works, and judge the
objectives on logs seqfraud has not seen. Hydra overrides after the flags go to every run, so the same arms run
on your own log (the log is then the same for every seed; only the models' seeds and the label shares move)::

    python benchmarks/label_scarce.py --fractions 0.05 1.0 data.events=events.parquet data.labels=labels.parquet \
        data.schema.session_id=visit_ref data.schema.timestamp=occurred_at data.schema.event_type=step \
        data.policy.on_unlabeled=keep
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("supervised", "pretrained", "lightgbm", "lightgbm+emb", "stacked", "stacked+pretrained")


def train(overrides: list[str], out: Path) -> dict:
    """One ``train()`` of the packaged config; the run's metrics.json."""
    from hydra import compose, initialize_config_dir

    from seqfraud.training.train import train as run

    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={out}", "logger=none"])
    run(cfg)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=6000)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.25, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4, help="trainer.max_epochs of every sequence run")
    p.add_argument(
        "--pretrain", default="pretrain_contrastive", help="the pretraining experiment (pretrain_masked, ...)"
    )
    p.add_argument(
        "--objectives", nargs="+", default=None, help="pretrain.objectives (default: the experiment's own)"
    )
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--encoder", choices=("gru", "transformer"), default="gru", help="of every sequence model")
    p.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/label_scarce")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for every run: your own log instead of the generator (data.events=... "
        "data.labels=... data.schema.session_id=... data.policy.on_unlabeled=keep), or an experiment file of "
        "your own (hydra.searchpath=[file:///DIR] +experiment@_global_=NAME)",
    )
    args = p.parse_args()
    if clash := [o for o in args.overrides if o.lstrip("+~").split("=", 1)[0] == "experiment"]:
        # Hydra refused the pretraining run's second one with "Multiple values for experiment" (measurement 82).
        name = clash[0].split("=", 1)[1] if "=" in clash[0] else "NAME"
        p.error(
            f"{clash[0]}: the pretraining run composes +experiment={args.pretrain}; "
            f"pass +experiment@_global_={name}"
        )
    os.environ.setdefault("WANDB_MODE", "disabled")
    from seqfraud import rundir
    from seqfraud.errors import ConfigError
    from seqfraud.training.embeddings import write_session_embeddings

    results: dict[tuple[str, float], list[dict]] = {}
    speed = []
    for seed in args.seeds:
        base = args.work / f"seed{seed}"
        common = [
            f"seed={seed}",
            f"data.synthetic.sessions={args.sessions}",
            f"data.synthetic.seed={seed}",
            f"paths.data_dir={base / 'data'}",
            f"trainer.max_epochs={args.epochs}",
            *args.overrides,
        ]
        pre = base / args.pretrain
        t0 = time.perf_counter()
        objectives = [f"pretrain.objectives=[{','.join(args.objectives)}]"] if args.objectives else []
        small = ["model=small", f"model.encoder={args.encoder}"]
        train([*common, f"+experiment={args.pretrain}", *small, *objectives], pre)
        seconds = time.perf_counter() - t0
        report = json.loads((pre / rundir.REPORT_FILE).read_text())
        n_train = report["splits"]["train"]["sessions"]
        speed.append(n_train * args.epochs / seconds)
        embeddings = base / "embeddings.parquet"
        write_session_embeddings(pre, embeddings)
        for fraction in args.fractions:
            runs = {
                "supervised": [*small, f"prepared_dir={pre}"],
                "pretrained": [*small, f"prepared_dir={pre}", f"init_from={pre}", "freeze_epochs=1"],
                "lightgbm": ["model=lightgbm"],
                "lightgbm+emb": ["model=lightgbm", f"model.embeddings={embeddings}"],
                "stacked": ["model=stacked", f"model.encoder={args.encoder}"],
                "stacked+pretrained": [
                    "model=stacked",
                    f"model.encoder={args.encoder}",
                    f"init_from={pre}",
                    "freeze_epochs=1",
                ],
            }
            for model in args.models:
                extra = runs[model]
                out = base / f"{model}_{fraction}_{args.pretrain}"
                try:
                    metrics = train([*common, *extra, f"label_fraction={fraction}"], out)
                except ConfigError as e:  # a share so small that it holds no positive: nothing to learn from
                    print(seed, fraction, model, "skipped:", e, flush=True)
                    results.setdefault((model, fraction), [])
                    continue
                results.setdefault((model, fraction), []).append(metrics["test"])
                print(seed, fraction, model, round(metrics["test"]["pr_auc"], 4), flush=True)

    def cell(values: list[float]) -> str:
        if not values:
            return "–"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        missing = (
            f" ({len(args.seeds) - len(values)} seed(s) without a positive label)"
            if len(values) < len(args.seeds)
            else ""
        )
        return f"{statistics.mean(values):.3f} ± {spread:.3f}{missing}"

    # What the runs read (an experiment file may name it, not data.events=): the last seed's pretraining's.
    data = f"{report['source']} ({report['n_sessions']:,} sessions)"
    lines = [
        (
            f"{data}, seeds {args.seeds}, {args.epochs} epochs; pretraining ({args.pretrain}"
            + (f", objectives {args.objectives}" if args.objectives else "")
            + ", "
            f"small {args.encoder}) at {statistics.median(speed):,.0f} sequences/s (median over seeds, "
            "validation included)."
        ),
        "",
        "| labels | model | test PR-AUC | recall@1%FPR |",
        "|---:|---|---:|---:|",
    ]
    for fraction in args.fractions:
        for model in args.models:
            got = results[(model, fraction)]
            recall = [m["recall_at_0.01_fpr"] for m in got]
            lines.append(
                f"| {fraction:.0%} | {model} | {cell([m['pr_auc'] for m in got])} | {cell(recall)} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
