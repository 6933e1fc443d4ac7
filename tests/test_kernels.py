"""Properties of the compiled kernels themselves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import given, strategies as st

import rustml_nb
from rustml_nb import demo, kernels


def test_the_forward_pass_is_cached_on_disk():
    """cache=True is silently dropped when a kernel touches a "dynamic global" (numba.get_num_threads()
    inside compiled code did that once): users would then compile for ~45 s in every process."""
    for dtype in ("float32", "float64"):
        model = rustml_nb.from_pretrained(demo.MODEL_PATH, dtype=dtype)
        model(np.zeros((1, model.config.context_length, model.config.num_input_channels), dtype))
    index = Path(kernels.patchtst_forward._cache._cache_file._index_path)
    assert index.is_file(), f"no Numba cache index at {index}"


@given(st.lists(st.floats(-87.0, 0.0, width=32), min_size=1, max_size=200))
def test_float32_exp_is_within_an_ulp(values):
    array = np.array(values, dtype=np.float32)
    ours = array.copy()
    kernels.exp_inplace_array(ours)
    exact = np.exp(array.astype(np.float64))
    assert np.all(np.abs(ours - exact) <= 1.5 * np.spacing(exact.astype(np.float32)))


@given(st.lists(st.floats(-12.0, 12.0, width=32), min_size=1, max_size=200))
def test_float32_gelu_matches_the_exact_erf_form(values):
    array = np.array(values, dtype=np.float32)
    ours = array.copy()
    kernels.gelu_inplace_array(ours)
    exact = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in array.astype(np.float64)])
    assert np.all(np.abs(ours - exact) <= 3e-7 * np.maximum(np.abs(array), 1) + np.spacing(np.float32(np.abs(exact))))
