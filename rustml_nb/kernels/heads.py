"""Output heads: forecasts (point or distribution parameters), per-patch reconstructions, and one Linear
over every channel's pooled rows (classification and regression)."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..jit import kernel
from .gemm import matmul

DIST_NONE, DIST_STUDENT_T, DIST_NORMAL, DIST_NEGATIVE_BINOMIAL = 0, 1, 2, 3


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
def prediction_head(features, first_series, loc, scale, weight, bias, distribution, dtype_eps, out):
    """features [count, width]: the pooled rows, or each series' rows flattened, of series first_series ..
    first_series + count - 1 (series = batch element x channels + channel) -> their entries of out [batch,
    parameters, horizon, channels]: a point forecast in data units (x scale + loc), or the distribution's
    parameters (not rescaled, as transformers returns them). weight [1 or channels, parameters, width,
    horizon], bias [1 or channels, parameters, horizon]; loc, scale [batch, 1, channels]. A weight shared by
    every channel is one GEMM over all the rows; per-channel weights one GEMM per channel's rows."""
    channels = loc.shape[2]
    count = features.shape[0]
    num_params, width, horizon = weight.shape[1], weight.shape[2], weight.shape[3]
    shared = weight.shape[0] == 1
    gathered = np.empty((0 if shared else count, width), dtype=features.dtype)
    projected = np.empty((count, horizon), dtype=features.dtype)
    for h in range(1 if shared else channels):
        rows = features
        if not shared:  # this channel's rows
            n = 0
            for r in range(count):
                if (first_series + r) % channels == h:
                    source, target = features[r], gathered[n]
                    for i in range(width):
                        target[i] = source[i]
                    n += 1
            rows = gathered[:n]
        for k in range(num_params):
            matmul(rows, weight[h, k], projected[:rows.shape[0]])
            m = 0
            for r in range(count):
                series = first_series + r
                b, c = series // channels, series % channels
                if not shared and c != h:
                    continue
                for t in range(horizon):
                    value = projected[m, t] + bias[h, k, t]
                    if distribution == DIST_NONE:
                        out[b, k, t, c] = value * scale[b, 0, c] + loc[b, 0, c]
                    else:
                        out[b, k, t, c] = _to_domain(value, k, distribution, dtype_eps)
                m += 1


@kernel
def pretraining_head(stream, tokens, use_cls_token, weight, bias, out):
    """stream [series * tokens, d_model] -> out [series, patches, patch_length]: each patch's row through the
    Linear weight [d_model, patch_length] + bias (the cls token's row is dropped)."""
    offset = 1 if use_cls_token else 0
    series, patches, patch_length = out.shape
    projected = np.empty((tokens, patch_length), dtype=stream.dtype)
    for s in range(series):
        matmul(stream[s * tokens:(s + 1) * tokens], weight, projected)
        for p in range(patches):
            for i in range(patch_length):
                out[s, p, i] = projected[p + offset, i] + bias[i]


@kernel
def pooled_head(features, weight, bias, distribution, dtype_eps, has_output_range, output_low, output_high, out):
    """features [batch, channels * d_model] -> out [batch, parameters, targets]: classification logits, or a
    regression's values (squashed into the output range when there is one) or distribution parameters.
    weight [parameters, channels * d_model, targets], bias [parameters, targets]."""
    batch = features.shape[0]
    num_params, targets = weight.shape[0], weight.shape[2]
    projected = np.empty((batch, targets), dtype=features.dtype)
    span = output_high - output_low
    for k in range(num_params):
        matmul(features, weight[k], projected)
        for b in range(batch):
            for t in range(targets):
                value = projected[b, t] + bias[k, t]
                if distribution != DIST_NONE:
                    out[b, k, t] = _to_domain(value, k, distribution, dtype_eps)
                elif has_output_range:
                    out[b, k, t] = 1.0 / (1.0 + np.exp(-value)) * span + output_low
                else:
                    out[b, k, t] = value
