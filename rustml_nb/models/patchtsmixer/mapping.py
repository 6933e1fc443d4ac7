"""Orchestration: transformers' PatchTSMixer tensor names -> rustml_nb names, through one rule table (read
both ways by ``models.mapping.RuleTable``). Our names drop the module nesting (``mlp_mixer_encoder.mixers``,
``norm.norm``, ``gating_block.attn_layer``); ``{param}`` counts a distribution head's parameters."""

from __future__ import annotations

from ..mapping import BATCHNORM, LAYERNORM, LINEAR, RuleTable, WeightMappingResult

MIXER = "encoder.mlp_mixer_encoder.mixers.{layer}"
# Our block names and transformers' module names: mixing across patches, features, channels.
BLOCKS = (("patch_mixer", "patch_mixer"), ("feature_mixer", "feature_mixer"), ("channel_mixer", "channel_feature_mixer"))
# InjectScalerStatistics4D's four Linears, named alike on both sides.
INJECT_SCALE = ("map_scale_expansion", "map_scale_compression", "inverse_trans_expansion", "inverse_trans_compression")

# (our name, checkpoint name without the "model." prefix). Encoder rules first, head rules after.
ENCODER_RULES: tuple[tuple[str, str], ...] = (
    *((f"patcher.{p}", f"encoder.patcher.{p}") for p in LINEAR),
    ("positional_encoding", "encoder.positional_encoder.position_enc"),
    *((f"layers.{{layer}}.{ours}.batchnorm.{p}", f"{MIXER}.{theirs}.norm.norm.batchnorm.{p}")
      for ours, theirs in BLOCKS for p in BATCHNORM),
    *((f"layers.{{layer}}.{ours}.layernorm.{p}", f"{MIXER}.{theirs}.norm.norm.{p}")
      for ours, theirs in BLOCKS for p in LAYERNORM),
    *((f"layers.{{layer}}.{ours}.{linear}.{p}", f"{MIXER}.{theirs}.mlp.{linear}.{p}")
      for ours, theirs in BLOCKS for linear in ("fc1", "fc2") for p in LINEAR),
    *((f"layers.{{layer}}.{ours}.gate.{p}", f"{MIXER}.{theirs}.gating_block.attn_layer.{p}")
      for ours, theirs in BLOCKS for p in LINEAR),
    *((f"layers.{{layer}}.attention.{proj}.{p}", f"{MIXER}.patch_mixer.self_attn_layer.{proj}.{p}")
      for proj in ("q_proj", "k_proj", "v_proj", "out_proj") for p in LINEAR),
    *((f"layers.{{layer}}.attention.batchnorm.{p}", f"{MIXER}.patch_mixer.norm_attn.norm.batchnorm.{p}")
      for p in BATCHNORM),
    *((f"layers.{{layer}}.attention.layernorm.{p}", f"{MIXER}.patch_mixer.norm_attn.norm.{p}") for p in LAYERNORM),
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
