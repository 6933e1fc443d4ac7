"""Orchestration: which TinyTimeMixer variant a set of mapped weights is, and does it agree with the config.

``expected_shapes`` is the single description of what a checkpoint of a given config holds (our names,
checkpoint layout ``[out, in]``); loading and detection both read it.
"""

from __future__ import annotations

import dataclasses
import re

from ...errors import ConfigError
from ..config import head_named
from ..mixer import StackShape, stack_shapes

HEADS = ("none", "prediction")
ARCHITECTURE_HEADS = {"TinyTimeMixerModel": "none", "TinyTimeMixerForPrediction": "prediction",
                      "TinyTimeMixerForDecomposedPrediction": "decomposed"}


def head_of_config(config) -> str | None:
    """The head ``config.architectures`` names, or None when it names none of ours."""
    return head_named(config, ARCHITECTURE_HEADS)


def stacks(config, part: str) -> list[tuple[str, int, StackShape]]:
    """(our name prefix, factor, shape) of each mixer stack of ``part`` ("encoder" or "decoder"), in the order
    they run: one per adaptive-patching level (coarsest first), or one plain stack. A level of factor f mixes
    tokens * f rows of d_model / f per series (the same values, each row split in f)."""
    encoder = part == "encoder"
    d_model = config.d_model if encoder else config.decoder_d_model
    levels = config.adaptive_patching_levels if encoder else config.decoder_adaptive_patching_levels
    mix_channel = (config.mode if encoder else config.decoder_mode) == "mix_channel"
    layers = config.num_layers if encoder else config.decoder_num_layers
    result = []
    for index, factor in enumerate(config.level_factors(levels, d_model)):
        prefix = f"{part}.levels.{index}." if levels > 0 else f"{part}."
        channels = config.num_input_channels + (0 if encoder else config.num_categorical)
        result.append((prefix, factor, StackShape(d_model // factor, config.num_tokens * factor,
                                                  channels, config.expansion_factor, layers,
                                                  mix_channel, bool(config.gated_attn), bool(config.self_attn),
                                                  bool(config.batch_norm), config.gate_outputs,
                                                  config.num_tokens * factor > 1)))
    return result


def expected_shapes(config, head: str) -> dict[str, tuple[int, ...]]:
    """Every tensor a granite-tsfm checkpoint of this config and head holds: our name -> [out, in] shape."""
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; expected one of {HEADS}")
    d, p = config.d_model, config.patch_length
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, inputs: int, outputs: int):
        shapes[f"{name}.weight"] = (outputs, inputs)
        shapes[f"{name}.bias"] = (outputs,)

    if config.multi_scale:
        for scale in range(len(config.scale_patches)):
            linear(f"encoder.scales.{scale}", p, d)
    else:
        linear("encoder.patcher", p, d)
    if config.register_tokens:
        shapes["encoder.register_tokens"] = (config.register_tokens, d)
    if config.fft_length:
        width = config.fft_width
        if config.use_fft_embedding:
            shapes["encoder.fft.embedding"] = (config.fft_bins, width)
        else:
            linear("encoder.fft.fc1", 1, width)
            linear("encoder.fft.fc2", width, width)
        if config.get_one_freq_emb:
            linear("encoder.fft.projection", config.fft_selected * width, d)
    if config.use_positional_encoding:
        shapes["encoder.positional_encoding"] = (config.num_tokens, d)
    if config.resolution_prefix_tuning:
        middle = (p + d) // 2
        shapes["encoder.frequency_embedding"] = (config.frequency_token_vocab_size, p)
        linear("encoder.frequency_fc1", p, middle)
        linear("encoder.frequency_fc2", middle, d)
    if config.base_norm:
        shapes["encoder.base_norm.weight"] = shapes["encoder.base_norm.bias"] = (config.num_tokens * d,)
    for prefix, _, shape in stacks(config, "encoder"):
        shapes.update(stack_shapes(shape, prefix))
    if head == "none":
        return shapes
    if config.use_decoder:
        if config.d_model != config.decoder_d_model:
            linear("decoder.adapter", d, config.decoder_d_model)
        if config.decoder_raw_residual:
            linear("decoder.raw_embedding", p, config.decoder_d_model)
        for index in range(config.num_categorical):
            shapes[f"decoder.categorical.{index}"] = (config.categorical_vocab_size_list[index], config.decoder_d_model)
        for prefix, _, shape in stacks(config, "decoder"):
            shapes.update(stack_shapes(shape, prefix))
    linear("head.forecast", config.num_tokens * config.head_d_model, config.prediction_length)
    if config.enable_forecast_channel_mixing:
        features = len(config.mixed_channels) * config.fcm_features
        if config.fcm_use_mixer:
            linear("head.fcm.embedding", 2 * config.fcm_context_length + 1, config.fcm_features)
            shapes.update(stack_shapes(fcm_stack(config), "head.fcm."))
        if config.fcm_gated_attn:
            linear("head.fcm.gate", features, features * config.gate_outputs)
        linear("head.fcm.mlp", features, len(config.output_channels))
    if config.multi_quantile_head:
        hidden = config.mq_hidden
        shapes.update({"head.quantiles.smooth.weight": (1, 1, config.mq_kernel_size), "head.quantiles.smooth.bias": (1,),
                       "head.quantiles.norm.weight": (1,), "head.quantiles.norm.bias": (1,),
                       "head.quantiles.expand.weight": (hidden, 1, 1), "head.quantiles.expand.bias": (hidden,)})
        conditioned = config.mq_use_decoder_pool
        if conditioned and config.mq_cond_path == "pool":
            linear("head.quantiles.condition", config.decoder_d_model, hidden)
        elif conditioned:
            linear("head.quantiles.condition_tokens", config.decoder_d_model, config.mq_decoder_d_model)
            linear("head.quantiles.condition_flat", config.num_tokens * config.mq_decoder_d_model, hidden)
        inputs = 2 * hidden if conditioned and config.mq_cond_mode == "concat" else hidden
        shapes["head.quantiles.out.weight"] = (len(config.quantiles), inputs, 1)
        shapes["head.quantiles.out.bias"] = (len(config.quantiles),)
    return shapes


def fcm_stack(config) -> StackShape:
    """Forecast channel mixing's mixer (fcm_use_mixer): each forecast step's channels are its patches, each
    channel's embedded window its features."""
    return StackShape(config.fcm_features, len(config.mixed_channels), 1, config.expansion_factor,
                      config.fcm_mix_layers, False, bool(config.fcm_gated_attn), bool(config.self_attn),
                      bool(config.batch_norm), config.gate_outputs, len(config.mixed_channels) > 1)


@dataclasses.dataclass
class DetectionReport:
    """What the weights themselves say about the architecture (None: the weights cannot tell)."""

    head: str
    d_model: int | None
    patch_length: int | None
    adaptive_patching_levels: int
    num_layers: int
    mode: str | None
    gated_attn: bool | None
    gate_outputs: int | None  # the gates' outputs per input: 2 for a GLU gate (the other modes look alike)
    self_attn: bool | None
    norm: str | None
    resolution_prefix_tuning: bool
    base_norm: bool
    scales: int  # multi_scale's patcher Linears (0: the plain patcher)
    register_tokens: int
    fft_tokens: bool
    use_decoder: bool
    decoder_d_model: int | None
    decoder_adaptive_patching_levels: int
    decoder_num_layers: int
    decoder_mode: str | None
    decoder_raw_residual: bool
    categorical_variables: int
    prediction_length: int | None
    enable_forecast_channel_mixing: bool
    quantiles: int | None  # the multi-quantile head's levels (0: no such head; None: no forecasting head)


@dataclasses.dataclass
class ArchitectureCheck:
    """``report``: what the weights say; ``mismatches``: (field, config value, weights value)."""

    report: DetectionReport
    mismatches: list[tuple[str, object, object]]

    @property
    def compatible(self) -> bool:
        return not self.mismatches


def _levels_and_layers(names, part: str) -> tuple[int, int]:
    levels = {int(m.group(1)) for n in names if (m := re.match(rf"{part}\.levels\.(\d+)\.", n))}
    layers = {int(m.group(1)) for n in names if (m := re.match(rf"{part}\.(?:levels\.\d+\.)?layers\.(\d+)\.", n))}
    return len(levels), len(layers)


def _forecaster(mapped: dict, prefix: str) -> dict:
    """A decomposed model's forecaster's tensors (``trend.`` or ``residual.``), under their own names."""
    return {name[len(prefix):]: value for name, value in mapped.items() if name.startswith(prefix)}


def is_decomposed(mapped: dict) -> bool:
    return any(name.startswith(("trend.", "residual.")) for name in mapped)


def detect_tinytimemixer(mapped: dict) -> DetectionReport:
    """The variant the mapped weights describe, from names and shapes alone; for a decomposed model, its trend
    forecaster's, with the head "decomposed"."""
    if is_decomposed(mapped):
        return dataclasses.replace(detect_tinytimemixer(_forecaster(mapped, "trend.")), head="decomposed")
    names = list(mapped)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, n) for n in names)

    def width(part: str) -> int | None:
        """d_model of a stack: the input of a feature mixer's fc1 in its finest level (the last, factor 1)."""
        levels, _ = _levels_and_layers(names, part)
        prefix = f"{part}.levels.{levels - 1}." if levels else f"{part}."
        for name in names:
            if re.match(rf"{re.escape(prefix)}layers\.\d+\.feature_mixer\.fc1\.weight\Z", name):
                return mapped[name].shape[1]
        return None

    patcher = mapped.get("encoder.patcher.weight", mapped.get("encoder.scales.0.weight"))
    register = mapped.get("encoder.register_tokens")
    levels, layers = _levels_and_layers(names, "encoder")
    decoder_levels, decoder_layers = _levels_and_layers(names, "decoder")
    use_decoder = has(r"^decoder\.")
    head = mapped.get("head.forecast.weight")
    return DetectionReport(
        head="prediction" if head is not None else "none",
        d_model=None if patcher is None else patcher.shape[0],
        patch_length=None if patcher is None else patcher.shape[1],
        adaptive_patching_levels=levels, num_layers=layers,
        mode="mix_channel" if has(r"^encoder\..*channel_mixer") else "common_channel",
        gated_attn=has(r"\.gate\.weight\Z") if layers else None,
        gate_outputs=next((mapped[n].shape[0] // mapped[n].shape[1] for n in names if n.endswith(".gate.weight")
                           and mapped[n].ndim == 2 and mapped[n].shape[1]), None),
        # self-attention sits in the patch mixer, which layers over a single token lack
        self_attn=has(r"\.attention\.q_proj\.") if has(r"^encoder\..*\.patch_mixer\.") else None,
        norm=("BatchNorm" if has(r"\.batchnorm\.") else "LayerNorm") if layers else None,
        resolution_prefix_tuning="encoder.frequency_embedding" in mapped,
        base_norm="encoder.base_norm.weight" in mapped,
        scales=sum(1 for n in names if re.match(r"encoder\.scales\.\d+\.weight\Z", n)),
        register_tokens=0 if register is None or register.ndim != 2 else register.shape[0],
        fft_tokens=has(r"^encoder\.fft\."),
        use_decoder=use_decoder, decoder_d_model=width("decoder") if use_decoder else None,
        decoder_adaptive_patching_levels=decoder_levels, decoder_num_layers=decoder_layers,
        decoder_mode=("mix_channel" if has(r"^decoder\..*channel_mixer") else "common_channel") if use_decoder else None,
        decoder_raw_residual="decoder.raw_embedding.weight" in mapped,
        categorical_variables=sum(1 for n in names if re.match(r"decoder\.categorical\.\d+\Z", n)),
        prediction_length=None if head is None else head.shape[0],
        enable_forecast_channel_mixing="head.fcm.mlp.weight" in mapped,
        quantiles=(mapped["head.quantiles.out.bias"].shape[0] if "head.quantiles.out.bias" in mapped else 0)
        if head is not None else None)


def check_tinytimemixer_compatibility(mapped: dict, config, head: str | None = None) -> ArchitectureCheck:
    """Detect the variant and list where it disagrees with ``config``. ``head``: the class that will run the
    weights ("none" for the backbone alone: a forecasting checkpoint's decoder and head are then not compared);
    by default, the head the weights hold."""
    if is_decomposed(mapped):  # each forecaster against its own config
        mismatches = []
        for part, forecaster_config in (("trend", config.trend_config()), ("residual", config.residual_config())):
            check = check_tinytimemixer_compatibility(_forecaster(mapped, part + "."), forecaster_config)
            mismatches += [(f"{part} forecaster's {field}", want, have) for field, want, have in check.mismatches]
        return ArchitectureCheck(detect_tinytimemixer(mapped), mismatches)
    report = detect_tinytimemixer(mapped)
    mismatches = []

    def compare(field, want, have):
        if have is not None and want != have:
            mismatches.append((field, want, have))

    compare("d_model", config.d_model, report.d_model)
    compare("patch_length", config.patch_length, report.patch_length)
    compare("adaptive_patching_levels", max(config.adaptive_patching_levels, 0), report.adaptive_patching_levels)
    compare("num_layers", config.num_layers, report.num_layers if report.num_layers else None)
    compare("mode", config.mode, report.mode)
    compare("gated_attn", config.gated_attn, report.gated_attn)
    compare("gate_mode (gate outputs per input: 2 for glu)", config.gate_outputs, report.gate_outputs)
    compare("self_attn", config.self_attn, report.self_attn)
    compare("norm_mlp", "BatchNorm" if config.batch_norm else "LayerNorm", report.norm)
    compare("resolution_prefix_tuning", config.resolution_prefix_tuning, report.resolution_prefix_tuning)
    compare("enable_base_norm_always or multi_scale", config.base_norm, report.base_norm)
    compare("multi_scale (scales)", len(config.scale_patches) if config.multi_scale else 0, report.scales)
    compare("register_tokens", config.register_tokens, report.register_tokens)
    compare("fft_length > 0", config.fft_length > 0, report.fft_tokens)
    if report.head == "prediction" and head != "none":
        compare("use_decoder", config.use_decoder, report.use_decoder)
        compare("prediction_length", config.prediction_length, report.prediction_length)
        compare("enable_forecast_channel_mixing", config.enable_forecast_channel_mixing,
                report.enable_forecast_channel_mixing)
        compare("multi_quantile_head (quantile levels)", len(config.quantiles) if config.multi_quantile_head else 0,
                report.quantiles)
        if report.use_decoder:
            compare("decoder_d_model", config.decoder_d_model, report.decoder_d_model)
            compare("decoder_adaptive_patching_levels", max(config.decoder_adaptive_patching_levels, 0),
                    report.decoder_adaptive_patching_levels)
            compare("decoder_num_layers", config.decoder_num_layers,
                    report.decoder_num_layers if report.decoder_num_layers else None)
            compare("decoder_mode", config.decoder_mode, report.decoder_mode)
            compare("decoder_raw_residual", config.decoder_raw_residual, report.decoder_raw_residual)
            compare("categorical_vocab_size_list (variables)", config.num_categorical, report.categorical_variables)
    return ArchitectureCheck(report, mismatches)
