"""Orchestration: which PatchTST variant a set of mapped weights is, and does it agree with the config.

``expected_shapes`` is the single description of what a checkpoint of a given config holds (our names,
checkpoint layout ``[out, in]``); loading and detection both read it.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ...errors import ConfigError
from ..layers import OPTIONAL_NAMES, positional_kind  # noqa: F401  (OPTIONAL_NAMES re-exported)
from ..config import head_named
from .config import DISTRIBUTION_PARAMETERS, PatchTSTConfig

HEADS = ("none", "prediction", "pretraining", "classification", "regression")
ARCHITECTURE_HEADS = {
    "PatchTSTModel": "none",
    "PatchTSTForPrediction": "prediction",
    "PatchTSTForPretraining": "pretraining",
    "PatchTSTForClassification": "classification",
    "PatchTSTForRegression": "regression",
}


def head_of_config(config: PatchTSTConfig) -> str | None:
    """The head ``config.architectures`` names, or None when it names none of ours."""
    return head_named(config, ARCHITECTURE_HEADS)


def distribution_parameters(config: PatchTSTConfig, head: str) -> tuple[str, ...]:
    """Names of the distribution parameters the head emits; empty for a point head."""
    if head in ("prediction", "regression") and config.has_distribution_head:
        return DISTRIBUTION_PARAMETERS[config.distribution_output]
    return ()


def prediction_head_inputs(config: PatchTSTConfig) -> int:
    """Input width of the prediction head: pooled (or cls) d_model, else all patches flattened."""
    pooled = config.pooling_type is not None or config.use_cls_token
    return config.d_model if pooled else config.d_model * config.num_patches


def expected_shapes(config: PatchTSTConfig, head: str) -> dict[str, tuple[int, ...]]:
    """Every tensor a transformers checkpoint of this config and head holds: our name -> [out, in] shape."""
    d_model, channels = config.d_model, config.num_input_channels
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, inputs: int, outputs: int, bias: bool = True):
        shapes[f"{name}.weight"] = (outputs, inputs)
        if bias:
            shapes[f"{name}.bias"] = (outputs,)

    if config.share_embedding:
        linear("embedding", config.patch_length, d_model)
    else:
        for channel in range(channels):
            linear(f"embedding.{channel}", config.patch_length, d_model)
    shapes["positional_encoding"] = (config.num_patches + int(config.use_cls_token), d_model)
    if config.use_cls_token:
        shapes["cls_token"] = (1, 1, 1, d_model)
    norms = ("attention", "channel_attention", "ff") if config.channel_attention else ("attention", "ff")
    for layer in range(config.num_hidden_layers):
        prefix = f"encoder_layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{prefix}.attention.{proj}", d_model, d_model)
        for norm in norms:
            stats = ("weight", "bias", "running_mean", "running_var") if config.norm_type == "batchnorm" else ("weight", "bias")
            for stat in stats:
                shapes[f"{prefix}.{norm}_{config.norm_type}.{stat}"] = (d_model,)
            if config.norm_type == "batchnorm":
                shapes[f"{prefix}.{norm}_batchnorm.num_batches_tracked"] = ()
        linear(f"{prefix}.ff.linear1", d_model, config.ffn_dim, config.bias)
        linear(f"{prefix}.ff.linear2", config.ffn_dim, d_model, config.bias)

    params = distribution_parameters(config, head)
    if head == "prediction":
        inputs, outputs = prediction_head_inputs(config), config.prediction_length
        if config.share_projection:
            owners = [("head.projection", "head.distribution")]
        else:
            owners = [(f"head.channel_projection.{c}", f"head.channel_distribution.{c}") for c in range(channels)]
        for projection, distribution in owners:
            if params:
                for k in range(len(params)):
                    linear(f"{distribution}.{k}", inputs, outputs)
            else:
                linear(projection, inputs, outputs)
    elif head == "pretraining":
        linear("head.linear", d_model, config.patch_length)
    elif head == "classification":
        linear("head.linear", channels * d_model, config.num_targets)
    elif head == "regression":
        if params:
            for k in range(len(params)):
                linear(f"head.distribution.{k}", channels * d_model, config.num_targets)
        else:
            linear("head.projection", channels * d_model, config.num_targets)
    elif head != "none":
        raise ConfigError(f"unknown head {head!r}; expected one of {HEADS}")
    return shapes


@dataclasses.dataclass
class DetectionReport:
    """What the weights themselves say about the architecture (None: the weights cannot tell)."""

    head: str
    head_candidates: tuple[str, ...]
    num_hidden_layers: int
    d_model: int | None
    ffn_dim: int | None
    patch_input_width: int | None
    norm_type: str | None
    channel_attention: bool | None
    share_embedding: bool
    num_input_channels: int | None
    use_cls_token: bool
    num_positions: int | None
    positional_encoding_type: str | None
    bias: bool | None
    share_projection: bool | None
    distribution_parameter_count: int


@dataclasses.dataclass
class ArchitectureCheck:
    """``kind``: ``"ChannelIndependent"`` (embedding input = patch_length), ``"ChannelDependent"`` (input =
    patch_length x num_input_channels) or ``"Unknown"``. ``mismatches``: (field, config value, weights value)."""

    kind: str
    expected_ci: int
    expected_cd: int
    got: int | None
    report: DetectionReport | None = None
    mismatches: list[tuple[str, object, object]] = dataclasses.field(default_factory=list)


def _indices(mapped, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for name in mapped if (m := regex.match(name))})


def _matrix(mapped, name):
    """mapped[name] if it is there and 2-D (a Linear weight); otherwise None, and loading reports its shape."""
    array = mapped.get(name)
    return array if array is not None and array.ndim == 2 else None


def _head_candidates(mapped, d_model, patch_width, num_positions, channels) -> tuple[str, ...]:
    """Heads whose shapes fit the head tensors present. ``channels`` (None: any) is the channel count
    classification and regression heads must flatten."""
    if "head.linear.weight" in mapped:
        linear = _matrix(mapped, "head.linear.weight")
        if linear is None:
            return ()
        outputs, inputs = linear.shape
        found = []
        if inputs == d_model and outputs == patch_width:
            found.append("pretraining")
        if d_model and inputs % d_model == 0 and channels in (None, inputs // d_model):
            found.append("classification")
        return tuple(found)
    if any(name.startswith("head.channel_") for name in mapped):
        return ("prediction",)  # only the prediction head has per-channel projections
    weight = _matrix(mapped, "head.projection.weight")
    if weight is None:
        weight = _matrix(mapped, "head.distribution.0.weight")
    if weight is None:
        return ("none",) if not any(name.startswith("head.") for name in mapped) else ()
    inputs = weight.shape[1]
    found = []
    if d_model and (inputs == d_model or (num_positions and inputs == d_model * num_positions)):
        found.append("prediction")
    if d_model and inputs % d_model == 0 and channels in (None, inputs // d_model):
        found.append("regression")
    return tuple(found)


def detect_patchtst(mapped: dict[str, np.ndarray], hint: str | None = None,
                    num_input_channels: int | None = None) -> DetectionReport:
    """Read the architecture off mapped weights. ``hint`` (a head name) and ``num_input_channels``
    break ties that shapes alone cannot (a pooled 1-channel regression head looks like a prediction head)."""
    per_channel_embeddings = _indices(mapped, r"embedding\.(\d+)\.weight\Z")
    embedding = mapped.get("embedding.weight")
    if embedding is None and per_channel_embeddings:
        embedding = mapped[f"embedding.{per_channel_embeddings[0]}.weight"]
    d_model, patch_width = (embedding.shape[0], embedding.shape[1]) if embedding is not None and embedding.ndim == 2 else (None, None)
    layers = _indices(mapped, r"encoder_layers\.(\d+)\.")
    norm_type = None
    if any("_batchnorm." in name for name in mapped):
        norm_type = "batchnorm"
    elif any("_layernorm." in name for name in mapped):
        norm_type = "layernorm"
    ff1 = mapped.get("encoder_layers.0.ff.linear1.weight")
    use_cls_token = "cls_token" in mapped
    positions = mapped.get("positional_encoding")
    num_positions = positions.shape[0] if positions is not None and positions.ndim == 2 else None
    num_patches = None if num_positions is None else num_positions - int(use_cls_token)
    positional_type = positional_kind(positions)

    known_channels = len(per_channel_embeddings) if per_channel_embeddings else num_input_channels
    candidates = _head_candidates(mapped, d_model, patch_width, num_patches, known_channels)
    head = hint if hint in candidates else (candidates[0] if candidates else "unknown")
    distribution_count = len(_indices(mapped, r"head\.(?:channel_)?distribution\.(?:\d+\.)?(\d+)\.weight\Z"))
    channel_projections = _indices(mapped, r"head\.channel_(?:projection|distribution)\.(\d+)\.")

    channels = None
    if per_channel_embeddings:
        channels = len(per_channel_embeddings)
    elif channel_projections:
        channels = len(channel_projections)
    elif head in ("classification", "regression") and d_model:
        weight = next(w for w in (_matrix(mapped, name) for name in ("head.linear.weight", "head.projection.weight",
                                                                   "head.distribution.0.weight")) if w is not None)
        channels = weight.shape[1] // d_model
    return DetectionReport(
        head=head,
        head_candidates=candidates,
        num_hidden_layers=len(layers),
        d_model=d_model,
        ffn_dim=None if ff1 is None or ff1.ndim != 2 else ff1.shape[0],
        patch_input_width=patch_width,
        norm_type=norm_type,
        channel_attention=any(".channel_attention_" in name for name in mapped) if layers else None,
        share_embedding=not per_channel_embeddings,
        num_input_channels=channels,
        use_cls_token=use_cls_token,
        num_positions=num_positions,
        positional_encoding_type=positional_type,
        # config.bias switches the feed-forward Linears' biases: one present in any layer says True, so that a
        # missing one is then reported by name (the load's missing tensors), not as a config disagreement
        bias=None if not layers else any(re.fullmatch(r"encoder_layers\.\d+\.ff\.linear[12]\.bias", name)
                                         for name in mapped),
        share_projection=(not channel_projections) if head == "prediction" else None,
        distribution_parameter_count=distribution_count,
    )


def check_patchtst_compatibility(mapped: dict[str, np.ndarray], config: PatchTSTConfig) -> ArchitectureCheck:
    """Detect the variant (CI/CD) and list every field where config and weights disagree."""
    expected_ci = config.patch_length
    expected_cd = config.patch_length * config.num_input_channels
    report = detect_patchtst(mapped, hint=head_of_config(config), num_input_channels=config.num_input_channels)
    got = report.patch_input_width
    if got == expected_ci:
        kind = "ChannelIndependent"
    elif got == expected_cd:
        kind = "ChannelDependent"
    else:
        kind = "Unknown"

    head = head_of_config(config) or report.head
    comparisons = [
        ("d_model", config.d_model, report.d_model),
        ("num_hidden_layers", config.num_hidden_layers, report.num_hidden_layers),
        ("share_embedding", config.share_embedding, report.share_embedding),
        ("use_cls_token", config.use_cls_token, report.use_cls_token),
        ("num_patches + cls", config.num_patches + int(config.use_cls_token), report.num_positions),
    ]
    if config.num_hidden_layers:
        comparisons += [
            ("ffn_dim", config.ffn_dim, report.ffn_dim),
            ("channel_attention", config.channel_attention, report.channel_attention),
            ("norm_type", config.norm_type, report.norm_type),
            ("bias", config.bias, report.bias),
        ]
    if report.num_input_channels is not None:
        comparisons.append(("num_input_channels", config.num_input_channels, report.num_input_channels))
    if head not in report.head_candidates:
        comparisons.append(("head", head, report.head if len(report.head_candidates) <= 1 else report.head_candidates))
    if head == "prediction":
        comparisons.append(("share_projection", config.share_projection, report.share_projection))
    if head in ("prediction", "regression"):
        comparisons.append(("distribution parameters", len(distribution_parameters(config, head)),
                            report.distribution_parameter_count))
    mismatches = [(field, want, have) for field, want, have in comparisons if want != have]
    return ArchitectureCheck(kind, expected_ci, expected_cd, got, report, mismatches)
