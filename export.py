"""Export a trained run to a serving artifact: ``python export.py run_dir=RUN out=ARTIFACT``, as ``seqfraud export``."""

from seqfraud.cli.export import main

if __name__ == "__main__":
    main()
