"""The MLP-mixer layer that PatchTSMixer and TinyTimeMixer share, over one thread's block of rows.

A layer mixes three ways, each a residual block ``x + MLP(norm(x))`` over rows of a different layout: across
channels (``mix_channel`` mode; each unit's [channels, patches * d_model] block transposed, so rows hold one
value per channel), across patches (each series' [patches, d_model] transposed, rows of one feature over all
patches) and across features (the stream itself, [patches, d_model] per series). A gated block multiplies
by a gate of x W + b (softmax over the row, or granite-tsfm's other kinds, ``rows.gate``): before the MLP
across channels, after it otherwise. The optional
self-attention across patches adds its output to the patch mixer's and normalizes the sum. The three run
through one loop body, so each kernel called has one call site and one compiled copy. The arithmetic follows
transformers' ``modeling_patchtsmixer.py``, which granite-tsfm's TinyTimeMixer repeats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jit import kernel
from .attention import attend
from .gemm import matmul, matmul_bias
from .rows import add_transposed_blocks, copy_rows, gate, gelu_inplace, normalize, transpose_blocks

CHANNEL_MIXER, PATCH_MIXER, FEATURE_MIXER = 0, 1, 2


class MixerBlocks(NamedTuple):
    """One kind of mixing block (across channels, patches or features), all layers; ``width`` is what it mixes
    (channels, patches or d_model) and every norm runs over d_model."""

    norm_weight: np.ndarray  # [layers, d_model]
    norm_bias: np.ndarray  # [layers, d_model]
    norm_mean: np.ndarray  # [layers, d_model]
    norm_var: np.ndarray  # [layers, d_model]
    # the Linear weights packed (gemm.pack_weight: [in, out] in panels of columns, [.., panels, in, panel_width])
    fc1_weight: np.ndarray  # [layers, width, width * expansion], packed
    fc1_bias: np.ndarray  # [layers, width * expansion]
    fc2_weight: np.ndarray  # [layers, width * expansion, width], packed
    fc2_bias: np.ndarray  # [layers, width]
    gate_weight: np.ndarray  # [layers or 0, width, width] ([.., width, 2 * width] for a GLU gate), packed
    gate_bias: np.ndarray  # [layers or 0, width] (or 2 * width)


class MixerStack(NamedTuple):
    """Every layer of one mixer stack (PatchTSMixer's encoder; one adaptive-patching level of TinyTimeMixer's
    encoder or decoder). Parts a config lacks have a leading axis of 0, so the type does not depend on it."""

    channel: MixerBlocks  # layers 0 when the mode is common_channel
    patch: MixerBlocks  # layers 0 over a single token (TinyTimeMixer's layers then do not mix patches)
    feature: MixerBlocks
    qkv_weight: np.ndarray  # [layers or 0, d_model, 3 * d_model]: q, k, v projections side by side
    qkv_bias: np.ndarray  # [layers or 0, 3 * d_model]
    out_weight: np.ndarray  # [layers or 0, d_model, d_model]
    out_bias: np.ndarray  # [layers or 0, d_model]
    attention_norm: MixerBlocks  # only its norm_* fields are used; the rest are empty


class MixerSwitches(NamedTuple):
    norm_type: int  # rows.NORM_BATCH or rows.NORM_LAYER
    norm_eps: float
    mix_channel: bool
    gated: bool
    self_attn: bool
    num_heads: int


class Workspace(NamedTuple):
    """One thread's scratch for ``mixer_layers``, flat, room for a block of ``block_rows`` rows of d_model
    (any split of the same values into more, narrower rows fits too)."""

    normed: np.ndarray  # block_rows * d_model
    flipped: np.ndarray  # block_rows * d_model: a block transposed for mixing across patches or channels
    hidden: np.ndarray  # block_rows * d_model * expansion
    mixed: np.ndarray  # block_rows * d_model
    logits: np.ndarray  # block_rows * d_model * gate_outputs: the gate's
    back: np.ndarray  # block_rows * d_model: mixed, transposed back
    attended: np.ndarray  # block_rows * d_model, or 0 without self-attention
    qkv_t: np.ndarray  # 3 * d_model * block_rows, or 0
    context_t: np.ndarray  # d_model * block_rows, or 0


def make_workspace(block_rows, d_model, expansion, self_attn, dtype, gate_outputs=1) -> Workspace:
    """``gate_outputs``: the gate's outputs per value it gates (2 for a GLU gate)."""
    rows = block_rows * d_model
    attention = rows if self_attn else 0
    return Workspace(*(np.empty(size, dtype) for size in (rows, rows, rows * expansion, rows, rows * gate_outputs, rows,
                                                          attention, 3 * attention, attention)))


@kernel
def mix(x, blocks, layer, gated, gate_kind, gate_first, hidden, logits, out):
    """out = MLP(x) over rows x [rows, width]: Linear -> GELU (exact) -> Linear, gated (a ``rows.gate`` of
    gate_kind) before (gate_first, changing x) or after. hidden: [rows, width * expansion], logits: [rows,
    the gate's outputs]."""
    if gated and gate_first:
        gate(gate_kind, x, blocks.gate_weight[layer], blocks.gate_bias[layer], logits)
    matmul_bias(x, blocks.fc1_weight[layer], blocks.fc1_bias[layer], hidden)
    gelu_inplace(hidden.reshape(hidden.size))  # hidden: C-contiguous
    matmul_bias(hidden, blocks.fc2_weight[layer], blocks.fc2_bias[layer], out)
    if gated and not gate_first:
        gate(gate_kind, out, blocks.gate_weight[layer], blocks.gate_bias[layer], logits)


@kernel
def mixer_layers(block, count, channels, num_patches, stack, switches, heads, gate_kind, work, hidden_states,
                 first_state, first_row):
    """Every layer of ``stack`` over block [count * num_patches, d_model] (count series, whole units: a
    series, or across channels ``channels`` of them), in place. hidden_states [states or 0, rows, d_model]
    receives layer k's output at state first_state + k, rows first_row ...; heads: the self-attention's
    ``HeadsOfEight()``, ``AnyHeads()`` or ``NoHeads()``; gate_kind: the gates' (``rows.gate_kind``); work: this
    thread's ``Workspace``."""
    rows, d_model = block.shape
    size = rows * d_model
    expansion = work.hidden.size // work.normed.size
    normed = work.normed[:size].reshape(rows, d_model)
    eps, norm_type = switches.norm_eps, switches.norm_type
    gates = stack.feature.gate_bias
    gate_outputs = gates.shape[1] // d_model if gates.shape[0] else 1  # 2 for a GLU gate
    mixes_patches = stack.patch.fc1_weight.shape[0] > 0
    for layer in range(stack.feature.fc1_weight.shape[0]):
        for kind in range(CHANNEL_MIXER if switches.mix_channel else PATCH_MIXER, FEATURE_MIXER + 1):
            if kind == PATCH_MIXER and not mixes_patches:  # granite-tsfm's layers over a single token
                continue
            blocks = stack.channel if kind == CHANNEL_MIXER else (stack.patch if kind == PATCH_MIXER else stack.feature)
            normalize(block, blocks.norm_weight[layer], blocks.norm_bias[layer], blocks.norm_mean[layer],
                      blocks.norm_var[layer], eps, norm_type, normed)
            attention = switches.self_attn and kind == PATCH_MIXER
            attended = work.attended[:size].reshape(rows, d_model) if attention else normed
            if attention:  # self-attention across patches, on the normed rows
                qkv_t = work.qkv_t[:3 * size].reshape(3 * d_model, rows)
                context_t = work.context_t[:size].reshape(d_model, rows)
                transpose_blocks(normed, 1, context_t)  # context_t: normed^T until attend fills it
                matmul(stack.qkv_weight[layer].T, context_t, qkv_t)  # (normed W)^T
                attend(heads, qkv_t, stack.qkv_bias[layer], num_patches, switches.num_heads, context_t)
                matmul_bias(context_t.T, stack.out_weight[layer], stack.out_bias[layer], attended)
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
            mix(x, blocks, layer, switches.gated, gate_kind, kind == CHANNEL_MIXER,
                work.hidden[:size * expansion].reshape(x.shape[0], width * expansion),
                work.logits[:size * gate_outputs].reshape(x.shape[0], width * gate_outputs), mixed)
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
                norms = stack.attention_norm
                normalize(result, norms.norm_weight[layer], norms.norm_bias[layer], norms.norm_mean[layer],
                          norms.norm_var[layer], eps, norm_type, result)
            for r in range(rows):
                row, other = block[r], result[r]
                for d in range(d_model):
                    row[d] += other[d]
        if hidden_states.shape[0]:
            copy_rows(block, hidden_states[first_state + layer, first_row:first_row + rows])
