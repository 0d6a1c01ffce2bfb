"""Latency (p50, p99, p99.9) of ``Scorer.score``, of its model alone and of one online event, for one session of
``--length`` events, quiet and beside a one-core CPU hog (``latency.py``); and the work around the model
(``score`` p50 less the model's p50) as a share of the model.

    OMP_NUM_THREADS=1 python benchmarks/scorer_latency.py --artifact ARTIFACT [--code DIR]

``--code`` runs another checkout's seqfraud (e.g. ``git worktree add /tmp/before COMMIT``), so that two versions
can be timed side by side: alternate the two commands a few times and compare medians (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def latency_ms(call, n: int) -> dict[str, float]:
    from latency import percentiles

    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t0) * 1e3)
    return percentiles(ms)


def online_event_ms(online, records: list[dict], length: int, session_id: str) -> dict[str, float]:
    """One event at a time after the first ``length`` of ``records``, as session ``session_id``."""
    for r in records:
        r["session_id"] = session_id
    online.events(records[:length])
    later = iter(records[length:])
    return latency_ms(lambda: online.events([next(later)]), len(records) - length)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to time")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--events", type=int, default=300, help="online events timed after --length")
    args = p.parse_args()
    sys.path[:0] = [str(args.code), str(args.code / "benchmarks")]
    import torch
    from latency import LOADS, load
    from serving import session_of

    import seqfraud
    from seqfraud.features.fastpath import column_sequences
    from seqfraud.scoring.online import OnlineScorer
    from seqfraud.scoring.prepare import record_columns
    from seqfraud.scoring.scorer import Scorer
    from seqfraud.scoring.state import MemoryStore

    torch.set_num_threads(1)
    scorer = Scorer.load(args.artifact)
    records = session_of(args.length, seed=1)
    scorer.warmup()
    seqs = column_sequences(record_columns(records, scorer.spec), scorer.spec, scorer.tables)
    tokens, lengths = torch.from_numpy(seqs.tokens[None].copy()), torch.from_numpy(seqs.lengths)
    more = session_of(args.length + args.events, seed=2)

    def said(name: str, r: dict[str, float]) -> str:
        return f"{name} p50 {r['p50']:.3f} p99 {r['p99']:.3f} p99.9 {r['p99.9']:.3f} ms"

    for under in LOADS:
        with load(under):
            score = latency_ms(lambda: scorer.score(records, source="bench"), args.calls)
            with torch.inference_mode():
                model = latency_ms(lambda: scorer.model(tokens, lengths), args.calls)
            event = online_event_ms(OnlineScorer(scorer, MemoryStore()), more, args.length, f"bench-{under}")
        # A stacker that kept the aggregates alone never runs the sequence model: there is no ratio to take.
        around = (
            f"around the model {(score['p50'] - model['p50']) / model['p50']:.2f}x"
            if getattr(scorer, "reads_sequence", True)
            else "the stacker reads no sequence score, so Scorer.score runs no model"
        )
        print(
            f"{Path(seqfraud.__file__).parents[1]} ({under}): {said('Scorer.score', score)}, "
            f"{said('model alone', model)}, {around}, {said('online event', event)}"
        )


if __name__ == "__main__":
    main()
