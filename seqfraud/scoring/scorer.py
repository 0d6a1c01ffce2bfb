"""``Scorer``: raw events in, one score and decision band per session out, from a verified artifact."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import torch

from seqfraud import schema as S
from seqfraud.baselines import Stacker
from seqfraud.calibration import Calibration
from seqfraud.decisions import BANDS, assign_bands, check_thresholds
from seqfraud.export.artifact import Artifact, Model, Step, open_artifact, verification_settings
from seqfraud.features.fastpath import (
    LEADING_ZEROS,
    POINT_ZEROS,
    EventColumns,
    column_sequences,
    numpy_sequences,
    spelling,
    token_tables,
)
from seqfraud.features.spec import MISSING, NAN, NAN_VALUES, Spec
from seqfraud.features.tokens import Sequences, polars_sequences
from seqfraud.scoring.explain import occlusion
from seqfraud.scoring.history import History, require_history
from seqfraud.scoring.prepare import as_frame, normalized_events, record_columns

# Up to this many events the numpy token path runs; above it Polars' planning cost is amortized.
FAST_PATH_MAX_EVENTS = 4096
__all__ = ["BANDS", "FAST_PATH_MAX_EVENTS", "Scorer", "check_thresholds"]
log = logging.getLogger(__name__)


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` for a model call, then given back (a setting costs
    under a microsecond); None changes nothing."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    if before == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# The sequence score a stacker is given where none of its trees reads it (Stacker.reads_sequence).
UNREAD_SCORE = 0.5


class Scorer:
    """Applies the artifact's spec exactly as training did, then its model, its calibration, then the bands.

    ``score`` is the calibrated probability (the scale the thresholds were chosen on); ``raw_score`` the
    model's own.

    A ``model=stacked`` artifact's LightGBM (:class:`~seqfraud.baselines.Stacker`) runs after the model, on the
    baseline's aggregates of the same normalized events; ``raw_score`` is then its probability.

    Bands: ``approve`` below ``review``, ``review`` from ``review``, ``decline`` from ``decline``.
    Thread-safe for concurrent :meth:`score` calls.

    ``threads``: torch's intra-op threads while the model runs (default 1; None leaves the process's setting).
    One thread is the latency setting: a session is too small to gain from more, and on a busy machine the
    per-op barriers of a thread pool put a 189 ms p99 on a 3 ms median (issue 14's measurement; 5.4 ms with one
    thread). Batch jobs gain more from ``workers`` (threads over batches) than from intra-op threads.
    """

    def __init__(
        self,
        model: Model,
        spec: Spec,
        thresholds: Mapping[str, float],
        *,
        model_version: str,
        manifest: dict[str, Any] | None = None,
        calibration: Calibration | None = None,
        batch_size: int = 64,
        workers: int = 1,
        fast_path_max_events: int = FAST_PATH_MAX_EVENTS,
        device: str = "cpu",
        history: History | None = None,
        stacker: Stacker | None = None,
        step: tuple[Step, tuple[int, int]] | None = None,
        threads: int | None = 1,
    ):
        self.device = torch.device(device)
        # Loaded models are torch modules (TorchScript or torch.export); Model only spells their call signature.
        self.model: Model = (
            cast(torch.nn.Module, model).to(self.device) if self.device.type != "cpu" else model
        )
        self.spec = spec
        self.thresholds = check_thresholds(thresholds)
        self.model_version = model_version
        self.manifest = manifest or {}
        self.calibration = calibration or Calibration()
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="seqfraud-score") if workers > 1 else None
        self.fast_path_max_events = fast_path_max_events
        self.tables = token_tables(spec)
        self.history = history  # what entity features read; checked at each score, when it is needed
        self.stacker = stacker  # LightGBM over the aggregates and the model's score, for model=stacked runs
        self.step = step  # a GRU's step function and state shape, for per-event online scoring (online.py)
        self.threads = threads
        # Token fields of numeric columns whose training held no NaN (none known for specs from before the count).
        nan_counts = spec.fit_info.get(NAN_VALUES) or {}
        self._nan_unseen = [
            (j, column)
            for j, field in enumerate(spec.fields)
            if not nan_counts.get(column := self.tables.value_of.get(field, field), 1)
        ]
        self._nan_said: set[str] = set()  # columns warned of already, once per scorer
        self._respelt_said: set[str] = set()  # the same for note_respelt
        # Numeric columns whose training held no +inf or -inf (none known for a spec recording none), and said.
        held_inf = spec.fit_info.get("infinite_values")
        self._inf_unseen = [] if held_inf is None else [c for c in spec.schema.numerical if c not in held_inf]
        self._inf_said: set[str] = set()

    @classmethod
    def load(
        cls,
        path: str | Path,
        fmt: str = "torchscript",
        thresholds: Mapping[str, float] | None = None,
        *,
        verify_key: Any = None,
        require_signed: bool | None = None,
        **kwargs: Any,
    ) -> Scorer:
        """Verify the artifact (signature, manifest, hashes, embedded spec) and load one model format.

        ``thresholds`` overrides the artifact's bands, e.g. ``{"review": 0.3, "decline": 0.8}``;
        ``device="cuda"`` runs the model on a GPU (large batch jobs; tokenization stays on the CPU).
        ``verify_key`` (public key file or files) and ``require_signed`` default to ``$SEQFRAUD_VERIFY_KEY``
        and ``$SEQFRAUD_REQUIRE_SIGNED`` (see :func:`~seqfraud.export.artifact.open_artifact`). An artifact
        with entity features needs ``history=`` (:class:`~seqfraud.scoring.history.History`) to score.
        """
        artifact = open_artifact(path, **verification_settings(verify_key, require_signed))
        return cls.of_artifact(artifact, fmt, thresholds, **kwargs)

    @classmethod
    def of_artifact(
        cls,
        artifact: Artifact,
        fmt: str = "torchscript",
        thresholds: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> Scorer:
        """The scorer of an artifact already opened (and so verified) by :func:`open_artifact`."""
        return cls(
            artifact.load_model(fmt),
            artifact.spec,
            thresholds or artifact.thresholds,
            model_version=artifact.run_id,
            manifest=artifact.manifest,
            calibration=artifact.calibration,
            stacker=artifact.load_stacker(),
            step=artifact.load_step(fmt),
            **kwargs,
        )

    def score(self, events: Any, *, source: str = "events") -> pl.DataFrame:
        """Events of one or many sessions (Polars, Arrow or list of dicts) to ``session_id, score, band, raw_score``.

        Rows come sorted by session id. Unseen categories score as the unknown id; sessions longer than
        ``max_len`` keep their most recent events. Bad input raises ``DataValidationError`` naming the
        column and the number of bad rows.

        A few clean records (a request's) of a model without entity features go through
        :func:`~seqfraud.scoring.prepare.record_columns`, without Polars.
        """
        if (
            isinstance(events, (list, tuple))
            and len(events) <= self.fast_path_max_events
            and self.spec.entity is None
            and (columns := record_columns(events, self.spec, source)) is not None
        ):
            return self.score_sequences(column_sequences(columns, self.spec, self.tables), columns)
        frame = as_frame(events, self.spec, source)
        return self.score_normalized(self.in_context(normalized_events(frame.lazy(), self.spec, source)))

    def explain(self, events: Any, *, source: str = "events") -> pl.DataFrame:
        """Each kept event's ``contribution`` to its session's score, by occlusion (see :mod:`seqfraud.scoring.explain`).

        Same input and validation as :meth:`score`; rows ``session_id, position, event, event_time,
        contribution, fields`` (the event's other values, a struct) in session id then time order.
        ``contribution`` is in raw-probability units.
        """
        frame = as_frame(events, self.spec, source)
        return occlusion(self, self.in_context(normalized_events(frame.lazy(), self.spec, source)))

    def in_context(self, events: pl.DataFrame) -> pl.DataFrame:
        """Normalized events with their entity features from the history, when the spec has any."""
        history = require_history(self.spec, self.history)
        return events if history is None else history.context(events, self.spec)

    def score_normalized(self, events: pl.DataFrame) -> pl.DataFrame:
        """Score events already through :func:`~seqfraud.scoring.prepare.normalized_events` (and
        :meth:`in_context`)."""
        return self.score_sequences(self.sequences(events), events)

    def sequences(self, events: pl.DataFrame) -> Sequences:
        """The numpy token path for small inputs, the Polars one otherwise; both give the same tokens."""
        if events.height <= self.fast_path_max_events:
            return numpy_sequences(events, self.spec, self.tables)
        return polars_sequences(events, self.spec)

    def score_sequences(
        self, seqs: Sequences, events: pl.DataFrame | EventColumns | None = None
    ) -> pl.DataFrame:
        """Model and bands on ready token sequences (the batch scorer tokenizes ahead of the model); a stacked
        artifact also needs the normalized ``events`` the sequences came from, for the aggregates."""
        self.note_unseen_nan(seqs.tokens)
        if events is not None:
            self.note_unseen_inf(self.infinite_counts(events))
        if isinstance(events, EventColumns):
            self.note_respelt(events.categorical)
        elif events is not None:
            # One example a column, found in Polars: a frame's values are too many to loop over.
            unsaid = [c for c in events.columns if c in self.tables.respelt and c not in self._respelt_said]
            if unsaid:
                self.note_respelt(
                    events.select(self.respelt_example(c).implode() for c in unsaid).row(0, named=True)
                )
        raw = self.sequence_scores(seqs)
        if self.stacker is not None:
            if events is None:
                raise ValueError("a stacked artifact scores from the events: pass them with their sequences")
            raw = self.stacker.combine(self.stacker.aggregates(events, seqs.session_ids), raw)
        scores = self.calibrate(raw)
        # Named Series in a list: a dict of them costs Polars about twice as much, on every request.
        return pl.DataFrame(
            [
                pl.Series(S.SESSION_ID, seqs.session_ids, dtype=pl.String),
                pl.Series(S.SCORE, scores),
                self.bands(scores),
                pl.Series(S.RAW_SCORE, raw.astype(np.float32, copy=False)),
            ]
        )

    def note_unseen_nan(self, tokens: np.ndarray) -> None:
        """Warn, once per column and scorer, of NaN values in a column whose training held none: NaN is a token of its own,
        distinct from a missing value (null), so the model reads one it never saw. A notebook's pandas NaN
        (pandas' missing value) moved 85 of 300 sessions' bands that way, without a word (dogfood 40)."""
        for j, column in self._nan_unseen:
            if column not in self._nan_said and (n := int((tokens[:, j] == NAN).sum())):
                self._nan_said.add(column)
                log.warning(
                    "column %r: %d value(s) are NaN, which this model's training never held (its missing values "
                    "were null): each reads as a token the model never learnt. Send null (None) for a missing "
                    "value; pl.from_pandas(df) turns pandas' NaN into null",
                    column,
                    n,
                )

    def unsaid_infinite(self) -> list[str]:
        """The numeric columns whose training held no +inf or -inf, and that no call has said such a value of."""
        return [c for c in self._inf_unseen if c not in self._inf_said]

    def infinite_counts(self, events: pl.DataFrame | EventColumns) -> dict[str, int]:
        """Per :meth:`unsaid_infinite` column, the +inf and -inf values among ``events`` (normalized)."""
        if isinstance(events, EventColumns):
            return {c: int(np.isinf(events.numeric[c][0]).sum()) for c in self.unsaid_infinite()}
        # numpy, not a Polars query: this runs at every request (a query's planning alone costs a millisecond).
        return {
            c: int(np.isinf(events[c].to_numpy()).sum())
            for c in self.unsaid_infinite()
            if c in events.columns
        }

    def note_unseen_inf(self, counts: Mapping[str, int], source: str | None = None) -> None:
        """Warn, once per column and scorer, of +inf or -inf in a numeric column whose training held none (``counts``:
        :meth:`infinite_counts`, or a file's): legal, they read as the column's end buckets, but one moved a score
        by 0.12 unsaid on every path but training's (dogfood 128, review 133)."""
        for column, n in counts.items():
            if n and column not in self._inf_said:  # counts come for unsaid_infinite's columns
                self._inf_said.add(column)
                log.warning(
                    "%scolumn %r: %s value(s) are +inf or -inf, which this model's training never held: each reads "
                    "as the column's highest or lowest bucket. Check the export if they stand for missing values",
                    f"{source}: " if source else "",
                    column,
                    f"{n:,}",
                )

    def note_respelt(self, categorical: Mapping[str, Iterable[str | None]]) -> None:
        """Warn, once per column and scorer, of a value the model never learnt that is a learnt one spelt otherwise
        (``True`` for ``true``, ``1`` for ``true`` in a column of booleans): it reads as an unknown value, where the
        client most likely meant the learnt one. The service moved a score by 0.05 that way, unsaid, where batch
        scoring warned only of a column without any learnt value (dogfood 118). ``categorical``: values per
        column, which are few (a request's); a frame's or a file's reach it as one example a column
        (:meth:`respelt_example`)."""
        for column, values in categorical.items():
            if column in self._respelt_said:
                continue
            vocab, (booleans, respelt) = self.tables.vocab[column], self.tables.respelt[column]
            for v in values:
                if v not in vocab and (learnt := respelt.get(spelling(cast(str, v), booleans))) is not None:
                    self._respelt_said.add(column)
                    log.warning(
                        "column %r: %r is not a value the model learnt, but %r is (values match exactly: case, "
                        "leading zeros and all): it reads as an unknown value. Send the values as the training log "
                        "wrote them; said once",
                        column,
                        v,
                        learnt,
                    )
                    break

    def respelt_example(self, column: str) -> pl.Expr:
        """A text column's first value outside the vocabulary that is a learnt one spelt otherwise, or null: a
        frame's one example for :meth:`note_respelt` (Polars' lowercase stands in for casefold here; the note
        checks the example by :func:`~seqfraud.features.fastpath.spelling`)."""
        booleans, respelt = self.tables.respelt[column]
        text = pl.col(column).cast(pl.String)
        key = (
            text.str.normalize("NFKC")
            .str.strip_chars()
            .str.to_lowercase()
            .str.replace(POINT_ZEROS, "$1")
            .str.replace(LEADING_ZEROS, "$1$2")
        )
        if booleans:
            key = key.replace({"1": "true", "0": "false"})
        return text.filter(~text.is_in(self.spec.vocab[column]) & key.is_in(list(respelt))).first()

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated float32 scores of raw model probabilities: what ``score`` holds and the bands compare."""
        return self.calibration.apply(raw).astype(np.float32)

    def bands(self, scores: np.ndarray) -> pl.Series:
        """``approve``, ``review`` or ``decline`` of calibrated scores, by this scorer's thresholds."""
        return pl.Series(S.BAND, assign_bands(scores, self.thresholds), dtype=pl.String)

    @property
    def reads_sequence(self) -> bool:
        """Whether the sequence model's score counts: not behind a stacker that kept the aggregates alone."""
        return self.stacker is None or self.stacker.reads_sequence

    def sequence_scores(self, seqs: Sequences) -> np.ndarray:
        """:meth:`predict`, or :data:`UNREAD_SCORE` per session where no stacker tree reads the score."""
        return self.predict(seqs) if self.reads_sequence else np.full(len(seqs), UNREAD_SCORE, np.float32)

    def predict(self, seqs: Sequences, embedding: tuple[Model, int] | None = None) -> np.ndarray:
        """The sequence model's probabilities in session order (a stacked artifact's stacker comes after); with
        ``embedding`` (a session embedding module and its width, see :meth:`embed_sequences`), its ``[n, width]``.

        Batches group similar lengths to keep padding low; with ``workers > 1`` they run on that many
        threads at once (the model releases the GIL), which scales where intra-op threads stall.
        """
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(seqs.lengths, out=offsets[1:])
        if len(seqs) == 1:  # a request's one session: nothing to sort or group
            groups = [np.zeros(1, dtype=np.int64)]
        else:
            order = np.argsort(seqs.lengths, kind="stable")
            groups = [
                order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)
            ]
        model, out = self.model, np.empty(len(seqs), dtype=np.float32)
        if embedding is not None:
            model, out = embedding[0], np.empty((len(seqs), embedding[1]), dtype=np.float32)

        def run(rows: np.ndarray) -> None:
            lens = seqs.lengths[rows]
            if len(rows) == 1:  # one session fills its batch: no padding to build
                start = offsets[rows[0]]
                padded = seqs.tokens[start : start + lens[0]][None]
            else:
                within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
                padded = np.zeros((len(rows), int(lens.max()), seqs.tokens.shape[1]), dtype=np.int64)
                padded[np.repeat(np.arange(len(rows)), lens), within] = seqs.tokens[
                    np.repeat(offsets[rows], lens) + within
                ]
            with torch.inference_mode(), intra_op_threads(self.threads):
                tokens, lengths = torch.from_numpy(padded), torch.from_numpy(lens)
                if self.device.type != "cpu":
                    tokens, lengths = tokens.to(self.device), lengths.to(self.device)
                out[rows] = model(tokens, lengths).cpu().numpy()

        if self._pool is not None and len(groups) > 1:
            list(self._pool.map(run, groups))
        else:
            for rows in groups:
                run(rows)
        return out

    def warmup(self, lengths: tuple[int, ...] = (1, 16, 128)) -> None:
        """A few forward passes of the model and of its step, so the first real request does not pay for lazy
        initialization (a fresh service's first three events took 19, 10 and 6 ms before the step's)."""
        if self.stacker is not None:  # its first single-row call
            self.stacker.combine(
                np.zeros((1, self.stacker.layout.width)), np.full(1, UNREAD_SCORE, np.float32)
            )
        if not self.reads_sequence:
            return
        n_fields = len(self.spec.fields)
        for length in lengths:
            length = min(length, self.spec.max_len)
            tokens = np.full((length, n_fields), MISSING, dtype=np.int64)
            for _ in range(3):
                self.predict(Sequences(["warmup"], tokens, np.array([length], dtype=np.int64)))
                if self.step is not None:  # an event (one), and a rebuilt session (all it keeps)
                    step, (layers, width) = self.step
                    with torch.inference_mode(), intra_op_threads(self.threads):
                        step(torch.from_numpy(tokens)[None], torch.zeros(layers, 1, width))

    def embed_sequences(self, seqs: Sequences, embedding: tuple[Model, int]) -> pl.DataFrame:
        """``session_id, emb_0 .. emb_{width-1}`` of ready token sequences (``seqfraud embed --artifact``):
        ``embedding`` is :meth:`~seqfraud.export.artifact.Artifact.load_embedding`'s, batched like the model."""
        module, width = embedding
        if self.device.type != "cpu":
            module = cast(torch.nn.Module, module).to(self.device)
        out = self.predict(seqs, (module, width))
        return pl.from_numpy(out, schema=[S.embedding_column(j) for j in range(width)]).insert_column(
            0, pl.Series(S.SESSION_ID, seqs.session_ids, dtype=pl.String)
        )
