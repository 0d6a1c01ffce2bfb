"""``hydra_command``: ``@hydra.main`` for the commands, with :func:`seqfraud.errors.command`'s error handling.

It lives with the commands, not in :mod:`seqfraud.errors`, so that nothing below them imports Hydra.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import hydra

from seqfraud.errors import F, command


def hydra_command(config_path: str, config_name: str) -> Callable[[F], F]:
    """``@hydra.main(version_base="1.3", ...)`` with :func:`command` around the task and around Hydra itself.

    Inside, the ``SystemExit`` of a user error passes through Hydra, which catches only ``Exception``. Outside,
    Hydra's own config errors (an unknown override key, a missing config group) arrive too: Hydra is told to
    raise them (``HYDRA_FULL_ERROR``) instead of printing them itself and exiting with status 1.
    """

    def wrap(task: F) -> F:
        hydra_main = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(
            command(task)
        )

        @functools.wraps(hydra_main)
        def run(*args: Any, **kwargs: Any) -> Any:
            before = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                return hydra_main(*args, **kwargs)
            finally:
                if before is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = before

        return command(run)  # type: ignore[return-value]

    return wrap
