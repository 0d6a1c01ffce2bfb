"""On-disk layout of tokenized datasets: one directory of Parquet shards per split.

Shards let preprocessing write data larger than memory piece by piece, and let training stream it back
without ever holding a whole split.
"""

from __future__ import annotations

from pathlib import Path

SHARD_GLOB = "part-*.parquet"
ROW_GROUP_SESSIONS = 4096  # the unit training streams and shuffles; small enough to bound reader memory


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def shard_files(path: str | Path) -> list[Path]:
    """A split directory (or a single Parquet file) to its shard files in a fixed order."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.glob(SHARD_GLOB))
    if not files:
        raise FileNotFoundError(f"{path}: no dataset shards ({SHARD_GLOB})")
    return files
