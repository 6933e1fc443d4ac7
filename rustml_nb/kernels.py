"""Kernels: the arithmetic of PatchTST as ``@njit(cache=True)`` functions over contiguous arrays.

``patchtst_forward`` is the one compiled entry point: a whole forward pass, from raw values to the
head's output, in one call. Hidden states are kept as rows ``[series * tokens, d_model]`` (series =
batch x channels); ``encode`` runs the layers with one parallel launch, each thread over blocks of whole
series small enough to stay in its cache, every Linear one BLAS product per block. Config switches arrive as
plain numbers in ``Switches`` and are read at run time: one compilation serves every checkpoint of a
dtype. The arithmetic follows transformers' ``modeling_patchtst.py`` step by step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

# Switch values (plain ints inside compiled code).
SCALING_NONE, SCALING_MEAN, SCALING_STD = 0, 1, 2
NORM_BATCH, NORM_LAYER = 0, 1
ACT_GELU, ACT_RELU = 0, 1
POOL_NONE, POOL_MEAN, POOL_MAX = 0, 1, 2
HEAD_NONE, HEAD_PREDICTION, HEAD_PRETRAINING, HEAD_CLASSIFICATION, HEAD_REGRESSION = 0, 1, 2, 3, 4
DIST_NONE, DIST_STUDENT_T, DIST_NORMAL, DIST_NEGATIVE_BINOMIAL = 0, 1, 2, 3
# Which of a layer's three norms: attention over time, attention over channels, feed-forward.
NORM_ATTENTION, NORM_CHANNEL_ATTENTION, NORM_FF = 0, 1, 2

# Every kernel uses NumPy's error model: division by zero gives inf/nan (as in torch) instead of raising, and,
# unlike Python's model, it adds no zero check to each division, which kept LLVM from vectorizing loops
# such as GELU's (3x slower). prange bodies get it anyway; plain functions did not.
kernel = njit(cache=True, error_model="numpy")
parallel_kernel = njit(cache=True, parallel=True, error_model="numpy")

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
    head: int
    distribution: int
    num_heads: int
    norm_eps: float
    patch_length: int
    patch_stride: int
    has_output_range: bool
    output_low: float
    output_high: float
    mask_value: float
    dtype_eps: float  # torch.finfo(dtype).eps, the floor of distribution scales
    pool_last_feed_forward: bool  # the head needs only each series' token mean: see pooled_feed_forward


# --------------------------------------------------------------------------------------------------
# Scaling and patching
# --------------------------------------------------------------------------------------------------
@kernel
def scale_series(values, observed, scaling):
    """values, observed: [batch, time, channels] -> scaled [batch, time, channels], loc, scale [batch, 1, channels].

    Sums accumulate in float64 whatever the dtype.
    """
    batch, time, channels = values.shape
    scaled = np.empty_like(values)
    loc = np.zeros((batch, 1, channels), dtype=values.dtype)
    scale = np.ones((batch, 1, channels), dtype=values.dtype)
    if scaling == SCALING_STD:
        for b in range(batch):
            for c in range(channels):
                count = 0.0
                total = 0.0
                for t in range(time):
                    count += observed[b, t, c]
                    total += values[b, t, c] * observed[b, t, c]
                denominator = max(count, 1.0)
                loc[b, 0, c] = total / denominator  # stored in the dtype: later steps see the rounded loc
                squares = 0.0
                for t in range(time):
                    deviation = (values[b, t, c] - loc[b, 0, c]) * observed[b, t, c]
                    squares += deviation * deviation
                scale[b, 0, c] = math.sqrt(squares / denominator + STD_MINIMUM_SCALE)
                for t in range(time):
                    scaled[b, t, c] = (values[b, t, c] - loc[b, 0, c]) / scale[b, 0, c]
    elif scaling == SCALING_MEAN:
        abs_sum = np.zeros((batch, channels))
        counts = np.zeros((batch, channels))
        for b in range(batch):
            for t in range(time):
                for c in range(channels):
                    abs_sum[b, c] += abs(values[b, t, c] * observed[b, t, c])
                    counts[b, c] += observed[b, t, c]
        for c in range(channels):
            # Series with no observation take the batch's scale for that channel, as transformers does.
            default_scale = abs_sum[:, c].sum() / max(counts[:, c].sum(), 1.0)
            for b in range(batch):
                value = abs_sum[b, c] / max(counts[b, c], 1.0) if counts[b, c] > 0 else default_scale
                scale[b, 0, c] = max(value, MEAN_MINIMUM_SCALE)
        for b in range(batch):
            for t in range(time):
                for c in range(channels):
                    scaled[b, t, c] = values[b, t, c] / scale[b, 0, c]
    else:
        scaled[:] = values
    return scaled, loc, scale


@kernel
def patchify(scaled, patch_length, patch_stride):
    """[batch, time, channels] -> [batch, channels, patches, patch_length]; leading steps that do not fill
    a whole stride are dropped, as in transformers' PatchTSTPatchify."""
    batch, time, channels = scaled.shape
    num_patches = (max(time, patch_length) - patch_length) // patch_stride + 1
    start = time - (patch_length + patch_stride * (num_patches - 1))
    patches = np.empty((batch, channels, num_patches, patch_length), dtype=scaled.dtype)
    for b in range(batch):
        for c in range(channels):
            for p in range(num_patches):
                for i in range(patch_length):
                    patches[b, c, p, i] = scaled[b, start + p * patch_stride + i, c]
    return patches


# --------------------------------------------------------------------------------------------------
# Transformer pieces, over rows [rows, d_model]. They run serially: ``encode`` gives each thread its own
# block of rows and calls them there.
# --------------------------------------------------------------------------------------------------
@kernel
def piece(count, pieces, index):
    """[start, stop) of piece ``index`` when ``count`` items are split into ``pieces``."""
    return index * count // pieces, (index + 1) * count // pieces


@kernel
def normalize(rows, weights, layer, which, switches, out):
    """out = BatchNorm (running statistics) or LayerNorm of rows over d_model; rows, out: [rows, d_model].
    out may be rows itself."""
    gamma, beta, eps = weights.norm_weight[layer, which], weights.norm_bias[layer, which], switches.norm_eps
    d_model = rows.shape[1]
    if switches.norm_type == NORM_BATCH:
        # Eval-mode BatchNorm is affine; torch computes it as x * alpha + (beta - mean * alpha) in the dtype.
        alpha = (gamma / np.sqrt(weights.norm_var[layer, which] + eps)).astype(rows.dtype)
        shift = beta - weights.norm_mean[layer, which] * alpha
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
        variance = 0.0
        for d in range(d_model):
            variance += (rows[r, d] - row_mean) ** 2
        variance /= d_model
        row_inv_std = 1.0 / math.sqrt(variance + eps)
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
    """rows[r] = act(rows[r] + bias) in place; activation -1 means none. rows: [rows, features]."""
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
def linear(rows, weight, bias, out, activation=-1):
    """out = act(rows [rows, in] @ weight [in, out] + bias [out]); one BLAS call into out, one pass."""
    np.dot(rows, weight, out)
    add_bias_activate(out, bias, activation)
    return out


@kernel
def add_rows(target, addend):
    """target += addend; both [rows, width]."""
    for r in range(target.shape[0]):
        row, other = target[r], addend[r]
        for c in range(row.size):
            row[c] += other[c]


# Attention's inner loops run across queries. LLVM vectorizes such a loop 16 lanes at a time (float32,
# AVX-512) and finishes the remainder lane by lane, so queries are padded to a multiple of QUERY_LANES
# (42 patches -> 48). Sums over a head's features (scores) and over keys (mixing the values) go BLOCK terms
# at a time in a loop of constant length, which LLVM unrolls into registers (with a run-time length it kept
# the sum in memory: 2-4x slower). Heads of exactly BLOCK features (granite's 128 / 16) have their own
# function, _attend_head_of_eight (attention at batch 64: 16.6 -> 13.5 ms when introduced). Keys and values
# are read where the QKV projection left them: only the queries are copied (padded, with their bias); the
# key bias adds q . b_k to every score of a query, which softmax cancels, and the value bias passes through
# softmax's convex combination, so it is added to the output.
# Compile time: every inline="always" call is a copy Numba types and lowers again, and a branch on a run-time
# value is compiled even where it cannot run; each sum is therefore written once (from zeroed outputs) and
# the two head functions share no branch (attend compiles in ~8 s per dtype; it took 34 s when they did).
QUERY_LANES = 16
BLOCK = 8  # the size of _block_dot's addition tree


@kernel
def _round_up(count, multiple):
    return (count + multiple - 1) // multiple * multiple


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
    values = qkv_t[v0:v0 + BLOCK, first:first + length]  # [8, keys]
    _mix_three(scores_t, length, ones, values[0], values[1], mixed[BLOCK], mixed[0], mixed[1])
    _mix_three(scores_t, length, values[2], values[3], values[4], mixed[2], mixed[3], mixed[4])
    _mix_three(scores_t, length, values[5], values[6], values[7], mixed[5], mixed[6], mixed[7])
    _write_context(mixed, BLOCK, qkv_bias[v0:v0 + BLOCK], first, length, q0, context_t)


@kernel
def attend(qkv_t, qkv_bias, group_length, num_heads, context_t):
    """Scaled dot-product attention within consecutive groups of ``group_length`` rows, per head.

    qkv_t: [3 * d_model, rows] (q, k, v features before their bias, transposed), qkv_bias: [3 * d_model]
    -> context_t: [d_model, rows]. Scores are kept as [key, query], so every inner loop (scores, max,
    exp, mixing the values) runs across queries over contiguous memory and vectorizes.
    """
    length = group_length
    d_model = context_t.shape[0]
    head_dim = d_model // num_heads
    width = _round_up(length, QUERY_LANES)
    dtype = qkv_t.dtype
    queries = np.zeros((head_dim, width), dtype=dtype)
    scores_t = np.empty((length, width), dtype=dtype)
    largest = np.empty(width, dtype=dtype)
    ones = np.ones(length, dtype=dtype)
    mixed = np.empty((head_dim + 1, width), dtype=dtype)
    scaling = np.full(1, head_dim ** -0.5, dtype=dtype)[0]  # in the dtype, as torch scales
    for first in range(0, qkv_t.shape[1], length):
        for q0 in range(0, d_model, head_dim):
            if head_dim == BLOCK:
                _attend_head_of_eight(qkv_t, qkv_bias, first, length, q0, scaling, queries, scores_t, largest, ones,
                                      mixed, context_t)
            else:
                _attend_head(qkv_t, qkv_bias, first, length, q0, scaling, queries, scores_t, largest, ones, mixed,
                             context_t)


# Rows per block in ``encode``: a block's working set (about 3 KB a row at d_model 128, ffn 512) then fits
# a core's L2, and single-threaded GEMMs over 300-1300 rows ran at ~102 GFLOP/s a core here, against
# ~85 a core for the whole-batch two-thread GEMMs that wrote their outputs through to memory.
BLOCK_ROWS = 512


class Workspace(NamedTuple):
    """Scratch for ``encode``: row t of each array is thread t's, flat, room for a block of ``block_rows``
    rows. A model keeps one across calls, so repeated calls allocate (and page-fault) nothing."""

    normed: np.ndarray  # [threads, block_rows * d_model]
    qkv_t: np.ndarray  # [threads, 3 * d_model * block_rows]
    context_t: np.ndarray  # [threads, d_model * block_rows]
    projected: np.ndarray  # [threads, block_rows * d_model]
    hidden: np.ndarray  # [threads, block_rows * ffn_dim]
    swapped: np.ndarray  # [threads, block_rows * d_model]


def make_workspace(threads, block_rows, d_model, ffn_dim, dtype) -> Workspace:
    def buffer(width):
        return np.empty((threads, block_rows * width), dtype)

    return Workspace(normed=buffer(d_model), qkv_t=buffer(3 * d_model), context_t=buffer(d_model),
                     projected=buffer(d_model), hidden=buffer(ffn_dim), swapped=buffer(d_model))


class Scratch(NamedTuple):
    """One block's views of a thread's workspace, for ``rows`` rows."""

    normed: np.ndarray  # [rows, d_model]
    qkv_t: np.ndarray  # [3 * d_model, rows]: transposed, so attention reads heads contiguously
    context_t: np.ndarray  # [d_model, rows]
    projected: np.ndarray  # [rows, d_model]
    hidden: np.ndarray  # [rows, ffn_dim]
    swapped: np.ndarray  # [rows, d_model]: the stream reordered for attention across channels


@kernel
def block_scratch(work, thread, rows, d_model):
    ffn_dim = work.hidden.shape[1] // (work.normed.shape[1] // d_model)

    def view(buffer, first, second):
        return buffer[thread, :first * second].reshape(first, second)

    return Scratch(view(work.normed, rows, d_model), view(work.qkv_t, 3 * d_model, rows),
                   view(work.context_t, d_model, rows), view(work.projected, rows, d_model),
                   view(work.hidden, rows, ffn_dim), view(work.swapped, rows, d_model))


@kernel
def sublayer_input(stream, weights, layer, which, switches, scratch):
    """What a sublayer reads: the stream itself, or with pre-norm its norm ``which``, in scratch.normed."""
    if switches.pre_norm:
        normalize(stream, weights, layer, which, switches, scratch.normed)
        return scratch.normed
    return stream


@kernel
def attention_sublayer(stream, group_length, weights, layer, which, switches, scratch, qkv_ready):
    """Residual self-attention within consecutive groups of ``group_length`` rows, pre- or post-norm,
    updating stream [groups * group_length, d_model] in place. With qkv_ready, scratch.qkv_t already holds
    the QKV projection (``first_qkv_from_patches``)."""
    if not qkv_ready:
        source = sublayer_input(stream, weights, layer, which, switches, scratch)
        np.dot(weights.qkv_weight[layer].T, source.T, scratch.qkv_t)  # [3 * d_model, rows] = W^T x^T
    attend(scratch.qkv_t, weights.qkv_bias[layer], group_length, switches.num_heads, scratch.context_t)
    linear(scratch.context_t.T, weights.out_weight[layer], weights.out_bias[layer], scratch.projected)
    add_rows(stream, scratch.projected)
    if not switches.pre_norm:
        normalize(stream, weights, layer, which, switches, stream)


@kernel
def feed_forward_hidden(stream, weights, layer, switches, scratch):
    """The feed-forward sublayer up to its activation: scratch.hidden = act(input @ W1 + b1)."""
    source = sublayer_input(stream, weights, layer, NORM_FF, switches, scratch)
    linear(source, weights.ff1_weight[layer], weights.ff1_bias[layer], scratch.hidden, switches.activation)


@kernel
def feed_forward_sublayer(stream, weights, layer, switches, scratch):
    """Residual Linear -> GELU (exact, erf) or ReLU -> Linear, pre- or post-norm; stream updated in place."""
    feed_forward_hidden(stream, weights, layer, switches, scratch)
    linear(scratch.hidden, weights.ff2_weight[layer], weights.ff2_bias[layer], scratch.projected)
    add_rows(stream, scratch.projected)
    if not switches.pre_norm:
        normalize(stream, weights, layer, NORM_FF, switches, stream)


@kernel
def token_means(rows, tokens, out):
    """out[s] = the mean of rows s * tokens .. (s + 1) * tokens - 1 (summed in order, then divided, as torch's
    mean); rows: [series * tokens, width], out: [series, width]."""
    for s in range(out.shape[0]):
        mean = out[s]
        mean[:] = rows[s * tokens]
        for t in range(1, tokens):
            row = rows[s * tokens + t]
            for c in range(mean.size):
                mean[c] += row[c]
        for c in range(mean.size):
            mean[c] /= tokens


@kernel
def pooled_feed_forward(stream, tokens, weights, layer, switches, scratch, pooled):
    """The last feed-forward sublayer when the head reads only each series' mean over its tokens:
    pooled [series, d_model] = that mean of the sublayer's output. The second Linear, the residual and a
    BatchNorm are affine, so they act on the token means (one row per series) instead of on every token;
    the first Linear and the activation still see every token. stream is left as it entered."""
    feed_forward_hidden(stream, weights, layer, switches, scratch)
    series = pooled.shape[0]
    hidden_means = np.empty((series, scratch.hidden.shape[1]), dtype=stream.dtype)
    token_means(scratch.hidden, tokens, hidden_means)
    token_means(stream, tokens, pooled)
    add_rows(pooled, linear(hidden_means, weights.ff2_weight[layer], weights.ff2_bias[layer],
                            np.empty((series, stream.shape[1]), dtype=stream.dtype)))
    if not switches.pre_norm:
        normalize(pooled, weights, layer, NORM_FF, switches, pooled)  # BatchNorm: see Switches


@kernel
def swap_blocks(source, batch, first, second, out):
    """Rows ordered [batch, first, second] -> [batch, second, first]; source, out: [rows, d_model]."""
    for b in range(batch):
        for i in range(first):
            for j in range(second):
                out[(b * second + j) * first + i] = source[(b * first + i) * second + j]


@kernel
def encoder_layer(stream, channels, tokens, weights, layer, switches, scratch, pooled, qkv_ready):
    """One PatchTSTEncoderLayer over stream [series * tokens, d_model], in place; with attention across
    channels the series must be whole batch elements (channels consecutive series each). Given pooled
    [series, d_model] (not [0, d_model]), the layer ends with ``pooled_feed_forward`` into it. qkv_ready:
    see ``attention_sublayer``."""
    attention_sublayer(stream, tokens, weights, layer, NORM_ATTENTION, switches, scratch, qkv_ready)
    if switches.channel_attention:
        # Attention across channels at each token: reorder to [batch, tokens, channels], attend, reorder back.
        batch = stream.shape[0] // (channels * tokens)
        swap_blocks(stream, batch, channels, tokens, scratch.swapped)
        attention_sublayer(scratch.swapped, channels, weights, layer, NORM_CHANNEL_ATTENTION, switches, scratch,
                           False)
        swap_blocks(scratch.swapped, batch, tokens, channels, stream)
    if pooled.shape[0]:
        pooled_feed_forward(stream, tokens, weights, layer, switches, scratch, pooled)
    else:
        feed_forward_sublayer(stream, weights, layer, switches, scratch)


@kernel
def embed_series(patches, series, channel, weights, switches, rows):
    """Series ``series`` of patches [series, num_patches, patch_length] -> its rows [tokens, d_model]: the
    patch embedding of its channel plus positions, after the cls token when one is used."""
    offset = 1 if switches.use_cls_token else 0
    e = 0 if weights.embedding_weight.shape[0] == 1 else channel
    positions, bias = weights.positional_encoding, weights.embedding_bias[e]  # [tokens, d_model], [d_model]
    if offset:
        for d in range(rows.shape[1]):
            rows[0, d] = weights.cls_token[d] + positions[0, d]
    np.dot(patches[series], weights.embedding_weight[e], rows[offset:])
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


@parallel_kernel
def encode(patches, channels, weights, switches, work, stream, hidden_states, pooled):
    """The encoder: patches [series, num_patches, patch_length] -> stream [series * tokens, d_model], the
    embedding and then every layer; hidden_states [layers or 0, rows, d_model] receives the stream entering
    each layer. With ``switches.pool_last_feed_forward`` the last layer ends in pooled [series, d_model]
    (each series' token mean) and leaves the stream as it entered that layer's feed-forward sublayer.

    The series split into units that attend only among themselves: a series, or with attention across
    channels a whole batch element. Each thread of the workspace takes an equal share of the units and runs
    the encoder over blocks of them that fit its workspace (and so its cache), with single-threaded BLAS:
    one parallel launch per forward pass, no thread pools taking turns.
    """
    d_model = stream.shape[1]
    tokens = stream.shape[0] // patches.shape[0]
    threads = work.normed.shape[0]
    block_rows = work.normed.shape[1] // d_model
    unit_series = channels if switches.channel_attention else 1
    unit_rows = unit_series * tokens
    units = patches.shape[0] // unit_series
    units_per_block = max(block_rows // unit_rows, 1)
    num_layers = weights.qkv_weight.shape[0]
    folded = weights.patch_qkv_weight.shape[0] > 0  # layer 0's QKV comes from the patches directly
    for thread in prange(threads):
        start, stop = piece(units, threads, thread)
        for first in range(start, stop, units_per_block):
            last = min(first + units_per_block, stop)
            for series in range(first * unit_series, last * unit_series):
                embed_series(patches, series, series % channels, weights, switches,
                             stream[series * tokens:(series + 1) * tokens])
            rows = slice(first * unit_rows, last * unit_rows)
            block = stream[rows]
            scratch = block_scratch(work, thread, block.shape[0], d_model)
            if folded:
                first_qkv_from_patches(patches[first * unit_series:last * unit_series], weights, scratch.qkv_t)
            for layer in range(num_layers):
                if hidden_states.shape[0]:
                    hidden_states[layer, rows] = block
                block_pooled = pooled[:0]
                if switches.pool_last_feed_forward and layer == num_layers - 1:
                    block_pooled = pooled[first * unit_series:last * unit_series]
                encoder_layer(block, channels, tokens, weights, layer, switches, scratch, block_pooled,
                              folded and layer == 0)


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------
@kernel
def squareplus(x):
    return (x + np.sqrt(x * x + 4.0)) / 2.0


@kernel
def distribution_domain_map(values, k, switches):
    """Map raw head output k to its parameter's domain in place, as transformers' DistributionOutput."""
    flat = values.ravel()
    d = switches.distribution
    if d == DIST_STUDENT_T and k == 0:  # df = 2 + squareplus(df)
        for i in range(flat.size):
            flat[i] = 2.0 + squareplus(flat[i])
    elif (d == DIST_STUDENT_T and k == 2) or (d == DIST_NORMAL and k == 1):  # scale = squareplus, floor eps
        for i in range(flat.size):
            flat[i] = max(squareplus(flat[i]), switches.dtype_eps)
    elif d == DIST_NEGATIVE_BINOMIAL and k == 0:  # total_count = squareplus
        for i in range(flat.size):
            flat[i] = squareplus(flat[i])


@kernel
def pool(hidden, pooled, switches):
    """[batch, channels, tokens, d_model] -> [batch, channels, width]: cls token, mean, max or flatten
    (the mean already taken in ``pooled`` when ``switches.pool_last_feed_forward``)."""
    batch, channels, tokens, d_model = hidden.shape
    if switches.pool_last_feed_forward:
        return pooled
    if switches.use_cls_token:
        return np.ascontiguousarray(hidden[:, :, 0, :])
    if switches.pooling == POOL_MEAN:
        means = np.zeros((batch, channels, d_model), dtype=hidden.dtype)
        for t in range(tokens):
            means += hidden[:, :, t, :]
        means /= tokens
        return means
    if switches.pooling == POOL_MAX:
        maxima = hidden[:, :, 0, :].copy()
        for t in range(1, tokens):
            maxima = np.maximum(maxima, hidden[:, :, t, :])
        return maxima
    return hidden.copy().reshape(batch, channels, tokens * d_model)


@kernel
def apply_head(hidden, pooled, loc, scale, weights, switches):
    """hidden: [batch, channels, tokens, d_model] -> the head's output as a 4-D array (pooled [batch,
    channels, d_model] holds the token means instead when ``switches.pool_last_feed_forward``):

    prediction [parameters, batch, horizon, channels]; pretraining [batch, channels, patches, patch_length];
    classification / regression [parameters, 1, batch, targets]; no head [0, 0, 0, 0].
    """
    batch, channels, tokens, d_model = hidden.shape
    head = weights.head
    if switches.head == HEAD_PRETRAINING:
        offset = 1 if switches.use_cls_token else 0
        rows = hidden.reshape(batch * channels * tokens, d_model) @ head.weight[0, 0] + head.bias[0, 0]
        patch_length = rows.shape[1]
        out = rows.reshape(batch, channels, tokens, patch_length)[:, :, offset:, :]
        return np.ascontiguousarray(out)
    if switches.head == HEAD_PREDICTION:
        features = pool(hidden, pooled, switches)  # [batch, channels, width]
        num_params, horizon = head.weight.shape[1], head.weight.shape[3]
        out = np.empty((num_params, batch, horizon, channels), dtype=hidden.dtype)
        shared = head.weight.shape[0] == 1
        for k in range(num_params):
            for c in range(channels):
                h = 0 if shared else c
                values = np.ascontiguousarray(features[:, c, :]) @ head.weight[h, k] + head.bias[h, k]  # [batch, horizon]
                if switches.distribution != DIST_NONE:
                    distribution_domain_map(values, k, switches)
                else:
                    for b in range(batch):
                        values[b] = values[b] * scale[b, 0, c] + loc[b, 0, c]
                out[k, :, :, c] = values
        return out
    if switches.head == HEAD_CLASSIFICATION or switches.head == HEAD_REGRESSION:
        features = pool(hidden, pooled, switches).reshape(batch, channels * d_model)
        num_params, targets = head.weight.shape[1], head.weight.shape[3]
        out = np.empty((num_params, 1, batch, targets), dtype=hidden.dtype)
        for k in range(num_params):
            values = features @ head.weight[0, k] + head.bias[0, k]  # [batch, targets]
            if switches.distribution != DIST_NONE:
                distribution_domain_map(values, k, switches)
            elif switches.has_output_range:
                span = switches.output_high - switches.output_low
                for b in range(batch):
                    for t in range(targets):
                        values[b, t] = 1.0 / (1.0 + np.exp(-values[b, t])) * span + switches.output_low
            out[k, 0] = values
        return out
    return np.zeros((0, 0, 0, 0), dtype=hidden.dtype)


# --------------------------------------------------------------------------------------------------
# The whole forward pass
# --------------------------------------------------------------------------------------------------
@kernel
def patchtst_forward(values, observed, patch_mask, weights, switches, keep_hidden_states, work):
    """One PatchTST forward pass.

    values, observed: [batch, time, channels] (observed is 1.0/0.0 in the dtype);
    patch_mask: [batch, channels, patches] bool, or [0, 0, 0] for none (pretraining's masked patches);
    work: a ``Workspace`` (``make_workspace``), one row per thread ``encode`` runs.
    Returns last_hidden_state [batch, channels, tokens, d_model] (with ``switches.pool_last_feed_forward``
    the stream before the last feed-forward sublayer, which the classes using that switch do not return),
    loc and scale [batch, 1, channels],
    patch_input [batch, channels, patches, patch_length], the head output (see ``apply_head``), and the
    hidden states entering each layer [layers or 0, batch, channels, tokens, d_model].
    """
    batch, time, channels = values.shape
    scaled, loc, scale = scale_series(values, observed, switches.scaling)
    patch_input = patchify(scaled, switches.patch_length, switches.patch_stride)
    patches = patch_input
    if patch_mask.size:
        patches = patch_input.copy()
        for b in range(batch):
            for c in range(channels):
                for p in range(patch_input.shape[2]):
                    if patch_mask[b, c, p]:
                        patches[b, c, p, :] = switches.mask_value
    encoder = weights.encoder
    num_patches, patch_length = patches.shape[2], patches.shape[3]
    tokens = num_patches + (1 if switches.use_cls_token else 0)
    d_model = encoder.embedding_weight.shape[2]
    num_layers = encoder.qkv_weight.shape[0]
    kept = num_layers if keep_hidden_states else 0
    rows = np.empty((batch * channels * tokens, d_model), dtype=values.dtype)
    hidden_states = np.empty((kept, rows.shape[0], d_model), dtype=values.dtype)
    pooled = np.empty((batch if switches.pool_last_feed_forward else 0, channels, d_model), dtype=values.dtype)
    encode(patches.reshape(batch * channels, num_patches, patch_length), channels, encoder, switches, work, rows,
           hidden_states, pooled.reshape(pooled.shape[0] * channels, d_model))
    hidden = rows.reshape(batch, channels, tokens, d_model)
    head_output = apply_head(hidden, pooled, loc, scale, weights, switches)
    return hidden, loc, scale, patch_input, head_output, hidden_states.reshape(kept, batch, channels, tokens, d_model)
