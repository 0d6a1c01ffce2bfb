"""Config nodes as the plain data the library takes: one conversion, one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seqfraud.errors import did_you_mean, is_finite, is_number


def plain(node: Any) -> dict[str, Any]:
    """A config mapping (OmegaConf node or dict) resolved to plain Python data; ``None`` is an empty mapping."""
    if node is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        return dict(node)
    data = OmegaConf.to_container(node, resolve=True)
    if not isinstance(data, dict):
        raise TypeError(f"expected a config mapping, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def packaged(name: str) -> dict[str, Any]:
    """A YAML file of the packaged config (``seqfraud/conf``), as written (interpolations unresolved)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(str(files("seqfraud.conf").joinpath(name))), resolve=False)
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


# The sections only a sequence model's fit reads: a LightGBM run's are no settings of its own (compare leaves them
# out; train says an override of them changes nothing).
SEQUENCE_FIT = ("trainer.", "optim.", "loader.", "callbacks.", "small_split.", "loss.")
# A transformer encoder's own settings, which a GRU reads none of.
TRANSFORMER_KEYS = ("n_heads", "ff_mult", "local_kernel")

# The settings small_split leaves where they were set, and the small_split key that then takes their value
# (seqfraud.training.train.keep_what_was_set).
SMALL_SPLIT_OWN = {"trainer.max_epochs": "max_epochs", "callbacks.early_stopping.patience": "patience"}

# Each config group a command line sets keys of, with the option train.yaml picks for it, under the key it fills.
DEFAULT_OPTIONS = {
    "data": "data/synthetic.yaml",
    "features": "features/default.yaml",
    "preprocess": "preprocessing/default.yaml",
    "trainer": "trainer/default.yaml",
}


def packaged_defaults() -> dict[str, Any]:
    """train.yaml's own settings, and each group of :data:`DEFAULT_OPTIONS` as its default option sets it."""
    train = packaged("train.yaml")
    own = {k: v for k, v in train.items() if k not in ("defaults", "hydra")}
    return own | {key: packaged(name) for key, name in DEFAULT_OPTIONS.items()}


def setting_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted path of every setting of a config tree."""
    return [
        p
        for k, v in tree.items()
        for p in (setting_paths(v, f"{prefix}{k}.") if isinstance(v, Mapping) and v else [f"{prefix}{k}"])
    ]


def model_settings() -> list[str]:
    """Every ``model.*`` setting some packaged model preset has (``model.params.num_leaves`` too), for a hint at a
    misspelt one."""
    from importlib.resources import files

    presets = sorted(
        p.name for p in files("seqfraud.conf").joinpath("model").iterdir() if p.name.endswith(".yaml")
    )
    return sorted(
        {
            p
            for name in presets
            for p in setting_paths(packaged(f"model/{name}"), "model.")
            if p != "model.defaults"
        }
    )


def where_key_lives(key: str, command: str) -> str:
    """`` (did you mean 'data.split.label_cutoff'?)`` for an override key of ``seqfraud COMMAND`` that ends a
    packaged one's path (a dogfood's ``split.label_cutoff`` got Hydra's "Key 'split' is not in struct" alone), or
    that is spelt close to one (``trainer.max_epoch``: review 113), or nothing. A packaged key itself is another
    command's (``seqfraud train backtest.windows=3``), or one this run's choices left out (``data.synthetic=null
    data.synthetic.seed=3``): each was told to mean itself."""
    backtest = setting_paths({"backtest": packaged("backtest.yaml")["backtest"]})
    known = setting_paths(packaged_defaults())
    if key in backtest and command != "backtest":
        return f" ({key} is a setting of seqfraud backtest, not of seqfraud {command})"
    if key in known:
        if command == "export":
            return f" ({key} is a setting of training, not of seqfraud export)"
        return f" (a null or a preset chosen above {key} leaves it out of this run's settings)"
    if command == "backtest":
        known += backtest
    found = [p for p in known if p.endswith(f".{key}")]
    # A dotted key shares its section with every sibling, which lifted optim.min_lr_ratio past 0.6 for
    # optim.learning_rate: a wrong hint is worse than none.
    return (
        f" (did you mean {' or '.join(map(repr, found))}?)" if found else did_you_mean(key, known, cutoff=0.8)
    )


# Settings whose packaged default is a whole number but which take any number; the others take integers only
# (model.n_layers=1.5 passed, and failed in the model: review 52).
FRACTIONS = frozenset(
    {"preprocess.memory_gb", "features.time_delta.max_seconds", "features.entity.smoothing"}
)


@dataclass(frozen=True)
class Bound:
    """Where a number may lie: from ``low`` (excluded where ``low_open``) up to ``high`` (excluded where
    ``high_open``); None: no bound on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        above = self.low is None or (x > self.low if self.low_open else x >= self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return "positive" if self.low == 0 and self.low_open else f"at least {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Bound(0, low_open=True)
# Numbers that cannot work outside these bounds, by key, in every command's config (train's, backtest's,
# export's): each failed deep in torch, Polars or Lightning, or ran on meaninglessly (metrics.fpr=2, a negative
# partition count: dogfoods 53 and 55). Checked where set; a key of another command's config is not there.
RANGES = {
    "optim.lr": POSITIVE,
    "optim.weight_decay": Bound(0),
    "optim.warmup_fraction": Bound(0, 1, high_open=True),
    "optim.min_lr_ratio": Bound(0, 1),
    "optim.betas": Bound(0, 1, high_open=True),
    "loss.pos_weight": POSITIVE,
    "loss.gamma": Bound(0),
    "loss.alpha": Bound(0, 1),
    "loader.batch_size": Bound(1),
    "loader.eval_batch_size": Bound(1),
    "loader.num_workers": Bound(0),
    "loader.pool_batches": Bound(1),
    "loader.shuffle_buffer": Bound(0),
    "loader.prefix_share": Bound(0, 1),
    "small_split.min_batches": Bound(0),
    "small_split.max_epochs": Bound(1),
    "small_split.patience": Bound(1),
    "metrics.fpr": Bound(0, 1, low_open=True, high_open=True),
    "metrics.recall": Bound(0, 1, low_open=True),
    "label_fraction": Bound(0, 1, low_open=True),
    "freeze_epochs": Bound(0),
    "features.max_len": Bound(1),
    "features.min_count": Bound(0),
    "features.max_vocab": Bound(1),
    "features.n_buckets": Bound(1),
    "features.tail_quantiles": Bound(0, 1, low_open=True, high_open=True),
    "features.time_delta.min_seconds": POSITIVE,
    "features.time_delta.max_seconds": POSITIVE,
    "features.time_delta.n_buckets": Bound(3),
    "features.entity.smoothing": Bound(0),
    "model.num_boost_round": Bound(1),
    "model.early_stopping": Bound(1),
    "model.stacking.num_boost_round": Bound(1),
    "model.stacking.early_stopping": Bound(1),
    # Below a half, a candidate that loses to the baseline on most resamples was kept (dogfood 163).
    "model.stacking.confidence": Bound(0.5, 1),
    "model.stacking.resamples": Bound(1),
    "preprocess.memory_gb": POSITIVE,
    "preprocess.partitions": Bound(1),
    "backtest.windows": Bound(1),
    "backtest.window_days": POSITIVE,
    "backtest.val_days": POSITIVE,
    "tolerance": Bound(0),
    "parity_sessions": Bound(1),
}


def out_of_range(cfg: Mapping[str, Any]) -> str | None:
    """The first setting of ``cfg`` (a plain, resolved config) outside its :data:`RANGES` bound, as
    ``"key must be ..., got value"``; numbers and lists' numbers only (:func:`wrong_type` tells the rest)."""
    for key, bound in RANGES.items():
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        for x in node if isinstance(node, list) else [node]:
            if is_number(x) and not (bound.holds(x) and is_finite(x)):
                each = "each of " if isinstance(node, list) else ""
                return f"{each}{key} must be {bound}{'' if is_finite(x) else ' and finite'}, got {node}"
    return None


def interpolated(value: Any) -> bool:
    """Whether a setting, read unresolved, is an interpolation (``${optim.lr}``), whose value is checked resolved."""
    return isinstance(value, str) and value.startswith("${")


def wrong_type(given: Mapping[str, Any], reference: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first value of ``given`` whose packaged default in ``reference`` is a number, a boolean or a list of
    numbers and that is not one (an interpolation aside), as ``"section.key must be ..."``: ``optim.lr=fast``
    failed with a TypeError traceback, after preprocessing (dogfood 49)."""
    for key, value in given.items():
        default = reference.get(key)
        if isinstance(default, Mapping) and isinstance(value, Mapping):
            if found := wrong_type(value, default, f"{prefix}{key}."):
                return found
            continue
        if interpolated(value):
            continue
        number = is_number(value)
        if isinstance(default, list) and default and all(map(is_number, default)):
            # features.tail_quantiles=0.99 failed with a TypeError traceback (review 185)
            ok = isinstance(value, list) and all(is_number(x) or interpolated(x) for x in value)
            wanted = "a list of numbers"
        elif isinstance(default, bool):
            ok, wanted = isinstance(value, bool), "true or false"
        elif isinstance(default, int) and f"{prefix}{key}" not in FRACTIONS:
            ok, wanted = number and isinstance(value, int), "an integer"
        elif isinstance(default, (int, float)):
            ok, wanted = number, "a number"
        else:
            continue
        if not ok and value is not None:
            return f"{prefix}{key} must be {wanted} (as its default, {default!r}), got {value!r}"
    return None


def unknown_key(given: Mapping[str, Any], reference: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first key of ``given`` that ``reference`` lacks, as ``"section.key: ..."`` with what that level takes.

    Only levels whose reference is a non-empty mapping are checked; below a null, a list or an empty mapping
    (``spark.conf: {}``) the keys are free-form."""
    for key, value in given.items():
        if key not in reference:
            known = sorted(reference)
            where = prefix[:-1] or "the top level"
            listed = f"{known}" if len(known) <= 25 else f"{len(known)} keys, among them {known[:25]}"
            return f"{prefix}{key}: no such setting{did_you_mean(key, known)}; {where} takes {listed}"
        below = reference[key]
        free = not (isinstance(below, Mapping) and below and isinstance(value, Mapping))
        if not free and (found := unknown_key(value, below, f"{prefix}{key}.")):
            return found
    return None
