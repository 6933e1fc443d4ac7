"""Orchestration: transformers' PatchTSMixer tensor names -> rustml_nb names, through one rule table (read
both ways by ``models.mapping.RuleTable``). Our names drop the module nesting (``mlp_mixer_encoder.mixers``;
within a layer, see ``models.mixer.layer_rules``); ``{param}`` counts a distribution head's parameters."""

from __future__ import annotations

from ..mapping import LINEAR, RuleTable, WeightMappingResult
from ..mixer import layer_rules

# InjectScalerStatistics4D's four Linears, named alike on both sides.
INJECT_SCALE = ("map_scale_expansion", "map_scale_compression", "inverse_trans_expansion", "inverse_trans_compression")

# (our name, checkpoint name without the "model." prefix). Encoder rules first, head rules after.
ENCODER_RULES: tuple[tuple[str, str], ...] = (
    *((f"patcher.{p}", f"encoder.patcher.{p}") for p in LINEAR),
    ("positional_encoding", "encoder.positional_encoder.position_enc"),
    *layer_rules("layers.{layer}", "encoder.mlp_mixer_encoder.mixers.{layer}"),
)
HEAD_RULES: tuple[tuple[str, str], ...] = (
    # PatchTSMixerForPrediction: a point forecast, or one Linear per distribution parameter.
    *((f"head.forecast.{p}", f"head.base_forecast_block.{p}") for p in LINEAR),
    *((f"head.forecast_distribution.{{param}}.{p}", f"head.base_forecast_block.proj.{{param}}.{p}") for p in LINEAR),
    # PatchTSMixerForPretraining: each patch's reconstruction.
    *((f"head.pretrain.{p}", f"head.base_pt_block.{p}") for p in LINEAR),
    # Classification and regression: one Linear (or one per distribution parameter), and the scale injection.
    *((f"head.projection.{p}", f"head.projection.{p}") for p in LINEAR),
    *((f"head.distribution.{{param}}.{p}", f"head.projection.proj.{{param}}.{p}") for p in LINEAR),
    *((f"inject_scale.{linear}.{p}", f"inject_scale.{linear}.{p}") for linear in INJECT_SCALE for p in LINEAR),
)

RULES = RuleTable("PatchTSMixer", ENCODER_RULES, HEAD_RULES)
our_name, hf_name = RULES.our_name, RULES.hf_name


def map_patchtsmixer_weights(hf_weights) -> WeightMappingResult:
    """Rename a transformers PatchTSMixer state dict to rustml_nb names (see ``RuleTable.map``)."""
    return RULES.map(hf_weights)
