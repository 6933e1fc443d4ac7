"""kernels.gemm: the matrix product every Linear runs, and the promise that makes a series' forecast independent
of its batch: each output is the chain of fused multiply-adds over the inner dimension, in order, whatever
the number of rows and wherever the row lies."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustml_nb.kernels import gemm, simd


def _round(value: Fraction, dtype):
    """value rounded to the nearest number of dtype, ties to even (Fraction -> float is correctly rounded)."""
    near = dtype(float(value))
    if dtype == np.float64:
        return near
    candidates = [np.nextafter(near, dtype(-np.inf)), near, np.nextafter(near, dtype(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - value), int(np.array(c).view(np.int32)) & 1))


def _fma_chain(row, column, dtype):
    """((row[0] column[0] + 0) + row[1] column[1]) + ..., each step one fused multiply-add (rounded once)."""
    total = dtype(0)
    for a, w in zip(row, column):
        total = _round(Fraction(float(a)) * Fraction(float(w)) + Fraction(float(total)), dtype)
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count, width, features", [(1, 1, 1), (3, 5, 7), (9, 17, 16), (17, 12, 33), (8, 40, 64),
                                                    (2, 3, 70), (70, 3, 256)])
def test_each_output_is_the_fused_multiply_add_chain_in_order(count, width, features, dtype):
    """Every shape class of the tiling: fewer rows than a tile and a tile and some, columns under one vector,
    exactly one or two, and masked tails beyond; and many rows of a weight whose rows are a multiple of 1 KiB
    apart, whose column panels are copied together first."""
    rng = np.random.default_rng(count * 1000 + width * 10 + features)
    rows = rng.standard_normal((count, width)).astype(dtype)
    weight = rng.standard_normal((width, features)).astype(dtype)
    out = np.full((count, features), np.nan, dtype)
    gemm.matmul(rows, weight, out)
    expected = np.array([[_fma_chain(rows[i], weight[:, j], dtype) for j in range(features)] for i in range(count)],
                        dtype=dtype)
    np.testing.assert_array_equal(out, expected)


@settings(deadline=None, max_examples=60)
@given(dtype=st.sampled_from([np.float32, np.float64]), count=st.integers(1, 70), width=st.integers(0, 70),
       features=st.integers(1, 70), data=st.data())
def test_a_rows_result_does_not_depend_on_the_other_rows_of_the_call(dtype, count, width, features, data):
    """Any run of rows multiplied alone gives, bit for bit, what it gives among all the rows; so do the rows as
    a strided view (every other row, or the transpose of a column-major array) and the transposed product."""
    first = data.draw(st.integers(0, count - 1))
    last = data.draw(st.integers(first + 1, count))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    rows = (rng.standard_normal((count, width)) * rng.uniform(0.1, 100)).astype(dtype)
    weight = rng.standard_normal((width, features)).astype(dtype)
    whole = np.full((count, features), np.nan, dtype)
    gemm.matmul(rows, weight, whole)
    part = np.full((last - first, features), np.nan, dtype)
    gemm.matmul(rows[first:last], weight, part)
    np.testing.assert_array_equal(part, whole[first:last])
    spaced = np.repeat(rows, 2, axis=0)[::2]
    column_major = np.asfortranarray(rows)
    for view in (spaced, column_major):
        again = np.full((count, features), np.nan, dtype)
        gemm.matmul(view, weight, again)
        np.testing.assert_array_equal(again, whole)
    transposed = np.full((features, count), np.nan, dtype)  # (rows W)^T as W^T rows^T, as attention's QKV
    gemm.matmul(weight.T, np.ascontiguousarray(rows.T), transposed)
    np.testing.assert_array_equal(transposed, whole.T)
    exact = rows.astype(np.float64) @ weight.astype(np.float64)
    tolerance = (2e-6 if dtype == np.float32 else 1e-14) * max(width, 1)
    scale = np.abs(rows).astype(np.float64) @ np.abs(weight).astype(np.float64)
    assert np.all(np.abs(whole - exact) <= tolerance * (scale + 1e-30))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_a_packed_weight_equal_the_rows_alone(dtype):
    """Over many rows a weight of 256 columns is packed panel by panel; a few rows are not. Both give the same
    bits."""
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((100, 37)).astype(dtype)
    weight = rng.standard_normal((37, 256)).astype(dtype)
    whole = np.empty((100, 256), dtype)
    gemm.matmul(rows, weight, whole)
    for first in (0, 50, 99):
        alone = np.empty((1, 256), dtype)
        gemm.matmul(rows[first:first + 1], weight, alone)
        np.testing.assert_array_equal(alone[0], whole[first])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count, width, features", [(1, 3, 5), (9, 16, 33), (70, 7, 256)])
def test_a_bias_is_added_to_the_finished_sums(count, width, features, dtype):
    """matmul_bias gives what matmul and a separate pass adding the bias give, to the bit."""
    rng = np.random.default_rng(count + features)
    rows = rng.standard_normal((count, width)).astype(dtype)
    weight = rng.standard_normal((width, features)).astype(dtype)
    bias = rng.standard_normal(features).astype(dtype)
    plain, biased = np.empty((count, features), dtype), np.empty((count, features), dtype)
    gemm.matmul(rows, weight, plain)
    gemm.matmul_bias(rows, weight, bias, biased)
    np.testing.assert_array_equal(biased, plain + bias)
    with pytest.raises(ValueError, match="the bias does not match"):
        gemm.matmul_bias(rows, weight, bias[1:], biased)


@settings(deadline=None, max_examples=40)
@given(dtype=st.sampled_from([np.float32, np.float64]), leading=st.integers(0, 3), count=st.integers(0, 40),
       width=st.integers(0, 50), features=st.integers(1, 100), seed=st.integers(0, 2**32 - 1))
def test_a_packed_weight_holds_its_columns_in_panels_and_gives_the_same_bits(dtype, leading, count, width, features,
                                                                             seed):
    """pack_weight cuts a (stacked) weight's columns into panels of PANEL_BYTES, the last zero-padded; a product
    with the packed form is the product with the weight, to the bit, with and without a bias."""
    rng = np.random.default_rng(seed)
    stacked = rng.standard_normal((leading, width, features)).astype(dtype)
    packed = gemm.pack_weight(stacked)
    panel_width = gemm.PANEL_BYTES // np.dtype(dtype).itemsize
    panels = -(-features // panel_width)
    assert packed.shape == (leading, panels, width, panel_width) and packed.flags.c_contiguous
    for p in range(panels):
        columns = stacked[:, :, p * panel_width:(p + 1) * panel_width]
        np.testing.assert_array_equal(packed[:, p, :, :columns.shape[2]], columns)
        np.testing.assert_array_equal(packed[:, p, :, columns.shape[2]:], 0)
    weight = rng.standard_normal((width, features)).astype(dtype)
    rows = rng.standard_normal((count, width)).astype(dtype)
    bias = rng.standard_normal(features).astype(dtype)
    for product, extra in ((gemm.matmul, ()), (gemm.matmul_bias, (bias,))):
        plain, from_packed = np.full((count, features), np.nan, dtype), np.full((count, features), np.nan, dtype)
        product(rows, weight, *extra, plain)
        product(rows, gemm.pack_weight(weight), *extra, from_packed)
        np.testing.assert_array_equal(from_packed, plain)


def test_a_packed_weight_of_another_shape_is_refused():
    rows, packed = np.ones((4, 3)), gemm.pack_weight(np.ones((3, 20)))  # float64: two panels of 16 columns
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm.matmul(rows, packed, np.empty((4, 33)))  # more columns than its panels hold
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm.matmul(rows, packed, np.empty((4, 16)))  # a whole panel fewer than it holds
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm.matmul(np.ones((4, 5)), packed, np.empty((4, 20)))


def test_no_inner_dimension_gives_zeros():
    out = np.full((3, 5), np.nan, np.float32)
    gemm.matmul(np.empty((3, 0), np.float32), np.empty((0, 5), np.float32), out)
    np.testing.assert_array_equal(out, 0)


def test_mismatched_shapes_and_strided_columns_are_refused():
    rows, weight = np.ones((4, 3)), np.ones((3, 6))
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm.matmul(rows, np.ones((4, 6)), np.empty((4, 6)))
    with pytest.raises(ValueError, match="shapes do not match"):
        gemm.matmul(rows, weight, np.empty((5, 6)))
    with pytest.raises(ValueError, match="weight's columns"):
        gemm.matmul(rows, np.ones((3, 12))[:, ::2], np.empty((4, 6)))
    with pytest.raises(ValueError, match="out's columns"):
        gemm.matmul(rows, weight, np.empty((4, 12))[:, ::2])


@pytest.mark.parametrize("features, float32_shape, float64_shape", [
    ("+avx512f,+avx2,+avx,+fma", (16, 8), (8, 8)),
    ("+avx,+avx2,+fma,-avx512f,-amx-avx512", (8, 6), (4, 6)),
    ("+sse2,-avx", (4, 6), (2, 6)),
])
def test_the_tile_follows_the_cpu_the_code_is_compiled_for(features, float32_shape, float64_shape):
    """(values per vector, rows per tile) from the target machine's features, as Numba compiles for them."""
    class Codegen:
        _tm_features = features

    class Context:
        def codegen(self):
            return Codegen()

    assert simd.lanes_and_rows(Context(), 4) == float32_shape
    assert simd.lanes_and_rows(Context(), 8) == float64_shape
