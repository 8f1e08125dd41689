"""Turn per-slice probabilities into levels: argmax, or the most probable apex->base ordered sequence.

Along a stack from apex to base the true levels never go backwards (oap..., ap..., mid..., bs...,
obs...). ``ordered`` finds the non-decreasing level sequence with the highest joint probability
(sum of log-probabilities) by dynamic programming over the 5-state left-to-right chain: O(T x 25).
"""

from __future__ import annotations

import numpy as np

DECODERS = ("argmax", "ordered")


def argmax(probs: np.ndarray) -> np.ndarray:
    """Most probable level of each slice independently."""
    return np.asarray(probs).argmax(axis=1)


def ordered(probs: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Most probable non-decreasing level sequence for one stack (rows apex -> base)."""
    logp = np.log(np.clip(np.asarray(probs, dtype=float), eps, None))
    T, K = logp.shape
    if T == 0:
        return np.zeros(0, dtype=int)
    score = logp[0].copy()
    back = np.zeros((T, K), dtype=int)
    for t in range(1, T):
        # best previous state j <= k: running maximum of the previous scores
        best_prev = np.maximum.accumulate(score)
        arg_prev = np.array([int(np.argmax(score[: k + 1])) for k in range(K)])
        score = best_prev + logp[t]
        back[t] = arg_prev
    path = np.zeros(T, dtype=int)
    path[-1] = int(np.argmax(score))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def decode_stacks(probs: np.ndarray, stack_ids: np.ndarray, order: np.ndarray, how: str) -> np.ndarray:
    """Decode every stack of a predictions table (rows in any order) with ``how``."""
    if how not in DECODERS:
        raise ValueError(f"evaluate.decode must be one of {DECODERS}, got {how!r}")
    if how == "argmax":
        return argmax(probs)
    out = np.zeros(len(probs), dtype=int)
    for sid in np.unique(stack_ids):
        idx = np.nonzero(stack_ids == sid)[0]
        idx = idx[np.argsort(order[idx], kind="stable")]
        out[idx] = ordered(probs[idx])
    return out
