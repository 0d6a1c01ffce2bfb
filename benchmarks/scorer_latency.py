"""Latency (p50, p99) of ``Scorer.score``, of its model alone and of one online event, for one session of
``--length`` events; and the work around the model (``score`` p50 less the model's p50) as a share of the model.

    OMP_NUM_THREADS=1 python benchmarks/scorer_latency.py --artifact ARTIFACT [--code DIR]

``--code`` runs another checkout's seqfraud (e.g. ``git worktree add /tmp/before COMMIT``), so that two versions
can be timed side by side: alternate the two commands a few times and compare medians (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def latency_ms(call, n: int) -> tuple[float, float]:
    """p50 and p99 in ms."""
    import numpy as np

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return float(np.median(ms)), float(np.quantile(ms, 0.99))


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
    score = latency_ms(lambda: scorer.score(records, source="bench"), args.calls)
    seqs = column_sequences(record_columns(records, scorer.spec), scorer.spec, scorer.tables)
    tokens, lengths = torch.from_numpy(seqs.tokens[None].copy()), torch.from_numpy(seqs.lengths)
    with torch.inference_mode():
        model = latency_ms(lambda: scorer.model(tokens, lengths), args.calls)
    online = OnlineScorer(scorer, MemoryStore())
    more = session_of(args.length + args.events, seed=2)
    for r in more:
        r["session_id"] = "bench"
    online.events(more[: args.length])
    later = iter(more[args.length :])
    event = latency_ms(lambda: online.events([next(later)]), args.events)
    around = (score[0] - model[0]) / model[0]
    print(
        f"{Path(seqfraud.__file__).parents[1]}: Scorer.score p50 {score[0]:.3f} p99 {score[1]:.3f} ms, "
        f"model alone p50 {model[0]:.3f} p99 {model[1]:.3f} ms, around the model {around:.2f}x, "
        f"online event p50 {event[0]:.3f} p99 {event[1]:.3f} ms"
    )


if __name__ == "__main__":
    main()
