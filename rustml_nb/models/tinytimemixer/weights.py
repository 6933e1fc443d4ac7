"""Consumer layer: mapped TinyTimeMixer weights -> typed structs the compiled steps take directly (Linear
weights transposed to ``[in, out]``, every array C-contiguous in the model's dtype). Each mixer stack (an
adaptive-patching level of the encoder or decoder) is one ``kernels.mixer.MixerStack``; parts a config does
not have hold empty arrays, so the structs' Numba types do not depend on the config."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...kernels.mixer import MixerStack
from ..layers import Linear, Norm, validate_state, weight_array
from ..mixer import load_stack
from .config import TinyTimeMixerConfig
from .detection import expected_shapes, fcm_stack, stacks
from .forward import ChannelMixing, CoarseScales, DecoderInput, Embedding, Frequency, QuantileHead, Spectral


class Level(NamedTuple):
    factor: int  # each token's row split in this many rows of d_model / factor
    stack: MixerStack


class TinyTimeMixerWeights(NamedTuple):
    embedding: Embedding
    coarse_scales: CoarseScales | None  # multi_scale's scales past the finest, when there are any
    frequency: Frequency | None  # resolution_prefix_tuning's token MLP
    register_tokens: np.ndarray  # [register_tokens, d_model] (r3), or [0, d_model]
    spectral: Spectral | None  # the FFT tokens' embedding (r3 fft_length)
    base_norm: Norm | None  # enable_base_norm_always or multi_scale: a LayerNorm over [tokens * d_model]
    encoder: tuple[Level, ...]
    decoder_input: DecoderInput | None  # None without a decoder (or for the backbone alone)
    decoder: tuple[Level, ...]
    head_weight: np.ndarray | None  # [1, 1, tokens * head d_model, prediction_length] (kernels.heads' layout)
    head_bias: np.ndarray | None  # [1, 1, prediction_length]
    channel_mixing: ChannelMixing | None  # forecast channel mixing (enable_forecast_channel_mixing)
    quantile_head: QuantileHead | None  # the multi-quantile head (r3 multi_quantile_head)
    categorical: tuple[np.ndarray, ...]  # each static categorical variable's embedding [vocab, decoder_d_model]


def _linear_or_empty(state, name, dtype) -> Linear:
    if f"{name}.weight" in state:
        return Linear.from_state_dict(state, name, dtype)
    return Linear(np.zeros((0, 0), dtype), np.zeros(0, dtype))


def load_tinytimemixer_weights(mapped: dict, config: TinyTimeMixerConfig, head: str, dtype, unmapped=(),
                               sources=None) -> TinyTimeMixerWeights:
    """Check names, shapes and values against the config, then transpose and stack into the structs."""
    validate_state(mapped, list(unmapped), expected_shapes(config, head), f"TinyTimeMixer ({head} head)", sources)
    patchers = ([Linear.from_state_dict(mapped, f"encoder.scales.{scale}", dtype)
                 for scale in range(len(config.scale_patches))] if config.multi_scale
                else [Linear.from_state_dict(mapped, "encoder.patcher", dtype)])
    positions = (mapped["encoder.positional_encoding"] if config.use_positional_encoding
                 else np.zeros((0, config.d_model)))
    embedding = Embedding(patchers[0].weight, patchers[0].bias, weight_array(positions, dtype))
    coarse = None
    if len(patchers) > 1:
        coarse = CoarseScales(weight_array(np.stack([p.weight for p in patchers[1:]]), dtype),
                              weight_array(np.stack([p.bias for p in patchers[1:]]), dtype))
    register_tokens = weight_array(mapped["encoder.register_tokens"] if config.register_tokens
                                   else np.zeros((0, config.d_model)), dtype)
    spectral = None
    if config.fft_length:
        embedded = "encoder.fft.embedding" in mapped
        spectral = Spectral(weight_array(mapped["encoder.fft.embedding"], dtype) if embedded else None,
                            None if embedded else Linear.from_state_dict(mapped, "encoder.fft.fc1", dtype),
                            None if embedded else Linear.from_state_dict(mapped, "encoder.fft.fc2", dtype),
                            Linear.from_state_dict(mapped, "encoder.fft.projection", dtype)
                            if config.get_one_freq_emb else None)
    frequency = None
    if config.resolution_prefix_tuning:
        fc1 = Linear.from_state_dict(mapped, "encoder.frequency_fc1", dtype)
        fc2 = Linear.from_state_dict(mapped, "encoder.frequency_fc2", dtype)
        frequency = Frequency(weight_array(mapped["encoder.frequency_embedding"], dtype), *fc1, *fc2)

    base_norm = Norm.from_state_dict(mapped, "encoder.base_norm", "layernorm", dtype) if config.base_norm else None

    def levels(part):
        return tuple(Level(factor, load_stack(mapped, shape, dtype, prefix)) for prefix, factor, shape in stacks(config, part))

    decoder_input, decoder, head_weight, head_bias, channel_mixing, quantile_head = None, (), None, None, None, None
    if head == "prediction":
        if config.use_decoder:
            adapter = _linear_or_empty(mapped, "decoder.adapter", dtype)
            raw = _linear_or_empty(mapped, "decoder.raw_embedding", dtype)
            decoder_input = DecoderInput(adapter.weight, adapter.bias, raw.weight, raw.bias)
            decoder = levels("decoder")
        forecast = Linear.from_state_dict(mapped, "head.forecast", dtype)
        head_weight, head_bias = forecast.weight[None, None], forecast.bias[None, None]
        if config.enable_forecast_channel_mixing:
            embedding_linear = _linear_or_empty(mapped, "head.fcm.embedding", dtype)
            gate = _linear_or_empty(mapped, "head.fcm.gate", dtype)
            stack = load_stack(mapped, fcm_stack(config), dtype, "head.fcm.") if config.fcm_use_mixer else None
            channel_mixing = ChannelMixing(*embedding_linear, stack, *gate,
                                           *Linear.from_state_dict(mapped, "head.fcm.mlp", dtype))
        if config.multi_quantile_head:
            def flat(name):
                return weight_array(np.reshape(mapped[name], -1), dtype)

            condition = ()
            if config.mq_use_decoder_pool:
                condition = tuple(Linear.from_state_dict(mapped, f"head.quantiles.{name}", dtype) for name in (
                    ("condition",) if config.mq_cond_path == "pool" else ("condition_tokens", "condition_flat")))
            out = mapped["head.quantiles.out.weight"]  # [levels, in, 1]
            quantile_head = QuantileHead(
                flat("head.quantiles.smooth.weight"), flat("head.quantiles.smooth.bias"),
                flat("head.quantiles.norm.weight"), flat("head.quantiles.norm.bias"),
                flat("head.quantiles.expand.weight"), flat("head.quantiles.expand.bias"), condition,
                Linear.from_state_dict({"out.weight": out[:, :, 0], "out.bias": mapped["head.quantiles.out.bias"]},
                                       "out", dtype))
    categorical = tuple(weight_array(mapped[f"decoder.categorical.{index}"], dtype)
                        for index in range(config.num_categorical)) if head == "prediction" else ()
    return TinyTimeMixerWeights(embedding, coarse, frequency, register_tokens, spectral, base_norm, levels("encoder"),
                                decoder_input, decoder, head_weight, head_bias, channel_mixing, quantile_head,
                                categorical)
