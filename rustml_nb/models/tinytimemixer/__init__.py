"""TinyTimeMixer (IBM granite-tsfm's ``tsfm_public.models.tinytimemixer``, 0.3.11): the granite TTM
checkpoints (r1, r2, r2.1, r3) and the configs granite-tsfm writes and runs."""

from ..mapping import WeightMappingResult  # noqa: F401
from .config import TinyTimeMixerConfig
from .detection import (ARCHITECTURE_HEADS, ArchitectureCheck, DetectionReport, check_tinytimemixer_compatibility,
                        detect_tinytimemixer)
from .mapping import map_tinytimemixer_weights
from .releases import choose_release, frequency_token, get_model
from .model import TinyTimeMixerForPrediction, TinyTimeMixerModel, compile_kernels
from .decomposed import TinyTimeMixerForDecomposedPrediction

MODEL_CLASSES = (TinyTimeMixerModel, TinyTimeMixerForPrediction, TinyTimeMixerForDecomposedPrediction)

CONFIG = TinyTimeMixerConfig
NAME = "TinyTimeMixer"
REFERENCE = "tsfm_public.models.tinytimemixer.modeling_tinytimemixer"  # granite-tsfm's (rustml_nb.parity)
HIDDEN_STATE = "hidden state"  # a level's input, its split rows, a layer's output, ... as granite-tsfm lists them
map_weights = map_tinytimemixer_weights


def check_compatibility(mapped, config):
    return check_tinytimemixer_compatibility(mapped, config)


def parity_inputs(config: TinyTimeMixerConfig, batch: int, rng) -> dict:
    """The inputs besides the series that rustml-nb parity gives both implementations: a frequency token per
    series for a checkpoint trained with resolution_prefix_tuning."""
    if not config.resolution_prefix_tuning:
        return {}
    return {"freq_token": rng.integers(0, config.frequency_token_vocab_size, batch)}


def describe(config: TinyTimeMixerConfig, model_class, check) -> list[str]:
    """rustml-nb inspect's summary of a checkpoint: its shape, backbone, decoder, r3 options and what the
    weights show."""
    forecasts = model_class.head in ("prediction", "decomposed")
    r3 = [text for on, text in (
        (config.multi_scale, f"multi-scale patches {config.scale_patches}"),
        (config.register_tokens, f"{config.register_tokens} register tokens"),
        (config.fft_length, f"{config.fft_tokens} FFT token(s)"),
        (config.base_norm, "base norm"), (config.gate_mode != "softmax", f"{config.gate_mode} gates"),
        (config.multi_quantile_head and forecasts, f"multi-quantile head {config.quantiles}")) if on]
    lines = [
        f"shape        {config.num_input_channels} channels x {config.context_length} steps -> "
        f"{config.num_patches} patches of {config.patch_length}"
        + (" and a frequency token" if config.resolution_prefix_tuning else "")
        + (f" -> {config.horizon} steps ahead of channels {config.output_channels}" if forecasts else ""),
        f"backbone     {config.num_layers} layers x {max(config.adaptive_patching_levels, 1)} level(s), {config.mode}, "
        f"d_model {config.d_model}, expansion {config.expansion_factor}, "
        f"{'BatchNorm' if config.batch_norm else 'LayerNorm'}, gated attention {config.gated_attn}, "
        f"self-attention {f'{config.self_attn_heads} heads' if config.self_attn else 'off'}",
        "decoder      " + (f"{config.decoder_num_layers} layers x {max(config.decoder_adaptive_patching_levels, 1)} "
                            f"level(s), {config.decoder_mode}, d_model {config.decoder_d_model}, raw residual "
                            f"{config.decoder_raw_residual}"
                            + (f", static categorical variables {config.categorical_vocab_size_list}"
                               if config.num_categorical else "") if config.use_decoder else "none"),
        f"scaling      {config.scaler}; head point"
        + (f"; forecast channel mixing (window {2 * config.fcm_context_length + 1}, mixer {config.fcm_use_mixer}, "
           f"exogenous channels {config.exogenous_channel_indices or []})"
           if config.enable_forecast_channel_mixing else ""),
    ]
    if r3:
        lines.append("r3           " + ", ".join(r3))
    if model_class.head == "decomposed":
        trend, residual = config.trend_config(), config.residual_config()
        lines.append(f"decomposed   trend forecaster: patches of {trend.patch_length}, d_model {trend.d_model}, "
                     f"{trend.num_layers} layers; residual forecaster: the last {residual.context_length} steps"
                     + ("; quantiles combined by variance" if config.combine_quantiles_via_variance else ""))
    lines.append("\ndetected")
    lines += [f"  {field:<33}{value}" for field, value in vars(check.report).items()]
    return lines
