"""Row-wise pieces over ``[rows, width]`` arrays: norms, activations, residuals, reordering and pooling."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import overload

from ..jit import KERNEL_OPTIONS, kernel
from .gemm import matmul_bias, panels_of
from .simd import flat_map, softmax_scale, transposed_tile

NORM_BATCH, NORM_LAYER = 0, 1
ACT_NONE, ACT_GELU, ACT_RELU = -1, 0, 1
POOL_NONE, POOL_MEAN, POOL_MAX = 0, 1, 2


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
    # Means, then deviations, then the output, each its own pass over the rows (a short row runs its loops
    # faster apart than fused), sums in the dtype and in any order as torch's (vectorized) are; the inverse
    # deviations as one flat loop, where square roots and divisions vectorize.
    means = np.empty(rows.shape[0], dtype=rows.dtype)
    inv_stds = np.empty(rows.shape[0], dtype=rows.dtype)
    one_eps = np.array((1.0, eps), dtype=rows.dtype)  # 1 and eps in the dtype, as torch computes rstd
    for r in range(rows.shape[0]):
        means[r] = row_total(rows[r]) / d_model
    for r in range(rows.shape[0]):
        inv_stds[r] = squared_deviation(rows[r], means[r])
    for r in range(rows.shape[0]):
        inv_stds[r] = one_eps[0] / np.sqrt(inv_stds[r] / one_eps.dtype.type(d_model) + one_eps[1])
    for r in range(rows.shape[0]):
        row_mean, row_inv_std = means[r], inv_stds[r]
        for d in range(d_model):
            out[r, d] = (rows[r, d] - row_mean) * row_inv_std * gamma[d] + beta[d]


# Sums in any order (fastmath "reassoc"), so that LLVM vectorizes them; a sum in order is a chain of
# dependent additions, one per element.
@kernel(fastmath={"reassoc", "nsz"})
def row_total(row):
    """The sum of row [width] in its dtype."""
    total = row[0]
    for i in range(1, row.size):
        total += row[i]
    return total


@kernel(fastmath={"reassoc", "nsz"})
def squared_deviation(row, mean):
    """The sum of (row - mean)^2 over row [width], in its dtype."""
    total = (row[0] - mean) ** 2
    for i in range(1, row.size):
        total += (row[i] - mean) ** 2
    return total


# float32 runs approximations of exp and erf in SIMD vectors of the CPU's full width (``simd.flat_map``; no
# libm call in the loop); float64, the parity dtype, keeps libm's. The choice is made by dtype when Numba
# types the call. ``exp_of`` is the same exp for one number, in Numba's own arithmetic (it may round its
# last bit differently).
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187045e-06  # ln 2 split so k * _LN2_HI is exact
_EXP_TAYLOR = (1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0)  # r^7 ... r^0
# erf(z) ~ z P(z^2) / Q(z^2) on [-4, 4] (+-1 beyond, to float32 precision): the rational form Eigen and XLA
# use for float32. GELU stays within 2.6e-7 * max(|x|, 1) of the exact form (measured on a 2e6-point grid).
_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                  -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)  # z^12 ... z^0
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                    -1.42647390514189e-02)  # z^8 ... z^0


def _polynomial(vectors, x, coefficients):
    """sum(coefficients[i] * x^(n - i)) by Horner's rule, in fused multiply-adds."""
    total = vectors.constant(coefficients[0])
    for coefficient in coefficients[1:]:
        total = vectors.fma(total, x, vectors.constant(coefficient))
    return total


def _exp_formula(vectors, x):
    """float32 exp(x) = 2^k exp(r), |r| <= ln2 / 2, exp(r) by its degree-7 Taylor polynomial (< 1 ulp); x within
    [-87, 88] (exp(-87) ~ 1.6e-38 below, exp(88) ~ 1.7e38 above)."""
    builder = vectors.builder
    x = vectors.clamp(x, vectors.constant(-87.0), vectors.constant(88.0))
    k = vectors.floor(vectors.fma(x, vectors.constant(1.4426950408889634), vectors.constant(0.5)))
    r = vectors.fma(k, vectors.constant(-_LN2_HI), x)
    r = vectors.fma(k, vectors.constant(-_LN2_LO), r)
    integers = ir.VectorType(ir.IntType(32), vectors.lanes)
    k_or_zero = builder.select(builder.fcmp_ordered("ord", k, k), k, vectors.zero)  # NaN has no exponent
    exponent = builder.add(builder.fptosi(k_or_zero, integers), ir.Constant(integers, [127] * vectors.lanes))
    two_to_k = builder.bitcast(builder.shl(exponent, ir.Constant(integers, [23] * vectors.lanes)), vectors.type)
    return builder.fmul(_polynomial(vectors, r, _EXP_TAYLOR), two_to_k)


def _gelu_formula(vectors, x):
    """float32 GELU(x) = x / 2 (1 + erf(x / sqrt 2)), erf by the rational form above."""
    builder = vectors.builder
    z = vectors.clamp(builder.fmul(x, vectors.constant(0.7071067811865476)), vectors.constant(-4.0),
                      vectors.constant(4.0))
    z2 = builder.fmul(z, z)
    erf = builder.fdiv(builder.fmul(z, _polynomial(vectors, z2, _ERF_NUMERATOR)),
                       _polynomial(vectors, z2, _ERF_DENOMINATOR))
    return builder.fmul(builder.fmul(vectors.constant(0.5), x), builder.fadd(vectors.constant(1.0), erf))


_exp_vectors, _gelu_vectors = flat_map(_exp_formula), flat_map(_gelu_formula)


def exp_of(x):
    """exp(x) of one number; for float32 within [-87, 88] (below it returns exp(-87) ~ 1.6e-38, above
    exp(88) ~ 1.7e38)."""


@overload(exp_of, inline="always")
def _exp_of(x):
    if x == types.float32:
        def impl(x):
            x = min(max(x, np.float32(-87.0)), np.float32(88.0))
            k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
            r = x - k * np.float32(_LN2_HI) - k * np.float32(_LN2_LO)
            c = _EXP_TAYLOR  # Horner's rule, as _exp_formula's (written out: a loop here, inlined, upsets Numba)
            p = np.float32(c[0])
            p = p * r + np.float32(c[1])
            p = p * r + np.float32(c[2])
            p = p * r + np.float32(c[3])
            p = p * r + np.float32(c[4])
            p = p * r + np.float32(c[5])
            p = p * r + np.float32(c[6])
            p = p * r + np.float32(c[7])
            two_to_k = np.int32((np.int32(k) + 127) << 23).view(np.float32)  # 2^k built in the exponent field
            return p * two_to_k
        return impl
    return lambda x: math.exp(x)


def exp_inplace(values):
    """values[:] = exp(values) over a C-contiguous 1-D array (float32: the SIMD form, as ``exp_of`` clamped)."""


@overload(exp_inplace)
def _exp_inplace(values):
    if values.dtype == types.float32:
        return lambda values: _exp_vectors(values)

    def impl(values):
        for i in range(values.size):
            values[i] = math.exp(values[i])
    return impl


def gelu_inplace(values):
    """values[:] = GELU(values), the exact (erf) form torch's nn.GELU() computes, over a C-contiguous 1-D
    array."""


@overload(gelu_inplace)
def _gelu_inplace(values):
    if values.dtype == types.float32:
        return lambda values: _gelu_vectors(values)

    def impl(values):
        for i in range(values.size):
            values[i] = 0.5 * values[i] * (1.0 + math.erf(values[i] * 0.7071067811865476))
    return impl


@kernel
def exp_array(values):
    """exp_inplace for callers outside compiled code (tests)."""
    exp_inplace(values)


@kernel
def gelu_inplace_array(values):
    """gelu_inplace for callers outside compiled code (tests)."""
    gelu_inplace(values)


@kernel
def add_bias_activate(rows, bias, activation):
    """rows[r] = act(rows[r] + bias) in place (``ACT_NONE``: no activation); rows: [rows, features]. The
    activation runs over all rows as one flat loop (short rows would each pay a loop's start-up)."""
    for r in range(rows.shape[0]):
        row = rows[r]
        for f in range(row.size):
            row[f] += bias[f]
    flat = rows.reshape(rows.size)
    if activation == ACT_GELU:
        gelu_inplace(flat)
    elif activation == ACT_RELU:
        for i in range(flat.size):
            flat[i] = max(flat[i], 0.0)


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
def sigmoid_of(x):
    """1 / (1 + exp(-x)), with exp taken of -|x| only (no overflow)."""
    if x >= 0:
        return 1 / (1 + exp_of(-x))
    e = exp_of(x)
    return e / (1 + e)


@kernel
def gate_groups(width, requested):
    """granite-tsfm's ``pick_gate_groups``: ``requested`` groups when they divide ``width``, else the largest
    count below it that does (1 at least)."""
    if requested <= 1:
        return 1
    for groups in range(min(requested, width), 0, -1):
        if width % groups == 0:
            return groups
    return 1


# A gate's kind, as a marker whose type picks the code ``gate`` compiles to (as attention.heads_kind does), so a
# model's kernels hold only its own gate: transformers' gates are all softmax; granite-tsfm's gate_mode chooses.
class SoftmaxGate(NamedTuple):
    """values *= softmax(values W + b) over the row."""


class SigmoidGate(NamedTuple):
    """values *= sigmoid(values W + b)."""


class GluGate(NamedTuple):
    """values = a * sigmoid(b) where [a, b] = values W + b (W has twice the outputs)."""


class GroupSigmoidGate(NamedTuple):
    """values *= sigmoid of the logits' mean over each of gate_groups(width, groups) equal groups of the row."""

    groups: int


def gate_kind(mode: str = "softmax", groups: int = 8):
    """The marker ``gate`` is compiled for, from granite-tsfm's gate_mode and gate_groups."""
    return {"softmax": SoftmaxGate(), "sigmoid": SigmoidGate(), "glu": GluGate(),
            "group_sigmoid": GroupSigmoidGate(int(groups))}[mode]


def gate(kind, values, weight, bias, logits):
    """Gated attention as transformers' ``...GatedAttention`` and granite-tsfm's gate modes, over rows
    values [rows, width] in place; weight: [width, width] ([in, out]; [width, 2 * width] for GluGate; or
    packed, ``gemm.pack_weight``), logits: [rows, weight's outputs], C-contiguous. ``kind``: a marker of
    ``gate_kind``. From Python: ``gate_rows``."""


# A softmax gate's row total, taken as it is when within these bounds: no exponential of the row overflowed
# (float32's clamp is exp(88) ~ 1.7e38) and the largest is far above float32's smallest (exp(-87)), so the
# logits the clamp raised weigh less than 1e-17 of the total. Powers of two: the same number in either dtype.
_SMALLEST_TOTAL, _LARGEST_TOTAL = 2.0 ** -66, 2.0 ** 100  # ~1.4e-20, ~1.3e30


def _softmax_gate(kind, values, weight, bias, logits):
    # Softmax is the same for the logits shifted by any number; torch shifts each row by its largest so that
    # no exponential overflows. Here the exponentials are taken unshifted, saving the pass that finds the
    # largest (a scalar loop, as long as the exponentials'), and a row whose total is out of bounds (or NaN)
    # is taken again shifted, from its logits computed again from that row alone (so a row's result does not
    # depend on the others). As torch's softmax, the exponentials are scaled by 1 / their sum.
    matmul_bias(values, weight, bias, logits)
    totals = np.empty(values.shape[0], dtype=values.dtype)
    if multiply_by_softmax(values, logits, totals):
        return
    for r in range(values.shape[0]):
        if not _SMALLEST_TOTAL <= totals[r] <= _LARGEST_TOTAL:
            inverse_total = 1 / _shifted_exponentials(values[r:r + 1], weight, bias, logits[r:r + 1])
            row, row_logits = values[r], logits[r]
            for i in range(row.size):
                row[i] = row[i] * (row_logits[i] * inverse_total)


def multiply_by_softmax(values, logits, totals):
    """values[r] *= softmax(logits[r]), the exponentials unshifted, for each row whose total of exponentials lies
    within [_SMALLEST_TOTAL, _LARGEST_TOTAL]; the others are left as they were. values, logits: [rows, width],
    C-contiguous; totals [rows] receives every row's total; logits may be left holding the exponentials.
    Returns whether every row's total lay within the bounds."""


_softmax_scale_vectors = softmax_scale(_exp_formula, _SMALLEST_TOTAL, _LARGEST_TOTAL)


@overload(multiply_by_softmax, jit_options=KERNEL_OPTIONS)
def _multiply_by_softmax(values, logits, totals):
    if values.dtype == types.float32 and values.layout == logits.layout == "C":  # in one pass (simd.softmax_scale)
        return lambda values, logits, totals: _softmax_scale_vectors(values, logits, totals)

    def impl(values, logits, totals):  # each pass its own loop: short rows would each pay a loop's start-up
        exp_inplace(logits.reshape(logits.size))
        for r in range(values.shape[0]):
            totals[r] = row_total(logits[r])
        every_row = True
        for r in range(values.shape[0]):
            if not _SMALLEST_TOTAL <= totals[r] <= _LARGEST_TOTAL:
                every_row = False
                continue
            row, row_logits, inverse_total = values[r], logits[r], 1 / totals[r]
            for i in range(row.size):
                row[i] = row[i] * (row_logits[i] * inverse_total)
        return every_row
    return impl


@kernel
def _shifted_exponentials(values, weight, bias, logits):
    """One row's logits [1, width] computed again from its values [1, width] (summed in float64, more
    exactly than a matrix product, which this rare path does not compile again), shifted by their largest
    and exponentiated, in place; returns their total."""
    row, row_logits = values[0], logits[0]
    panels = panels_of(weight, logits)  # weight[k, j] is panels[j // width, k, j % width], in either form
    width = panels.shape[2]
    for j in range(row_logits.size):
        total = np.float64(bias[j])
        for k in range(row.size):
            total += np.float64(row[k]) * np.float64(panels[j // width, k, j % width])
        row_logits[j] = total
    largest = row_logits[0]
    for i in range(1, row_logits.size):
        largest = max(largest, row_logits[i])
    for i in range(row_logits.size):
        row_logits[i] = exp_of(row_logits[i] - largest)
    return row_total(row_logits)


def _sigmoid_gate(kind, values, weight, bias, logits):
    matmul_bias(values, weight, bias, logits)
    for r in range(values.shape[0]):
        row, row_logits = values[r], logits[r]
        for i in range(values.shape[1]):
            row[i] = row[i] * sigmoid_of(row_logits[i])


def _glu_gate(kind, values, weight, bias, logits):
    matmul_bias(values, weight, bias, logits)
    width = values.shape[1]
    for r in range(values.shape[0]):
        row, row_logits = values[r], logits[r]
        for i in range(width):
            row[i] = row_logits[i] * sigmoid_of(row_logits[width + i])


def _group_sigmoid_gate(kind, values, weight, bias, logits):
    matmul_bias(values, weight, bias, logits)
    width = values.shape[1]
    count = gate_groups(width, kind.groups)
    size = width // count
    group_size = np.empty(1, dtype=values.dtype)  # the mean divides in the dtype (int / float32 is float64)
    group_size[0] = size
    for r in range(values.shape[0]):
        row, row_logits = values[r], logits[r]
        for g in range(count):
            total = row_logits[g * size]
            for i in range(g * size + 1, (g + 1) * size):
                total += row_logits[i]
            weight_of_group = sigmoid_of(total / group_size[0])
            for i in range(g * size, (g + 1) * size):
                row[i] = row[i] * weight_of_group


@overload(gate, jit_options=KERNEL_OPTIONS)
def _gate(kind, values, weight, bias, logits):
    return {SoftmaxGate: _softmax_gate, SigmoidGate: _sigmoid_gate, GluGate: _glu_gate,
            GroupSigmoidGate: _group_sigmoid_gate}[kind.instance_class]


@kernel
def gate_rows(kind, values, weight, bias, logits):
    """``gate`` for callers outside compiled code (forecast channel mixing, tests)."""
    gate(kind, values, weight, bias, logits)


@kernel
def transpose_blocks(source, count, out):
    """Each of ``count`` consecutive [a, b] blocks of source [count * a, b] transposed into out [count * b, a]."""
    if _transposed_in_tiles(source, count, out):
        return
    a, b = source.shape[0] // count, source.shape[1]
    if a >= 16:  # long rows out: each written whole, from a column of source (3x faster at a = 512, 1.5x at 16)
        for g in range(count):
            for j in range(b):
                target = out[g * b + j]
                for i in range(a):
                    target[i] = source[g * a + i, j]
        return
    for g in range(count):  # short rows out: each row of source read whole
        for i in range(a):
            row = source[g * a + i]
            for j in range(b):
                out[g * b + j, i] = row[j]


@kernel
def add_transposed_blocks(source, count, out):
    """out += source with each of ``count`` consecutive [a, b] blocks of source [count * a, b] transposed
    (out [count * b, a]): a residual added straight from the transposed layout."""
    if _added_in_tiles(source, count, out):
        return
    a, b = source.shape[0] // count, source.shape[1]
    for g in range(count):
        for i in range(a):
            row = source[g * a + i]
            for j in range(b):
                out[g * b + j, i] += row[j]


def _transposed_in_tiles(source, count, out):
    """transpose_blocks done in tiles (``_in_tiles``) where it can be; returns whether it was."""


def _added_in_tiles(source, count, out):
    """add_transposed_blocks done in tiles (``_in_tiles``) where it can be; returns whether it was."""


def _in_tiles(add):
    """The implementation of _added_in_tiles (``add``) or _transposed_in_tiles. float32 blocks whose sides are 8
    or multiples of 16 (a mixer's 8, 16 or 32 patches by d_model 48 to 192) go in tiles of 16 x 16 values (8 x 16
    or 16 x 8 at a side of 8): a tile's rows loaded as vectors, exchanged by two-vector shuffles, stored as the
    rows of its transpose (simd.transposed_tile), 2-4x faster than the loops over values."""
    square, short_rows, short_columns = (transposed_tile(rows, columns, add) for rows, columns in ((16, 16), (8, 16),
                                                                                                  (16, 8)))

    def typed(source, count, out):
        if not source.dtype == out.dtype == types.float32:
            return lambda source, count, out: False

        def impl(source, count, out):
            a, b = source.shape[0] // count, source.shape[1]
            tile_rows, tile_columns = min(a, 16), min(b, 16)
            source_step, out_step = source.strides[0] // 4, out.strides[0] // 4  # in values
            # A tile's vector holds a row of 16 values, or two consecutive rows of 8, in source and in out.
            if (a % tile_rows or b % tile_columns or tile_rows % 8 or tile_columns % 8 or tile_rows + tile_columns < 24
                    or source.strides[1] != 4 or out.strides[1] != 4
                    or (tile_columns == 8 and source_step != 8) or (tile_rows == 8 and out_step != 8)):
                return False
            source_vector_step, out_vector_step = source_step * (16 // tile_columns), out_step * (16 // tile_rows)
            for g in range(count):
                for i0 in range(0, a, tile_rows):
                    for j0 in range(0, b, tile_columns):
                        source_start, out_start = (g * a + i0) * source_step + j0, (g * b + j0) * out_step + i0
                        if tile_rows == 8:
                            short_rows(source, source_start, source_vector_step, out, out_start, out_vector_step)
                        elif tile_columns == 8:
                            short_columns(source, source_start, source_vector_step, out, out_start, out_vector_step)
                        else:
                            square(source, source_start, source_vector_step, out, out_start, out_vector_step)
            return True
        return impl
    return typed


overload(_transposed_in_tiles, jit_options=KERNEL_OPTIONS)(_in_tiles(add=False))
overload(_added_in_tiles, jit_options=KERNEL_OPTIONS)(_in_tiles(add=True))
