"""Consumer layer: mapped PatchTSMixer weights -> typed structs the compiled encoder takes directly.

Every array is C-contiguous, in the model's dtype, Linear weights transposed to ``[in, out]``. The mixer
layers are one ``kernels.mixer.MixerStack`` (``models.mixer.load_stack``); parts a config does not have
(channel mixing, gating, self-attention, positions) have a leading axis of 0, so the structs' Numba types do
not depend on the config and one compilation serves every checkpoint of a dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...kernels.mixer import MixerStack
from ..layers import Linear, validate_state, weight_array
from ..mixer import load_stack
from .config import PatchTSMixerConfig
from .detection import INJECT_SCALE_SHAPES, distribution_parameters, expected_shapes, stack_shape


class EncoderWeights(NamedTuple):
    patcher_weight: np.ndarray  # [patch_length, d_model]
    patcher_bias: np.ndarray  # [d_model]
    positional_encoding: np.ndarray  # [num_patches or 0, d_model]
    layers: MixerStack


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


def load_encoder(state: dict, config: PatchTSMixerConfig, dtype) -> EncoderWeights:
    patcher = Linear.from_state_dict(state, "patcher", dtype)
    positions = state["positional_encoding"] if config.use_positional_encoding else np.zeros((0, config.d_model))
    return EncoderWeights(patcher_weight=patcher.weight, patcher_bias=patcher.bias,
                          positional_encoding=weight_array(positions, dtype),
                          layers=load_stack(state, stack_shape(config), dtype))


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
