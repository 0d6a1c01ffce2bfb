"""Population stability of token shares: what the monitor reads of a window's drift, and batch scoring of a
file whose numbers fall in the training buckets far otherwise than training's did."""

from __future__ import annotations

from collections import Counter

import numpy as np

from seqfraud.features.spec import FIRST_ID, MISSING, NAN, PAD, UNKNOWN, Spec
from seqfraud.features.tokens import Sequences, quantile_probs

PSI_EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
# The manifest's key (reference): per numeric column, the training events' share of each token id.
NUMERIC_SHARES = "numeric_shares"
# The manifest's reference: per categorical field (the event type too), the training events' share of each token id.
CATEGORY_SHARES = "category_shares"
# The manifest's key (reference): per categorical, numeric and entity column, the training events' share without a
# value in it.
NULL_SHARES = "null_shares"
# The manifest's key (reference): per event type of TRANSITION_PAIRS training events or more, the share of its events
# that each of the PSI_BINS types (or the session's end) that most often followed them did (:func:`transition_shares`).
TRANSITION_SHARES = "transition_shares"
TRANSITION_PAIRS = 200
# The manifest's key (reference): per number that holds a point mass at its lowest edge (:func:`holds_mass`), the value
# at its lowest quantile of the training values above that edge (:func:`seqfraud.preprocess.mass_edges`).
MASS_EDGES = "mass_edges"
# A number whose training events held MASS_SHARE of their values or more at its lowest edge (0 on the events that
# carry no fee) has its values above that edge judged apart.
MASS_SHARE = 0.25
UNKNOWN_LABEL = "<unknown>"  # token_label of a value outside the vocabulary
# A categorical value on VANISHED_FROM of training's events or more that falls to a tenth of that share or less is
# said, by preprocessing of the later splits and by scoring: an extract that lost it (dogfood 218), an event type a
# release stopped logging (dogfood 244).
VANISHED_FROM = 0.05
_RESERVED_NAMES = {PAD: "<pad>", UNKNOWN: UNKNOWN_LABEL, MISSING: "<missing>", NAN: "<nan>"}


def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    r = np.maximum(np.asarray(reference, np.float64) / max(float(np.sum(reference)), 1e-12), eps)
    c = np.maximum(np.asarray(current, np.float64) / max(float(np.sum(current)), 1e-12), eps)
    return float(np.sum((c - r) * np.log(c / r)))


PSI_BINS = 20  # bins of a categorical's PSI: its most frequent values, the rest as one


def psi_bins(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A field's token counts as PSI bins: the reserved ids (unknown, missing, NaN; PAD never occurs in kept
    events), the ``PSI_BINS`` most frequent other tokens of the reference, and the rest as one bin. Over the
    hundreds of values of a carrier or merchant field, a per-value PSI of two windows of the same traffic reached
    0.4 to 0.9 (every rare value's share is noise); grouped, the noise stays well under the alert threshold, and a
    value that grows from rare to common still moves its bin."""
    if len(reference) <= FIRST_ID + PSI_BINS:
        return reference[1:], current[1:]
    top = FIRST_ID + np.argsort(-reference[FIRST_ID:], kind="stable")[:PSI_BINS]
    rest = np.ones(len(reference), dtype=bool)
    rest[:FIRST_ID] = False
    rest[top] = False
    return (
        np.r_[reference[1:FIRST_ID], reference[top], reference[rest].sum()],
        np.r_[current[1:FIRST_ID], current[top], current[rest].sum()],
    )


def token_label(spec: Spec, field_name: str, token: int) -> str:
    if token in _RESERVED_NAMES:
        return _RESERVED_NAMES[token]
    if field_name in spec.vocab:
        return spec.vocab[field_name][token - FIRST_ID]
    edges, i = spec.edges[field_name], token - FIRST_ID
    lo = "-inf" if i == 0 else f"{edges[i - 1]:g}"
    hi = "inf" if i == len(edges) else f"{edges[i]:g}"
    return f"({lo}, {hi}]"


def transition_counts(types: np.ndarray, lengths: np.ndarray, size: int) -> Counter[int]:
    """How often each event type id is followed by each other within a session, or ends it (:data:`PAD` follows),
    keyed ``prev * size + next``: ``types`` are the kept events' event type ids, sessions back to back
    (``lengths``), in token order. Two types swapped upstream keep the mix of types, and move what follows each
    (dogfood 241: one that ended couriers' sessions now followed by a locker scan; PR-AUC 0.79 to 0.59, unsaid)."""
    following = np.empty_like(types)
    following[:-1] = types[1:]
    following[(np.cumsum(lengths) - 1)[lengths > 0]] = PAD  # a session's last event: its end follows
    keys, n = np.unique(types * size + following, return_counts=True)
    return Counter(dict(zip(keys.tolist(), n.tolist())))


def event_transitions(seqs: Sequences, spec: Spec) -> Counter[int]:
    """:func:`transition_counts` of the event types of ``seqs``."""
    kind = spec.schema.event_type
    return transition_counts(seqs.tokens[:, spec.fields.index(kind)], seqs.lengths, spec.vocab_size(kind))


def followers(counts: Counter[int], size: int) -> dict[int, Counter[int]]:
    """Per learnt event type id of :data:`TRANSITION_PAIRS` events or more (:func:`transition_counts`), how often
    each type id (or the session's end, :data:`PAD`) follows it."""
    by_prev: dict[int, Counter[int]] = {}
    for key, n in counts.items():
        prev, following = divmod(key, size)
        by_prev.setdefault(prev, Counter())[following] += n
    return {
        prev: following
        for prev, following in sorted(by_prev.items())
        if prev >= FIRST_ID and following.total() >= TRANSITION_PAIRS
    }


def transition_shares(counts: Counter[int], size: int) -> dict[int, dict[int, float]]:
    """Per event type of :func:`followers`, the shares of the :data:`PSI_BINS` type ids that most often follow it;
    the rest are one bin."""
    return {
        prev: {i: n / following.total() for i, n in following.most_common(PSI_BINS)}
        for prev, following in followers(counts, size).items()
    }


def mass_share(trained: np.ndarray) -> float:
    """Training's share of a number's values at its lowest edge or below (``trained``: its shares per token id)."""
    total = float(trained[FIRST_ID:].sum())
    return float(trained[FIRST_ID]) / total if total else 0.0


def holds_mass(spec: Spec, column: str, trained: np.ndarray) -> bool:
    """Whether training held :data:`MASS_SHARE` of a number's values or more at its lowest edge, twice the share its
    quantile gives at least (three buckets' lowest holds a third of any values: review 257), and values above it."""
    lowest = lowest_prob(spec)
    return lowest is not None and max(MASS_SHARE, 2 * lowest) <= mass_share(trained) < 1


def lowest_prob(spec: Spec) -> float | None:
    """The quantile of the spec's lowest numeric edge (None for a spec that does not record its buckets)."""
    fit = spec.fit_info
    if "n_buckets" not in fit:
        return None
    return quantile_probs(int(fit["n_buckets"]), tuple(fit.get("tail_quantiles") or ()))[0]
