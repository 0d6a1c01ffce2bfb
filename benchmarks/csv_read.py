"""The cost of reading a CSV event log through ``scan_table``: the header and short-row checks, Polars' parse and
its counts (nulls, integer epochs, values that hold a line break), as preprocessing, scoring and the monitor read
every CSV file.

    python benchmarks/csv_read.py --sessions 40000 --repeats 3

Writes the built-in generator's log of ``--sessions`` sessions as one CSV (about 27 events a session) to a temporary
folder, then reads it ``--repeats`` times, each in a fresh process so that no cache carries over, and prints the
median seconds. Run it from two trees (``PYTHONPATH=TREE``) alternating to compare them side by side.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

READ = """
import time, polars as pl
from seqfraud import schema as S
from seqfraud.data.events import scan_table
t = time.perf_counter()
lf, _ = scan_table({path!r}, S.SYNTHETIC)
rows = lf.select(pl.len()).collect().item()
print(time.perf_counter() - t, rows)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=40_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from seqfraud.data import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "events.csv")
        synthetic.generate(args.sessions, seed=0).events.write_csv(path)
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", READ.format(path=path)], check=True, capture_output=True
            )
            seconds, rows = out.stdout.split()
            runs.append(float(seconds))
        print(f"{platform.node()}: {int(rows):,} rows, {Path(path).stat().st_size / 1e6:.0f} MB")
        print(f"runs {', '.join(f'{s:.3f}' for s in runs)}; median {statistics.median(runs):.3f} s")


if __name__ == "__main__":
    main()
