"""``hydra_command``: ``@hydra.main`` for the commands, with :func:`seqfraud.errors.command`'s error handling.

It lives with the commands, not in :mod:`seqfraud.errors`, so that nothing below them imports Hydra.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode

from seqfraud.cli import extra_needed
from seqfraud.config import model_settings, where_key_lives
from seqfraud.errors import (
    ConfigError,
    F,
    UserError,
    command,
    debugging,
    did_you_mean,
    one_line,
    user_error_types,
)

log = logging.getLogger(__name__)

# A sweep's failed jobs, first first. The Optuna sweeper records a failed trial and goes on: a search whose trials
# failed exited 0, and one where all did ended in Optuna's "No trials are completed yet" traceback (dogfood 106).
_failed: list[Exception] = []


def hydra_command(config_path: str, config_name: str) -> Callable[[F], F]:
    """``@hydra.main(version_base="1.3", ...)`` with :func:`command` around the task and around Hydra itself.

    Inside, the ``SystemExit`` of a user error passes through Hydra, which catches only ``Exception``; in a sweep
    (``-m``, ``hparams_search``) the error stays an exception instead, so that one job's bad settings fail that job
    alone and the sweep goes on (a ``SystemExit`` ended it: dogfood 28). Outside,
    Hydra's own config errors (an unknown override key, a missing config group) arrive too: Hydra is told to
    raise them (``HYDRA_FULL_ERROR``) instead of printing them itself and exiting with status 1.
    """

    def wrap(task: F) -> F:
        hydra_main = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(
            _job(task, config_name)
        )

        @functools.wraps(hydra_main)
        def run(*args: Any, **kwargs: Any) -> Any:
            before = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"
            _failed.clear()
            try:
                result = hydra_main(*args, **kwargs)
                if _failed:  # the command ends with a sweep's first error, whatever the sweeper did with it
                    raise _failed[0]
                return result
            except ConfigCompositionException as e:
                key = re.match(r"Could not override '[+~]*([^'=]+)'", str(e))
                if key is not None and (band := re.fullmatch(r"thresholds\.(review|decline)", key.group(1))):
                    # Hydra merges a new policy into the old one, and its own hint failed again (dogfood 55).
                    hint = (
                        f". A band's policy is replaced whole: '~thresholds.{band[1]}' "
                        f"'+thresholds.{band[1]}={{policy: capacity, per_1000: 20}}' (docs/risk.md)"
                    )
                elif (group := re.match(r"Multiple values for (\w+)(@\w+)?", str(e))) is not None:
                    # Hydra's own advice (an `override` in a defaults list) fits no command line (dogfood 77), and
                    # a third as +experiment@_global_= was refused again (dogfood 204): one list takes them all.
                    raise ConfigError(
                        f"{group[0]}: give them as one list, '+{group[1]}=[A,B,C]' (quoted for the shell), each "
                        "applied over the ones before"
                    ) from e
                elif key is not None and key.group(1).startswith("model.") and "not in struct" in one_line(e):
                    # Hydra's advice, +model.X=..., gave a model a setting it does not read: a misspelt setting,
                    # or one of another preset's (model=lightgbm hparams_search=optuna: dogfood 106).
                    known = model_settings()
                    typo = "" if key.group(1) in known else did_you_mean(key.group(1), known, cutoff=0.8)
                    raise ConfigError(
                        f"Could not override {key.group(1)!r}: the model preset chosen has no such setting{typo} "
                        "(model=lightgbm and the sequence models take different ones: conf/model/*.yaml; a search's "
                        "hydra.sweeper.params, such as hparams_search=optuna's of a sequence model, must name the "
                        "chosen model's own)"
                    ) from e
                elif key is None or not (hint := where_key_lives(key.group(1), config_name)):
                    raise
                # Hydra's "To append to your config use +KEY=..." added a setting nothing reads (review 117).
                raise ConfigError(re.sub(r" To append to your config use \S+", "", one_line(e)) + hint) from e
            except Exception as e:
                if _failed and e is not _failed[0]:  # the sweeper's own error, after its jobs failed
                    raise _failed[0] from None
                raise
            finally:
                if before is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = before

        return command(run)  # type: ignore[return-value]

    return wrap


def _say_an_unnamed_experiment(cfg: Any) -> None:
    """A user's experiment file without an ``experiment_name``: its runs, backtests too, were named 'default' (their
    folder, W&B group and row in seqfraud compare: dogfood 219; review 226)."""
    chosen = HydraConfig.get().runtime.choices.get("experiment")
    if chosen and cfg is not None and cfg.get("experiment_name") == "default":
        log.warning(
            "+experiment=%s sets no experiment_name, so its runs are named 'default' (their folder, W&B group and "
            "row in seqfraud compare): add experiment_name: %s to the file",
            chosen,
            chosen,
        )


def _job(task: F, name: str) -> F:
    """:func:`command` around one run of the command ``name``; in a sweep, a user error is logged in one line and
    raised on, for Hydra's launcher to record as that job's failure (and raise again once every job has run).

    A task imports Lightning itself, once Hydra has composed its settings (a misspelt one is said in a second, not
    after the import's 5 to 8), so an extra missing there is said here, as the dispatcher says it at import."""

    @functools.wraps(task)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _refuse_a_tilde_directory()
        _say_an_unnamed_experiment(args[0] if args else kwargs.get("cfg"))
        try:
            return task(*args, **kwargs)
        except ModuleNotFoundError as e:
            if (extra := extra_needed(e)) is None:
                raise
            raise UserError(f"seqfraud {name} needs {extra}") from e

    single = command(checked)

    @functools.wraps(task)
    def run(*args: Any, **kwargs: Any) -> Any:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return single(*args, **kwargs)
        try:
            return checked(*args, **kwargs)
        except Exception as e:
            if isinstance(e, user_error_types()) and not debugging():
                log.error("job %s failed: %s", HydraConfig.get().job.num, one_line(e))
            _failed.append(e)
            raise

    return run  # type: ignore[return-value]


def _refuse_a_tilde_directory() -> None:
    """Hydra does not expand ``~`` in its run directory: ``hydra.run.dir='~/runs/x'`` made a folder named ``~``
    under the working directory, and the run's outputs went there (dogfood 39). The folder it has made by now is
    removed again where it holds only Hydra's own files: a folder named ``~`` invites ``rm -r ~``."""
    hydra_cfg = HydraConfig.get()
    key = "sweep" if hydra_cfg.mode == RunMode.MULTIRUN else "run"
    where = str(hydra_cfg.sweep.dir if key == "sweep" else hydra_cfg.run.dir)
    if where == "~" or where.startswith("~/"):
        top = Path.cwd() / "~"
        left = (
            "removed it again"
            if _remove_hydras_folder(Path(hydra_cfg.runtime.output_dir), top)
            else f"left it: remove it with rm -r {shlex.quote(str(top))}, never with rm -r ~"
        )
        raise ConfigError(
            f"hydra.{key}.dir={where!r}: Hydra does not expand ~ (it made a folder named '~' under "
            f"{os.getcwd()}, and seqfraud {left}): write hydra.{key}.dir='${{oc.env:HOME}}{where[1:]}' or an "
            "absolute path"
        )


def _remove_hydras_folder(output_dir: Path, top: Path) -> bool:
    """Remove ``output_dir`` and its parents up to ``top`` if they hold nothing but Hydra's config and logs."""
    if top != output_dir and top not in output_dir.parents:
        return False
    hydras = {".hydra", "multirun.yaml"}
    if any(p.name not in hydras and p.suffix != ".log" for p in output_dir.iterdir()):
        return False
    shutil.rmtree(output_dir)
    for parent in output_dir.parents:
        if parent == top.parent:
            break
        if [p.name for p in parent.iterdir()] not in ([], ["multirun.yaml"]):
            return False
        shutil.rmtree(parent)
    return True
