"""Where transformers itself is broken, we implement the evident intent and check it against a
hand-written NumPy reference that starts from transformers' own encoder output.

1. Per-channel projection heads (``share_projection=False``): transformers' loop rebinds
   ``pooled_embedding`` on its first channel, so every configuration crashes.
2. A distribution prediction head with ``prediction_length == 1``: ``domain_map`` squeezes the horizon
   axis away and the following ``transpose(2, 1)`` fails.
If transformers fixes either, the ``*_crashes_in_transformers`` test fails and tells us to switch the
check to plain parity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rustml_nb
from reference import build_reference, realistic_series, run_reference, state_dict_numpy

BASE = dict(num_input_channels=3, context_length=16, patch_length=4, patch_stride=4, d_model=8,
            num_attention_heads=2, ffn_dim=8, num_hidden_layers=2)
VARIANTS = [
    dict(share_projection=False, pooling_type="mean", prediction_length=4),
    dict(share_projection=False, pooling_type=None, prediction_length=4),
    dict(share_projection=False, pooling_type="max", use_cls_token=True, prediction_length=2),
    dict(share_projection=False, loss="nll", distribution_output="student_t", pooling_type="mean", prediction_length=3),
    dict(share_projection=True, loss="nll", distribution_output="normal", prediction_length=1),
    dict(share_projection=False, loss="nll", distribution_output="negative_binomial", prediction_length=1),
]


def squareplus(x):
    return (x + np.sqrt(x * x + 4.0)) / 2.0


def numpy_prediction_head(hidden, state, config, loc, scale):
    """The head as transformers' PatchTSTPredictionHead means it: hidden [batch, channels, tokens, d_model]."""
    if config.use_cls_token:
        pooled = hidden[:, :, 0]
    elif config.pooling_type == "mean":
        pooled = hidden.mean(axis=2)
    elif config.pooling_type == "max":
        pooled = hidden.max(axis=2)
    else:
        pooled = hidden.reshape(*hidden.shape[:2], -1)
    params = {"student_t": 3, "normal": 2, "negative_binomial": 2}[config.distribution_output] if config.loss == "nll" else 0
    outputs = []
    for k in range(max(params, 1)):
        per_channel = []
        for c in range(config.num_input_channels):
            owner = "head.projection" if config.share_projection else f"head.projections.{c}"
            prefix = f"{owner}.proj.{k}" if params else owner
            per_channel.append(pooled[:, c] @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"])
        outputs.append(np.stack(per_channel, axis=-1))  # [batch, horizon, channels]
    if not params:
        return outputs[0] * scale + loc
    kind = config.distribution_output
    if kind == "student_t":
        return 2.0 + squareplus(outputs[0]), outputs[1], np.maximum(squareplus(outputs[2]), np.finfo(np.float64).eps)
    if kind == "normal":
        return outputs[0], np.maximum(squareplus(outputs[1]), np.finfo(np.float64).eps)
    return squareplus(outputs[0]), outputs[1]


def assert_same_outputs(a, b):
    """Equal but for rounding: BLAS may round a row differently when a GEMM has a different number of rows."""
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("variant", VARIANTS)
def test_broken_heads_crash_in_transformers(variant):
    reference = build_reference("PatchTSTForPrediction", seed=0, torch_dtype=torch.float64, **BASE, **variant)
    with pytest.raises((IndexError, RuntimeError, ValueError)):
        run_reference(reference, realistic_series(np.random.default_rng(0), 2, 16, 3))


@pytest.mark.parametrize("variant", VARIANTS)
def test_broken_heads_follow_the_evident_intent(variant):
    reference = build_reference("PatchTSTForPrediction", seed=1, torch_dtype=torch.float64, **BASE, **variant)
    state = state_dict_numpy(reference)
    config = rustml_nb.PatchTSTConfig.from_dict(reference.config.to_dict())
    model = rustml_nb.PatchTSTForPrediction.from_hub_weights(config, state, dtype="float64")
    values = realistic_series(np.random.default_rng(2), 3, 16, 3)
    encoder = run_reference(reference.model, values)  # transformers' own encoder: only the head is broken
    expected = numpy_prediction_head(encoder.last_hidden_state.numpy(), state, config,
                                     encoder.loc.numpy(), encoder.scale.numpy())
    before = rustml_nb.get_num_threads()
    try:  # each thread runs the head on its share of the series, which need not start at a channel 0
        rustml_nb.set_num_threads(2)
        ours = model(values).prediction_outputs
        rustml_nb.set_num_threads(4)
        assert_same_outputs(model(values).prediction_outputs, ours)
    finally:
        rustml_nb.set_num_threads(before)
    if isinstance(expected, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(expected)
        for a, b in zip(ours, expected):
            assert a.shape == (3, config.prediction_length, 3)
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    else:
        assert ours.shape == (3, config.prediction_length, 3)
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-10)
