"""The cost of reading float32 numbers as their shortest decimals (``seqfraud.data.events.as_float64``).

    python benchmarks/float32_read.py --values 10000000 --repeats 5

Specs of version 6 read a float32 number as the decimal a CSV or JSON of it holds (0.3, not 0.30000001192092896),
through its text; older specs widened it. Both reads of the same column (a rounded lognormal amount) alternate in
one process, ``--repeats`` times each; the table gives their median seconds and the ratio. Only float32 columns pay
it: float64 columns, and CSV or JSON input, are read as before.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import polars as pl

from seqfraud.data.events import as_float64


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--values", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    amounts = np.random.default_rng(0).lognormal(3.0, 1.0, args.values).round(2)
    frame = pl.DataFrame({"amount": amounts}, schema={"amount": pl.Float32}).lazy()
    reads = {"widened": False, "decimal": True}
    seconds: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(args.repeats):
        for name, decimal in reads.items():
            start = time.perf_counter()
            frame.select(as_float64("amount", pl.Float32(), decimal)).collect()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(
        f"{args.values:,} float32 values, {args.repeats} repeats, {platform.processor() or platform.machine()}"
    )
    print("| read | median s | ns a value |")
    print("|---|---|---|")
    for name, s in median.items():
        print(f"| {name} | {s:.3f} | {1e9 * s / args.values:.1f} |")
    print(f"decimal / widened: {median['decimal'] / median['widened']:.1f}x")


if __name__ == "__main__":
    main()
