"""Orchestration: transformers' PatchTST tensor names -> rustml_nb names, through one rule table (read both
ways by ``models.mapping.RuleTable``): ``map_patchtst_weights`` goes HF -> ours, ``hf_name`` goes back.
``{param}`` counts a distribution head's parameters in transformers' order."""

from __future__ import annotations

from ..mapping import BATCHNORM, LAYERNORM, LINEAR, RuleTable, WeightMappingResult

# Our sublayer norm names and transformers' module names: attention across time, across channels, feed-forward.
_NORMS = (("attention", "norm_sublayer1"), ("channel_attention", "norm_sublayer2"), ("ff", "norm_sublayer3"))

# (our name, checkpoint name without the "model." prefix). Encoder rules first, head rules after.
ENCODER_RULES: tuple[tuple[str, str], ...] = (
    *((f"embedding.{p}", f"encoder.embedder.input_embedding.{p}") for p in LINEAR),
    *((f"embedding.{{channel}}.{p}", f"encoder.embedder.input_embedding.{{channel}}.{p}") for p in LINEAR),
    ("positional_encoding", "encoder.positional_encoder.position_enc"),
    ("cls_token", "encoder.positional_encoder.cls_token"),
    *((f"encoder_layers.{{layer}}.attention.{proj}.{p}", f"encoder.layers.{{layer}}.self_attn.{proj}.{p}")
      for proj in ("q_proj", "k_proj", "v_proj", "out_proj") for p in LINEAR),
    *((f"encoder_layers.{{layer}}.{ours}_batchnorm.{p}", f"encoder.layers.{{layer}}.{theirs}.batchnorm.{p}")
      for ours, theirs in _NORMS for p in BATCHNORM),
    *((f"encoder_layers.{{layer}}.{ours}_layernorm.{p}", f"encoder.layers.{{layer}}.{theirs}.{p}")
      for ours, theirs in _NORMS for p in LAYERNORM),
    *((f"encoder_layers.{{layer}}.ff.linear1.{p}", f"encoder.layers.{{layer}}.ff.0.{p}") for p in LINEAR),
    *((f"encoder_layers.{{layer}}.ff.linear2.{p}", f"encoder.layers.{{layer}}.ff.3.{p}") for p in LINEAR),
)
HEAD_RULES: tuple[tuple[str, str], ...] = (
    # PatchTSTForPretraining and PatchTSTForClassification: one Linear.
    *((f"head.linear.{p}", f"head.linear.{p}") for p in LINEAR),
    # PatchTSTForPrediction / ForRegression point heads, shared across channels.
    *((f"head.projection.{p}", f"head.projection.{p}") for p in LINEAR),
    # ... one per channel (prediction, share_projection=False).
    *((f"head.channel_projection.{{channel}}.{p}", f"head.projections.{{channel}}.{p}") for p in LINEAR),
    # Distribution heads: one Linear per distribution parameter, shared or per channel.
    *((f"head.distribution.{{param}}.{p}", f"head.projection.proj.{{param}}.{p}") for p in LINEAR),
    *((f"head.channel_distribution.{{channel}}.{{param}}.{p}", f"head.projections.{{channel}}.proj.{{param}}.{p}")
      for p in LINEAR),
)

RULES = RuleTable("PatchTST", ENCODER_RULES, HEAD_RULES)
our_name, hf_name = RULES.our_name, RULES.hf_name


def map_patchtst_weights(hf_weights) -> WeightMappingResult:
    """Rename a transformers PatchTST state dict to rustml_nb names (see ``RuleTable.map``)."""
    return RULES.map(hf_weights)
