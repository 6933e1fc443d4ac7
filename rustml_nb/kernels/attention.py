"""Scaled dot-product attention within consecutive groups of rows, every head of a model at once."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import overload

from ..jit import KERNEL_OPTIONS, kernel
from .rows import exp_of


# Attention's inner loops run across queries. LLVM vectorizes such a loop 16 lanes at a time (float32,
# AVX-512) and finishes the remainder lane by lane, so queries are padded to a multiple of QUERY_LANES
# (42 patches -> 48). Sums over a head's features (scores) and over keys (mixing the values) go BLOCK terms
# at a time in a loop of constant length, which LLVM unrolls into registers (with a run-time length it kept
# the sum in memory: 2-4x slower). Heads of exactly BLOCK features (granite's 128 / 16) have their own
# kernel, attend_eight (attention at batch 64: 16.6 -> 13.5 ms when introduced). Keys and values
# are read where the QKV projection left them: only the queries are copied (padded, with their bias); the
# key bias adds q . b_k to every score of a query, which softmax cancels, and the value bias passes through
# softmax's convex combination, so it is added to the output.
# Compile time: every inline="always" call is a copy Numba types and lowers again, and a branch on a run-time
# value is compiled even where it cannot run; each sum is therefore written once (from zeroed outputs), the
# two head functions share no branch, and a model compiles only the one its heads need (see ``attend``).
QUERY_LANES = 16
BLOCK = 8  # the size of _block_dot's addition tree


@njit(inline="always", error_model="numpy")
def _block_of(vector, first):
    """vector[first:first + BLOCK] as a tuple of BLOCK = 8 numbers: loaded once, kept in registers."""
    return (vector[first], vector[first + 1], vector[first + 2], vector[first + 3],
            vector[first + 4], vector[first + 5], vector[first + 6], vector[first + 7])


@njit(inline="always", error_model="numpy")
def _column_of(matrix, first, column):
    """matrix[first:first + BLOCK, column] as a tuple of BLOCK = 8 numbers."""
    return (matrix[first, column], matrix[first + 1, column], matrix[first + 2, column],
            matrix[first + 3, column], matrix[first + 4, column], matrix[first + 5, column],
            matrix[first + 6, column], matrix[first + 7, column])


@njit(inline="always", error_model="numpy")
def _block_dot(matrix, first, i, c):
    """sum of c[u] * matrix[first + u, i] over u < BLOCK = 8, added as a tree (depth 3 instead of a chain
    of 7 dependent additions, which bounded the loop by add latency)."""
    pair01 = c[0] * matrix[first, i] + c[1] * matrix[first + 1, i]
    pair23 = c[2] * matrix[first + 2, i] + c[3] * matrix[first + 3, i]
    pair45 = c[4] * matrix[first + 4, i] + c[5] * matrix[first + 5, i]
    pair67 = c[6] * matrix[first + 6, i] + c[7] * matrix[first + 7, i]
    return (pair01 + pair23) + (pair45 + pair67)


@njit(inline="always", error_model="numpy")
def _mix_three(weights_t, length, first, second, third, first_out, second_out, third_out):
    """first_out[i] = sum over keys j < length of first[j] * weights_t[j, i], and the same for second and
    third: one pass over weights_t [keys, width] serves all three."""
    first_out[:], second_out[:], third_out[:] = 0, 0, 0
    for block in range(length // BLOCK):
        key = block * BLOCK
        a, b, c = _block_of(first, key), _block_of(second, key), _block_of(third, key)
        for i in range(first_out.size):
            first_out[i] += _block_dot(weights_t, key, i, a)
            second_out[i] += _block_dot(weights_t, key, i, b)
            third_out[i] += _block_dot(weights_t, key, i, c)
    for key in range(length - length % BLOCK, length):
        row = weights_t[key]
        a, b, c = first[key], second[key], third[key]
        for i in range(first_out.size):
            first_out[i] += a * row[i]
            second_out[i] += b * row[i]
            third_out[i] += c * row[i]


@njit(inline="always", error_model="numpy")
def _mix_one(weights_t, length, coefficients, out):
    """out[i] = sum over keys j < length of coefficients[j] * weights_t[j, i]."""
    out[:] = 0
    for block in range(length // BLOCK):
        key = block * BLOCK
        c = _block_of(coefficients, key)
        for i in range(out.size):
            out[i] += _block_dot(weights_t, key, i, c)
    for key in range(length - length % BLOCK, length):
        row, c = weights_t[key], coefficients[key]
        for i in range(out.size):
            out[i] += c * row[i]


@njit(inline="always", error_model="numpy")
def _score_row(qkv_t, k0, column, head_dim, queries, row):
    """row[i] = sum over d < head_dim of qkv_t[k0 + d, column] * queries[d, i]: one key's unscaled scores."""
    row[:] = 0
    for block in range(head_dim // BLOCK):
        feature = block * BLOCK
        c = _column_of(qkv_t, k0 + feature, column)
        for i in range(row.size):
            row[i] += _block_dot(queries, feature, i, c)
    for d in range(head_dim - head_dim % BLOCK, head_dim):
        key, query = qkv_t[k0 + d, column], queries[d]
        for i in range(row.size):
            row[i] += key * query[i]


@njit(inline="always", error_model="numpy")
def _copy_queries(qkv_t, qkv_bias, first, length, q0, queries):
    """queries[d, :length] = the head's query feature q0 + d of rows first.. with its bias."""
    for d in range(queries.shape[0]):
        source, target, bias = qkv_t[q0 + d, first:first + length], queries[d], qkv_bias[q0 + d]
        for i in range(length):
            target[i] = source[i] + bias


@njit(inline="always", error_model="numpy")
def _exponentiate(scores_t, largest, scaling):
    """scores_t[j, i] = exp(scaling * score - scaling * largest[i]): softmax's numerators. Rounding is monotonic,
    so the scaled maximum is the maximum of the scaled scores, as torch computes it."""
    for i in range(largest.size):
        largest[i] *= scaling
    for j in range(scores_t.shape[0]):
        row = scores_t[j]
        for i in range(row.size):
            row[i] = exp_of(row[i] * scaling - largest[i])


@njit(inline="always", error_model="numpy")
def _write_context(mixed, head_dim, value_bias, first, length, q0, context_t):
    """context_t[q0 + d, first:first + length] = weighted values / softmax totals + value bias."""
    reciprocal = mixed[head_dim]
    for i in range(reciprocal.size):
        reciprocal[i] = 1 / reciprocal[i]
    for d in range(head_dim):
        out, weighted, bias = context_t[q0 + d, first:first + length], mixed[d], value_bias[d]
        for i in range(length):
            out[i] = weighted[i] * reciprocal[i] + bias


@njit(inline="always", error_model="numpy")
def _attend_head(qkv_t, qkv_bias, first, length, q0, scaling, queries, scores_t, largest, ones, mixed, context_t):
    """Softmax attention of one head within rows first..first+length-1 -> context_t[q0:q0 + head_dim, rows].

    queries [head_dim, width]: this head's queries with their bias, columns beyond ``length`` zero.
    scores_t [length, width]: [key, query]; largest [width]; ones [length];
    mixed [head_dim + 1, width]: the weighted values, then the softmax totals.
    """
    head_dim, d_model = queries.shape[0], context_t.shape[0]
    k0, v0 = d_model + q0, 2 * d_model + q0  # this head's first key and value features in qkv_t
    _copy_queries(qkv_t, qkv_bias, first, length, q0, queries)
    largest[:] = -np.inf
    for j in range(length):  # unscaled scores; _exponentiate scales them
        row = scores_t[j]
        _score_row(qkv_t, k0, first + j, head_dim, queries, row)
        for i in range(row.size):
            largest[i] = max(largest[i], row[i])
    _exponentiate(scores_t, largest, scaling)
    for d in range(head_dim):
        _mix_one(scores_t, length, qkv_t[v0 + d, first:first + length], mixed[d])
    _mix_one(scores_t, length, ones, mixed[head_dim])
    _write_context(mixed, head_dim, qkv_bias[v0:v0 + head_dim], first, length, q0, context_t)


@njit(inline="always", error_model="numpy")
def _attend_head_of_eight(qkv_t, qkv_bias, first, length, q0, scaling, queries, scores_t, largest, ones, mixed,
                          context_t):
    """_attend_head for heads of BLOCK = 8 features (granite's 128 / 16), its own compiled code: the maximum
    taken while scoring, and three sums per pass over the softmax weights."""
    d_model = context_t.shape[0]
    k0, v0 = d_model + q0, 2 * d_model + q0
    _copy_queries(qkv_t, qkv_bias, first, length, q0, queries)
    largest[:] = -np.inf
    for j in range(length):
        row = scores_t[j]
        c = _column_of(qkv_t, k0, first + j)
        for i in range(row.size):
            score = _block_dot(queries, 0, i, c)
            row[i] = score
            largest[i] = max(largest[i], score)
    _exponentiate(scores_t, largest, scaling)
    # Each value feature's row [keys] indexed straight from qkv_t, so every argument has one layout (C) and
    # _mix_three compiles once.
    last = first + length
    _mix_three(scores_t, length, ones, qkv_t[v0, first:last], qkv_t[v0 + 1, first:last],
               mixed[BLOCK], mixed[0], mixed[1])
    _mix_three(scores_t, length, qkv_t[v0 + 2, first:last], qkv_t[v0 + 3, first:last], qkv_t[v0 + 4, first:last],
               mixed[2], mixed[3], mixed[4])
    _mix_three(scores_t, length, qkv_t[v0 + 5, first:last], qkv_t[v0 + 6, first:last], qkv_t[v0 + 7, first:last],
               mixed[5], mixed[6], mixed[7])
    _write_context(mixed, BLOCK, qkv_bias[v0:v0 + BLOCK], first, length, q0, context_t)


@njit(inline="always", error_model="numpy")
def _round_up(count, multiple):
    return (count + multiple - 1) // multiple * multiple


@njit(inline="always", error_model="numpy")
def _attention_scratch(qkv_t, group_length, head_dim):
    """Per-call temporaries of an attention kernel (see _attend_head)."""
    width = _round_up(group_length, QUERY_LANES)
    dtype = qkv_t.dtype
    queries = np.zeros((head_dim, width), dtype=dtype)
    scores_t = np.empty((group_length, width), dtype=dtype)
    largest = np.empty(width, dtype=dtype)
    ones = np.ones(group_length, dtype=dtype)
    mixed = np.empty((head_dim + 1, width), dtype=dtype)
    scaling = np.full(1, head_dim ** -0.5, dtype=dtype)[0]  # in the dtype, as torch scales
    return queries, scores_t, largest, ones, mixed, scaling


class HeadsOfEight(NamedTuple):
    """Attention heads of exactly BLOCK = 8 features (granite's 128 / 16): ``attend`` runs their own code."""


class AnyHeads(NamedTuple):
    """Attention heads of any other size."""


class NoHeads(NamedTuple):
    """No attention at all (a mixer without self-attention): ``attend`` compiles to nothing."""


def heads_kind(head_dim: int | None):
    """The marker ``attend`` is compiled for: ``NoHeads()`` for a model without attention (head_dim None)."""
    if head_dim is None:
        return NoHeads()
    return HeadsOfEight() if head_dim == BLOCK else AnyHeads()


def attend(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    """Scaled dot-product attention within consecutive groups of ``group_length`` rows, per head.

    qkv_t: [3 * d_model, rows] (q, k, v features before their bias, transposed), qkv_bias: [3 * d_model]
    -> context_t: [d_model, rows]. Scores are kept as [key, query], so every inner loop (scores, max,
    exp, mixing the values) runs across queries over contiguous memory and vectorizes.

    ``heads`` is ``HeadsOfEight()``, ``AnyHeads()`` or ``NoHeads()`` (``heads_kind``): the implementation is
    chosen when Numba types the call, so compiled code holds only the one its model needs (none for
    ``NoHeads``, whose call does nothing). From Python: ``attend_rows``.
    """


def _attend_any(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    d_model = context_t.shape[0]
    head_dim = d_model // num_heads
    queries, scores_t, largest, ones, mixed, scaling = _attention_scratch(qkv_t, group_length, head_dim)
    for first in range(0, qkv_t.shape[1], group_length):
        for q0 in range(0, d_model, head_dim):
            _attend_head(qkv_t, qkv_bias, first, group_length, q0, scaling, queries, scores_t, largest, ones, mixed,
                         context_t)


def _attend_eight(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    d_model = context_t.shape[0]
    queries, scores_t, largest, ones, mixed, scaling = _attention_scratch(qkv_t, group_length, BLOCK)
    for first in range(0, qkv_t.shape[1], group_length):
        for q0 in range(0, d_model, BLOCK):
            _attend_head_of_eight(qkv_t, qkv_bias, first, group_length, q0, scaling, queries, scores_t, largest,
                                  ones, mixed, context_t)


def _attend_none(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    pass


@overload(attend, jit_options=KERNEL_OPTIONS)
def _attend(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    if heads.instance_class is NoHeads:
        return _attend_none
    return _attend_eight if heads.instance_class is HeadsOfEight else _attend_any


@kernel
def attend_rows(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    """``attend`` for callers outside compiled code (tests)."""
    attend(heads, qkv_t, qkv_bias, group_length, num_heads, context_t)
