"""The ``seqfraud`` command: ``seqfraud SUBCOMMAND [args]``, one module of this package per subcommand.

Hydra-driven subcommands (preprocess, train, export, backtest) take Hydra overrides after their name; the
others take flags (``seqfraud score --help``). A subcommand that needs an optional dependency group which is
not installed says which one, in one line, and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seqfraud.errors import EXIT_USER_ERROR

CONFIG_PATH = (
    "pkg://seqfraud.conf"  # the packaged config; users add theirs with hydra.searchpath=[file://...]
)

COMMANDS = {
    "synthetic": "write a synthetic clickstream with labelled fraud typologies",
    "preprocess": "validate, split and tokenize an event log into a run directory (Hydra overrides)",
    "train": "train a session-risk model (Hydra overrides, e.g. +experiment=smoke)",
    "export": "export a trained run to a verified serving artifact (run_dir=RUN out=ARTIFACT)",
    "score": "score an event log with an artifact, in chunks, to Parquet",
    "serve": "serve an artifact over HTTP (FastAPI + uvicorn)",
    "backtest": "retrain window by window and test on the next period (Hydra overrides)",
    "compare": "rank run directories by validation PR-AUC: Markdown, HTML, PR curves",
    "monitor": "compare a current window of events with an artifact's training period",
    "explain": "show which events of one session drove its score",
    "sign": "make an artifact signing key pair, or sign an artifact",
    "embed": "write each session's embedding, from a run or from an artifact and an event log, to Parquet",
}

# Top-level modules of the optional dependency groups, so a missing one names the extra to install.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        [
            "pytorch_lightning",
            "lightning_fabric",
            "lightning",
            "torchmetrics",
            "hydra",
            "omegaconf",
            "optuna",
            "wandb",
            "sklearn",
            "matplotlib",
            "psutil",
        ],
        "train",
    ),
    **dict.fromkeys(["fastapi", "pydantic", "uvicorn", "uvloop", "httptools", "starlette"], "serve"),
    "pyspark": "spark",
}


def add_verification_arguments(parser: Any) -> None:
    """``--verify-key`` and ``--require-signed``, alike on every command that loads an artifact."""
    parser.add_argument(
        "--verify-key",
        action="append",
        metavar="PUBLIC_KEY",
        help="refuse the artifact unless signed by this key (repeat during a key rotation; "
        "default $SEQFRAUD_VERIFY_KEY)",
    )
    parser.add_argument(
        "--require-signed",
        action="store_true",
        default=None,
        help="refuse artifacts not verified by signature (default $SEQFRAUD_REQUIRE_SIGNED)",
    )


def apply_verification_arguments(args: Any) -> None:
    """Hand the flags to every ``Scorer.load`` of this process, through the variables it reads by default."""
    from seqfraud.export.artifact import REQUIRE_SIGNED_ENV, VERIFY_KEY_ENV

    if args.verify_key:
        os.environ[VERIFY_KEY_ENV] = os.pathsep.join(args.verify_key)
    if args.require_signed:
        os.environ[REQUIRE_SIGNED_ENV] = "1"


def add_history_arguments(
    parser: Any,
    what: str = "artifacts with entity features: earlier events of other sessions (same columns as --events)",
) -> None:
    """``--history-events`` and ``--history-labels``, for artifacts with entity features (docs/entities.md)."""
    parser.add_argument("--history-events", help=what)
    parser.add_argument(
        "--history-labels",
        help="their labels with label times (the training label table's columns; sessions without a label yet "
        "left out); default: the labels on --history-events",
    )


def history_of(args: Any, spec: Any, scored: str | None = None) -> Any:
    """The :class:`~seqfraud.scoring.history.History` the flags name, or None; ``scored``: the event file whose
    sessions the command scores, whose labels the history's label table may hold too."""
    import polars as pl

    from seqfraud.data.events import reading, scan_table
    from seqfraud.errors import UserError
    from seqfraud.scoring.history import History

    if args.history_labels and not args.history_events:
        raise UserError("--history-labels needs --history-events")
    if not args.history_events:
        return None
    ids = None
    if scored is not None and args.history_labels:
        lf, source = scan_table(scored, spec.schema)
        if (sid := spec.schema.session_id) in lf.collect_schema():  # where not, scoring names what is missing
            with reading(source):
                ids = lf.select(pl.col(sid).cast(pl.String).unique()).collect().to_series()
    return History.read(args.history_events, args.history_labels, spec, scored=ids)


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size of 0 failed with a ZeroDivisionError
    traceback, 0 synthetic sessions with a ValueError one: dogfood 54)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def iso_time(text: str) -> str:
    """An argparse type: an ISO 8601 date or datetime (``synthetic --start notadate`` failed with a ValueError
    traceback: review 185)."""
    from seqfraud.data.split import to_epoch_us

    try:
        to_epoch_us(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def out_folder(text: str) -> Path:
    """An argparse type: a folder to write into, refused where a file of that name is (a FileExistsError
    traceback from monitor, compare, synthetic and sign keygen: dogfood 55)."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; this writes a folder there")
    return Path(text)


def out_file(text: str) -> str:
    """An argparse type: a file to write, refused where a folder of that name is (an IsADirectoryError
    traceback from explain: dogfood 55)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the file to write")
    return text


def device(text: str) -> str:
    """An argparse type: a torch device this machine has (``cuda`` on a CPU build of torch failed with an
    AssertionError traceback, ``nosuch`` with torch's RuntimeError: dogfood 55)."""
    import torch

    try:
        kind = torch.device(text).type
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text}: this torch sees no CUDA device (torch.cuda.is_available())"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this torch sees no MPS device")
    return text


CHUNK_HELP = (
    "events per chunk: bounds memory; each chunk reads the input once more, so small chunks cost time (default: "
    "%(default)s)"
)


def check_out(parser: Any, out: str | os.PathLike, events: str | None = None) -> None:
    """A batch command's ``--out``: a Parquet file by its name (Parquet under another name misleads whoever
    opens it), and not among the files ``events`` reads, where the next run would read it as events."""
    from seqfraud.data.events import reads

    if os.path.splitext(out)[1] != ".parquet":
        parser.error(f"--out is a Parquet file, so its name ends in .parquet: got {out}")
    if events is not None and reads(events, out):
        parser.error(f"--out {out} is among the files --events {events} reads: the next run would read it")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(
        ["usage: seqfraud SUBCOMMAND [args ...]   (seqfraud SUBCOMMAND --help)", "", "subcommands:", *lines]
    )


def main(argv: Sequence[str] | None = None) -> int | None:
    """Dispatch to ``seqfraud.cli.<subcommand>.main`` with the remaining arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown subcommand {name!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return importlib.import_module(f"seqfraud.cli.{name}").main(rest)
    except ModuleNotFoundError as e:
        if (extra := extra_needed(e)) is None:
            raise
        print(f"error: seqfraud {name} needs {extra}", file=sys.stderr)
        return EXIT_USER_ERROR


def extra_needed(e: ModuleNotFoundError) -> str | None:
    """What to install for a missing module of an optional dependency group (``the [train] extra ...``), or None:
    a module of no extra's, or a submodule missing from an installed package, a broken install whose traceback
    says more."""
    top = (e.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None or installed(top):
        return None
    return f'the [{extra}] extra (no module {e.name!r}): pip install "seqfraud[{extra}]"'


def installed(module: str) -> bool:
    """Whether a top-level module can be imported: naming the extra where ``sklearn.metrics`` was missing from an
    installed sklearn told to install what was there (review 180)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module in sys.modules without a spec
        return False


def run_hydra(task: Callable[..., Any], argv: Sequence[str] | None) -> None:
    """Run a ``hydra_command`` task on ``argv`` (Hydra reads its overrides from ``sys.argv``)."""
    if argv is None:
        task()
        return
    saved = sys.argv
    sys.argv = [saved[0], *argv]
    try:
        task()
    finally:
        sys.argv = saved
