"""Orchestration: which PatchTSMixer variant a set of mapped weights is, and does it agree with the config.

``expected_shapes`` is the single description of what a checkpoint of a given config holds (our names,
checkpoint layout ``[out, in]``); loading and detection both read it.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ...errors import ConfigError
from ..config import DISTRIBUTION_PARAMETERS, head_named
from ..layers import positional_kind
from ..mixer import StackShape, stack_shapes

HEADS = ("none", "prediction", "pretraining", "classification", "regression")
ARCHITECTURE_HEADS = {
    "PatchTSMixerModel": "none",
    "PatchTSMixerForPrediction": "prediction",
    "PatchTSMixerForPretraining": "pretraining",
    "PatchTSMixerForTimeSeriesClassification": "classification",
    "PatchTSMixerForRegression": "regression",
}
INJECT_SCALE_SHAPES = {"map_scale_expansion": lambda d: (4, 2), "map_scale_compression": lambda d: (2, 4),
                       "inverse_trans_expansion": lambda d: (2 * d, d + 2),
                       "inverse_trans_compression": lambda d: (d, 2 * d)}


def head_of_config(config) -> str | None:
    """The head ``config.architectures`` names, or None when it names none of ours."""
    return head_named(config, ARCHITECTURE_HEADS)


def distribution_parameters(config, head: str) -> tuple[str, ...]:
    """Names of the distribution parameters the head emits; empty for a point head (classification heads
    are always point heads in transformers)."""
    if head in ("prediction", "regression") and config.has_distribution_head:
        return DISTRIBUTION_PARAMETERS[config.distribution_output]
    return ()


def pooled_width(config) -> int:
    """Inputs of the classification / regression projection: every channel's aggregated rows, or (no
    aggregation) all its patches."""
    return config.d_model * config.num_input_channels * (config.num_patches if config.head_aggregation is None else 1)


def stack_shape(config) -> StackShape:
    """The encoder's mixer layers, as ``models.mixer`` describes a stack."""
    return StackShape(config.d_model, config.num_patches, config.num_input_channels, config.expansion_factor,
                      config.num_layers, config.mode == "mix_channel", bool(config.gated_attn), bool(config.self_attn),
                      bool(config.batch_norm))


def expected_shapes(config, head: str) -> dict[str, tuple[int, ...]]:
    """Every tensor a transformers checkpoint of this config and head holds: our name -> [out, in] shape."""
    d, n = config.d_model, config.num_patches
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, inputs: int, outputs: int):
        shapes[f"{name}.weight"] = (outputs, inputs)
        shapes[f"{name}.bias"] = (outputs,)

    linear("patcher", config.patch_length, d)
    if config.use_positional_encoding:
        shapes["positional_encoding"] = (n, d)
    shapes.update(stack_shapes(stack_shape(config)))

    params = distribution_parameters(config, head)
    if head == "prediction":
        if params:
            for k in range(len(params)):
                linear(f"head.forecast_distribution.{k}", n * d, config.prediction_length)
        else:
            linear("head.forecast", n * d, config.prediction_length)
    elif head == "pretraining":
        linear("head.pretrain", d, config.patch_length)
    elif head in ("classification", "regression"):
        if params:
            for k in range(len(params)):
                linear(f"head.distribution.{k}", pooled_width(config), config.num_targets)
        else:
            linear("head.projection", pooled_width(config), config.num_targets)
        if config.injects_scale:
            for name, shape in INJECT_SCALE_SHAPES.items():
                out, inputs = shape(d)
                linear(f"inject_scale.{name}", inputs, out)
    elif head != "none":
        raise ConfigError(f"unknown head {head!r}; expected one of {HEADS}")
    return shapes


@dataclasses.dataclass
class DetectionReport:
    """What the weights themselves say about the architecture (None: the weights cannot tell)."""

    head: str
    head_candidates: tuple[str, ...]
    num_layers: int
    d_model: int | None
    patch_length: int | None
    num_patches: int | None
    expansion_factor: int | None
    mode: str | None
    num_input_channels: int | None
    gated_attn: bool | None
    self_attn: bool | None
    norm: str | None
    positional_encoding: str | None
    distribution_parameter_count: int
    aggregated: bool | None
    injects_scale: bool
    outputs: int | None  # prediction_length, patch_length or num_targets, as the head says


@dataclasses.dataclass
class ArchitectureCheck:
    """``report``: what the weights say; ``mismatches``: (field, config value, weights value)."""

    report: DetectionReport
    mismatches: list[tuple[str, object, object]] = dataclasses.field(default_factory=list)


def _matrix(mapped, name):
    array = mapped.get(name)
    return array if array is not None and array.ndim == 2 else None


def _indices(mapped, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for name in mapped if (m := regex.match(name))})


def detect_patchtsmixer(mapped: dict[str, np.ndarray], hint: str | None = None, num_patches: int | None = None,
                        num_input_channels: int | None = None) -> DetectionReport:
    """Read the architecture off mapped weights. ``hint`` (a head name), ``num_patches`` and
    ``num_input_channels`` (the config's) break ties shapes alone cannot: without mixer layers, a
    classification head over 2 inputs of d_model 1 is 2 channels aggregated or 1 channel of 2 patches."""
    patcher = _matrix(mapped, "patcher.weight")
    d_model, patch_length = patcher.shape if patcher is not None else (None, None)
    layers = _indices(mapped, r"layers\.(\d+)\.")
    patch_fc1 = _matrix(mapped, "layers.0.patch_mixer.fc1.weight")
    known_patches = num_patches
    num_patches = patch_fc1.shape[1] if patch_fc1 is not None else None
    expansion = (patch_fc1.shape[0] // patch_fc1.shape[1]) if patch_fc1 is not None and patch_fc1.shape[1] else None
    channel_fc1 = _matrix(mapped, "layers.0.channel_mixer.fc1.weight")
    positions = mapped.get("positional_encoding")
    positional = positional_kind(positions)
    if num_patches is None and positional is not None:
        num_patches = positions.shape[0]
    norm = ("batchnorm" if any(".batchnorm." in name for name in mapped)
            else "layernorm" if any(".layernorm." in name for name in mapped) else None)
    channels = channel_fc1.shape[1] if channel_fc1 is not None else None

    candidates: tuple[str, ...]
    outputs = None
    aggregated = None
    distribution_count = len(_indices(mapped, r"head\.(?:forecast_)?distribution\.(\d+)\.weight\Z"))
    if any(name.startswith("head.forecast") for name in mapped):
        candidates = ("prediction",)
        weight = _matrix(mapped, "head.forecast.weight")
        weight = weight if weight is not None else _matrix(mapped, "head.forecast_distribution.0.weight")
        outputs = None if weight is None else weight.shape[0]
    elif "head.pretrain.weight" in mapped:
        candidates = ("pretraining",)
        weight = _matrix(mapped, "head.pretrain.weight")
        outputs = None if weight is None else weight.shape[0]
    elif any(name.startswith("head.") for name in mapped):
        # classification heads are never distribution heads
        candidates = ("regression",) if distribution_count else ("classification", "regression")
        weight = _matrix(mapped, "head.projection.weight")
        weight = weight if weight is not None else _matrix(mapped, "head.distribution.0.weight")
        if weight is not None:
            outputs = weight.shape[0]
            patches = num_patches or known_patches
            if d_model and weight.shape[1] % d_model == 0:
                per_series = weight.shape[1] // d_model  # channels, or channels x patches without aggregation
                known = channels if channels is not None else num_input_channels
                if known is not None and patches != 1:  # (with one patch the two shapes are the same)
                    if patches and per_series == known * patches:
                        aggregated = False
                    elif per_series == known:
                        aggregated = True
                if channels is None:
                    channels = per_series if aggregated is not False else per_series // patches
    else:
        candidates = ("none",)
    head = hint if hint in candidates else candidates[0] if candidates else "unknown"
    return DetectionReport(
        head=head, head_candidates=candidates, num_layers=len(layers), d_model=d_model, patch_length=patch_length,
        num_patches=num_patches, expansion_factor=expansion,
        mode=("mix_channel" if channel_fc1 is not None else "common_channel") if layers else None,
        num_input_channels=channels,
        gated_attn=any(".gate." in name for name in mapped) if layers else None,
        self_attn=any(".attention." in name for name in mapped) if layers else None,
        norm=norm, positional_encoding=positional, distribution_parameter_count=distribution_count,
        aggregated=aggregated, injects_scale=any(name.startswith("inject_scale.") for name in mapped),
        outputs=outputs)


def check_patchtsmixer_compatibility(mapped: dict[str, np.ndarray], config) -> ArchitectureCheck:
    """Detect the variant and list every field where config and weights disagree."""
    report = detect_patchtsmixer(mapped, hint=head_of_config(config), num_patches=config.num_patches,
                                 num_input_channels=config.num_input_channels)
    head = head_of_config(config) or report.head
    comparisons = [
        ("d_model", config.d_model, report.d_model),
        ("patch_length", config.patch_length, report.patch_length),
        ("num_layers", config.num_layers, report.num_layers),
        ("use_positional_encoding", config.use_positional_encoding, report.positional_encoding is not None),
    ]
    if config.num_layers:
        comparisons += [
            ("num_patches", config.num_patches, report.num_patches),
            ("expansion_factor", config.expansion_factor, report.expansion_factor),
            ("mode", config.mode, report.mode),
            ("gated_attn", config.gated_attn, report.gated_attn),
            ("self_attn", config.self_attn, report.self_attn),
            ("norm_mlp", "batchnorm" if config.batch_norm else "layernorm", report.norm),
        ]
    if report.num_input_channels is not None:
        comparisons.append(("num_input_channels", config.num_input_channels, report.num_input_channels))
    if head not in report.head_candidates:
        comparisons.append(("head", head, report.head))
    if head in ("prediction", "regression"):
        comparisons.append(("distribution parameters", len(distribution_parameters(config, head)),
                            report.distribution_parameter_count))
    if head == "prediction":
        comparisons.append(("prediction_length", config.prediction_length, report.outputs))
    if head in ("classification", "regression"):
        comparisons += [("num_targets", config.num_targets, report.outputs),
                        ("scale injection (scaling)", config.injects_scale, report.injects_scale)]
        if report.aggregated is not None:
            comparisons.append(("head_aggregation", config.head_aggregation is not None, report.aggregated))
    mismatches = [(field, want, have) for field, want, have in comparisons if want != have]
    return ArchitectureCheck(report, mismatches)
