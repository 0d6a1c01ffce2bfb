"""Train a session-risk model: ``python train.py [+experiment=NAME] [key=value ...]``, the same as ``seqfraud train``."""

from seqfraud.cli.train import main

if __name__ == "__main__":
    main()
