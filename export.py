"""Export a trained run to a serving artifact: ``python export.py run_dir=RUN out=ARTIFACT``, as ``seqfraud export``."""

import sys

from seqfraud.cli import main

if __name__ == "__main__":  # through the dispatcher, which names the extra a missing module belongs to
    sys.exit(main(["export", *sys.argv[1:]]))
