"""Train a session-risk model: ``python train.py [+experiment=NAME] [key=value ...]``, the same as ``seqfraud train``."""

import sys

from seqfraud.cli import main

if __name__ == "__main__":  # through the dispatcher, which names the extra a missing module belongs to
    sys.exit(main(["train", *sys.argv[1:]]))
