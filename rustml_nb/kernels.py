"""Kernels: the arithmetic of PatchTST as ``@njit(cache=True)`` functions over contiguous arrays.

``patchtst_forward`` is the one compiled entry point: a whole forward pass, from raw values to the
head's output, in one call. Hidden states are kept as rows ``[series * tokens, d_model]`` (series =
batch x channels), so every Linear is a single BLAS product over all rows. Config switches arrive as
plain numbers in ``Switches`` and are read at run time: one compilation serves every checkpoint of a
dtype. The arithmetic follows transformers' ``modeling_patchtst.py`` step by step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

# Switch values (plain ints inside compiled code).
SCALING_NONE, SCALING_MEAN, SCALING_STD = 0, 1, 2
NORM_BATCH, NORM_LAYER = 0, 1
ACT_GELU, ACT_RELU = 0, 1
POOL_NONE, POOL_MEAN, POOL_MAX = 0, 1, 2
HEAD_NONE, HEAD_PREDICTION, HEAD_PRETRAINING, HEAD_CLASSIFICATION, HEAD_REGRESSION = 0, 1, 2, 3, 4
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


# --------------------------------------------------------------------------------------------------
# Scaling and patching
# --------------------------------------------------------------------------------------------------
@njit(cache=True)
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


@njit(cache=True)
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
# Transformer pieces, over rows [rows, d_model]
# --------------------------------------------------------------------------------------------------
@njit(cache=True)
def normalize(rows, weights, layer, which, switches):
    """BatchNorm (running statistics) or LayerNorm over d_model; rows: [rows, d_model] -> new array."""
    out = np.empty_like(rows)
    n, d_model = rows.shape
    gamma = weights.norm_weight[layer, which]
    beta = weights.norm_bias[layer, which]
    if switches.norm_type == NORM_BATCH:
        mean = weights.norm_mean[layer, which]
        inv_std = 1.0 / np.sqrt(weights.norm_var[layer, which] + switches.norm_eps)
        for r in range(n):
            for d in range(d_model):
                out[r, d] = (rows[r, d] - mean[d]) * inv_std[d] * gamma[d] + beta[d]
    else:
        for r in range(n):
            mean = 0.0
            for d in range(d_model):
                mean += rows[r, d]
            mean /= d_model
            variance = 0.0
            for d in range(d_model):
                variance += (rows[r, d] - mean) ** 2
            variance /= d_model
            inv_std = 1.0 / math.sqrt(variance + switches.norm_eps)
            for d in range(d_model):
                out[r, d] = (rows[r, d] - mean) * inv_std * gamma[d] + beta[d]
    return out


@njit(cache=True)
def multi_head_attention(rows, group_length, weights, layer, num_heads):
    """Self-attention within consecutive groups of ``group_length`` rows.

    rows: [groups * group_length, d_model] -> [groups * group_length, d_model]
    """
    n, d_model = rows.shape
    head_dim = d_model // num_heads
    scaling = head_dim ** -0.5
    qkv = rows @ weights.qkv_weight[layer] + weights.qkv_bias[layer]  # [rows, 3 * d_model]
    context = np.empty_like(rows)
    probabilities = np.empty(group_length, dtype=rows.dtype)
    for g in range(n // group_length):
        first = g * group_length
        for h in range(num_heads):
            q0 = h * head_dim
            k0 = d_model + q0
            v0 = 2 * d_model + q0
            for i in range(group_length):
                largest = -np.inf
                for j in range(group_length):
                    score = 0.0
                    for d in range(head_dim):
                        score += qkv[first + i, q0 + d] * qkv[first + j, k0 + d]
                    probabilities[j] = score * scaling
                    largest = max(largest, probabilities[j])
                total = 0.0
                for j in range(group_length):
                    probabilities[j] = np.exp(probabilities[j] - largest)
                    total += probabilities[j]
                for j in range(group_length):
                    probabilities[j] /= total
                for d in range(head_dim):
                    acc = 0.0
                    for j in range(group_length):
                        acc += probabilities[j] * qkv[first + j, v0 + d]
                    context[first + i, q0 + d] = acc
    return context @ weights.out_weight[layer] + weights.out_bias[layer]


@njit(cache=True)
def feed_forward(rows, weights, layer, activation):
    """Linear -> GELU (exact, erf) or ReLU -> Linear; rows: [rows, d_model] -> [rows, d_model]."""
    hidden = rows @ weights.ff1_weight[layer] + weights.ff1_bias[layer]  # [rows, ffn_dim]
    flat = hidden.ravel()
    if activation == ACT_GELU:
        for i in range(flat.size):
            flat[i] = 0.5 * flat[i] * (1.0 + math.erf(flat[i] * 0.7071067811865476))
    else:
        for i in range(flat.size):
            flat[i] = max(flat[i], 0.0)
    return hidden @ weights.ff2_weight[layer] + weights.ff2_bias[layer]


@njit(cache=True)
def attention_sublayer(rows, group_length, weights, layer, which, switches):
    """Residual attention with pre- or post-norm; rows: [groups * group_length, d_model]."""
    if switches.pre_norm:
        return rows + multi_head_attention(normalize(rows, weights, layer, which, switches), group_length,
                                           weights, layer, switches.num_heads)
    attended = multi_head_attention(rows, group_length, weights, layer, switches.num_heads)
    return normalize(rows + attended, weights, layer, which, switches)


@njit(cache=True)
def swap_channels_and_tokens(rows, batch, first, second):
    """[batch, first, second, d_model] rows -> [batch, second, first, d_model] rows."""
    d_model = rows.shape[1]
    out = np.empty_like(rows)
    for b in range(batch):
        for i in range(first):
            for j in range(second):
                out[(b * second + j) * first + i] = rows[(b * first + i) * second + j]
    return out


@njit(cache=True)
def encoder_layer(rows, batch, channels, tokens, weights, layer, switches):
    """One PatchTSTEncoderLayer; rows: [batch * channels * tokens, d_model]."""
    rows = attention_sublayer(rows, tokens, weights, layer, NORM_ATTENTION, switches)
    if switches.channel_attention:
        by_token = swap_channels_and_tokens(rows, batch, channels, tokens)  # [batch, tokens, channels, d_model]
        by_token = attention_sublayer(by_token, channels, weights, layer, NORM_CHANNEL_ATTENTION, switches)
        rows = swap_channels_and_tokens(by_token, batch, tokens, channels)
    if switches.pre_norm:
        return rows + feed_forward(normalize(rows, weights, layer, NORM_FF, switches), weights, layer,
                                   switches.activation)
    return normalize(rows + feed_forward(rows, weights, layer, switches.activation), weights, layer, NORM_FF,
                     switches)


@njit(cache=True)
def embed(patches, weights, switches):
    """[batch, channels, patches, patch_length] -> rows [batch * channels * tokens, d_model] with positions
    added, the cls token (when used) first in each series."""
    batch, channels, num_patches, patch_length = patches.shape
    d_model = weights.embedding_weight.shape[2]
    offset = 1 if switches.use_cls_token else 0
    tokens = num_patches + offset
    rows = np.empty((batch * channels * tokens, d_model), dtype=patches.dtype)
    shared = weights.embedding_weight.shape[0] == 1
    for c in range(channels):
        e = 0 if shared else c
        flat = np.ascontiguousarray(patches[:, c]).reshape(batch * num_patches, patch_length)
        embedded = flat @ weights.embedding_weight[e] + weights.embedding_bias[e]  # [batch * patches, d_model]
        for b in range(batch):
            series = (b * channels + c) * tokens
            if offset:
                rows[series] = weights.cls_token + weights.positional_encoding[0]
            for p in range(num_patches):
                rows[series + offset + p] = embedded[b * num_patches + p] + weights.positional_encoding[offset + p]
    return rows, tokens


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------
@njit(cache=True)
def squareplus(x):
    return (x + np.sqrt(x * x + 4.0)) / 2.0


@njit(cache=True)
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


@njit(cache=True)
def pool(hidden, switches):
    """[batch, channels, tokens, d_model] -> [batch, channels, width]: cls token, mean, max or flatten."""
    batch, channels, tokens, d_model = hidden.shape
    if switches.use_cls_token:
        return np.ascontiguousarray(hidden[:, :, 0, :])
    if switches.pooling == POOL_MEAN:
        pooled = np.zeros((batch, channels, d_model), dtype=hidden.dtype)
        for t in range(tokens):
            pooled += hidden[:, :, t, :]
        pooled /= tokens
        return pooled
    if switches.pooling == POOL_MAX:
        pooled = hidden[:, :, 0, :].copy()
        for t in range(1, tokens):
            pooled = np.maximum(pooled, hidden[:, :, t, :])
        return pooled
    return hidden.copy().reshape(batch, channels, tokens * d_model)


@njit(cache=True)
def apply_head(hidden, loc, scale, weights, switches):
    """hidden: [batch, channels, tokens, d_model] -> the head's output as a 4-D array:

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
        pooled = pool(hidden, switches)  # [batch, channels, width]
        num_params, horizon = head.weight.shape[1], head.weight.shape[3]
        out = np.empty((num_params, batch, horizon, channels), dtype=hidden.dtype)
        shared = head.weight.shape[0] == 1
        for k in range(num_params):
            for c in range(channels):
                h = 0 if shared else c
                values = np.ascontiguousarray(pooled[:, c, :]) @ head.weight[h, k] + head.bias[h, k]  # [batch, horizon]
                if switches.distribution != DIST_NONE:
                    distribution_domain_map(values, k, switches)
                else:
                    for b in range(batch):
                        values[b] = values[b] * scale[b, 0, c] + loc[b, 0, c]
                out[k, :, :, c] = values
        return out
    if switches.head == HEAD_CLASSIFICATION or switches.head == HEAD_REGRESSION:
        pooled = pool(hidden, switches).reshape(batch, channels * d_model)
        num_params, targets = head.weight.shape[1], head.weight.shape[3]
        out = np.empty((num_params, 1, batch, targets), dtype=hidden.dtype)
        for k in range(num_params):
            values = pooled @ head.weight[0, k] + head.bias[0, k]  # [batch, targets]
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
@njit(cache=True)
def patchtst_forward(values, observed, patch_mask, weights, switches, keep_hidden_states):
    """One PatchTST forward pass.

    values, observed: [batch, time, channels] (observed is 1.0/0.0 in the dtype);
    patch_mask: [batch, channels, patches] bool, or [0, 0, 0] for none (pretraining's masked patches).
    Returns last_hidden_state [batch, channels, tokens, d_model], loc and scale [batch, 1, channels],
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
    rows, tokens = embed(patches, encoder, switches)
    num_layers = encoder.qkv_weight.shape[0]
    d_model = rows.shape[1]
    kept = num_layers if keep_hidden_states else 0
    hidden_states = np.empty((kept, batch, channels, tokens, d_model), dtype=values.dtype)
    for layer in range(num_layers):
        if keep_hidden_states:
            hidden_states[layer] = rows.reshape(batch, channels, tokens, d_model)
        rows = encoder_layer(rows, batch, channels, tokens, encoder, layer, switches)
    hidden = rows.reshape(batch, channels, tokens, d_model)
    head_output = apply_head(hidden, loc, scale, weights, switches)
    return hidden, loc, scale, patch_input, head_output, hidden_states
