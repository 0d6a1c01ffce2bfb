"""Per-event online scoring with live entity features: latency by the history the store holds.

    python benchmarks/online_entities.py --artifact ARTIFACT --events LOG [--labels LABELS] \
        --history 200 2000 8000 --timed 150

The log (Parquet or CSV, the artifact's columns) is put in time order (then by ``data.schema.event_id`` where the
artifact has one) and cut before its last ``--timed`` events. For each history length N, a fresh in-memory store
takes the N events before the cut in requests of 200, untimed, and the labels known by the cut (a label time
before it; a session without one counts from its label delay); then the events after the cut go in one at a time,
each timed (``OnlineScorer.events``: validation, entity features from the live history, tokens, model, state).
Each store: memory, and Redis where ``redis-server`` is installed (one local server, a key prefix per cell).
Torch runs one thread, as the service. Reports p50, p99 and p99.9 in ms, quiet and beside a CPU hog.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch
from latency import LOADS, load, percentiles
from online import redis

from seqfraud import schema as S
from seqfraud.scoring.online import OnlineScorer, label_keys, read_labels
from seqfraud.scoring.prepare import as_frame, normalized_events
from seqfraud.scoring.redis_store import RedisStore
from seqfraud.scoring.scorer import Scorer
from seqfraud.scoring.state import Label, MemoryStore, StateStore


def read_table(path: str) -> pl.DataFrame:
    return pl.read_parquet(path) if path.endswith(".parquet") else pl.read_csv(path)


def known_labels(path: str, scorer: Scorer, sessions: set, first: dict) -> list[Label]:
    """The history's labels known before the ``first`` timed event (a label without a time counts from its
    session's end plus the label delay, as the service does)."""
    s = scorer.spec.schema
    table = read_table(path).filter(pl.col(s.session_id).is_in(list(sessions)))
    sid, label, label_time = label_keys(s)  # as POST /labels takes them
    bodies = [
        {sid: row[s.session_id], label: int(row[s.label])}
        | ({label_time: row[s.label_time]} if s.label_time and row[s.label_time] is not None else {})
        for row in table.iter_rows(named=True)
    ]
    cut = normalized_events(as_frame([first], scorer.spec, "bench").lazy(), scorer.spec, "bench")[S.TS_US][0]
    labels = read_labels(bodies, scorer.spec, "bench") if bodies else []
    return [lb for lb in labels if lb.label_time_us is None or lb.label_time_us < cut]


def measure(
    scorer: Scorer, store: StateStore, log: pl.DataFrame, labels: str | None, history: int, timed: int
) -> dict:
    s = scorer.spec.schema
    cut = log.height - timed
    past, now = log.slice(cut - history, history).to_dicts(), log.slice(cut, timed).to_dicts()
    online = OnlineScorer(scorer, store)
    t0 = time.perf_counter()
    for i in range(0, len(past), 200):
        online.events(past[i : i + 200], source="bench")
    replay_s = time.perf_counter() - t0
    n_labels = 0
    if labels and scorer.spec.entity and scorer.spec.entity.risk:
        taken = known_labels(labels, scorer, {r[s.session_id] for r in past}, now[0])
        if taken:
            online.labels(taken)
        n_labels = len(taken)
    gc.collect()
    ms = []
    for record in now:
        t0 = time.perf_counter()
        online.events([record], source="bench")
        ms.append((time.perf_counter() - t0) * 1e3)
    return percentiles(ms) | {"replay_s": replay_s, "labels": n_labels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True)
    p.add_argument(
        "--events", required=True, help="the event log (Parquet or CSV) with the artifact's columns"
    )
    p.add_argument("--labels", help="its label table, for the risk features")
    p.add_argument("--history", type=int, nargs="+", default=[200, 2000, 8000])
    p.add_argument("--timed", type=int, default=150)
    args = p.parse_args()
    torch.set_num_threads(1)
    scorer = Scorer.load(args.artifact)
    s = scorer.spec.schema
    if scorer.spec.entity is None:
        p.error(f"{args.artifact} has no entity features: benchmarks/online.py measures it")
    log = read_table(args.events).sort([s.timestamp, *([s.event_id] if s.event_id else [])])
    keep = [c for c in log.columns if c in {*s.event_columns, *([s.event_id] if s.event_id else [])}]
    log = log.select(keep)
    scorer.warmup()
    gc.freeze()  # as the service does after start-up
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"polars {pl.__version__}; {args.timed} timed events per cell; torch 1 thread; entities "
        f"{list(scorer.spec.entity.columns)}, {len(scorer.spec.entity.feature_names())} features.\n"
    )
    for n in args.history:
        if n + args.timed > log.height:
            p.error(f"--history {n} + --timed {args.timed} exceeds the log's {log.height:,} events")
    print("| store | load | history events | labels | replay s | online p50 ms | p99 | p99.9 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work, redis(Path(work)) as url:
        stores: dict[str, Callable[[str], StateStore]] = {"memory": lambda _: MemoryStore(session_ttl_s=1e9)}
        if url:  # one server, a key prefix per cell: no cell reads another's history
            stores["redis"] = lambda cell: RedisStore(
                url, prefix=f"{cell}:", session_ttl_s=1e9, timeout_s=1.0
            )
        for store, make in stores.items():
            for under in LOADS:
                with load(under):
                    for n in args.history:
                        state = make(f"{under}-{n}")
                        r = measure(scorer, state, log, args.labels, n, args.timed)
                        state.close()
                        print(
                            f"| {store} | {under} | {n:,} | {r['labels']:,} | "
                            f"{r['replay_s']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p99.9']:.2f} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
