"""PatchTST's compiled encoder: ``encode_units`` runs the embedding and every layer over one thread's share
of the series, calling the shared kernels directly. The arithmetic follows transformers'
``modeling_patchtst.py`` step by step."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...jit import kernel
from ...kernels.attention import attend
from ...kernels.gemm import matmul
from ...kernels.rows import (POOL_MEAN, add_bias_activate, add_bias_residual, copy_rows, normalize, pool_tokens,
                             swap_blocks, transpose_blocks)
from ...kernels.series import mask_patches, scale_and_patchify

# Which of a layer's three norms: attention over time, attention over channels, feed-forward.
NORM_ATTENTION, NORM_CHANNEL_ATTENTION, NORM_FF = 0, 1, 2


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
    matmul(patches, weights.embedding_weight[e], rows[offset:])
    for p in range(offset, rows.shape[0]):
        row, position = rows[p], positions[p]
        for d in range(row.size):
            row[d] = row[d] + bias[d] + position[d]


@kernel
def first_qkv_from_patches(patches, weights, qkv_t):
    """Layer 0's QKV projection (before its bias) straight from the patches [series, tokens, patch_length]
    of a block -> qkv_t [3 * d_model, series * tokens]; see layers.fold_embedding_into_first_qkv."""
    series, tokens, patch_length = patches.shape
    patches_t = np.empty((patch_length, series * tokens), dtype=qkv_t.dtype)
    transpose_blocks(patches.reshape(series * tokens, patch_length), 1, patches_t)
    matmul(weights.patch_qkv_weight[0].T, patches_t, qkv_t)
    offset_t = weights.position_qkv_t[0]  # [3 * d_model, tokens]
    for f in range(qkv_t.shape[0]):
        row, offset = qkv_t[f], offset_t[f]
        for s in range(series):
            for t in range(tokens):
                row[s * tokens + t] += offset[t]


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
    series_count, num_patches = patches.shape[0], patches.shape[1]
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
            mask_patches(patch_mask, b, c, switches.mask_value, patch_input[series], patches[series])
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
                    # [3 * d_model, rows] = (x W)^T, with context_t (free until attend fills it) holding x^T
                    transpose_blocks(source, 1, context_t)
                    matmul(weights.qkv_weight[layer].T, context_t, qkv_t)
                attend(heads, qkv_t, weights.qkv_bias[layer], tokens if sweep == 0 else channels,
                       switches.num_heads, context_t)
                matmul(context_t.T, weights.out_weight[layer], projected)
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
            matmul(source, weights.ff1_weight[layer], hidden)
            add_bias_activate(hidden, weights.ff1_bias[layer], switches.activation)
            if switches.pool_last_feed_forward and layer == num_layers - 1:
                means = pooled[s0:s1]
                hidden_means = np.empty((s1 - s0, ffn_dim), dtype=stream.dtype)
                # (the switch implies mean pooling and no cls token; passing constants would compile a copy)
                pool_tokens(hidden, tokens, switches.pooling, switches.use_cls_token, hidden_means)
                pool_tokens(block, tokens, switches.pooling, switches.use_cls_token, means)
                mean_projected = np.empty((s1 - s0, d_model), dtype=stream.dtype)
                matmul(hidden_means, weights.ff2_weight[layer], mean_projected)
                add_bias_residual(means, mean_projected, weights.ff2_bias[layer])
                if not pre_norm:  # a BatchNorm: see Switches
                    normalize(means, gamma, beta, mean, variance, eps, norm_type, means)
            else:
                matmul(hidden, weights.ff2_weight[layer], projected)
                add_bias_residual(block, projected, weights.ff2_bias[layer])
                if not pre_norm:
                    normalize(block, gamma, beta, mean, variance, eps, norm_type, block)
        if pooled.shape[0] and not switches.pool_last_feed_forward:
            pool_tokens(block, tokens, switches.pooling, switches.use_cls_token, pooled[s0:s1])
