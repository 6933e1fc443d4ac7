"""PatchTSMixer's compiled encoder: ``encode_units`` runs patching, the embedding and every mixer layer over
one thread's share of the series, calling the shared kernels directly; and the two steps of the
classification and regression heads that no other family has (scale injection, aggregation over patches).
The arithmetic follows transformers' ``modeling_patchtsmixer.py`` step by step.

A layer mixes three ways, each a residual block ``x + MLP(norm(x))`` over rows of a different layout: across
channels (``mix_channel`` mode; each batch element's [channels, patches * d_model] block transposed, so rows
hold one value per channel), across patches (each series' [patches, d_model] transposed, rows of one feature
over all patches) and across features (the stream itself, [patches, d_model] per series). A gated block
multiplies by softmax(x W + b) over the row: before the MLP across channels, after it otherwise. The three
run through one loop body, so each shared kernel has one call site and one compiled copy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...jit import kernel
from ...kernels.attention import attend
from ...kernels.rows import (ACT_GELU, POOL_MAX, POOL_MEAN, add_bias_activate, add_bias_residual,
                             add_transposed_blocks, copy_rows, normalize, softmax_gate, transpose_blocks)
from ...kernels.series import scale_and_patchify

CHANNEL_MIXER, PATCH_MIXER, FEATURE_MIXER = 0, 1, 2
AGGREGATE_NONE, AGGREGATE_LAST = -1, 3  # besides rows.POOL_MEAN (avg_pool) and rows.POOL_MAX (max_pool)
# Rows (series x patches) per block: the mixer's matrices are narrow (d_model 8-64), so blocks are larger than
# PatchTST's to give each GEMM more rows; a block's working set stays within a core's L2.
BLOCK_ROWS = 2048


class Switches(NamedTuple):
    scaling: int
    norm_type: int
    norm_eps: float
    mix_channel: bool
    gated: bool
    self_attn: bool
    num_heads: int
    patch_stride: int
    mask_value: float


class Workspace(NamedTuple):
    """One thread's scratch for ``encode_units``, flat, room for a block of ``block_rows`` rows."""

    normed: np.ndarray  # block_rows * d_model
    flipped: np.ndarray  # block_rows * d_model: a block transposed for mixing across patches or channels
    hidden: np.ndarray  # block_rows * d_model * expansion
    mixed: np.ndarray  # block_rows * d_model
    logits: np.ndarray  # block_rows * d_model: the gate's
    back: np.ndarray  # block_rows * d_model: mixed, transposed back
    attended: np.ndarray  # block_rows * d_model, or 0 without self-attention
    qkv_t: np.ndarray  # 3 * d_model * block_rows, or 0
    context_t: np.ndarray  # d_model * block_rows, or 0


def make_workspace(block_rows, d_model, expansion, self_attn, dtype) -> Workspace:
    rows = block_rows * d_model
    attention = rows if self_attn else 0
    return Workspace(*(np.empty(size, dtype) for size in (rows, rows, rows * expansion, rows, rows, rows, attention,
                                                          3 * attention, attention)))


@kernel
def embed_patches(patches, weights, rows):
    """patches [series, num_patches, patch_length] -> rows [series * num_patches, d_model]: the patcher Linear,
    then the positions (when the model has them)."""
    series, num_patches, patch_length = patches.shape
    np.dot(patches.reshape(series * num_patches, patch_length), weights.patcher_weight, rows)
    bias, positions = weights.patcher_bias, weights.positional_encoding
    for r in range(rows.shape[0]):
        row = rows[r]
        for d in range(row.size):
            row[d] += bias[d]
        if positions.shape[0]:
            position = positions[r % num_patches]
            for d in range(row.size):
                row[d] += position[d]


@kernel
def mix(x, blocks, layer, gated, gate_first, hidden, logits, out):
    """out = MLP(x) over rows x [rows, width]: Linear -> GELU (exact) -> Linear, gated before (gate_first,
    changing x) or after. hidden: [rows, width * expansion], logits: [rows, width]."""
    if gated and gate_first:
        softmax_gate(x, blocks.gate_weight[layer], blocks.gate_bias[layer], logits)
    np.dot(x, blocks.fc1_weight[layer], hidden)
    add_bias_activate(hidden, blocks.fc1_bias[layer], ACT_GELU)
    np.dot(hidden, blocks.fc2_weight[layer], out)
    fc2_bias = blocks.fc2_bias[layer]
    for r in range(out.shape[0]):
        row = out[r]
        for c in range(row.size):
            row[c] += fc2_bias[c]
    if gated and not gate_first:
        softmax_gate(out, blocks.gate_weight[layer], blocks.gate_bias[layer], logits)


@kernel
def encode_units(values, observed, default_scale, patch_mask, first_unit, last_unit, weights, switches, heads, work,
                 loc, scale, patch_input, patches, stream, hidden_states):
    """The encoder over units first_unit .. last_unit - 1 of the series, on the calling thread.

    values, observed: [batch, time, channels] -> loc, scale [batch, 1, channels] and patch_input [series,
    num_patches, patch_length] (series = batch x channels, channels fastest); patches: patch_input with the
    patches patch_mask [batch, channels, num_patches] marks set to ``switches.mask_value`` (when the mask is
    not [0, 0, 0]; otherwise patches is patch_input); then stream [series * num_patches, d_model], the
    embedding and every layer; hidden_states [layers or 0, series * num_patches, d_model] receives each
    layer's output. A unit is what mixes only within itself: a series, or across channels a batch element.
    work: this thread's ``Workspace``; heads: the self-attention's ``HeadsOfEight()`` or ``AnyHeads()``.
    """
    series_count, num_patches, patch_length = patches.shape
    channels = values.shape[2]
    d_model = stream.shape[1]
    expansion = work.hidden.size // work.normed.size
    block_rows = work.normed.size // d_model
    unit_series = channels if switches.mix_channel else 1
    units_per_block = max(block_rows // (unit_series * num_patches), 1)
    num_layers = weights.patch.fc1_weight.shape[0]
    eps, norm_type = switches.norm_eps, switches.norm_type
    for first in range(first_unit, last_unit, units_per_block):
        s0 = first * unit_series
        s1 = min(first + units_per_block, last_unit) * unit_series
        count = s1 - s0
        rows = count * num_patches
        size = rows * d_model
        block = stream[s0 * num_patches:s1 * num_patches]  # [rows, d_model]
        normed = work.normed[:size].reshape(rows, d_model)
        for series in range(s0, s1):
            b, c = series // channels, series % channels
            scale_and_patchify(values, observed, b, c, switches.scaling, default_scale, switches.patch_stride, loc,
                               scale, patch_input[series])
            if patch_mask.shape[0]:
                for p in range(num_patches):
                    for i in range(patch_length):
                        patches[series, p, i] = switches.mask_value if patch_mask[b, c, p] else patch_input[series, p, i]
        embed_patches(patches[s0:s1], weights, block)
        for layer in range(num_layers):
            for kind in range(CHANNEL_MIXER if switches.mix_channel else PATCH_MIXER, FEATURE_MIXER + 1):
                blocks = weights.channel if kind == CHANNEL_MIXER else (
                    weights.patch if kind == PATCH_MIXER else weights.feature)
                normalize(block, blocks.norm_weight[layer], blocks.norm_bias[layer], blocks.norm_mean[layer],
                          blocks.norm_var[layer], eps, norm_type, normed)
                attention = switches.self_attn and kind == PATCH_MIXER
                attended = work.attended[:size].reshape(rows, d_model) if attention else normed
                if attention:  # self-attention across patches, on the normed rows
                    qkv_t = work.qkv_t[:3 * size].reshape(3 * d_model, rows)
                    context_t = work.context_t[:size].reshape(d_model, rows)
                    np.dot(weights.qkv_weight[layer].T, normed.T, qkv_t)
                    attend(heads, qkv_t, weights.qkv_bias[layer], num_patches, switches.num_heads, context_t)
                    np.dot(context_t.T, weights.out_weight[layer], attended)
                    out_bias = weights.out_bias[layer]
                    for r in range(rows):
                        for d in range(d_model):
                            attended[r, d] += out_bias[d]
                # rows of what this block mixes: [count_a * a, b] -> [count_a * b, a]
                groups = count // channels if kind == CHANNEL_MIXER else count
                across = channels if kind == CHANNEL_MIXER else num_patches
                along = num_patches * d_model if kind == CHANNEL_MIXER else d_model
                x = normed
                if kind != FEATURE_MIXER:
                    x = work.flipped[:size].reshape(groups * along, across)
                    transpose_blocks(normed.reshape(groups * across, along), groups, x)
                width = x.shape[1]
                mixed = work.mixed[:size].reshape(x.shape[0], width)
                mix(x, blocks, layer, switches.gated, kind == CHANNEL_MIXER, work.hidden[:size * expansion].reshape(
                    x.shape[0], width * expansion), work.logits[:size].reshape(x.shape[0], width), mixed)
                if kind != FEATURE_MIXER and not attention:  # the residual, straight from the mixed layout
                    add_transposed_blocks(mixed, groups, block.reshape(groups * across, along))
                    continue
                result = mixed
                if kind != FEATURE_MIXER:
                    result = work.back[:size].reshape(groups * across, along)
                    transpose_blocks(mixed, groups, result)
                    result = result.reshape(rows, d_model)
                if attention:
                    for r in range(rows):
                        for d in range(d_model):
                            result[r, d] += attended[r, d]
                    norms = weights.attention_norm
                    normalize(result, norms.norm_weight[layer], norms.norm_bias[layer], norms.norm_mean[layer],
                              norms.norm_var[layer], eps, norm_type, result)
                for r in range(rows):
                    row, other = block[r], result[r]
                    for d in range(d_model):
                        row[d] += other[d]
            if hidden_states.shape[0]:
                copy_rows(block, hidden_states[layer, s0 * num_patches:s1 * num_patches])


@kernel
def inject_scale(stream, loc, scale, channels, num_patches, expand_stats, compress_stats, expand, compress, out):
    """transformers' InjectScalerStatistics4D: each series' (loc, scale) through two Linears (2 -> 4 -> 2),
    appended to every row, and the rows through two more (d_model + 2 -> 2 d_model -> d_model), no activation.
    stream, out: [series * num_patches, d_model]; loc, scale: [batch, 1, channels]; each Linear (weight
    [in, out], bias [out])."""
    d_model = stream.shape[1]
    series = stream.shape[0] // num_patches
    rows = np.empty((num_patches, d_model + 2), dtype=stream.dtype)
    stats = np.empty((1, 2), dtype=stream.dtype)
    middle = np.empty((1, expand_stats[0].shape[1]), dtype=stream.dtype)
    mapped = np.empty((1, 2), dtype=stream.dtype)
    widened = np.empty((num_patches, expand[0].shape[1]), dtype=stream.dtype)
    for s in range(series):
        b, c = s // channels, s % channels
        stats[0, 0], stats[0, 1] = loc[b, 0, c], scale[b, 0, c]
        np.dot(stats, expand_stats[0], middle)
        for i in range(middle.shape[1]):
            middle[0, i] += expand_stats[1][i]
        np.dot(middle, compress_stats[0], mapped)
        for p in range(num_patches):
            source, row = stream[s * num_patches + p], rows[p]
            for d in range(d_model):
                row[d] = source[d]
            row[d_model] = mapped[0, 0] + compress_stats[1][0]
            row[d_model + 1] = mapped[0, 1] + compress_stats[1][1]
        np.dot(rows, expand[0], widened)
        for p in range(num_patches):
            for i in range(widened.shape[1]):
                widened[p, i] += expand[1][i]
        target = out[s * num_patches:(s + 1) * num_patches]
        np.dot(widened, compress[0], target)
        for p in range(num_patches):
            for d in range(d_model):
                target[p, d] += compress[1][d]


@kernel
def aggregate_patches(stream, num_patches, mode, out):
    """Each series' rows [num_patches, d_model] of stream -> out [series, width], as PatchTSMixerLinearHead:
    the last patch (``AGGREGATE_LAST``), the maximum or the mean over patches (rows.POOL_MAX / POOL_MEAN), or
    (``AGGREGATE_NONE``) every value, ordered feature by feature ([d_model, num_patches] flattened)."""
    d_model = stream.shape[1]
    for s in range(out.shape[0]):
        rows, target = stream[s * num_patches:(s + 1) * num_patches], out[s]
        if mode == AGGREGATE_NONE:
            for d in range(d_model):
                for p in range(num_patches):
                    target[d * num_patches + p] = rows[p, d]
            continue
        first = rows[num_patches - 1] if mode == AGGREGATE_LAST else rows[0]
        for d in range(d_model):
            target[d] = first[d]
        if mode == AGGREGATE_LAST:
            continue
        for p in range(1, num_patches):
            row = rows[p]
            if mode == POOL_MAX:
                for d in range(d_model):
                    target[d] = max(target[d], row[d])
            else:
                for d in range(d_model):
                    target[d] += row[d]
        if mode == POOL_MEAN:
            for d in range(d_model):
                target[d] /= num_patches
