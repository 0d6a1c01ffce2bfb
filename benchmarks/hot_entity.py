"""Live entity features of one event on a busy value (an office NAT address, public wifi): cost by the rows the
store holds on it.

    python benchmarks/hot_entity.py --rows 100 1000 10000 50000

The online path reads every row of every session that shares a value with the new event
(:func:`seqfraud.scoring.online.live_features`), so an event on a busy value costs in proportion to that value's
history. For each N, a fresh store holds N events on one IP (sessions of 5 events, each on its own device, over 30
days, a label on every tenth session); a new session's event on that IP is then timed ``--repeat`` times: the
store's rows and labels fetched, and the features computed (``point_features``, also timed alone). Memory store,
and Redis where ``redis-server`` is installed. Reports medians in ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from online import redis

from seqfraud.features.entities import EntitySpec, point_features
from seqfraud.features.fastpath import EventColumns
from seqfraud.features.spec import Spec
from seqfraud.schema import Schema
from seqfraud.scoring.online import live_features
from seqfraud.scoring.redis_store import RedisStore
from seqfraud.scoring.state import EntityRow, Label, MemoryStore, StateStore

COLUMNS = ("ip", "device")
SPEC = Spec(
    schema=Schema(entities=COLUMNS),
    timestamp_unit="us",
    max_len=8,
    vocab={"event_type": ["pay"]},
    edges={},
    entity=EntitySpec(
        columns=COLUMNS,
        windows=("1h", "1d", "7d", "30d"),
        risk=True,
        smoothing=20.0,
        prior=0.02,
        label_delay="30d",
    ),
)
DAY_US = 86_400 * 1_000_000


def fill(store: StateStore, n: int) -> int:
    """``n`` events on one IP; returns the time after the last."""
    rng = np.random.default_rng(0)
    times = np.sort(rng.integers(0, 30 * DAY_US, n))
    rows = [EntityRow(f"e{i}", f"s{i // 5}", int(t), ("10.0.0.1", f"d{i // 5}")) for i, t in enumerate(times)]
    for at in range(0, n, 10_000):
        store.add_entity_rows(rows[at : at + 10_000])
    store.add_labels([Label(f"s{k}", int(k % 50 == 0), None) for k in range(0, n // 5, 10)])
    return int(times[-1]) + 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100, 1000, 10_000, 50_000])
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; {len(SPEC.entity.feature_names())} "
        f"features; medians of {args.repeat}.\n"
    )
    print("| store | rows on the value | live features ms | point_features alone ms |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work, redis(Path(work)) as url:
        stores = {"memory": lambda _: MemoryStore(session_ttl_s=1e9)}
        if url:
            stores["redis"] = lambda n: RedisStore(url, prefix=f"hot{n}:", timeout_s=5.0)
        for name, make in stores.items():
            for n in args.rows:
                store = make(n)
                now = fill(store, n)
                event = EventColumns(
                    ["new"], np.array([now]), np.array([0]), {}, {}, {"ip": ["10.0.0.1"], "device": ["d-new"]}
                )
                live, alone = [], []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    live_features(store, event, ["k"], SPEC)
                    live.append(time.perf_counter() - t0)
                context = [
                    (r.session_id, r.ts_us, r.values)
                    for r in store.entity_rows([f"s{k}" for k in range(n // 5)])
                ]
                known = {f"s{k}": (0, now - 1) for k in range(0, n // 5, 10)}
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    point_features(SPEC.entity, "new", event.ts_us, [["10.0.0.1"], ["d-new"]], context, known)
                    alone.append(time.perf_counter() - t0)
                store.close()
                print(
                    f"| {name} | {n:,} | {np.median(live) * 1e3:.2f} | {np.median(alone) * 1e3:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
