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
    probs = np.asarray(probs, dtype=float)
    return ordered_stacks(probs, [np.arange(len(probs))], eps)


def ordered_stacks(probs: np.ndarray, stacks: list[np.ndarray], eps: float = 1e-12) -> np.ndarray:
    """``ordered`` of every stack at once: ``stacks`` holds each stack's row indices apex -> base; the dynamic
    programme runs over all stacks together, one step per slice position (a stack that has ended keeps its
    scores), with the same arithmetic and ties (the lowest level) as one stack at a time."""
    logp = np.log(np.clip(np.asarray(probs, dtype=float), eps, None))
    out = np.zeros(len(logp), dtype=int)
    stacks = [s for s in stacks if len(s)]
    if not stacks:
        return out
    lengths = np.array([len(s) for s in stacks])
    T, K, S = int(lengths.max()), logp.shape[1], len(stacks)
    rows = np.full((S, T), -1)
    for i, s in enumerate(stacks):
        rows[i, :len(s)] = s
    ks = np.arange(K)
    score = logp[rows[:, 0]]
    back = np.zeros((S, T, K), dtype=int)
    for t in range(1, T):
        live = lengths > t
        # best previous state j <= k: the running maximum of the previous scores and where it first occurs
        best_prev = np.maximum.accumulate(score, axis=1)
        rises = np.c_[np.ones((S, 1), bool), score[:, 1:] > best_prev[:, :-1]]
        back[:, t] = np.maximum.accumulate(np.where(rises, ks, 0), axis=1)
        score = np.where(live[:, None], best_prev + logp[rows[:, t]], score)
    path = np.zeros((S, T), dtype=int)
    path[np.arange(S), lengths - 1] = score.argmax(axis=1)
    for t in range(T - 1, 0, -1):
        live = lengths > t
        path[live, t - 1] = back[live, t, path[live, t]]
    for i, s in enumerate(stacks):
        out[s] = path[i, :len(s)]
    return out


def stack_rows(stack_ids: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct stack ids (sorted) and each stack's row indices apex -> base (by ``order``, ties by row)."""
    uniq, inverse = np.unique(np.asarray(stack_ids), return_inverse=True)
    rows = np.lexsort((np.asarray(order), inverse))  # by stack, then order; stable, so ties keep row order
    return uniq, np.split(rows, np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1])


def decode_stacks(probs: np.ndarray, stack_ids: np.ndarray, order: np.ndarray, how: str) -> np.ndarray:
    """Decode every stack of a predictions table (rows in any order) with ``how``."""
    if how not in DECODERS:
        raise ValueError(f"evaluate.decode must be one of {DECODERS}, got {how!r}")
    if how == "argmax":
        return argmax(probs)
    return ordered_stacks(probs, stack_rows(stack_ids, order)[1])
