"""Kernels: the arithmetic of PatchTST as compiled functions over contiguous arrays.

A forward pass is a few compiled calls made from Python (``models``' ``_forward``): ``scale_and_patchify``,
then ``encode_units`` once per thread over that thread's share of the series, then one head kernel. Hidden
states are kept as rows ``[series * tokens, d_model]`` (series = batch x channels); ``encode_units`` runs
the embedding and every layer over blocks of whole series small enough to stay in its core's cache, every
Linear one single-threaded BLAS product per block. Config switches arrive as plain numbers in ``Switches``
and are read at run time, so one compilation serves every checkpoint of a dtype; only the attention kernel
is chosen by type (``HeadsOfEight`` / ``AnyHeads``), so a model compiles just the one it uses.

Compile time is a user's first-run wait, and Numba re-optimizes a callee's code inside every caller that
links it: the call graph is kept flat (``encode_units`` calls the leaves directly), no kernel is called with
a constant argument (a literal gets its own compiled copy), and array-to-array slice assignments, which pull
in Numba's error-message formatting, are written as loops. The arithmetic follows transformers'
``modeling_patchtst.py`` step by step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from .jit import KERNEL_OPTIONS, kernel

# Switch values (plain ints inside compiled code).
SCALING_NONE, SCALING_MEAN, SCALING_STD = 0, 1, 2
NORM_BATCH, NORM_LAYER = 0, 1
ACT_NONE, ACT_GELU, ACT_RELU = -1, 0, 1
POOL_NONE, POOL_MEAN, POOL_MAX = 0, 1, 2
DIST_NONE, DIST_STUDENT_T, DIST_NORMAL, DIST_NEGATIVE_BINOMIAL = 0, 1, 2, 3
# Which of a layer's three norms: attention over time, attention over channels, feed-forward.
NORM_ATTENTION, NORM_CHANNEL_ATTENTION, NORM_FF = 0, 1, 2

STD_MINIMUM_SCALE = 1e-5  # PatchTSTStdScaler: sqrt(variance + 1e-5)
MEAN_MINIMUM_SCALE = 1e-10  # PatchTSTMeanScaler: clamp(scale, min=1e-10)


class Switches(NamedTuple):
    scaling: int
    norm_type: int
    pre_norm: bool
    channel_attention: bool
    activation: int
    use_cls_token: bool
    pooling: int
    distribution: int
    num_heads: int
    norm_eps: float
    has_output_range: bool
    output_low: float
    output_high: float
    dtype_eps: float  # torch.finfo(dtype).eps, the floor of distribution scales
    patch_stride: int
    mask_value: float  # what pretraining's masked patches hold
    pool_last_feed_forward: bool  # the head needs only each series' token mean: see encode_units


# --------------------------------------------------------------------------------------------------
# Scaling and patching
# --------------------------------------------------------------------------------------------------
@kernel
def add_mean_scaler_totals(values, observed, totals):
    """totals[0, c] += sum of |observed values| of channel c, totals[1, c] += their count, series by series
    in batch order: what transformers' mean scaler gives a series with no observed value (the batch's
    scale for its channel). values, observed: [batch, time, channels]; totals: [2, channels] float64."""
    batch, time, channels = values.shape
    for b in range(batch):
        for c in range(channels):
            abs_sum = 0.0
            count = 0.0
            for t in range(time):
                abs_sum += abs(values[b, t, c] * observed[b, t, c])
                count += observed[b, t, c]
            totals[0, c] += abs_sum
            totals[1, c] += count


@kernel
def scale_and_patchify(values, observed, b, c, scaling, default_scale, patch_stride, loc, scale, patches):
    """Series (b, c) of values, observed [batch, time, channels] (observed 1.0 / 0.0 in the dtype) -> its
    loc[b, 0, c], scale[b, 0, c] and scaled patches [num_patches, patch_length].

    Scaling as transformers' PatchTSTStdScaler / PatchTSTMeanScaler / no scaler, sums in float64 whatever
    the dtype, the rest in the dtype; the mean scaler gives a series with no observed value
    ``default_scale[c]``. Leading steps that do not fill a whole stride are dropped, as in PatchTSTPatchify.
    """
    time = values.shape[1]
    num_patches, patch_length = patches.shape
    start = time - (patch_length + patch_stride * (num_patches - 1))
    count = 0.0
    total = 0.0
    abs_sum = 0.0
    for t in range(time):
        count += observed[b, t, c]
        total += values[b, t, c] * observed[b, t, c]
        abs_sum += abs(values[b, t, c] * observed[b, t, c])
    loc[b, 0, c] = 0.0
    scale[b, 0, c] = 1.0
    if scaling == SCALING_STD:
        denominator = max(count, 1.0)
        loc[b, 0, c] = total / denominator  # stored in the dtype: later steps see the rounded loc
        squares = 0.0
        for t in range(time):
            deviation = (values[b, t, c] - loc[b, 0, c]) * observed[b, t, c]
            squares += deviation * deviation
        scale[b, 0, c] = math.sqrt(squares / denominator + STD_MINIMUM_SCALE)
    elif scaling == SCALING_MEAN:
        mean_abs = abs_sum / max(count, 1.0) if count > 0 else default_scale[c]
        scale[b, 0, c] = max(mean_abs, MEAN_MINIMUM_SCALE)
    for p in range(num_patches):
        for i in range(patch_length):
            value = values[b, start + p * patch_stride + i, c]
            if scaling == SCALING_STD:
                patches[p, i] = (value - loc[b, 0, c]) / scale[b, 0, c]
            elif scaling == SCALING_MEAN:
                patches[p, i] = value / scale[b, 0, c]
            else:
                patches[p, i] = value


# --------------------------------------------------------------------------------------------------
# Row-wise pieces over [rows, width]: norms, activations, residuals
# --------------------------------------------------------------------------------------------------
@kernel
def normalize(rows, gamma, beta, mean, variance, eps, norm_type, out):
    """out = BatchNorm (running statistics) or LayerNorm of rows over d_model; rows, out: [rows, d_model],
    gamma, beta, mean, variance: [d_model]. out may be rows itself."""
    d_model = rows.shape[1]
    if norm_type == NORM_BATCH:
        # Eval-mode BatchNorm is affine; torch computes it as x * alpha + (beta - mean * alpha) in the dtype.
        alpha = np.empty(d_model, dtype=rows.dtype)
        shift = np.empty(d_model, dtype=rows.dtype)
        for d in range(d_model):
            alpha[d] = gamma[d] / np.sqrt(variance[d] + eps)
            shift[d] = beta[d] - mean[d] * alpha[d]
        for r in range(rows.shape[0]):
            row, target = rows[r], out[r]
            for d in range(d_model):
                target[d] = row[d] * alpha[d] + shift[d]
        return
    for r in range(rows.shape[0]):
        row_mean = 0.0
        for d in range(d_model):
            row_mean += rows[r, d]
        row_mean /= d_model
        variance_sum = 0.0
        for d in range(d_model):
            variance_sum += (rows[r, d] - row_mean) ** 2
        row_inv_std = 1.0 / math.sqrt(variance_sum / d_model + eps)
        for d in range(d_model):
            out[r, d] = (rows[r, d] - row_mean) * row_inv_std * gamma[d] + beta[d]


# float32 runs vectorizable approximations of exp and erf (no libm call in the loop, so LLVM can use SIMD);
# float64, the parity dtype, keeps libm's. The choice is made by dtype when Numba types the call.
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187045e-06  # ln 2 split so k * _LN2_HI is exact
# erf(z) ~ z P(z^2) / Q(z^2) on [-4, 4] (+-1 beyond, to float32 precision): the rational form Eigen and XLA
# use for float32. Computed in float32 (twice the SIMD lanes of the float64 A&S form it replaced, GELU 2x
# faster); GELU stays within 2.6e-7 * max(|x|, 1) of the exact form (measured on a 2e6-point grid).
_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                  -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)  # z^12 ... z^0
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                    -1.42647390514189e-02)  # z^8 ... z^0


def exp_of(x):
    """exp(x) of one number; for float32, x must be <= 88 (below -87 it returns exp(-87) ~ 1.6e-38)."""


@overload(exp_of, inline="always")
def _exp_of(x):
    if x == types.float32:
        def impl(x):
            # exp(x) = 2^k exp(r), |r| <= ln2 / 2; exp(r) by its degree-7 Taylor polynomial (< 1 ulp).
            x = max(x, np.float32(-87.0))
            k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
            r = x - k * np.float32(_LN2_HI) - k * np.float32(_LN2_LO)
            p = np.float32(1.0 / 5040.0)
            p = p * r + np.float32(1.0 / 720.0)
            p = p * r + np.float32(1.0 / 120.0)
            p = p * r + np.float32(1.0 / 24.0)
            p = p * r + np.float32(1.0 / 6.0)
            p = p * r + np.float32(0.5)
            p = p * r + np.float32(1.0)
            two_to_k = np.int32((np.int32(k) + 127) << 23).view(np.float32)  # 2^k built in the exponent field
            return (p * r + np.float32(1.0)) * two_to_k
        return impl
    return lambda x: math.exp(x)


def gelu_inplace(values):
    """values[:] = GELU(values), the exact (erf) form torch's nn.GELU() computes."""


@overload(gelu_inplace)
def _gelu_inplace(values):
    if values.dtype == types.float32:
        n12, n10, n8, n6, n4, n2, n0 = (np.float32(c) for c in _ERF_NUMERATOR)
        d8, d6, d4, d2, d0 = (np.float32(c) for c in _ERF_DENOMINATOR)

        def impl(values):
            for i in range(values.size):
                x = values[i]
                z = min(max(x * np.float32(0.7071067811865476), np.float32(-4.0)), np.float32(4.0))
                z2 = z * z
                numerator = z * ((((((n12 * z2 + n10) * z2 + n8) * z2 + n6) * z2 + n4) * z2 + n2) * z2 + n0)
                denominator = (((d8 * z2 + d6) * z2 + d4) * z2 + d2) * z2 + d0
                values[i] = np.float32(0.5) * x * (np.float32(1.0) + numerator / denominator)
        return impl

    def impl(values):
        for i in range(values.size):
            values[i] = 0.5 * values[i] * (1.0 + math.erf(values[i] * 0.7071067811865476))
    return impl


@kernel
def exp_array(values):
    """values[:] = exp_of(values) for callers outside compiled code (tests)."""
    for i in range(values.size):
        values[i] = exp_of(values[i])


@kernel
def gelu_inplace_array(values):
    """gelu_inplace for callers outside compiled code (tests)."""
    gelu_inplace(values)


@kernel
def add_bias_activate(rows, bias, activation):
    """rows[r] = act(rows[r] + bias) in place (``ACT_NONE``: no activation); rows: [rows, features]."""
    for r in range(rows.shape[0]):
        row = rows[r]
        for f in range(row.size):
            row[f] += bias[f]
        if activation == ACT_GELU:
            gelu_inplace(row)
        elif activation == ACT_RELU:
            for f in range(row.size):
                row[f] = max(row[f], 0.0)


@kernel
def add_bias_residual(stream, projected, bias):
    """stream += projected + bias, as a residual after a Linear; stream, projected: [rows, width]."""
    for r in range(stream.shape[0]):
        row, other = stream[r], projected[r]
        for c in range(row.size):
            row[c] += other[c] + bias[c]


@kernel
def copy_rows(source, target):
    """target[:] = source, both [rows, width]."""
    for r in range(source.shape[0]):
        row, out = source[r], target[r]
        for c in range(row.size):
            out[c] = row[c]


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


def heads_kind(head_dim: int):
    return HeadsOfEight() if head_dim == BLOCK else AnyHeads()


def attend(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    """Scaled dot-product attention within consecutive groups of ``group_length`` rows, per head.

    qkv_t: [3 * d_model, rows] (q, k, v features before their bias, transposed), qkv_bias: [3 * d_model]
    -> context_t: [d_model, rows]. Scores are kept as [key, query], so every inner loop (scores, max,
    exp, mixing the values) runs across queries over contiguous memory and vectorizes.

    ``heads`` is ``HeadsOfEight()`` or ``AnyHeads()`` (``heads_kind``): the implementation is chosen when
    Numba types the call, so compiled code holds only the one its model needs. From Python: ``attend_rows``.
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


@overload(attend, jit_options=KERNEL_OPTIONS)
def _attend(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    return _attend_eight if heads.instance_class is HeadsOfEight else _attend_any


@kernel
def attend_rows(heads, qkv_t, qkv_bias, group_length, num_heads, context_t):
    """``attend`` for callers outside compiled code (tests)."""
    attend(heads, qkv_t, qkv_bias, group_length, num_heads, context_t)


# --------------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------------
# Rows per block in ``encode_units``: a block's working set (about 3 KB a row at d_model 128, ffn 512) then
# fits a core's L2, and single-threaded GEMMs over 300-1300 rows ran at ~102 GFLOP/s a core here, against
# ~85 a core for whole-batch two-thread GEMMs that wrote their outputs through to memory.
BLOCK_ROWS = 512


class Workspace(NamedTuple):
    """One thread's scratch for ``encode_units``, flat, room for a block of ``block_rows`` rows. Each thread
    keeps its own across calls (``rustml_nb.threads.scratch``), so repeated calls allocate nothing."""

    normed: np.ndarray  # block_rows * d_model
    qkv_t: np.ndarray  # 3 * d_model * block_rows
    context_t: np.ndarray  # d_model * block_rows
    projected: np.ndarray  # block_rows * d_model
    hidden: np.ndarray  # block_rows * ffn_dim
    swapped: np.ndarray  # block_rows * d_model


def make_workspace(block_rows, d_model, ffn_dim, dtype) -> Workspace:
    return Workspace(*(np.empty(block_rows * width, dtype)
                       for width in (d_model, 3 * d_model, d_model, d_model, ffn_dim, d_model)))


@kernel
def embed_series(patches, channel, weights, use_cls_token, rows):
    """One series' patches [num_patches, patch_length] -> its rows [tokens, d_model]: the patch embedding of
    its channel plus positions, after the cls token when one is used."""
    offset = 1 if use_cls_token else 0
    e = 0 if weights.embedding_weight.shape[0] == 1 else channel
    positions, bias = weights.positional_encoding, weights.embedding_bias[e]  # [tokens, d_model], [d_model]
    if offset:
        for d in range(rows.shape[1]):
            rows[0, d] = weights.cls_token[d] + positions[0, d]
    np.dot(patches, weights.embedding_weight[e], rows[offset:])
    for p in range(offset, rows.shape[0]):
        row, position = rows[p], positions[p]
        for d in range(row.size):
            row[d] = row[d] + bias[d] + position[d]


@kernel
def first_qkv_from_patches(patches, weights, qkv_t):
    """Layer 0's QKV projection (before its bias) straight from the patches [series, tokens, patch_length]
    of a block -> qkv_t [3 * d_model, series * tokens]; see layers.fold_embedding_into_first_qkv."""
    series, tokens, patch_length = patches.shape
    np.dot(weights.patch_qkv_weight[0].T, patches.reshape(series * tokens, patch_length).T, qkv_t)
    offset_t = weights.position_qkv_t[0]  # [3 * d_model, tokens]
    for f in range(qkv_t.shape[0]):
        row, offset = qkv_t[f], offset_t[f]
        for s in range(series):
            for t in range(tokens):
                row[s * tokens + t] += offset[t]


@kernel
def swap_blocks(source, batch, first, second, out):
    """Rows ordered [batch, first, second] -> [batch, second, first]; source, out: [rows, d_model]."""
    for b in range(batch):
        for i in range(first):
            for j in range(second):
                row, target = source[(b * first + i) * second + j], out[(b * second + j) * first + i]
                for d in range(row.size):
                    target[d] = row[d]


@kernel
def pool_tokens(rows, tokens, pooling, use_cls_token, out):
    """out[s] = series s's cls token, or the mean (summed in order, then divided, as torch's mean) or the
    maximum of its rows s * tokens .. (s + 1) * tokens - 1; rows: [series * tokens, width], out: [series, width]."""
    for s in range(out.shape[0]):
        pooled = out[s]
        first = rows[s * tokens]
        for c in range(pooled.size):
            pooled[c] = first[c]
        if use_cls_token:
            continue
        for t in range(1, tokens):
            row = rows[s * tokens + t]
            if pooling == POOL_MAX:
                for c in range(pooled.size):
                    pooled[c] = max(pooled[c], row[c])
            else:
                for c in range(pooled.size):
                    pooled[c] += row[c]
        if pooling == POOL_MEAN:
            for c in range(pooled.size):
                pooled[c] /= tokens


@kernel
def encode_units(values, observed, default_scale, patch_mask, first_unit, last_unit, weights, switches, heads, work,
                 loc, scale, patch_input, patches, stream, hidden_states, pooled):
    """The encoder over units first_unit .. last_unit - 1 of the series, on the calling thread.

    values, observed: [batch, time, channels] -> loc, scale [batch, 1, channels] and patch_input [series,
    num_patches, patch_length] (``scale_and_patchify``; series = batch x channels, channels fastest); patches
    [series, num_patches, patch_length] the same, with the patches patch_mask [batch, channels, num_patches]
    marks set to ``switches.mask_value`` when the mask is not [0, 0, 0] (otherwise patches is patch_input);
    then stream [series * tokens, d_model], the embedding and every layer;
    hidden_states [layers or 0, series * tokens, d_model] receives the stream entering each layer;
    pooled [series or 0, d_model] receives each series' pooled rows (cls token, mean or max; see
    ``pool_tokens``) when the head reads them. A unit is what attends only within itself: a series, or with
    attention across channels a batch element's ``channels`` consecutive series. work: this thread's
    ``Workspace``; heads: ``HeadsOfEight()`` or ``AnyHeads()``.

    With ``switches.pool_last_feed_forward`` the last feed-forward sublayer runs on token means: after its
    activation only affine steps remain (its second Linear, the residual, a BatchNorm or no norm), so they act
    on each series' mean row instead of on every token. pooled then holds the layer's mean output and the
    stream is left as it entered that sublayer.
    """
    series_count, num_patches, patch_length = patches.shape
    channels = values.shape[2]
    d_model = stream.shape[1]
    ffn_dim = weights.ff1_weight.shape[2]
    tokens = stream.shape[0] // series_count
    block_rows = work.normed.size // d_model
    unit_series = channels if switches.channel_attention else 1
    units_per_block = max(block_rows // (unit_series * tokens), 1)
    num_layers = weights.qkv_weight.shape[0]
    folded = weights.patch_qkv_weight.shape[0] > 0  # layer 0's QKV comes from the patches directly
    sweeps = 2 if switches.channel_attention else 1
    eps, norm_type, pre_norm = switches.norm_eps, switches.norm_type, switches.pre_norm
    for first in range(first_unit, last_unit, units_per_block):
        s0 = first * unit_series
        s1 = min(first + units_per_block, last_unit) * unit_series
        rows = (s1 - s0) * tokens
        block = stream[s0 * tokens:s1 * tokens]  # [rows, d_model]
        normed = work.normed[:rows * d_model].reshape(rows, d_model)
        qkv_t = work.qkv_t[:3 * d_model * rows].reshape(3 * d_model, rows)
        context_t = work.context_t[:d_model * rows].reshape(d_model, rows)
        projected = work.projected[:rows * d_model].reshape(rows, d_model)
        hidden = work.hidden[:rows * ffn_dim].reshape(rows, ffn_dim)
        swapped = work.swapped[:rows * d_model].reshape(rows, d_model)
        for series in range(s0, s1):
            b, c = series // channels, series % channels
            scale_and_patchify(values, observed, b, c, switches.scaling, default_scale, switches.patch_stride, loc,
                               scale, patch_input[series])
            if patch_mask.shape[0]:
                for p in range(num_patches):
                    for i in range(patch_length):
                        patches[series, p, i] = switches.mask_value if patch_mask[b, c, p] else patch_input[series, p, i]
            embed_series(patches[series], c, weights, switches.use_cls_token,
                         block[(series - s0) * tokens:(series - s0 + 1) * tokens])
        if folded:
            first_qkv_from_patches(patches[s0:s1], weights, qkv_t)
        for layer in range(num_layers):
            if hidden_states.shape[0]:
                copy_rows(block, hidden_states[layer, s0 * tokens:s1 * tokens])
            # Residual self-attention among a series' tokens, then (with channel attention) among a batch
            # element's channels at each token, on the rows reordered [batch, tokens, channels].
            for sweep in range(sweeps):
                which = NORM_ATTENTION if sweep == 0 else NORM_CHANNEL_ATTENTION
                gamma, beta = weights.norm_weight[layer, which], weights.norm_bias[layer, which]
                mean, variance = weights.norm_mean[layer, which], weights.norm_var[layer, which]
                residual = block
                if sweep == 1:
                    swap_blocks(block, (s1 - s0) // channels, channels, tokens, swapped)
                    residual = swapped
                if not (folded and layer == 0 and sweep == 0):
                    source = residual
                    if pre_norm:
                        normalize(residual, gamma, beta, mean, variance, eps, norm_type, normed)
                        source = normed
                    np.dot(weights.qkv_weight[layer].T, source.T, qkv_t)  # [3 * d_model, rows] = W^T x^T
                attend(heads, qkv_t, weights.qkv_bias[layer], tokens if sweep == 0 else channels,
                       switches.num_heads, context_t)
                np.dot(context_t.T, weights.out_weight[layer], projected)
                add_bias_residual(residual, projected, weights.out_bias[layer])
                if not pre_norm:
                    normalize(residual, gamma, beta, mean, variance, eps, norm_type, residual)
                if sweep == 1:
                    swap_blocks(swapped, (s1 - s0) // channels, tokens, channels, block)
            # Residual Linear -> GELU (exact, erf) or ReLU -> Linear.
            gamma, beta = weights.norm_weight[layer, NORM_FF], weights.norm_bias[layer, NORM_FF]
            mean, variance = weights.norm_mean[layer, NORM_FF], weights.norm_var[layer, NORM_FF]
            source = block
            if pre_norm:
                normalize(block, gamma, beta, mean, variance, eps, norm_type, normed)
                source = normed
            np.dot(source, weights.ff1_weight[layer], hidden)
            add_bias_activate(hidden, weights.ff1_bias[layer], switches.activation)
            if switches.pool_last_feed_forward and layer == num_layers - 1:
                means = pooled[s0:s1]
                hidden_means = np.empty((s1 - s0, ffn_dim), dtype=stream.dtype)
                # (the switch implies mean pooling and no cls token; passing constants would compile a copy)
                pool_tokens(hidden, tokens, switches.pooling, switches.use_cls_token, hidden_means)
                pool_tokens(block, tokens, switches.pooling, switches.use_cls_token, means)
                mean_projected = np.empty((s1 - s0, d_model), dtype=stream.dtype)
                np.dot(hidden_means, weights.ff2_weight[layer], mean_projected)
                add_bias_residual(means, mean_projected, weights.ff2_bias[layer])
                if not pre_norm:  # a BatchNorm: see Switches
                    normalize(means, gamma, beta, mean, variance, eps, norm_type, means)
            else:
                np.dot(hidden, weights.ff2_weight[layer], projected)
                add_bias_residual(block, projected, weights.ff2_bias[layer])
                if not pre_norm:
                    normalize(block, gamma, beta, mean, variance, eps, norm_type, block)
        if pooled.shape[0] and not switches.pool_last_feed_forward:
            pool_tokens(block, tokens, switches.pooling, switches.use_cls_token, pooled[s0:s1])


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------
@njit(inline="always", error_model="numpy")
def _squareplus(x):
    return (x + np.sqrt(x * x + 4.0)) / 2.0


@njit(inline="always", error_model="numpy")
def _to_domain(value, k, distribution, dtype_eps):
    """Raw head output of parameter k -> the parameter's domain, as transformers' DistributionOutput."""
    if distribution == DIST_STUDENT_T and k == 0:  # df = 2 + squareplus(df)
        return 2.0 + _squareplus(value)
    if (distribution == DIST_STUDENT_T and k == 2) or (distribution == DIST_NORMAL and k == 1):
        return max(_squareplus(value), dtype_eps)  # scale = squareplus, floored at the dtype's eps
    if distribution == DIST_NEGATIVE_BINOMIAL and k == 0:  # total_count = squareplus
        return _squareplus(value)
    return value


@kernel
def prediction_head(features, loc, scale, weight, bias, switches, out):
    """features [batch * channels, width] (pooled rows, or each series' rows flattened) -> out [batch,
    parameters, horizon, channels]: a point forecast in data units (x scale + loc), or the distribution's
    parameters (not rescaled, as transformers returns them). weight [1 or channels, parameters, width,
    horizon], bias [1 or channels, parameters, horizon]; loc, scale [batch, 1, channels]."""
    channels = loc.shape[2]
    batch = features.shape[0] // channels
    num_params, width, horizon = weight.shape[1], weight.shape[2], weight.shape[3]
    shared = weight.shape[0] == 1
    rows = np.empty((batch, width), dtype=features.dtype)
    projected = np.empty((batch, horizon), dtype=features.dtype)
    for c in range(channels):
        for b in range(batch):
            source, target = features[b * channels + c], rows[b]
            for i in range(width):
                target[i] = source[i]
        h = 0 if shared else c
        for k in range(num_params):
            np.dot(rows, weight[h, k], projected)
            for b in range(batch):
                for t in range(horizon):
                    value = projected[b, t] + bias[h, k, t]
                    if switches.distribution == DIST_NONE:
                        out[b, k, t, c] = value * scale[b, 0, c] + loc[b, 0, c]
                    else:
                        out[b, k, t, c] = _to_domain(value, k, switches.distribution, switches.dtype_eps)


@kernel
def pretraining_head(stream, tokens, use_cls_token, weight, bias, out):
    """stream [series * tokens, d_model] -> out [series, patches, patch_length]: each patch's row through the
    Linear weight [d_model, patch_length] + bias (the cls token's row is dropped)."""
    offset = 1 if use_cls_token else 0
    series, patches, patch_length = out.shape
    projected = np.empty((tokens, patch_length), dtype=stream.dtype)
    for s in range(series):
        np.dot(stream[s * tokens:(s + 1) * tokens], weight, projected)
        for p in range(patches):
            for i in range(patch_length):
                out[s, p, i] = projected[p + offset, i] + bias[i]


@kernel
def pooled_head(features, weight, bias, switches, out):
    """features [batch, channels * d_model] -> out [batch, parameters, targets]: classification logits, or a
    regression's values (squashed into the output range when there is one) or distribution parameters.
    weight [parameters, channels * d_model, targets], bias [parameters, targets]."""
    batch = features.shape[0]
    num_params, targets = weight.shape[0], weight.shape[2]
    projected = np.empty((batch, targets), dtype=features.dtype)
    span = switches.output_high - switches.output_low
    for k in range(num_params):
        np.dot(features, weight[k], projected)
        for b in range(batch):
            for t in range(targets):
                value = projected[b, t] + bias[k, t]
                if switches.distribution != DIST_NONE:
                    out[b, k, t] = _to_domain(value, k, switches.distribution, switches.dtype_eps)
                elif switches.has_output_range:
                    out[b, k, t] = 1.0 / (1.0 + np.exp(-value)) * span + switches.output_low
                else:
                    out[b, k, t] = value
