"""Properties of the compiled kernels themselves."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st
from numba import njit

from rustml_nb.kernels import attention, gemm, rows


@given(st.lists(st.floats(-87.0, 0.0, width=32), min_size=1, max_size=200))
def test_float32_exp_is_within_an_ulp(values):
    array = np.array(values, dtype=np.float32)
    ours = array.copy()
    rows.exp_array(ours)
    exact = np.exp(array.astype(np.float64))
    assert np.all(np.abs(ours - exact) <= 1.5 * np.spacing(exact.astype(np.float32)))


@given(st.lists(st.floats(-12.0, 12.0, width=32), min_size=1, max_size=200))
def test_float32_gelu_matches_the_exact_erf_form(values):
    array = np.array(values, dtype=np.float32)
    ours = array.copy()
    rows.gelu_inplace_array(ours)
    exact = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in array.astype(np.float64)])
    assert np.all(np.abs(ours - exact) <= 3e-7 * np.maximum(np.abs(array), 1) + np.spacing(np.float32(np.abs(exact))))


@njit
def _exp_of_each(values):
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = rows.exp_of(values[i])
    return out


@given(st.lists(st.floats(-87.0, 0.0, width=32), min_size=1, max_size=200))
def test_float32_exp_of_one_number_is_within_an_ulp(values):
    """``exp_of``, the scalar form that attention and the gates' rare paths use."""
    array = np.array(values, dtype=np.float32)
    ours = _exp_of_each(array)
    exact = np.exp(array.astype(np.float64))
    assert np.all(np.abs(ours - exact) <= 1.5 * np.spacing(exact.astype(np.float32)))


@pytest.mark.parametrize("apply", [rows.exp_array, rows.gelu_inplace_array], ids=["exp", "gelu"])
def test_float32_activations_do_not_depend_on_a_values_place(apply):
    """Whole SIMD vectors and the masked last values run the same instructions: a value's result is the same
    at every place of arrays of every length up to three vectors of AVX-512, and NaN stays NaN."""
    rng = np.random.default_rng(5)
    probes = np.concatenate([rng.normal(0, 4, 20), [-87.5, 88.5, 0.0, -0.0, 1e-30, 50.0, -50.0]]).astype(np.float32)
    alone = np.array([_applied(apply, np.array([value], np.float32))[0] for value in probes])
    for length in range(1, 49):
        for index in (0, length // 2, length - 1):
            array = np.full(length, np.nan, np.float32)
            for value, expected in zip(probes, alone):
                array[index] = value
                result = _applied(apply, array)
                assert result[index] == expected or np.isnan(result[index]) and np.isnan(expected)
                assert np.isnan(np.delete(result, index)).all()


def _applied(apply, array):
    array = array.copy()
    apply(array)
    return array


def test_simd_code_compiled_for_avx2_computes_the_same_bits(tmp_path):
    """The kernels written in explicit vectors (the float32 activations, the matrix product, the softmax gate,
    the transposes in tiles) compiled for an AVX2 CPU (8 float32 lanes, 6-row tiles) give the same bits as
    compiled for this one."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from numba import njit
        from rustml_nb.kernels import gemm, rows
        rng = np.random.default_rng(0)
        values = rng.normal(0, 5, 101).astype(np.float32)
        a, w, b = (rng.normal(size=shape).astype(np.float32) for shape in ((13, 37), (37, 45), (45,)))
        out, from_packed = np.empty((13, 45), np.float32), np.empty((13, 45), np.float32)
        gemm.matmul_bias(a, w, b, out)
        gemm.matmul_bias(a, gemm.pack_weight(w), b, from_packed)  # panels of 32 columns: 2 tiles wide on AVX2
        results = [out, np.array(njit(lambda array: gemm.tile_shape(array))(values)), from_packed]
        for apply in (rows.exp_array, rows.gelu_inplace_array):
            copy = values.copy()
            apply(copy)
            results.append(copy)
        for width in (8, 16, 37):  # the softmax gate: rows two to a vector, one, one at a time
            gated = rng.normal(0, 1, (9, width)).astype(np.float32)  # logits of spread ~1: totals of many terms
            gate_weight = (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
            gate_bias = np.zeros(width, np.float32)
            rows.gate_rows(rows.SoftmaxGate(), gated, gate_weight, gate_bias, np.empty_like(gated))
            results.append(gated)
        for a, b in ((8, 48), (48, 8), (32, 16)):  # transposes in 8 x 16, 16 x 8 and 16 x 16 tiles
            blocks = rng.normal(size=(2 * a, b)).astype(np.float32)
            transposed, added = np.empty((2 * b, a), np.float32), np.ones((2 * b, a), np.float32)
            rows.transpose_blocks(blocks, 2, transposed)
            rows.add_transposed_blocks(blocks, 2, added)
            results += [transposed, added]
        np.savez(sys.argv[1], *results)
    """)
    features = "+avx,+avx2,+fma,+sse4.2,+popcnt,+f16c,+bmi,+bmi2,-avx512f"
    outputs = {}
    for label, cpu in (("native", {}), ("avx2", {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": features})):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / f"cache_{label}"), **cpu}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / label)], env=env, check=True, timeout=600)
        outputs[label] = np.load(tmp_path / f"{label}.npz")
    assert list(outputs["avx2"]["arr_1"]) == [8, 6]  # the AVX2 build's lanes and tile rows; this CPU's may differ
    for name in ["arr_0"] + [f"arr_{k}" for k in range(2, 14)]:
        np.testing.assert_array_equal(outputs["avx2"][name], outputs["native"][name])
    np.testing.assert_array_equal(outputs["avx2"]["arr_2"], outputs["avx2"]["arr_0"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 7, 8, 16, 17, 32, 64])
def test_layer_norm_and_softmax_gate_match_torch(width, dtype, count=37, seed=3):
    """The row kernels the mixers run, against torch's own functions: LayerNorm (into another array and in
    place) and the gate values * softmax(values @ weight + bias), over rows of any width."""
    import torch

    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(count, width)) * 3 + 5).astype(dtype)
    gamma, beta = rng.normal(size=width).astype(dtype), rng.normal(size=width).astype(dtype)
    weight, bias = rng.normal(size=(width, width)).astype(dtype), rng.normal(size=width).astype(dtype)
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    expected = torch.nn.functional.layer_norm(torch.from_numpy(values), (width,), torch.from_numpy(gamma),
                                              torch.from_numpy(beta), 1e-5).numpy()
    unused = np.zeros(width, dtype)
    out = np.empty_like(values)
    rows.normalize(values, gamma, beta, unused, unused, 1e-5, rows.NORM_LAYER, out)
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance * 10)
    in_place = values.copy()
    rows.normalize(in_place, gamma, beta, unused, unused, 1e-5, rows.NORM_LAYER, in_place)
    np.testing.assert_array_equal(in_place, out)

    torch_values = torch.from_numpy(values)
    expected = (torch_values * torch.softmax(torch_values @ torch.from_numpy(weight) + torch.from_numpy(bias),
                                             dim=-1)).numpy()
    gated = values.copy()
    rows.gate_rows(rows.SoftmaxGate(), gated, weight, bias, np.empty_like(values))
    np.testing.assert_allclose(gated, expected, rtol=tolerance, atol=tolerance * np.abs(values).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 7, 12, 16, 30])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid", "glu", "group_sigmoid"])
def test_every_gate_mode_matches_granite_tsfm(mode, width, dtype, count=23, seed=4):
    """rows.gate of each of granite-tsfm's gate modes against its TinyTimeMixerGatedAttention, with group
    counts that divide the width and that do not (granite-tsfm then takes the largest that does); logits large
    enough to reach both tails of the sigmoid."""
    import types

    import torch

    from rustml_nb.models.tinytimemixer import REFERENCE
    from rustml_nb.parity import reference_module

    module = reference_module(REFERENCE)
    rng = np.random.default_rng(seed)
    for requested in (1, 4, 5, 8):
        reference = module.TinyTimeMixerGatedAttention(types.SimpleNamespace(gate_mode=mode, gate_groups=requested),
                                                       width, width).to(torch.float64 if dtype == np.float64 else
                                                                         torch.float32)
        assert rows.gate_groups(width, requested) == reference.groups
        outputs = reference.attn_layer.weight.shape[0]
        values = (rng.normal(size=(count, width)) * 4).astype(dtype)
        weight = (rng.normal(size=(width, outputs)) * 3).astype(dtype)
        bias = rng.normal(size=outputs).astype(dtype)
        with torch.no_grad():
            reference.attn_layer.weight.copy_(torch.from_numpy(weight.T.copy()))
            reference.attn_layer.bias.copy_(torch.from_numpy(bias))
            expected = reference(torch.from_numpy(values)).numpy()
        gated = values.copy()
        rows.gate_rows(rows.gate_kind(mode, requested), gated, weight, bias, np.empty((count, outputs), dtype))
        tolerance = 2e-6 if dtype == np.float32 else 1e-13
        # a GLU gate's output is a logit itself: its rounding is the product's, over |values| @ |weight|
        scale = (np.abs(values) @ np.abs(weight)).max() if mode == "glu" else np.abs(values).max()
        np.testing.assert_allclose(gated, expected, rtol=tolerance, atol=tolerance * scale)


def _attention_reference(qkv_t, qkv_bias, group_length, num_heads):
    """Softmax attention per group and head, in float64 NumPy, the way transformers writes it."""
    rows_by_feature = qkv_t.astype(np.float64) + qkv_bias.astype(np.float64)[:, None]  # [3 * d_model, rows]
    d_model = qkv_t.shape[0] // 3
    head_dim = d_model // num_heads
    groups = qkv_t.shape[1] // group_length

    def heads(which):  # -> [groups, heads, tokens, head_dim]
        part = rows_by_feature[which * d_model:(which + 1) * d_model].T
        return part.reshape(groups, group_length, num_heads, head_dim).transpose(0, 2, 1, 3)

    query, key, value = heads(0), heads(1), heads(2)
    scores = query @ key.transpose(0, 1, 3, 2) * head_dim**-0.5
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ value).transpose(0, 2, 1, 3).reshape(groups * group_length, d_model).T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("group_length", [1, 15, 16, 17, 42])
@pytest.mark.parametrize("head_dim", [1, 3, 8, 12, 16, 24])
def test_attention_matches_a_numpy_reference(head_dim, group_length, dtype, num_heads=3, groups=2, seed=7):
    """Every path of ``attend``: heads of exactly one feature block (their own compiled code), several
    blocks, a partial block, fewer features than a block; groups shorter, equal and longer than the
    query padding; with the projection bias that attend adds itself."""
    rng = np.random.default_rng(seed)
    d_model = head_dim * num_heads
    qkv_t = rng.normal(0, 2, (3 * d_model, groups * group_length)).astype(dtype)
    qkv_bias = rng.normal(0, 1, 3 * d_model).astype(dtype)
    context_t = np.full((d_model, groups * group_length), np.nan, dtype=dtype)
    attention.attend_rows(attention.heads_kind(head_dim), qkv_t, qkv_bias, group_length, num_heads, context_t)
    expected = _attention_reference(qkv_t, qkv_bias, group_length, num_heads)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(context_t, expected, rtol=tolerance, atol=tolerance)


@given(count=st.integers(1, 5), a=st.integers(1, 40), b=st.integers(1, 40), strided=st.booleans())
def test_transpose_blocks_transposes_every_block(count, a, b, strided):
    """Both loop orders (blocks of fewer than 16 rows, and of more), and a source whose rows are apart."""
    _check_block_transposes(count, a, b, strided, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strided", [False, True], ids=["rows_together", "rows_apart"])
@pytest.mark.parametrize("a, b", [(8, 16), (8, 192), (16, 8), (192, 8), (16, 16), (32, 48), (48, 32), (16, 96),
                                  (64, 16), (8, 8), (8, 24), (24, 16), (16, 40)])
def test_block_transposes_in_tiles(a, b, strided, dtype):
    """transpose_blocks and add_transposed_blocks where float32 goes in tiles (sides of 8 or multiples of 16:
    8 x 16, 16 x 8 and 16 x 16 tiles, a source whose rows of 8 are apart, which the 16 x 8 tile cannot take)
    and where it does not (sides of 24 or 40, 8 x 8 blocks, float64)."""
    _check_block_transposes(3, a, b, strided, dtype)


def _check_block_transposes(count, a, b, strided, dtype):
    source = np.arange(count * a * (2 * b if strided else b), dtype=dtype).reshape(count * a, -1)[:, :b]
    out = np.full((count * b, a), np.nan, dtype)
    rows.transpose_blocks(source, count, out)
    expected = source.reshape(count, a, b).transpose(0, 2, 1).reshape(count * b, a)
    np.testing.assert_array_equal(out, expected)
    residual = np.random.default_rng(a * b).normal(size=(count * b, a)).astype(dtype)
    out = residual.copy()
    rows.add_transposed_blocks(source, count, out)
    np.testing.assert_array_equal(out, residual + expected)


@pytest.mark.parametrize("width", [5, 8, 16, 37])
@pytest.mark.parametrize("packed", [False, True], ids=["weight", "packed_weight"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_gate_with_logits_beyond_exp_range(dtype, packed, width):
    """The softmax gate takes exponentials unshifted and takes a row again, shifted by its largest logit, when
    its total is out of range: rows whose logits all lie far above exp's range, far below it, straddle it, or
    sit at its edges, and a row with NaN, against torch, and each row the same as alone; with the weight as
    it is, or packed as the mixers' gates hold it (the row taken again reads it value by value), in one panel
    or several (37 columns: 2 panels of float32, 3 of float64); 8 and 16 columns: float32 rows taken two to a
    vector and one to a vector, rows in range beside rows out of it."""
    import torch

    rng = np.random.default_rng(11)
    # the logits are the values themselves, permuted: exact, and each column reads its own place of the weight
    weight = np.ascontiguousarray(np.eye(width, dtype=dtype)[:, rng.permutation(width)])
    bias = np.zeros(width, dtype)
    patterns = [rng.normal(size=width), 1000 + rng.normal(size=width) * 3, -1000 + rng.normal(size=width) * 3,
                [-2000, 5, 1000, 30, -80], [88.5, 87, 86, 80, 70], [-86, -87, -88, -90, -100],
                [-60, -45, -50, -200, -47], [1, np.nan, 2, 3, 4]]
    values = np.array([np.resize(np.asarray(row, float), width) for row in patterns]).astype(dtype)
    torch_values = torch.from_numpy(values)
    expected = (torch_values * torch.softmax(torch_values @ torch.from_numpy(weight), dim=-1)).numpy()
    weight = gemm.pack_weight(weight) if packed else weight
    gated = values.copy()
    rows.gate_rows(rows.SoftmaxGate(), gated, weight, bias, np.empty_like(values))
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    finite = np.isfinite(values).all(axis=1)
    bound = tolerance * np.abs(values[finite]).max(axis=1, keepdims=True)  # each row's own scale
    assert np.all(np.abs(gated[finite] - expected[finite]) <= bound), (gated, expected)
    assert np.isnan(gated[~finite]).all() and np.isnan(expected[~finite]).all()
    for r in range(len(values)):
        alone = values[r:r + 1].copy()
        rows.gate_rows(rows.SoftmaxGate(), alone, weight, bias, np.empty_like(alone))
        np.testing.assert_array_equal(alone[0], gated[r])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_gate_gives_a_row_the_same_result_wherever_it_lies(dtype):
    """A row gated among others, at every place of its vectors (two rows to a vector, one, or one at a time;
    the last vector part filled), is the same, bit for bit, as the row gated alone."""
    rng = np.random.default_rng(12)
    for width in [*range(1, 19), 31, 32, 33, 48]:
        weight, bias = rng.normal(size=(width, width)).astype(dtype), rng.normal(size=width).astype(dtype)
        for count in (1, 2, 3, 5):
            values = (rng.normal(size=(count, width)) * 3).astype(dtype)
            gated = values.copy()
            rows.gate_rows(rows.SoftmaxGate(), gated, weight, bias, np.empty_like(values))
            for r in range(count):
                alone = values[r:r + 1].copy()
                rows.gate_rows(rows.SoftmaxGate(), alone, weight, bias, np.empty_like(alone))
                np.testing.assert_array_equal(alone[0], gated[r], err_msg=f"width {width}, row {r} of {count}")


def test_float32_exp_saturates_at_the_ends_of_its_range():
    values = np.array([88.0, 89.0, 200.0, 1e30, -87.0, -88.0, -1e30], np.float32)
    rows.exp_array(values)
    assert np.all(values[:4] == values[0]) and np.isfinite(values[0]) and values[0] > 1e38
    assert np.all(values[4:] == values[4]) and 0 < values[4] < 2e-38
