"""``python -m seqfraud.cli.rank RUN_DIR``: a local DDP child rank, started by :mod:`seqfraud.training.launch`.

Not a user subcommand: rank 0 starts one per extra local device, with the rendezvous in its environment.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from seqfraud.errors import command
from seqfraud.training.train import run_child_rank


@command
def main() -> None:
    logging.basicConfig(level=logging.INFO)
    run_child_rank(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
