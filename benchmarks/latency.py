"""What every latency benchmark shares: its percentiles, and the two loads it runs under.

Each latency figure is measured quiet and beside a bounded CPU hog (one process spinning on one core, no more): on a
shared 2-core machine the scorer's own threads made a p99 of 189 ms where the model alone took 2.1 ms (issue 14),
which a quiet run never shows. Each reports p50, p99 and p99.9.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

LOADS = ("quiet", "hog")


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50, p99 and p99.9 of times in milliseconds, and how many there were."""
    a = np.asarray(ms, dtype=np.float64)
    return {
        "p50": float(np.median(a)),
        "p99": float(np.quantile(a, 0.99)),
        "p99.9": float(np.quantile(a, 0.999)),
        "n": len(a),
    }


@contextmanager
def load(name: str) -> Iterator[None]:
    """``quiet``: nothing; ``hog``: one process spinning on a core for the block's length."""
    if name not in LOADS:
        raise ValueError(f"load must be one of {LOADS}, got {name!r}")
    if name == "quiet":
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()
