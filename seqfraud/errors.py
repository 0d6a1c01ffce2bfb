"""How every command ends on an error: a user error is one line on stderr and exit status 2; a bug keeps its traceback.

A user error is a fault in what the user gave (a file, a column, a config value, an artifact): a
:class:`UserError` (the data contract's, the artifact's, the spec's... errors derive from it), a missing or
unreadable file, and Hydra's and OmegaConf's errors in a config or an override. Library modules raise them
and print nothing; a command's ``main`` is wrapped in :func:`command` (or :func:`seqfraud.cli.hydra_main.hydra_command`), which is
where the message is printed. ``SEQFRAUD_DEBUG=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

EXIT_USER_ERROR = 2  # argparse's status for a usage error, so every user error of a command exits alike
DEBUG_ENV = "SEQFRAUD_DEBUG"

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A fault in what the user gave; its message says what is wrong and where (file, column, count, key)."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work, named by its key (``data.schema.timestamp_unit``, ``preprocess.engine``)."""


def is_number(value: Any) -> TypeGuard[float]:
    """A number as JSON or YAML gives one: not a bool (True is 1 to Python), not text that numpy or float() would
    read as one; every check of a user's or a file's value reads numbers so."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: float) -> bool:
    """No NaN or infinity, which pass every ``<= 0`` check (a NaN deadline switched the slow-client cut-off off:
    dogfood 137), nor an integer past a float's range, which overflows wherever it meets one (review 158)."""
    if isinstance(value, int):
        return -sys.float_info.max <= value <= sys.float_info.max
    return math.isfinite(value)


def json_value(data: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``, where nesting past Python's recursion limit is a ValueError like any other JSON that does
    not read: RecursionError is none, so a crafted file or stored value escaped every handler of bad input (a
    traceback, a 500 at each event of a session: dogfood 137)."""
    try:
        return json.loads(data, **kwargs)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def did_you_mean(name: object, choices: list[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the one of ``choices`` that differs from ``name`` in case alone, else the
    closest (by difflib's ratio, at least ``cutoff``), or nothing: the one wording of a name hint. An upper-cased
    header had none, a column renamed had one (dogfood 280): difflib reads 'LOT_ID' and 'lot_id' as far apart."""
    same = [c for c in choices if c.casefold() == str(name).casefold()]
    close = same or difflib.get_close_matches(str(name), choices, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as user errors. Hydra's and OmegaConf's count only where those packages
    are already loaded: no other code raises them, and the serving commands never import them."""
    types: list[type[BaseException]] = [UserError, FileNotFoundError, PermissionError]
    if hydra_errors := sys.modules.get("hydra.errors"):
        types.append(hydra_errors.CompactHydraException)  # a bad override, an unknown key or config group
    if omegaconf_errors := sys.modules.get("omegaconf.errors"):
        types += [omegaconf_errors.MissingMandatoryValue, omegaconf_errors.InterpolationResolutionError]
    return tuple(types)


def first_line(error: BaseException) -> str:
    """An error's first line that says something, or its type's name: a library's message for a one-line one."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def one_line(error: BaseException) -> str:
    """The message on one line. OmegaConf appends ``full_key``/``object_type`` lines to its first, which says it
    all; Hydra's own messages read as sentences, with the OmegaConf error that caused them after."""
    if type(error).__module__.startswith("omegaconf"):
        return first_line(error)
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    cause = error.__cause__
    if type(error).__module__.startswith("hydra") and cause is not None and str(cause):
        text += f" ({first_line(cause)})"
    if type(error).__name__ == "OverrideParseException":  # a value Hydra's grammar cannot read unquoted
        text += (
            ". A value holding =, brackets, ~, quotes or accents is quoted: \"key='value'\" (README.md, "
            "'Your own data')"
        )
    return text


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def command(main: F) -> F:
    """Wrap a command's ``main``: a user error prints ``error: <message>`` and exits 2, unless ``SEQFRAUD_DEBUG``
    is set; any other exception, a bug, propagates with its traceback."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as e:
            if debugging() or not isinstance(e, user_error_types()):
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    return run  # type: ignore[return-value]
