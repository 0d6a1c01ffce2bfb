"""Serve an artifact over HTTP: ``python -m seqfraud.serve --artifact A --port P [--threads N]``."""

from __future__ import annotations

import argparse
import logging
import os

# Requests are a few hundred rows: one Polars thread does them fastest, and an idle pool's spinning threads
# would take CPU the requests need. Set before Polars is imported; an explicit setting wins.
os.environ.setdefault("POLARS_MAX_THREADS", "1")

from seqfraud.scoring.service import Limits, create_app


def main(argv: list[str] | None = None) -> None:
    defaults = Limits()
    p = argparse.ArgumentParser(description="Real-time scoring service (FastAPI + uvicorn).")
    p.add_argument("--artifact", required=True, help="artifact directory written by export.py")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--format", default="torchscript", choices=("torchscript", "pt2"))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per request (default 1)")
    p.add_argument("--review", type=float, help="override the artifact's review threshold (with --decline)")
    p.add_argument("--decline", type=float, help="override the artifact's decline threshold (with --review)")
    p.add_argument("--max-events-per-session", type=int, default=defaults.max_events_per_session)
    p.add_argument("--max-sessions-per-batch", type=int, default=defaults.max_sessions_per_batch)
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    p.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    args = p.parse_args(argv)
    if (args.review is None) != (args.decline is None):
        p.error("--review and --decline go together")

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(
        args.artifact, fmt=args.format, threads=args.threads,
        thresholds=None if args.review is None else {"review": args.review, "decline": args.decline},
        limits=Limits(max_events_per_session=args.max_events_per_session,
                      max_sessions_per_batch=args.max_sessions_per_batch, max_body_bytes=args.max_body_bytes),
    )
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_level="info")


if __name__ == "__main__":
    main()
