"""The paired bootstrap that decides whether a stacker keeps the sequence score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from seqfraud.metrics import paired_win_share, weighted_pr_auc


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 120), st.integers(1, 3))
def test_weighted_pr_auc_equals_sklearn_with_the_counts_as_weights(seed, n, decimals):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    y[0] = 1  # at least one positive
    p = np.round(rng.random(n), decimals)  # few decimals: many tied scores
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(4)])
    counts = counts[counts[:, y == 1].sum(axis=1) > 0]
    want = [average_precision_score(y, p, sample_weight=c) for c in counts]
    np.testing.assert_allclose(weighted_pr_auc(y, p, counts), want, rtol=0, atol=1e-12)


def test_win_share_is_high_only_for_a_real_gain():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.05).astype(np.int64)
    noise = rng.random(2000)
    strong, weak = noise + 0.8 * y, rng.random(2000) + 0.2 * y
    assert paired_win_share(y, strong, weak, resamples=200) > 0.99
    assert paired_win_share(y, weak, strong, resamples=200) < 0.01
    assert paired_win_share(y, strong, strong, resamples=200) == 0.0  # a tie is no win
    # Two scores of equal strength (the same signal, other noise): neither wins with confidence either way.
    rival = rng.random(2000) + 0.8 * y
    share = paired_win_share(y, rival, strong, resamples=300)
    assert 0.05 < share < 0.95
    assert paired_win_share(y, strong, rival, resamples=300) == pytest.approx(1 - share, abs=0.1)
    # The same seed, the same resamples.
    assert paired_win_share(y, rival, strong, resamples=50, seed=3) == paired_win_share(
        y, rival, strong, resamples=50, seed=3
    )
