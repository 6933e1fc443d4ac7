"""PatchTSMixer's compiled encoder: ``encode_units`` runs patching, the embedding and every mixer layer
(``kernels.mixer.mixer_layers``, shared with TinyTimeMixer) over one thread's share of the series; and the two
steps of the classification and regression heads that no other family has (scale injection, aggregation over
patches). The arithmetic follows transformers' ``modeling_patchtsmixer.py`` step by step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...jit import kernel
from ...kernels.gemm import matmul
from ...kernels.mixer import MixerSwitches, mixer_layers
from ...kernels.rows import POOL_MAX, POOL_MEAN
from ...kernels.series import mask_patches, scale_and_patchify

AGGREGATE_NONE, AGGREGATE_LAST = -1, 3  # besides rows.POOL_MEAN (avg_pool) and rows.POOL_MAX (max_pool)
# Rows (series x patches) per block: the mixer's matrices are narrow (d_model 8-64), so blocks are larger than
# PatchTST's to give each GEMM more rows; a block's working set stays within a core's L2.
BLOCK_ROWS = 2048


class Switches(NamedTuple):
    scaling: int
    patch_stride: int
    mask_value: float
    mixer: MixerSwitches


@kernel
def embed_patches(patches, weights, rows):
    """patches [series, num_patches, patch_length] -> rows [series * num_patches, d_model]: the patcher Linear,
    then the positions (when the model has them)."""
    series, num_patches, patch_length = patches.shape
    matmul(patches.reshape(series * num_patches, patch_length), weights.patcher_weight, rows)
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
def encode_units(values, observed, default_scale, patch_mask, first_unit, last_unit, weights, switches, heads,
                 gate_kind, work, loc, scale, patch_input, patches, stream, hidden_states):
    """The encoder over units first_unit .. last_unit - 1 of the series, on the calling thread.

    values, observed: [batch, time, channels] -> loc, scale [batch, 1, channels] and patch_input [series,
    num_patches, patch_length] (series = batch x channels, channels fastest); patches: patch_input with the
    patches patch_mask [batch, channels, num_patches] marks set to ``switches.mask_value`` (when the mask is
    not [0, 0, 0]; otherwise patches is patch_input); then stream [series * num_patches, d_model], the
    embedding and every layer; hidden_states [layers or 0, series * num_patches, d_model] receives each
    layer's output. A unit is what mixes only within itself: a series, or across channels a batch element.
    work: this thread's ``Workspace``; heads: the self-attention's ``HeadsOfEight()`` or ``AnyHeads()``;
    gate_kind: ``rows.SoftmaxGate()`` (transformers' gate).
    """
    num_patches = patches.shape[1]
    channels = values.shape[2]
    d_model = stream.shape[1]
    block_rows = work.normed.size // d_model
    unit_series = channels if switches.mixer.mix_channel else 1
    units_per_block = max(block_rows // (unit_series * num_patches), 1)
    for first in range(first_unit, last_unit, units_per_block):
        s0 = first * unit_series
        s1 = min(first + units_per_block, last_unit) * unit_series
        block = stream[s0 * num_patches:s1 * num_patches]  # [rows, d_model]
        for series in range(s0, s1):
            b, c = series // channels, series % channels
            scale_and_patchify(values, observed, b, c, switches.scaling, default_scale, switches.patch_stride, loc,
                               scale, patch_input[series])
            mask_patches(patch_mask, b, c, switches.mask_value, patch_input[series], patches[series])
        embed_patches(patches[s0:s1], weights, block)
        mixer_layers(block, s1 - s0, channels, num_patches, weights.layers, switches.mixer, heads, gate_kind, work,
                     hidden_states, 0, s0 * num_patches)


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
        matmul(stats, expand_stats[0], middle)
        for i in range(middle.shape[1]):
            middle[0, i] += expand_stats[1][i]
        matmul(middle, compress_stats[0], mapped)
        for p in range(num_patches):
            source, row = stream[s * num_patches + p], rows[p]
            for d in range(d_model):
                row[d] = source[d]
            row[d_model] = mapped[0, 0] + compress_stats[1][0]
            row[d_model + 1] = mapped[0, 1] + compress_stats[1][1]
        matmul(rows, expand[0], widened)
        for p in range(num_patches):
            for i in range(widened.shape[1]):
                widened[p, i] += expand[1][i]
        target = out[s * num_patches:(s + 1) * num_patches]
        matmul(widened, compress[0], target)
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
