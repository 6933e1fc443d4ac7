"""Orchestration: granite-tsfm's TinyTimeMixer tensor names -> rustml_nb names, through one rule table (read
both ways by ``models.mapping.RuleTable``). The backbone's tensors carry ``backbone.`` in
TinyTimeMixerForPrediction and no prefix in a bare TinyTimeMixerModel. A stack without adaptive patching
levels is ``layers.{layer}``, with them ``levels.{level}.layers.{layer}`` (coarsest level first, as
granite-tsfm orders them); within a layer, see ``models.mixer.layer_rules``."""

from __future__ import annotations

from ..mapping import LAYERNORM, LINEAR, RuleTable, WeightMappingResult
from ..mixer import layer_rules

ENCODER_MIXERS = "encoder.mlp_mixer_encoder.mixers"
DECODER_MIXERS = "decoder.decoder_block.mixers"

ENCODER_RULES: tuple[tuple[str, str], ...] = (
    *((f"encoder.patcher.{p}", f"encoder.patcher.{p}") for p in LINEAR),
    # multi_scale: one patcher Linear per scale (finest first, as granite-tsfm numbers them)
    *((f"encoder.scales.{{scale}}.{p}", f"encoder.patcher.projectors.{{scale}}.{p}") for p in LINEAR),
    # register tokens, and the FFT tokens' frequency embedding (or MLP) and, for one token, its projection
    ("encoder.register_tokens", "encoder.add_tokens.patch_tokens"),
    ("encoder.fft.embedding", "encoder.add_fft_tokens.freq_embedding.weight"),
    *((f"encoder.fft.fc1.{p}", f"encoder.add_fft_tokens.freq_index_mlp.0.{p}") for p in LINEAR),
    *((f"encoder.fft.fc2.{p}", f"encoder.add_fft_tokens.freq_index_mlp.2.{p}") for p in LINEAR),
    *((f"encoder.fft.projection.{p}", f"encoder.add_fft_tokens.freq_concat_proj.{p}") for p in LINEAR),
    ("encoder.positional_encoding", "encoder.positional_encoder.position_enc"),
    # resolution_prefix_tuning: the frequency token's embedding, then Linear -> GELU -> Linear
    ("encoder.frequency_embedding", "encoder.freq_mod.0.weight"),
    *((f"encoder.frequency_fc1.{p}", f"encoder.freq_mod.1.{p}") for p in LINEAR),
    *((f"encoder.frequency_fc2.{p}", f"encoder.freq_mod.3.{p}") for p in LINEAR),
    # enable_base_norm_always: a LayerNorm over each series' tokens x d_model as one row, before the mixers
    *((f"encoder.base_norm.{p}", f"encoder.base_norm.{p}") for p in LAYERNORM),
    *layer_rules("encoder.levels.{level}.layers.{layer}", ENCODER_MIXERS + ".{level}.mixer_layers.{layer}"),
    *layer_rules("encoder.layers.{layer}", ENCODER_MIXERS + ".{layer}"),
)
HEAD_RULES: tuple[tuple[str, str], ...] = (
    *((f"decoder.adapter.{p}", f"decoder.adapter.{p}") for p in LINEAR),
    *((f"decoder.raw_embedding.{p}", f"decoder.decoder_raw_embedding.{p}") for p in LINEAR),
    ("decoder.categorical.{variable}", "decoder.decoder_cat_embedding_layer.embedding_layers.{variable}.weight"),
    *layer_rules("decoder.levels.{level}.layers.{layer}", DECODER_MIXERS + ".{level}.mixer_layers.{layer}"),
    *layer_rules("decoder.layers.{layer}", DECODER_MIXERS + ".{layer}"),
    *((f"head.forecast.{p}", f"head.base_forecast_block.{p}") for p in LINEAR),
    # forecast channel mixing: its window embedding and mixer (fcm_use_mixer), gate and Linear
    *((f"head.fcm.embedding.{p}", f"head.fcm_block.fcm_embedding.{p}") for p in LINEAR),
    *layer_rules("head.fcm.layers.{layer}", "head.fcm_block.exog_mixer.mixers.{layer}"),
    *((f"head.fcm.gate.{p}", f"head.fcm_block.fcm_gating_block.attn_layer.{p}") for p in LINEAR),
    *((f"head.fcm.mlp.{p}", f"head.fcm_block.mlp.{p}") for p in LINEAR),
    # the multi-quantile head (r3): its Conv1d over the horizon, InstanceNorm, pointwise Conv1ds, and the
    # decoder's summary (mq_use_decoder_pool: pooled, or each token's then flattened)
    *((f"head.quantiles.{ours}.{p}", f"multi_quantile_head_block.{theirs}.{p}") for p in LINEAR
      for ours, theirs in (("smooth", "dw"), ("norm", "inorm"), ("expand", "pw1"), ("out", "pw2"),
                           ("condition", "dec_proj"), ("condition_tokens", "dec_tok_proj"),
                           ("condition_flat", "dec_flat_to_hidden"))),
)

RULES = RuleTable("TinyTimeMixer", ENCODER_RULES, HEAD_RULES, encoder_prefix="backbone.")
# TinyTimeMixerForDecomposedPrediction holds two TinyTimeMixerForPrediction: our prefix -> theirs.
FORECASTERS = {"trend.": "trend_forecaster.", "residual.": "residual_forecaster."}


def our_name(hf_key: str) -> str | None:
    for ours, theirs in FORECASTERS.items():
        if hf_key.startswith(theirs):
            name = RULES.our_name(hf_key[len(theirs):])
            return None if name is None else ours + name
    return RULES.our_name(hf_key)


def hf_name(name: str, prefixed: bool = True) -> str:
    for ours, theirs in FORECASTERS.items():
        if name.startswith(ours):
            return theirs + RULES.hf_name(name[len(ours):], prefixed)
    return RULES.hf_name(name, prefixed)


def map_tinytimemixer_weights(hf_weights) -> WeightMappingResult:
    """Rename a granite-tsfm TinyTimeMixer state dict to rustml_nb names (see ``RuleTable.map``); a decomposed
    model's two forecasters each by the same rules, under ``trend.`` and ``residual.``."""
    if not any(key.startswith(theirs) for key in hf_weights for theirs in FORECASTERS.values()):
        return RULES.map(hf_weights)
    result = WeightMappingResult({}, [], {})
    rest = dict(hf_weights)
    for ours, theirs in FORECASTERS.items():
        part = RULES.map({key[len(theirs):]: rest.pop(key) for key in list(rest) if key.startswith(theirs)})
        result.mapped.update({ours + name: value for name, value in part.mapped.items()})
        result.sources.update({ours + name: theirs + key for name, key in part.sources.items()})
        result.unmapped.extend(theirs + key for key in part.unmapped)
    result.unmapped.extend(sorted(rest))
    return result
