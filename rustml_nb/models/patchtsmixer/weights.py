"""Consumer layer: mapped PatchTSMixer weights -> typed structs the compiled encoder takes directly.

Every array is C-contiguous, in the model's dtype, Linear weights transposed to ``[in, out]``. Per-layer
tensors are stacked along a leading ``num_layers`` axis, and parts a config does not have (channel mixing,
gating, self-attention, positions) have a leading axis of 0, so the structs' Numba types do not depend on the
config and one compilation serves every checkpoint of a dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..layers import Linear, Norm, stack_arrays, validate_state, weight_array
from .config import PatchTSMixerConfig
from .detection import INJECT_SCALE_SHAPES, distribution_parameters, expected_shapes


class MixerBlocks(NamedTuple):
    """One kind of mixing block (across channels, patches or features), all layers; ``width`` is what it mixes
    (channels, patches or d_model) and every norm runs over d_model."""

    norm_weight: np.ndarray  # [layers, d_model]
    norm_bias: np.ndarray  # [layers, d_model]
    norm_mean: np.ndarray  # [layers, d_model]
    norm_var: np.ndarray  # [layers, d_model]
    fc1_weight: np.ndarray  # [layers, width, width * expansion]
    fc1_bias: np.ndarray  # [layers, width * expansion]
    fc2_weight: np.ndarray  # [layers, width * expansion, width]
    fc2_bias: np.ndarray  # [layers, width]
    gate_weight: np.ndarray  # [layers or 0, width, width]
    gate_bias: np.ndarray  # [layers or 0, width]


class EncoderWeights(NamedTuple):
    patcher_weight: np.ndarray  # [patch_length, d_model]
    patcher_bias: np.ndarray  # [d_model]
    positional_encoding: np.ndarray  # [num_patches or 0, d_model]
    channel: MixerBlocks  # layers 0 when the mode is common_channel
    patch: MixerBlocks
    feature: MixerBlocks
    qkv_weight: np.ndarray  # [layers or 0, d_model, 3 * d_model]: q, k, v projections side by side
    qkv_bias: np.ndarray  # [layers or 0, 3 * d_model]
    out_weight: np.ndarray  # [layers or 0, d_model, d_model]
    out_bias: np.ndarray  # [layers or 0, d_model]
    attention_norm: MixerBlocks  # only its norm_* fields are used; the rest are empty


class HeadWeights(NamedTuple):
    weight: np.ndarray  # prediction [1, parameters, patches * d_model, horizon]; pretraining [1, 1, d_model,
    #                     patch_length]; classification / regression [1, parameters, width, targets]
    bias: np.ndarray  # [1, parameters, outputs]
    inject: tuple  # the scale injection's Linears (map_scale_expansion, map_scale_compression,
    #                inverse_trans_expansion, inverse_trans_compression), or () without one


class PatchTSMixerWeights(NamedTuple):
    encoder: EncoderWeights
    head: HeadWeights


def _empty(dtype, *shape):
    return np.zeros(shape, dtype)


def _norms(state, prefixes, config, dtype):
    norm_type = "batchnorm" if config.batch_norm else "layernorm"
    norms = [Norm.from_state_dict(state, f"{prefix}.{norm_type}", norm_type, dtype) for prefix in prefixes]
    return [stack_arrays([norm[field] for norm in norms], (config.d_model,), dtype) for field in range(4)]


def _blocks(state, config, block: str, width: int, layers: int, dtype) -> MixerBlocks:
    prefixes = [f"layers.{layer}.{block}" for layer in range(layers)]
    hidden = width * config.expansion_factor
    fc1 = [Linear.from_state_dict(state, f"{prefix}.fc1", dtype) for prefix in prefixes]
    fc2 = [Linear.from_state_dict(state, f"{prefix}.fc2", dtype) for prefix in prefixes]
    gates = [Linear.from_state_dict(state, f"{prefix}.gate", dtype) for prefix in prefixes] if config.gated_attn else []
    return MixerBlocks(
        *_norms(state, prefixes, config, dtype),
        stack_arrays([l.weight for l in fc1], (width, hidden), dtype), stack_arrays([l.bias for l in fc1], (hidden,), dtype),
        stack_arrays([l.weight for l in fc2], (hidden, width), dtype), stack_arrays([l.bias for l in fc2], (width,), dtype),
        stack_arrays([l.weight for l in gates], (width, width), dtype), stack_arrays([l.bias for l in gates], (width,), dtype))


def load_encoder(state: dict, config: PatchTSMixerConfig, dtype) -> EncoderWeights:
    d, layers = config.d_model, config.num_layers
    attention_layers = layers if config.self_attn else 0
    qkv, out = [], []
    for layer in range(attention_layers):
        q, k, v, o = (Linear.from_state_dict(state, f"layers.{layer}.attention.{p}", dtype)
                      for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
        qkv.append(Linear(np.concatenate([q.weight, k.weight, v.weight], axis=1), np.concatenate([q.bias, k.bias, v.bias])))
        out.append(o)
    attention_norm = _norms(state, [f"layers.{layer}.attention" for layer in range(attention_layers)], config, dtype)
    patcher = Linear.from_state_dict(state, "patcher", dtype)
    positions = state["positional_encoding"] if config.use_positional_encoding else np.zeros((0, d))
    nothing = [_empty(dtype, 0, 0, 0), _empty(dtype, 0, 0)]
    return EncoderWeights(
        patcher_weight=patcher.weight, patcher_bias=patcher.bias, positional_encoding=weight_array(positions, dtype),
        channel=_blocks(state, config, "channel_mixer", config.num_input_channels,
                        layers if config.mode == "mix_channel" else 0, dtype),
        patch=_blocks(state, config, "patch_mixer", config.num_patches, layers, dtype),
        feature=_blocks(state, config, "feature_mixer", d, layers, dtype),
        qkv_weight=stack_arrays([l.weight for l in qkv], (d, 3 * d), dtype),
        qkv_bias=stack_arrays([l.bias for l in qkv], (3 * d,), dtype),
        out_weight=stack_arrays([l.weight for l in out], (d, d), dtype),
        out_bias=stack_arrays([l.bias for l in out], (d,), dtype),
        attention_norm=MixerBlocks(*attention_norm, *nothing, *nothing, *nothing),
    )


def load_head(state: dict, config: PatchTSMixerConfig, head: str, dtype) -> HeadWeights:
    if head == "none":
        return HeadWeights(_empty(dtype, 0, 0, 0, 0), _empty(dtype, 0, 0, 0), ())
    params = distribution_parameters(config, head)
    if head == "prediction":
        names = [f"head.forecast_distribution.{k}" for k in range(len(params))] if params else ["head.forecast"]
    elif head == "pretraining":
        names = ["head.pretrain"]
    else:
        names = [f"head.distribution.{k}" for k in range(len(params))] if params else ["head.projection"]
    linears = [Linear.from_state_dict(state, name, dtype) for name in names]
    inject = ()
    if head in ("classification", "regression") and config.injects_scale:
        inject = tuple(Linear.from_state_dict(state, f"inject_scale.{name}", dtype) for name in INJECT_SCALE_SHAPES)
    return HeadWeights(weight_array(np.stack([l.weight for l in linears])[None], dtype),
                       weight_array(np.stack([l.bias for l in linears])[None], dtype), inject)


def load_patchtsmixer_weights(mapped: dict, config: PatchTSMixerConfig, head: str, dtype, unmapped=(),
                              sources=None) -> PatchTSMixerWeights:
    """Check names, shapes and values against the config, then transpose and stack into the structs."""
    validate_state(mapped, list(unmapped), expected_shapes(config, head), f"PatchTSMixer ({head} head)", sources)
    return PatchTSMixerWeights(load_encoder(mapped, config, dtype), load_head(mapped, config, head, dtype))
