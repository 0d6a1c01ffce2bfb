"""``train(cfg)``: preprocess, fit, evaluate the best checkpoint out of time, and write the run directory.

The run directory then holds everything later steps need: ``spec.json``, ``checkpoints/best.ckpt``,
``metrics.json``, ``predictions/{val,test}.parquet`` and ``config.yaml``, plus the tokenized ``data/`` unless
``prepared_dir`` points at an earlier preprocessing output.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from seqfraud import rundir
from seqfraud import schema as S
from seqfraud.baselines import STACKER_FILE, check_lightgbm_params, fit_lightgbm, fit_predict_lightgbm
from seqfraud.config import (
    SMALL_SPLIT_OWN,
    TRANSFORMER_KEYS,
    out_of_range,
    packaged,
    packaged_defaults,
    plain,
    unknown_key,
    wrong_type,
)
from seqfraud.data.events import read_typologies
from seqfraud.data.shards import ROW_GROUP_SESSIONS, shard_files
from seqfraud.data.split import BOUNDARY_PERIOD, check_splits, fractions_read, later_boundary
from seqfraud.errors import ConfigError
from seqfraud.features.spec import Spec
from seqfraud.metrics import classification_metrics, per_group_metrics
from seqfraud.models.pretrain import check_pretrain
from seqfraud.models.sequence import ModelConfig, SessionClassifier
from seqfraud.preprocess import (
    Prepared,
    check_prepared_settings,
    input_record,
    load_prepared,
    preprocess,
    resolve_data_config,
)
from seqfraud.provenance import files_digest, versions
from seqfraud.schema import Schema
from seqfraud.training.callbacks import FreezeEncoder, best_epoch, silence_known_warnings
from seqfraud.training.data import (
    LoaderConfig,
    SessionStream,
    StreamData,
    entity_groups,
    row_groups,
    token_counts,
)
from seqfraud.training.embeddings import embedding_record_of, say_more_labels, with_embeddings
from seqfraud.training.launch import (
    launcher_rank_and_world,
    local_processes,
    process_left_as_found,
    training_threads,
)
from seqfraud.training.module import LOSSES, PretrainModule, SessionRiskModule
from seqfraud.training.stacking import aggregate_frames, check_stacking, fit_stacked, session_order
from seqfraud.training.wandb_report import WandbLogger, finish, log_run

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_proba(
    net: SessionClassifier,
    path: str | Path,
    fields: Sequence[str],
    batch_size: int = 64,
    *,
    shuffle_order: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Probabilities in dataset (file) order, from one eval stream of world size 1."""
    net.eval()
    stream = SessionStream(
        path, fields, batch_size, shuffle=False, seed=seed, shuffle_order=shuffle_order, rank=0, world_size=1
    )
    out = np.zeros(stream.n, dtype=np.float32)
    for batch in stream:
        out[batch["index"].numpy()] = torch.sigmoid(net(batch["tokens"], batch["lengths"]).float()).numpy()
    return out


# What each ``model.kind`` reads under ``model``: the sequence model's sizes (ModelConfig less what the fitted spec
# gives), the stacker's section on top of them, or the LightGBM baseline's options and the hybrid's embeddings file.
SPEC_GIVEN = {"vocab_sizes", "max_len", "use_fields", "entity_fields", "value_fields"}
SEQUENCE_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} - SPEC_GIVEN
MODEL_KEYS = {
    "sequence": SEQUENCE_KEYS,
    "stacked": SEQUENCE_KEYS | {"stacking"},
    "lightgbm": {"embeddings"}
    | {p.name for p in inspect.signature(fit_lightgbm).parameters.values() if p.kind == p.KEYWORD_ONLY}
    - {"seed", "what"},  # the run's seed; the fit's name in its messages
}


# Top-level keys that config groups fill (train.yaml's defaults list; the preprocessing group's package is
# `preprocess`). Of these, data, features and preprocess are checked key by key against their defaults below.
_GROUP_KEYS = ("model", "trainer", "logger", "callbacks", "paths")


def check_settings(cfg: DictConfig, *, sections: Mapping[str, Any] | None = None) -> None:
    """Refuse, before any data is read, a setting nothing reads, and values that cannot work.

    Keys an experiment file adds merge without a word: a dogfood's ``optim.learning_rate: 0.5`` trained at the
    default rate, ``loss.name: nonsense`` trained with BCE, ``trainer.max_epoch`` failed after preprocessing.
    Every key must be one the packaged config has (or a Lightning ``Trainer`` argument, under ``trainer``);
    ``model`` is :func:`checked_model`'s, ``data`` the data contract's. ``sections``: a command's own sections
    beside train.yaml's (the backtest's), as their packaged defaults.
    """
    defaults = packaged_defaults()
    reference: dict[str, Any] = defaults | {key: None for key in _GROUP_KEYS}
    # data.schema's keys are the contract's (Schema.from_config); a misspelt data.split.val_start fell back to
    # val_fraction unsaid, moving the split (dogfood 159).
    reference["data"] = defaults["data"] | {"schema": None}
    reference["trainer"] = dict.fromkeys(set(inspect.signature(L.Trainer.__init__).parameters) - {"self"})
    reference |= sections or {}
    settings = cast(dict, OmegaConf.to_container(cfg, resolve=False))  # names, not values: nothing to resolve
    if unknown := unknown_key({str(k): v for k, v in settings.items()}, reference):
        raise ConfigError(unknown)
    # Lightning's devices and deterministic also take text ("auto", "warn"): not typed by their defaults.
    trainer = {k: v for k, v in defaults["trainer"].items() if k not in ("devices", "deterministic")}
    typed = reference | {"trainer": trainer}
    if wrong := wrong_type({str(k): v for k, v in settings.items()}, typed):
        raise ConfigError(wrong)
    if wrong := out_of_range(settings):
        raise ConfigError(wrong)
    betas = settings.get("optim", {}).get("betas")
    if not (
        isinstance(betas, list) and len(betas) == 2
    ):  # [0.9], [] and null: errors in AdamW (reviews 185, 186)
        raise ConfigError(f"optim.betas must hold two numbers, AdamW's, got {betas!r}")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if isinstance(epochs, int) and not (epochs >= 1 or epochs == -1):  # 0 trained nothing, unsaid
        raise ConfigError(f"trainer.max_epochs must be at least 1 (or -1: no limit), got {epochs}")
    # The fractions the split reads: a test_fraction of 0 trained on, with NaN test metrics.
    split = settings.get("data", {}).get("split") or {}
    shares = {k: x for k in fractions_read(split) if isinstance(x := split.get(k), (int, float))}
    for k, x in shares.items():
        if not 0 < x < 1:
            raise ConfigError(f"data.split.{k} must be in (0, 1), got {x}")
    if len(shares) == 2 and sum(shares.values()) >= 1:
        raise ConfigError(
            "data.split.val_fraction + data.split.test_fraction must be below 1 (the rest trains), got "
            f"{shares['val_fraction']} + {shares['test_fraction']}"
        )
    # An unset shell variable (init_from=$RUN) trained from scratch, unsaid (dogfood 157).
    if (init := cfg.get("init_from")) is not None and not str(init).strip():
        raise ConfigError(
            "init_from is empty (an unset shell variable?): give the pretraining run's directory, or leave "
            "init_from out to train from scratch"
        )
    freeze = int(cfg.get("freeze_epochs") or 0)
    if freeze and not cfg.get("init_from"):
        raise ConfigError(f"freeze_epochs={freeze} freezes a pretrained encoder: it needs init_from=RUN")
    callbacks = settings.get("callbacks") or {}
    for name, callback in callbacks.items():
        check_callback(f"callbacks.{name}", callback)
    # A monitor's typo failed only after the first epoch (dogfood 55), as did a classifier's metric watched by a
    # pretraining whose experiment file set no monitor of its own (dogfood 157).
    # What module.py logs, as Lightning names it: the training loss per step and epoch, and both together.
    losses = {"val/loss", "train/loss", "train/loss_step", "train/loss_epoch"}
    if pretrain := cfg.get("pretrain"):
        check_pretrain(plain(pretrain))
        what = "a pretraining"
        # Each objective's loss, per step and epoch in training, and the entity pairs a batch of groups counts.
        names = [*pretrain.get("objectives"), "entity_pairs"]
        logged = (
            losses
            | {f"val/{n}" for n in names}
            | {f"train/{n}{e}" for n in names for e in ("", "_step", "_epoch")}
        )
    else:
        what = "a classifier"
        scored = classification_metrics([0, 1], [0.1, 0.9], **plain(cfg.get("metrics")))
        logged = losses | {f"val/{k}" for k in scored if k not in ("n", "positives")}
    for name, callback in callbacks.items():
        monitor = callback.get("monitor")
        if isinstance(monitor, str) and monitor not in logged:
            raise ConfigError(
                f"callbacks.{name}.monitor: {monitor!r} is not a metric {what} logs; it logs {sorted(logged)}"
                + (" (+experiment=pretrain_contrastive watches val/loss, mode min)" if pretrain else "")
            )
    if (name := cfg.get("loss", {}).get("name")) not in LOSSES:
        raise ConfigError(f"loss.name must be one of {list(LOSSES)}, got {name!r}")
    if cfg.get("pretrain"):  # a bad pretrain.entity was refused after the whole preprocessing (dogfood 77)
        pretrain_entity(plain(cfg.pretrain), Schema.from_config(plain(cfg.data.schema)))
    fraction = cfg.get("label_fraction", 1.0)
    entities = OmegaConf.select(cfg, "data.schema.entities") or []
    if float(fraction) < 1 and entities and OmegaConf.select(cfg, "features.entity.risk", default=False):
        raise ConfigError(
            f"label_fraction={fraction} hides training labels from the classifier, but the entity risk features "
            "(features.entity.risk) are computed in preprocessing from every label, so the run would read the "
            "labels it simulates not having (review 50): set features.entity.risk=false, or give a label table "
            "that holds only the labels to use"
        )


def check_callback(key: str, callback: Any) -> None:
    """A callback entry names its class (``_target_``) and only arguments that class takes: a misspelt one
    failed after preprocessing, and an entry without ``_target_`` with a traceback (dogfood 31)."""
    if not isinstance(callback, Mapping) or "_target_" not in callback:
        raise ConfigError(
            f"{key}: a callback needs _target_ (its class), e.g. pytorch_lightning.callbacks.EarlyStopping"
        )
    try:
        params = inspect.signature(get_class(str(callback["_target_"]))).parameters
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{key}._target_: {e}") from None
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    if unknown := unknown_key(
        {k: v for k, v in callback.items() if k != "_target_"}, dict.fromkeys(params), f"{key}."
    ):
        raise ConfigError(unknown)


def checked_model(cfg: DictConfig) -> DictConfig:
    """The config with ``model`` as its preset's ``kind`` reads it, checked before any data is read.

    An experiment file's ``model.*`` keys merge into whichever preset ``model=`` picks: its ``stacking`` section
    lands in ``model=small``, its ``d_model`` in ``model=lightgbm``. The preset's ``kind`` decides the model, keys
    another kind reads are dropped with a warning, and a key no kind reads is refused (a typo would be ignored).
    """
    model = plain(cfg.model)
    kind = model.get("kind")
    if kind not in MODEL_KEYS:
        raise ConfigError(
            f"model.kind must be one of {list(MODEL_KEYS)} (each model preset sets it), got {kind!r}"
        )
    keys = set(model) - {"kind"}
    unknown = sorted(keys - set().union(*MODEL_KEYS.values()))
    if unknown:
        raise ConfigError(
            f"model.{unknown[0]}: no model reads {unknown}; model.kind={kind} reads {sorted(MODEL_KEYS[kind])}"
        )
    others = sorted(keys - MODEL_KEYS[kind])
    out = cfg.copy()
    if others:
        log.warning(
            "model.kind=%s does not read %s (set for another model, by an experiment file?): ignored",
            kind,
            ["model." + k for k in others],
        )
        with open_dict(out):
            for k in others:
                out.model.pop(k)
    if cfg.get("pretrain") and kind == "lightgbm":
        raise ConfigError(
            "pretraining fits a sequence model: choose model=small (or another sequence preset)"
        )
    if cfg.get("pretrain") and cfg.get("init_from"):  # it trained from scratch, init_from recorded and unread
        raise ConfigError(
            "init_from starts a classifier from a pretraining run; pretraining itself starts fresh: leave init_from "
            "out of a +experiment=pretrain_* run (dogfood 53)"
        )
    if kind == "lightgbm" and cfg.get("init_from"):
        raise ConfigError(
            "init_from starts a sequence model from a pretraining run; model=lightgbm has none (it trained as if "
            "unset): choose model=small or model=stacked, or give the hybrid the run's embeddings "
            "(model.embeddings=FILE of seqfraud embed --run RUN)"
        )
    # The sizes' own rules (heads dividing the width...), checked with any vocabulary: they failed after preprocessing.
    if kind in ("sequence", "stacked"):
        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in SEQUENCE_KEYS}
        if wrong := wrong_type({k: v for k, v in model.items() if k in SEQUENCE_KEYS}, defaults, "model."):
            raise ConfigError(wrong)
        try:
            ModelConfig(vocab_sizes=[8], max_len=8, **{k: v for k, v in model.items() if k in SEQUENCE_KEYS})
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
    if kind == "lightgbm":
        check_lightgbm_params(model.get("params") or {}, "model.params")
    if kind == "stacked" and not cfg.get("pretrain"):
        # confidence=fast failed after every sequence fit (dogfood 53), a bad LightGBM parameter likewise.
        stacking = packaged("model/stacked.yaml")["stacking"]
        if wrong := wrong_type(model.get("stacking") or {}, stacking, "model.stacking."):
            raise ConfigError(wrong)
        check_lightgbm_params(
            (model.get("stacking") or {}).get("params") or {}, "model.stacking.params", stacker=True
        )
        check_stacking(out)
    engine = (cfg.get("preprocess") or {}).get("engine", "polars")
    if kind != "sequence" and not cfg.get("pretrain") and (cfg.get("prepared_dir") or engine == "spark"):
        raise ConfigError(
            f"model.kind={kind} reads the baseline's aggregates from the raw events through Polars, which neither "
            "prepared_dir nor preprocess.engine=spark keeps: run it with the polars engine and no prepared_dir, "
            "or choose a sequence model (model=small)"
        )
    return out


def model_name(model: Mapping[str, Any]) -> str:
    """How metrics and backtests name a model: its kind, or a sequence model's encoder."""
    kind = model.get("kind")
    return str(model.get("encoder") if kind == "sequence" else kind)


def model_config(model_cfg: dict, spec, exclude: list[str]) -> ModelConfig:
    """Sizes from the preset; vocabulary sizes, the field list and which fields are entity features from the
    fitted spec."""
    unknown = sorted(set(exclude) - set(spec.fields))
    if unknown:
        raise ConfigError(
            f"features.exclude names unknown field(s) {unknown}; fields are {list(spec.fields)}"
        )
    entity = set(spec.entity.feature_names()) if spec.entity else set()
    return ModelConfig(
        vocab_sizes=[spec.vocab_size(f) for f in spec.fields],
        max_len=spec.max_len,
        use_fields=[f not in exclude for f in spec.fields],
        entity_fields=[f in entity for f in spec.fields],
        value_fields=[f in spec.value_fields for f in spec.fields],
        **{k: v for k, v in model_cfg.items() if k in SEQUENCE_KEYS},
    )


def evaluate(pred: pl.DataFrame, metrics_cfg: dict, typologies: pl.DataFrame | None) -> dict[str, Any]:
    """Overall metrics, plus per-typology ones when the generator's typologies are known."""
    out: dict[str, Any] = classification_metrics(pred[S.LABEL], pred[S.SCORE], **metrics_cfg)
    if typologies is not None:
        joined = pred.join(typologies, on=S.SESSION_ID, how="left").with_columns(
            pl.col(S.TYPOLOGY).fill_null(S.UNKNOWN_TYPOLOGY)
        )
        out["per_typology"] = per_group_metrics(
            joined[S.LABEL], joined[S.SCORE], joined[S.TYPOLOGY], **metrics_cfg
        )
    return out


# A small split's batches shrink to this size at the least (small_split).
MIN_BATCH = 16


def small_split(cfg: DictConfig, train: Path) -> dict[str, int]:
    """What a classifier's fit on ``train`` changes of ``cfg``, by key: nothing, or for a training split under
    ``loader.batch_size x small_split.min_batches`` sessions, smaller batches (that many an epoch, down to
    :data:`MIN_BATCH`), up to ``small_split.max_epochs`` epochs and ``small_split.patience``, where the trainer's
    and early stopping's are the packaged ones (a value set on purpose stays). The run's metrics record it.

    A few thousand sessions in batches of 128 made some 25 optimizer steps an epoch, and the sequence model
    stopped barely trained: on eleven small logs this schedule lifted the default model's test PR-AUC on six (up
    to 0.02 -> 0.91), left four alike and lowered one (0.95 -> 0.88), at a median 2.6 times the time; smaller
    batches alone, or on a 14,000-session split, did worse (BENCHMARKS.md, small splits).
    """
    small = plain(cfg.get("small_split") or {})
    if not small.get("min_batches"):
        return {}
    sessions = sum(g.rows for g in row_groups(train))
    batch = int(cfg.loader.batch_size)
    if sessions >= batch * int(small["min_batches"]):
        return {}
    changes = {"loader.batch_size": min(batch, max(MIN_BATCH, sessions // int(small["min_batches"])))}
    # Unset (~trainer.max_epochs) as the packaged value: a traceback read it (dogfood 108).
    if OmegaConf.select(cfg, "trainer.max_epochs") in (None, packaged("trainer/default.yaml")["max_epochs"]):
        changes["trainer.max_epochs"] = int(small["max_epochs"])
    stopping = (cfg.get("callbacks") or {}).get("early_stopping")
    if (
        stopping is not None
        and stopping.get("patience") == packaged("callbacks/default.yaml")["early_stopping"]["patience"]
    ):
        changes["callbacks.early_stopping.patience"] = int(small["patience"])
    return {k: v for k, v in changes.items() if OmegaConf.select(cfg, k) != v}


def keep_what_was_set(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """A trainer or early-stopping value given on the command line (Hydra's task ``overrides``) made the small
    split's too, in ``cfg`` itself, whose config.yaml DDP ranks read: small_split reads values, and an explicit
    ``trainer.max_epochs=8``, the packaged value, was taken as unset and became 20 (dogfood 71)."""
    if not cfg.get("small_split"):
        return
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides if "=" in o}
    with open_dict(cfg):
        for key, own in SMALL_SPLIT_OWN.items():
            if key in given and OmegaConf.select(cfg, key) is not None:
                cfg.small_split[own] = OmegaConf.select(cfg, key)


def with_small_split(cfg: DictConfig, train: Path) -> DictConfig:
    """``cfg`` with :func:`small_split`'s changes for a fit on ``train``, said in the log."""
    changes = small_split(cfg, train)
    if not changes:
        return cfg
    log.info(
        "a small training split (%s sessions): %s (small_split; small_split.min_batches=0 keeps the settings)",
        f"{sum(g.rows for g in row_groups(train)):,}",
        ", ".join(f"{key}={value}" for key, value in changes.items()),
    )
    return with_changes(cfg, changes)


def main_fit_changes(cfg: DictConfig, prepared: Prepared) -> dict[str, int]:
    """:func:`small_split`'s changes for a classifier's fit on the whole training split (a stacked run's folds
    have their own); none for LightGBM and pretraining, which it leaves alone."""
    if cfg.get("pretrain") or cfg.model.kind == "lightgbm":
        return {}
    changes = small_split(cfg, prepared.datasets["train"])
    # The packaged small_split.max_epochs: keep_what_was_set gives it a value set on the command line.
    epochs, small_epochs = (
        OmegaConf.select(cfg, "trainer.max_epochs"),
        packaged("train.yaml")["small_split"]["max_epochs"],
    )
    if changes and "trainer.max_epochs" not in changes and 0 < (epochs or 0) < small_epochs:
        # A few epochs set for speed left the sequence model undertrained, and a stacker's validation still chose it:
        # test PR-AUC 0.68 at 4 epochs against LightGBM's 0.75, and 0.96 at 20 (dogfood 108).
        log.warning(
            "trainer.max_epochs=%d, as set, stays below the %d epochs a training split this small gets "
            "(small_split.max_epochs): the sequence model may stop undertrained%s; set no trainer.max_epochs (the "
            "packaged one) for the small split's schedule",
            epochs,
            small_epochs,
            ", and lose to the aggregates"
            if cfg.model.kind == "stacked"
            else "",  # a model alone has none (dogfood 191)
        )
    return changes


def with_changes(cfg: DictConfig, changes: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with ``changes`` (dotted keys) made."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for key, value in changes.items():
            OmegaConf.update(out, key, value)
    return out


def fit_sequence_model(
    cfg: DictConfig, prepared: Prepared, logger, extra_callbacks: list | None = None
) -> dict[str, np.ndarray] | None:
    """Fit with Lightning. Rank 0 gets the best checkpoint's probabilities on val and test in dataset order;
    other DDP ranks (which run this same function) get None."""
    cfg = with_small_split(cfg, prepared.datasets["train"])
    # Each fit from the run's seed (the one train() set): model=stacked's refit model, after its folds' fits, is
    # then the model a run of its sequence model alone fits (dogfood 253: up to 0.036 test PR-AUC apart).
    seed = os.environ.get("PL_GLOBAL_SEED")
    L.seed_everything(cfg.seed if seed is None else int(seed), workers=True, verbose=False)
    spec = prepared.spec
    features = plain(cfg.features)
    shuffle_order = features.get("shuffle_order", False)
    model_cfg = model_config(plain(cfg.model), spec, features.get("exclude", []))
    module = SessionRiskModule(
        model=model_cfg.to_dict(),
        optim=plain(cfg.optim),
        loss=plain(cfg.loss),
        metrics=plain(cfg.metrics),
        spec=spec.to_dict(),
    )
    extra_callbacks = list(extra_callbacks or [])
    if cfg.get("init_from"):
        load_pretrained(
            module.net, Path(cfg.init_from).expanduser(), spec, plain(cfg.model), features.get("exclude", [])
        )
        say_init_labels(Path(cfg.init_from).expanduser(), prepared.datasets["train"])
        if freeze := int(cfg.get("freeze_epochs") or 0):
            extra_callbacks.append(FreezeEncoder(freeze))
            # Read after small_split, which may have set the epochs (a warning from the config's said 8 of 20).
            epochs = cfg.trainer.max_epochs  # None or -1: no limit
            if isinstance(epochs, int) and 0 < epochs <= freeze:  # a linear probe, if meant: said
                log.warning(
                    "freeze_epochs=%d holds the encoder fixed for every one of this fit's %d epochs: only the "
                    "head learns",
                    freeze,
                    epochs,
                )
    loader_cfg = LoaderConfig(**plain(cfg.loader))
    data = StreamData(prepared.datasets, spec.fields, loader_cfg, seed=cfg.seed, shuffle_order=shuffle_order)
    trainer, callbacks = fit_lightning(cfg, module, data, logger, extra_callbacks)
    if not trainer.is_global_zero:
        return None
    freeze = int(cfg.get("freeze_epochs") or 0) if cfg.get("init_from") else 0
    if (
        freeze
        and trainer.current_epoch > freeze
        and (kept := best_epoch(trainer, callbacks))
        and kept["epoch"] <= freeze
    ):
        # Validation PR-AUC tied at 1.0 on 10 frauds kept the head-only epoch, and the fine-tuned encoder was
        # thrown away unsaid (dogfood 105).
        log.warning(
            "the checkpoint kept is epoch %d, one of the freeze_epochs=%d in which the encoder stayed as "
            "pretrained: validation's %s did not rise after them (a tie keeps the earliest epoch), so the model "
            "holds the pretrained encoder and a head alone; compare with freeze_epochs=0",
            int(kept["epoch"]),
            freeze,
            getattr(trainer.checkpoint_callback, "monitor", "monitored metric"),
        )
    # The checkpoint this fit wrote, never a stale file left in a reused run directory.
    saved = [c.best_model_path for c in callbacks if isinstance(c, ModelCheckpoint) and c.best_model_path]
    best = (
        SessionRiskModule.load_from_checkpoint(saved[0], map_location="cpu", weights_only=True)
        if saved
        else module
    )
    return {
        name: predict_proba(
            best.net.cpu(),
            prepared.datasets[name],
            spec.fields,
            loader_cfg.eval_batch_size,
            shuffle_order=shuffle_order,
            seed=cfg.seed,
        )
        for name in ("val", "test")
    }


# In the run dir: the training sessions a supervised fit reads, when that is not the whole train split.
LABELLED_TRAIN = "labelled/train"


# A supervised fit on fewer frauds than this is said (labelled_train).
FEW_POSITIVES = 5


def labelled_train(train: Path, fraction: float, seed: int, out: Path, *, write: bool = True) -> Path:
    """The training sessions whose labels a supervised fit (sequence model, LightGBM, stacker) reads: those that
    have one (``data.policy.on_unlabeled=keep`` leaves the others in train, for pretraining), and of those, in a
    label-scarce run (``label_fraction``), a fixed share picked by a hash of the session id, so every model of
    one seed sees the same ones. The train split itself when that is all of it; else a copy in ``out``, shard
    for shard, written there unless ``write`` is off (local DDP child ranks read the copy rank 0 wrote)."""
    total, unlabelled, frauds = (
        pl.scan_parquet(shard_files(train))
        .select(
            pl.len(), pl.col(S.LABEL).null_count().alias("unlabelled"), pl.col(S.LABEL).sum().alias("frauds")
        )
        .collect()
        .row(0)
    )
    if fraction == 1 and not unlabelled:
        if write:  # said by rank 0, not again by each local DDP child
            _say_few_frauds(int(frauds or 0), total, fraction, seed)
        return train
    if not write:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    keep = pl.col(S.LABEL).is_not_null() & (
        (pl.col(S.SESSION_ID).hash(seed) % 1_000_000) < round(fraction * 1_000_000)
    )
    sessions = positives = 0
    for file in shard_files(train):
        part = pl.read_parquet(file).filter(keep)
        sessions += part.height
        positives += int(part[S.LABEL].sum() or 0)
        part.write_parquet(out / file.name, row_group_size=ROW_GROUP_SESSIONS)
    if not positives:
        share = f" in the label_fraction={fraction} share (seed {seed})" if fraction != 1 else ""
        raise ConfigError(f"no positive among the {sessions:,} labelled training session(s){share}")
    held = (
        f"; label_fraction={fraction} held back {total - unlabelled - sessions:,} labels"
        if fraction != 1
        else ""
    )
    log.info(
        "supervised fit on %s of %s training sessions, %s of them fraud (%s have no label%s)",
        f"{sessions:,}",
        f"{total:,}",
        f"{positives:,}",
        f"{unlabelled:,}",
        held,
    )
    _say_few_frauds(positives, sessions, fraction, seed)
    return out


def _say_few_frauds(positives: int, sessions: int, fraction: float, seed: int) -> None:
    """A 5% draw held one fraud, said in metrics.json alone (dogfood 115), as were 2 frauds of a whole log (review
    117): every model of the run learnt from them."""
    if positives >= FEW_POSITIVES:
        return
    log.warning(
        "the supervised fit reads %d fraud session(s) of %s labelled ones%s: every model of this run learns fraud "
        "from so few, and a comparison of them is noise; %s",
        positives,
        f"{sessions:,}",
        f" (label_fraction={fraction}, seed {seed})" if fraction != 1 else "",
        "draw more labels (label_fraction), or another share (seed)"
        if fraction != 1
        else "train on a longer log, or one with more frauds labelled",
    )


_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def encoder_settings(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model settings that shape or read an embedding and encoder, each only where it does (n_heads keeps
    every weight's shape, so a mismatch there would load and mean something else). The rest (value_bins,
    entity_input) show in the weights' shapes when the model reads such fields."""
    value = {k: model.get(k, _MODEL_DEFAULTS[k]) for k in SEQUENCE_KEYS}
    keys = ["encoder", "d_model", "n_layers", "fusion"]
    keys += list(TRANSFORMER_KEYS) if value["encoder"] == "transformer" else []
    keys += ["field_dim"] if value["fusion"] == "concat" else []
    return {k: value[k] for k in keys}


def check_init_from(run: Path, model: Mapping[str, Any], exclude: list[str]) -> None:
    """Refuse ``init_from=run`` unless it is a run directory whose model settings this run's ``model`` shares, and
    whose ``features.exclude`` (the token fields the embedding reads) is this run's ``exclude``: checked before any
    preprocessing, which can take long, and again when the weights are loaded."""
    if missing := rundir.unfinished(run):
        raise ConfigError(
            f"init_from={run}: no {' or '.join(missing)}; point it at the directory of a finished pretraining (or "
            "training) run"
        )
    # Read now: found damaged at the fit, it was after a rerun into one folder had cleared the earlier run's
    # outputs (review 158).
    with rundir.checkpoint_read(run / rundir.CHECKPOINT, ConfigError):
        torch.load(run / rundir.CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    if not (run / rundir.CONFIG_FILE).is_file():
        return  # a run written without its config: the weights' shapes are then the only check
    config = plain(OmegaConf.load(run / rundir.CONFIG_FILE))
    theirs, ours = encoder_settings(config["model"]), encoder_settings(model)
    # Another encoder is the whole difference (a transformer's heads mean nothing to a GRU).
    keys = ["encoder"] if theirs["encoder"] != ours["encoder"] else sorted(theirs.keys() | ours.keys())
    differ = [
        f"model.{k}={theirs.get(k)!r} there, {ours.get(k)!r} here"
        for k in keys
        if theirs.get(k) != ours.get(k)
    ]
    # Another field left out is another embedding: said, where a state_dict's size mismatch was (dogfood 105).
    excluded = list((config.get("features") or {}).get("exclude") or [])
    if set(excluded) != set(exclude):  # a set: the model reads whether a field is left out
        differ.append(f"features.exclude={excluded!r} there, {list(exclude)!r} here")
    if differ:
        raise ConfigError(
            f"init_from={run}: its encoder does not fit this model: {'; '.join(differ)}; fine-tune with the "
            "pretraining run's settings (or pretrain with this model's)"
        )


def check_same_tokens(run: Path, spec: Spec) -> Spec:
    """``init_from=run``'s spec, refused unless its tokens mean what this run's do: the same fields, vocabularies
    in the same order and bucket edges. Sizes alone passed a pretraining run on another log (dogfood 49: its
    event types, countries and amount edges in other places), whose weights then read other tokens, silently."""
    theirs = Spec.load(run / rundir.SPEC_FILE)
    differ = [
        what
        for what, there, here in (
            ("fields", theirs.fields, spec.fields),
            ("vocabularies", theirs.vocab, spec.vocab),
            ("bucket edges", theirs.edges, spec.edges),
            ("value fields", theirs.values, spec.values),
        )
        if there != here
    ]
    if differ:
        raise ConfigError(
            f"init_from={run}: that run tokenized with another spec ({', '.join(differ)} differ), so its weights "
            "would read other tokens; pretrain and fine-tune on one preprocessing output (prepared_dir=...)"
        )
    if key := later_boundary(theirs.fit_info, spec.fit_info):  # as for the hybrid's embeddings (review 104)
        raise ConfigError(
            f"init_from={run}: that run's {key} ({theirs.fit_info[key]}) is later than this run's "
            f"({spec.fit_info[key]}): its encoder learnt from sessions of this run's "
            f"{BOUNDARY_PERIOD[key]} period, which would then judge a model fitted to "
            "them; pretrain and fine-tune on one preprocessing output (prepared_dir=...)"
        )
    return theirs


def load_pretrained(
    net: nn.Module, run: Path, spec: Spec, model: Mapping[str, Any], exclude: list[str]
) -> None:
    """The embedding and encoder of a pretraining run (``init_from``) into ``net``, key for key.

    The pretraining run must have tokenized with the same spec (train both on one ``prepared_dir``, or on the
    same data and features config), and its model settings (``model``: this run's) must match: both are
    checked, with what differs named.
    """
    check_init_from(run, model, exclude)
    theirs = check_same_tokens(run, spec)
    with rundir.checkpoint_read(run / rundir.CHECKPOINT, ConfigError):
        state = torch.load(run / rundir.CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    parts = {
        k.removeprefix("net."): v for k, v in state.items() if k.startswith(("net.embed.", "net.encoder."))
    }
    if not parts:
        raise ConfigError(f"init_from={run}: its checkpoint holds no embedding or encoder")
    try:
        missing, _ = net.load_state_dict(parts, strict=False)
    except RuntimeError as e:
        differ = (
            f"features.max_len={theirs.max_len} there, {spec.max_len} here; fine-tune with the pretraining run's "
            "settings"
            if theirs.max_len != spec.max_len
            else str(e)
        )
        raise ConfigError(f"init_from={run}: its encoder does not fit this model: {differ}") from None
    if gaps := [k for k in missing if k.startswith(("embed.", "encoder."))]:
        raise ConfigError(
            f"init_from={run}: its checkpoint lacks {gaps[:5]}: another encoder (model.encoder?)"
        )
    log.info(
        "initialized the embedding and encoder from %s (%d tensors)", run / rundir.CHECKPOINT, len(parts)
    )
    metrics = run / rundir.METRICS_FILE
    if metrics.is_file() and json.loads(metrics.read_text()).get("objectives") == ["masked"]:
        log.warning(
            "init_from=%s pretrained with the masked objective alone, which trains the per-event states but not the "
            "pooled one the classifier reads: fine-tuning from it has done no better than from scratch (README); "
            "pretrain with contrastive, or both objectives",
            run,
        )


def say_init_labels(run: Path, train: Path) -> None:
    """:func:`say_more_labels` of ``init_from``'s run (dogfood 123: a supervised run of the whole label table,
    fine-tuned on 5% of it); a pretraining read no labels."""
    metrics = run / rundir.METRICS_FILE
    recorded = json.loads(metrics.read_text()) if metrics.is_file() else {}
    theirs = recorded.get("train") or {}
    if recorded.get("model") != "pretrain" and isinstance(theirs.get("n"), int):
        say_more_labels(f"init_from={run}", theirs, train)


def fit_lightning(
    cfg: DictConfig, module: L.LightningModule, data: StreamData, logger, extra_callbacks: list
) -> tuple[L.Trainer, list]:
    """The configured trainer and callbacks (plus ``extra_callbacks``) fit ``module``, local DDP ranks included."""
    run_dir = Path(cfg.paths.output_dir)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + extra_callbacks
    trainer = L.Trainer(
        # The run's resolved config is logged once (fit_and_evaluate); Lightning's own logging of the module's
        # hyperparameters replaced its `model` section with the network's and added the whole spec.
        **{"enable_autolog_hparams": False, **instantiate(cfg.trainer, _convert_="all")},
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )
    with local_processes(trainer, run_dir):
        trainer.fit(module, datamodule=data)
    return trainer, callbacks


POSITIVES = ("session", "entity")


def pretrain_entity(pretrain: Mapping[str, Any], schema: Schema) -> str | None:
    """The entity column whose sessions are each other's contrastive positives (``pretrain.positives=entity``
    and ``pretrain.entity``), or None for ``session`` (a session's own crops only)."""
    positives, entity = pretrain.get("positives", "session"), pretrain.get("entity")
    if positives not in POSITIVES:
        raise ConfigError(f"pretrain.positives must be one of {list(POSITIVES)}, got {positives!r}")
    if positives == "session":
        if entity is not None:
            raise ConfigError(f"pretrain.entity={entity} needs pretrain.positives=entity")
        return None
    if "contrastive" not in pretrain["objectives"]:
        raise ConfigError("pretrain.positives=entity needs the contrastive objective in pretrain.objectives")
    if entity not in schema.entities:
        raise ConfigError(
            f"pretrain.entity must be one of data.schema.entities {list(schema.entities)} with "
            f"pretrain.positives=entity, got {entity!r}"
        )
    return entity


def fit_pretrain(
    cfg: DictConfig, prepared: Prepared, logger, extra_callbacks: list | None = None
) -> dict[str, Any]:
    """Self-supervised pretraining (``pretrain``): labels unused; the best checkpoint by ``val/loss``. With
    ``pretrain.positives=entity`` the train and val sessions are grouped by that entity from the run's event log
    first, and the metrics add how many entity positives the last epoch's batches held (``entity_pairs``)."""
    spec = prepared.spec
    pretrain = plain(cfg.pretrain)
    entity = pretrain_entity(pretrain, spec.schema)
    model_cfg = model_config(plain(cfg.model), spec, plain(cfg.features).get("exclude", []))
    module = PretrainModule(
        model=model_cfg.to_dict(), optim=plain(cfg.optim), pretrain=pretrain, spec=spec.to_dict()
    )
    net = module.net
    if "masked" in net.objectives:
        net.start_at_frequencies(
            token_counts(
                prepared.datasets["train"],
                [spec.fields[i] for i in net.fields],
                [model_cfg.vocab_sizes[i] for i in net.fields],
            )
        )
    groups = None
    if entity:
        events = prepared.input("events")  # the event log that preprocessing read
        if events is None:
            raise ConfigError(
                f"prepared_dir={cfg.get('prepared_dir')} does not record the event log it was prepared from (an "
                "earlier seqfraud wrote it), which entity-grouped pretraining reads: preprocess it again"
            )
        splits = {name: prepared.datasets[name] for name in ("train", "val")}
        groups = entity_groups(events, prepared.input("labels"), spec.schema, entity, splits)
    # The contrastive loss sets each session against the rest of its batch: validation batches of training's
    # size read the same task, whatever loader.eval_batch_size (at 64 and 128 one checkpoint's validation loss
    # read 0.785 and 1.147: dogfood 77).
    loader_cfg = LoaderConfig(**plain(cfg.loader))
    if "contrastive" in net.objectives:
        loader_cfg = dataclasses.replace(loader_cfg, eval_batch_size=loader_cfg.batch_size)
    data = StreamData(prepared.datasets, spec.fields, loader_cfg, seed=cfg.seed, session_groups=groups)
    trainer, callbacks = fit_lightning(cfg, module, data, logger, list(extra_callbacks or []))
    got = trainer.callback_metrics  # the last epoch's
    best = best_epoch(trainer, callbacks)  # the checkpoint's, which init_from and embed read
    val = best or {k: float(v) for k, v in got.items()}
    out = {
        "model": "pretrain",
        "experiment": cfg.experiment_name,
        "objectives": list(cfg.pretrain.objectives),
        "val": {k.removeprefix("val/"): v for k, v in val.items() if k.startswith("val/")},
        **({"epoch": int(best["epoch"])} if best else {}),
    }
    if entity:
        pairs = float(got["train/entity_pairs"])
        log.info(
            "entity positives (%s): %d session pairs in the last epoch's training batches", entity, pairs
        )
        out |= {"positives": "entity", "entity": entity, "train": {"entity_pairs": pairs}}
    return out


def fit_aggregates_baseline(cfg: DictConfig, prepared: Prepared) -> dict[str, np.ndarray]:
    """LightGBM on per-session aggregates, aligned with the tokenized datasets' session order."""
    params = plain(cfg.model)
    params.pop("kind")
    embeddings = params.pop("embeddings", None)
    frames = aggregate_frames(prepared)
    if embeddings:
        n_aggregates = frames["train"].width
        fraction = float(cfg.get("label_fraction", 1.0))
        frames = with_embeddings(frames, embeddings, cfg.data.schema.session_id, prepared, fraction)
        log.info(
            "LightGBM on the aggregates and %d embedding columns of %s (model.embeddings)",
            frames["train"].width - n_aggregates,
            embeddings,
        )
    return fit_predict_lightgbm(
        frames["train"], frames["val"], {"test": frames["test"]}, seed=cfg.seed, **params
    )


@process_left_as_found()
def train(cfg: DictConfig, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Train one model; returns the metrics dict (``val.pr_auc`` is what sweeps optimize).

    ``extra_callbacks`` are Lightning callbacks added to the configured ones (benchmarks use it to time steps).
    When torchrun or SLURM start the processes, each one runs this on data prepared once (``prepared_dir``);
    only global rank 0 writes the run directory and logs, and the other ranks return ``{}`` after the fit.
    """
    silence_known_warnings()
    try:
        run_dir = Path(cfg.paths.output_dir)
    except InterpolationResolutionError:
        raise ConfigError(
            "paths.output_dir follows Hydra's run directory, which a config composed outside a Hydra run "
            "(hydra.compose, as from a notebook) does not have: compose it with paths.output_dir=DIR"
        ) from None
    if run_dir.parts[:1] == ("~",):  # Python made ./~ and Polars wrote under $HOME (dogfood 41)
        raise ConfigError(
            f"paths.output_dir={str(run_dir)!r}: ~ is not expanded here; write "
            f"'${{oc.env:HOME}}{str(run_dir)[1:]}' or an absolute path"
        )
    check_settings(cfg)
    cfg = checked_model(cfg)
    # `logger: none` in an experiment's body, not its defaults list: Hydra's error came after preprocessing.
    if isinstance(cfg.get("logger"), str):
        raise ConfigError(
            f"logger: {cfg.logger!r} is a value, not a logger preset: choose the preset with logger={cfg.logger} "
            f"on the command line, or '- override /logger: {cfg.logger}' in an experiment file's defaults list"
        )
    rank, world = launcher_rank_and_world()
    if world > 1 and not cfg.get("prepared_dir"):
        raise ValueError(
            f"this is rank {rank} of {world} processes started by torchrun/SLURM: preprocess once first "
            "(seqfraud preprocess ...) and pass prepared_dir=<its output dir>, so that no rank preprocesses"
        )
    if cfg.get("init_from") and not cfg.get("pretrain"):
        # Its checkpoint was removed as an earlier run's output, then missed (dogfood 49).
        if Path(cfg.init_from).expanduser().resolve() == run_dir.resolve():
            raise ConfigError(
                f"init_from={cfg.init_from} is this run's own directory (paths.output_dir), whose earlier outputs "
                "a run replaces: write the fine-tuning run elsewhere"
            )
        check_init_from(
            Path(cfg.init_from).expanduser(), plain(cfg.model), plain(cfg.features).get("exclude", [])
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        # Before any input is read: a launch that then fails leaves the earlier run's results in place, which
        # compare ranked as this launch's (dogfood 175, review 176), telling them apart by this id.
        (run_dir / rundir.LAUNCH_FILE).write_text(json.dumps({"id": uuid.uuid4().hex}))
    if world == 1:  # torchrun and SLURM set each rank's threads themselves
        torch.set_num_threads(training_threads(cfg.get("threads", "auto")))
    # The count moves the weights in their last digits, and `auto` follows the machine's load: said and recorded.
    # Not Lightning's own "Seed set to" on stderr: a run refused on its input printed it before its one error line.
    seed = L.seed_everything(cfg.seed, workers=True, verbose=False)  # seed=null: the one Lightning picks
    log.info(
        "torch threads: %d (threads=%s), seed %d", torch.get_num_threads(), cfg.get("threads", "auto"), seed
    )

    data_cfg = resolve_data_config(plain(cfg.data))
    # Started before any data is read: an online W&B run that cannot start falls back to offline here, not
    # after preprocessing (wandb_report.WandbLogger.start).
    logger = instantiate(cfg.logger, **run_name(cfg, run_dir)) if cfg.get("logger") and rank == 0 else False
    if isinstance(logger, WandbLogger):
        logger.start()
    try:
        prepared = prepare(cfg, data_cfg, run_dir, rank)
        metrics = fit_and_evaluate(cfg, prepared, logger, extra_callbacks)
    except BaseException as e:
        finish(logger, error=e)
        raise
    finish(logger)
    if rank == 0:
        log.info("run directory: %s", run_dir)  # what init_from=, prepared_dir=, embed --run and export take
    return metrics


def run_name(cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    """A W&B run's name, where the logger takes one and the config sets none: its run directory's last two parts
    (``2026-12-03_21-23-39/0`` in a sweep), so a synced run leads back to its files instead of a random name."""
    if "name" not in cfg.logger or cfg.logger.get("name"):
        return {}
    return {"name": f"{run_dir.parent.name}/{run_dir.name}"}


def prepare(cfg: DictConfig, data_cfg: dict[str, Any], run_dir: Path, rank: int) -> Prepared:
    """The run's tokenized splits: preprocessed into ``run_dir`` or read from ``prepared_dir``, checked, and a
    supervised run's training split cut to the sessions whose labels it reads."""
    supervised = not cfg.get("pretrain")
    if cfg.get("prepared_dir"):
        prepared = load_prepared(cfg.prepared_dir)
        prepared.spec.check_schema(Schema.from_config(data_cfg["schema"]))
        check_prepared_settings(prepared, data_cfg, str(cfg.prepared_dir), plain(cfg.features))
        check_splits(
            prepared.report, (data_cfg.get("split") or {}).get("label_cutoff"), supervised=supervised
        )
        if rank == 0:
            prepared.spec.save(run_dir / rundir.SPEC_FILE)  # the run directory describes its model on its own
    else:
        prepared = preprocess(
            data_cfg, plain(cfg.features), run_dir, plain(cfg.get("preprocess")), supervised=supervised
        )
    if cfg.get("init_from") and not cfg.get("pretrain"):
        check_same_tokens(Path(cfg.init_from).expanduser(), prepared.spec)
    if rank == 0:  # once the data is good: a rerun that fails on its input leaves the earlier run as it was
        clear_earlier_run(run_dir)
        (run_dir / rundir.CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if not cfg.get("pretrain"):  # pretraining reads every training session; labels unused
        fraction = float(cfg.get("label_fraction", 1.0))
        # Ranks that torchrun or SLURM start each write their own copy: they may share the run dir.
        out = run_dir / (LABELLED_TRAIN if rank == 0 else f"{LABELLED_TRAIN}.rank{rank}")
        prepared.datasets["train"] = labelled_train(prepared.datasets["train"], fraction, cfg.seed, out)
    return prepared


# What training writes into its run directory, besides config.yaml (rewritten with it), train.log (which Hydra
# appends to), the labelled copy of the train split and preprocessing's outputs (each replaced by its writer).
# An earlier run into the same directory (an explicit hydra.run.dir) left its own, which spoke for this run: its
# checkpoint was uploaded as a LightGBM run's W&B model (dogfood 28), and export took a stale stacker.txt as this
# run's and failed its parity check as train/serve skew.
RUN_OUTPUTS = (
    str(Path(rundir.CHECKPOINT).parent),
    rundir.METRICS_FILE,
    rundir.PREDICTIONS_DIR,
    STACKER_FILE,
    rundir.STACKING_REPORT,
    rundir.FOLDS_DIR,
)


def clear_earlier_run(run_dir: Path) -> None:
    """Remove what an earlier run's training left in ``run_dir``."""
    found = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if found:
        log.warning(
            "%s holds an earlier run's %s: removed, so that none of it speaks for this run", run_dir, found
        )
    for name in found:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def run_child_rank(run_dir: Path) -> None:
    """A local DDP child rank (started by :func:`~seqfraud.training.launch.local_processes`): the same fit as
    rank 0, from what rank 0 wrote into the run directory."""
    cfg = OmegaConf.load(run_dir / rundir.CONFIG_FILE)
    assert isinstance(cfg, DictConfig)  # written by train() from one
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        prepared = load_prepared(rundir.prepared_dir(run_dir))
        if cfg.get("pretrain"):
            fit_pretrain(cfg, prepared, logger=False)
            return
        # The labelled sessions rank 0 wrote before the fit, where it wrote any.
        fraction = float(cfg.get("label_fraction", 1.0))
        prepared.datasets["train"] = labelled_train(
            prepared.datasets["train"], fraction, cfg.seed, run_dir / LABELLED_TRAIN, write=False
        )
        fit_sequence_model(cfg, prepared, logger=False)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def provenance(cfg: DictConfig, prepared: Prepared) -> dict[str, Any]:
    """What makes this run again (metrics.json's ``provenance``): besides config.yaml's settings, the thread
    count used, the library versions and source commit, and the input files' digests and partitions that
    preprocessing recorded (the partition count sets the training order); the hybrid's embeddings file too, with
    the record of the encoder that wrote it (two hybrids on one path of other contents read alike: dogfood 105),
    and the checkpoint ``init_from`` started from (one pretrained again in place read alike: dogfood 157)."""
    inputs = prepared.report.get("inputs")
    if embeddings := cfg.model.get("embeddings"):
        inputs = (inputs or {}) | {
            "embeddings": (input_record(str(embeddings)) or {}) | {"record": embedding_record_of(embeddings)}
        }
    if (init := cfg.get("init_from")) and not cfg.get("pretrain"):
        ckpt = Path(init).expanduser() / rundir.CHECKPOINT
        inputs = (inputs or {}) | {
            "init_from": {"path": str(ckpt.resolve()), "sha256": files_digest([str(ckpt)])}
        }
    return {
        "provenance": {
            "threads": torch.get_num_threads(),
            "seed": cfg.seed,
            "versions": versions(),
            "inputs": inputs,
            "partitions": prepared.report.get("partitions"),
        }
    }


def fit_and_evaluate(
    cfg: DictConfig, prepared: Prepared, logger, extra_callbacks: list | None
) -> dict[str, Any]:
    """The model's fit, then its out-of-time metrics and predictions written into the run directory."""
    run_dir = Path(cfg.paths.output_dir)
    changes = main_fit_changes(cfg, prepared)
    if logger:
        # The schedule a small split trains with, not the packaged one it replaced (dogfood 73: W&B said 8 epochs
        # of a run that trained up to 20).
        logger.log_hyperparams(plain(with_changes(cfg, changes) if changes else cfg))
    if cfg.get("pretrain"):
        pretrained = fit_pretrain(cfg, prepared, logger, extra_callbacks) | provenance(cfg, prepared)
        (run_dir / rundir.METRICS_FILE).write_text(json.dumps(pretrained, indent=2))
        log.info(
            "pretrained (%s): val loss %.4f%s",
            ", ".join(pretrained["objectives"]),
            pretrained["val"]["loss"],
            f" (epoch {pretrained['epoch']}, the checkpoint kept)" if "epoch" in pretrained else "",
        )
        return pretrained
    scores: dict[str, np.ndarray] | None
    if cfg.model.kind == "lightgbm":
        scores = fit_aggregates_baseline(cfg, prepared)
    elif cfg.model.kind == "stacked":
        scores = fit_stacked(cfg, prepared, logger, extra_callbacks, fit_sequence_model)
    else:
        scores = fit_sequence_model(cfg, prepared, logger, extra_callbacks)
    if scores is None:
        return {}

    if not prepared.inputs_recorded:
        log.warning(
            "prepared_dir=%s records no input files (an earlier seqfraud wrote it): no per-typology metrics",
            cfg.get("prepared_dir"),
        )
    path = prepared.input("typologies")
    typologies = read_typologies(path, prepared.spec.schema) if path else None
    metrics_cfg = plain(cfg.metrics)
    (run_dir / rundir.PREDICTIONS_DIR).mkdir(exist_ok=True)
    metrics: dict[str, Any] = {"model": model_name(cfg.model), "experiment": cfg.experiment_name}
    # The hybrid, told apart from LightGBM alone.
    if cfg.model.kind == "lightgbm" and cfg.model.get("embeddings"):
        metrics["embeddings"] = str(cfg.model.embeddings)
    # The labelled training sessions the fit read: with label_fraction or unlabelled sessions kept, fewer than
    # the preprocessing report's train split (a dogfood found them only in the log).
    n, positives = (
        pl.scan_parquet(shard_files(prepared.datasets["train"]))
        .select(pl.col(S.LABEL).is_not_null().sum().alias("n"), pl.col(S.LABEL).sum().alias("positives"))
        .collect()
        .row(0)
    )
    metrics["train"] = {"n": int(n), "positives": int(positives or 0)}
    if changes:
        metrics["small_split"] = changes  # the sequence fit's schedule, where it was not the config's
    report = prepared.report
    # A prepared_dir of old lacks the count; a stacker that kept LightGBM alone never runs its sequence model
    # (dogfood 118: compare showed it reading 100%).
    reads = cfg.model.kind != "lightgbm" and rundir.stacking_kept(run_dir) != "aggregates"
    if reads and "events_in_splits" in report:
        # The share of the events the sequence model reads (max_len cuts a long session's earliest): a dogfood's
        # leaderboard showed a transformer that read 17% of them beside LightGBM, which reads all, unsaid.
        metrics["sequence_reads"] = {
            "max_len": prepared.spec.max_len,
            "events": 1 - report["events_not_read"] / max(report["events_in_splits"], 1),
            "truncated_sessions": report["truncated_sessions"],
        }
    metrics |= provenance(cfg, prepared)
    # Which launch wrote these results, which ``seqfraud compare`` holds to the directory's latest.
    metrics["launch"] = json.loads((run_dir / rundir.LAUNCH_FILE).read_text())["id"]
    predictions = {}
    for name in ("val", "test"):
        pred = session_order(prepared.datasets[name])
        pred = pred.with_columns(pl.Series(S.SCORE, scores[name], dtype=pl.Float32))
        pred.write_parquet(rundir.predictions(run_dir, name))
        predictions[name] = pred
        metrics[name] = evaluate(pred, metrics_cfg, typologies)
        n, positives = metrics[name]["n"], metrics[name]["positives"]
        if not 0 < positives < n:  # NaN metrics, said (a test split of 2 sessions passed unsaid: dogfood 55)
            log.warning(
                "the %s split holds %d session(s), %d of them fraud: its PR-AUC and ROC-AUC are undefined (NaN); "
                "give it a longer period (data.split)",
                name,
                n,
                positives,
            )
    (run_dir / rundir.METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    log.info(
        "%s: val PR-AUC %.4f, test PR-AUC %.4f",
        rundir.kept_label(
            metrics["model"], rundir.stacking_kept(run_dir)
        ),  # the default may be LightGBM alone
        metrics["val"]["pr_auc"],
        metrics["test"]["pr_auc"],
    )
    if logger:
        log_run(logger, metrics, predictions, run_dir)
    return metrics
