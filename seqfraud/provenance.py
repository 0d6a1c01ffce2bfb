"""What a run or an artifact was made from, so that a reviewer can tell two of them apart and make one again:
the libraries that shape results, the seqfraud source commit, and a digest of the input files.

A dogfood's reproducibility audit (38) found runs on two different event files told apart only by their paths,
and no commit, torch or LightGBM version anywhere in a run directory.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from seqfraud import __version__

# Distributions whose versions move a model's numbers (the tokens, the fit, the stacker, the export).
_DISTRIBUTIONS = ("torch", "pytorch-lightning", "lightgbm", "polars", "numpy", "pyarrow")
_CHUNK = 1 << 20


def versions() -> dict[str, str | None]:
    """seqfraud's version and source commit, the installed versions of :data:`_DISTRIBUTIONS` (None where one
    is not installed, as Lightning in a serving image), and Python's."""
    out: dict[str, str | None] = {"seqfraud": __version__, "seqfraud_commit": source_commit()}
    for name in _DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out | {"python": platform.python_version()}


def source_commit() -> str | None:
    """The git commit of the seqfraud source that runs, with ``-dirty`` when tracked files differ from it; None
    outside a checkout of seqfraud (an installed wheel, also one inside another project's repository, whose
    commit is not seqfraud's: dogfood 41) or without git."""
    package = Path(__file__).resolve().parent
    here = str(package)
    try:
        top = subprocess.run(
            ["git", "-C", here, "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if Path(top).resolve() != package.parent:
            return None
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if changed else commit


def files_digest(paths: list[str]) -> str:
    """SHA-256 over the files' contents, in the given order (each file's own digest, then the list's): the same
    bytes give the same digest wherever they lie, and a changed row gives another."""
    total = hashlib.sha256()
    for path in paths:
        one = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                one.update(chunk)
        total.update(one.digest())
    return total.hexdigest()


# The Parquet key-value metadata key of a `seqfraud embed` file: what made its embeddings.
EMBEDDING_METADATA = "seqfraud.embedding"


def embedding_record(
    fit_info: Mapping[str, Any],
    *,
    labels_read: bool,
    events_sha256: str | None,
    train_labels: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """An embeddings file's metadata: whether its encoder learnt from labels, and from how many (``train_labels``:
    its fit's ``n`` and ``positives``), where its training and validation periods ended (its spec's ``val_start``
    and ``test_start``) and the digest of the events it embedded, so that a hybrid run can refuse an encoder that
    read its own validation or test labels (review 50), say when it read more training labels than the hybrid
    (dogfood 157), and say when the file embedded another log (dogfood 49)."""
    record = {
        "labels_read": labels_read,
        "train_labels": dict(train_labels) if train_labels else None,
        "val_start": fit_info.get("val_start"),
        "test_start": fit_info.get("test_start"),
        "events_sha256": events_sha256,
    }
    return {EMBEDDING_METADATA: json.dumps(record)}
