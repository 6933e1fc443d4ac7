"""Orchestration: transformers' PatchTST tensor names -> rustml_nb names, through one rule table.

Each rule pairs one of our names with the checkpoint name it comes from. ``{layer}``, ``{channel}`` and
``{param}`` stand for an encoder layer, an input channel and a distribution parameter (0, 1, 2 in
transformers' order). The table is read both ways: ``map_patchtst_weights`` goes HF -> ours,
``hf_name`` goes back. Encoder names carry transformers' ``model.`` prefix in every task class and no
prefix in a bare ``PatchTSTModel`` checkpoint; both are accepted.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ...errors import WeightMappingError

_LINEAR = ("weight", "bias")
_BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LAYERNORM = ("weight", "bias")
# Our sublayer norm names and transformers' module names: attention across time, across channels, feed-forward.
_NORMS = (("attention", "norm_sublayer1"), ("channel_attention", "norm_sublayer2"), ("ff", "norm_sublayer3"))

# (our name, checkpoint name without the "model." prefix). Encoder rules first, head rules after.
ENCODER_RULES: tuple[tuple[str, str], ...] = (
    *((f"embedding.{p}", f"encoder.embedder.input_embedding.{p}") for p in _LINEAR),
    *((f"embedding.{{channel}}.{p}", f"encoder.embedder.input_embedding.{{channel}}.{p}") for p in _LINEAR),
    ("positional_encoding", "encoder.positional_encoder.position_enc"),
    ("cls_token", "encoder.positional_encoder.cls_token"),
    *((f"encoder_layers.{{layer}}.attention.{proj}.{p}", f"encoder.layers.{{layer}}.self_attn.{proj}.{p}")
      for proj in ("q_proj", "k_proj", "v_proj", "out_proj") for p in _LINEAR),
    *((f"encoder_layers.{{layer}}.{ours}_batchnorm.{p}", f"encoder.layers.{{layer}}.{theirs}.batchnorm.{p}")
      for ours, theirs in _NORMS for p in _BATCHNORM),
    *((f"encoder_layers.{{layer}}.{ours}_layernorm.{p}", f"encoder.layers.{{layer}}.{theirs}.{p}")
      for ours, theirs in _NORMS for p in _LAYERNORM),
    *((f"encoder_layers.{{layer}}.ff.linear1.{p}", f"encoder.layers.{{layer}}.ff.0.{p}") for p in _LINEAR),
    *((f"encoder_layers.{{layer}}.ff.linear2.{p}", f"encoder.layers.{{layer}}.ff.3.{p}") for p in _LINEAR),
)
HEAD_RULES: tuple[tuple[str, str], ...] = (
    # PatchTSTForPretraining and PatchTSTForClassification: one Linear.
    *((f"head.linear.{p}", f"head.linear.{p}") for p in _LINEAR),
    # PatchTSTForPrediction / ForRegression point heads, shared across channels.
    *((f"head.projection.{p}", f"head.projection.{p}") for p in _LINEAR),
    # ... one per channel (prediction, share_projection=False).
    *((f"head.channel_projection.{{channel}}.{p}", f"head.projections.{{channel}}.{p}") for p in _LINEAR),
    # Distribution heads: one Linear per distribution parameter, shared or per channel.
    *((f"head.distribution.{{param}}.{p}", f"head.projection.proj.{{param}}.{p}") for p in _LINEAR),
    *((f"head.channel_distribution.{{channel}}.{{param}}.{p}", f"head.projections.{{channel}}.proj.{{param}}.{p}")
      for p in _LINEAR),
)
ENCODER_PREFIX = "model."


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(f"(?P<{part[1:-1]}>0|[1-9][0-9]*)" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(regex + r"\Z")


_HF_TO_OURS = [(_pattern(theirs), ours, True) for ours, theirs in ENCODER_RULES] + [
    (_pattern(theirs), ours, False) for ours, theirs in HEAD_RULES
]
_OURS_TO_HF = [(_pattern(ours), theirs, True) for ours, theirs in ENCODER_RULES] + [
    (_pattern(ours), theirs, False) for ours, theirs in HEAD_RULES
]


def our_name(hf_key: str) -> str | None:
    """The rustml_nb name of one checkpoint key, or None when no rule matches it."""
    for pattern, template, is_encoder in _HF_TO_OURS:
        key = hf_key
        if is_encoder and key.startswith(ENCODER_PREFIX):
            key = key[len(ENCODER_PREFIX):]
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    return None


def hf_name(name: str, prefixed: bool = True) -> str:
    """The checkpoint key one of our names comes from (``prefixed=False``: a bare PatchTSTModel's)."""
    for pattern, template, is_encoder in _OURS_TO_HF:
        match = pattern.match(name)
        if match:
            key = template.format(**match.groupdict())
            return ENCODER_PREFIX + key if (is_encoder and prefixed) else key
    raise KeyError(f"{name!r} is not a rustml_nb PatchTST tensor name")


@dataclasses.dataclass
class WeightMappingResult:
    """``mapped``: our name -> array (still in the checkpoint's layout); ``unmapped``: keys no rule matched.

    ``sources`` remembers which checkpoint key each of our names came from.
    """

    mapped: dict[str, np.ndarray]
    unmapped: list[str]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)


def map_patchtst_weights(hf_weights: dict[str, np.ndarray]) -> WeightMappingResult:
    """Rename a transformers PatchTST state dict to rustml_nb names.

    Raises ``WeightMappingError`` when two checkpoint keys land on one name (e.g. both ``model.x`` and
    ``x``), since one of them would be silently dropped.
    """
    mapped: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    unmapped: list[str] = []
    for key in sorted(hf_weights):
        name = our_name(key)
        if name is None:
            unmapped.append(key)
            continue
        if name in mapped:
            raise WeightMappingError(
                f"checkpoint keys {sources[name]!r} and {key!r} both map to {name!r}; a checkpoint holds one of them"
            )
        mapped[name] = hf_weights[key]
        sources[name] = key
    return WeightMappingResult(mapped=mapped, unmapped=unmapped, sources=sources)
