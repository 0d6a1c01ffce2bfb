"""High-cardinality ids (issue 13): dropping, tokenizing, hashing an id column, or making it an entity.

    WANDB_MODE=disabled OMP_NUM_THREADS=1 .venv/bin/python benchmarks/high_cardinality.py \\
        --column device_id --column account_id --buckets 256 --sessions 6000 --seeds 0 1 2 \\
        --work outputs/benchmarks/high_cardinality --out outputs/benchmarks/high_cardinality.md

Data: the built-in synthetic generator (``seqfraud.data.synthetic``), built once per ``--sessions`` and
``--data-seed`` by ``benchmarks/never_lose.py``'s ``prepared_data`` into
``WORK/generator-nSESSIONS-dDATASEED/data``. Its events name an ``account_id``, ``device_id`` and ``ip``
besides the default categoricals (device_type, country, payment_method). Ids recur across the time range but
new ones keep arriving (new accounts, new phones, ring devices), so on the out-of-time test split many ids
were never seen in training. The ``entity_ring`` typology (account takeover by fraud rings working through a
few devices and IPs) is the one a shared id reveals; a ring session alone looks legitimate.

The ways of giving the model one id column C (``--column``, default ``device_id``; repeat it for several,
run one after the other), the ``--variants``:

``drop``
    C not used at all: the default config (C is not in ``data.schema.categorical``). The same runs for every
    C.
``tokens``
    C as one more categorical, ``data.schema.categorical=[device_type,country,payment_method,C]``, with the
    default vocabulary rules (``features.min_count`` 5 events in the training split, ``features.max_vocab``
    1000): ids seen less often, and every id first seen later, become the unknown token.
``tokens_all``
    The same with ``features.min_count=1 features.max_vocab=100000``: every training id its own token
    (memorization). These settings are global, so the three small categoricals also keep their rare values.
``hashed``
    An upstream-derived column ``C_hash`` = ``pl.col(C).hash(seed=0) % B`` as a string (``--buckets`` B,
    default 256), written into a copy of the data (``WORK/.../hashed/C-bB/``: events with the extra column,
    labels and typologies; ``data.events``, ``data.labels`` and ``data.typologies`` point there) and used as
    the fourth categorical instead of C. Every id, new ones included, lands in a bucket shared with about
    ids / B others. Polars' hash is only stable within one Polars version: fine for a benchmark, not for
    production (hash upstream, keyed, and keep the function fixed).
``entity``
    C as an entity column with the entity features instead of a token:
    ``+experiment@_global_=synthetic_entities data.schema.entities=[C]``. That experiment also sets
    ``data.schema.label_time=label_time`` (the chargeback date) and ``data.policy.label_delay=60d`` (when a
    negative counts as known), so the risk features use a label only once it would have been known. The
    categoricals stay the default three.

Models (``--models``): ``default`` is no model override (``train.yaml``'s default sequence model),
``lightgbm`` is ``model=lightgbm`` (LightGBM on session aggregates: a categorical C adds one count column per
vocabulary value plus unknown, missing and n_unique; an entity C adds its entity features' last, max, min and
mean). Every (column, variant, model, seed) is one ``seqfraud.training.train.train(cfg)`` run by
never_lose.py's ``run_one`` (the config composed as ``benchmarks/quality.py`` composes it, ``logger=none``,
``seed=SEED``, ``threads=--threads``), into ``WORK/generator-nSESSIONS-dDATASEED/C-VARIANT-MODEL/SEED``
(``drop-MODEL`` for drop). A finished run directory (one with ``seconds.txt``) is kept, not run again, so an
interrupted command resumes; use a fresh ``--work`` when changing the extra Hydra overrides (positional, e.g.
``trainer.max_epochs=1``; after ``--`` or a one-value option, since ``--seeds``, ``--variants`` and
``--models`` take several values). ``--report-only`` only rebuilds the table.

How to read the table, per column and model: test PR-AUC and recall at 1% FPR (mean ± std over seeds),
``entity_ring r@1%`` (the recall at 1% FPR of the ring sessions against all test negatives: the typology the
id should help with; few positives, so noisy), ``fit s`` (median wall time of ``train(cfg)`` less its
preprocessing) and ``prep s`` (median preprocessing seconds: the entity features are computed there), and
``vocab``: what the run's ``spec.json`` gave the id field (fitted vocabulary entries of C or C_hash, not
counting the reserved ids; for ``entity``, the number of entity feature fields). Below the table, per column:
how many distinct ids the training split has, and how many test sessions carry an id never seen in training
(out of time, new ids are the norm: no token variant can know them) or one outside the default vocabulary
(what ``tokens`` maps to unknown). A variant helps when its PR-AUC beats ``drop`` by more than the seed std.

Cost at ``--sessions 6000`` on the 2-core box, one thread: a default-model run fits in 30-100 s, a LightGBM
run in a few seconds plus preprocessing; 5 variants x 2 models x 3 seeds per column, about 15-30 minutes for
one column (``drop`` is shared between columns). The test split then holds 900 sessions with 23 positives
(data seed 0). Fraud rings are few (about 30 ring sessions per 6000, some 30 sessions a ring) and each is
active for days to weeks, so whether the test split holds any is luck: at 6000 sessions and data seed 0 it
holds none (``entity_ring r@1%`` reads n/a), at 10000 sessions 16, at 20000 sessions 31. Measure the ring
recall with ``--sessions 20000`` (about three times the cost). At 6000 sessions, data seed 0, the training
split holds about 1130 device ids (1057 seen in at least 5 events, cut to 1000 by max_vocab) and 12% of test
sessions come from a device never seen in training, 14% from one outside the default vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import polars as pl
from never_lose import DONE_FILE, GENERATOR, ROOT, kind_dir, load_run, model_rows, prepared_data, run_one
from quality import RECALL, cell
from report import emit

from seqfraud import rundir
from seqfraud import schema as S
from seqfraud.data.shards import shard_files
from seqfraud.data.synthetic import ENTITY_RING
from seqfraud.features.spec import Spec
from seqfraud.schema import SYNTHETIC, SYNTHETIC_ENTITIES

VARIANTS = ("drop", "tokens", "tokens_all", "hashed", "entity")
CATEGORICAL = list(SYNTHETIC.categorical)  # the default categoricals of conf/data/synthetic.yaml
DEFAULT_MIN_COUNT = 5  # features/default.yaml: the vocabulary rule behind ``tokens``
DEFAULT_MAX_VOCAB = 1000
RING_KEY = f"{ENTITY_RING} r@1%"


def hashed_column(column: str) -> str:
    return f"{column}_hash"


def hashed_data(data_dir: Path, column: str, buckets: int) -> Path:
    """A copy of the generator's data whose events carry ``COLUMN_hash`` = the id hashed into ``buckets``
    buckets (a string; null stays null), written once and again only when the events are newer than the copy.
    The labels and typologies are copied along: seqfraud drops the synthetic ones when ``data.events`` points
    elsewhere (``resolve_data_config``), so that they are never picked up for someone else's events."""
    source = data_dir / "events.parquet"
    out = data_dir.parent / "hashed" / f"{column}-b{buckets}"
    done = [out / f"{name}.parquet" for name in ("events", "labels", "typologies")]
    if all(p.exists() for p in done) and done[0].stat().st_mtime >= source.stat().st_mtime:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("labels.parquet", "typologies.parquet"):
        shutil.copyfile(data_dir / name, out / name)
    ids = pl.col(column)
    bucket = (ids.hash(seed=0) % buckets).cast(pl.String)
    events = pl.read_parquet(source).with_columns(
        pl.when(ids.is_null()).then(None).otherwise(bucket).alias(hashed_column(column))
    )
    tmp = out / "events.tmp"
    events.write_parquet(tmp)
    tmp.replace(done[0])
    return out


def variant_overrides(variant: str, column: str, data_dir: Path, buckets: int) -> list[str]:
    """The Hydra overrides that give the model ``column`` the way ``variant`` says."""
    if variant == "drop":
        return []
    if variant in ("tokens", "tokens_all"):
        rows = [f"data.schema.categorical=[{','.join([*CATEGORICAL, column])}]"]
        if variant == "tokens_all":
            rows += ["features.min_count=1", "features.max_vocab=100000"]
        return rows
    if variant == "hashed":
        hashed = hashed_data(data_dir, column, buckets)
        return [
            *(f"data.{name}={hashed / name}.parquet" for name in ("events", "labels", "typologies")),
            f"data.schema.categorical=[{','.join([*CATEGORICAL, hashed_column(column)])}]",
        ]
    if variant == "entity":
        return ["+experiment@_global_=synthetic_entities", f"data.schema.entities=[{column}]"]
    raise ValueError(f"unknown variant {variant!r}; variants are {VARIANTS}")


def row_name(column: str, variant: str, buckets: int, model: str) -> str:
    """The run directory name of a row: ``drop`` does not depend on the column, ``hashed`` on the buckets."""
    if variant == "drop":
        return f"drop-{model}"
    return f"{column}-{'hashed' + str(buckets) if variant == 'hashed' else variant}-{model}"


def vocab_cell(directory: Path, column: str, variant: str) -> str:
    """What the run's spec gave the id: its fitted vocabulary entries, or its entity feature fields."""
    if variant == "drop":
        return "-"
    spec = Spec.load(directory / rundir.SPEC_FILE)
    if variant == "entity":
        return f"{len(spec.entity.feature_names()) if spec.entity else 0} features"
    return str(len(spec.vocab.get(hashed_column(column) if variant == "hashed" else column, [])))


def run_figures(directory: Path, column: str, variant: str) -> dict:
    run = load_run(directory)
    ring = run["test"].get("per_typology", {}).get(ENTITY_RING, {})
    report = json.loads((directory / rundir.REPORT_FILE).read_text())
    return {
        **run,
        "ring": ring.get(RECALL, float("nan")),
        "ring_positives": ring.get("positives"),
        "prep_seconds": float(report["seconds"]),
        "vocab": vocab_cell(directory, column, variant),
    }


def novelty(events: Path, directory: Path, column: str, default_vocab: set[str] | None) -> dict:
    """Of the test sessions of a finished run (``directory``): how many carry an id of ``column`` that no
    training session carries, and how many one outside ``default_vocab`` (the ``tokens`` run's vocabulary)."""
    sid = SYNTHETIC.session_id
    ids = (
        pl.scan_parquet(events)
        .select(pl.col(sid).cast(pl.String).alias(S.SESSION_ID), pl.col(column).cast(pl.String).alias("id"))
        .drop_nulls("id")
        .unique()
        .collect()
    )

    def of(frame: pl.DataFrame) -> pl.DataFrame:
        sessions = frame.select(pl.col(S.SESSION_ID).cast(pl.String)).unique()
        return sessions.join(ids, on=S.SESSION_ID, how="left")

    train = of(pl.read_parquet(shard_files(rundir.dataset(directory, "train")), columns=[S.SESSION_ID]))
    test = of(pl.read_parquet(rundir.predictions(directory, "test"), columns=[S.SESSION_ID]))
    seen = train["id"].drop_nulls().unique()
    per_session = test.group_by(S.SESSION_ID).agg(
        new=(pl.col("id").is_not_null() & ~pl.col("id").is_in(seen.implode())).any(),
        unknown=(
            (
                pl.col("id").is_not_null()
                & ~pl.col("id").is_in(pl.Series(sorted(default_vocab), dtype=pl.String).implode())
            ).any()
            if default_vocab is not None
            else pl.lit(None, pl.Boolean)
        ),
    )
    return {
        "train_ids": seen.len(),
        "test_sessions": per_session.height,
        "test_new": int(per_session["new"].sum()),
        "test_unknown": None if default_vocab is None else int(per_session["unknown"].sum()),
    }


def cells(runs: list[dict], key: str) -> str:
    return cell([r["test"][key] if key in r["test"] else r[key] for r in runs])


def table(results: dict[str, dict[str, dict[str, list[dict]]]]) -> str:
    """Rows per column, variant and model."""
    head = [
        "column",
        "variant",
        "model",
        "vocab",
        "test PR-AUC",
        "recall@1%FPR",
        RING_KEY,
        "fit s",
        "prep s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for column, variants in results.items():
        for variant, models in variants.items():
            for model, runs in models.items():
                label = f"default ({runs[0]['encoder']})" if model == "default" else model
                vocabs = sorted({r["vocab"] for r in runs})
                row = [
                    column,
                    variant,
                    label,
                    "/".join(vocabs),
                    cells(runs, "pr_auc"),
                    cells(runs, RECALL),
                    cells(runs, "ring"),
                    f"{statistics.median(r['seconds'] for r in runs):.1f}",
                    f"{statistics.median(r['prep_seconds'] for r in runs):.1f}",
                ]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(results: dict, stats: dict[str, dict]) -> list[str]:
    out = []
    for column, s in stats.items():
        n = s["test_sessions"]
        line = (
            f"- {column}: {s['train_ids']} distinct ids in the training split; of {n} test sessions, "
            f"{s['test_new']} ({s['test_new'] / max(n, 1):.0%}) carry an id never seen in training"
        )
        if s["test_unknown"] is not None:
            line += (
                f", {s['test_unknown']} ({s['test_unknown'] / max(n, 1):.0%}) one outside the default "
                f"vocabulary (min_count {DEFAULT_MIN_COUNT} events, max_vocab {DEFAULT_MAX_VOCAB})"
            )
        out.append(line + ".")
    runs = [
        r
        for variants in results.values()
        for models in variants.values()
        for rs in models.values()
        for r in rs
    ]
    positives = next((r["ring_positives"] for r in runs if r["ring_positives"] is not None), None)
    if positives is None:
        out.append(
            f"- {ENTITY_RING}: none in the test split (rings are few and clustered in time): "
            "try more --sessions (20000 hold 31 ring sessions at data seed 0) or another --data-seed."
        )
    else:
        out.append(f"- {ENTITY_RING} positives in the test split: {int(positives)}.")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--column",
        action="append",
        choices=SYNTHETIC_ENTITIES,
        help="the id column; repeat for several (default device_id)",
    )
    parser.add_argument("--buckets", type=int, default=256, help="hash buckets of the hashed variant")
    parser.add_argument("--sessions", type=int, default=6000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--models", nargs="+", default=["default", "lightgbm"])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/benchmarks/high_cardinality")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    parser.add_argument(
        "--json", type=Path, default=None, help="raw figures (default WORK/high_cardinality.json)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (train's threads=)")
    parser.add_argument("--report-only", action="store_true", help="the table from existing run directories")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    args.column = list(dict.fromkeys(args.column or ["device_id"]))
    if args.buckets < 1:
        parser.error("--buckets must be at least 1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    models = model_rows(args.models, [])
    base = kind_dir(args.work, GENERATOR, args.sessions, args.data_seed)
    data_dir = base / "data"
    extra = [f"threads={args.threads}", *args.overrides]
    # (column, variant) -> run directory name per model; drop appears once per column but runs once.
    rows = {
        (column, variant): {m: row_name(column, variant, args.buckets, m) for m in models}
        for column in args.column
        for variant in args.variants
    }

    if not args.report_only:
        data = prepared_data(GENERATOR, args.sessions, args.data_seed, data_dir)
        # Seed-major, so that a partial run already compares every variant.
        for seed in args.seeds:
            for (column, variant), names in rows.items():
                for model, name in names.items():
                    directory = base / name / str(seed)
                    if (directory / DONE_FILE).exists():
                        print(f"{name} seed={seed}: kept", file=sys.stderr, flush=True)
                        continue
                    row = [*variant_overrides(variant, column, data_dir, args.buckets), *models[model]]
                    m = run_one(data, row, seed, directory, extra)
                    print(
                        f"{name} seed={seed}: test PR-AUC {m['test']['pr_auc']:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )

    results: dict[str, dict[str, dict[str, list[dict]]]] = {}
    for (column, variant), names in rows.items():
        for model, name in names.items():
            dirs = [base / name / str(s) for s in args.seeds]
            runs = [run_figures(d, column, variant) for d in dirs if (d / DONE_FILE).exists()]
            if runs:
                results.setdefault(column, {}).setdefault(variant, {})[model] = runs

    # Id novelty per column, from a finished run's training and test sessions (the split is the same in all).
    stats = {}
    finished = sorted(base.glob(f"*/*/{DONE_FILE}"))
    for column in args.column:
        if not finished:
            break
        tokens = [
            base / row_name(column, "tokens", args.buckets, m) / str(s) / rundir.SPEC_FILE
            for m in models
            for s in args.seeds
        ]
        spec_path = next((p for p in tokens if p.exists()), None)
        vocab = set(json.loads(spec_path.read_text())["vocab"][column]) if spec_path else None
        stats[column] = novelty(data_dir / "events.parquet", finished[0].parent, column, vocab)

    text = (
        f"{args.sessions} synthetic sessions (data seed {args.data_seed}), model seeds {args.seeds}, "
        f"hashed into {args.buckets} buckets; test split = latest 15% of sessions by start time."
        + (f" Extra overrides: {' '.join(args.overrides)}." if args.overrides else "")
        + f"\n\n{table(results)}\n\n"
        + "\n".join(notes(results, stats))
    )
    raw = {"results": results, "novelty": stats, "buckets": args.buckets, "sessions": args.sessions}
    emit(text, args.out, args.json or args.work / "high_cardinality.json", raw)


if __name__ == "__main__":
    main()
