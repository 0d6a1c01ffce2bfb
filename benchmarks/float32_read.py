"""The cost of reading floats as the shortest decimals of the float32 values they hold
(``seqfraud.data.events.as_float64``).

    python benchmarks/float32_read.py --values 10000000 --repeats 5

Specs of version 6 read a float32 number, and a double that holds a float32 value exactly (widened upstream), as the
decimal a CSV or JSON of it holds (0.3, not 0.30000001192092896), through its text, where it is no integer; older
specs read numbers as sent. Each column (a lognormal amount rounded to cents: as float32, as float32 widened to
float64, and as float64 decimals) is read both ways, alternating in one process, ``--repeats`` times each; the
table gives the median seconds and the ratio.
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
    columns = {
        "float32": pl.Series(amounts, dtype=pl.Float32),
        "float32 widened to float64": pl.Series(amounts, dtype=pl.Float32).cast(pl.Float64),
        "float64 decimals": pl.Series(amounts, dtype=pl.Float64),
    }
    print(
        f"{args.values:,} values a column, {args.repeats} repeats, {platform.processor() or platform.machine()}"
    )
    print("| column | as sent: median s | decimals: median s | ratio |")
    print("|---|---|---|---|")
    for name, column in columns.items():
        frame = pl.DataFrame({"amount": column}).lazy()
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for decimal, taken in seconds.items():
                start = time.perf_counter()
                frame.select(as_float64("amount", column.dtype, decimal)).collect()
                taken.append(time.perf_counter() - start)
        sent, decimals = (statistics.median(seconds[d]) for d in (False, True))
        print(f"| {name} | {sent:.3f} | {decimals:.3f} | {decimals / sent:.1f}x |")


if __name__ == "__main__":
    main()
