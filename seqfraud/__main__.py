"""``python -m seqfraud SUBCOMMAND ...``: the ``seqfraud`` command."""

from seqfraud.cli import main

raise SystemExit(main())
